//! Consistency checks of a parsed spec. Every problem is collected (not just the first) with
//! the line and field it comes from.

mod network;
mod node;
mod steps;

use std::collections::HashSet;

use super::error::{Problem, ProblemKind};
use super::graph::find_cycles;
use super::locate::{FieldPath, Locator};
use super::ClusterSpec;

/// Collects problems with their places.
pub(super) struct Checker<'a> {
    file: &'a str,
    loc: &'a Locator<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, field: FieldPath, kind: ProblemKind, message: String) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: self.loc.line(&field),
            field: field.to_string(),
            kind,
            message,
        });
    }

    /// Reports names used more than once in `names` (the later uses), and bad names.
    fn unique_names<'n>(&mut self, what: &str, names: impl Iterator<Item = (FieldPath, &'n str)>) {
        let mut seen = HashSet::new();
        for (field, name) in names {
            if !is_good_name(name) {
                self.report(
                    field.clone(),
                    ProblemKind::BadName,
                    format!(
                        "{what} name {name:?} is not valid; use 1-63 lowercase letters, \
                         digits and '-', starting with a letter"
                    ),
                );
            }
            if !seen.insert(name) {
                self.report(
                    field,
                    ProblemKind::DuplicateName,
                    format!(
                        "{what} name {name:?} is used more than once; \
                         give each {what} its own name"
                    ),
                );
            }
        }
    }
}

fn is_good_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks `spec` (parsed from `text`); returns every problem, in document order.
pub fn validate(spec: &ClusterSpec, file: &str, loc: &Locator<'_>) -> Vec<Problem> {
    let mut c = Checker {
        file,
        loc,
        problems: Vec::new(),
    };
    let root = FieldPath::default();
    c.unique_names(
        "network",
        spec.networks
            .iter()
            .enumerate()
            .map(|(i, n)| (root.key("network").index(i).key("name"), n.name.as_str())),
    );
    c.unique_names(
        "node",
        spec.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (root.key("node").index(i).key("name"), n.name.as_str())),
    );
    c.unique_names(
        "scenario",
        spec.scenarios
            .iter()
            .enumerate()
            .map(|(i, s)| (root.key("scenario").index(i).key("name"), s.name.as_str())),
    );
    network::check_networks(&mut c, spec);
    network::check_interfaces(&mut c, spec);
    node::check_nodes(&mut c, spec);
    check_dependencies(&mut c, spec);
    steps::check_scenarios(&mut c, spec);
    c.problems.sort_by_key(|p| p.line);
    c.problems
}

fn check_dependencies(c: &mut Checker<'_>, spec: &ClusterSpec) {
    for (i, node) in spec.nodes.iter().enumerate() {
        let mut seen = HashSet::new();
        for (d, dep) in node.depends_on.iter().enumerate() {
            let field = FieldPath::default()
                .key("node")
                .index(i)
                .key("depends_on")
                .index(d);
            if spec.node(dep).is_none() {
                c.report(
                    field,
                    ProblemKind::UnknownNode,
                    format!(
                        "node {} depends on {dep:?}, which is not defined; known nodes: {}",
                        node.name,
                        node_names(spec)
                    ),
                );
            } else if !seen.insert(dep.as_str()) {
                c.report(
                    field,
                    ProblemKind::DuplicateName,
                    format!(
                        "{dep} is listed twice in depends_on of {}; keep one",
                        node.name
                    ),
                );
            }
        }
    }
    for cycle in find_cycles(spec) {
        let field = FieldPath::default()
            .key("node")
            .index(cycle.node)
            .key("depends_on")
            .index(cycle.entry);
        c.report(
            field,
            ProblemKind::DependencyCycle,
            format!(
                "dependency cycle {}; remove one of these depends_on entries",
                cycle.describe()
            ),
        );
    }
}

pub(super) fn node_names(spec: &ClusterSpec) -> String {
    names(spec.nodes.iter().map(|n| n.name.as_str()))
}

pub(super) fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<&str> = names.collect();
    if list.is_empty() {
        "(none)".into()
    } else {
        list.join(", ")
    }
}
