//! Restoring a snapshot: load and check it, map its memory privately (with a diff chain's
//! pages copied over), create the VM and put back its state, the vCPUs' states, then the
//! devices (after the vCPUs, so interrupts a resumed device raises land in restored LAPICs).
//! Disks get the backend stack they had (their saved cache mode); fault rules come from this
//! restore's `faults`, not from the snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use devices::virtio::block::backend::CacheMode;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::machine::Machine;
use super::{attach, run};
use crate::config::{DiskConfig, NetConfig, SerialOutput, VsockConfig};
use crate::faults::VmFaults;
use crate::snapshot::memory_file::{apply_diff, RegionView};
use crate::snapshot::state::HostConfig;
use crate::snapshot::{self, LoadedSnapshot};
use crate::vstate::memory::{restore_guest_memory, GuestMemory};
use crate::vstate::vcpu::RunState;
use crate::vstate::vcpu_state::restore_vcpu;
use crate::vstate::vm_state::restore_vm;
use crate::{Error, Vmm};

/// What to restore, and the host-side parts that replace the saved ones.
///
/// ```no_run
/// let mut rc = vmm::RestoreConfig::new("/var/lib/kiln/snap-1");
/// rc.paused = true;
/// rc.serial = Some(vmm::config::SerialOutput::File("/tmp/fork-1.log".into()));
/// rc.vsock = Some("cid=3,uds=/tmp/fork-1.vsock".parse().unwrap());
/// let vm = vmm::restore(rc).expect("restore");
/// vm.handle().resume();
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreConfig {
    /// The snapshot directory (never written to).
    pub dir: PathBuf,
    /// Leave the vCPUs paused until a `resume`.
    pub paused: bool,
    /// Serial output instead of the saved one.
    pub serial: Option<SerialOutput>,
    /// Control socket instead of the saved one.
    pub api_sock: Option<PathBuf>,
    /// Disk files instead of the saved ones: none, or as many as saved, in the same order,
    /// each of the saved size.
    pub disks: Vec<DiskConfig>,
    /// Network backends instead of the saved ones: none, or as many as saved.
    pub nets: Vec<NetConfig>,
    /// vsock socket (and CID) instead of the saved one.
    pub vsock: Option<VsockConfig>,
    /// Fault rules (TOML, see `FAULTS.md`) in force from the restore. A snapshot holds no
    /// rules: without this the restored VM has none.
    pub faults: Option<PathBuf>,
    /// Where injected faults are appended (JSON lines).
    pub fault_log: Option<PathBuf>,
    /// Seccomp filters on every thread.
    pub seccomp: bool,
}

impl RestoreConfig {
    /// Restore `dir` with the saved host-side parts, running at once.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RestoreConfig {
            dir: dir.into(),
            paused: false,
            serial: None,
            api_sock: None,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            faults: None,
            fault_log: None,
            seccomp: true,
        }
    }

    /// The saved host configuration with this restore's overrides.
    fn host_config(&self, saved: &HostConfig) -> Result<HostConfig, Error> {
        let mut host = saved.clone();
        if !self.disks.is_empty() {
            if self.disks.len() != saved.disks.len() {
                return Err(Error::Config(format!(
                    "--disk given {} times but the snapshot has {} disks: give all of them, in order, or none",
                    self.disks.len(),
                    saved.disks.len()
                )));
            }
            host.disks = self
                .disks
                .iter()
                .zip(&saved.disks)
                .map(|(new, old)| with_saved_cache(new, old))
                .collect::<Result<_, _>>()?;
        }
        if !self.nets.is_empty() {
            if self.nets.len() != saved.nets.len() {
                return Err(Error::Config(format!(
                    "--net given {} times but the snapshot has {} network devices: give all of them, in order, or none",
                    self.nets.len(),
                    saved.nets.len()
                )));
            }
            host.nets = self.nets.clone();
        }
        if let Some(v) = &self.vsock {
            if saved.vsock.is_none() {
                return Err(Error::Config(
                    "--vsock given but the snapshot has no vsock device: drop --vsock".into(),
                ));
            }
            host.vsock = Some(v.clone());
        }
        if let Some(s) = &self.serial {
            host.serial = s.clone();
        }
        if self.api_sock.is_some() {
            host.api_sock = self.api_sock.clone();
        }
        Ok(host)
    }
}

