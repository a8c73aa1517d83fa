//! Boot planning: the order nodes start in, from their `depends_on` edges.
//!
//! Nodes boot in waves. Wave 0 holds every node without dependencies; wave k holds every
//! node whose dependencies are all in earlier waves. Nodes in one wave may boot in parallel;
//! the next wave starts when all of them are ready. Within a wave nodes keep spec order,
//! so plans are deterministic.

use std::collections::HashMap;

use crate::spec::{find_cycles, ClusterSpec};

/// Why no boot order exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A node depends on a node that is not in the spec.
    #[error("node {node} depends on {dependency}, which is not defined; fix its depends_on")]
    UnknownDependency {
        /// The node.
        node: String,
        /// The missing dependency.
        dependency: String,
    },
    /// Nodes depend on each other in a circle.
    #[error("dependency cycle {0}; remove one of these depends_on entries")]
    Cycle(String),
}

/// The boot waves of `spec`, as node names.
pub fn boot_waves(spec: &ClusterSpec) -> Result<Vec<Vec<String>>, PlanError> {
    let index: HashMap<&str, usize> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    // Dependencies of each node as indices; a name listed twice counts once.
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(spec.nodes.len());
    for node in &spec.nodes {
        let mut d = Vec::new();
        for name in &node.depends_on {
            let &i = index
                .get(name.as_str())
                .ok_or_else(|| PlanError::UnknownDependency {
                    node: node.name.clone(),
                    dependency: name.clone(),
                })?;
            if !d.contains(&i) {
                d.push(i);
            }
        }
        deps.push(d);
    }
    let mut wave_of: Vec<Option<usize>> = vec![None; spec.nodes.len()];
    let mut waves: Vec<Vec<String>> = Vec::new();
    let mut placed = 0;
    while placed < spec.nodes.len() {
        let wave = waves.len();
        let ready: Vec<usize> = (0..spec.nodes.len())
            .filter(|&i| wave_of[i].is_none())
            .filter(|&i| {
                deps[i]
                    .iter()
                    .all(|&d| wave_of[d].is_some_and(|w| w < wave))
            })
            .collect();
        if ready.is_empty() {
            let cycle = find_cycles(spec)
                .first()
                .map(|c| c.describe())
                .unwrap_or_else(|| "among the remaining nodes".to_string());
            return Err(PlanError::Cycle(cycle));
        }
        for &i in &ready {
            wave_of[i] = Some(wave);
        }
        placed += ready.len();
        waves.push(
            ready
                .into_iter()
                .map(|i| spec.nodes[i].name.clone())
                .collect(),
        );
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{NodeSpec, Role};

    /// A spec built directly (not parsed), so plans of invalid graphs can be tested too.
    fn graph(edges: &[(&str, &[&str])]) -> ClusterSpec {
        ClusterSpec {
            name: None,
            networks: Vec::new(),
            scenarios: Vec::new(),
            nodes: edges
                .iter()
                .map(|(name, deps)| NodeSpec {
                    name: name.to_string(),
                    role: Role::Worker,
                    image: "img".into(),
                    cpus: 1,
                    memory: 128,
                    disks: Vec::new(),
                    networks: Vec::new(),
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    ready: Vec::new(),
                    setup: None,
                })
                .collect(),
        }
    }

    #[test]
    fn reference_cluster_boots_in_three_waves() {
        let waves = boot_waves(&ClusterSpec::reference()).unwrap();
        assert_eq!(
            waves,
            vec![
                vec!["node01", "node02", "node03", "node04"],
                vec!["node05"],
                vec!["node06"],
            ]
        );
    }

    #[test]
    fn diamond_joins_after_both_branches() {
        let spec = graph(&[("d", &["b", "c"]), ("c", &["a"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(
            boot_waves(&spec).unwrap(),
            vec![vec!["a"], vec!["c", "b"], vec!["d"]]
        );
    }

    #[test]
    fn uneven_branches_wait_for_the_longest() {
        let spec = graph(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &["a", "c"]),
            ("e", &[]),
        ]);
        assert_eq!(
            boot_waves(&spec).unwrap(),
            vec![vec!["a", "e"], vec!["b"], vec!["c"], vec!["d"]]
        );
    }

    #[test]
    fn duplicate_dependencies_count_once() {
        let spec = graph(&[("a", &[]), ("b", &["a", "a"])]);
        assert_eq!(boot_waves(&spec).unwrap(), vec![vec!["a"], vec!["b"]]);
    }

    #[test]
    fn cycles_are_rejected_and_named() {
        let spec = graph(&[("a", &[]), ("b", &["a", "d"]), ("c", &["b"]), ("d", &["c"])]);
        assert_eq!(
            boot_waves(&spec),
            Err(PlanError::Cycle("b -> d -> c -> b".into()))
        );
        let spec = graph(&[("a", &["a"])]);
        assert_eq!(boot_waves(&spec), Err(PlanError::Cycle("a -> a".into())));
    }

    #[test]
    fn unknown_dependencies_are_rejected() {
        let spec = graph(&[("a", &["ghost"])]);
        assert!(matches!(
            boot_waves(&spec),
            Err(PlanError::UnknownDependency { .. })
        ));
    }

    #[test]
    fn empty_spec_has_no_waves() {
        assert_eq!(boot_waves(&graph(&[])).unwrap(), Vec::<Vec<String>>::new());
    }
}
