//! End-to-end: stock Debian guests snapshotted once their agent is ready, the `vmm` killed,
//! and the snapshot restored in new processes — twice, side by side.
//!
//! After a restore the agent answers exec (over a new vsock socket: the guest got a transport
//! reset), the disk reads and writes, the network puts frames on the switch, timers fire
//! (`sleep` returns), and a second restore of the same snapshot beside the first does all of
//! that too, on its own copy of the disk and its own switch.
//!
//! On a host whose /dev/kvm cannot boot Linux (PVM here) each test re-runs itself inside the
//! emulated KVM host; on hardware KVM it runs directly. Figures are printed.

mod e2e;

use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::guest::{Guest, GuestSpec, Scratch};
use e2e::say;

const MARKER: &[u8] = b"KILN-E2E-SNAPSHOT-MARKER-91c2";
/// The MAC the vmm gives the first network device when none is set.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x4b, 0x4c, 0x00];

async fn sh(guest: &mut Guest, agent: &agent::Client, cmd: impl Into<String>) -> agent::ExecOutput {
    let run = agent.exec_buffered(agent::ExecRequest::shell(cmd));
    guest.within(120, "agent exec", run).await.unwrap()
}

/// A switch port the test reads frames from.
fn switch(path: &Path) -> UnixDatagram {
    let s = UnixDatagram::bind(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Waits for a frame from the guest's MAC on `switch`.
fn frame_from_guest(switch: &UnixDatagram) {
    let mut frame = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let n = switch
            .recv(&mut frame)
            .expect("a frame from the guest on the switch socket");
        if n >= 14 && frame[6..12] == GUEST_MAC {
            return;
        }
    }
    panic!("no frame from the guest's MAC within 60 s");
}

/// Pauses `guest`, snapshots it into `snap` and reports the figures.
fn snapshot(guest: &mut Guest, snap: &Path, what: &str) {
    let t = Instant::now();
    let r = guest.api(r#"{"op":"pause"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let r = guest.api(&format!(
        r#"{{"op":"snapshot","dir":"{}"}}"#,
        snap.display()
    ));
    assert_eq!(r["ok"], true, "{r}");
    say(&format!(
        "e2e figure: {what} snapshot: {} bytes on disk, {} ms in vmm, {:.2} s with pause",
        r["snapshot"]["bytes"],
        r["snapshot"]["ms"],
        t.elapsed().as_secs_f64()
    ));
}

/// Everything a restored guest must still do. `disk` is the file behind the raw guest disk
/// `dev` (which holds the marker at its start).
async fn check_restored(
    guest: &mut Guest,
    dev: &str,
    disk: &Path,
    switch: Option<&UnixDatagram>,
    tag: &str,
) -> Duration {
    let agent = guest.agent(Duration::from_secs(120)).await;
    let ready = guest.started.elapsed();
    let out = sh(guest, &agent, "echo restored").await;
    assert_eq!(out.stdout, b"restored\n", "{tag}: {out:?}");

    // Timers fire: sleep returns, and takes about as long as asked.
    let t = Instant::now();
    let out = sh(guest, &agent, "sleep 1 && echo slept").await;
    assert_eq!(out.stdout, b"slept\n", "{tag}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{tag}: sleep 1 took {:?}",
        t.elapsed()
    );

    // The disk reads ...
    let out = sh(guest, &agent, format!("head -c {} {dev}", MARKER.len())).await;
    assert_eq!(out.stdout, MARKER, "{tag}");
    // ... and writes, through to the host's file.
    let word = format!("written-by-{tag}");
    let out = sh(
        guest,
        &agent,
        format!(
            "printf '{word}' | dd of={dev} bs=512 seek=4096 conv=notrunc,fsync 2>/dev/null && echo ok"
        ),
    )
    .await;
    assert_eq!(out.stdout, b"ok\n", "{tag}: {out:?}");
    let mut back = vec![0u8; word.len()];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut back, 4096 * 512)
        .unwrap();
    assert_eq!(
        back,
        word.as_bytes(),
        "{tag}: the write did not reach the disk file"
    );

    // The network passes frames to the switch.
    if let Some(switch) = switch {
        let _ = sh(guest, &agent, "ping -c 1 -W 1 10.0.2.2").await;
        frame_from_guest(switch);
    }
    ready
}

