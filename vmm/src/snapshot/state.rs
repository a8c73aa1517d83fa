//! What a snapshot's state file holds: a header that says what kind of machine it is (read
//! and checked before anything else), and the machine state itself.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{DiskConfig, NetConfig, SerialOutput, VsockConfig};
use crate::device_manager::DevicesState;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;

/// A snapshot's identity: the SHA-256 of its header and state, as stored in its file.
pub type SnapshotId = [u8; 32];

/// Full or diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredKind {
    /// The memory file holds every non-zero page.
    Full,
    /// The memory file holds only the pages written since `parent_id`, listed in the state.
    Diff {
        /// Where the parent was (canonical path).
        parent_dir: PathBuf,
        /// The parent's identity.
        parent_id: SnapshotId,
    },
}

/// The host CPU as far as the saved state depends on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModel {
    /// e.g. `GenuineIntel family 6 model 85`.
    pub description: String,
    /// SHA-256 of the vendor, family/model/stepping and the CPU feature bits KVM offers.
    pub digest: [u8; 32],
}

/// One RAM region and where its pages sit in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionLayout {
    pub guest_addr: u64,
    pub len: u64,
    pub file_offset: u64,
}

/// A device as listed in the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub kind: String,
    pub mmio_base: u64,
    pub gsi: u32,
}

/// Read and checked before the state: what machine this is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub kind: StoredKind,
    pub vcpus: u8,
    pub mem_mib: u32,
    pub regions: Vec<RegionLayout>,
    pub devices: Vec<DeviceSummary>,
    pub cpu: CpuModel,
    /// Length of the memory file.
    pub memory_file_len: u64,
    /// The `vmm` version that wrote it.
    pub vmm_version: String,
}

/// The host-side device configuration the VM ran with; restore uses it where the user gives
/// no override.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    pub disks: Vec<DiskConfig>,
    pub nets: Vec<NetConfig>,
    pub vsock: Option<VsockConfig>,
    pub serial: SerialOutput,
    pub api_sock: Option<std::path::PathBuf>,
}

/// The machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineState {
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DevicesState,
    pub host: HostConfig,
    /// Diff snapshots: the runs of 4 KiB pages (first page, count) of the memory file that
    /// this snapshot holds. Empty for a full snapshot.
    pub dirty_pages: Vec<(u64, u64)>,
}
