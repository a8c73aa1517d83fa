//! Debian packages through apt: resolve candidate versions, download, unpack.
//!
//! Only `apt-cache`, `apt-get download` and `dpkg-deb -x` are used: nothing is
//! installed and no root is needed.

use super::error::ImageError;
use crate::cache::sha256_file;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One exact package from the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagePin {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// SHA256 of the .deb, from the archive index.
    pub sha256: String,
    /// Size of the .deb in bytes.
    pub size: u64,
}

/// The first stanza of `apt-cache show` output as (field, value) pairs.
pub fn parse_stanza(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = fields.last_mut() {
                last.1.push('\n');
                last.1.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

/// All stanzas of `apt-cache show` output.
pub fn parse_stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .map(parse_stanza)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Resolve several packages with one `apt-cache` call.
pub fn resolve_many(names: &[String]) -> Result<Vec<PackagePin>, ImageError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let text = run_capture(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(names),
        APT_HINT,
    )?;
    let stanzas = parse_stanzas(&text);
    names
        .iter()
        .map(|name| {
            let stanza = stanzas
                .iter()
                .find(|s| field(s, "Package") == Some(name.as_str()))
                .ok_or_else(|| ImageError::Tool {
                    command: format!("apt-cache show --no-all-versions {name}"),
                    detail: "no such package in the archive".into(),
                    hint: APT_HINT.into(),
                })?;
            pin_from_stanza(name, stanza)
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

fn run_capture(cmd: &mut Command, hint: &str) -> Result<String, ImageError> {
    let command = format!("{cmd:?}").replace('"', "");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::Tool {
            command: command.clone(),
            detail: e.to_string(),
            hint: hint.to_string(),
        })?;
    if !output.status.success() {
        return Err(ImageError::Tool {
            command,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            hint: hint.to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

const APT_HINT: &str = "run `apt-get update` (the package lists may be missing or stale)";

/// Resolve the candidate version of `name` as apt would install it.
pub fn resolve(name: &str) -> Result<PackagePin, ImageError> {
    let text = run_capture(
        Command::new("apt-cache").args(["show", "--no-all-versions", name]),
        APT_HINT,
    )?;
    pin_from_stanza(name, &parse_stanza(&text))
}

/// Build a pin from an `apt-cache show` stanza.
pub fn pin_from_stanza(name: &str, fields: &[(String, String)]) -> Result<PackagePin, ImageError> {
    let missing = |what: &str| ImageError::Tool {
        command: format!("apt-cache show --no-all-versions {name}"),
        detail: format!("no `{what}` field in the package record"),
        hint: APT_HINT.to_string(),
    };
    Ok(PackagePin {
        name: field(fields, "Package").unwrap_or(name).to_string(),
        version: field(fields, "Version")
            .ok_or_else(|| missing("Version"))?
            .to_string(),
        sha256: field(fields, "SHA256")
            .ok_or_else(|| missing("SHA256"))?
            .to_string(),
        size: field(fields, "Size")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| missing("Size"))?,
    })
}

/// Follow a kernel metapackage (`linux-image-cloud-amd64`) to the versioned
/// image package it depends on (`linux-image-6.1.0-NN-cloud-amd64`).
pub fn resolve_kernel(meta: &str) -> Result<(PackagePin, PackagePin), ImageError> {
    let text = run_capture(
        Command::new("apt-cache").args(["show", "--no-all-versions", meta]),
        APT_HINT,
    )?;
    let fields = parse_stanza(&text);
    let meta_pin = pin_from_stanza(meta, &fields)?;
    let image = kernel_dependency(field(&fields, "Depends").unwrap_or("")).ok_or_else(|| {
        ImageError::Tool {
            command: format!("apt-cache show --no-all-versions {meta}"),
            detail: "its Depends names no linux-image-* package".into(),
            hint: APT_HINT.into(),
        }
    })?;
    Ok((meta_pin, resolve(&image)?))
}

/// The first `linux-image-*` package in a Depends field.
pub fn kernel_dependency(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-"))
        .map(str::to_string)
}

/// Download `pin` into `debs_dir/<sha256>.deb` unless already there; verify it.
///
/// `on_progress(bytes)` is called while the download runs.
pub fn fetch(
    pin: &PackagePin,
    debs_dir: &Path,
    mut on_progress: impl FnMut(u64),
) -> Result<PathBuf, ImageError> {
    let dest = debs_dir.join(format!("{}.deb", pin.sha256));
    if dest.exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(debs_dir)
        .map_err(ImageError::io("creating the package cache", debs_dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(debs_dir)
        .map_err(ImageError::io("creating a download directory", debs_dir))?;
    let spec = format!("{}={}", pin.name, pin.version);
    let command = format!("apt-get download {spec}");
    let mut child = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Tool {
            command: command.clone(),
            detail: e.to_string(),
            hint: "apt-get is needed to fetch Debian packages".into(),
        })?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(ImageError::io("waiting for apt-get", scratch.path()))?
        {
            break status;
        }
        on_progress(dir_bytes(scratch.path()));
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            use std::io::Read;
            let _ = err.read_to_string(&mut stderr);
        }
        return Err(ImageError::Tool {
            command,
            detail: stderr.trim().to_string(),
            hint: APT_HINT.into(),
        });
    }
    let file = find_deb(scratch.path(), &pin.name)?;
    let got = sha256_file(&file).map_err(ImageError::io("hashing a package", &file))?;
    if got != pin.sha256 {
        return Err(ImageError::HashMismatch {
            package: pin.name.clone(),
            want: pin.sha256.clone(),
            got,
        });
    }
    std::fs::rename(&file, &dest).map_err(ImageError::io("storing a package", &dest))?;
    Ok(dest)
}

fn find_deb(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let prefix = format!("{name}_");
    let entries = std::fs::read_dir(dir).map_err(ImageError::io("listing downloads", dir))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
            file.starts_with(&prefix) && file.ends_with(".deb")
        })
        .ok_or_else(|| ImageError::Tool {
            command: format!("apt-get download {name}"),
            detail: "finished but left no .deb file".into(),
            hint: APT_HINT.into(),
        })
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Unpack a .deb's files into `dest` with `dpkg-deb -x` (no install, no root).
pub fn extract(deb: &Path, dest: &Path) -> Result<(), ImageError> {
    run_capture(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest),
        "dpkg-deb is part of Debian's dpkg package",
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\nDescription: Linux for x86-64 cloud\n This package depends on the latest binary image\n for Linux kernel on cloud.\nSize: 1500\nSHA256: 00be21c0\n\nPackage: linux-image-cloud-amd64\nVersion: 6.1.176-1\n";

    #[test]
    fn parses_first_stanza_only() {
        let fields = parse_stanza(SHOW);
        let pin = pin_from_stanza("x", &fields).unwrap();
        assert_eq!(pin.name, "linux-image-cloud-amd64");
        assert_eq!(pin.version, "6.1.192-2");
        assert_eq!(pin.sha256, "00be21c0");
        assert_eq!(pin.size, 1500);
        let description = field(&fields, "Description").unwrap();
        assert!(description.ends_with("for Linux kernel on cloud."));
    }

    #[test]
    fn all_stanzas_are_parsed() {
        let stanzas = parse_stanzas(SHOW);
        assert_eq!(stanzas.len(), 2);
        assert_eq!(field(&stanzas[1], "Version"), Some("6.1.176-1"));
    }

    #[test]
    fn missing_fields_are_errors() {
        let fields = parse_stanza("Package: a\nVersion: 1\n");
        let err = pin_from_stanza("a", &fields).unwrap_err().to_string();
        assert!(err.contains("SHA256"), "{err}");
    }

    #[test]
    fn kernel_dependency_is_found() {
        let fields = parse_stanza(SHOW);
        let deps = field(&fields, "Depends").unwrap();
        assert_eq!(
            kernel_dependency(deps).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(kernel_dependency("initramfs-tools, kmod"), None);
    }
}
