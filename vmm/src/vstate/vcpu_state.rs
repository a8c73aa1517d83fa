//! A vCPU's whole architectural state as KVM holds it, read for a snapshot and written back
//! on restore: registers, special registers, FPU/XSAVE, XCRs, debug registers, LAPIC, MP
//! state, pending events, TSC frequency, CPUID and every MSR in KVM's MSR index list (on PVM
//! hosts that list includes PVM's own MSRs; it is read from KVM, never hard-coded).
//!
//! Seen on the PVM development hosts (2026-12-02): the list has 41 MSRs, KVM's paravirt MSRs
//! 0x4b564d00-0x4b564d07 among them; PVM's 0x4b564df0-0x4b564df7 and 0x4b564d09 are neither
//! listed nor readable through KVM_GET_MSRS, so nothing can carry them. Only PVM-enabled guest
//! kernels use those, and none runs here.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, Xsave, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

/// `IA32_TSC_DEADLINE`: written last, once the TSC and the LAPIC timer mode are in place
/// (KVM ignores a deadline while the LAPIC timer is not in TSC-deadline mode).
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Most MSRs one KVM_GET_MSRS/KVM_SET_MSRS carries (kvm-bindings' `Msrs` limit).
const MSR_CHUNK: usize = 255;
/// Size of the legacy `kvm_xsave` area.
const XSAVE_LEGACY_BYTES: usize = std::mem::size_of::<kvm_xsave>();

/// One vCPU's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub id: u8,
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// The XSAVE area as 32-bit words (4 KiB, or `KVM_CAP_XSAVE2` bytes when larger).
    pub xsave: Vec<u32>,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
    /// Every readable MSR of KVM's index list, in list order.
    pub msrs: Vec<kvm_msr_entry>,
    /// TSC frequency, when KVM reports it.
    pub tsc_khz: Option<u32>,
}

/// A KVM call that failed while saving or restoring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("vCPU {vcpu}: {op} failed: {err}")]
    Kvm {
        vcpu: u8,
        op: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("vCPU {vcpu}: KVM refused MSR {index:#x} (value {value:#x}); this host's KVM cannot hold the saved state")]
    MsrRefused { vcpu: u8, index: u32, value: u64 },
    #[error("vCPU {vcpu}: saved state is malformed: {why}")]
    Malformed { vcpu: u8, why: String },
    #[error("vCPU {vcpu}: the snapshot's TSC runs at {saved} kHz, this host's at {here} kHz, and KVM cannot scale it ({err})")]
    TscFrequency {
        vcpu: u8,
        saved: u32,
        here: u32,
        err: kvm_ioctls::Error,
    },
}

/// Bytes of XSAVE state KVM keeps for a vCPU (`KVM_CAP_XSAVE2`, 0 when unsupported).
pub type XsaveSize = usize;

