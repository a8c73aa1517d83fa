//! The test API of a node, in the NixOS test driver's vocabulary. Commands run as
//! `/bin/sh -c <command>` in the guest through the agent.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use agent::{Client, ExecRequest};
use regex::bytes::Regex;

use super::error::{ClusterError, Result};
use super::node::{lock, Node};
use super::wait::{poll_until, Probe};

/// What a finished command gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Shell-style exit code (128+N for signal N).
    pub code: i32,
    /// stdout, lossily decoded.
    pub stdout: String,
    /// stderr, lossily decoded.
    pub stderr: String,
    /// The agent killed it at its time limit (`code` is then the signal's).
    pub timed_out: bool,
}

/// The least time one attempt of a `wait_until_*` gets, however little of the wait is left.
const SHORTEST_ATTEMPT: Duration = Duration::from_secs(10);

impl Node {
    /// Runs `op` against the agent (connecting within the ready timeout if needed), bounded
    /// by `timeout`. A broken connection is forgotten so the next call reconnects.
    fn with_agent<T, F, Fut>(&self, what: &str, timeout: Duration, op: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = agent::client::Result<T>>,
    {
        let client = self.connect_agent(self.timeouts.ready)?;
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, op(client)).await });
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => {
                if matches!(
                    source,
                    agent::client::ClientError::Closed | agent::client::ClientError::Io(_)
                ) {
                    self.drop_agent();
                }
                Err(ClusterError::Agent {
                    node: self.name().to_string(),
                    what: what.to_string(),
                    source,
                })
            }
            Err(_) => Err(ClusterError::Timeout {
                node: self.name().to_string(),
                what: what.to_string(),
                after: timeout,
                last: None,
            }),
        }
    }

    /// Runs `command` and returns its exit code and output, whatever the code.
    pub fn run(&self, command: &str) -> Result<CommandOutput> {
        self.run_within(command, self.timeouts.command)
    }

    /// [`Node::run`] with its own time limit (the agent kills the command after `limit`).
    fn run_within(&self, command: &str, limit: Duration) -> Result<CommandOutput> {
        let req = ExecRequest::shell(command).timeout(limit);
        let what = format!("running `{command}`");
        // The agent enforces the limit; the extra second lets its answer arrive.
        let out = self.with_agent(&what, limit + Duration::from_secs(5), |c| async move {
            c.exec_buffered(req).await
        })?;
        Ok(CommandOutput {
            code: out.status.shell_code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            timed_out: out.timed_out,
        })
    }

    /// Runs `command`: `(exit code, stdout)`.
    pub fn execute(&self, command: &str) -> Result<(i32, String)> {
        self.run(command).map(|o| (o.code, o.stdout))
    }

    /// Runs `command`, which must exit 0; returns stdout. The error shows the exit code,
    /// stdout and stderr.
    pub fn succeed(&self, command: &str) -> Result<String> {
        let out = self.run(command)?;
        if out.code == 0 {
            return Ok(out.stdout);
        }
        Err(ClusterError::CommandFailed {
            node: self.name().to_string(),
            command: command.to_string(),
            code: out.code,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Runs `command`, which must exit non-zero; returns stdout.
    pub fn fail(&self, command: &str) -> Result<String> {
        let out = self.run(command)?;
        if out.timed_out {
            // Killed at the time limit is not a failure of the command's own.
            return Err(ClusterError::Timeout {
                node: self.name().to_string(),
                what: format!("`{command}` to fail"),
                after: self.timeouts.command,
                last: Some(format!(
                    "still running, killed; stdout: {}",
                    out.stdout.trim()
                )),
            });
        }
        if out.code != 0 {
            return Ok(out.stdout);
        }
        Err(ClusterError::CommandSucceeded {
            node: self.name().to_string(),
            command: command.to_string(),
            stdout: out.stdout,
        })
    }

    /// Retries `command` until it exits 0 (within `timeout`); returns its stdout.
    pub fn wait_until_succeeds(&self, command: &str, timeout: Duration) -> Result<String> {
        self.wait_for_exit(command, timeout, true, None)
    }

    /// Retries `command` until it exits 0 with `expect` in its stdout (within `timeout`);
    /// returns its stdout.
    pub fn wait_until_prints(
        &self,
        command: &str,
        expect: &str,
        timeout: Duration,
    ) -> Result<String> {
        self.wait_for_exit(command, timeout, true, Some(expect))
    }

    /// Retries `command` until it exits non-zero (within `timeout`); returns its stdout.
    pub fn wait_until_fails(&self, command: &str, timeout: Duration) -> Result<String> {
        self.wait_for_exit(command, timeout, false, None)
    }

    fn wait_for_exit(
        &self,
        command: &str,
        timeout: Duration,
        success: bool,
        expect: Option<&str>,
    ) -> Result<String> {
        let goal = match expect {
            Some(text) => format!("succeed printing {text:?}"),
            None if success => "succeed".to_string(),
            None => "fail".to_string(),
        };
        // One attempt never runs far past the wait's end: a command that hangs in the guest
        // ends the wait on time instead of after the whole command time limit.
        let deadline = std::time::Instant::now() + timeout;
        poll_until(
            self.name(),
            || format!("`{command}` to {goal}"),
            timeout,
            || {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let limit = left.max(SHORTEST_ATTEMPT).min(self.timeouts.command);
                Ok(match self.run_within(command, limit) {
                    // Killed at the limit: it neither passed nor failed.
                    Ok(o) if o.timed_out => Probe::NotYet(format!(
                        "still running after {:.0} s, killed; stdout so far: {}",
                        limit.as_secs_f64(),
                        o.stdout.trim()
                    )),
                    Ok(o)
                        if (o.code == 0) == success
                            && expect.is_none_or(|text| o.stdout.contains(text)) =>
                    {
                        Probe::Done(o.stdout)
                    }
                    Ok(o) => Probe::NotYet(format!(
                        "exit code {}, stdout: {}, stderr: {}",
                        o.code,
                        o.stdout.trim(),
                        o.stderr.trim()
                    )),
                    Err(e) if ends_waiting(&e) => return Err(e),
                    Err(e) => Probe::NotYet(e.to_string()),
                })
            },
        )
    }

    /// Polls an agent query until it answers `true`.
    fn wait_for_flag<F, Fut>(&self, what: String, timeout: Duration, query: F) -> Result<()>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = agent::client::Result<bool>>,
    {
        poll_until(
            self.name(),
            || what.clone(),
            timeout,
            || {
                Ok(
                    match self.with_agent(&what, Duration::from_secs(30), &query) {
                        Ok(true) => Probe::Done(()),
                        Ok(false) => Probe::NotYet("not yet".into()),
                        Err(e) if ends_waiting(&e) => return Err(e),
                        Err(e) => Probe::NotYet(e.to_string()),
                    },
                )
            },
        )
    }

    /// Waits until the systemd unit is active.
    pub fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<()> {
        let u = unit.to_string();
        self.wait_for_flag(format!("unit {unit} to be active"), timeout, move |c| {
            let u = u.clone();
            async move { c.is_unit_active(&u).await }
        })
    }

    /// Waits until something listens on TCP `port`.
    pub fn wait_for_open_port(&self, port: u16, timeout: Duration) -> Result<()> {
        self.wait_for_flag(
            format!("TCP port {port} to listen"),
            timeout,
            move |c| async move { c.is_port_open(port).await },
        )
    }

    /// Waits until `path` exists in the guest.
    pub fn wait_for_file(&self, path: &str, timeout: Duration) -> Result<()> {
        let p = path.to_string();
        self.wait_for_flag(format!("file {path} to exist"), timeout, move |c| {
            let p = p.clone();
            async move { c.file_exists(&p).await }
        })
    }

    /// Waits until the serial console prints a line matching `pattern` (a regular
    /// expression; `regex::escape` a literal). Returns the matching line; matching consumes
    /// it (see `cluster::console`).
    pub fn wait_for_console_text(&self, pattern: &str, timeout: Duration) -> Result<String> {
        let re = Regex::new(pattern).map_err(|source| ClusterError::BadPattern {
            pattern: pattern.to_string(),
            source,
        })?;
        poll_until(
            self.name(),
            || {
                format!(
                    "console text /{pattern}/ in {}",
                    self.paths.serial_log.display()
                )
            },
            timeout,
            || {
                let found =
                    lock(&self.console)
                        .find(&re)
                        .map_err(super::error::ClusterError::io(
                            "reading",
                            &self.paths.serial_log,
                        ))?;
                Ok(match found {
                    Some(line) => Probe::Done(line),
                    None => Probe::NotYet(format!("console tail: {}", lock(&self.console).tail(1))),
                })
            },
        )
    }

    /// Copies the host file `local` to `remote` in the guest (same permission bits),
    /// hash-checked; returns the byte count.
    pub fn copy_to(&self, local: &Path, remote: &str) -> Result<u64> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(local)
            .map_err(ClusterError::io("reading", local))?
            .permissions()
            .mode()
            & 0o7777;
        let local = local.to_path_buf();
        let remote_s = remote.to_string();
        self.with_agent(
            &format!("copying {} to {remote}", local.display()),
            self.timeouts.command,
            |c| async move { c.put_file(&local, &remote_s, mode).await },
        )
    }

    /// Copies `remote` from the guest to the host file `local`, hash-checked; returns the
    /// byte count.
    pub fn copy_from(&self, remote: &str, local: &Path) -> Result<u64> {
        let local_p = local.to_path_buf();
        let remote_s = remote.to_string();
        self.with_agent(
            &format!("copying {remote} to {}", local.display()),
            self.timeouts.command,
            |c| async move { c.get_file(&remote_s, &local_p).await.map(|info| info.size) },
        )
    }
}

/// Errors no amount of waiting fixes: the node is not running.
fn ends_waiting(e: &ClusterError) -> bool {
    matches!(
        e,
        ClusterError::NotRunning { .. } | ClusterError::VmmExited { .. }
    )
}
