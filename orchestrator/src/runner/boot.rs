//! The `boot` step with a live line per node: waves from `depends_on`, the nodes of a
//! wave started one after the other and awaited in parallel (agent, setup script,
//! readiness checks); the next wave starts when every node of this one is ready.

use std::time::Instant;

use crate::cluster::{BootTimes, Cluster, ClusterError};

use super::progress::Progress;

/// Boots every node that is not running; returns where each booted node's time went.
pub fn boot_with_progress(
    cluster: &mut Cluster,
    progress: &Progress,
) -> Result<Vec<BootTimes>, ClusterError> {
    let mut ready = Vec::new();
    let waves = cluster.waves().to_vec();
    for (w, wave) in waves.iter().enumerate() {
        progress.line(&format!(
            "wave {}/{}: {}",
            w + 1,
            waves.len(),
            wave.join(" ")
        ));
        let mut started = Vec::new();
        for name in wave {
            let node = cluster.node_mut(name)?;
            if !node.is_running() {
                node.start()?;
                started.push(name.clone());
            }
        }
        let cluster = &*cluster;
        let started = &started;
        let results: Vec<Result<BootTimes, ClusterError>> = std::thread::scope(|s| {
            let handles: Vec<_> = started
                .iter()
                .map(|name| {
                    s.spawn(move || {
                        let live = progress.start(format!("{name} booting"));
                        let t = Instant::now();
                        let ready = cluster.node(name).and_then(|n| {
                            n.wait_ready_reporting(n.timeouts.ready, &|p| live.set(p))?;
                            Ok(n.boot_times().unwrap_or_else(|| BootTimes {
                                node: name.clone(),
                                ready: t.elapsed().as_secs_f64(),
                                ..BootTimes::default()
                            }))
                        });
                        match ready {
                            Ok(times) => {
                                live.finish("ok", Some("ready"));
                                Ok(times)
                            }
                            Err(e) => {
                                live.finish("FAIL", Some(&first_line(&e.to_string())));
                                // Fail fast: the rest of the wave would wait out its timeout.
                                for other in started.iter().filter(|o| *o != name) {
                                    if let Ok(n) = cluster.node(other) {
                                        n.abort();
                                    }
                                }
                                Err(e)
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for r in results {
            ready.push(r?);
        }
    }
    Ok(ready)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}