/// A disk override keeps the saved disk's cache mode: it is part of the machine the snapshot
/// describes (what a power cut may take from the guest), not of the host's choice of file.
/// An override naming write-back for a write-through disk is refused.
fn with_saved_cache(new: &DiskConfig, saved: &DiskConfig) -> Result<DiskConfig, Error> {
    if new.cache != saved.cache && new.cache != CacheMode::default() {
        return Err(Error::Config(format!(
            "--disk {new}: the snapshot's disk {} was cache=writethrough; a restored disk keeps \
             its cache mode, drop cache=",
            saved.path.display()
        )));
    }
    Ok(DiskConfig {
        cache: saved.cache,
        ..new.clone()
    })
}

fn snap_err(e: snapshot::SnapshotError) -> Error {
    Error::Snapshot(e.to_string())
}

/// Restores the snapshot `rc.dir` in this process.
pub fn restore(rc: RestoreConfig) -> Result<Vmm, Error> {
    let started = Instant::now();
    let snap = snapshot::load(&rc.dir).map_err(snap_err)?;
    let LoadedSnapshot {
        dir,
        id,
        header,
        state,
        base_memory,
        diffs,
    } = snap;
    let t_loaded = started.elapsed();
    let host = rc.host_config(&state.host)?;
    let faults = Arc::new(VmFaults::new(
        rc.faults.as_deref(),
        rc.fault_log.as_deref(),
        host.disks.len(),
        host.nets.len(),
    )?);
    let (mem, mappings) = restore_guest_memory(header.mem_mib, base_memory)
        .map_err(|e| Error::Memory(e.to_string()))?;
    let views = region_views(&mem);
    for (file, runs) in &diffs {
        apply_diff(file, &views, runs).map_err(|e| {
            Error::Snapshot(format!(
                "snapshot {}: cannot read a diff's pages ({e})",
                dir.display()
            ))
        })?;
    }
    let t_mapped = started.elapsed();
    let mut m = Machine::create(
        mem,
        mappings,
        header.mem_mib,
        true,
        faults,
        rc.seccomp,
        started,
    )?;
    let t_created = started.elapsed();
    restore_vm(m.vm.fd(), &state.vm)?;
    let mut vcpus = Vec::with_capacity(state.vcpus.len());
    for saved in &state.vcpus {
        let fd =
            m.vm.fd()
                .create_vcpu(u64::from(saved.id))
                .map_err(|e| Error::Setup(format!("create vCPU {}: {e}", saved.id)))?;
        restore_vcpu(&fd, saved, m.vm.xsave_size())
            .map_err(|e| Error::Snapshot(format!("snapshot {}: {e}", dir.display())))?;
        vcpus.push(fd);
    }
    let t_vcpus = started.elapsed();
    let parts = m.legacy_parts(attach::serial_output(&host.serial)?)?;
    m.dm.add_legacy(m.vm.fd(), parts, Some(&state.devices))?;
    attach::from_state(&mut m, &state.devices, &host)?;
    tracing::debug!(
        "restore phases: snapshot loaded {t_loaded:?}, memory mapped {t_mapped:?}, VM created \
         {t_created:?}, vCPUs restored {t_vcpus:?}, devices attached {:?}",
        started.elapsed()
    );
    tracing::info!(
        "VM restored from {}: {} vCPU, {} MiB, in {:?}",
        dir.display(),
        vcpus.len(),
        header.mem_mib,
        started.elapsed()
    );
    let initial = if rc.paused {
        RunState::Paused
    } else {
        RunState::Running
    };
    let canonical = dir.canonicalize().unwrap_or(dir);
    run::run(m, vcpus, host, initial, Some((id, canonical)))
}

fn region_views(mem: &GuestMemory) -> Vec<RegionView> {
    let mut offset = 0;
    mem.iter()
        .map(|r| {
            let v = RegionView {
                host: r.as_ptr(),
                len: r.len() as usize,
                file_offset: offset,
                backing_offset: None,
            };
            offset += r.len();
            v
        })
        .collect()
}
