//! The CPUID each vCPU sees: KVM's supported set with this vCPU's topology (APIC id, logical
//! processor count) and the hypervisor bit. KVM's paravirt leaves (0x4000_0000+) are kept.

use kvm_bindings::{
    kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::Kvm;

use super::ArchError;

/// Leaf 1 ECX: running under a hypervisor.
pub const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
pub const EDX_HTT: u32 = 1 << 28;
/// Leaf 0xB / 0x1F ECX level type: SMT.
const LEVEL_TYPE_SMT: u32 = 1;
/// Leaf 0xB / 0x1F ECX level type: core.
const LEVEL_TYPE_CORE: u32 = 2;

/// Leaf 1 EBX[15:8]: CLFLUSH line size in 8-byte units (64 bytes) when KVM leaves it 0.
const CLFLUSH_LINE_8B: u32 = 8;
/// Leaf 0x8000_0008 ECX: NC (cores - 1) in [7:0], ApicIdCoreIdSize in [15:12].
const AMD_NC_MASK: u32 = 0xff;
const AMD_CORE_ID_SIZE_SHIFT: u32 = 12;

/// Bits needed to number `n` things (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Makes sure leaf 0xB has its SMT (0) and core (1) subleaves when KVM offers the leaf at all;
/// some hosts (AMD) report only an empty subleaf 0.
fn add_missing_extended_topology(cpuid: &mut CpuId) {
    let has_leaf_b = cpuid.as_slice().iter().any(|e| e.function == 0xb);
    if !has_leaf_b {
        return;
    }
    for index in 0..2 {
        let present = cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == 0xb && e.index == index);
        if !present {
            let entry = kvm_cpuid_entry2 {
                function: 0xb,
                index,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            };
            // The list has room: KVM returns far fewer than KVM_MAX_CPUID_ENTRIES.
            if cpuid.push(entry).is_err() {
                tracing::warn!("CPUID list full; leaf 0xb subleaf {index} not added");
            }
        }
    }
}

/// Rewrites the topology leaves of `cpuid` for vCPU `vcpu_id` of `num_cpus` single-thread
/// cores in one package; the APIC id equals the vCPU id.
pub fn apply_topology(cpuid: &mut CpuId, vcpu_id: u8, num_cpus: u8) {
    let apic_id = u32::from(vcpu_id);
    let count = u32::from(num_cpus.max(1));
    add_missing_extended_topology(cpuid);
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            0x1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | ((count & 0xff) << 16);
                if entry.ebx & 0xff00 == 0 {
                    entry.ebx |= CLFLUSH_LINE_8B << 8;
                }
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // EAX[31:26] = cores per package - 1; EAX[25:14] = threads sharing the cache - 1:
                // one thread per core, and the last level (L3) is shared by the package.
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | ((count - 1) << 26) | ((sharing & 0xfff) << 14);
            }
            0xb | 0x1f => {
                entry.edx = apic_id;
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = (LEVEL_TYPE_SMT << 8) | entry.index;
                    }
                    1 => {
                        entry.eax = bits_for(count);
                        entry.ebx = count;
                        entry.ecx = (LEVEL_TYPE_CORE << 8) | entry.index;
                    }
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
            }
            0x8000_0008 => {
                entry.ecx = (entry.ecx & !(AMD_NC_MASK | (0xf << AMD_CORE_ID_SIZE_SHIFT)))
                    | ((count - 1) & AMD_NC_MASK)
                    | (bits_for(count) << AMD_CORE_ID_SIZE_SHIFT);
            }
            _ => {}
        }
    }
}

/// KVM's supported CPUID adjusted for vCPU `vcpu_id` of `num_cpus`; pass it to
/// `VcpuFd::set_cpuid2`.
pub fn vcpu_cpuid(kvm: &Kvm, vcpu_id: u8, num_cpus: u8) -> Result<CpuId, ArchError> {
    if num_cpus == 0 || vcpu_id >= num_cpus {
        return Err(ArchError::InvalidConfig(format!(
            "vCPU id {vcpu_id} out of range for {num_cpus} vCPUs"
        )));
    }
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ArchError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    apply_topology(&mut cpuid, vcpu_id, num_cpus);
    Ok(cpuid)
}
