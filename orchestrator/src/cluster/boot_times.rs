//! Where a node's boot went: how long it waited for its agent, its setup script and each
//! readiness check, so a report can name the slowest node and what held it up.

use std::path::Path;

use serde::Serialize;

/// The line the guest agent prints on the console once it listens (agent/README.md).
pub const AGENT_READY_MARKER: &str = "KILN-AGENT-READY";

/// One boot of one node, in seconds from the start of its `vmm`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BootTimes {
    /// The node.
    pub node: String,
    /// Until the agent answered the host.
    pub agent: f64,
    /// The guest kernel's own uptime when the agent announced itself on the console (the
    /// guest's view of kernel start to agent), when the console showed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_to_agent: Option<f64>,
    /// The setup script (0 when none ran on this boot).
    pub setup: f64,
    /// Each readiness check and how long it waited, in order.
    pub checks: Vec<(String, f64)>,
    /// Until every check passed.
    pub ready: f64,
}

impl BootTimes {
    /// The longest single wait of the boot and what it waited for.
    pub fn longest_wait(&self) -> (String, f64) {
        let mut waits = vec![("the agent".to_string(), self.agent)];
        if self.setup > 0.0 {
            waits.push(("the setup script".to_string(), self.setup));
        }
        waits.extend(self.checks.iter().cloned());
        waits
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or_default()
    }

    /// One line: `node05 ready in 95.2 s (agent 80.1 s [kernel 74.0 s], setup 10.0 s,
    /// unit nginx 5.1 s)`.
    pub fn describe(&self) -> String {
        let mut parts = vec![match self.kernel_to_agent {
            Some(k) => format!("agent {:.1} s [guest kernel uptime {k:.1} s]", self.agent),
            None => format!("agent {:.1} s", self.agent),
        }];
        if self.setup > 0.0 {
            parts.push(format!("setup {:.1} s", self.setup));
        }
        parts.extend(self.checks.iter().map(|(c, s)| format!("{c} {s:.1} s")));
        format!(
            "{} ready in {:.1} s ({})",
            self.node,
            self.ready,
            parts.join(", ")
        )
    }
}

/// The slowest of `boots` (by time to ready), as a line naming what it waited for longest.
pub fn slowest(boots: &[BootTimes]) -> Option<String> {
    let slow = boots.iter().max_by(|a, b| a.ready.total_cmp(&b.ready))?;
    let (what, secs) = slow.longest_wait();
    Some(format!(
        "slowest node: {}; its longest wait: {what} ({secs:.1} s)",
        slow.describe()
    ))
}

/// The guest kernel's uptime stamped on the first console line after byte `from` of the
/// serial log at `path` that contains `marker` (`[  173.314721] ...`).
pub fn kernel_uptime_at(path: &Path, from: u64, marker: &str) -> Option<f64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.contains(marker))
        .find_map(uptime_stamp)
}

/// `[  173.314721] rest` -> 173.314721.
fn uptime_stamp(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (stamp, _) = rest.split_once(']')?;
    stamp.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootTimes {
        BootTimes {
            node: "node05".into(),
            agent: 80.1,
            kernel_to_agent: Some(74.0),
            setup: 10.0,
            checks: vec![
                ("unit nginx".into(), 5.1),
                ("`mountpoint -q /srv/www`".into(), 0.2),
            ],
            ready: 95.4,
        }
    }

    #[test]
    fn the_longest_wait_is_named() {
        assert_eq!(sample().longest_wait(), ("the agent".to_string(), 80.1));
        let mut setup_bound = sample();
        setup_bound.setup = 90.0;
        assert_eq!(setup_bound.longest_wait().0, "the setup script");
        let mut check_bound = sample();
        check_bound.checks[1].1 = 120.0;
        assert_eq!(check_bound.longest_wait().0, "`mountpoint -q /srv/www`");
    }

    #[test]
    fn the_slowest_node_is_reported_with_its_waits() {
        let mut fast = sample();
        fast.node = "node01".into();
        fast.ready = 20.0;
        let line = slowest(&[fast, sample()]).unwrap();
        assert_eq!(
            line,
            "slowest node: node05 ready in 95.4 s (agent 80.1 s [guest kernel uptime 74.0 s], \
             setup 10.0 s, unit nginx 5.1 s, `mountpoint -q /srv/www` 0.2 s); its longest \
             wait: the agent (80.1 s)"
        );
        assert_eq!(slowest(&[]), None);
    }

    #[test]
    fn kernel_uptime_comes_from_the_marker_line_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let first = "[    1.500000] kiln-agent[9]: KILN-AGENT-READY version=0.1.0\n";
        let text = format!(
            "{first}[    0.000000] Linux version 6.1\n[  173.314721] kiln-agent[143]: \
             KILN-AGENT-READY version=0.1.0 protocol=1\n"
        );
        std::fs::write(&log, text).unwrap();
        assert_eq!(kernel_uptime_at(&log, 0, AGENT_READY_MARKER), Some(1.5));
        assert_eq!(
            kernel_uptime_at(&log, first.len() as u64, AGENT_READY_MARKER),
            Some(173.314721)
        );
        assert_eq!(kernel_uptime_at(&log, 0, "nothing like it"), None);
        assert_eq!(
            kernel_uptime_at(&dir.path().join("absent"), 0, AGENT_READY_MARKER),
            None
        );
        assert_eq!(uptime_stamp("KILN-AGENT-READY without a stamp"), None);
    }
}
