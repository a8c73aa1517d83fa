//! Tests against the real /dev/kvm: the boot state is accepted by KVM and a tiny guest placed
//! at the entry point runs in long mode with the zero page in `rsi` and the MMIO gap mapped.

use crate::vstate::memory::GuestMemory;
use kvm_bindings::{kvm_msr_entry, kvm_userspace_memory_region, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::layout::{ram_regions, MMIO_DEVICES_START, PML4_START, ZERO_PAGE_START};
use super::*;

struct TestVm {
    kvm: Kvm,
    vm: VmFd,
    mem: GuestMemory,
}

fn test_vm(mem_size: u64) -> TestVm {
    test_vm_with(mem_size, true)
}

/// Without the in-kernel irqchip, `hlt` exits to userspace (with it, KVM waits in the kernel).
fn test_vm_with(mem_size: u64, irqchip: bool) -> TestVm {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().unwrap();
    let mem = GuestMemory::from_ranges(&ram_regions(mem_size)).unwrap();
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
    if irqchip {
        vm.create_irq_chip().unwrap();
    }
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

/// The legacy devices on a vm-device PIO bus, as the VMM wires them.
struct LegacyBus {
    io: vm_device::device_manager::IoManager,
    serial_out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    poweroff: vmm_sys_util::eventfd::EventFd,
    reset: vmm_sys_util::eventfd::EventFd,
}

/// Guest output captured for assertions.
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn legacy_bus() -> LegacyBus {
    use devices::legacy::{acpi_pm, i8042, rtc, serial, AcpiPmDevice, Rtc, SerialDevice, I8042};
    use std::sync::{Arc, Mutex};
    use vm_device::bus::{PioAddress, PioRange};
    use vm_device::device_manager::{IoManager, PioManager};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    let fd = || EventFd::new(EFD_NONBLOCK).unwrap();
    let (poweroff, reset) = (fd(), fd());
    let serial_out = Arc::new(Mutex::new(Vec::new()));
    let mut io = IoManager::new();
    let range = |base, len| PioRange::new(PioAddress(base), len).unwrap();
    let serial = SerialDevice::new(fd(), Box::new(Capture(serial_out.clone())));
    io.register_pio(
        range(serial::COM1_PORT_BASE, serial::PORT_LEN),
        Arc::new(Mutex::new(serial)),
    )
    .unwrap();
    io.register_pio(
        range(rtc::PORT_BASE, rtc::PORT_LEN),
        Arc::new(Mutex::new(Rtc::new())),
    )
    .unwrap();
    let pm = AcpiPmDevice::new(poweroff.try_clone().unwrap(), reset.try_clone().unwrap());
    io.register_pio(
        range(acpi_pm::PORT_BASE, acpi_pm::PORT_LEN),
        Arc::new(Mutex::new(pm)),
    )
    .unwrap();
    let kbd = Arc::new(Mutex::new(I8042::new(reset.try_clone().unwrap(), fd())));
    io.register_pio(range(i8042::DATA_PORT, 1), kbd.clone())
        .unwrap();
    io.register_pio(range(i8042::COMMAND_PORT, 1), kbd).unwrap();
    LegacyBus {
        io,
        serial_out,
        poweroff,
        reset,
    }
}

/// Boots `code` as a tiny ELF "kernel" through the whole arch path (load_kernel, ACPI,
/// zero page, vCPU set-up) and runs it until it powers off or resets the machine.
fn boot_tiny_kernel(code: &[u8]) -> LegacyBus {
    use std::io::Write;
    use vm_device::bus::PioAddress;
    use vm_device::device_manager::PioManager;

    let t = test_vm(64 << 20);
    let image = super::kernel::tests::tiny_elf(0x100_0000, 0x100_0000, code);
    let mut file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
    file.write_all(&image).unwrap();
    let entry = load_kernel(&t.mem, &mut file).unwrap();
    let rsdp = create_acpi_tables(&t.mem, 1, &[]).unwrap();
    let mut cmdline = linux_loader::cmdline::Cmdline::new(layout::CMDLINE_MAX_SIZE).unwrap();
    cmdline.insert_str("console=ttyS0").unwrap();
    configure_system(&t.mem, &cmdline, None, rsdp).unwrap();
    let mut vcpu = vcpu(&t, 0);
    vcpu.set_cpuid2(&vcpu_cpuid(&t.kvm, 0, 1).unwrap()).unwrap();
    setup_vcpu_common(&vcpu).unwrap();
    setup_boot_vcpu(&vcpu, &t.mem, entry).unwrap();

    let bus = legacy_bus();
    for _ in 0..10_000 {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port, data) => bus.io.pio_write(PioAddress(port), data).unwrap(),
            VcpuExit::IoIn(port, data) => bus.io.pio_read(PioAddress(port), data).unwrap(),
            other => panic!("unexpected exit {other:?}"),
        }
        if bus.poweroff.read().is_ok() {
            bus.poweroff.write(1).unwrap();
            return bus;
        }
        if bus.reset.read().is_ok() {
            bus.reset.write(1).unwrap();
            return bus;
        }
    }
    panic!("guest neither powered off nor reset");
}

/// Guest prologue: print 'K', RTC register B and the RTC century byte on COM1.
#[rustfmt::skip]
const PRINT_RTC: [u8; 21] = [
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'K',             // mov al, 'K'
    0xee,                   // out dx, al
    0xb0, 0x8b,             // mov al, 0x80 | 0x0b   (NMI bit + register B)
    0xe6, 0x70,             // out 0x70, al
    0xe4, 0x71,             // in al, 0x71
    0xee,                   // out dx, al
    0xb0, 0x32,             // mov al, 0x32          (century)
    0xe6, 0x70,             // out 0x70, al
    0xe4, 0x71,             // in al, 0x71
    0xee,                   // out dx, al
];

