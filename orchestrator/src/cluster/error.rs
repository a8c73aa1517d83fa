//! Errors of the cluster layer, each naming the node and what went wrong.

use std::path::PathBuf;
use std::time::Duration;

/// Why a cluster or node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or directory operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: String,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A socket path would not fit a Unix socket address.
    #[error("socket path {} is {len} bytes, more than the {max} a Unix socket allows: use a shorter run directory (KILN_CACHE_DIR or --run-dir)", path.display())]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A path contains a character the `vmm` option syntax cannot carry.
    #[error("path {} contains ',' or '=', which `vmm` options cannot carry: use a run directory without them", path.display())]
    BadPathChar {
        /// The path.
        path: PathBuf,
    },
    /// A disk could not be prepared.
    #[error("node {node}: disk {}: {reason}", path.display())]
    Disk {
        /// The node.
        node: String,
        /// The disk file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The `vmm` process could not be started.
    #[error("node {node}: cannot start {}: {source}", vmm.display())]
    Spawn {
        /// The node.
        node: String,
        /// The `vmm` binary.
        vmm: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The `vmm` process ended when it should have been running.
    #[error("node {node}: vmm exited ({status}) {when}; last lines of {}:\n{tail}", log.display())]
    VmmExited {
        /// The node.
        node: String,
        /// How it ended.
        status: String,
        /// During what.
        when: String,
        /// The vmm log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// Something awaited did not happen in time.
    #[error("node {node}: timed out after {:.1}s waiting for {what}{}", after.as_secs_f64(), last_seen(last))]
    Timeout {
        /// The node (or `cluster`).
        node: String,
        /// What was awaited.
        what: String,
        /// How long it waited.
        after: Duration,
        /// The last observation, if any.
        last: Option<String>,
    },
    /// Talking to the node's agent failed.
    #[error("node {node}: agent: {what}: {source}")]
    Agent {
        /// The node.
        node: String,
        /// The operation.
        what: String,
        /// The cause.
        source: agent::client::ClientError,
    },
    /// A command that had to succeed failed.
    #[error("node {node}: command `{command}` failed with exit code {code}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    CommandFailed {
        /// The node.
        node: String,
        /// The shell command.
        command: String,
        /// Shell-style exit code (128+N for signal N).
        code: i32,
        /// Its stdout.
        stdout: String,
        /// Its stderr.
        stderr: String,
    },
    /// A scenario step could not run or its result was not what the step requires.
    #[error("{reason}")]
    BadStep {
        /// What was wrong.
        reason: String,
    },
    /// A command that had to fail succeeded.
    #[error("node {node}: command `{command}` succeeded but was expected to fail\n--- stdout ---\n{stdout}")]
    CommandSucceeded {
        /// The node.
        node: String,
        /// The shell command.
        command: String,
        /// Its stdout.
        stdout: String,
    },
    /// The control API refused or failed a request.
    #[error("node {node}: control API {op}: {reason}")]
    Control {
        /// The node.
        node: String,
        /// The request (`pause`, `resume`, ...).
        op: String,
        /// What happened.
        reason: String,
    },
    /// The operation needs a running node.
    #[error("node {node} is not running: start it first")]
    NotRunning {
        /// The node.
        node: String,
    },
    /// The operation needs a stopped node.
    #[error("node {node} is already running: stop or crash it first")]
    AlreadyRunning {
        /// The node.
        node: String,
    },
    /// No node has this name.
    #[error("no node named {name:?}; known nodes: {known}")]
    UnknownNode {
        /// The name asked for.
        name: String,
        /// The nodes that exist.
        known: String,
    },
    /// A node's image was not given.
    #[error(
        "node {node} uses image {image:?}, which was not provided: build it and pass its directory"
    )]
    MissingImage {
        /// The node.
        node: String,
        /// The image name.
        image: String,
    },
    /// A node's spec cannot be launched as written.
    #[error("node {node}: {reason}")]
    BadNode {
        /// The node.
        node: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A switch failed.
    #[error("network {network}: {source}")]
    Switch {
        /// The network.
        network: String,
        /// The cause.
        source: crate::switch::SwitchError,
    },
    /// The boot order cannot be planned.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// A console pattern is not a valid regular expression.
    #[error("console pattern {pattern:?}: {source}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The cause.
        source: regex::Error,
    },
    /// The signal handler could not be installed.
    #[error("cannot install the SIGINT/SIGTERM teardown handler: {0}")]
    Signals(String),
    /// The async runtime for agent connections could not start.
    #[error("cannot start the agent runtime: {0}")]
    Runtime(std::io::Error),
}

fn last_seen(last: &Option<String>) -> String {
    match last {
        Some(l) if !l.is_empty() => format!(" (last seen: {l})"),
        _ => String::new(),
    }
}

impl ClusterError {
    /// An [`ClusterError::Io`] maker for `map_err`.
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ClusterError {
        let (what, path) = (what.into(), path.into());
        move |source| ClusterError::Io { what, path, source }
    }
}

/// Result of cluster operations.
pub type Result<T> = std::result::Result<T, ClusterError>;
