//! A whole `Cluster` of tiny guests: ports wired by node name, link faults by node name,
//! explicit teardown.

use std::collections::HashMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use super::vm_support::*;
use crate::cluster::*;
use crate::spec::ClusterSpec;

const SPEC: &str = r#"
[[network]]
name = "net0"
subnet = "10.0.0.0/24"
[[network]]
name = "net1"
subnet = "10.1.0.0/24"
[[node]]
name = "a"
role = "worker"
image = "tiny"
memory = 64
networks = [{ network = "net0", address = "10.0.0.2/24" }, { network = "net1", address = "10.1.0.2/24" }]
[[node]]
name = "b"
role = "worker"
image = "tiny"
memory = 64
networks = [{ network = "net0", address = "10.0.0.3/24" }]
depends_on = ["a"]
"#;

#[test]
fn ports_carry_node_names_and_faults_apply_by_name() {
    if !kvm_or_skip("cluster wiring on tiny guests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec::from_str(SPEC, "wiring.toml").unwrap();
    let image = NodeImage {
        kernel: tiny_kernel(dir.path(), "up\n"),
        initrd: None,
        rootfs: None,
        cmdline: "console=ttyS0".into(),
    };
    let images = HashMap::from([("tiny".to_string(), image)]);
    let mut options = ClusterOptions::new(vmm_binary());
    options.run_dir = Some(dir.path().join("run"));
    let mut cluster = Cluster::new(&spec, &images, options).unwrap();
    assert_eq!(
        cluster.waves(),
        [vec!["a".to_string()], vec!["b".to_string()]]
    );
    cluster.start_all().unwrap();
    let pid_a = cluster.node_mut("a").unwrap().pid().unwrap();
    let pid_b = cluster.node_mut("b").unwrap().pid().unwrap();

    let net0 = cluster.switch("net0").unwrap();
    let net1 = cluster.switch("net1").unwrap();
    let peer_of = |sw: &crate::switch::SwitchHandle, node: &str| {
        sw.ports()
            .into_iter()
            .find(|p| p.name == node)
            .map(|p| p.peer)
    };
    assert_eq!(peer_of(&net0, "a"), Some(format!("@kiln-net-{pid_a}-0")));
    assert_eq!(peer_of(&net1, "a"), Some(format!("@kiln-net-{pid_a}-1")));
    assert_eq!(peer_of(&net0, "b"), Some(format!("@kiln-net-{pid_b}-0")));
    assert_eq!(peer_of(&net1, "b"), None);

    // A broadcast from an extra port reaches both vmms' sockets: the predicted addresses are
    // the ones the vmms bound (a wrong address would count as dropped).
    let probe = UnixDatagram::bind_addr(
        &SocketAddr::from_abstract_name(format!("kiln-test-probe-{}", std::process::id())).unwrap(),
    )
    .unwrap();
    let frame = [
        [0xffu8; 6].as_slice(),
        &[2, 0, 0, 0, 0, 9],
        &[0x08, 0x06],
        &[0; 46],
    ]
    .concat();
    probe.send_to(&frame, net0.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while net0.stats("a").unwrap().frames_out + net0.stats("b").unwrap().frames_out < 2 {
        assert!(
            Instant::now() < deadline,
            "broadcast never delivered: {:?}",
            net0.ports()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(net0.stats("a").unwrap().dropped, 0);
    assert_eq!(net0.stats("b").unwrap().dropped, 0);

    cluster.partition("a", "b").unwrap();
    for sw in [&net0, &net1] {
        assert!(sw.link("a", "b").blocked && sw.link("b", "a").blocked);
    }
    cluster.heal();
    assert!(!net0.link("a", "b").blocked);
    cluster.block_link("b", "a").unwrap();
    assert!(net0.link("b", "a").blocked && !net0.link("a", "b").blocked);
    cluster.heal();
    cluster.block("b").unwrap();
    assert!(net0.link("a", "b").blocked && net0.link("b", "a").blocked);
    cluster.unblock("b").unwrap();
    assert!(!net0.link("a", "b").blocked);
    cluster
        .set_link("a", "b", Some(0.25), Some(Duration::from_millis(40)))
        .unwrap();
    assert_eq!(net0.link("a", "b").loss, 0.25);
    assert_eq!(net0.link("a", "b").delay, Duration::from_millis(40));
    cluster.set_link("a", "b", None, None).unwrap();
    assert!(net0.link("a", "b").is_clear());
    let err = cluster.partition("a", "ghost").unwrap_err().to_string();
    assert!(
        err.contains("no node named \"ghost\"; known nodes: a, b"),
        "{err}"
    );
    assert!(cluster.set_link("a", "b", Some(1.5), None).is_err());

    // A crashed node's ports go; a restarted node's come back under the same name.
    cluster.node_mut("a").unwrap().crash().unwrap();
    assert_eq!(peer_of(&net0, "a"), None);
    cluster.node_mut("a").unwrap().start().unwrap();
    let pid_a2 = cluster.node_mut("a").unwrap().pid().unwrap();
    assert_eq!(peer_of(&net0, "a"), Some(format!("@kiln-net-{pid_a2}-0")));

    let run = cluster.run_dir().to_path_buf();
    cluster.teardown().unwrap();
    assert!(processes_mentioning(run.to_str().unwrap()).is_empty());
    assert!(!run.exists());
    for pid in [pid_a2, pid_b] {
        assert!(!net_ports_of(pid));
    }
}

#[test]
fn a_node_without_an_agent_is_not_ready_and_the_error_says_what_was_awaited() {
    if !kvm_or_skip("readiness timeout on a tiny guest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec::from_str(SPEC, "ready.toml").unwrap();
    let image = NodeImage {
        kernel: tiny_kernel(dir.path(), "up\n"),
        initrd: None,
        rootfs: None,
        cmdline: String::new(),
    };
    let mut options = ClusterOptions::new(vmm_binary());
    options.run_dir = Some(dir.path().join("run"));
    options.timeouts.ready = Duration::from_secs(2);
    let mut cluster = Cluster::new(
        &spec,
        &HashMap::from([("tiny".to_string(), image)]),
        options,
    )
    .unwrap();
    let err = cluster.boot().unwrap_err().to_string();
    assert!(
        err.contains("node a: timed out")
            && err.contains("the agent to answer on vsock port 10700"),
        "{err}"
    );
    // The wave of b never started: a was not ready.
    assert!(!cluster.node_mut("b").unwrap().is_running());
    assert!(cluster.node_mut("a").unwrap().is_running());
}

#[test]
fn a_missing_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec::from_str(SPEC, "img.toml").unwrap();
    let mut options = ClusterOptions::new("/nonexistent/vmm");
    options.run_dir = Some(dir.path().join("run"));
    let err = Cluster::new(&spec, &HashMap::new(), options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node a uses image \"tiny\", which was not provided"),
        "{err}"
    );
    assert!(
        !dir.path().join("run").exists(),
        "run directory left behind"
    );
}

#[test]
fn a_held_cluster_answers_and_stop_tears_it_down() {
    use crate::hold::{client, HeldState, Listener};
    if !kvm_or_skip("held cluster on tiny guests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = ClusterSpec::from_str(SPEC, "held.toml").unwrap();
    let image = NodeImage {
        kernel: tiny_kernel(dir.path(), "up\n"),
        initrd: None,
        rootfs: None,
        cmdline: "console=ttyS0".into(),
    };
    let mut options = ClusterOptions::new(vmm_binary());
    options.run_dir = Some(dir.path().join("run"));
    options.retain = Retain::Logs;
    let mut cluster = Cluster::new(
        &spec,
        &HashMap::from([("tiny".to_string(), image)]),
        options,
    )
    .unwrap();
    cluster.start_all().unwrap();
    let run = cluster.run_dir().to_path_buf();
    let sock = dir.path().join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || crate::hold::serve(cluster, Listener::Unix(listener)));
    let state = HeldState {
        pid: std::process::id(),
        control: format!("unix:{}", sock.display()),
        nodes: vec!["a".into(), "b".into()],
    };

    let status = client::status(&state).unwrap();
    let states: Vec<(&str, &str)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("a", "running"), ("b", "running")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&client::request(&state, "logs a").unwrap()).contains("up") {
        assert!(
            Instant::now() < deadline,
            "node a's serial log never showed its output"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = client::request(&state, "logs ghost").unwrap_err();
    assert!(err.contains("no node \"ghost\"; nodes: a, b"), "{err}");

    client::request(&state, "stop").unwrap();
    server.join().unwrap().unwrap();
    assert!(processes_mentioning(run.to_str().unwrap()).is_empty());
    assert!(sockets_under(&run).is_empty(), "{:?}", sockets_under(&run));
    assert!(run.join("a").join("serial.log").is_file(), "logs stay");
    assert!(
        client::status(&state).is_err(),
        "nothing answers after stop"
    );
}
