//! A whole cluster: one switch per network, the nodes, boot waves, network faults by node
//! name, and teardown that leaves no process or socket behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{ClusterError, Result};
use super::launch::{NodeImage, NodeLaunch};
use super::node::{agent_runtime, Node, Timeouts};
use super::run_dir::{copy_root_disk, create_data_disk, format_data_disk, Retain, RunDir};
use crate::spec::ClusterSpec;
use crate::switch::{Switch, SwitchConfig, SwitchHandle};

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `vmm` binary.
    pub vmm: PathBuf,
    /// Run directory; a new one under `<cache>/run/` when `None`.
    pub run_dir: Option<PathBuf>,
    /// What stays of the run directory at the end, also when a signal ends the process
    /// (sockets never do).
    pub retain: Retain,
    /// Seed of the switches' loss decisions.
    pub seed: u64,
    /// Time limits of every node.
    pub timeouts: Timeouts,
    /// Copy each image's root disk into the run directory once and make the nodes' copies
    /// from there: for images on a slow share (9p inside the emulated host), where one read
    /// of the image beats one per node.
    pub stage_root_disks: bool,
}

impl ClusterOptions {
    /// Defaults around a `vmm` binary: fresh run directory, removed at the end, seed 0.
    pub fn new(vmm: impl Into<PathBuf>) -> ClusterOptions {
        ClusterOptions {
            vmm: vmm.into(),
            run_dir: None,
            retain: Retain::Nothing,
            seed: 0,
            timeouts: Timeouts::default(),
            stage_root_disks: false,
        }
    }
}

/// A running cluster. Dropping it (also while panicking) tears it down.
pub struct Cluster {
    // Field order is drop order: VMs first, then switches, then the directory.
    nodes: Vec<Node>,
    switches: Vec<(String, Arc<SwitchHandle>)>,
    waves: Vec<Vec<String>>,
    run_dir: RunDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("run_dir", &self.run_dir.path())
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Prepares a cluster of a validated spec: run directory, disks, one switch per network.
    /// `images` maps each image name used by the spec to its files. No node runs yet.
    pub fn new(
        spec: &ClusterSpec,
        images: &HashMap<String, NodeImage>,
        options: ClusterOptions,
    ) -> Result<Cluster> {
        let waves = crate::plan::boot_waves(spec)?;
        let mut run_dir = match &options.run_dir {
            Some(p) => RunDir::at(p, false)?,
            None => RunDir::create_default(false)?,
        };
        run_dir.set_retain(options.retain);
        let mut switches = Vec::new();
        for net in &spec.networks {
            let path = run_dir.switch_socket(&net.name);
            super::run_dir::check_socket_path(&path)?;
            let config = SwitchConfig {
                seed: options.seed,
                ..SwitchConfig::default()
            };
            let handle =
                Switch::start_with(&path, config).map_err(|source| ClusterError::Switch {
                    network: net.name.clone(),
                    source,
                })?;
            switches.push((net.name.clone(), Arc::new(handle)));
        }
        let staged;
        let images = if options.stage_root_disks {
            staged = stage_root_disks(run_dir.path(), spec, images)?;
            &staged
        } else {
            images
        };
        let rt = agent_runtime()?;
        let mut nodes = Vec::new();
        for (index, node_spec) in spec.nodes.iter().enumerate() {
            let image = images
                .get(&node_spec.image)
                .ok_or_else(|| ClusterError::MissingImage {
                    node: node_spec.name.clone(),
                    image: node_spec.image.clone(),
                })?;
            let index = u16::try_from(index).map_err(|_| ClusterError::BadNode {
                node: node_spec.name.clone(),
                reason: "a cluster holds at most 65536 nodes".into(),
            })?;
            let paths = run_dir.create_node(&node_spec.name)?;
            let launch = NodeLaunch::from_spec(node_spec, index, image, &paths, |n| {
                run_dir.switch_socket(n)
            })?;
            prepare_disks(&launch, image)?;
            let node_switches = launch
                .nics
                .iter()
                .filter_map(|nic| switches.iter().find(|(n, _)| *n == nic.network).cloned())
                .collect();
            let mut node = Node::new(
                launch,
                paths,
                &options.vmm,
                node_spec.ready.clone(),
                node_switches,
                Arc::clone(&rt),
            );
            node.timeouts = options.timeouts;
            node.set_setup(Some(setup_script(spec, node_spec)));
            nodes.push(node);
        }
        Ok(Cluster {
            nodes,
            switches,
            waves,
            run_dir,
        })
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// Keep the run directory at the end (or not).
    pub fn set_keep(&mut self, keep: bool) {
        self.run_dir.set_keep(keep);
    }

    /// The boot waves (`plan::boot_waves`).
    pub fn waves(&self) -> &[Vec<String>] {
        &self.waves
    }

    /// Every node, in spec order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        let i = self.index_of(name)?;
        Ok(&self.nodes[i])
    }

