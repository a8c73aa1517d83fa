//! vmm

pub mod arch;
