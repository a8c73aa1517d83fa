//! Initial vCPU state for the 64-bit boot protocol: GDT, identity page tables, long-mode
//! segment/control registers, general registers, FPU; plus the per-vCPU LAPIC and MSRs.

use crate::vstate::memory::GuestMemory;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    BOOT_STACK_POINTER, GDT_START, IDT_START, PDE_START, PDPTE_START, PML4_START, ZERO_PAGE_START,
};
use super::{lapic, msr, ArchError};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Page table entry bits: present, writable.
const PTE_PRESENT_RW: u64 = 0x3;
/// Page directory entry bits: present, writable, 2 MiB page.
const PDE_2M_PAGE: u64 = 0x83;
/// Page directories mapped (one per GiB): the identity map covers 0..4 GiB, MMIO gap included.
const IDENTITY_MAP_GIB: u64 = 4;

/// The boot GDT: null, 64-bit code, data, TSS (flags in the access/flags nibble layout).
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];
const CODE_INDEX: u16 = 1;
const DATA_INDEX: u16 = 2;
const TSS_INDEX: u16 = 3;

/// Packs a segment descriptor from flags (access byte + upper nibble), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0xffff)
}

/// The KVM view of GDT descriptor `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let flags = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = flags(55, 1);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = flags(47, 1);
    kvm_segment {
        base,
        limit,
        selector: index * 8,
        type_: flags(40, 0xf),
        present,
        dpl: flags(45, 0x3),
        db: flags(54, 1),
        s: flags(44, 1),
        l: flags(53, 1),
        g,
        avl: flags(52, 1),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

fn write_gdt_and_idt(mem: &GuestMemory) -> Result<(), ArchError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        let addr = GDT_START + (i as u64) * 8;
        mem.write_obj(*entry, GuestAddress(addr))
            .map_err(ArchError::mem("GDT", addr))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(ArchError::mem("IDT", IDT_START))
}

/// Writes an identity map of 0..4 GiB with 2 MiB pages (PML4 -> PDPT -> 4 PDs).
pub fn write_identity_page_tables(mem: &GuestMemory) -> Result<(), ArchError> {
    mem.write_obj(PDPTE_START | PTE_PRESENT_RW, GuestAddress(PML4_START))
        .map_err(ArchError::mem("PML4", PML4_START))?;
    for gib in 0..IDENTITY_MAP_GIB {
        let pd = PDE_START + gib * 0x1000;
        mem.write_obj(pd | PTE_PRESENT_RW, GuestAddress(PDPTE_START + gib * 8))
            .map_err(ArchError::mem("PDPT", PDPTE_START))?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| (((gib * 512 + i) << 21) | PDE_2M_PAGE).to_le_bytes())
            .collect();
        mem.write_slice(&entries, GuestAddress(pd))
            .map_err(ArchError::mem("page directory", pd))?;
    }
    Ok(())
}

/// Long-mode segment and control registers on top of the vCPU's current `sregs`.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment_from_gdt(BOOT_GDT[CODE_INDEX as usize], CODE_INDEX);
    let data = segment_from_gdt(BOOT_GDT[DATA_INDEX as usize], DATA_INDEX);
    let tss = segment_from_gdt(BOOT_GDT[TSS_INDEX as usize], TSS_INDEX);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// General registers at the 64-bit entry point: `rsi` points at the zero page.
pub fn boot_regs(entry: GuestAddress) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// x87 and SSE control words after reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Prepares the boot vCPU to enter the kernel's 64-bit entry point at `entry`: GDT/IDT and
/// identity page tables in guest memory, long-mode sregs, registers, FPU and boot MSRs.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemory,
    entry: GuestAddress,
) -> Result<(), ArchError> {
    write_gdt_and_idt(mem)?;
    write_identity_page_tables(mem)?;
    let sregs = vcpu.get_sregs().map_err(ArchError::kvm("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&long_mode_sregs(sregs))
        .map_err(ArchError::kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&boot_regs(entry))
        .map_err(ArchError::kvm("KVM_SET_REGS"))?;
    vcpu.set_fpu(&boot_fpu())
        .map_err(ArchError::kvm("KVM_SET_FPU"))?;
    msr::setup_msrs(vcpu)
}

/// Per-vCPU set-up for every vCPU (boot or not): LAPIC LINT0 = ExtINT, LINT1 = NMI, and the
/// boot MSRs. Needs the in-kernel irqchip to exist.
pub fn setup_vcpu_common(vcpu: &VcpuFd) -> Result<(), ArchError> {
    lapic::setup_lint(vcpu)?;
    msr::setup_msrs(vcpu)
}
