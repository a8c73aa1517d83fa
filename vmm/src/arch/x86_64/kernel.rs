//! Loading the kernel (ELF vmlinux or bzImage) and the initrd into guest memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::vstate::memory::GuestMemory;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::{HIMEM_START, MMIO_GAP_START, ZERO_PAGE_START};
use super::ArchError;

/// Offset of the setup header in a bzImage and in `struct boot_params`.
pub(crate) const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// "HdrS", the setup header magic.
pub(crate) const HDRS_MAGIC: u32 = 0x5372_6448;
/// The 64-bit entry point is this far past the start of a bzImage's protected-mode code.
const BZIMAGE_ENTRY64_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has a 64-bit entry point.
const XLF_KERNEL_64: u16 = 1 << 0;
/// Initrd alignment.
const PAGE_SIZE: u64 = 0x1000;

/// Which kernel format a file holds, from its magic numbers.
#[derive(Debug, PartialEq, Eq)]
enum KernelFormat {
    Elf,
    BzImage,
}

fn detect_format(kernel: &mut File) -> Result<KernelFormat, ArchError> {
    let io = |source| ArchError::Io {
        what: "kernel image",
        source,
    };
    let mut magic = [0u8; 4];
    kernel.seek(SeekFrom::Start(0)).map_err(io)?;
    if kernel.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF" {
        return Ok(KernelFormat::Elf);
    }
    kernel.seek(SeekFrom::Start(0x202)).map_err(io)?;
    if kernel.read_exact(&mut magic).is_ok() && u32::from_le_bytes(magic) == HDRS_MAGIC {
        return Ok(KernelFormat::BzImage);
    }
    Err(ArchError::UnknownKernelFormat)
}

/// Loads an ELF vmlinux or a bzImage (detected by magic) and returns the 64-bit entry point.
///
/// For a bzImage the kernel's setup header is also copied into the zero page, where
/// [`configure_system`](super::configure_system) keeps it (the 64-bit entry reads fields such
/// as `init_size` and `kernel_alignment` from it); for an ELF the zero page is cleared.
pub fn load_kernel(mem: &GuestMemory, kernel: &mut File) -> Result<GuestAddress, ArchError> {
    let format = detect_format(kernel)?;
    kernel
        .seek(SeekFrom::Start(0))
        .map_err(|source| ArchError::Io {
            what: "kernel image",
            source,
        })?;
    let himem = Some(GuestAddress(HIMEM_START));
    let zero_page = vec![0u8; 0x1000];
    mem.write_slice(&zero_page, GuestAddress(ZERO_PAGE_START))
        .map_err(ArchError::mem("zero page", ZERO_PAGE_START))?;
    match format {
        KernelFormat::Elf => {
            let result =
                Elf::load(mem, None, kernel, himem).map_err(|source| ArchError::KernelLoad {
                    format: "ELF",
                    source,
                })?;
            Ok(result.kernel_load)
        }
        KernelFormat::BzImage => {
            let result = BzImage::load(mem, None, kernel, himem).map_err(|source| {
                ArchError::KernelLoad {
                    format: "bzImage",
                    source,
                }
            })?;
            let header: setup_header = result.setup_header.unwrap_or_default();
            if header.version < 0x020c || header.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(ArchError::BzImageNot64Bit {
                    version: header.version,
                });
            }
            let addr = ZERO_PAGE_START + SETUP_HEADER_OFFSET;
            mem.write_obj(header, GuestAddress(addr))
                .map_err(ArchError::mem("bzImage setup header", addr))?;
            Ok(GuestAddress(result.kernel_load.0 + BZIMAGE_ENTRY64_OFFSET))
        }
    }
}

/// The highest initrd end address a bzImage accepts (`initrd_addr_max` + 1), if
/// [`load_kernel`] left its setup header in the zero page.
fn initrd_limit_from_header(mem: &GuestMemory) -> Option<u64> {
    let header: setup_header = mem
        .read_obj(GuestAddress(ZERO_PAGE_START + SETUP_HEADER_OFFSET))
        .ok()?;
    (header.header == HDRS_MAGIC && header.initrd_addr_max != 0)
        .then(|| u64::from(header.initrd_addr_max) + 1)
}

