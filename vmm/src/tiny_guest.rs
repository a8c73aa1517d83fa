//! Tiny hand-assembled guests: a handful of x86-64 instructions wrapped in a static ELF
//! kernel image. They boot through the same path as Linux (ELF load, 64-bit entry with paging
//! on) and run on any KVM, including PVM hosts where a Linux kernel cannot. Used by Kiln's own
//! tests and benchmarks, and handy for embedders' smoke tests.
//!
//! ```
//! use vmm::tiny_guest::Asm;
//! let mut a = Asm::new();
//! a.print("hello\n").i8042_reset();
//! let elf = a.into_elf();
//! assert_eq!(&elf[..4], b"\x7fELF");
//! ```

/// Where the guest code is loaded and entered (1 MiB, the start of high memory).
pub const LOAD_ADDR: u64 = 0x10_0000;

/// A tiny x86-64 assembler for the instructions these guests need.
#[derive(Default, Clone)]
pub struct Asm {
    code: Vec<u8>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raw machine code.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }

    /// `mov dx, port`
    pub fn mov_dx(&mut self, port: u16) -> &mut Self {
        self.bytes(&[0x66, 0xba]).bytes(&port.to_le_bytes())
    }

    /// `mov al, v`
    pub fn mov_al(&mut self, v: u8) -> &mut Self {
        self.bytes(&[0xb0, v])
    }

    /// `mov eax, v`
    pub fn mov_eax(&mut self, v: u32) -> &mut Self {
        self.bytes(&[0xb8]).bytes(&v.to_le_bytes())
    }

    /// `out dx, al`
    pub fn out_dx_al(&mut self) -> &mut Self {
        self.bytes(&[0xee])
    }

    /// `out dx, ax` (16-bit port write)
    pub fn out_dx_ax(&mut self) -> &mut Self {
        self.bytes(&[0x66, 0xef])
    }

    /// `out dx, eax` (32-bit port write)
    pub fn out_dx_eax(&mut self) -> &mut Self {
        self.bytes(&[0xef])
    }

    /// `mov eax, [addr]` with a 64-bit absolute address (MMIO read).
    pub fn load32(&mut self, addr: u64) -> &mut Self {
        self.bytes(&[0xa1]).bytes(&addr.to_le_bytes())
    }

    /// `mov [addr], eax` with a 64-bit absolute address (MMIO write).
    pub fn store32(&mut self, addr: u64) -> &mut Self {
        self.bytes(&[0xa3]).bytes(&addr.to_le_bytes())
    }

    /// Writes `text` to COM1 byte by byte.
    pub fn print(&mut self, text: &str) -> &mut Self {
        self.mov_dx(0x3f8);
        for b in text.bytes() {
            self.mov_al(b).out_dx_al();
        }
        self
    }

    /// Writes EAX to COM1 as eight lowercase hex digits (clobbers EAX, EBX, ECX, DX).
    pub fn print_eax_hex(&mut self) -> &mut Self {
        // mov ebx, eax; mov ecx, 8; mov dx, 0x3f8
        self.bytes(&[0x89, 0xc3, 0xb9, 8, 0, 0, 0]).mov_dx(0x3f8);
        // loop: rol ebx, 4; mov eax, ebx; and eax, 0xf; cmp al, 10; jb +2; add al, 39; add al, '0'; out dx, al; dec ecx; jnz loop
        let start = self.code.len();
        self.bytes(&[
            0xc1, 0xc3, 0x04, 0x89, 0xd8, 0x83, 0xe0, 0x0f, 0x3c, 0x0a, 0x72, 0x02,
        ])
        .bytes(&[0x04, 39, 0x04, b'0', 0xee, 0xff, 0xc9]);
        let rel = start as i64 - (self.code.len() as i64 + 2);
        self.bytes(&[0x75, rel as i8 as u8])
    }

    /// Resets through the keyboard controller: `out 0x64, 0xfe`.
    pub fn i8042_reset(&mut self) -> &mut Self {
        self.bytes(&[0xb0, 0xfe, 0xe6, 0x64])
    }

    /// Powers off through the ACPI sleep control register (S5 + SLP_EN at port 0x600).
    pub fn acpi_poweroff(&mut self) -> &mut Self {
        self.mov_dx(0x600).mov_al((5 << 2) | 0x20).out_dx_al()
    }

    /// Resets through the ACPI reset register (0x0f to port 0x602).
    pub fn acpi_reset(&mut self) -> &mut Self {
        self.mov_dx(0x602).mov_al(0x0f).out_dx_al()
    }

    /// `cli; hlt` then spin on `hlt` forever.
    pub fn halt_forever(&mut self) -> &mut Self {
        self.bytes(&[0xfa, 0xf4, 0xeb, 0xfd])
    }

    /// Loops forever writing `byte` to COM1.
    pub fn spin_printing(&mut self, byte: u8) -> &mut Self {
        self.mov_dx(0x3f8).mov_al(byte).bytes(&[0xee, 0xeb, 0xfd])
    }

    /// Loads an empty IDT and executes `ud2`: the resulting fault cascade is a triple fault.
    pub fn triple_fault(&mut self) -> &mut Self {
        // lidt [rip+2]; jmp +10; .word 0; .quad 0; ud2
        self.bytes(&[0x0f, 0x01, 0x1d, 0x02, 0, 0, 0, 0xeb, 0x0a])
            .bytes(&[0; 10])
            .bytes(&[0x0f, 0x0b])
    }

    /// The code bytes so far.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// Wraps the code in a static ELF64 executable with one loadable segment at
    /// [`LOAD_ADDR`] whose entry point is the first instruction.
    pub fn into_elf(self) -> Vec<u8> {
        elf_image(&self.code, LOAD_ADDR)
    }
}

/// A minimal ELF64 x86-64 executable: header, one PT_LOAD program header, the code.
pub fn elf_image(code: &[u8], load_addr: u64) -> Vec<u8> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let off = EHDR + PHDR;
    let mut e = Vec::with_capacity(off as usize + code.len());
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"); // 64-bit, LE, v1
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    e.extend_from_slice(&(load_addr + off).to_le_bytes()); // entry
    e.extend_from_slice(&EHDR.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [EHDR as u16, PHDR as u16, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&7u32.to_le_bytes()); // RWX
    e.extend_from_slice(&0u64.to_le_bytes()); // file offset
    e.extend_from_slice(&load_addr.to_le_bytes()); // vaddr
    e.extend_from_slice(&load_addr.to_le_bytes()); // paddr
    let size = off + code.len() as u64;
    e.extend_from_slice(&size.to_le_bytes()); // filesz
    e.extend_from_slice(&size.to_le_bytes()); // memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    e.extend_from_slice(code);
    e
}
