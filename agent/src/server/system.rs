//! System requests: hostname, uptime, sync, poweroff and reboot.

use std::io;

use super::connection::Outbox;
use crate::protocol::{ErrorKind, ServerMsg};

/// What the agent does on a `Poweroff` or `Reboot` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// sync(2) then reboot(2) with `RB_POWER_OFF` / `RB_AUTOBOOT` (PID 1 mode).
    Syscall,
    /// `systemctl poweroff` / `systemctl reboot` (agent running as a systemd service).
    Systemctl,
    /// Exit the agent process with status 0 (test mode: never touches the host).
    Exit,
}

/// The kernel's hostname.
pub fn hostname() -> io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and we search for the NUL ourselves.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Milliseconds since boot (CLOCK_BOOTTIME, includes suspend).
pub fn uptime_ms() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000)
}

/// Flushes all filesystems.
pub fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

pub(crate) async fn answer_hostname(out: &Outbox) {
    let msg = match hostname() {
        Ok(name) => ServerMsg::Hostname(name),
        Err(e) => ServerMsg::Error {
            kind: ErrorKind::Io,
            message: format!("gethostname: {e}"),
        },
    };
    out.send(msg).await;
}

pub(crate) async fn answer_uptime(out: &Outbox) {
    let msg = match uptime_ms() {
        Ok(ms) => ServerMsg::Uptime(ms),
        Err(e) => ServerMsg::Error {
            kind: ErrorKind::Io,
            message: format!("clock_gettime(CLOCK_BOOTTIME): {e}"),
        },
    };
    out.send(msg).await;
}

pub(crate) async fn answer_sync(out: &Outbox) {
    // sync can block for a long time on a busy disk: keep it off the async workers.
    let msg = match tokio::task::spawn_blocking(sync_all).await {
        Ok(()) => ServerMsg::Ok,
        Err(e) => ServerMsg::Error {
            kind: ErrorKind::Io,
            message: format!("sync task failed: {e}"),
        },
    };
    out.send(msg).await;
}

/// Answers `Ok` (flushed to the client), then powers off or reboots.
pub(crate) async fn power(action: PowerAction, reboot: bool, out: &Outbox) {
    let what = if reboot { "reboot" } else { "poweroff" };
    tracing::info!(?action, what, "power request");
    if action == PowerAction::Systemctl {
        // systemctl returns once the job is queued, so the answer reflects the real outcome.
        let result = tokio::process::Command::new("systemctl")
            .arg(what)
            .status()
            .await;
        let msg = match result {
            Ok(st) if st.success() => ServerMsg::Ok,
            Ok(st) => ServerMsg::Error {
                kind: ErrorKind::Io,
                message: format!("systemctl {what} failed: {st}"),
            },
            Err(e) => ServerMsg::Error {
                kind: ErrorKind::NotFound,
                message: format!("cannot run systemctl {what}: {e}"),
            },
        };
        out.send(msg).await;
        return;
    }
    out.send_flushed(ServerMsg::Ok).await;
    match action {
        PowerAction::Syscall => {
            let err = power_syscall(reboot);
            tracing::error!(error = %err, "reboot(2) failed");
        }
        PowerAction::Exit => std::process::exit(0),
        PowerAction::Systemctl => {}
    }
}

/// sync(2), then reboot(2). Returns only on failure.
pub fn power_syscall(reboot: bool) -> io::Error {
    sync_all();
    let cmd = if reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: reboot(2) with a valid command; on success it does not return.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}
