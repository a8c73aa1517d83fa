//! Architecture support: how a guest is laid out in memory and booted.
//!
//! Only x86_64 is supported; everything is re-exported from [`x86_64`] so callers write
//! `vmm::arch::load_kernel` and never name the architecture.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
