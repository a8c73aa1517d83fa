//! Helpers for tests that run the real `vmm` binary on tiny hand-made guests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Whether /dev/kvm is usable; prints why not (tests skip loudly, never silently).
pub fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            // Past libtest's capture (eprintln! is captured), so tests/run counts it.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: /dev/kvm cannot be opened ({e})"
            );
            false
        }
    }
}

/// The `vmm` binary of this workspace, built once per test process (see
/// [`crate::vmm_binary`]).
pub fn vmm_binary() -> PathBuf {
    static VMM: OnceLock<PathBuf> = OnceLock::new();
    VMM.get_or_init(|| crate::vmm_binary::build_vmm(&crate::vmm_binary::profile_dir()))
        .clone()
}

/// A tiny guest kernel that prints `text` on the serial console then halts forever.
pub fn tiny_kernel(dir: &Path, text: &str) -> PathBuf {
    let mut a = vmm::tiny_guest::Asm::new();
    a.print(text).halt_forever();
    let path = dir.join("tiny.elf");
    std::fs::write(&path, a.into_elf()).unwrap();
    path
}

/// Socket files under `dir`, recursively.
pub fn sockets_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let kind = e.file_type().unwrap();
        if kind.is_dir() {
            found.extend(sockets_under(&e.path()));
        } else if kind.is_socket() {
            found.push(e.path());
        }
    }
    found
}

/// Whether any abstract `kiln-net-<pid>-*` socket of `pid` is still bound.
pub fn net_ports_of(pid: u32) -> bool {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let prefix = format!("@kiln-net-{pid}-");
    table.lines().any(|l| {
        l.split_whitespace()
            .nth(7)
            .is_some_and(|p| p.starts_with(&prefix))
    })
}
