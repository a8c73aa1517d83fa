//! Real `vmm` processes running tiny hand-made guests (they run on PVM and hardware KVM
//! alike): node lifecycle, control API, switch wiring, and teardown after a panic or SIGINT.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::vm_support::*;
use crate::cluster::*;
use crate::spec::ClusterSpec;
use crate::switch::Switch;

const BOOT: Duration = Duration::from_secs(60);

fn tiny_image(kernel: PathBuf) -> NodeImage {
    NodeImage {
        kernel,
        initrd: None,
        rootfs: None,
        cmdline: "console=ttyS0".into(),
    }
}

#[test]
fn node_starts_freezes_thaws_crashes_restarts_and_stops() {
    if !kvm_or_skip("node lifecycle on a tiny guest") {
        return;
    }
    let vmm = vmm_binary();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create_in(dir.path(), false).unwrap();
    let kernel = tiny_kernel(dir.path(), "kiln tiny guest up\n");
    let switch = Arc::new(Switch::start(run.switch_socket("net0"), 1).unwrap());
    let spec = ClusterSpec::from_str(
        r#"
[[network]]
name = "net0"
subnet = "10.0.0.0/24"
[[node]]
name = "tiny1"
role = "worker"
image = "tiny"
memory = 64
networks = [{ network = "net0", address = "10.0.0.2/24" }]
"#,
        "tiny.toml",
    )
    .unwrap();
    let paths = run.create_node("tiny1").unwrap();
    let launch = NodeLaunch::from_spec(&spec.nodes[0], 0, &tiny_image(kernel), &paths, |n| {
        run.switch_socket(n)
    })
    .unwrap();
    let mut node = Node::new(
        launch,
        paths.clone(),
        &vmm,
        vec![],
        vec![("net0".into(), Arc::clone(&switch))],
        agent_runtime().unwrap(),
    );

    node.start().unwrap();
    let pid = node.pid().unwrap();
    assert_eq!(
        node.wait_for_console_text("tiny guest up", BOOT).unwrap(),
        "kiln tiny guest up"
    );
    // The switch names the vmm's port after the node, at the address the vmm really bound.
    let port = switch
        .ports()
        .into_iter()
        .find(|p| p.name == "tiny1")
        .unwrap();
    assert_eq!(port.peer, format!("@kiln-net-{pid}-0"));
    assert!(net_ports_of(pid));
    let err = node.start().unwrap_err().to_string();
    assert!(err.contains("already running"), "{err}");

    node.freeze().unwrap();
    assert_eq!(node.vm_state().unwrap(), "paused");
    node.thaw().unwrap();
    assert_eq!(node.vm_state().unwrap(), "running");

    node.crash().unwrap();
    assert!(!node.is_running());
    assert!(processes_mentioning(paths.dir.to_str().unwrap()).is_empty());
    assert!(
        sockets_under(&paths.dir).is_empty(),
        "{:?}",
        sockets_under(&paths.dir)
    );
    assert!(
        switch.ports().iter().all(|p| p.name != "tiny1"),
        "port not detached"
    );
    let err = node.freeze().unwrap_err().to_string();
    assert!(err.contains("node tiny1 is not running"), "{err}");
    // The test API fails at once on a node that is not running, not at the end of a wait.
    node.timeouts.ready = Duration::from_secs(120);
    let t = std::time::Instant::now();
    let err = node
        .wait_until_succeeds("true", Duration::from_secs(120))
        .unwrap_err()
        .to_string();
    assert!(err.contains("node tiny1 is not running"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "waited {:?}",
        t.elapsed()
    );

    // Restart: a new vmm, re-attached; the console cursor skips the first boot's output.
    node.start().unwrap();
    let pid2 = node.pid().unwrap();
    assert_ne!(pid, pid2);
    node.wait_for_console_text("tiny guest up", BOOT).unwrap();
    let log = std::fs::read_to_string(&paths.serial_log).unwrap();
    assert_eq!(log.matches("kiln tiny guest up").count(), 2, "{log}");
    let port = switch
        .ports()
        .into_iter()
        .find(|p| p.name == "tiny1")
        .unwrap();
    assert_eq!(port.peer, format!("@kiln-net-{pid2}-0"));

    // restart = stop (the API shutdown phase: a tiny guest has no agent) + start.
    node.restart().unwrap();
    let pid3 = node.pid().unwrap();
    assert_ne!(pid2, pid3);
    node.wait_for_console_text("tiny guest up", BOOT).unwrap();
    assert!(!net_ports_of(pid2));

    assert_eq!(node.stop().unwrap(), StopPhase::ApiShutdown);
    assert!(!node.is_running());
    assert!(!net_ports_of(pid3));
    assert!(sockets_under(&paths.dir).is_empty());
    assert_eq!(node.stop().unwrap(), StopPhase::NotRunning);
}

#[test]
fn fault_rules_reach_the_vmm_by_spec_name_survive_restarts_and_a_power_cut_stops_it() {
    if !kvm_or_skip("fault rules and power cut on a tiny guest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create_in(dir.path(), false).unwrap();
    let kernel = tiny_kernel(dir.path(), "kiln tiny guest up\n");
    let switch = Arc::new(Switch::start(run.switch_socket("net0"), 1).unwrap());
    let spec = ClusterSpec::from_str(
        r#"
[[network]]
name = "net0"
subnet = "10.0.0.0/24"
[[node]]
name = "disky"
role = "storage"
image = "tiny"
memory = 64
disks = [{ size = "1M" }, { name = "data", size = "1M", cache = "writeback" }]
networks = [{ network = "net0", address = "10.0.0.2/24" }]
"#,
        "tiny.toml",
    )
    .unwrap();
    let paths = run.create_node("disky").unwrap();
    let image = tiny_image(kernel);
    let launch =
        NodeLaunch::from_spec(&spec.nodes[0], 0, &image, &paths, |n| run.switch_socket(n)).unwrap();
    prepare_disks(&launch, &image).unwrap();
    let mut node = Node::new(
        launch,
        paths.clone(),
        vmm_binary(),
        vec![],
        vec![("net0".into(), Arc::clone(&switch))],
        agent_runtime().unwrap(),
    );
    let data = crate::spec::FaultTarget::Disk("data".into());
    let parse = |target: &crate::spec::FaultTarget, json: serde_json::Value| {
        let serde_json::Value::Object(map) = json else {
            unreachable!()
        };
        crate::spec::FaultRule::parse(target, &map).unwrap()
    };

    // A rule added while the node is stopped is in force from its start, on the vmm's
    // index of the disk the spec names (the second disk: index 1, no root disk here).
    let placed = node
        .add_fault(
            &data,
            parse(&data, serde_json::json!({"op": "flush", "action": "eio"})),
            Some(9),
        )
        .unwrap();
    assert_eq!(placed, "block[0] on data (disk1)");
    node.start().unwrap();
    node.wait_for_console_text("tiny guest up", BOOT).unwrap();
    let report = node.fault_report().unwrap();
    assert_eq!(report["seed"], 9, "{report}");
    assert_eq!(report["block"][0]["disk"], 1, "{report}");
    assert_eq!(report["block"][0]["op"], "flush", "{report}");
    let file = std::fs::read_to_string(&paths.faults_file).unwrap();
    assert!(
        file.contains("seed = 9") && file.contains("[[block]]"),
        "{file}"
    );
    assert!(paths.fault_log.is_file(), "the vmm opens its fault log");

    // Added while running: the vmm gets the whole set at once.
    let net = crate::spec::FaultTarget::Network("net0".into());
    let placed = node
        .add_fault(
            &net,
            parse(
                &net,
                serde_json::json!({"dir": "tx", "action": "drop", "probability": 0.5}),
            ),
            None,
        )
        .unwrap();
    assert_eq!(placed, "net[0] on net0 (nic0)");
    let report = node.fault_report().unwrap();
    assert_eq!(report["net"][0]["nic"], 0, "{report}");
    assert_eq!(report["block"].as_array().unwrap().len(), 1, "{report}");
    // A rule of the wrong kind for its device is refused and changes nothing.
    let wrong = parse(&data, serde_json::json!({"action": "eio"}));
    let err = node.add_fault(&net, wrong, None).unwrap_err().to_string();
    assert!(err.contains("does not fit network net0"), "{err}");
    assert_eq!(node.fault_rules().block.len(), 1);

    // The rules survive a crash and restart (a faulty disk stays faulty)...
    node.crash().unwrap();
    node.start().unwrap();
    let report = node.fault_report().unwrap();
    assert_eq!(report["block"][0]["disk"], 1, "{report}");
    assert_eq!(report["net"][0]["action"], "drop", "{report}");
    // ...until cleared, which keeps the seed (a power cut's `keep` draws from it).
    node.clear_faults().unwrap();
    let report = node.fault_report().unwrap();
    assert_eq!(report["seed"], 9, "{report}");
    assert!(
        report["block"].as_array().is_none_or(Vec::is_empty),
        "{report}"
    );

    // A power cut ends the vmm (status 0) and stops the node; start boots it again.
    let cut = node.power_cut(0.0).unwrap();
    assert!(
        cut.cached_disks.is_none() || cut.cached_disks == Some(1),
        "{cut:?}"
    );
    assert!(!node.is_running());
    assert!(sockets_under(&paths.dir).is_empty());
    let log = std::fs::read_to_string(&paths.vmm_log).unwrap();
    assert!(log.contains("power cut by the host"), "{log}");
    let err = node.power_cut(0.0).unwrap_err().to_string();
    assert!(err.contains("not running"), "{err}");
    node.start().unwrap();
    node.wait_for_console_text("tiny guest up", BOOT).unwrap();
    // Cleared rules start without them; the seed stays with the node.
    let file = std::fs::read_to_string(&paths.faults_file).unwrap();
    assert_eq!(file.trim(), "seed = 9");
    assert_eq!(node.stop().unwrap(), StopPhase::ApiShutdown);
}

#[test]
fn a_vmm_that_cannot_start_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create_in(dir.path(), false).unwrap();
    let paths = run.create_node("bad").unwrap();
    let launch = NodeLaunch {
        name: "bad".into(),
        index: 0,
        kernel: dir.path().join("no-such-kernel"),
        initrd: None,
        cmdline: String::new(),
        memory_mib: 64,
        cpus: 1,
        disks: vec![],
        nics: vec![],
    };
    let mut node = Node::new(
        launch,
        paths,
        vmm_binary(),
        vec![],
        vec![],
        agent_runtime().unwrap(),
    );
    let err = node.start().unwrap_err().to_string();
    assert!(err.contains("node bad: vmm exited"), "{err}");
    assert!(err.contains("no-such-kernel"), "{err}");
    assert!(!node.is_running());
}

const CHILD_MODE: &str = "KILN_TEST_CLUSTER_CHILD";
const CHILD_DIR: &str = "KILN_TEST_CLUSTER_DIR";

const TWO_NODES: &str = r#"
[[network]]
name = "net0"
subnet = "10.0.0.0/24"
[[node]]
name = "a"
role = "worker"
image = "tiny"
memory = 64
networks = [{ network = "net0", address = "10.0.0.2/24" }]
[[node]]
name = "b"
role = "worker"
image = "tiny"
memory = 64
networks = [{ network = "net0", address = "10.0.0.3/24" }]
depends_on = ["a"]
"#;

/// Runs only as a child of the teardown tests: starts a two-node cluster of tiny guests,
/// says so on stdout, then panics or waits for a signal as the parent asks.
#[test]
#[ignore = "run by cluster_teardown_* tests as a child process"]
fn child_cluster() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let spec = ClusterSpec::from_str(TWO_NODES, "two.toml").unwrap();
    let images = HashMap::from([("tiny".to_string(), tiny_image(tiny_kernel(&dir, "up\n")))]);
    let mut options = ClusterOptions::new(vmm_binary());
    options.run_dir = Some(dir.join("run"));
    if mode == "sigint" {
        install_teardown_on_signals().unwrap();
    }
    let mut cluster = Cluster::new(&spec, &images, options).unwrap();
    cluster.start_all().unwrap();
    cluster
        .node("b")
        .unwrap()
        .wait_for_console_text("up", BOOT)
        .unwrap();
    println!("CHILD READY");
    if mode == "panic" {
        panic!("deliberate panic with a running cluster");
    }
    std::thread::sleep(Duration::from_secs(300));
    panic!("no signal came");
}

