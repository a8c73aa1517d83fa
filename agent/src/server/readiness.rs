//! Readiness probes answered by the agent itself, so the host need not spawn a shell.

use std::process::Stdio;

use tokio::process::Command;

use super::connection::Outbox;
use crate::protocol::{ErrorKind, ServerMsg};

/// TCP state `LISTEN` in /proc/net/tcp{,6}.
const TCP_LISTEN: &str = "0A";

/// `systemctl is-active UNIT`, run directly (no shell).
pub(crate) async fn unit_active(unit: &str, out: &Outbox) {
    let result = Command::new("systemctl")
        .arg("is-active")
        .arg("--")
        .arg(unit)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await;
    let msg = match result {
        Ok(output) => ServerMsg::UnitState {
            active: output.status.success(),
            state: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        },
        Err(e) => ServerMsg::Error {
            kind: ErrorKind::NotFound,
            message: format!("cannot run systemctl ({e}); is this a systemd guest?"),
        },
    };
    out.send(msg).await;
}

/// Whether some socket listens on TCP `port`, from /proc/net/tcp and /proc/net/tcp6.
pub(crate) async fn port_open(port: u16, out: &Outbox) {
    let mut open = false;
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = tokio::fs::read_to_string(table).await {
            read_any = true;
            open |= table_has_listener(&text, port);
        }
    }
    let msg = if read_any {
        ServerMsg::Bool(open)
    } else {
        ServerMsg::Error {
            kind: ErrorKind::NotFound,
            message: "neither /proc/net/tcp nor /proc/net/tcp6 is readable (is /proc mounted?)"
                .into(),
        }
    };
    out.send(msg).await;
}

/// Parses a /proc/net/tcp table: true if a row in state LISTEN has local port `port`.
pub(crate) fn table_has_listener(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        match (local, state) {
            (Some(local), Some(TCP_LISTEN)) => {
                local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
            }
            _ => false,
        }
    })
}

/// Whether `path` exists (following symlinks).
pub(crate) async fn file_exists(path: &str, out: &Outbox) {
    let msg = match tokio::fs::try_exists(path).await {
        Ok(exists) => ServerMsg::Bool(exists),
        Err(e) => ServerMsg::Error {
            kind: ErrorKind::Io,
            message: format!("checking {path}: {e}"),
        },
    };
    out.send(msg).await;
}

#[cfg(test)]
mod tests {
    use super::table_has_listener;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
";

    #[test]
    fn finds_listening_port_only() {
        assert!(table_has_listener(TABLE, 8080));
        // Port 22 appears only as an established connection.
        assert!(!table_has_listener(TABLE, 22));
        assert!(!table_has_listener(TABLE, 1));
        assert!(!table_has_listener("garbage\nno fields here", 80));
    }
}
