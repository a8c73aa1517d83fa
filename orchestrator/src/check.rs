//! `orchestrator check`: validates a cluster spec, its boot plan and its image names without
//! building or booting anything (the fast local path).

use std::fmt::Write as _;
use std::path::Path;

use crate::spec::ClusterSpec;
use crate::{image, plan};

/// Checks the spec at `path` (the built-in reference cluster when `None`). Returns a report
/// for people on success, or every problem found, one per line.
pub fn check(path: Option<&Path>) -> Result<String, String> {
    let (spec, source) = load(path)?;
    let waves = plan::boot_waves(&spec).map_err(|e| format!("{source}: {e}"))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{source}: {} nodes, {} networks, {} scenarios: ok",
        spec.nodes.len(),
        spec.networks.len(),
        spec.scenarios.len()
    );
    for (i, wave) in waves.iter().enumerate() {
        let _ = writeln!(out, "boot wave {}: {}", i + 1, wave.join(" "));
    }
    Ok(out)
}

/// Loads and validates the spec at `path` (the built-in reference cluster when `None`),
/// including its boot plan and image names; returns it with a name for messages.
pub fn load(path: Option<&Path>) -> Result<(ClusterSpec, String), String> {
    let (spec, source) = match path {
        Some(p) => (
            ClusterSpec::from_file(p).map_err(|e| e.to_string())?,
            p.display().to_string(),
        ),
        None => (
            ClusterSpec::reference(),
            "built-in reference cluster".into(),
        ),
    };
    plan::boot_waves(&spec).map_err(|e| format!("{source}: {e}"))?;
    let known = image::names();
    let unknown: Vec<String> = spec
        .nodes
        .iter()
        .filter(|n| !known.contains(&n.image.as_str()))
        .map(|n| {
            format!(
                "{source}: node {}: unknown image {:?}; known images: {}",
                n.name,
                n.image,
                known.join(", ")
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(unknown.join("\n"));
    }
    Ok((spec, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_cluster_checks_out_with_its_boot_waves() {
        let report = check(None).unwrap();
        assert!(report.contains("6 nodes"), "{report}");
        assert!(
            report.contains("boot wave 1: node01 node02 node03 node04"),
            "{report}"
        );
        assert!(report.contains("boot wave 3: node06"), "{report}");
    }

    #[test]
    fn unknown_images_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("c.toml");
        let text = crate::spec::REFERENCE_TOML.replacen(
            "image = \"debian-node\"",
            "image = \"no-such-image\"",
            1,
        );
        std::fs::write(&spec, text).unwrap();
        let e = check(Some(&spec)).unwrap_err();
        assert!(e.contains("unknown image \"no-such-image\""), "{e}");
        assert!(e.contains("c.toml"), "{e}");
        let e = check(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
