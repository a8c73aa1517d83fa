//! The last step: the control API and one thread per vCPU, and the [`Vmm`] that owns them.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VcpuFd;

use super::machine::{on_thread_start, Machine};
use crate::api::ApiServer;
use crate::handle::{Shared, VmHandle};
use crate::seccomp::ThreadRole;
use crate::snapshot::state::{HostConfig, SnapshotId};
use crate::snapshot::take::SnapshotSource;
use crate::vstate::vcpu::{install_kick_handler, RunState, Vcpu, VcpuControl};
use crate::{Error, Vmm};

/// Starts the VM's threads; the vCPUs run at once or, with `initial` = paused, wait for a
/// resume. `baseline`: the snapshot the VM was restored from.
pub(crate) fn run(
    m: Machine,
    vcpu_fds: Vec<VcpuFd>,
    host: HostConfig,
    initial: RunState,
    baseline: Option<(SnapshotId, std::path::PathBuf)>,
) -> Result<Vmm, Error> {
    let devices_info = m.dm.virtio_devices();
    let (io, devices) = m.dm.finish()?;
    let count = vcpu_fds.len();
    let control = Arc::new(VcpuControl::new(count, initial));
    let vcpus: Vec<Vcpu> = vcpu_fds
        .into_iter()
        .enumerate()
        .map(|(id, fd)| {
            Vcpu::new(
                id as u8,
                fd,
                io.clone(),
                control.clone(),
                m.exit_tx.clone(),
                &m.vm,
            )
        })
        .collect();
    let source = SnapshotSource {
        vm: m.vm.clone(),
        mem: m.mem.clone(),
        backing: m.mappings.backing(),
        devices,
        endpoint: m.endpoint.clone(),
        host: host.clone(),
        mem_mib: m.mem_mib,
        baseline,
    };
    let shared = Arc::new(Shared {
        control: control.clone(),
        exits: m.exit_tx.clone(),
        vcpus: count as u8,
        mem_mib: m.mem_mib,
        devices: devices_info,
        started: m.started,
        snapshot: Mutex::new(Some(source)),
        faults: m.faults.clone(),
    });
    let handle = VmHandle { shared };
    let api = match &host.api_sock {
        Some(path) => Some(
            ApiServer::start(
                path,
                handle.clone(),
                on_thread_start(m.seccomp, ThreadRole::Api),
            )
            .map_err(|e| Error::Setup(e.to_string()))?,
        ),
        None => None,
    };
    install_kick_handler().map_err(|e| Error::Setup(format!("vCPU kick signal: {e}")))?;
    let mut threads = Vec::new();
    for vcpu in vcpus {
        let on_start = on_thread_start(m.seccomp, ThreadRole::Vcpu);
        let t = std::thread::Builder::new()
            .name(format!("kiln-vcpu{}", vcpu.id))
            .spawn(move || {
                on_start();
                vcpu.run()
            })
            .map_err(|e| Error::Setup(format!("vCPU thread: {e}")))?;
        control.add_thread(std::os::unix::thread::JoinHandleExt::as_pthread_t(&t));
        threads.push(t);
    }
    Ok(Vmm {
        handle,
        exits: m.exit_rx,
        vcpu_threads: threads,
        event_loop: Some(m.event_loop),
        api,
        _mem: m.mem,
        _vm: m.vm,
        _host_mappings: m.mappings,
    })
}