    /// The node named `name`, for lifecycle operations.
    pub fn node_mut(&mut self, name: &str) -> Result<&mut Node> {
        let i = self.index_of(name)?;
        Ok(&mut self.nodes[i])
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name() == name)
            .ok_or_else(|| ClusterError::UnknownNode {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(Node::name).collect()
    }

    /// The switch of `network` (stopped at teardown even if the handle is kept).
    pub fn switch(&self, network: &str) -> Option<Arc<SwitchHandle>> {
        self.switches
            .iter()
            .find(|(n, _)| n == network)
            .map(|(_, s)| Arc::clone(s))
    }

    /// Boots every node that is not running, wave by wave: the nodes of a wave start one
    /// after the other, then are awaited in parallel; the next wave starts when all are
    /// ready. A node that fails stops the boot with its error.
    pub fn boot(&mut self) -> Result<()> {
        for wave in self.waves.clone() {
            let mut members = Vec::new();
            for name in &wave {
                let i = self.index_of(name)?;
                let node = &mut self.nodes[i];
                if !node.is_running() {
                    node.start()?;
                    members.push(i);
                }
            }
            let nodes = &self.nodes;
            let results: Vec<Result<()>> = std::thread::scope(|s| {
                let handles: Vec<_> = members
                    .iter()
                    .map(|&i| s.spawn(move || nodes[i].wait_ready()))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            results.into_iter().collect::<Result<Vec<()>>>()?;
        }
        Ok(())
    }

    /// Starts every node that is not running, in spec order, without waiting for guests.
    pub fn start_all(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.start()?;
            }
        }
        Ok(())
    }

    fn check(&self, names: &[&str]) -> Result<()> {
        names.iter().try_for_each(|n| self.index_of(n).map(drop))
    }

    fn each_switch(&self, f: impl Fn(&SwitchHandle)) {
        for (_, s) in &self.switches {
            f(s);
        }
    }

    /// Cuts every link between `a` and `b`, both ways, on every network.
    pub fn partition(&self, a: &str, b: &str) -> Result<()> {
        self.partition_groups(&[a], &[b])
    }

    /// Cuts every link between each node of `side_a` and each of `side_b`, both ways.
    pub fn partition_groups(&self, side_a: &[&str], side_b: &[&str]) -> Result<()> {
        self.check(side_a)?;
        self.check(side_b)?;
        for a in side_a {
            for b in side_b {
                self.each_switch(|s| s.partition(a, b));
            }
        }
        Ok(())
    }

    /// Drops frames from `from` to `to` only.
    pub fn block_link(&self, from: &str, to: &str) -> Result<()> {
        self.check(&[from, to])?;
        self.each_switch(|s| s.block(from, to));
        Ok(())
    }

    /// Cuts every link of `node` (NixOS `block`): partitions it from every other node.
    pub fn block(&self, node: &str) -> Result<()> {
        self.check(&[node])?;
        for other in self.names().into_iter().filter(|o| *o != node) {
            self.each_switch(|s| s.partition(node, other));
        }
        Ok(())
    }

    /// Restores every link of `node` (NixOS `unblock`); loss and delay stay.
    pub fn unblock(&self, node: &str) -> Result<()> {
        self.check(&[node])?;
        for other in self.names().into_iter().filter(|o| *o != node) {
            self.each_switch(|s| s.heal(node, other));
        }
        Ok(())
    }

    /// Removes every partition and block (loss and delay stay).
    pub fn heal(&self) {
        self.each_switch(SwitchHandle::heal_all);
    }

    /// Sets loss (0.0-1.0, seeded) and delay on the direction `from -> to`; `None` clears.
    pub fn set_link(
        &self,
        from: &str,
        to: &str,
        loss: Option<f64>,
        delay: Option<Duration>,
    ) -> Result<()> {
        self.check(&[from, to])?;
        for (network, s) in &self.switches {
            s.set_loss(from, to, loss.unwrap_or(0.0))
                .map_err(|source| ClusterError::Switch {
                    network: network.clone(),
                    source,
                })?;
            s.set_delay(from, to, delay.unwrap_or(Duration::ZERO));
        }
        Ok(())
    }

    /// Stops every VM (SIGTERM, SIGKILL after a few seconds), stops the switches and removes
    /// the run directory (or only its sockets when kept). Dropping the cluster does the same.
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            node.terminate(Duration::from_secs(5));
        }
        for (network, s) in &self.switches {
            s.stop().map_err(|source| ClusterError::Switch {
                network: network.clone(),
                source,
            })?;
        }
        self.run_dir.finish()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            tracing::warn!(error = %e, "cluster teardown failed");
        }
    }
}

