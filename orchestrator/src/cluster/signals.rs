//! Teardown on SIGINT, SIGTERM and SIGHUP, for the runner: destructors do not run when a
//! signal ends the process, so a handler thread stops every `vmm` this process started
//! (SIGTERM, then SIGKILL after a grace period), removes their sockets and the run
//! directories, and exits with 128 + the signal number.

use std::sync::OnceLock;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::error::{ClusterError, Result};
use super::process::stop_all_registered;
use super::run_dir::finish_all_registered;

/// How long `vmm`s get to exit on SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Installs the handler (once per process; later calls do nothing).
pub fn install_teardown_on_signals() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
                .map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("kiln-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        eprintln!("orchestrator: signal {sig}: stopping every VM and cleaning up");
                        teardown_everything();
                        std::process::exit(128 + sig);
                    }
                })
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(ClusterError::Signals)
}

/// Stops every registered `vmm` and finishes every open run directory.
pub fn teardown_everything() {
    stop_all_registered(GRACE);
    finish_all_registered();
}
