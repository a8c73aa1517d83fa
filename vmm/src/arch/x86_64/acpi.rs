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
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    ACPI_TABLES_END, ACPI_TABLES_START, APIC_ADDR, I8042_IRQ, IOAPIC_ADDR, IRQ_BASE, IRQ_MAX,
    RTC_IRQ, SERIAL_IRQ,
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
    GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, u64::from(port))
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
    let mut madt = Sdt::new(*b"APIC", 44, MADT_REVISION, OEM_ID, *b"KILNMADT", OEM_REVISION);
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

fn dsdt_body(virtio: &[MmioDeviceInfo]) -> Vec<u8> {
    let mut body = Vec::new();

    let com1_io = IO::new(serial::COM1_PORT_BASE, serial::COM1_PORT_BASE, 1, serial::PORT_LEN as u8);
    let com1_irq = edge_irq(SERIAL_IRQ);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1 = aml::Device::new(
        "COM1".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &com1_crs),
        ],
    );

    let rtc_io = IO::new(rtc::PORT_BASE, rtc::PORT_BASE, 1, rtc::PORT_LEN as u8);
    let rtc_irq = edge_irq(RTC_IRQ);
    let rtc_crs = ResourceTemplate::new(vec![&rtc_io, &rtc_irq]);
    let rtc_dev = aml::Device::new(
        "RTC_".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0B00")),
            &Name::new("_CRS".into(), &rtc_crs),
        ],
    );

    let kbd_data = IO::new(i8042::DATA_PORT, i8042::DATA_PORT, 1, 1);
    let kbd_cmd = IO::new(i8042::COMMAND_PORT, i8042::COMMAND_PORT, 1, 1);
    let kbd_irq = edge_irq(I8042_IRQ);
    let kbd_crs = ResourceTemplate::new(vec![&kbd_data, &kbd_cmd, &kbd_irq]);
    let kbd = aml::Device::new(
        "PS2_".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0303")),
            &Name::new("_CRS".into(), &kbd_crs),
        ],
    );

    let pm_io = IO::new(acpi_pm::PORT_BASE, acpi_pm::PORT_BASE, 1, acpi_pm::PORT_LEN as u8);
    let pm_crs = ResourceTemplate::new(vec![&pm_io]);
    let pm = aml::Device::new(
        "PMIO".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C02")),
            &Name::new("_UID".into(), &"PMIO"),
            &Name::new("_CRS".into(), &pm_crs),
        ],
    );

    let mut sb_children: Vec<&dyn Aml> = vec![&com1, &rtc_dev, &kbd, &pm];
    let virtio_devices: Vec<Vec<u8>> = virtio.iter().enumerate().map(virtio_device).collect();
    let virtio_raw: Vec<RawAml> = virtio_devices.into_iter().map(RawAml).collect();
    for raw in &virtio_raw {
        sb_children.push(raw);
    }
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

fn virtio_device((index, dev): (usize, &MmioDeviceInfo)) -> Vec<u8> {
    let name = format!("V{index:03X}");
    let mem = Memory32Fixed::new(true, dev.base as u32, dev.size as u32);
    let irq = edge_irq(dev.gsi);
    let crs = ResourceTemplate::new(vec![&mem, &irq]);
    let uid = index as u32;
    let mut bytes = Vec::new();
    aml::Device::new(
        Path::new(&name),
        vec![
            &Name::new("_HID".into(), &"LNRO0005"),
            &Name::new("_UID".into(), &uid),
            &Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut bytes);
    bytes
}

fn dsdt(virtio: &[MmioDeviceInfo]) -> Vec<u8> {
    let mut dsdt = Sdt::new(*b"DSDT", 36, DSDT_REVISION, OEM_ID, *b"KILNDSDT", OEM_REVISION);
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
        if !(IRQ_BASE..=IRQ_MAX).contains(&dev.gsi) {
            return Err(ArchError::InvalidConfig(format!(
                "virtio-mmio GSI {} outside {IRQ_BASE}..={IRQ_MAX}",
                dev.gsi
            )));
        }
    }
    Ok(())
}

/// Writes the ACPI tables for `num_cpus` vCPUs and the given virtio-mmio windows; returns
/// the RSDP address for [`configure_system`](super::configure_system).
pub fn create_acpi_tables(
    mem: &GuestMemoryMmap,
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