/// Starts `child_cluster` in `mode`, waits for its cluster, returns the child and the
/// pids of its vmm processes.
fn spawn_child(mode: &str, dir: &Path) -> (Child, Vec<u32>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cluster::tests::vm::child_cluster",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = stdout
        .by_ref()
        .any(|l| l.is_ok_and(|l| l.contains("CHILD READY")));
    // Keep draining so the child never writes into a closed pipe.
    std::thread::spawn(move || stdout.for_each(drop));
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    assert!(ready, "the child never started its cluster");
    let run = dir.join("run");
    let vmms = processes_mentioning(run.to_str().unwrap());
    assert_eq!(
        vmms.len(),
        2,
        "expected two vmm processes for {}",
        run.display()
    );
    assert_eq!(sockets_under(&run).len(), 5, "{:?}", sockets_under(&run));
    (
        Child {
            process: child,
            stderr,
        },
        vmms,
    )
}

struct Child {
    process: std::process::Child,
    stderr: std::thread::JoinHandle<String>,
}

impl Child {
    /// Waits for the child; its exit status and stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.process.wait().unwrap();
        (status, self.stderr.join().unwrap())
    }
}

fn assert_nothing_left(dir: &Path, vmms: &[u32]) {
    let run = dir.join("run");
    assert!(
        processes_mentioning(run.to_str().unwrap()).is_empty(),
        "a vmm survived"
    );
    for pid in vmms {
        assert!(
            !net_ports_of(*pid),
            "vmm {pid}'s switch port is still bound"
        );
    }
    assert!(sockets_under(&run).is_empty(), "{:?}", sockets_under(&run));
    assert!(!run.exists(), "run directory {} left behind", run.display());
}

