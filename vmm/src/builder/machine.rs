//! The first step of building a VM, the same for a boot and a restore: the KVM VM with its
//! memory, and the device event loop running with the exit watcher on it.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use devices::virtio::EventLoopEndpoint;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device_manager::{DeviceManager, LegacyParts};
use crate::event_loop::{EventLoop, ExitWatcher, RunningEventLoop};
use crate::exit::ExitReason;
use crate::faults::VmFaults;
use crate::seccomp::{self, ThreadRole};
use crate::vstate::memory::{GuestMemory, HostMappings};
use crate::vstate::vm::Vm;
use crate::Error;

/// A VM being built.
pub(crate) struct Machine {
    pub vm: Arc<Vm>,
    pub mem: GuestMemory,
    pub mappings: HostMappings,
    pub event_loop: RunningEventLoop,
    pub endpoint: EventLoopEndpoint,
    pub exit_tx: Sender<ExitReason>,
    pub exit_rx: Receiver<ExitReason>,
    pub dm: DeviceManager,
    /// Fault rules for every device, and the disks' write caches.
    pub faults: Arc<VmFaults>,
    pub seccomp: bool,
    pub started: Instant,
    pub mem_mib: u32,
    legacy_events: Option<(EventFd, EventFd, EventFd)>,
}

fn evt() -> Result<EventFd, Error> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Setup(format!("eventfd: {e}")))
}

fn clone_fd(e: &EventFd) -> Result<EventFd, Error> {
    e.try_clone()
        .map_err(|e| Error::Setup(format!("eventfd: {e}")))
}

/// What a thread of `role` runs first: its seccomp filter, when enabled.
pub(crate) fn on_thread_start(use_seccomp: bool, role: ThreadRole) -> impl FnOnce() + Send {
    move || {
        if use_seccomp {
            seccomp::apply(role)
        }
    }
}

impl Machine {
    /// Creates the VM over `mem` (KVM logging guest writes when `dirty_log`) and starts the
    /// device event loop; devices attached later take their fault hooks from `faults`.
    pub fn create(
        mem: GuestMemory,
        mappings: HostMappings,
        mem_mib: u32,
        dirty_log: bool,
        faults: Arc<VmFaults>,
        use_seccomp: bool,
        started: Instant,
    ) -> Result<Machine, Error> {
        let vm = Vm::new()?;
        vm.register_memory(&mem, dirty_log)?;
        let (exit_tx, exit_rx) = channel();
        let mut event_loop =
            EventLoop::new().map_err(|e| Error::Setup(format!("event loop: {e}")))?;
        let endpoint = event_loop.endpoint();
        let (i8042_reset, acpi_off, acpi_reset) = (evt()?, evt()?, evt()?);
        let watcher = ExitWatcher::subscriber(
            vec![
                (
                    clone_fd(&i8042_reset)?,
                    ExitReason::Reboot {
                        via: "i8042 reset".into(),
                    },
                ),
                (clone_fd(&acpi_off)?, ExitReason::PowerOff),
                (
                    clone_fd(&acpi_reset)?,
                    ExitReason::Reboot {
                        via: "ACPI reset".into(),
                    },
                ),
            ],
            exit_tx.clone(),
        );
        event_loop.add(watcher);
        // Running from the start: restored devices register their handlers while attached.
        let event_loop = event_loop
            .spawn(on_thread_start(use_seccomp, ThreadRole::Devices))
            .map_err(|e| Error::Setup(format!("event loop thread: {e}")))?;
        Ok(Machine {
            vm: Arc::new(vm),
            mem,
            mappings,
            event_loop,
            endpoint,
            exit_tx,
            exit_rx,
            dm: DeviceManager::new(),
            faults,
            seccomp: use_seccomp,
            started,
            mem_mib,
            legacy_events: Some((i8042_reset, acpi_off, acpi_reset)),
        })
    }

    /// The event fds the legacy devices signal, with the serial output.
    pub fn legacy_parts(
        &mut self,
        serial_out: Box<dyn std::io::Write + Send>,
    ) -> Result<LegacyParts, Error> {
        let (i8042_reset, acpi_poweroff, acpi_reset) = self
            .legacy_events
            .take()
            .ok_or_else(|| Error::Setup("legacy devices added twice".into()))?;
        Ok(LegacyParts {
            serial_out,
            i8042_reset,
            acpi_poweroff,
            acpi_reset,
        })
    }
}