fn kvm(vcpu: u8, op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuStateError {
    move |err| VcpuStateError::Kvm { vcpu, op, err }
}

/// Reads the state of vCPU `id`. It must not be running (its thread calls this while parked,
/// after finishing any I/O exit).
pub fn save_vcpu(
    fd: &VcpuFd,
    id: u8,
    msr_index_list: &[u32],
    xsave_size: XsaveSize,
) -> Result<VcpuState, VcpuStateError> {
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm(id, "KVM_GET_CPUID2"))?
        .as_slice()
        .to_vec();
    Ok(VcpuState {
        id,
        mp_state: fd.get_mp_state().map_err(kvm(id, "KVM_GET_MP_STATE"))?,
        regs: fd.get_regs().map_err(kvm(id, "KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(kvm(id, "KVM_GET_SREGS"))?,
        xsave: save_xsave(fd, id, xsave_size)?,
        xcrs: fd.get_xcrs().map_err(kvm(id, "KVM_GET_XCRS"))?,
        debug_regs: fd.get_debug_regs().map_err(kvm(id, "KVM_GET_DEBUGREGS"))?,
        lapic: fd.get_lapic().map_err(kvm(id, "KVM_GET_LAPIC"))?,
        tsc_khz: fd.get_tsc_khz().ok(),
        msrs: save_msrs(fd, id, msr_index_list)?,
        events: fd
            .get_vcpu_events()
            .map_err(kvm(id, "KVM_GET_VCPU_EVENTS"))?,
        cpuid,
    })
}

fn xsave_words(xsave_size: XsaveSize) -> usize {
    xsave_size.max(XSAVE_LEGACY_BYTES).div_ceil(4)
}

fn save_xsave(fd: &VcpuFd, id: u8, xsave_size: XsaveSize) -> Result<Vec<u32>, VcpuStateError> {
    if xsave_size <= XSAVE_LEGACY_BYTES {
        let x = fd.get_xsave().map_err(kvm(id, "KVM_GET_XSAVE"))?;
        return Ok(x.region.to_vec());
    }
    let extra = xsave_words(xsave_size) - XSAVE_LEGACY_BYTES / 4;
    let mut x = Xsave::new(extra).map_err(|e| VcpuStateError::Malformed {
        vcpu: id,
        why: format!("XSAVE area of {xsave_size} bytes: {e:?}"),
    })?;
    // SAFETY: `x` has room for `xsave_size` bytes, the size KVM reported for KVM_GET_XSAVE2.
    unsafe { fd.get_xsave2(&mut x) }.map_err(kvm(id, "KVM_GET_XSAVE2"))?;
    let mut words = x.as_fam_struct_ref().xsave.region.to_vec();
    words.extend_from_slice(x.as_slice());
    Ok(words)
}

/// Reads every MSR of `list` that KVM lets this vCPU read. KVM_GET_MSRS stops at the first
/// MSR it refuses (say, a Hyper-V MSR on a guest without Hyper-V CPUID); that one is skipped.
fn save_msrs(fd: &VcpuFd, id: u8, list: &[u32]) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let mut out = Vec::with_capacity(list.len());
    let mut rest = list;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(MSR_CHUNK)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| VcpuStateError::Malformed {
            vcpu: id,
            why: format!("MSR list: {e:?}"),
        })?;
        let n = fd.get_msrs(&mut msrs).map_err(kvm(id, "KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n]);
        if n < chunk.len() {
            tracing::debug!("vCPU {id}: MSR {:#x} is not readable; not saved", chunk[n]);
            rest = &rest[n + 1..];
        } else {
            rest = &rest[chunk.len()..];
        }
    }
    Ok(out)
}

/// Writes `state` into a freshly created vCPU (CPUID not yet set). The order matters: special
/// registers (APIC base) before the LAPIC, the LAPIC before the MSRs (TSC deadline), the TSC
/// before the deadline, and pending events last.
pub fn restore_vcpu(
    fd: &VcpuFd,
    state: &VcpuState,
    xsave_size: XsaveSize,
) -> Result<(), VcpuStateError> {
    let id = state.id;
    if let Some(saved) = state.tsc_khz {
        if let Ok(here) = fd.get_tsc_khz() {
            if here != saved {
                fd.set_tsc_khz(saved)
                    .map_err(|err| VcpuStateError::TscFrequency {
                        vcpu: id,
                        saved,
                        here,
                        err,
                    })?;
            }
        }
    }
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|e| VcpuStateError::Malformed {
        vcpu: id,
        why: format!("{} CPUID entries: {e:?}", state.cpuid.len()),
    })?;
    fd.set_cpuid2(&cpuid).map_err(kvm(id, "KVM_SET_CPUID2"))?;
    fd.set_sregs(&state.sregs)
        .map_err(kvm(id, "KVM_SET_SREGS"))?;
    fd.set_regs(&state.regs).map_err(kvm(id, "KVM_SET_REGS"))?;
    restore_xsave(fd, id, &state.xsave, xsave_size)?;
    // KVM reports no XCRs on a CPU without XSAVE (QEMU's qemu64, say) and refuses to set any.
    if state.xcrs.nr_xcrs > 0 {
        fd.set_xcrs(&state.xcrs).map_err(kvm(id, "KVM_SET_XCRS"))?;
    }
    fd.set_lapic(&state.lapic)
        .map_err(kvm(id, "KVM_SET_LAPIC"))?;
    let (deadline, others): (Vec<_>, Vec<_>) = state
        .msrs
        .iter()
        .copied()
        .partition(|m| m.index == MSR_IA32_TSC_DEADLINE);
    restore_msrs(fd, id, &others)?;
    restore_msrs(fd, id, &deadline)?;
    fd.set_mp_state(state.mp_state)
        .map_err(kvm(id, "KVM_SET_MP_STATE"))?;
    fd.set_vcpu_events(&state.events)
        .map_err(kvm(id, "KVM_SET_VCPU_EVENTS"))?;
    fd.set_debug_regs(&state.debug_regs)
        .map_err(kvm(id, "KVM_SET_DEBUGREGS"))?;
    Ok(())
}

fn restore_xsave(
    fd: &VcpuFd,
    id: u8,
    words: &[u32],
    xsave_size: XsaveSize,
) -> Result<(), VcpuStateError> {
    let malformed = |why: String| VcpuStateError::Malformed { vcpu: id, why };
    let legacy = XSAVE_LEGACY_BYTES / 4;
    if words.len() < legacy {
        return Err(malformed(format!("XSAVE area of {} words", words.len())));
    }
    if words.len() == legacy {
        let mut x = kvm_xsave::default();
        x.region.copy_from_slice(words);
        // SAFETY: a legacy-sized area, exactly what KVM_SET_XSAVE reads.
        return unsafe { fd.set_xsave(&x) }.map_err(kvm(id, "KVM_SET_XSAVE"));
    }
    if words.len() != xsave_words(xsave_size) {
        return Err(malformed(format!(
            "XSAVE area of {} bytes, this host's KVM uses {xsave_size}",
            words.len() * 4
        )));
    }
    let mut x = Xsave::new(words.len() - legacy).map_err(|e| malformed(format!("{e:?}")))?;
    // SAFETY: the wrapper was allocated for exactly these words; the FAM part follows the
    // legacy region.
    unsafe {
        x.as_mut_fam_struct()
            .xsave
            .region
            .copy_from_slice(&words[..legacy]);
    }
    x.as_mut_slice().copy_from_slice(&words[legacy..]);
    // SAFETY: `x` holds `xsave_size` bytes, what KVM_SET_XSAVE2 reads on this host.
    unsafe { fd.set_xsave2(&x) }.map_err(kvm(id, "KVM_SET_XSAVE2"))
}

fn restore_msrs(fd: &VcpuFd, id: u8, entries: &[kvm_msr_entry]) -> Result<(), VcpuStateError> {
    for chunk in entries.chunks(MSR_CHUNK) {
        let msrs = Msrs::from_entries(chunk).map_err(|e| VcpuStateError::Malformed {
            vcpu: id,
            why: format!("MSR list: {e:?}"),
        })?;
        let n = fd.set_msrs(&msrs).map_err(kvm(id, "KVM_SET_MSRS"))?;
        if n < chunk.len() {
            return Err(VcpuStateError::MsrRefused {
                vcpu: id,
                index: chunk[n].index,
                value: chunk[n].data,
            });
        }
    }
    Ok(())
}