/// Loads the initrd page-aligned at the top of RAM below the MMIO gap (and below the
/// kernel's `initrd_addr_max` when a bzImage was loaded first); returns its address and size.
pub fn load_initrd(mem: &GuestMemory, file: &mut File) -> Result<(GuestAddress, usize), ArchError> {
    let io = |source| ArchError::Io {
        what: "initrd",
        source,
    };
    let size = file.metadata().map_err(io)?.len();
    let mut low_ram_end = (mem.last_addr().0 + 1).min(MMIO_GAP_START);
    if let Some(limit) = initrd_limit_from_header(mem) {
        low_ram_end = low_ram_end.min(limit);
    }
    let addr = low_ram_end
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| *a >= HIMEM_START)
        .ok_or(ArchError::InitrdTooBig {
            size,
            limit: low_ram_end,
        })?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, size as usize)
        .map_err(ArchError::mem("initrd", addr))?;
    Ok((GuestAddress(addr), size as usize))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn guest_mem(size: usize) -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn temp_file(bytes: &[u8]) -> File {
        let mut f = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        f.write_all(bytes).unwrap();
        f
    }

    /// A minimal static x86_64 ELF executable: one PT_LOAD segment at `paddr` holding `code`,
    /// entry at `entry`.
    pub(crate) fn tiny_elf(paddr: u64, entry: u64, code: &[u8]) -> Vec<u8> {
        let ehsize = 64u16;
        let phentsize = 56u16;
        let code_off = (ehsize + phentsize) as u64;
        let mut v = Vec::new();
        v.extend_from_slice(b"\x7fELF");
        v.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&entry.to_le_bytes());
        v.extend_from_slice(&(ehsize as u64).to_le_bytes()); // e_phoff
        v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        v.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        v.extend_from_slice(&ehsize.to_le_bytes());
        v.extend_from_slice(&phentsize.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
        v.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        v.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
        v.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        assert_eq!(v.len(), ehsize as usize);
        v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        v.extend_from_slice(&5u32.to_le_bytes()); // R+X
        v.extend_from_slice(&code_off.to_le_bytes());
        v.extend_from_slice(&(paddr | 0xffff_ffff_8000_0000).to_le_bytes()); // p_vaddr
        v.extend_from_slice(&paddr.to_le_bytes());
        v.extend_from_slice(&(code.len() as u64).to_le_bytes());
        v.extend_from_slice(&(code.len() as u64).to_le_bytes());
        v.extend_from_slice(&0x1000u64.to_le_bytes());
        assert_eq!(v.len() as u64, code_off);
        v.extend_from_slice(code);
        v
    }

    /// A minimal bzImage: one setup sector after the boot sector, a setup header with the
    /// given protocol version and xloadflags, then `payload` as the protected-mode code.
    pub(crate) fn tiny_bzimage(version: u16, xloadflags: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 1024];
        v[0x1f1] = 1; // setup_sects
        v[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        v[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        v[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        v[0x211] = 0x01; // loadflags: LOADED_HIGH
        v[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        v[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        v[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        v[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes()); // init_size
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn loads_elf_and_returns_its_entry() {
        let mem = guest_mem(32 << 20);
        let code = [0xf4u8, 0xeb, 0xfd, 0x90]; // hlt; jmp -3; nop
        let image = tiny_elf(0x100_0000, 0x100_0001, &code);
        let entry = load_kernel(&mem, &mut temp_file(&image)).unwrap();
        assert_eq!(entry, GuestAddress(0x100_0001));
        let mut loaded = [0u8; 4];
        mem.read_slice(&mut loaded, GuestAddress(0x100_0000))
            .unwrap();
        assert_eq!(loaded, code);
    }

    #[test]
    fn elf_below_himem_is_rejected() {
        let mem = guest_mem(32 << 20);
        let image = tiny_elf(0x1000, 0x1000, &[0xf4]);
        let err = load_kernel(&mem, &mut temp_file(&image)).unwrap_err();
        assert!(
            matches!(err, ArchError::KernelLoad { format: "ELF", .. }),
            "{err}"
        );
    }

    #[test]
    fn loads_bzimage_at_1mib_with_64bit_entry_and_keeps_header() {
        let mem = guest_mem(32 << 20);
        let payload: Vec<u8> = (0..0x400u32).map(|i| i as u8).collect();
        let image = tiny_bzimage(0x020f, XLF_KERNEL_64, &payload);
        let entry = load_kernel(&mem, &mut temp_file(&image)).unwrap();
        assert_eq!(entry, GuestAddress(HIMEM_START + 0x200));
        let mut loaded = vec![0u8; payload.len()];
        mem.read_slice(&mut loaded, GuestAddress(HIMEM_START))
            .unwrap();
        assert_eq!(loaded, payload);
        let hdr: setup_header = mem
            .read_obj(GuestAddress(ZERO_PAGE_START + SETUP_HEADER_OFFSET))
            .unwrap();
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.init_size }, 0x40_0000);
    }

    #[test]
    fn bzimage_without_64bit_entry_is_rejected() {
        let mem = guest_mem(32 << 20);
        let image = tiny_bzimage(0x020f, 0, &[0u8; 16]);
        let err = load_kernel(&mem, &mut temp_file(&image)).unwrap_err();
        assert!(matches!(err, ArchError::BzImageNot64Bit { .. }), "{err}");
    }

    #[test]
    fn unknown_format_names_both() {
        let mem = guest_mem(32 << 20);
        let err = load_kernel(&mem, &mut temp_file(&[0u8; 2048])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ELF") && msg.contains("bzImage"), "{msg}");
    }

    #[test]
    fn initrd_goes_page_aligned_at_top_of_low_ram() {
        let mem = guest_mem(64 << 20);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (addr, size) = load_initrd(&mem, &mut temp_file(&data)).unwrap();
        assert_eq!(size, data.len());
        assert_eq!(addr.0 % PAGE_SIZE, 0);
        assert!(addr.0 + size as u64 <= 64 << 20);
        assert!(addr.0 + size as u64 > (64 << 20) - PAGE_SIZE);
        let mut back = vec![0u8; size];
        mem.read_slice(&mut back, addr).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn initrd_respects_bzimage_initrd_addr_max() {
        let mem = guest_mem(64 << 20);
        let mut image = tiny_bzimage(0x020f, XLF_KERNEL_64, &[0u8; 512]);
        image[0x22c..0x230].copy_from_slice(&0x01ff_ffffu32.to_le_bytes()); // initrd_addr_max
        load_kernel(&mem, &mut temp_file(&image)).unwrap();
        let (addr, size) = load_initrd(&mem, &mut temp_file(&[7u8; 5000])).unwrap();
        assert!(addr.0 + size as u64 <= 0x0200_0000);
        assert!(addr.0 + size as u64 > 0x0200_0000 - PAGE_SIZE);
    }

    #[test]
    fn initrd_too_big_is_an_error() {
        let mem = guest_mem(2 << 20);
        let data = vec![1u8; 3 << 20];
        let err = load_initrd(&mem, &mut temp_file(&data)).unwrap_err();
        assert!(matches!(err, ArchError::InitrdTooBig { .. }), "{err}");
    }
}
