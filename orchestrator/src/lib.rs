//! Kiln orchestrator: guest images, the emulated KVM host, host detection.

pub mod cache;
pub mod emulated_host;
pub mod host_kind;
pub mod image;
