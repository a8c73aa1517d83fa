//! The CPU model a snapshot depends on: vendor, family/model/stepping and the feature bits KVM
//! offers guests on this host. A guest that saw AVX-512 must not wake up where it is missing,
//! so a snapshot only restores where this digest is the same.

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use sha2::{Digest, Sha256};

use super::state::CpuModel;

/// (leaf, subleaf, which registers) whose bits describe features; topology and cache leaves
/// are left out (they depend on the vCPU count, not on the CPU model).
const FEATURE_LEAVES: &[(u32, u32, [bool; 4])] = &[
    // eax = family/model/stepping; ecx, edx = features (ebx is APIC id and counts)
    (0x1, 0, [true, false, true, true]),
    (0x7, 0, [false, true, true, true]),
    (0x7, 1, [true, false, false, false]),
    (0xd, 0, [true, false, false, true]),
    (0xd, 1, [true, false, false, false]),
    (0x8000_0001, 0, [false, false, true, true]),
    (0x8000_0008, 0, [true, false, false, false]),
];

/// The CPU model of this host as KVM presents it to guests.
pub fn host_cpu_model(kvm: &Kvm) -> Result<CpuModel, kvm_ioctls::Error> {
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
    let entries = cpuid.as_slice();
    let find = |leaf: u32, sub: u32| {
        entries
            .iter()
            .find(|e| e.function == leaf && (e.index == sub || leaf != 0x7 && leaf != 0xd))
    };
    let mut vendor = [0u8; 12];
    if let Some(e) = find(0, 0) {
        vendor[..4].copy_from_slice(&e.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&e.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&e.ecx.to_le_bytes());
    }
    let mut hasher = Sha256::new();
    hasher.update(vendor);
    for &(leaf, sub, regs) in FEATURE_LEAVES {
        let values = find(leaf, sub).map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx]);
        for (v, used) in values.iter().zip(regs) {
            hasher.update(if used { *v } else { 0 }.to_le_bytes());
        }
    }
    let eax = find(1, 0).map_or(0, |e| e.eax);
    let base_family = (eax >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = ((eax >> 4) & 0xf) | (((eax >> 16) & 0xf) << 4);
    Ok(CpuModel {
        description: format!(
            "{} family {family} model {model}",
            String::from_utf8_lossy(&vendor)
        ),
        digest: hasher.finalize().into(),
    })
}
