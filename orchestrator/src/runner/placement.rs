//! Where a run's VMs go: straight onto `/dev/kvm` when it can boot stock kernels, else
//! the whole run moves into the emulated KVM host (`--host auto|kvm|emulated`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::host_kind::kvm_can_boot_linux;
use crate::spec::ClusterSpec;

/// The user's choice of host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostChoice {
    /// `kvm` when `/dev/kvm` can boot stock Linux, else `emulated`.
    Auto,
    /// VMs run on this machine's `/dev/kvm`.
    Kvm,
    /// The run moves into the emulated KVM host (QEMU TCG with nested SVM).
    Emulated,
}

/// The decision, with the reason for the one line that announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// VMs run here.
    Kvm(String),
    /// The run moves into the emulated KVM host.
    Emulated(String),
}

impl Placement {
    /// `kvm: <why>` or `emulated: <why>`, for reports.
    pub fn describe(&self) -> String {
        match self {
            Placement::Kvm(why) => format!("kvm: {why}"),
            Placement::Emulated(why) => format!("emulated: {why}"),
        }
    }
}

/// Decides where the VMs of a run go.
pub fn decide(choice: HostChoice) -> Placement {
    match choice {
        HostChoice::Kvm => Placement::Kvm("--host kvm".into()),
        HostChoice::Emulated => Placement::Emulated("--host emulated".into()),
        HostChoice::Auto => {
            let kind = kvm_can_boot_linux();
            if kind.can_boot_linux() {
                Placement::Kvm(kind.reason().to_string())
            } else {
                Placement::Emulated(kind.reason().to_string())
            }
        }
    }
}

/// Memory for an emulated host that holds every node of `spec` at once, MiB: the nodes'
/// memory, their root disk copies (in the host's tmpfs: the allocated part of each image's
/// `rootfs.ext4`), plus room for the host's kernel, the orchestrator and the `vmm`s.
pub fn emulated_host_memory(spec: &ClusterSpec, images: &HashMap<String, PathBuf>) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let disk_mib = |image: &str| {
        images
            .get(image)
            .and_then(|dir| std::fs::metadata(dir.join("rootfs.ext4")).ok())
            .map_or(0, |m| (m.blocks() * 512 / (1 << 20)) as u32)
    };
    let nodes: u32 = spec
        .nodes
        .iter()
        .map(|n| n.memory + disk_mib(&n.image) + 64)
        .sum();
    (nodes + 1536).max(4096)
}

/// vCPUs for the emulated host of a cluster run: 1 unless `KILN_EMULATED_HOST_CPUS` says
/// otherwise. Several nested guests booting at once on a multi-vCPU TCG host triple-faulted
/// at random (3 of 3 six-node runs with 2 vCPUs, each losing a node within seconds of its
/// start); on one vCPU the same runs pass. The nodes then share one emulated CPU.
/// QEMU 10.0.2 (bookworm-backports) with 2 vCPUs, 2026-12-02: no triple fault, wave 1 of
/// fresh-smoke ready in 350 s (599 s on one vCPU in a busier run), but node06's setup hung
/// for over 8 minutes in the one run tried, so one vCPU stays the default until many runs
/// prove two.
pub fn emulated_host_cpus() -> u32 {
    std::env::var("KILN_EMULATED_HOST_CPUS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(1, |n| n.clamp(1, 64))
}

/// The parent of every run directory: `<cache>/run`.
pub fn runs_root() -> PathBuf {
    crate::cache::cache_root().join("run")
}

/// A new run directory `<cache>/run/<scenario>-<UTC time>[-N]`, created empty, and the
/// `latest` link in the same place pointed at it.
pub fn new_run_dir(scenario: &str) -> std::io::Result<PathBuf> {
    let root = runs_root();
    std::fs::create_dir_all(&root)?;
    let stamp = utc_stamp(std::time::SystemTime::now());
    let mut n = 0;
    loop {
        let name = if n == 0 {
            format!("{scenario}-{stamp}")
        } else {
            format!("{scenario}-{stamp}-{n}")
        };
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                point_latest(&root, &dir);
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The run directory `latest` points at.
pub fn latest_run_dir() -> Option<PathBuf> {
    std::fs::read_link(runs_root().join("latest"))
        .ok()
        .map(|p| runs_root().join(p))
}

fn point_latest(root: &Path, dir: &Path) {
    let link = root.join("latest");
    let tmp = root.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if let Some(name) = dir.file_name() {
        if std::os::unix::fs::symlink(name, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, &link);
        }
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_stamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter_map(|c| match c {
            '-' | ':' | 'Z' => None,
            'T' => Some('-'),
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2026-11-30 09:47:13 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_796_032_033);
        assert_eq!(utc_stamp(t), "20261130-094713");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        assert_eq!(utc_stamp(t), "20240229-120000");
    }

    #[test]
    fn emulated_host_fits_every_node() {
        let spec = ClusterSpec::reference();
        let total: u32 = spec.nodes.iter().map(|n| n.memory).sum();
        assert!(emulated_host_memory(&spec, &HashMap::new()) >= total + 1024);
        assert!(emulated_host_cpus() >= 1);
    }

    #[test]
    fn forced_choices_are_kept() {
        assert!(matches!(decide(HostChoice::Kvm), Placement::Kvm(_)));
        assert!(matches!(
            decide(HostChoice::Emulated),
            Placement::Emulated(_)
        ));
        assert!(decide(HostChoice::Emulated)
            .describe()
            .starts_with("emulated: "));
    }
}
