//! ACPI tables: RSDP -> XSDT -> {FADT -> DSDT, MADT}, written at `ACPI_TABLES_START`.
//!
//! The platform is "hardware-reduced" (no PM1 blocks, no SCI, no legacy PIC for Linux): power
//! off and reset go through the FADT sleep control and reset registers, which point at the
//! ACPI PM I/O ports of [`devices::legacy::acpi_pm`]. The DSDT describes COM1, the CMOS RTC,
//! the i8042, the PM ports and one `LNRO0005` (virtio-mmio) device per window, which is how
//! stock distribution kernels find virtio-mmio devices.
//!
//! Virtio interrupts are described as edge-triggered, active-high (as Firecracker does): the
//! VMM injects them through irqfds without a resample fd, which pulse the IOAPIC pin, so the
//! guest must latch on the edge; a level-triggered pin would only see the same pulse and
//! could miss an interrupt raised while the previous one was in service.

use crate::vstate::memory::GuestMemory;
use acpi_tables::aml::{
    self, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use devices::legacy::{acpi_pm, i8042, rtc, serial};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    is_legacy_gsi, ACPI_TABLES_END, ACPI_TABLES_START, APIC_ADDR, I8042_IRQ, IOAPIC_ADDR, IRQ_BASE,
    IRQ_MAX, RTC_IRQ, SERIAL_IRQ,
};
use super::ArchError;

/// OEM id in every table.
pub const OEM_ID: [u8; 6] = *b"KILN  ";
const OEM_REVISION: u32 = 1;
/// Revision of the DSDT: 2 means 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
/// MADT revision (ACPI 6.x uses 5; the structures we emit exist since revision 1).
const MADT_REVISION: u8 = 5;
/// FADT IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042. Bit 5 ("CMOS RTC not present") stays clear.
pub const IAPC_BOOT_ARCH: u16 = 0x0003;
/// Tables are placed on this alignment.
const TABLE_ALIGN: u64 = 8;
/// MADT structure types.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;

/// One virtio-mmio window as described in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Guest physical base of the register window.
    pub base: u64,
    /// Window size in bytes.
    pub size: u64,
    /// The GSI (IOAPIC pin) the device's irqfd is registered for.
    pub gsi: u32,
}

fn io_gas(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn fadt(dsdt: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"KILNFACP", OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt);
    fadt.reset_reg = io_gas(acpi_pm::RESET_PORT);
    fadt.reset_value = acpi_pm::RESET_VALUE;
    fadt.sleep_control_reg = io_gas(acpi_pm::SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_gas(acpi_pm::SLEEP_STATUS_PORT);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.century = rtc::CENTURY_INDEX;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"KILNVMM\0").into();
    let mut bytes = Vec::new();
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}

fn madt(num_cpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        44,
        MADT_REVISION,
        OEM_ID,
        *b"KILNMADT",
        OEM_REVISION,
    );
    madt.write_u32(36, APIC_ADDR as u32);
    madt.write_u32(40, 0); // flags: no PCAT_COMPAT, Linux uses no 8259 on this platform
    for cpu in 0..num_cpus {
        // uid, APIC id, flags = enabled
        let mut entry = vec![MADT_LOCAL_APIC, 8, cpu, cpu];
        entry.extend_from_slice(&1u32.to_le_bytes());
        madt.append_slice(&entry);
    }
    let mut ioapic = vec![MADT_IO_APIC, 12, 0, 0];
    ioapic.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    madt.append_slice(&ioapic);
    madt.as_slice().to_vec()
}

/// An edge-triggered, active-high, exclusive interrupt resource.
fn edge_irq(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}

/// Encodes `Device(name) { children }` at once, so temporaries in `children` live long enough.
fn device_aml(name: &str, children: Vec<&dyn Aml>) -> RawAml {
    let mut bytes = Vec::new();
    aml::Device::new(Path::new(name), children).to_aml_bytes(&mut bytes);
    RawAml(bytes)
}

