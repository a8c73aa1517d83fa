//! Node lifecycle and the test API: running a [`crate::spec::ClusterSpec`] as `vmm`
//! processes on userspace switches.
//!
//! - [`RunDir`]: the run's files (sockets, logs, per-node disks), removed at the end.
//! - [`NodeLaunch`]: the pure translation of a node to `vmm` arguments.
//! - [`Node`]: one `vmm` process: `start`, `stop`, `crash`, `restart`, `freeze`/`thaw`,
//!   `wait_ready`, and the NixOS-style test API (`succeed`, `fail`, `execute`,
//!   `wait_until_succeeds`, `wait_for_unit`, `wait_for_open_port`, `wait_for_file`,
//!   `wait_for_console_text`, `copy_to`/`copy_from`), and device faults: `add_fault`,
//!   `clear_faults`, `power_cut`, the fault log (`faults_since`).
//! - [`Cluster`]: switches + nodes, boot waves, `partition`/`block`/`heal`/`set_link` by
//!   node name, teardown on drop; [`install_teardown_on_signals`] for Ctrl-C.
//!
//! Switch ports are named after nodes by predicting the `vmm`'s port address from its pid
//! (see `wiring`), so link rules hold from the guest's first frame.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::HashMap;
//! use std::time::Duration;
//! use orchestrator::cluster::{install_teardown_on_signals, Cluster, ClusterOptions, NodeImage};
//! use orchestrator::spec::ClusterSpec;
//!
//! install_teardown_on_signals()?; // Ctrl-C: every vmm stopped, run directory removed
//! let spec = ClusterSpec::from_file("cluster.toml")?;
//! let image = orchestrator::image::build("debian-node")?;
//! let images = HashMap::from([("debian-node".to_string(), NodeImage::from_image_dir(&image))]);
//! let mut cluster = Cluster::new(&spec, &images, ClusterOptions::new("target/release/vmm"))?;
//! cluster.boot()?; // waves from depends_on, each wave in parallel, readiness checks
//! let db = cluster.node("node01")?;
//! db.succeed("etcdctl put k v")?;
//! cluster.partition("node01", "node02")?;
//! cluster.node("node02")?.wait_until_fails("etcdctl get k", Duration::from_secs(30))?;
//! cluster.heal();
//! cluster.node_mut("node03")?.crash()?;
//! cluster.node_mut("node03")?.start()?;
//! cluster.node("node03")?.wait_ready()?;
//! cluster.teardown()?; // also on drop, e.g. when a test panics
//! # Ok(()) }
//! ```
//!
//! Every call blocks (agent I/O runs on an internal tokio runtime); do not call them from
//! inside an async runtime.

mod boot_times;
mod console;
mod control;
mod error;
mod faults;
mod launch;
mod node;
mod process;
mod run_dir;
mod signals;
mod test_api;
mod topology;
mod wait;
mod wiring;

#[cfg(test)]
mod tests;

pub use boot_times::{slowest, BootTimes};
pub use console::Console;
pub use error::{ClusterError, Result};
pub use faults::PowerCut;
pub use launch::{
    cid_for, guest_cmdline, mac_for, LaunchDisk, Nic, NodeImage, NodeLaunch, ROOT_DISK,
};
pub use node::{agent_runtime, Node, StopPhase, Timeouts, AGENT_PORT};
pub use process::{is_live, processes_mentioning};
pub use run_dir::{
    check_socket_path, is_disk_image, remove_disks_and_sockets_under, NodePaths, Retain, RunDir,
    MAX_SOCKET_PATH,
};
pub use signals::{install_teardown_on_signals, teardown_everything};
pub use test_api::CommandOutput;
pub use topology::{prepare_disks, setup_script, Cluster, ClusterOptions};
pub use wiring::vmm_port_name;
