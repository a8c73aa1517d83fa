//! Tiny guests as PVH kernels, so QEMU boots the same code as Kiln.

/// The same code as a 32-bit PVH kernel for QEMU: an ELF note XEN_ELFNOTE_PHYS32_ENTRY points
/// at the code, which QEMU enters in 32-bit protected mode. The guest's instructions (port
/// I/O only) mean the same in 32- and 64-bit mode.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let load = 0x10_0000u32;
    // ELF32 header (52) + 2 program headers (32 each) + note (12 + 4 name + 4 desc) + code
    let note_off = 52 + 64;
    let code_off = note_off + 20;
    let entry = load + code_off as u32;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    for v in [2u16, 3] {
        e.extend_from_slice(&v.to_le_bytes()); // ET_EXEC, EM_386
    }
    for v in [1u32, entry, 52, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // version, entry, phoff, shoff, flags
    }
    for v in [52u16, 32, 2, 40, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    let size = (code_off + code.len()) as u32;
    for v in [1u32, 0, load, load, size, size, 7, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes()); // PT_LOAD
    }
    for v in [4u32, note_off as u32, 0, 0, 20, 20, 4, 4] {
        e.extend_from_slice(&v.to_le_bytes()); // PT_NOTE
    }
    for v in [4u32, 4, 18] {
        e.extend_from_slice(&v.to_le_bytes()); // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
    }
    e.extend_from_slice(b"Xen\0");
    e.extend_from_slice(&entry.to_le_bytes());
    e.extend_from_slice(code);
    e
}
