//! Kiln's virtual machine monitor: boots a Linux kernel on KVM with virtio-mmio block, net,
//! vsock and rng devices, a serial console, and a control API.
//!
//! Embedding it takes a [`VmConfig`], [`start`] and the returned [`Vmm`]:
//!
//! ```no_run
//! use vmm::{VmConfig, ExitReason};
//!
//! let mut cfg = VmConfig::new("/path/to/vmlinux");
//! cfg.initrd = Some("/path/to/initrd.img".into());
//! cfg.mem_mib = 512;
//! cfg.disks.push("/path/to/rootfs.ext4".parse().unwrap());
//! let vmm = vmm::start(cfg).expect("VM failed to start");
//! let handle = vmm.handle();
//! handle.pause();
//! assert_eq!(handle.status().state, "paused");
//! handle.resume();
//! let reason = vmm.wait();          // blocks until the guest powers off or is stopped
//! assert_eq!(reason, ExitReason::PowerOff);
//! ```
//!
//! A paused VM can be saved with [`VmHandle::snapshot`] and brought back, in this or any
//! other process and as often as wanted, with [`restore`]:
//!
//! ```no_run
//! use vmm::snapshot::SnapshotKind;
//!
//! # let vm = vmm::start(vmm::VmConfig::new("/path/to/vmlinux")).unwrap();
//! let handle = vm.handle();
//! handle.pause();
//! let info = handle.snapshot("/tmp/snap", SnapshotKind::Full).expect("snapshot");
//! handle.shutdown();
//! vm.wait();
//!
//! // Two forks of the same snapshot, each with its own console.
//! let forks: Vec<vmm::Vmm> = (0..2)
//!     .map(|i| {
//!         let mut rc = vmm::RestoreConfig::new(&info.dir);
//!         rc.serial = Some(vmm::config::SerialOutput::File(format!("/tmp/fork{i}.log").into()));
//!         vmm::restore(rc).expect("restore")
//!     })
//!     .collect();
//! # drop(forks);
//! ```
//!
//! The `vmm` binary is a thin CLI over this library; the control socket (`--api-sock`) speaks
//! the JSON protocol in `API.md` and maps onto [`VmHandle`].

pub mod api;
pub mod arch;
mod builder;
pub mod config;
pub mod device_manager;
mod disk;
pub mod event_loop;
pub mod exit;
pub mod faults;
pub mod handle;
pub mod seccomp;
pub mod snapshot;
pub mod tiny_guest;
pub mod vstate;

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

pub use builder::{restore, start, RestoreConfig};
pub use config::VmConfig;
pub use exit::ExitReason;
pub use handle::{VmHandle, VmStatus};

/// Anything that stops a VM from being built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kvm(#[from] vstate::vm::VmError),
    #[error("{0}")]
    Memory(String),
    #[error(transparent)]
    Arch(#[from] arch::ArchError),
    #[error(transparent)]
    Device(#[from] device_manager::DeviceError),
    #[error("VM setup failed: {0}")]
    Setup(String),
    #[error("{0}")]
    Snapshot(String),
}

/// A running VM. Dropping it without [`wait`](Vmm::wait) stops the VM.
pub struct Vmm {
    handle: VmHandle,
    exits: Receiver<ExitReason>,
    vcpu_threads: Vec<JoinHandle<()>>,
    event_loop: Option<event_loop::RunningEventLoop>,
    api: Option<api::ApiServer>,
    _mem: vstate::memory::GuestMemory,
    _vm: std::sync::Arc<vstate::vm::Vm>,
    // Last: unmapped only after the VM and every user of `_mem` are gone.
    _host_mappings: vstate::memory::HostMappings,
}

impl Vmm {
    /// A handle for pausing, resuming, stopping and inspecting the VM from any thread.
    pub fn handle(&self) -> VmHandle {
        self.handle.clone()
    }

    /// Blocks until the VM ends (guest power-off or reboot, a vCPU failure, or
    /// [`VmHandle::shutdown`]), tears everything down and says why.
    pub fn wait(mut self) -> ExitReason {
        let reason = self.exits.recv().unwrap_or(ExitReason::Shutdown);
        self.teardown();
        reason
    }

    /// Like [`wait`](Self::wait) but gives up after `timeout`, returning `None` and leaving
    /// the VM running.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<ExitReason> {
        let reason = self.exits.recv_timeout(timeout).ok()?;
        self.teardown();
        Some(reason)
    }

    fn teardown(&mut self) {
        self.handle.shared.control.stop();
        for t in self.vcpu_threads.drain(..) {
            let _ = t.join();
        }
        // No snapshot may read guest memory once it is being unmapped.
        let source = self
            .handle
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(s) = &source {
            s.devices.flush_serial();
        }
        drop(source);
        if let Some(l) = self.event_loop.take() {
            l.stop();
        }
        // After a power cut the caches refuse this; otherwise unflushed writes reach the disks.
        self.handle.shared.faults.flush_caches();
        if let Some(api) = self.api.take() {
            api.stop();
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.teardown();
    }
}
