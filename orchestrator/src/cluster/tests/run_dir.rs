use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;

use crate::cluster::*;

#[test]
fn layout_and_removal() {
    let parent = tempfile::tempdir().unwrap();
    let mut run = RunDir::create_in(parent.path(), false).unwrap();
    let root = run.path().to_path_buf();
    assert!(root.starts_with(parent.path()) && root.is_dir());
    assert_eq!(run.switch_socket("net0"), root.join("net-net0.sock"));
    let n = run.create_node("node01").unwrap();
    assert!(n.dir.is_dir());
    assert_eq!(n.api_sock, root.join("node01/api.sock"));
    assert_eq!(n.vsock_sock, root.join("node01/vsock.sock"));
    assert_eq!(n.serial_log, root.join("node01/serial.log"));
    assert_eq!(n.data_disk(1), root.join("node01/disk1.img"));
    run.finish().unwrap();
    assert!(!root.exists());
    run.finish().unwrap();
}

#[test]
fn kept_directory_loses_only_its_sockets() {
    let parent = tempfile::tempdir().unwrap();
    let root;
    {
        let run = RunDir::create_in(parent.path(), true).unwrap();
        root = run.path().to_path_buf();
        let n = run.create_node("a").unwrap();
        std::fs::write(&n.serial_log, "log").unwrap();
        let _api = UnixListener::bind(&n.api_sock).unwrap();
        let _announce = UnixListener::bind(n.dir.join("vsock.sock_10701")).unwrap();
        let _switch = UnixListener::bind(run.switch_socket("net0")).unwrap();
    } // dropped: finish()
    assert!(root.join("a/serial.log").is_file());
    for p in ["a/api.sock", "a/vsock.sock_10701", "net-net0.sock"] {
        assert!(!root.join(p).exists(), "{p} left behind");
    }
}

#[test]
fn node_socket_files_include_vsock_port_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let n = NodePaths::in_dir(dir.path());
    let _l = UnixListener::bind(dir.path().join("vsock.sock_10701")).unwrap();
    let _a = UnixListener::bind(&n.api_sock).unwrap();
    n.remove_sockets().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_socket())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn too_deep_run_directory_is_refused_before_anything_starts() {
    let parent = tempfile::tempdir().unwrap();
    let deep = parent.path().join("d".repeat(90));
    let run = RunDir::at(&deep, false).unwrap();
    let err = run.create_node("node01").unwrap_err().to_string();
    assert!(err.contains("more than the 107"), "{err}");
    assert!(err.contains("shorter run directory"), "{err}");
}

#[test]
fn run_directory_with_option_separators_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let err = RunDir::at(&parent.path().join("a,b"), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("','"), "{err}");
}