#[test]
fn debian_minimal_restores_twice_with_agent_disk_net_and_timers() {
    let _serial = e2e::one_at_a_time();
    let Some(img) = e2e::prepare(
        "debian_minimal_restores_twice_with_agent_disk_net_and_timers",
        "debian-minimal",
    ) else {
        return;
    };
    let vmm = e2e::vmm_binary();
    let dir = Scratch::new("snap-minimal");
    let disk = marked_disk(&dir.0.join("disk.img"));
    let sw0 = switch(&dir.0.join("switch0.sock"));
    let spec = GuestSpec {
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: format!(
            "{} kiln.ip=10.0.2.15/24 kiln.hostname=e2e-snap",
            img.cmdline()
        ),
        mem_mib: 256,
        cpus: 1,
        disks: vec![disk.display().to_string()],
        nets: vec![format!("switch={}", dir.0.join("switch0.sock").display())],
        extra_args: Vec::new(),
    };
    let boot_dir = dir.0.join("boot");
    std::fs::create_dir_all(&boot_dir).unwrap();
    let mut guest = Guest::start(&vmm, &spec, &boot_dir);
    let snap = dir.0.join("snapshot");
    let boot_ready = e2e::runtime().block_on(async {
        let agent = guest.agent(Duration::from_secs(180)).await;
        let ready = guest.started.elapsed();
        let out = sh(&mut guest, &agent, "echo booted").await;
        assert_eq!(out.stdout, b"booted\n");
        ready
    });
    snapshot(&mut guest, &snap, "debian-minimal");
    // The second restore gets the disk as it was at the snapshot.
    let disk2 = dir.0.join("disk2.img");
    std::fs::copy(&disk, &disk2).unwrap();
    guest.kill();
    drop(sw0);

    let sw1_path = dir.0.join("switch1.sock");
    let sw1 = switch(&sw1_path);
    let net1 = format!("switch={}", sw1_path.display());
    let mut first = Guest::restore(
        &vmm,
        &snap,
        &dir.0.join("restore1"),
        &["--net".into(), net1],
    );
    let ready1 = e2e::runtime().block_on(check_restored(
        &mut first,
        "/dev/vda",
        &disk,
        Some(&sw1),
        "r1",
    ));

    let sw2_path = dir.0.join("switch2.sock");
    let sw2 = switch(&sw2_path);
    let mut second = Guest::restore(
        &vmm,
        &snap,
        &dir.0.join("restore2"),
        &[
            "--disk".into(),
            disk2.display().to_string(),
            "--net".into(),
            format!("switch={}", sw2_path.display()),
        ],
    );
    let ready2 = e2e::runtime().block_on(check_restored(
        &mut second,
        "/dev/vda",
        &disk2,
        Some(&sw2),
        "r2",
    ));
    // Both still answer, each with its own state.
    e2e::runtime().block_on(async {
        let a1 = first.agent(Duration::from_secs(60)).await;
        let out = sh(&mut first, &a1, "echo one > /tmp/who; cat /tmp/who").await;
        assert_eq!(out.stdout, b"one\n");
        let a2 = second.agent(Duration::from_secs(60)).await;
        let out = sh(&mut second, &a2, "cat /tmp/who 2>/dev/null || echo none").await;
        assert_eq!(out.stdout, b"none\n", "the forks share memory");
    });
    say(&format!(
        "e2e figure: debian-minimal: boot to agent {:.2} s; restore to agent {:.2} s (first), \
         {:.2} s (second, beside the first)",
        boot_ready.as_secs_f64(),
        ready1.as_secs_f64(),
        ready2.as_secs_f64()
    ));
}

