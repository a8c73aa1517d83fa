//! The KVM VM: in-kernel interrupt controllers, PIT, TSS and memory slots.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::vstate::memory::GuestMemory;

/// Where KVM puts the three pages it needs for real-mode TSS emulation: in the MMIO gap, clear
/// of RAM, devices, the IOAPIC and the LAPIC.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Why the VM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("/dev/kvm cannot be opened ({0}): load the kvm module and make sure this user may read and write /dev/kvm")]
    OpenKvm(kvm_ioctls::Error),
    #[error("/dev/kvm speaks KVM API {0}, Kiln needs 12: use a newer kernel")]
    ApiVersion(i32),
    #[error("KVM refused to create a VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    #[error("KVM setup step '{0}' failed: {1}")]
    Setup(&'static str, kvm_ioctls::Error),
}

/// An x86_64 KVM VM with an in-kernel irqchip and PIT.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    /// KVM's MSR index list: every MSR a vCPU snapshot carries.
    msr_index_list: Vec<u32>,
    /// Bytes of XSAVE state per vCPU (`KVM_CAP_XSAVE2`; 0 when KVM lacks it).
    xsave_size: usize,
    /// Whether KVM logs guest writes to the memory slots (for diff snapshots).
    dirty_log: std::sync::atomic::AtomicBool,
}

impl Vm {
    /// Opens `/dev/kvm` and creates the VM.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(VmError::ApiVersion(api));
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(|e| VmError::Setup("set TSS address", e))?;
        fd.create_irq_chip()
            .map_err(|e| VmError::Setup("create irqchip", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(|e| VmError::Setup("create PIT", e))?;
        let msr_index_list = kvm
            .get_msr_index_list()
            .map_err(|e| VmError::Setup("KVM_GET_MSR_INDEX_LIST", e))?
            .as_slice()
            .to_vec();
        let xsave_size =
            usize::try_from(fd.check_extension_int(kvm_ioctls::Cap::Xsave2)).unwrap_or(0);
        Ok(Vm {
            kvm,
            fd,
            msr_index_list,
            xsave_size,
            dirty_log: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Every MSR KVM can save for a vCPU, as KVM lists them on this host.
    pub fn msr_index_list(&self) -> &[u32] {
        &self.msr_index_list
    }

    /// Bytes of XSAVE state per vCPU on this host (0: the legacy 4 KiB area).
    pub fn xsave_size(&self) -> usize {
        self.xsave_size
    }

    /// Whether KVM is logging guest writes.
    pub fn dirty_log_enabled(&self) -> bool {
        self.dirty_log.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts logging guest writes to every slot of `mem` (no-op when already on).
    pub fn enable_dirty_log(&self, mem: &GuestMemory) -> Result<(), VmError> {
        if !self.dirty_log_enabled() {
            self.register_memory(mem, true)?;
        }
        Ok(())
    }

    /// The pages the guest wrote in slot `slot` since the last call (or since logging
    /// started), one bit per 4 KiB page; the log is cleared.
    pub fn take_dirty_log(&self, slot: u32, len: usize) -> Result<Vec<u64>, VmError> {
        self.fd
            .get_dirty_log(slot, len)
            .map_err(|e| VmError::Setup("KVM_GET_DIRTY_LOG", e))
    }

    /// Hands every guest memory region to KVM, one slot each, in order.
    pub fn register_memory(&self, mem: &GuestMemory, dirty_log: bool) -> Result<(), VmError> {
        let flags = if dirty_log {
            kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the VMM keeps alive
            // for as long as the VM exists.
            unsafe { self.fd.set_user_memory_region(r) }
                .map_err(|e| VmError::Setup("set memory region", e))?;
        }
        self.dirty_log
            .store(dirty_log, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The `/dev/kvm` handle (for CPUID queries).
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
