//! End-to-end: Kiln's `vmm` boots stock Debian kernels with real devices.
//!
//! - `debian-minimal`: one disk (the guest reads a marker the test wrote), one network device
//!   on a switch socket (the guest's ARP request arrives there), vsock (the agent connection
//!   itself), separate stdout/stderr and exit codes, then power-off with `vmm` exiting 0.
//! - `debian-node`: the ext4 root disk boots systemd to `multi-user.target`; the agent runs
//!   commands and round-trips a file.
//! - Both boot two vCPUs (SMP through the MADT) and check the guest sees both.
//!
//! On a host whose /dev/kvm cannot boot Linux (PVM here) each test re-runs itself inside the
//! emulated KVM host; on hardware KVM it runs directly. Boot figures are printed.

mod e2e;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use e2e::guest::{Guest, GuestSpec, Scratch};
use e2e::say;

const MARKER: &[u8] = b"KILN-E2E-DISK-MARKER-5f3a";
/// The MAC the vmm gives the first network device when none is set.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x4b, 0x4c, 0x00];

/// Runs a shell command through the agent, failing the test if it takes over two minutes.
async fn sh(guest: &mut Guest, agent: &agent::Client, cmd: impl Into<String>) -> agent::ExecOutput {
    let run = agent.exec_buffered(agent::ExecRequest::shell(cmd));
    guest.within(120, "agent exec", run).await.unwrap()
}

#[test]
fn debian_minimal_boots_with_disk_net_and_vsock() {
    let _serial = e2e::one_at_a_time();
    let Some(img) = e2e::prepare(
        "debian_minimal_boots_with_disk_net_and_vsock",
        "debian-minimal",
    ) else {
        return;
    };
    let vmm = e2e::vmm_binary();
    let dir = Scratch::new("minimal");
    let disk = dir.0.join("disk.img");
    let mut content = MARKER.to_vec();
    content.resize(8 << 20, 0);
    std::fs::write(&disk, content).unwrap();
    let switch_path = dir.0.join("switch.sock");
    let switch = UnixDatagram::bind(&switch_path).unwrap();
    switch
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let spec = GuestSpec {
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: format!(
            "{} kiln.ip=10.0.2.15/24 kiln.hostname=e2e-minimal",
            img.cmdline()
        ),
        mem_mib: 256,
        // SMP through the MADT: two vCPUs, both must come up.
        cpus: 2,
        disks: vec![disk.display().to_string()],
        nets: vec![format!("switch={}", switch_path.display())],
        extra_args: Vec::new(),
    };
    let mut guest = Guest::start(&vmm, &spec, &dir.0);
    e2e::runtime().block_on(async {
        let agent = guest.agent(Duration::from_secs(180)).await;
        let ready = guest.started.elapsed();

        // The disk: /dev/vda holds the marker the test wrote.
        let out = sh(
            &mut guest,
            &agent,
            format!("head -c {} /dev/vda", MARKER.len()),
        )
        .await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, MARKER);

        let cpus = sh(&mut guest, &agent, "nproc").await;
        assert_eq!(String::from_utf8_lossy(&cpus.stdout).trim(), "2");

        // The network device exists with the MAC the vmm gave it ...
        let mac = sh(&mut guest, &agent, "cat /sys/class/net/eth0/address").await;
        assert_eq!(
            String::from_utf8_lossy(&mac.stdout).trim(),
            "52:54:00:4b:4c:00"
        );
        // ... and a frame the guest sends reaches the switch socket.
        let _ = sh(
            &mut guest,
            &agent,
            "ip link set eth0 up; ping -c 1 -W 1 10.0.2.2",
        )
        .await;
        let mut frame = [0u8; 2048];
        let n = switch
            .recv(&mut frame)
            .expect("a frame from the guest on the switch socket");
        assert!(n >= 14, "runt frame");
        assert_eq!(&frame[6..12], &GUEST_MAC, "source MAC of the guest's frame");

        // vsock carries separate stdout/stderr and the exit code.
        let out = sh(&mut guest, &agent, "echo out; echo err >&2; exit 3").await;
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.shell_code(), 3);

        let _ = guest.within(60, "poweroff request", agent.poweroff()).await;
        let status = guest.wait_exit(Duration::from_secs(60));
        let off = guest.started.elapsed();
        assert!(status.success(), "vmm exited with {status}");
        say(&format!(
            "e2e figure: debian-minimal under kiln vmm: agent ready {:.2} s, \
             powered off {:.2} s after vmm start",
            ready.as_secs_f64(),
            off.as_secs_f64()
        ));
    });
}

#[test]
fn debian_node_boots_systemd_on_ext4_root() {
    let _serial = e2e::one_at_a_time();
    let Some(img) = e2e::prepare("debian_node_boots_systemd_on_ext4_root", "debian-node") else {
        return;
    };
    let vmm = e2e::vmm_binary();
    let dir = Scratch::new("node");
    let root = dir.0.join("root.ext4");
    let rootfs = img.rootfs().expect("debian-node has a root disk");
    let ok = std::process::Command::new("cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(&rootfs)
        .arg(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "per-node copy of the root disk");

    let spec = GuestSpec {
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: format!("{} kiln.hostname=e2e-node", img.cmdline()),
        mem_mib: 1024,
        cpus: 2,
        disks: vec![root.display().to_string()],
        nets: vec![],
        extra_args: Vec::new(),
    };
    let mut guest = Guest::start(&vmm, &spec, &dir.0);
    e2e::runtime().block_on(async {
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
            if waited > 600 {
                let why = "systemctl --failed --no-pager; systemctl list-jobs --no-pager";
                let out = sh(&mut guest, &agent, why).await;
                panic!(
                    "multi-user.target not active after 300 s:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let multi_user = guest.started.elapsed();

        let cpus = sh(&mut guest, &agent, "nproc").await;
        assert_eq!(String::from_utf8_lossy(&cpus.stdout).trim(), "2");
        let root = sh(&mut guest, &agent, "findmnt -n -o SOURCE,FSTYPE /").await;
        assert_eq!(
            String::from_utf8_lossy(&root.stdout).trim(),
            "/dev/vda ext4"
        );
        let out = sh(&mut guest, &agent, "echo out; echo err >&2; exit 5").await;
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(out.status.shell_code(), 5);
        let data: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i * 7 % 251) as u8).collect();
        let put = agent.put_bytes(&data, "/root/roundtrip.bin", 0o600);
        guest.within(120, "file put", put).await.unwrap();
        let got = guest.within(120, "file get", agent.get_bytes("/root/roundtrip.bin"));
        assert_eq!(got.await.unwrap(), data);

        let _ = guest.within(60, "poweroff request", agent.poweroff()).await;
        let status = guest.wait_exit(Duration::from_secs(120));
        let off = guest.started.elapsed();
        assert!(status.success(), "vmm exited with {status}");
        say(&format!(
            "e2e figure: debian-node under kiln vmm: agent ready {:.2} s, \
             multi-user.target {:.2} s, powered off {:.2} s after vmm start",
            ready.as_secs_f64(),
            multi_user.as_secs_f64(),
            off.as_secs_f64()
        ));
    });
}
