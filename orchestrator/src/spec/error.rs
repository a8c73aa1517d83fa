//! Errors from reading and validating cluster specs. Every message names the file, the line
//! and the field, and says what to change.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read cluster spec {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The text is not valid TOML, or does not have the spec's shape (unknown or missing
    /// fields, wrong types).
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Syntax {
        /// File name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The field at that place, e.g. `node[2].role`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The spec parsed but is inconsistent; every problem found is listed.
    #[error("{} problem{} in {file}:\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, ProblemList(problems))]
    Invalid {
        /// File name as given.
        file: String,
        /// The problems, in document order.
        problems: Vec<Problem>,
    },
}

/// Which rule a spec broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// Two nodes, networks, scenarios or disks share a name.
    DuplicateName,
    /// A name that is empty or has characters outside `a-z 0-9 -`.
    BadName,
    /// A reference to a node that does not exist.
    UnknownNode,
    /// Nodes that depend on each other in a circle.
    DependencyCycle,
    /// A reference to a network that does not exist (or that a node is not attached to).
    UnknownNetwork,
    /// A `fault` step names a disk its node does not have.
    UnknownDisk,
    /// A `fault` step's rule that the vmm's rule parser refuses.
    BadFaultRule,
    /// A subnet or address that does not parse.
    BadAddress,
    /// An address outside its network's subnet (or its network/broadcast address).
    AddressOutsideSubnet,
    /// Two interfaces with the same address on one network.
    DuplicateAddress,
    /// A disk size that does not parse or is out of range.
    BadSize,
    /// A duration that does not parse.
    BadDuration,
    /// Any other value out of range (cpus, memory, ports, paths, probabilities).
    BadValue,
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name as given.
    pub file: String,
    /// 1-based line of the field (or of its table, when the field is absent).
    pub line: usize,
    /// The field, e.g. `node[4].depends_on[1]`.
    pub field: String,
    /// Which rule was broken.
    pub kind: ProblemKind,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}
