//! Zombie reaping for PID 1 (or a child subreaper): orphans re-parented to the agent are
//! waited for, while children of exec requests are left to their own tasks.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::server::exec::EXEC_CHILDREN;

/// Makes this process the reaper of its orphaned descendants (what PID 1 is anyway).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reaps on every SIGCHLD, and once a second in case signals were coalesced.
pub fn spawn_reaper() -> std::io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = tick.tick() => {}
            }
            let reaped = reap_orphans();
            if reaped > 0 {
                tracing::debug!(reaped, "reaped orphans");
            }
        }
    });
    Ok(())
}

/// Waits for every zombie child that is not an exec request's child. Returns how many.
pub fn reap_orphans() -> usize {
    let me = std::process::id() as i32;
    // Held during the scan: exec spawns register under the same lock, so a child that is
    // not registered here is really an orphan.
    let registry = EXEC_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut reaped = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((state, ppid)) = parse_stat(&stat) else {
            continue;
        };
        let tracked = registry
            .as_ref()
            .is_some_and(|set| set.contains(&(pid as u32)));
        if state == 'Z' && ppid == me && !tracked {
            let mut status = 0;
            // SAFETY: waitpid on a specific pid with a valid status pointer.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                reaped += 1;
            }
        }
    }
    reaped
}

/// Extracts (state, ppid) from a /proc/PID/stat line; the command name may contain
/// spaces and parentheses, so parsing starts after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn parses_state_and_ppid_even_with_odd_names() {
        assert_eq!(parse_stat("42 (sleep) Z 1 42 42 0"), Some(('Z', 1)));
        assert_eq!(parse_stat("7 (a) b) (c) S 99 7 7"), Some(('S', 99)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R notanumber"), None);
    }
}