#[test]
fn cluster_teardown_after_a_panic_leaves_no_process_or_socket() {
    if !kvm_or_skip("cluster teardown after a panic") {
        return;
    }
    vmm_binary();
    let dir = tempfile::tempdir().unwrap();
    let (child, vmms) = spawn_child("panic", dir.path());
    let (status, stderr) = child.finish();
    assert!(
        !status.success(),
        "the child test should have failed by panicking"
    );
    assert!(
        stderr.contains("deliberate panic with a running cluster"),
        "{stderr}"
    );
    assert_nothing_left(dir.path(), &vmms);
}

#[test]
fn cluster_teardown_on_sigint_leaves_no_process_or_socket() {
    if !kvm_or_skip("cluster teardown on SIGINT") {
        return;
    }
    vmm_binary();
    let dir = tempfile::tempdir().unwrap();
    let (child, vmms) = spawn_child("sigint", dir.path());
    let pid = rustix::process::Pid::from_raw(child.process.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let (status, stderr) = child.finish();
    assert_eq!(status.code(), Some(130), "{status}: {stderr}");
    assert!(stderr.contains("signal 2: stopping every VM"), "{stderr}");
    assert_nothing_left(dir.path(), &vmms);
}

#[test]
fn vmms_die_with_an_orchestrator_killed_by_sigkill() {
    if !kvm_or_skip("vmm death with the orchestrator") {
        return;
    }
    vmm_binary();
    let dir = tempfile::tempdir().unwrap();
    let (child, vmms) = spawn_child("sigkill", dir.path());
    let pid = rustix::process::Pid::from_raw(child.process.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let (status, _) = child.finish();
    assert_eq!(status.code(), None, "{status}");
    // Nothing can clean up after SIGKILL; the kernel ends the vmms (PR_SET_PDEATHSIG).
    let run = dir.path().join("run");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !processes_mentioning(run.to_str().unwrap()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "vmms {vmms:?} outlived the orchestrator"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
