//! Cluster specs: the TOML files that describe networks, nodes and scenarios (see
//! `orchestrator/SPEC.md`), their parsing with exact error places, and their validation.

mod error;
mod fault;
mod graph;
mod locate;
mod model;
mod scenario;
pub mod schema;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{Problem, ProblemKind, SpecError};
pub use fault::{FaultRule, FaultTarget};
pub use graph::{find_cycles, Cycle};
pub use locate::FieldPath;
pub use model::{
    ClusterSpec, DiskCache, DiskFormat, DiskSpec, NetworkSpec, NodeNetwork, NodeSpec,
    ReadinessCheck, Role,
};
pub use scenario::{ScenarioSpec, Step};
pub use units::{parse_duration, parse_size, UnitError};

/// The built-in reference cluster: three etcd members, an NFS server, an nginx worker
/// serving from NFS and an haproxy gateway, with the `fresh-smoke` scenario.
pub const REFERENCE_TOML: &str = include_str!("reference.toml");

/// Name used in messages about the built-in reference spec.
pub const REFERENCE_NAME: &str = "<built-in>/reference.toml";

impl ClusterSpec {
    /// Reads, parses and validates the spec at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClusterSpec, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str(&text, &path.display().to_string())
    }

    /// Parses and validates spec text; `file` names it in error messages.
    pub fn from_str(text: &str, file: &str) -> Result<ClusterSpec, SpecError> {
        let locator = locate::Locator::new(text);
        let spec: ClusterSpec = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            SpecError::Syntax {
                file: file.to_string(),
                line: locator.line_of(span.start),
                column: locator.column_of(span.start),
                field: locator.path_at(&span).to_string(),
                message: e.message().trim().to_string(),
            }
        })?;
        let problems = validate::validate(&spec, file, &locator);
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(SpecError::Invalid {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// The built-in reference cluster ([`REFERENCE_TOML`]), parsed and validated.
    pub fn reference() -> ClusterSpec {
        // The embedded text is checked by the tests; failing here is a build defect.
        Self::from_str(REFERENCE_TOML, REFERENCE_NAME)
            .unwrap_or_else(|e| panic!("built-in reference spec is invalid: {e}"))
    }
}
