//! orchestrator: cluster specs, boot planning and the userspace network switch.

pub mod plan;
pub mod spec;
pub mod switch;