/// The script a node runs once at first boot: `KILN_NODE`/`KILN_IP` exported, every node's
/// name in `/etc/hosts`, then the spec's own `setup`.
pub fn setup_script(spec: &ClusterSpec, node: &crate::spec::NodeSpec) -> String {
    let first_ip = |n: &crate::spec::NodeSpec| {
        n.networks
            .first()
            .and_then(|net| net.address().ok())
            .map(|a| a.addr().to_string())
    };
    let mut script = format!(
        "export KILN_NODE='{}' KILN_IP='{}'\n",
        node.name,
        first_ip(node).unwrap_or_default()
    );
    script.push_str("cat >> /etc/hosts <<'KILN_HOSTS'\n");
    for n in &spec.nodes {
        if let Some(ip) = first_ip(n) {
            script.push_str(&format!("{ip} {}\n", n.name));
        }
    }
    script.push_str("KILN_HOSTS\n");
    if let Some(own) = &node.setup {
        script.push_str(own);
        script.push('\n');
    }
    script
}

/// A copy of `images` whose root disks (of the images `spec` uses) were copied into
/// `run_dir` as `base-<image>.img` (removed with the nodes' disks).
fn stage_root_disks(
    run_dir: &std::path::Path,
    spec: &ClusterSpec,
    images: &HashMap<String, NodeImage>,
) -> Result<HashMap<String, NodeImage>> {
    let mut staged = images.clone();
    for (name, image) in staged.iter_mut() {
        let used_by = spec.nodes.iter().find(|n| n.image == *name);
        if let (Some(node), Some(root)) = (used_by, &image.rootfs) {
            let local = run_dir.join(format!("base-{name}.img"));
            super::run_dir::copy_root_disk(&node.name, root, &local)?;
            image.rootfs = Some(local);
        }
    }
    Ok(staged)
}

/// Creates a node's disks: the root disk copied from the image, data disks sparse.
/// Existing files are kept (a restarted node keeps its disks).
pub fn prepare_disks(launch: &NodeLaunch, image: &NodeImage) -> Result<()> {
    for disk in &launch.disks {
        if disk.path.exists() {
            continue;
        }
        match (disk.create_size, &image.rootfs) {
            (Some(size), _) => {
                create_data_disk(&launch.name, &disk.path, size)?;
                if let Some(format) = disk.format {
                    let label = disk.id.as_deref().unwrap_or("data");
                    format_data_disk(&launch.name, &disk.path, format, label)?;
                }
            }
            (None, Some(root)) => copy_root_disk(&launch.name, root, &disk.path)?,
            (None, None) => {
                return Err(ClusterError::Disk {
                    node: launch.name.clone(),
                    path: disk.path.clone(),
                    reason: "the image has no root disk to copy".into(),
                })
            }
        }
    }
    Ok(())
}
