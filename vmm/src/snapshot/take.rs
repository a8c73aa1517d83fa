//! Taking a snapshot of a paused VM: park the device event loop, write the disks' write caches
//! back to their images, ask each vCPU thread for its state, save the VM and every device
//! (completions a fault delay holds back included), write the memory file (full or diff),
//! then write the state file and move the directory into place. Afterwards KVM logs the
//! guest's writes, so a later diff can be taken against this snapshot.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use devices::virtio::EventLoopEndpoint;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::cpu_model::host_cpu_model;
use super::dir::{disk_usage, PendingDir};
use super::format::{encode, verify};
use super::memory_file::{self, no_pages, union, PageBits, RegionView, PAGE};
use super::park::park;
use super::state::{
    DeviceSummary, HostConfig, MachineState, RegionLayout, SnapshotHeader, SnapshotId, StoredKind,
};
use super::{SnapshotError, SnapshotInfo, SnapshotKind};
use crate::device_manager::DeviceHandles;
use crate::vstate::memory::GuestMemory;
use crate::vstate::vcpu::VcpuControl;
use crate::vstate::vm::Vm;
use crate::vstate::vm_state::save_vm;

/// Everything a snapshot reads, kept by the VM's handle while the VM lives.
pub(crate) struct SnapshotSource {
    pub vm: Arc<Vm>,
    pub mem: GuestMemory,
    /// The file the memory is privately mapped from (a restored VM) and each region's offset.
    pub backing: Option<(Arc<File>, Vec<u64>)>,
    pub devices: DeviceHandles,
    pub endpoint: EventLoopEndpoint,
    pub host: HostConfig,
    pub mem_mib: u32,
    /// The last snapshot taken or restored: (identity, directory). Diffs are taken against it.
    pub baseline: Option<(SnapshotId, PathBuf)>,
}

fn save_err(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Save(e.to_string())
}

fn io_err(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Io(e.to_string())
}

