//! One node: its `vmm` process, control socket, agent connection and serial console.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::boot_times::{kernel_uptime_at, BootTimes, AGENT_READY_MARKER};
use super::console::{tail_of, Console};
use super::control;
use super::error::{ClusterError, Result};
use super::launch::NodeLaunch;
use super::process::VmmProcess;
use super::run_dir::NodePaths;
use super::wait::{poll_until, Probe};
use super::wiring;
use crate::spec::ReadinessCheck;
use crate::switch::SwitchHandle;

/// The guest agent's vsock port (agent/README.md).
pub const AGENT_PORT: u32 = agent::protocol::DEFAULT_VSOCK_PORT;

/// The first agent connect attempt's time limit (connect + handshake); later attempts
/// double it up to [`LONGEST_CONNECT_ATTEMPT`].
const FIRST_CONNECT_ATTEMPT: Duration = Duration::from_secs(5);
/// The longest single agent connect attempt.
const LONGEST_CONNECT_ATTEMPT: Duration = Duration::from_secs(80);

/// How long each lifecycle step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From spawning `vmm` until its control API answers.
    pub start: Duration,
    /// From start until the agent answers and every readiness check passes.
    pub ready: Duration,
    /// One command run through the agent (`succeed`, `execute`, ...).
    pub command: Duration,
    /// Each stop phase: agent poweroff, API shutdown, SIGTERM, SIGKILL.
    pub stop_phase: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(30),
            ready: Duration::from_secs(600),
            command: Duration::from_secs(900),
            stop_phase: Duration::from_secs(30),
        }
    }
}

/// How a [`Node::stop`] ended the `vmm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPhase {
    /// It was not running.
    NotRunning,
    /// The guest powered off when the agent asked.
    AgentPoweroff,
    /// `{"op":"shutdown"}` on the control API.
    ApiShutdown,
    /// SIGTERM.
    Sigterm,
    /// SIGKILL.
    Sigkill,
}

/// One virtual machine of a cluster. Lifecycle operations take `&mut self`; the test API
/// (`succeed`, `wait_for_unit`, ...) takes `&self` and may run from several threads.
/// All calls block; do not call them from inside an async runtime.
pub struct Node {
    pub(super) launch: NodeLaunch,
    pub(super) paths: NodePaths,
    vmm: PathBuf,
    ready_checks: Vec<ReadinessCheck>,
    /// The switch of each interface, in interface order.
    switches: Vec<(String, Arc<SwitchHandle>)>,
    process: Option<VmmProcess>,
    pub(super) agent: Mutex<Option<agent::Client>>,
    pub(super) console: Mutex<Console>,
    pub(super) rt: Arc<tokio::runtime::Runtime>,
    /// Time limits; change them freely.
    pub timeouts: Timeouts,
    started_at: Option<Instant>,
    /// Length of the serial log when the current `vmm` started (this boot's lines follow).
    boot_log_offset: u64,
    ready_at: Mutex<Option<Instant>>,
    boot_times: Mutex<Option<BootTimes>>,
    /// The spec's setup script and whether it has run (on the first boot of the disks).
    setup: Option<String>,
    setup_done: Mutex<bool>,
    /// The fault rules (`fault` steps) its `vmm` has, and gets again at each start.
    pub(super) fault_rules: devices::fault::FaultRules,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.launch.name)
            .field("pid", &self.process.as_ref().map(VmmProcess::pid))
            .finish_non_exhaustive()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A multi-threaded tokio runtime for agent connections (shared by a cluster's nodes).
pub fn agent_runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kiln-agent-io")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(ClusterError::Runtime)
}

impl Node {
    /// A stopped node. `switches` pairs each of `launch.nics` (same order) with its switch;
    /// the node directory in `paths` must exist and the disks must be prepared.
    pub fn new(
        launch: NodeLaunch,
        paths: NodePaths,
        vmm: impl Into<PathBuf>,
        ready_checks: Vec<ReadinessCheck>,
        switches: Vec<(String, Arc<SwitchHandle>)>,
        rt: Arc<tokio::runtime::Runtime>,
    ) -> Node {
        let console = Mutex::new(Console::new(&paths.serial_log));
        Node {
            launch,
            paths,
            vmm: vmm.into(),
            ready_checks,
            switches,
            process: None,
            agent: Mutex::new(None),
            console,
            rt,
            timeouts: Timeouts::default(),
            started_at: None,
            boot_log_offset: 0,
            ready_at: Mutex::new(None),
            boot_times: Mutex::new(None),
            setup: None,
            setup_done: Mutex::new(false),
            fault_rules: devices::fault::FaultRules::default(),
        }
    }