#[test]
fn explicit_run_directory_must_be_empty() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(parent.path().join("x"), "").unwrap();
    let err = RunDir::at(parent.path(), false).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn disks_are_copied_sparse_and_created_sparse() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let image_root = dir.path().join("rootfs.ext4");
    let f = std::fs::File::create(&image_root).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image_root)
            .unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"superblock").unwrap();
    }
    let launch = NodeLaunch {
        name: "n".into(),
        index: 0,
        kernel: "/k".into(),
        initrd: None,
        cmdline: String::new(),
        memory_mib: 64,
        cpus: 1,
        disks: vec![
            LaunchDisk {
                path: dir.path().join("root.img"),
                id: None,
                create_size: None,
                format: None,
                writeback: false,
            },
            LaunchDisk {
                path: dir.path().join("disk0.img"),
                id: None,
                create_size: Some(1 << 30),
                format: None,
                writeback: false,
            },
            LaunchDisk {
                path: dir.path().join("disk1.img"),
                id: Some("etcd".into()),
                create_size: Some(1 << 30),
                format: Some(crate::spec::DiskFormat::Ext4),
                writeback: true,
            },
        ],
        nics: vec![],
    };
    let image = NodeImage {
        kernel: "/k".into(),
        initrd: None,
        rootfs: Some(image_root.clone()),
        cmdline: String::new(),
    };
    prepare_disks(&launch, &image).unwrap();
    let root = std::fs::metadata(dir.path().join("root.img")).unwrap();
    assert_eq!(root.len(), 64 << 20);
    assert!(
        root.blocks() * 512 < 8 << 20,
        "root copy is not sparse: {} blocks",
        root.blocks()
    );
    let content = std::fs::read(dir.path().join("root.img")).unwrap();
    assert_eq!(&content[1 << 20..(1 << 20) + 10], b"superblock");
    let data = std::fs::metadata(dir.path().join("disk0.img")).unwrap();
    assert_eq!(data.len(), 1 << 30);
    assert!(data.blocks() * 512 < 1 << 20, "data disk is not sparse");
    // The formatted disk is ext4, labelled with its name, and still mostly sparse.
    let formatted = dir.path().join("disk1.img");
    let fs = std::fs::metadata(&formatted).unwrap();
    assert_eq!(fs.len(), 1 << 30);
    assert!(fs.blocks() * 512 < 64 << 20, "{} blocks", fs.blocks());
    let bytes = std::fs::read(&formatted).unwrap();
    // ext4 superblock at 1024: magic 0xEF53 at +56, volume label at +120.
    assert_eq!(&bytes[1024 + 56..1024 + 58], &[0x53, 0xef]);
    assert_eq!(&bytes[1024 + 120..1024 + 124], b"etcd");
    // A restarted node keeps its disks: preparing again changes nothing.
    std::fs::write(dir.path().join("disk0.img"), "used").unwrap();
    prepare_disks(&launch, &image).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("disk0.img")).unwrap(),
        b"used"
    );
}

#[test]
fn proc_net_unix_parsing_finds_abstract_ports() {
    let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
        0000000000000000: 00000002 00000000 00000000 0002 01 12345 @kiln-net-42-0\n\
        0000000000000000: 00000002 00000000 00010000 0001 01 12346 /run/x.sock\n\
        0000000000000000: 00000002 00000000 00000000 0002 01 12347\n";
    assert!(super::super::wiring::abstract_bound(table, "kiln-net-42-0"));
    assert!(!super::super::wiring::abstract_bound(
        table,
        "kiln-net-42-1"
    ));
    assert!(!super::super::wiring::abstract_bound(table, "kiln-net-4-0"));
    assert_eq!(vmm_port_name(42, 1), "kiln-net-42-1");
}

#[test]
fn fault_log_is_read_from_a_mark_in_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let paths = NodePaths::in_dir(dir.path());
    let launch = NodeLaunch {
        name: "n".into(),
        index: 0,
        kernel: "/k".into(),
        initrd: None,
        cmdline: String::new(),
        memory_mib: 64,
        cpus: 1,
        disks: vec![],
        nics: vec![],
    };
    let node = Node::new(
        launch,
        paths.clone(),
        "/no/vmm",
        vec![],
        vec![],
        agent_runtime().unwrap(),
    );
    // No log yet: nothing, from anywhere.
    assert_eq!(node.fault_log_len(), 0);
    assert!(node.faults_since(0).is_empty());
    let line = |request: u64| {
        format!(
            "{{\"time\":1.5,\"device\":\"disk0\",\"op\":\"flush\",\"request\":{request},\"rule\":\"block[0]\",\"action\":\"eio\"}}\n"
        )
    };
    std::fs::write(&paths.fault_log, line(1)).unwrap();
    let mark = node.fault_log_len();
    // A second record, and a third still being written: only whole lines count.
    let mut more = line(2);
    more.push_str(&line(3)[..20]);
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&paths.fault_log)
        .unwrap()
        .write_all(more.as_bytes())
        .unwrap();
    let since: Vec<u64> = node.faults_since(mark).iter().map(|r| r.request).collect();
    assert_eq!(since, [2]);
    let all: Vec<u64> = node.faults_since(0).iter().map(|r| r.request).collect();
    assert_eq!(all, [1, 2]);
}