#[test]
fn debian_node_restores_twice_with_systemd_agent_and_root_disk() {
    let _serial = e2e::one_at_a_time();
    let Some(img) = e2e::prepare(
        "debian_node_restores_twice_with_systemd_agent_and_root_disk",
        "debian-node",
    ) else {
        return;
    };
    let vmm = e2e::vmm_binary();
    let dir = Scratch::new("snap-node");
    let root = dir.0.join("root.ext4");
    let rootfs = img.rootfs().expect("debian-node has a root disk");
    sparse_copy(&rootfs, &root);
    // Raw writes go to a data disk, never to the mounted root.
    let data = marked_disk(&dir.0.join("data.img"));
    let sw0_path = dir.0.join("switch0.sock");
    let sw0 = switch(&sw0_path);
    let spec = GuestSpec {
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: format!("{} kiln.hostname=e2e-node-snap", img.cmdline()),
        mem_mib: 1024,
        cpus: 1,
        disks: vec![root.display().to_string(), data.display().to_string()],
        nets: vec![format!("switch={}", sw0_path.display())],
        extra_args: Vec::new(),
    };
    let boot_dir = dir.0.join("boot");
    std::fs::create_dir_all(&boot_dir).unwrap();
    let mut guest = Guest::start(&vmm, &spec, &boot_dir);
    let boot_ready = e2e::runtime().block_on(async {
        let agent = guest.agent(Duration::from_secs(300)).await;
        let ready = guest.started.elapsed();
        let mut waited = 0;
        while !guest
            .within(
                60,
                "systemctl is-active",
                agent.is_unit_active("multi-user.target"),
            )
            .await
            .unwrap()
        {
            waited += 1;
            assert!(waited < 600, "multi-user.target not active after 300 s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // An address on the first network device (the node image configures none by itself);
        // the restored guests keep it.
        let ip = "dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1); ip link set \"$dev\" up \
                  && ip addr add 10.0.2.15/24 dev \"$dev\" && echo \"$dev\"";
        let out = sh(&mut guest, &agent, ip).await;
        assert!(out.status.success(), "network set-up: {out:?}");
        // Settle the root file system so the disk copy below matches the snapshot.
        let out = sh(&mut guest, &agent, "sync && echo synced").await;
        assert_eq!(out.stdout, b"synced\n");
        ready
    });
    let snap = dir.0.join("snapshot");
    snapshot(&mut guest, &snap, "debian-node");
    let (root2, data2) = (dir.0.join("root2.ext4"), dir.0.join("data2.img"));
    sparse_copy(&root, &root2);
    sparse_copy(&data, &data2);
    guest.kill();
    drop(sw0);

    let sw1_path = dir.0.join("switch1.sock");
    let sw1 = switch(&sw1_path);
    let mut first = Guest::restore(
        &vmm,
        &snap,
        &dir.0.join("restore1"),
        &["--net".into(), format!("switch={}", sw1_path.display())],
    );
    let ready1 = e2e::runtime().block_on(async {
        let ready = check_restored(&mut first, "/dev/vdb", &data, Some(&sw1), "r1").await;
        let agent = first.agent(Duration::from_secs(60)).await;
        let data: Vec<u8> = (0..(256 << 10))
            .map(|i: u32| (i * 13 % 251) as u8)
            .collect();
        let put = agent.put_bytes(&data, "/root/after-restore.bin", 0o600);
        first.within(120, "file put", put).await.unwrap();
        let got = first.within(120, "file get", agent.get_bytes("/root/after-restore.bin"));
        assert_eq!(got.await.unwrap(), data);
        let active = agent.is_unit_active("multi-user.target");
        assert!(first.within(60, "systemctl", active).await.unwrap());
        ready
    });
    let sw2_path = dir.0.join("switch2.sock");
    let sw2 = switch(&sw2_path);
    let mut second = Guest::restore(
        &vmm,
        &snap,
        &dir.0.join("restore2"),
        &[
            "--disk".into(),
            root2.display().to_string(),
            "--disk".into(),
            data2.display().to_string(),
            "--net".into(),
            format!("switch={}", sw2_path.display()),
        ],
    );
    let ready2 = e2e::runtime().block_on(check_restored(
        &mut second,
        "/dev/vdb",
        &data2,
        Some(&sw2),
        "r2",
    ));
    say(&format!(
        "e2e figure: debian-node: boot to agent {:.2} s; restore to agent {:.2} s (first), \
         {:.2} s (second, beside the first)",
        boot_ready.as_secs_f64(),
        ready1.as_secs_f64(),
        ready2.as_secs_f64()
    ));
}

/// An 8 MiB raw disk starting with the marker.
fn marked_disk(path: &Path) -> PathBuf {
    let mut content = MARKER.to_vec();
    content.resize(8 << 20, 0);
    std::fs::write(path, content).unwrap();
    path.to_path_buf()
}

fn sparse_copy(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying {}", from.display());
}
