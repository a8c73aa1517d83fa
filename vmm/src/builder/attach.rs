//! Attaching the virtio devices: from the configuration (boot) or from saved state (restore),
//! each with the host-side parts the user configured and its fault hook from the VM's rules.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use devices::persist::Persist;
use devices::virtio::net::{MacAddr, Net, NetBackend, NetHostParts, SwitchBackend, TapBackend};
use devices::virtio::rng::Rng;
use devices::virtio::vsock::{Vsock, VsockHostParts};

use super::machine::Machine;
use crate::arch::MmioDeviceInfo;
use crate::config::{NetBackend as NetBackendConfig, NetConfig, SerialOutput};
use crate::device_manager::{DevicesState, VirtioHandle, VirtioKindState};
use crate::disk::{build_disk, restore_disk};
use crate::snapshot::state::HostConfig;
use crate::Error;

pub(crate) fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!(
        "{what} {} cannot be opened ({e}): check the path",
        path.display()
    ))
}

/// Where the serial console goes.
pub(crate) fn serial_output(s: &SerialOutput) -> Result<Box<dyn Write + Send>, Error> {
    Ok(match s {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::Off => Box::new(std::io::sink()),
        SerialOutput::File(p) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| io_err("serial log", p, e))?,
        ),
    })
}

fn net_backend(net: &NetConfig) -> Result<Box<dyn NetBackend>, Error> {
    let err = |e: devices::virtio::net::NetError| Error::Config(format!("--net {net}: {e}"));
    Ok(match &net.backend {
        NetBackendConfig::Switch(p) => Box::new(SwitchBackend::new(p, None).map_err(err)?),
        NetBackendConfig::Tap(n) => Box::new(TapBackend::open(n).map_err(err)?),
    })
}

fn vsock_config(v: &crate::config::VsockConfig) -> devices::virtio::vsock::VsockConfig {
    devices::virtio::vsock::VsockConfig {
        cid: v.cid,
        uds_path: v.uds.clone(),
    }
}

/// Attaches the configured disks, nets and vsock, and an rng, in that order.
pub(crate) fn from_config(
    m: &mut Machine,
    host: &HostConfig,
) -> Result<Vec<MmioDeviceInfo>, Error> {
    let mut mmio = Vec::new();
    for (i, disk) in host.disks.iter().enumerate() {
        let dev = build_disk(i, disk, &m.endpoint, &m.faults)?;
        mmio.push(m.dm.add_virtio(m.vm.fd(), &m.mem, dev, None, VirtioHandle::Block)?);
    }
    for (i, net) in host.nets.iter().enumerate() {
        // A locally administered MAC derived from the index keeps guests reproducible.
        let mac = MacAddr(net.mac.unwrap_or([0x52, 0x54, 0x00, 0x4b, 0x4c, i as u8]));
        let dev = Net::with_backend(
            net_backend(net)?,
            Some(mac),
            m.endpoint.clone(),
            m.faults.net(i),
        );
        mmio.push(m.dm.add_virtio(m.vm.fd(), &m.mem, dev, None, VirtioHandle::Net)?);
    }
    if let Some(vsock) = &host.vsock {
        let mut dev = Vsock::new(vsock_config(vsock), m.endpoint.clone())
            .map_err(|e| Error::Config(format!("--vsock {vsock}: {e}")))?;
        dev.set_faults(m.faults.vsock());
        mmio.push(m.dm.add_virtio(m.vm.fd(), &m.mem, dev, None, VirtioHandle::Vsock)?);
    }
    let rng = Rng::new(Some(m.endpoint.clone()));
    mmio.push(m.dm.add_virtio(m.vm.fd(), &m.mem, rng, None, VirtioHandle::Rng)?);
    Ok(mmio)
}

/// Attaches the saved virtio devices in their saved order and windows, each with the host's
/// parts from `host` (the saved configuration with the user's overrides). Devices that were
/// running carry on with their saved queues.
pub(crate) fn from_state(
    m: &mut Machine,
    saved: &DevicesState,
    host: &HostConfig,
) -> Result<(), Error> {
    let (mut disks, mut nets) = (host.disks.iter().enumerate(), host.nets.iter().enumerate());
    for vd in &saved.virtio {
        let t = Some(&vd.transport);
        let (vm, mem) = (m.vm.fd(), &m.mem);
        match &vd.device {
            VirtioKindState::Block(state) => {
                let (i, disk) = disks
                    .next()
                    .ok_or_else(|| Error::Config("fewer disks than the snapshot has".into()))?;
                let dev = restore_disk(i, disk, state, &m.endpoint, &m.faults)?;
                m.dm.add_virtio(vm, mem, dev, t, VirtioHandle::Block)?;
            }
            VirtioKindState::Net(state) => {
                let (i, net) = nets
                    .next()
                    .ok_or_else(|| Error::Config("fewer nets than the snapshot has".into()))?;
                if net.mac.is_some_and(|mac| mac != state.mac) {
                    return Err(Error::Config(format!(
                        "--net {net}: the guest's MAC is {}; a restored guest keeps its MAC, drop mac=",
                        crate::config::format_mac(&state.mac)
                    )));
                }
                let parts = NetHostParts {
                    backend: net_backend(net)?,
                    endpoint: m.endpoint.clone(),
                    faults: m.faults.net(i),
                };
                let Ok(dev) = Net::restore(parts, state);
                m.dm.add_virtio(vm, mem, dev, t, VirtioHandle::Net)?;
            }
            VirtioKindState::Vsock(state) => {
                let v = host
                    .vsock
                    .as_ref()
                    .ok_or_else(|| Error::Config("the snapshot has a vsock device".into()))?;
                let parts = VsockHostParts {
                    config: vsock_config(v),
                    endpoint: m.endpoint.clone(),
                    faults: m.faults.vsock(),
                };
                let dev = Vsock::restore(parts, state)
                    .map_err(|e| Error::Config(format!("--vsock {v}: {e}")))?;
                m.dm.add_virtio(vm, mem, dev, t, VirtioHandle::Vsock)?;
            }
            VirtioKindState::Rng(state) => {
                let Ok(dev) = Rng::restore(Some(m.endpoint.clone()), state);
                m.dm.add_virtio(vm, mem, dev, t, VirtioHandle::Rng)?;
            }
        }
    }
    Ok(())
}
