//! The early mounts PID 1 needs before anything else works.

use std::ffi::CString;
use std::io;

/// (source, target, fstype, flags, data)
const EARLY_MOUNTS: &[(&str, &str, &str, libc::c_ulong, &str)] = &[
    (
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "gid=5,mode=620,ptmxmode=666",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    ),
];

/// Mounts /proc, /sys, /dev, /dev/pts and /run. Already-mounted targets are fine; other
/// failures are logged and the next mount is tried.
pub fn mount_early() {
    for &(source, target, fstype, flags, data) in EARLY_MOUNTS {
        if let Err(e) = std::fs::create_dir_all(target) {
            tracing::warn!(target, error = %e, "cannot create mount point");
        }
        match mount(source, target, fstype, flags, data) {
            Ok(()) => tracing::debug!(target, "mounted"),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => tracing::warn!(target, fstype, error = %e, "mount failed"),
        }
    }
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(io::Error::other);
    let (source, target, fstype, data) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings living across the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