fn expected_serial() -> Vec<u8> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let century = devices::legacy::rtc::DateTime::from_unix(secs).year / 100;
    let bcd = (((century / 10) << 4) | (century % 10)) as u8;
    vec![b'K', devices::legacy::rtc::REG_B_24H, bcd]
}

#[test]
fn tiny_kernel_reads_rtc_and_powers_off_through_acpi_sleep_control() {
    let mut code = PRINT_RTC.to_vec();
    #[rustfmt::skip]
    code.extend_from_slice(&[
        0x66, 0xba, 0x00, 0x06, // mov dx, 0x600 (sleep control)
        0xb0, 0x34,             // mov al, (5 << 2) | SLP_EN
        0xee,                   // out dx, al
        0xeb, 0xfe,             // jmp $
    ]);
    let bus = boot_tiny_kernel(&code);
    assert_eq!(*bus.serial_out.lock().unwrap(), expected_serial());
    assert!(bus.poweroff.read().is_ok(), "powered off");
    assert!(bus.reset.read().is_err(), "not reset");
}

#[test]
fn tiny_kernel_resets_through_acpi_reset_register() {
    #[rustfmt::skip]
    let code = [
        0x66, 0xba, 0x02, 0x06, // mov dx, 0x602 (reset register)
        0xb0, 0x0f,             // mov al, RESET_VALUE
        0xee,                   // out dx, al
        0xeb, 0xfe,             // jmp $
    ];
    let bus = boot_tiny_kernel(&code);
    assert!(bus.reset.read().is_ok(), "reset");
    assert!(bus.poweroff.read().is_err(), "not powered off");
}

#[test]
fn tiny_kernel_resets_through_i8042() {
    #[rustfmt::skip]
    let code = [
        0xe4, 0x64,             // in al, 0x64 (status)
        0xb0, 0xfe,             // mov al, 0xfe (pulse reset line)
        0xe6, 0x64,             // out 0x64, al
        0xeb, 0xfe,             // jmp $
    ];
    let bus = boot_tiny_kernel(&code);
    assert!(bus.reset.read().is_ok(), "reset");
}

/// Boots a real bzImage (path in `KILN_TEST_BZIMAGE`, e.g. Debian's vmlinuz) until the
/// kernel has parsed the e820 map and the ACPI tables (it prints them on the early serial
/// console): proves the header copy, zero page, command line, page tables, 64-bit entry and
/// the RSDP -> XSDT -> FADT/DSDT/MADT chain are what a real kernel accepts. There is no
/// irqchip here, so the kernel is stopped at its first LAPIC access. Under PVM the kernel
/// runs emulated: this takes minutes; run with `--ignored` and an outer timeout.
#[test]
#[ignore = "needs KILN_TEST_BZIMAGE=<bzImage>; slow under PVM"]
fn real_bzimage_parses_e820_and_acpi_tables() {
    use std::io::Write;
    let path = std::env::var("KILN_TEST_BZIMAGE").expect("set KILN_TEST_BZIMAGE to a bzImage");
    let t = test_vm_with(256 << 20, false);
    let mut file = std::fs::File::open(path).unwrap();
    let entry = load_kernel(&t.mem, &mut file).unwrap();
    assert_eq!(entry, GuestAddress(layout::HIMEM_START + 0x200));
    let rsdp = create_acpi_tables(&t.mem, 1, &[]).unwrap();
    let mut cmdline = linux_loader::cmdline::Cmdline::new(layout::CMDLINE_MAX_SIZE).unwrap();
    cmdline
        .insert_str("console=ttyS0 earlyprintk=serial,ttyS0,115200")
        .unwrap();
    configure_system(&t.mem, &cmdline, None, rsdp).unwrap();
    let mut vcpu = vcpu(&t, 0);
    vcpu.set_cpuid2(&vcpu_cpuid(&t.kvm, 0, 1).unwrap()).unwrap();
    setup_boot_vcpu(&vcpu, &t.mem, entry).unwrap();

    let mut serial = devices::legacy::SerialDevice::new(
        vmm_sys_util::eventfd::EventFd::new(0).unwrap(),
        Box::new(std::io::sink()),
    );
    let mut out = Vec::new();
    use vm_device::bus::PioAddress;
    use vm_device::MutDevicePio;
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) if (0x3f8..0x400).contains(&port) => {
                if port == 0x3f8 {
                    out.extend_from_slice(data);
                    std::io::stderr().write_all(data).unwrap();
                }
                serial.pio_write(PioAddress(0x3f8), port - 0x3f8, data);
            }
            Ok(VcpuExit::IoIn(port, data)) if (0x3f8..0x400).contains(&port) => {
                serial.pio_read(PioAddress(0x3f8), port - 0x3f8, data)
            }
            Ok(VcpuExit::IoIn(_, data)) => data.fill(0xff),
            Ok(VcpuExit::IoOut(..)) => {}
            Ok(other) => panic!(
                "unexpected exit {other:?}; serial so far: {}",
                String::from_utf8_lossy(&out)
            ),
            Err(e) => panic!(
                "KVM_RUN: {e}; serial so far: {}",
                String::from_utf8_lossy(&out)
            ),
        }
        if String::from_utf8_lossy(&out).contains("Reserving APIC table memory") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    for line in [
        "Command line: console=ttyS0 earlyprintk=serial,ttyS0,115200",
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
        "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved",
        "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
        "ACPI: RSDP 0x00000000000E0000",
        "ACPI: FACP",
        "ACPI: DSDT",
        "ACPI: APIC",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains("ACPI BIOS Error") && !text.contains("Incorrect checksum"),
        "{text}"
    );
}
