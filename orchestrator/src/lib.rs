//! Kiln orchestrator: guest images, the emulated KVM host, host detection, cluster specs,
//! boot planning and the userspace network switch.

pub mod cache;
pub mod emulated_host;
pub mod host_kind;
pub mod image;
pub mod plan;
pub mod spec;
pub mod switch;
