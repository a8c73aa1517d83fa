use std::ffi::OsString;
use std::path::PathBuf;

use crate::cluster::*;
use crate::spec::ClusterSpec;

const SPEC: &str = r#"
[[network]]
name = "net0"
subnet = "10.0.0.0/24"
[[network]]
name = "back"
subnet = "192.168.7.0/24"

[[node]]
name = "db"
role = "storage"
image = "img"
cpus = 2
memory = 768
disks = [{ name = "data", size = "4G", cache = "writeback" }, { size = "512M" }]
networks = [{ network = "net0", address = "10.0.0.11/24" }, { network = "back", address = "192.168.7.5/24" }]
"#;

fn image(rootfs: bool) -> NodeImage {
    NodeImage {
        kernel: "/img/vmlinuz".into(),
        initrd: Some("/img/initrd.img".into()),
        rootfs: rootfs.then(|| PathBuf::from("/img/rootfs.ext4")),
        cmdline: "console=ttyS0 panic=-1 ".into(),
    }
}

fn launch(rootfs: bool, index: u16) -> (NodeLaunch, NodePaths) {
    let spec = ClusterSpec::from_str(SPEC, "test.toml").unwrap();
    let paths = NodePaths::in_dir("/run/k/db");
    let launch = NodeLaunch::from_spec(&spec.nodes[0], index, &image(rootfs), &paths, |n| {
        PathBuf::from(format!("/run/k/net-{n}.sock"))
    })
    .unwrap();
    (launch, paths)
}

#[test]
fn vmm_arguments_carry_every_device_in_guest_order() {
    let (launch, paths) = launch(true, 4);
    let args: Vec<OsString> = launch.vmm_args(&paths);
    let expected: Vec<&str> = vec![
        "--kernel",
        "/img/vmlinuz",
        "--initrd",
        "/img/initrd.img",
        "--cmdline",
        "console=ttyS0 panic=-1 kiln.hostname=db kiln.ip=10.0.0.11/24",
        "--mem",
        "768",
        "--cpus",
        "2",
        "--disk",
        "/run/k/db/root.img,id=root",
        "--disk",
        "/run/k/db/disk0.img,id=data,cache=writeback",
        "--disk",
        "/run/k/db/disk1.img",
        "--net",
        "switch=/run/k/net-net0.sock,mac=02:6b:69:00:04:00",
        "--net",
        "switch=/run/k/net-back.sock,mac=02:6b:69:00:04:01",
        "--vsock",
        "cid=7,uds=/run/k/db/vsock.sock",
        "--serial",
        "/run/k/db/serial.log",
        "--api-sock",
        "/run/k/db/api.sock",
        "--fault-log",
        "/run/k/db/faults.jsonl",
    ];
    assert_eq!(
        args,
        expected.iter().map(OsString::from).collect::<Vec<_>>()
    );
    assert_eq!(launch.disks[1].create_size, Some(4 << 30));
    assert_eq!(launch.disks[2].create_size, Some(512 << 20));
    assert_eq!(launch.disks[0].create_size, None);
}

#[test]
fn every_argument_parses_with_vmms_own_option_parsers() {
    let (launch, paths) = launch(true, 300);
    let args = launch.vmm_args(&paths);
    let value = |flag: &str| -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_string_lossy().into_owned())
            .collect()
    };
    let disks: Vec<vmm::config::DiskConfig> =
        value("--disk").iter().map(|d| d.parse().unwrap()).collect();
    let caches: Vec<_> = disks.iter().map(|d| d.cache).collect();
    use devices::virtio::block::backend::CacheMode::{WriteBack, WriteThrough};
    assert_eq!(caches, [WriteThrough, WriteBack, WriteThrough]);
    let nets: Vec<vmm::config::NetConfig> =
        value("--net").iter().map(|n| n.parse().unwrap()).collect();
    assert_eq!(nets[1].mac, Some(mac_for(300, 1)));
    let vsock: vmm::config::VsockConfig = value("--vsock")[0].parse().unwrap();
    assert_eq!(vsock.cid, 303);
}

#[test]
fn image_without_root_disk_starts_disks_at_the_data_disks() {
    let (launch, _) = launch(false, 0);
    assert_eq!(launch.disks.len(), 2);
    assert_eq!(launch.disks[0].id.as_deref(), Some("data"));
}

#[test]
fn macs_and_cids_are_unique_per_node_and_interface() {
    let mut seen = std::collections::HashSet::new();
    for node in [0u16, 1, 255, 256, 65535] {
        assert!(cid_for(node) >= 3);
        for nic in [0u8, 1, 7] {
            let mac = mac_for(node, nic);
            assert_eq!(mac[0] & 0b11, 0b10, "locally administered unicast");
            assert!(seen.insert(mac), "{mac:?} repeated");
        }
    }
}

#[test]
fn cmdline_without_network_has_only_the_hostname() {
    assert_eq!(guest_cmdline("", "n1", None), "kiln.hostname=n1");
    assert_eq!(
        guest_cmdline("console=ttyS0", "n1", Some("10.1.0.2/16")),
        "console=ttyS0 kiln.hostname=n1 kiln.ip=10.1.0.2/16"
    );
}

#[test]
fn too_many_cpus_and_long_disk_names_are_refused_with_the_node_named() {
    let mut spec = ClusterSpec::from_str(SPEC, "test.toml").unwrap();
    let paths = NodePaths::in_dir("/r/db");
    spec.nodes[0].cpus = 300;
    let err = NodeLaunch::from_spec(&spec.nodes[0], 0, &image(true), &paths, |_| "/s".into())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node db") && err.contains("cpus = 300"),
        "{err}"
    );
    spec.nodes[0].cpus = 1;
    spec.nodes[0].disks[0].name = Some("x".repeat(21));
    let err = NodeLaunch::from_spec(&spec.nodes[0], 0, &image(true), &paths, |_| "/s".into())
        .unwrap_err()
        .to_string();
    assert!(err.contains("20 bytes"), "{err}");
}

#[test]
fn spec_disk_and_network_names_map_to_vmm_indices() {
    // With a root disk, the spec's first data disk is the vmm's disk 1.
    let (with_root, _) = launch(true, 0);
    assert_eq!(with_root.disk_index("root"), Some(0));
    assert_eq!(with_root.disk_index("data"), Some(1));
    assert_eq!(with_root.disk_index("nosuch"), None);
    assert_eq!(with_root.nic_index("net0"), Some(0));
    assert_eq!(with_root.nic_index("back"), Some(1));
    assert_eq!(with_root.nic_index("nosuch"), None);
    // Without one, it is disk 0, and there is no root disk to name.
    let (without_root, _) = launch(false, 0);
    assert_eq!(without_root.disk_index("data"), Some(0));
    assert_eq!(without_root.disk_index("root"), None);
    // Fault log device names read back in spec terms; unnamed and unknown ones stay.
    assert_eq!(with_root.device_label("disk1"), "data (disk1)");
    assert_eq!(with_root.device_label("disk0"), "root (disk0)");
    assert_eq!(with_root.device_label("disk2"), "disk2");
    assert_eq!(with_root.device_label("nic1"), "back (nic1)");
    assert_eq!(with_root.device_label("vsock"), "vsock");
    assert_eq!(with_root.device_label("disk9"), "disk9");
}
