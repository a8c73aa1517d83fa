//! Reading a snapshot back: the state file verified, the CPU model compared with this host's,
//! the header checked against the state and the memory layout, and for a diff its whole chain.
//! Nothing is written; the files are only opened for reading.

use std::fs::File;
use std::path::{Path, PathBuf};

use kvm_ioctls::Kvm;

use super::cpu_model::host_cpu_model;
use super::format::{verify, FormatError};
use super::state::{MachineState, SnapshotHeader, SnapshotId, StoredKind};
use super::SnapshotError;
use crate::arch::layout;

/// Longest diff chain followed.
const MAX_CHAIN: usize = 64;

/// A verified snapshot, ready to restore.
pub struct LoadedSnapshot {
    pub dir: PathBuf,
    pub id: SnapshotId,
    pub header: SnapshotHeader,
    pub state: MachineState,
    /// The memory file of the full snapshot at the root of the chain.
    pub base_memory: File,
    /// Each diff of the chain, oldest first: its memory file and its page runs.
    pub diffs: Vec<(File, Vec<(u64, u64)>)>,
}

fn load_err(dir: &Path, why: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Load {
        dir: dir.to_path_buf(),
        why: why.to_string(),
    }
}

/// Reads and checks the snapshot in `dir` (and its parents, for a diff).
pub fn load(dir: &Path) -> Result<LoadedSnapshot, SnapshotError> {
    let kvm = Kvm::new().map_err(|e| load_err(dir, format!("cannot open /dev/kvm: {e}")))?;
    let here = host_cpu_model(&kvm)
        .map_err(|e| load_err(dir, format!("cannot read this host's CPUID: {e}")))?;
    let (id, header, state, memory) = load_one(dir, &here)?;
    let mut diffs = Vec::new();
    let mut kind = header.kind.clone();
    let mut child_dir = dir.to_path_buf();
    let mut child_runs = state.dirty_pages.clone();
    let mut child_memory = memory;
    let base_memory = loop {
        match kind {
            StoredKind::Full => break child_memory,
            StoredKind::Diff {
                parent_dir,
                parent_id,
            } => {
                if diffs.len() >= MAX_CHAIN {
                    return Err(load_err(dir, "diff chain is longer than 64 snapshots"));
                }
                diffs.push((child_memory, child_runs));
                let (pid, pheader, pstate, pmemory) = load_one(&parent_dir, &here)
                    .map_err(|e| load_err(&child_dir, format!("its parent: {e}")))?;
                if pid != parent_id {
                    return Err(load_err(
                        &child_dir,
                        format!(
                            "its parent {} is another snapshot than the one it was taken from: \
                             restore the parent it was diffed against",
                            parent_dir.display()
                        ),
                    ));
                }
                if pheader.mem_mib != header.mem_mib {
                    return Err(load_err(&child_dir, "its parent has another memory size"));
                }
                kind = pheader.kind;
                child_dir = parent_dir;
                child_runs = pstate.dirty_pages;
                child_memory = pmemory;
            }
        }
    };
    diffs.reverse();
    Ok(LoadedSnapshot {
        dir: dir.to_path_buf(),
        id,
        header,
        state,
        base_memory,
        diffs,
    })
}

type One = (SnapshotId, SnapshotHeader, MachineState, File);

fn load_one(dir: &Path, here: &super::state::CpuModel) -> Result<One, SnapshotError> {
    if !dir.is_dir() {
        return Err(load_err(
            dir,
            "is not a directory: give the path of a snapshot",
        ));
    }
    let state_path = dir.join("state");
    let bytes = std::fs::read(&state_path)
        .map_err(|e| load_err(dir, format!("cannot read its state file ({e})")))?;
    let fmt = |e: FormatError| load_err(dir, format!("state file {e}"));
    let verified = verify(&bytes).map_err(fmt)?;
    let header = verified.header.clone();
    if header.cpu.digest != here.digest {
        return Err(load_err(
            dir,
            format!(
                "was taken on another CPU model ({}; this host: {}): restore it on the kind of \
                 machine it was taken on",
                header.cpu.description, here.description
            ),
        ));
    }
    let state = verified.state().map_err(fmt)?;
    check_consistent(&header, &state)
        .map_err(|why| load_err(dir, format!("is inconsistent: {why}")))?;
    let memory_path = dir.join("memory");
    let memory = File::open(&memory_path)
        .map_err(|e| load_err(dir, format!("cannot open its memory file ({e})")))?;
    let len = memory
        .metadata()
        .map_err(|e| load_err(dir, format!("memory file: {e}")))?
        .len();
    if len != header.memory_file_len {
        return Err(load_err(
            dir,
            format!(
                "memory file is {len} bytes, the state says {}: the snapshot is damaged",
                header.memory_file_len
            ),
        ));
    }
    Ok((verified.id, header, state, memory))
}

/// The header and the state must describe the same machine, one this vmm can build.
fn check_consistent(h: &SnapshotHeader, s: &MachineState) -> Result<(), String> {
    if h.vcpus == 0 || usize::from(h.vcpus) != s.vcpus.len() {
        return Err(format!(
            "{} vCPUs in the header, {} saved",
            h.vcpus,
            s.vcpus.len()
        ));
    }
    for (i, v) in s.vcpus.iter().enumerate() {
        if usize::from(v.id) != i {
            return Err(format!("vCPU {i} is saved as vCPU {}", v.id));
        }
    }
    if h.mem_mib < 16 {
        return Err(format!("{} MiB of memory", h.mem_mib));
    }
    let expected = crate::arch::ram_regions(u64::from(h.mem_mib) << 20);
    let mut offset = 0;
    if expected.len() != h.regions.len() {
        return Err("memory layout does not match the memory size".into());
    }
    for ((start, len), r) in expected.iter().zip(&h.regions) {
        if r.guest_addr != start.0 || r.len != *len as u64 || r.file_offset != offset {
            return Err("memory layout does not match the memory size".into());
        }
        offset += *len as u64;
    }
    if h.memory_file_len != offset {
        return Err("memory file length does not match the memory size".into());
    }
    if h.devices.len() != s.devices.virtio.len() {
        return Err("device list does not match the saved devices".into());
    }
    for (i, (d, v)) in h.devices.iter().zip(&s.devices.virtio).enumerate() {
        let base = layout::MMIO_DEVICES_START + i as u64 * layout::MMIO_DEVICE_SIZE;
        let gsi = layout::virtio_gsi(i as u32);
        if d.kind != v.device.kind() || d.mmio_base != v.mmio_base || d.gsi != v.gsi {
            return Err(format!("device {i} differs between header and state"));
        }
        if v.mmio_base != base || Some(v.gsi) != gsi {
            return Err(format!(
                "device {i} sits at an address this vmm does not use"
            ));
        }
    }
    let pages = offset / 4096;
    for &(first, count) in &s.dirty_pages {
        if count == 0 || first.checked_add(count).is_none_or(|end| end > pages) {
            return Err("diff page list reaches outside memory".into());
        }
    }
    Ok(())
}
