//! The zero page (`struct boot_params`) and the e820 memory map for the 64-bit boot protocol
//! (Documentation/arch/x86/boot.rst).

use crate::vstate::memory::GuestMemory;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::load_cmdline;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::kernel::HDRS_MAGIC;
use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, ZERO_PAGE_START};
use super::ArchError;

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// `type_of_loader` for a boot loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags` bit: protected-mode code is loaded at 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// Default `kernel_alignment` when the kernel did not provide a setup header (ELF boot).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x20_0000;
/// Setup header `boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;

/// One e820 entry, as the tests and the zero page see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The e820 map of `mem`: low RAM up to the EBDA, the EBDA..1 MiB area reserved (it holds
/// the ACPI tables), then every RAM region from 1 MiB on (which leaves the MMIO gap out).
pub fn e820_map(mem: &GuestMemory) -> Result<Vec<E820Entry>, ArchError> {
    let mut map = Vec::new();
    for region in mem.iter() {
        let start = region.start_addr().raw_value();
        let end = start + region.len();
        if start == 0 {
            if end < HIMEM_START {
                return Err(ArchError::MemoryTooSmall {
                    size: end,
                    min: HIMEM_START * 2,
                });
            }
            map.push(E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM,
            });
            map.push(E820Entry {
                addr: EBDA_START,
                size: HIMEM_START - EBDA_START,
                kind: E820_RESERVED,
            });
            if end > HIMEM_START {
                map.push(E820Entry {
                    addr: HIMEM_START,
                    size: end - HIMEM_START,
                    kind: E820_RAM,
                });
            }
        } else {
            map.push(E820Entry {
                addr: start,
                size: region.len(),
                kind: E820_RAM,
            });
        }
    }
    Ok(map)
}

/// Writes the command line and the zero page for a 64-bit boot.
///
/// Keeps the setup header [`load_kernel`](super::load_kernel) copied from a bzImage, fills in
/// the loader fields, the initrd, the e820 map (with the MMIO gap left out) and the RSDP
/// address.
pub fn configure_system(
    mem: &GuestMemory,
    cmdline: &Cmdline,
    initrd: Option<(GuestAddress, usize)>,
    rsdp: GuestAddress,
) -> Result<(), ArchError> {
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(|_| ArchError::Cmdline(linux_loader::loader::Error::InvalidCommandLine))?
        .as_bytes_with_nul()
        .len();
    if cmdline_len > CMDLINE_MAX_SIZE {
        return Err(ArchError::CmdlineTooLong {
            len: cmdline_len,
            max: CMDLINE_MAX_SIZE,
        });
    }
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(ArchError::Cmdline)?;

    let previous: boot_params = mem
        .read_obj(GuestAddress(ZERO_PAGE_START))
        .map_err(ArchError::mem("zero page", ZERO_PAGE_START))?;
    let mut params = boot_params::default();
    if previous.hdr.header == HDRS_MAGIC {
        params.hdr = previous.hdr;
    } else {
        params.hdr.header = HDRS_MAGIC;
        params.hdr.kernel_alignment = DEFAULT_KERNEL_ALIGNMENT;
    }
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = (cmdline_len - 1) as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp.raw_value();

    let map = e820_map(mem)?;
    if map.len() > params.e820_table.len() {
        return Err(ArchError::InvalidConfig(format!(
            "{} e820 entries, the zero page holds {}",
            map.len(),
            params.e820_table.len()
        )));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = map.len() as u8;

    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(ArchError::mem("zero page", ZERO_PAGE_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::{ram_regions, MMIO_GAP_END, MMIO_GAP_START};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn mem_of(size: u64) -> GuestMemory {
        GuestMemory::from_ranges(&ram_regions(size)).unwrap()
    }

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    fn assert_no_ram_in_gap(map: &[E820Entry]) {
        for e in map {
            let end = e.addr + e.size;
            assert!(end <= MMIO_GAP_START || e.addr >= MMIO_GAP_END, "{e:?}");
        }
    }

    #[test]
    fn e820_256mib() {
        let map = e820_map(&mem_of(256 * MIB)).unwrap();
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: EBDA_START,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: EBDA_START,
                    size: HIMEM_START - EBDA_START,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: HIMEM_START,
                    size: 256 * MIB - HIMEM_START,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn e820_3gib_stops_at_gap() {
        let map = e820_map(&mem_of(3 * GIB)).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_no_ram_in_gap(&map);
        assert_eq!(ram_total(&map), 3 * GIB - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn e820_6gib_has_ram_above_4gib() {
        let map = e820_map(&mem_of(6 * GIB)).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!(
            map[3],
            E820Entry {
                addr: 4 * GIB,
                size: 3 * GIB,
                kind: E820_RAM
            }
        );
        assert_no_ram_in_gap(&map);
        assert_eq!(ram_total(&map), 6 * GIB - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn zero_page_contents() {
        let mem = mem_of(256 * MIB);
        let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).unwrap();
        cmdline.insert_str("console=ttyS0 panic=1").unwrap();
        let initrd = (GuestAddress(0x0f00_0000), 12345usize);
        configure_system(&mem, &cmdline, Some(initrd), GuestAddress(0xe_0000)).unwrap();

        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.header }, HDRS_MAGIC);
        assert_eq!({ p.hdr.boot_flag }, BOOT_FLAG);
        assert_eq!(p.hdr.type_of_loader, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 21);
        assert_eq!({ p.hdr.ramdisk_image }, 0x0f00_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 12345);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (HIMEM_START, 255 * MIB, E820_RAM)
        );

        let mut text = [0u8; 22];
        mem.read_slice(&mut text, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&text, b"console=ttyS0 panic=1\0");
    }

    #[test]
    fn bzimage_header_survives_configure_system() {
        let mem = mem_of(64 * MIB);
        let mut hdr = linux_loader::loader::bootparam::setup_header {
            header: HDRS_MAGIC,
            init_size: 0x77_0000,
            kernel_alignment: 0x100_0000,
            ..Default::default()
        };
        hdr.version = 0x020f;
        mem.write_obj(hdr, GuestAddress(ZERO_PAGE_START + 0x1f1))
            .unwrap();
        let cmdline = Cmdline::new(64).unwrap();
        configure_system(&mem, &cmdline, None, GuestAddress(0xe_0000)).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.init_size }, 0x77_0000);
        assert_eq!({ p.hdr.kernel_alignment }, 0x100_0000);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!(p.hdr.type_of_loader, 0xff);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn too_long_cmdline_is_refused() {
        let mem = mem_of(64 * MIB);
        let mut cmdline = Cmdline::new(8192).unwrap();
        cmdline.insert_str("x".repeat(3000)).unwrap();
        let err = configure_system(&mem, &cmdline, None, GuestAddress(0xe_0000)).unwrap_err();
        assert!(matches!(err, ArchError::CmdlineTooLong { .. }), "{err}");
    }
}