fn dsdt_body(virtio: &[MmioDeviceInfo]) -> Vec<u8> {
    let com1 = device_aml(
        "COM1",
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &IO::new(
                        serial::COM1_PORT_BASE,
                        serial::COM1_PORT_BASE,
                        1,
                        serial::PORT_LEN as u8,
                    ),
                    &edge_irq(SERIAL_IRQ),
                ]),
            ),
        ],
    );
    let rtc_dev = device_aml(
        "RTC_",
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0B00")),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &IO::new(rtc::PORT_BASE, rtc::PORT_BASE, 1, rtc::PORT_LEN as u8),
                    &edge_irq(RTC_IRQ),
                ]),
            ),
        ],
    );
    let kbd = device_aml(
        "PS2_",
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0303")),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &IO::new(i8042::DATA_PORT, i8042::DATA_PORT, 1, 1),
                    &IO::new(i8042::COMMAND_PORT, i8042::COMMAND_PORT, 1, 1),
                    &edge_irq(I8042_IRQ),
                ]),
            ),
        ],
    );
    let pm = device_aml(
        "PMIO",
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C02")),
            &Name::new("_UID".into(), &"PMIO"),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![&IO::new(
                    acpi_pm::PORT_BASE,
                    acpi_pm::PORT_BASE,
                    1,
                    acpi_pm::PORT_LEN as u8,
                )]),
            ),
        ],
    );
    let virtio_devices: Vec<RawAml> = virtio.iter().enumerate().map(virtio_device).collect();

    let mut sb_children: Vec<&dyn Aml> = vec![&com1, &rtc_dev, &kbd, &pm];
    sb_children.extend(virtio_devices.iter().map(|d| d as &dyn Aml));
    let mut body = Vec::new();
    aml::Scope::new("\\_SB_".into(), sb_children).to_aml_bytes(&mut body);

    // \_S5_: SLP_TYPa, SLP_TYPb, reserved, reserved.
    let s5_type = acpi_pm::S5_SLEEP_TYPE;
    Name::new(
        "_S5_".into(),
        &Package::new(vec![&s5_type, &s5_type, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut body);
    body
}

/// Already-encoded AML bytes, so devices built in a loop can live in one `Vec<&dyn Aml>`.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn virtio_device((index, dev): (usize, &MmioDeviceInfo)) -> RawAml {
    let uid = index as u32;
    device_aml(
        &format!("V{index:03X}"),
        vec![
            &Name::new("_HID".into(), &"LNRO0005"),
            &Name::new("_UID".into(), &uid),
            &Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &Memory32Fixed::new(true, dev.base as u32, dev.size as u32),
                    &edge_irq(dev.gsi),
                ]),
            ),
        ],
    )
}

fn dsdt(virtio: &[MmioDeviceInfo]) -> Vec<u8> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        *b"KILNDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&dsdt_body(virtio));
    dsdt.as_slice().to_vec()
}

fn validate(num_cpus: u8, virtio: &[MmioDeviceInfo]) -> Result<(), ArchError> {
    if num_cpus == 0 || num_cpus == u8::MAX {
        return Err(ArchError::InvalidConfig(format!(
            "{num_cpus} vCPUs; use 1 to 254"
        )));
    }
    if virtio.len() > 0xfff {
        return Err(ArchError::InvalidConfig(format!(
            "{} virtio devices; at most 4095 fit the DSDT naming",
            virtio.len()
        )));
    }
    for dev in virtio {
        let end = dev.base.checked_add(dev.size);
        if end.is_none_or(|end| end > u64::from(u32::MAX) + 1) || dev.size == 0 {
            return Err(ArchError::InvalidConfig(format!(
                "virtio-mmio window {:#x}+{:#x} must be non-empty and below 4 GiB",
                dev.base, dev.size
            )));
        }
        if !(IRQ_BASE..=IRQ_MAX).contains(&dev.gsi) || is_legacy_gsi(dev.gsi) {
            return Err(ArchError::InvalidConfig(format!(
                "virtio-mmio GSI {} outside {IRQ_BASE}..={IRQ_MAX} or taken by a legacy device",
                dev.gsi
            )));
        }
    }
    Ok(())
}

