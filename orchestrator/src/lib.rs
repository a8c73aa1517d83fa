//! Kiln orchestrator: guest images, the emulated KVM host, host detection, cluster specs,
//! boot planning, the userspace network switch and the node lifecycle.

pub mod cache;
pub mod check;
pub mod cluster;
pub mod emulated_host;
pub mod hold;
pub mod host_kind;
pub mod image;
pub mod plan;
pub mod programs;
pub mod runner;
pub mod spec;
pub mod switch;
pub mod vmm_binary;
