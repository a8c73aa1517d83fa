//! Builds a VM in four steps, shared by a fresh boot and a restore:
//! 1. create ([`machine`]): the KVM VM, its memory (anonymous, or the snapshot's memory file
//!    mapped privately) and the device event loop;
//! 2. attach devices ([`attach`]): from the configuration, or from saved state; either way a
//!    disk gets the same backend stack ([`crate::disk`]) and every device its fault hook
//!    from the VM's rules ([`crate::faults`]);
//! 3. boot ([`boot`]: kernel, boot parameters, ACPI, vCPUs at the entry point) or restore
//!    ([`restore`]: VM and vCPU state from the snapshot);
//! 4. run ([`run`]): the control API and the vCPU threads.

mod attach;
mod boot;
mod machine;
mod restore;
mod run;

use std::sync::Arc;
use std::time::Instant;

pub use restore::{restore, RestoreConfig};

use crate::config::VmConfig;
use crate::faults::VmFaults;
use crate::snapshot::state::HostConfig;
use crate::vstate::memory::create_guest_memory;
use crate::vstate::vcpu::RunState;
use crate::{Error, Vmm};

/// Builds and starts the VM described by `config`.
pub fn start(config: VmConfig) -> Result<Vmm, Error> {
    config
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    let started = Instant::now();
    let faults = Arc::new(VmFaults::new(
        config.faults.as_deref(),
        config.fault_log.as_deref(),
        config.disks.len(),
        config.nets.len(),
    )?);
    let (mem, mappings) =
        create_guest_memory(config.mem_mib).map_err(|e| Error::Memory(e.to_string()))?;
    let mut m = machine::Machine::create(
        mem,
        mappings,
        config.mem_mib,
        false,
        faults,
        config.seccomp,
        started,
    )?;
    let host = HostConfig {
        disks: config.disks.clone(),
        nets: config.nets.clone(),
        vsock: config.vsock.clone(),
        serial: config.serial.clone(),
        api_sock: config.api_sock.clone(),
    };
    let parts = m.legacy_parts(attach::serial_output(&config.serial)?)?;
    m.dm.add_legacy(m.vm.fd(), parts, None)?;
    let mmio = attach::from_config(&mut m, &host)?;
    let vcpus = boot::boot(&mut m, &config, &mmio)?;
    tracing::info!(
        "VM started: {} vCPU, {} MiB, {} virtio devices, boot setup took {:?}",
        config.cpus,
        config.mem_mib,
        mmio.len(),
        started.elapsed()
    );
    run::run(m, vcpus, host, RunState::Running, None)
}
