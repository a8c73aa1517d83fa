//! Tests against the real /dev/kvm: the boot state is accepted by KVM and a tiny guest placed
//! at the entry point runs in long mode with the zero page in `rsi` and the MMIO gap mapped.

use kvm_bindings::{kvm_msr_entry, kvm_userspace_memory_region, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::layout::{ram_regions, MMIO_DEVICES_START, PML4_START, ZERO_PAGE_START};
use super::*;

struct TestVm {
    kvm: Kvm,
    vm: VmFd,
    mem: GuestMemoryMmap,
}

fn test_vm(mem_size: u64) -> TestVm {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().unwrap();
    let mem = GuestMemoryMmap::from_ranges(&ram_regions(mem_size)).unwrap();
    for (slot, region) in mem.iter().enumerate() {
        let region_desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region stays mapped for as long as `mem` (and so the VM) lives.
        unsafe { vm.set_user_memory_region(region_desc).unwrap() };
    }
    vm.create_irq_chip().unwrap();
    TestVm { kvm, vm, mem }
}

fn vcpu(t: &TestVm, id: u64) -> VcpuFd {
    t.vm.create_vcpu(id).unwrap()
}

#[test]
fn boot_vcpu_runs_long_mode_code_at_entry() {
    let t = test_vm(64 << 20);
    let entry = GuestAddress(0x100_0000);
    #[rustfmt::skip]
    let code = [
        0x66, 0xba, 0xf8, 0x03,                   // mov dx, 0x3f8
        0x8a, 0x86, 0x10, 0x02, 0x00, 0x00,       // mov al, [rsi + 0x210] (type_of_loader)
        0xee,                                     // out dx, al
        0x48, 0xbb, 0x00, 0x00, 0x00, 0xd0, 0, 0, 0, 0, // mov rbx, 0xd000_0000
        0x8b, 0x03,                               // mov eax, [rbx]
        0x66, 0xba, 0xf9, 0x03,                   // mov dx, 0x3f9
        0xee,                                     // out dx, al: done (hlt would stay in KVM)
    ];
    t.mem.write_slice(&code, entry).unwrap();
    let cmdline = linux_loader::cmdline::Cmdline::new(64).unwrap();
    configure_system(&t.mem, &cmdline, None, GuestAddress(0xe_0000)).unwrap();

    let mut vcpu = vcpu(&t, 0);
    vcpu.set_cpuid2(&vcpu_cpuid(&t.kvm, 0, 1).unwrap()).unwrap();
    setup_vcpu_common(&vcpu).unwrap();
    setup_boot_vcpu(&vcpu, &t.mem, entry).unwrap();

    let (mut saw_out, mut saw_mmio) = (false, false);
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(0x3f8, data) => {
                assert_eq!(data, &[0xffu8][..]);
                saw_out = true;
            }
            VcpuExit::IoOut(0x3f9, _) => break,
            VcpuExit::MmioRead(addr, data) => {
                assert_eq!(addr, MMIO_DEVICES_START);
                data.fill(0);
                saw_mmio = true;
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
    assert!(saw_out && saw_mmio);
    let regs = vcpu.get_regs().unwrap();
    assert_eq!(regs.rsi, ZERO_PAGE_START);
    assert_eq!(regs.rip, entry.0 + code.len() as u64);
}

#[test]
fn sregs_regs_and_msrs_read_back() {
    let t = test_vm(64 << 20);
    let vcpu = vcpu(&t, 0);
    setup_boot_vcpu(&vcpu, &t.mem, GuestAddress(0x100_0000)).unwrap();
    let sregs = vcpu.get_sregs().unwrap();
    assert_eq!(sregs.cr3, PML4_START);
    assert_ne!(sregs.efer & (1 << 10), 0, "long mode active");
    assert_eq!(sregs.cs.l, 1);
    assert_eq!(sregs.cs.selector, 8);
    let regs = vcpu.get_regs().unwrap();
    assert_eq!((regs.rip, regs.rflags), (0x100_0000, 2));

    let mut msrs = Msrs::from_entries(&[
        kvm_msr_entry {
            index: msr::MSR_IA32_MISC_ENABLE,
            ..Default::default()
        },
        kvm_msr_entry {
            index: msr::MSR_MTRR_DEF_TYPE,
            ..Default::default()
        },
    ])
    .unwrap();
    assert_eq!(vcpu.get_msrs(&mut msrs).unwrap(), 2);
    let read = msrs.as_slice();
    assert_eq!(
        read[0].data & msr::MISC_ENABLE_FAST_STRING,
        msr::MISC_ENABLE_FAST_STRING
    );
    assert_eq!(read[1].data, msr::MTRR_ENABLE_WRITEBACK);
}

#[test]
fn every_vcpu_gets_extint_and_nmi_lints() {
    let t = test_vm(16 << 20);
    for id in 0..2 {
        let vcpu = vcpu(&t, id);
        setup_vcpu_common(&vcpu).unwrap();
        let (lint0, lint1) = lapic::lint_registers(&vcpu.get_lapic().unwrap());
        assert_eq!((lint0 >> 8) & 0x7, lapic::APIC_MODE_EXTINT);
        assert_eq!((lint1 >> 8) & 0x7, lapic::APIC_MODE_NMI);
    }
}

#[test]
fn cpuid_topology_per_vcpu_is_accepted_by_kvm() {
    let t = test_vm(16 << 20);
    let supported = t
        .kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap();
    for id in 0..4u8 {
        let cpuid = vcpu_cpuid(&t.kvm, id, 4).unwrap();
        let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
        assert_eq!(leaf1.ebx >> 24, u32::from(id));
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_ne!(leaf1.ecx & cpuid::ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.edx & cpuid::EDX_HTT, 0);
        let leaf_b: Vec<_> = cpuid
            .as_slice()
            .iter()
            .filter(|e| e.function == 0xb)
            .collect();
        if !leaf_b.is_empty() {
            let core = leaf_b
                .iter()
                .find(|e| e.index == 1)
                .expect("core level subleaf");
            assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 4, 2));
            assert!(leaf_b.iter().all(|e| e.edx == u32::from(id)));
        }
        if let Some(amd) = cpuid.as_slice().iter().find(|e| e.function == 0x8000_0008) {
            assert_eq!(amd.ecx & 0xff, 3);
        }
        let kvm_leaves = |c: &kvm_bindings::CpuId| {
            c.as_slice()
                .iter()
                .filter(|e| e.function & 0xffff_0000 == 0x4000_0000)
                .count()
        };
        assert_eq!(kvm_leaves(&cpuid), kvm_leaves(&supported));
        let vcpu = vcpu(&t, u64::from(id));
        vcpu.set_cpuid2(&cpuid).unwrap();
        let back = vcpu
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .unwrap();
        let back1 = back.as_slice().iter().find(|e| e.function == 1).unwrap();
        assert_eq!(back1.ebx >> 24, u32::from(id));
    }
}

#[test]
fn cpuid_rejects_vcpu_id_out_of_range() {
    let kvm = Kvm::new().unwrap();
    assert!(vcpu_cpuid(&kvm, 2, 2).is_err());
    assert!(vcpu_cpuid(&kvm, 0, 0).is_err());
}
