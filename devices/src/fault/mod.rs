//! Fault injection: rules (from a TOML file or the control API) that make disks fail, stall,
//! tear, corrupt or lose requests, make NICs drop, delay, duplicate, corrupt or reorder
//! frames, and reset vsock connections.
//!
//! - [`rules`]: the file format, parsed with serde and validated (one error line per mistake);
//! - [`FaultEngine`]: the rules in force, per-rule counters, the seed and the JSON-lines log,
//!   shared by the devices and the control API (rules change at runtime);
//! - per-device hooks that know which device they serve and which request or frame number
//!   they see: [`BlockFaults`] (asked by the block backend's fault layer,
//!   [`crate::virtio::block::backend::FaultLayer`]), [`NetFaults`], [`VsockFaults`];
//! - every decision is a pure function of (seed, rule, match number) ([`draw`]), so the same
//!   seed and request sequence give the same faults.
//!
//! With no rules, a hook costs one atomic load per request.

mod action;
mod block;
pub mod draw;
mod engine;
mod log;
mod net;
pub mod rules;
#[cfg(test)]
mod tests;
mod vsock;

pub use block::{BitFlip, BlockFault, BlockFaults, BlockOp};
pub use draw::{Draw, Stream};
pub use engine::{FaultEngine, FaultReport, RuleCounters, RuleReport};
pub use log::{read_log, FaultLog, FaultRecord};
pub use net::{NetDirection, NetFault, NetFaults};
pub use rules::{FaultRules, RulesError};
pub use vsock::VsockFaults;
