//! Dependency cycles among nodes.

use std::collections::HashMap;

use super::ClusterSpec;

/// A dependency cycle, found at one `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The nodes around the cycle, the first repeated at the end: `a -> b -> a`.
    pub path: Vec<String>,
    /// Index of the node whose `depends_on` closes the cycle.
    pub node: usize,
    /// Index of that entry in its `depends_on`.
    pub entry: usize,
}

impl Cycle {
    /// `a -> b -> a`.
    pub fn describe(&self) -> String {
        self.path.join(" -> ")
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    OnPath,
    Done,
}

/// Every distinct cycle among known nodes, in a deterministic order (unknown names are
/// ignored here; validation reports them separately).
pub fn find_cycles(spec: &ClusterSpec) -> Vec<Cycle> {
    let index: HashMap<&str, usize> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut marks = vec![Mark::New; spec.nodes.len()];
    let mut cycles = Vec::new();
    for start in 0..spec.nodes.len() {
        if marks[start] == Mark::New {
            // Iterative depth-first search: (node, next depends_on entry to look at).
            let mut stack = vec![(start, 0usize)];
            marks[start] = Mark::OnPath;
            while let Some(&mut (node, ref mut entry)) = stack.last_mut() {
                let deps = &spec.nodes[node].depends_on;
                let Some(dep) = deps.get(*entry) else {
                    marks[node] = Mark::Done;
                    stack.pop();
                    continue;
                };
                let this_entry = *entry;
                *entry += 1;
                let Some(&next) = index.get(dep.as_str()) else {
                    continue;
                };
                match marks[next] {
                    Mark::New => {
                        marks[next] = Mark::OnPath;
                        stack.push((next, 0));
                    }
                    Mark::OnPath => {
                        let from = stack.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut path: Vec<String> = stack[from..]
                            .iter()
                            .map(|&(n, _)| spec.nodes[n].name.clone())
                            .collect();
                        path.push(spec.nodes[next].name.clone());
                        cycles.push(Cycle {
                            path,
                            node,
                            entry: this_entry,
                        });
                    }
                    Mark::Done => {}
                }
            }
        }
    }
    cycles
}