/// Writes the ACPI tables for `num_cpus` vCPUs and the given virtio-mmio windows; returns
/// the RSDP address for [`configure_system`](super::configure_system).
pub fn create_acpi_tables(
    mem: &GuestMemory,
    num_cpus: u8,
    virtio: &[MmioDeviceInfo],
) -> Result<GuestAddress, ArchError> {
    validate(num_cpus, virtio)?;
    let align = |addr: u64| addr.div_ceil(TABLE_ALIGN) * TABLE_ALIGN;
    let rsdp_addr = ACPI_TABLES_START;
    let dsdt_addr = align(rsdp_addr + Rsdp::len() as u64);
    let dsdt = dsdt(virtio);
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr);
    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let madt = madt(num_cpus);
    let xsdt_addr = align(madt_addr + madt.len() as u64);
    let mut xsdt = XSDT::new(OEM_ID, *b"KILNXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let mut xsdt_bytes = Vec::new();
    xsdt.to_aml_bytes(&mut xsdt_bytes);
    let end = xsdt_addr + xsdt_bytes.len() as u64;
    if end > ACPI_TABLES_END {
        return Err(ArchError::AcpiTooBig {
            needed: end - ACPI_TABLES_START,
            available: ACPI_TABLES_END - ACPI_TABLES_START,
        });
    }
    let mut rsdp_bytes = Vec::new();
    Rsdp::new(OEM_ID, xsdt_addr).to_aml_bytes(&mut rsdp_bytes);
    for (what, addr, bytes) in [
        ("RSDP", rsdp_addr, &rsdp_bytes),
        ("DSDT", dsdt_addr, &dsdt),
        ("FADT", fadt_addr, &fadt),
        ("MADT", madt_addr, &madt),
        ("XSDT", xsdt_addr, &xsdt_bytes),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(ArchError::mem(what, addr))?;
    }
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::{ram_regions, MMIO_DEVICES_START, MMIO_DEVICE_SIZE};

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&ram_regions(64 << 20)).unwrap()
    }

    fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    /// Reads a whole system description table at `addr`, checking signature and checksum.
    fn table(mem: &GuestMemory, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
        let header = read(mem, addr, 36);
        assert_eq!(&header[0..4], signature);
        let t = read(mem, addr, u32_at(&header, 4) as usize);
        assert_eq!(
            sum(&t),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        t
    }

    struct Tables {
        fadt: Vec<u8>,
        madt: Vec<u8>,
        dsdt: Vec<u8>,
    }

    /// Follows RSDP -> XSDT -> FADT -> DSDT and XSDT -> MADT the way an OS does.
    fn walk(mem: &GuestMemory, rsdp: GuestAddress) -> Tables {
        let r = read(mem, rsdp.0, 36);
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(sum(&r[0..20]), 0, "RSDP v1 checksum");
        assert_eq!(sum(&r), 0, "RSDP extended checksum");
        assert_eq!(r[15], 2, "ACPI 2.0+ RSDP");
        let xsdt = table(mem, u64_at(&r, 24), b"XSDT");
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        let mut fadt = None;
        let mut madt = None;
        for addr in entries {
            match &read(mem, addr, 4)[..] {
                b"FACP" => fadt = Some(table(mem, addr, b"FACP")),
                b"APIC" => madt = Some(table(mem, addr, b"APIC")),
                other => panic!("unexpected table {other:?}"),
            }
        }
        let fadt = fadt.expect("FADT in XSDT");
        let dsdt = table(mem, u64_at(&fadt, 140), b"DSDT");
        Tables {
            fadt,
            madt: madt.expect("MADT in XSDT"),
            dsdt,
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn virtio(n: u64) -> Vec<MmioDeviceInfo> {
        (0..n)
            .map(|i| MmioDeviceInfo {
                base: MMIO_DEVICES_START + i * MMIO_DEVICE_SIZE,
                size: MMIO_DEVICE_SIZE,
                gsi: crate::arch::x86_64::layout::virtio_gsi(i as u32).unwrap(),
            })
            .collect()
    }

    #[test]
    fn chain_is_readable_and_checksums_are_valid() {
        let mem = mem();
        let rsdp = create_acpi_tables(&mem, 2, &virtio(3)).unwrap();
        assert_eq!(rsdp, GuestAddress(ACPI_TABLES_START));
        walk(&mem, rsdp);
    }

    #[test]
    fn fadt_is_hardware_reduced_with_pm_registers() {
        let mem = mem();
        let t = walk(&mem, create_acpi_tables(&mem, 1, &[]).unwrap());
        let f = &t.fadt;
        assert_eq!(f.len(), 276);
        assert_eq!((f[8], f[131]), (6, 5), "FADT revision 6.5");
        let flags = u32_at(f, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        let iapc = u16::from_le_bytes([f[109], f[110]]);
        assert_eq!(iapc & (1 << 5), 0, "must not claim 'CMOS RTC not present'");
        assert_eq!(f[108], rtc::CENTURY_INDEX);
        // Generic address structures: space 1 = SystemIO, 8 bits, byte access.
        let gas = |off: usize| (f[off], f[off + 1], f[off + 3], u64_at(f, off + 4));
        assert_eq!(gas(116), (1, 8, 1, u64::from(acpi_pm::RESET_PORT)));
        assert_eq!(f[128], acpi_pm::RESET_VALUE);
        assert_eq!(gas(244), (1, 8, 1, u64::from(acpi_pm::SLEEP_CONTROL_PORT)));
        assert_eq!(gas(256), (1, 8, 1, u64::from(acpi_pm::SLEEP_STATUS_PORT)));
    }

    #[test]
    fn madt_has_one_enabled_lapic_per_vcpu_and_the_ioapic() {
        for n in [1u8, 2, 6] {
            let mem = mem();
            let t = walk(&mem, create_acpi_tables(&mem, n, &[]).unwrap());
            let m = &t.madt;
            assert_eq!(u32_at(m, 36), APIC_ADDR as u32);
            let mut lapics = Vec::new();
            let mut ioapics = Vec::new();
            let mut off = 44;
            while off < m.len() {
                let (kind, len) = (m[off], m[off + 1] as usize);
                assert!(len >= 2 && off + len <= m.len());
                match kind {
                    0 => lapics.push((m[off + 2], m[off + 3], u32_at(m, off + 4))),
                    1 => ioapics.push(u32_at(m, off + 4)),
                    _ => {}
                }
                off += len;
            }
            let expected: Vec<_> = (0..n).map(|i| (i, i, 1)).collect();
            assert_eq!(lapics, expected);
            assert_eq!(ioapics, vec![IOAPIC_ADDR as u32]);
        }
    }

    #[test]
    fn dsdt_describes_virtio_windows_and_legacy_devices() {
        let mem = mem();
        let devs = virtio(4);
        let t = walk(&mem, create_acpi_tables(&mem, 2, &devs).unwrap());
        let d = &t.dsdt;
        let hid_count = d.windows(8).filter(|w| w == b"LNRO0005").count();
        assert_eq!(hid_count, devs.len());
        for dev in &devs {
            // Memory32Fixed: tag 0x86, length 9, read-write, base, size.
            let mut mem32 = vec![0x86, 0x09, 0x00, 0x01];
            mem32.extend_from_slice(&(dev.base as u32).to_le_bytes());
            mem32.extend_from_slice(&(dev.size as u32).to_le_bytes());
            // Extended interrupt: consumer + edge, active high, exclusive; one GSI.
            let mut irq = vec![0x89, 0x06, 0x00, 0x03, 0x01];
            irq.extend_from_slice(&dev.gsi.to_le_bytes());
            let mut crs = mem32.clone();
            crs.extend_from_slice(&irq);
            assert!(
                contains(d, &crs),
                "window {:#x} with GSI {}",
                dev.base,
                dev.gsi
            );
        }
        // EISA ids of COM1 (PNP0501), RTC (PNP0B00), i8042 (PNP0303), as AML DWords.
        for id in [0x0105_d041u32, 0x000b_d041, 0x0303_d041] {
            let mut enc = vec![0x0c];
            enc.extend_from_slice(&id.to_le_bytes());
            assert!(contains(d, &enc), "EISA id {id:#x}");
        }
        // COM1 I/O 0x3f8 len 8; RTC 0x70 len 2; PM block.
        assert!(contains(
            d,
            &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
        ));
        assert!(contains(
            d,
            &[0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02]
        ));
        assert!(contains(
            d,
            &[0x47, 0x01, 0x00, 0x06, 0x00, 0x06, 0x01, 0x04]
        ));
        // \_S5_ = Package(4) { 5, 5, 0, 0 }.
        assert!(contains(d, b"_S5_\x12\x08\x04\x0a\x05\x0a\x05\x00\x00"));
    }

    #[test]
    fn bad_descriptions_are_refused() {
        let mem = mem();
        assert!(create_acpi_tables(&mem, 0, &[]).is_err());
        let mut devs = virtio(1);
        devs[0].gsi = 4;
        assert!(create_acpi_tables(&mem, 1, &devs).is_err());
        devs[0].gsi = 8; // the RTC's
        assert!(create_acpi_tables(&mem, 1, &devs).is_err());
        devs[0].gsi = 5;
        devs[0].base = 0xffff_ffff;
        assert!(create_acpi_tables(&mem, 1, &devs).is_err());
    }

    #[test]
    fn tables_fit_for_many_devices_or_error_cleanly() {
        let mem = mem();
        let devs = virtio(u64::from(crate::arch::x86_64::layout::VIRTIO_GSI_COUNT));
        let t = walk(&mem, create_acpi_tables(&mem, 254, &devs).unwrap());
        assert_eq!(t.dsdt.windows(8).filter(|w| w == b"LNRO0005").count(), 18);
    }

    /// Runs ACPICA's disassembler over every table; needs `iasl` (Debian: acpica-tools).
    #[test]
    #[ignore = "needs iasl from acpica-tools"]
    fn iasl_disassembles_all_tables_cleanly() {
        let mem = mem();
        let t = walk(&mem, create_acpi_tables(&mem, 2, &virtio(2)).unwrap());
        let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/kiln-acpi").unwrap();
        for (name, bytes) in [("dsdt", &t.dsdt), ("facp", &t.fadt), ("apic", &t.madt)] {
            let path = dir.as_path().join(format!("{name}.dat"));
            std::fs::write(&path, bytes).unwrap();
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&path)
                .output()
                .expect("run iasl");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: {text}");
            assert!(
                !text.contains("Error") && !text.contains("Warning"),
                "{name}: {text}"
            );
            let dsl = std::fs::read_to_string(path.with_extension("dsl")).unwrap();
            if let Ok(copy) = std::env::var("KILN_ACPI_DUMP") {
                std::fs::write(format!("{copy}/{name}.dsl"), &dsl).unwrap();
            }
            if name == "dsdt" {
                for needle in [
                    "LNRO0005",
                    "PNP0501",
                    "PNP0B00",
                    "PNP0303",
                    "_S5_",
                    "0xD0001000",
                ] {
                    assert!(dsl.contains(needle), "{needle} missing from\n{dsl}");
                }
            }
        }
    }
}