    /// Sets the script [`Node::wait_ready`] runs once, on the first boot, before the
    /// readiness checks (`NodeSpec::setup`).
    pub fn set_setup(&mut self, script: Option<String>) {
        self.setup = script;
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.launch.name
    }

    /// Its files.
    pub fn paths(&self) -> &NodePaths {
        &self.paths
    }

    /// How it is launched.
    pub fn launch(&self) -> &NodeLaunch {
        &self.launch
    }

    /// The `vmm` pid while running.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.process.as_ref().map(VmmProcess::pid)
        } else {
            None
        }
    }

    /// Whether its `vmm` runs (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.process {
            Some(p) => p.try_status().is_none(),
            None => false,
        }
    }

    /// When the current `vmm` was spawned.
    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// When the node last passed [`Node::wait_ready`].
    pub fn ready_at(&self) -> Option<Instant> {
        *lock(&self.ready_at)
    }

    /// Where the current boot's wait for readiness went, once it has passed.
    pub fn boot_times(&self) -> Option<BootTimes> {
        lock(&self.boot_times).clone()
    }

    /// Starts the `vmm` and waits until its control API answers; does not wait for the guest.
    /// Disks keep their content from earlier runs.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(ClusterError::AlreadyRunning {
                node: self.name().to_string(),
            });
        }
        self.process = None;
        *lock(&self.agent) = None;
        *lock(&self.ready_at) = None;
        *lock(&self.boot_times) = None;
        self.paths.remove_sockets()?;
        lock(&self.console).skip_to_end();
        self.boot_log_offset = std::fs::metadata(&self.paths.serial_log).map_or(0, |m| m.len());
        let mut args = self.launch.vmm_args(&self.paths);
        args.extend(self.faults_file_args()?);
        tracing::info!(node = self.name(), "starting vmm");
        let process = VmmProcess::spawn(&self.vmm, &args, &self.paths.vmm_log, &self.paths)
            .map_err(|source| ClusterError::Spawn {
                node: self.name().to_string(),
                vmm: self.vmm.clone(),
                source,
            })?;
        let pid = process.pid();
        self.process = Some(process);
        self.started_at = Some(Instant::now());
        if let Err(e) = wiring::attach(self.name(), pid, &self.switches) {
            self.kill_and_clean();
            return Err(e);
        }
        let result = self
            .wait_api_up()
            .and_then(|()| wiring::check_bound(&self.launch.name, pid, self.switches.len()));
        if result.is_err() {
            self.kill_and_clean();
        }
        result
    }

    fn wait_api_up(&mut self) -> Result<()> {
        let name = self.name().to_string();
        let api = self.paths.api_sock.clone();
        let timeout = self.timeouts.start;
        poll_until(
            &name,
            || "the vmm control API to answer".into(),
            timeout,
            || {
                self.check_alive("while starting")?;
                match control::request(&api, "status", Duration::from_secs(5)) {
                    Ok(_) => Ok(Probe::Done(())),
                    Err(e) => Ok(Probe::NotYet(e)),
                }
            },
        )
    }

    /// Fails with the end of `vmm.log` if the `vmm` exited.
    fn check_alive(&mut self, when: &str) -> Result<()> {
        let status = match &mut self.process {
            Some(p) => p.try_status(),
            None => {
                return Err(ClusterError::NotRunning {
                    node: self.name().to_string(),
                })
            }
        };
        match status {
            None => Ok(()),
            Some(status) => Err(ClusterError::VmmExited {
                node: self.name().to_string(),
                status: status.to_string(),
                when: when.to_string(),
                log: self.paths.vmm_log.clone(),
                tail: tail_of(&self.paths.vmm_log, 20),
            }),
        }
    }

    /// Like `check_alive` through `&self`, for the waits of the test API: a node that is
    /// not running fails at once instead of at the end of a long timeout.
    fn check_alive_shared(&self) -> Result<()> {
        match &self.process {
            None => Err(ClusterError::NotRunning {
                node: self.name().to_string(),
            }),
            Some(p) if p.has_exited() => Err(ClusterError::VmmExited {
                node: self.name().to_string(),
                status: p.peek_status().unwrap_or_else(|| "see the log".into()),
                when: "while waiting for its agent".into(),
                log: self.paths.vmm_log.clone(),
                tail: tail_of(&self.paths.vmm_log, 20),
            }),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn require_running(&mut self) -> Result<()> {
        if self.is_running() {
            Ok(())
        } else {
            Err(ClusterError::NotRunning {
                node: self.name().to_string(),
            })
        }
    }

    /// The control API's status object (`state`, `vcpus`, `uptime_ms`, ...).
    pub fn vm_status(&mut self) -> Result<serde_json::Value> {
        self.api("status")
    }

    /// The VM state the control API reports: `running` or `paused`.
    pub fn vm_state(&mut self) -> Result<String> {
        let status = self.api("status")?;
        Ok(control::state_of(&status).unwrap_or("unknown").to_string())
    }

    fn api(&mut self, op: &str) -> Result<serde_json::Value> {
        self.require_running()?;
        control::request(&self.paths.api_sock, op, self.timeouts.stop_phase).map_err(|reason| {
            ClusterError::Control {
                node: self.name().to_string(),
                op: op.to_string(),
                reason,
            }
        })
    }

    /// Pauses every vCPU (control API `pause`); the guest's clock stops.
    pub fn freeze(&mut self) -> Result<()> {
        self.api("pause").map(drop)
    }

    /// Resumes a frozen node (control API `resume`).
    pub fn thaw(&mut self) -> Result<()> {
        self.api("resume").map(drop)
    }

    /// Kills the `vmm` with SIGKILL: a power cut. Disks keep what reached them.
    pub fn crash(&mut self) -> Result<()> {
        self.require_running()?;
        tracing::info!(node = self.name(), "crashing node (SIGKILL)");
        self.kill_and_clean();
        Ok(())
    }

    pub(super) fn kill_and_clean(&mut self) {
        if let Some(p) = &mut self.process {
            p.kill();
        }
        self.clean_after_exit();
    }

    pub(super) fn clean_after_exit(&mut self) {
        self.process = None;
        *lock(&self.agent) = None;
        wiring::detach(self.name(), &self.switches);
        if let Err(e) = self.paths.remove_sockets() {
            tracing::warn!(node = self.name(), error = %e, "cannot remove sockets");
        }
    }

    /// Stops the node, politely first: agent poweroff (if an agent is connected), control
    /// API shutdown, SIGTERM, SIGKILL, each given [`Timeouts::stop_phase`].
    pub fn stop(&mut self) -> Result<StopPhase> {
        if !self.is_running() {
            self.clean_after_exit();
            return Ok(StopPhase::NotRunning);
        }
        let phase = self.stop_phases();
        self.clean_after_exit();
        tracing::info!(node = self.name(), ?phase, "node stopped");
        Ok(phase)
    }

    fn stop_phases(&mut self) -> StopPhase {
        let grace = self.timeouts.stop_phase;
        let client = lock(&self.agent).clone();
        if let Some(client) = client {
            let asked = self
                .rt
                .block_on(async { tokio::time::timeout(grace, client.poweroff()).await });
            if matches!(asked, Ok(Ok(()))) && self.wait_exit(grace) {
                return StopPhase::AgentPoweroff;
            }
        }
        if control::request(&self.paths.api_sock, "shutdown", grace).is_ok()
            && self.wait_exit(grace)
        {
            return StopPhase::ApiShutdown;
        }
        if let Some(p) = &self.process {
            p.signal(Signal::TERM);
        }
        if self.wait_exit(grace) {
            return StopPhase::Sigterm;
        }
        if let Some(p) = &mut self.process {
            p.kill();
        }
        StopPhase::Sigkill
    }

    pub(super) fn wait_exit(&mut self, timeout: Duration) -> bool {
        match &mut self.process {
            Some(p) => p.wait_timeout(timeout).is_some(),
            None => true,
        }
    }

    /// Like the NixOS driver's `shutdown`: [`Node::stop`].
    pub fn shutdown(&mut self) -> Result<StopPhase> {
        self.stop()
    }

    /// [`Node::stop`] then [`Node::start`], keeping the disks.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// Waits until the agent answers and every readiness check of the spec passes,
    /// within [`Timeouts::ready`].
    pub fn wait_ready(&self) -> Result<()> {
        self.wait_ready_within(self.timeouts.ready)
    }

    /// [`Node::wait_ready`] with an explicit timeout.
    pub fn wait_ready_within(&self, timeout: Duration) -> Result<()> {
        self.wait_ready_reporting(timeout, &|_| {})
    }

    /// [`Node::wait_ready_within`], telling `phase` what it waits for as it goes (the agent,
    /// the setup script, each readiness check), for progress views.
    pub fn wait_ready_reporting(&self, timeout: Duration, phase: &dyn Fn(&str)) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let since_start = {
            let origin = self.started_at.unwrap_or_else(Instant::now);
            move || origin.elapsed().as_secs_f64()
        };
        let mut times = BootTimes {
            node: self.name().to_string(),
            ..BootTimes::default()
        };
        phase("waiting for the agent");
        self.connect_agent(timeout)?;
        times.agent = since_start();
        times.kernel_to_agent = kernel_uptime_at(
            &self.paths.serial_log,
            self.boot_log_offset,
            AGENT_READY_MARKER,
        );
        if self.setup.is_some() && !*lock(&self.setup_done) {
            phase("running setup");
            let t = Instant::now();
            self.run_setup_once()?;
            times.setup = t.elapsed().as_secs_f64();
        }
        for check in &self.ready_checks {
            let left = deadline.saturating_duration_since(Instant::now());
            let t = Instant::now();
            let what = match check {
                ReadinessCheck::Unit(u) => {
                    phase(&format!("waiting for unit {u}"));
                    self.wait_for_unit(u, left)?;
                    format!("unit {u}")
                }
                ReadinessCheck::Port(p) => {
                    phase(&format!("waiting for port {p}"));
                    self.wait_for_open_port(*p, left)?;
                    format!("port {p}")
                }
                ReadinessCheck::File(f) => {
                    phase(&format!("waiting for file {f}"));
                    self.wait_for_file(f, left)?;
                    format!("file {f}")
                }
                ReadinessCheck::Command(c) => {
                    phase(&format!("waiting for `{c}`"));
                    self.wait_until_succeeds(c, left)?;
                    format!("`{c}`")
                }
            };
            times.checks.push((what, t.elapsed().as_secs_f64()));
        }
        times.ready = since_start();
        *lock(&self.ready_at) = Some(Instant::now());
        tracing::info!(node = self.name(), "{}", times.describe());
        *lock(&self.boot_times) = Some(times);
        Ok(())
    }

    /// Kills the `vmm` at once through `&self` (for a thread that must end other threads'
    /// waits on this node, e.g. when a boot wave fails); the waits then fail promptly.
    pub fn abort(&self) {
        if let Some(p) = &self.process {
            p.signal(Signal::KILL);
        }
    }

    /// Runs the setup script under `sh -e` unless it already ran on these disks.
    fn run_setup_once(&self) -> Result<()> {
        let Some(script) = &self.setup else {
            return Ok(());
        };
        let mut done = lock(&self.setup_done);
        if *done {
            return Ok(());
        }
        let out = self.run(&format!("set -e\n{script}"))?;
        if out.code != 0 {
            return Err(ClusterError::CommandFailed {
                node: self.name().to_string(),
                command: "(the node's setup script)".into(),
                code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        *done = true;
        tracing::info!(node = self.name(), "setup script done");
        Ok(())
    }

    /// The agent connection, connecting (with retries for `timeout`) if there is none.
    pub fn connect_agent(&self, timeout: Duration) -> Result<agent::Client> {
        if let Some(c) = lock(&self.agent).clone() {
            return Ok(c);
        }
        let vsock = self.paths.vsock_sock.clone();
        let deadline = Instant::now() + timeout;
        // A loaded guest can take long to answer a connect and the handshake: each attempt
        // that runs out of time gives the next one twice as long, so a slow guest is
        // reached late rather than never.
        let attempt_limit = std::cell::Cell::new(FIRST_CONNECT_ATTEMPT);
        let client = poll_until(
            self.name(),
            || format!("the agent to answer on vsock port {AGENT_PORT}"),
            timeout,
            || {
                self.check_alive_shared()?;
                let attempt = self.rt.block_on(async {
                    // One attempt never outlives the whole wait.
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::timeout(
                        left.clamp(Duration::from_millis(100), attempt_limit.get()),
                        agent::Client::connect_vsock_uds(&vsock, AGENT_PORT),
                    )
                    .await
                });
                Ok(match attempt {
                    Ok(Ok(c)) => Probe::Done(c),
                    Ok(Err(e)) => Probe::NotYet(e.to_string()),
                    Err(_) => {
                        let took = attempt_limit.get();
                        attempt_limit.set((took * 2).min(LONGEST_CONNECT_ATTEMPT));
                        Probe::NotYet(format!(
                            "a connect attempt got no answer within {} s",
                            took.as_secs()
                        ))
                    }
                })
            },
        )?;
        *lock(&self.agent) = Some(client.clone());
        Ok(client)
    }

    /// Forgets the agent connection (the next call reconnects).
    pub(super) fn drop_agent(&self) {
        *lock(&self.agent) = None;
    }
}

impl Node {
    /// Ends the `vmm` quickly for teardown: SIGTERM (vmm removes its sockets), SIGKILL
    /// after `grace`, then cleans up.
    pub(super) fn terminate(&mut self, grace: Duration) {
        if self.is_running() {
            if let Some(p) = &self.process {
                p.signal(Signal::TERM);
            }
            if !self.wait_exit(grace) {
                if let Some(p) = &mut self.process {
                    p.kill();
                }
            }
        }
        self.clean_after_exit();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}