/// Takes a snapshot into `dir`.
pub(crate) fn take(
    src: &mut SnapshotSource,
    control: &VcpuControl,
    dir: &Path,
    kind: &SnapshotKind,
) -> Result<SnapshotInfo, SnapshotError> {
    let started = Instant::now();
    if control.state() != crate::vstate::vcpu::RunState::Paused {
        return Err(SnapshotError::NotPaused);
    }
    let stored_kind = match kind {
        SnapshotKind::Full => StoredKind::Full,
        SnapshotKind::Diff { parent } => diff_parent(src, parent)?,
    };
    let pending = PendingDir::create(dir)?;
    let regions = region_views(src);
    let memory_len: u64 = regions.iter().map(|r| r.len as u64).sum();
    let memory = pending.create_file("memory")?;

    let parked = park(&src.endpoint)?;
    // With the devices parked no write can slip in behind this: the images then hold every
    // write the guest was told is done, and the saved state can rely on them.
    src.devices
        .write_back_disks()
        .map_err(SnapshotError::Save)?;
    let t_parked = started.elapsed();
    let vcpus = control.save_all().map_err(SnapshotError::Save)?;
    let vm = save_vm(src.vm.fd()).map_err(save_err)?;
    let devices = src.devices.save();
    let t_state = started.elapsed();
    // From here on the dirty log no longer matches the baseline until the snapshot is in place.
    let baseline = src.baseline.take();
    let dirty_pages = match &stored_kind {
        StoredKind::Full => {
            let backing = src.backing.as_ref().map(|(f, _)| f.as_ref());
            memory_file::write_full(&memory, memory_len, &regions, backing).map_err(io_err)?;
            Vec::new()
        }
        StoredKind::Diff { .. } => {
            let dirty = dirty_pages(src)?;
            memory_file::write_diff(&memory, memory_len, &regions, &dirty).map_err(io_err)?
        }
    };
    start_tracking(src)?;
    drop(parked);
    drop(baseline);
    let t_memory = started.elapsed();

    let header = SnapshotHeader {
        kind: stored_kind,
        vcpus: vcpus.len() as u8,
        mem_mib: src.mem_mib,
        regions: regions
            .iter()
            .zip(src.mem.iter())
            .map(|(r, region)| RegionLayout {
                guest_addr: region.start_addr().0,
                len: r.len as u64,
                file_offset: r.file_offset,
            })
            .collect(),
        devices: devices
            .virtio
            .iter()
            .map(|d| DeviceSummary {
                kind: d.device.kind().to_string(),
                mmio_base: d.mmio_base,
                gsi: d.gsi,
            })
            .collect(),
        cpu: host_cpu_model(src.vm.kvm()).map_err(save_err)?,
        memory_file_len: memory_len,
        vmm_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let state = MachineState {
        vm,
        vcpus,
        devices,
        host: src.host.clone(),
        dirty_pages,
    };
    let (bytes, id) = encode(&header, &state).map_err(save_err)?;
    let state_file = pending.create_file("state")?;
    std::os::unix::fs::FileExt::write_all_at(&state_file, &bytes, 0).map_err(io_err)?;
    state_file.sync_all().map_err(io_err)?;
    memory.sync_all().map_err(io_err)?;
    let t_written = started.elapsed();
    let dir = pending.commit()?;
    tracing::debug!(
        "snapshot phases: devices parked {t_parked:?}, state saved {t_state:?}, memory \
         written {t_memory:?}, files synced {t_written:?}, in place {:?}",
        started.elapsed()
    );
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    src.baseline = Some((id, canonical));
    Ok(SnapshotInfo {
        bytes: disk_usage(&dir),
        dir,
        ms: started.elapsed().as_millis() as u64,
    })
}

/// The parent of a diff must be this VM's baseline.
fn diff_parent(src: &SnapshotSource, parent: &Path) -> Result<StoredKind, SnapshotError> {
    let Some((baseline, _)) = &src.baseline else {
        return Err(SnapshotError::Diff(
            "this VM has no snapshot to diff against: take a full snapshot first".into(),
        ));
    };
    let bytes = std::fs::read(parent.join("state")).map_err(|e| {
        SnapshotError::Diff(format!(
            "cannot read {}: {e}",
            parent.join("state").display()
        ))
    })?;
    let verified = verify(&bytes)
        .map_err(|e| SnapshotError::Diff(format!("{}: state file {e}", parent.display())))?;
    if verified.id != *baseline || !src.vm.dirty_log_enabled() {
        return Err(SnapshotError::Diff(format!(
            "{} is not the last snapshot this VM took or was restored from: diff against that \
             one, or take a full snapshot",
            parent.display()
        )));
    }
    let parent_dir = parent
        .canonicalize()
        .map_err(|e| SnapshotError::Diff(format!("{}: {e}", parent.display())))?;
    Ok(StoredKind::Diff {
        parent_dir,
        parent_id: verified.id,
    })
}

fn region_views(src: &SnapshotSource) -> Vec<RegionView> {
    let mut offset = 0u64;
    src.mem
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let view = RegionView {
                host: r.as_ptr(),
                len: r.len() as usize,
                file_offset: offset,
                backing_offset: src.backing.as_ref().and_then(|(_, o)| o.get(i).copied()),
            };
            offset += r.len();
            view
        })
        .collect()
}

/// Pages written since tracking started: by the guest (KVM's log) or by devices (vm-memory's
/// bitmap). Both are cleared.
fn dirty_pages(src: &SnapshotSource) -> Result<Vec<PageBits>, SnapshotError> {
    let mut out = Vec::new();
    for (slot, region) in src.mem.iter().enumerate() {
        let len = region.len() as usize;
        let mut bits = no_pages(len);
        let kvm = src.vm.take_dirty_log(slot as u32, len).map_err(save_err)?;
        union(&mut bits, &kvm);
        let bitmap: &AtomicBitmap = MmapRegion::bitmap(region);
        for page in 0..len / PAGE {
            if bitmap.is_bit_set(page) {
                bits[page / 64] |= 1 << (page % 64);
            }
        }
        bitmap.reset();
        out.push(bits);
    }
    Ok(out)
}

/// Makes the dirty log and the device bitmap start from now.
fn start_tracking(src: &SnapshotSource) -> Result<(), SnapshotError> {
    if src.vm.dirty_log_enabled() {
        for (slot, region) in src.mem.iter().enumerate() {
            src.vm
                .take_dirty_log(slot as u32, region.len() as usize)
                .map_err(save_err)?;
        }
    } else {
        src.vm.enable_dirty_log(&src.mem).map_err(save_err)?;
    }
    for region in src.mem.iter() {
        MmapRegion::bitmap(region).reset();
    }
    Ok(())
}
