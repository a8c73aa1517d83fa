//! End-to-end: fault injection seen by a stock Debian guest (`debian-minimal`, busybox) under
//! Kiln's `vmm`, driven through the control API while the guest runs:
//! - an EIO rule on one 4 KiB range of a disk: a guest `dd iflag=direct` of exactly those
//!   sectors fails, its neighbours read fine;
//! - a 400 ms read delay shows up in the guest's measured read latency, and is gone once the
//!   rules are cleared;
//! - a drop rule on the NIC's transmit side: the guest's frames no longer reach the switch;
//! - a power cut of a `cache=writeback` disk loses a write the guest did not flush and keeps
//!   one it flushed; `vmm` exits 0 saying so;
//! - the fault log records the injected faults.
//!
//! On a host whose /dev/kvm cannot boot Linux (PVM here) the test re-runs itself inside the
//! emulated KVM host.

mod e2e;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::Duration;

use e2e::guest::{Guest, GuestSpec, Scratch};
use e2e::say;

const MIB: usize = 1 << 20;
/// The byte range the EIO rule covers: 4 KiB at 1 MiB (guest 4 KiB block 256).
const EIO_FROM: usize = MIB;

fn api(sock: &Path, req: &str) -> serde_json::Value {
    let mut c = UnixStream::connect(sock).expect("API socket");
    writeln!(c, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

async fn sh(guest: &mut Guest, agent: &agent::Client, cmd: impl Into<String>) -> agent::ExecOutput {
    let run = agent.exec_buffered(agent::ExecRequest::shell(cmd));
    guest.within(120, "agent exec", run).await.unwrap()
}

/// Reads guest 4 KiB block `block` of /dev/vda with O_DIRECT; returns (ok, seconds taken as
/// the guest measured it).
async fn direct_read(guest: &mut Guest, agent: &agent::Client, block: usize) -> (bool, f64) {
    let out = sh(
        guest,
        agent,
        format!(
            "a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/vda of=/dev/null bs=4096 skip={block} count=1 iflag=direct 2>/dev/null; s=$?; b=$(cut -d' ' -f1 /proc/uptime); echo $s $a $b"
        ),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(f.len(), 3, "unexpected output {text:?} {out:?}");
    (f[0] == 0.0, f[2] - f[1])
}

#[test]
fn storage_faults_seen_by_a_debian_guest() {
    let _serial = e2e::one_at_a_time();
    let Some(img) = e2e::prepare("storage_faults_seen_by_a_debian_guest", "debian-minimal") else {
        return;
    };
    let vmm = e2e::vmm_binary();
    let dir = Scratch::new("storage-faults");
    let disk = dir.0.join("data.img");
    // Block n holds the byte n % 251 + 1, so every block is recognisable and none is zero.
    let content: Vec<u8> = (0..8 * MIB).map(|i| ((i / 4096) % 251 + 1) as u8).collect();
    std::fs::write(&disk, &content).unwrap();
    let sock = dir.0.join("api.sock");
    let log = dir.0.join("faults.jsonl");
    let rules = dir.0.join("faults.toml");
    std::fs::write(
        &rules,
        format!(
            "seed = 1\n[[block]]\ndisk = 0\nop = \"read\"\nfrom = {EIO_FROM}\nto = {}\naction = \"eio\"\n",
            EIO_FROM + 4096
        ),
    )
    .unwrap();
    let switch_path = dir.0.join("switch.sock");
    let switch = UnixDatagram::bind(&switch_path).unwrap();
    switch
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let spec = GuestSpec {
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: format!(
            "{} kiln.ip=10.0.2.15/24 kiln.hostname=e2e-faults",
            img.cmdline()
        ),
        mem_mib: 256,
        cpus: 1,
        disks: vec![format!("{},cache=writeback", disk.display())],
        nets: vec![format!("switch={}", switch_path.display())],
        // Guest::start gives the control socket (`sock`, in the scratch directory).
        extra_args: vec![
            "--faults".into(),
            rules.display().to_string(),
            "--fault-log".into(),
            log.display().to_string(),
        ],
    };
    let mut guest = Guest::start(&vmm, &spec, &dir.0);
    assert_eq!(guest.api_sock, sock);
    e2e::runtime().block_on(async {
        let agent = guest.agent(Duration::from_secs(180)).await;

        // EIO on exactly the named sectors.
        let eio_block = EIO_FROM / 4096;
        assert!(!direct_read(&mut guest, &agent, eio_block).await.0, "block {eio_block} must fail");
        assert!(direct_read(&mut guest, &agent, eio_block - 1).await.0, "the block before reads");
        assert!(direct_read(&mut guest, &agent, eio_block + 1).await.0, "the block after reads");
        let r = api(&sock, r#"{"op":"faults"}"#);
        assert!(r["faults"]["block"][0]["hits"].as_u64().unwrap() >= 1, "{r}");

        // A read delay set while the guest runs shows in its measured latency.
        let (_, before) = direct_read(&mut guest, &agent, 10).await;
        let r = api(
            &sock,
            r#"{"op":"set_faults","rules":{"block":[{"disk":0,"op":"read","action":"delay","delay_ms":400}]}}"#,
        );
        assert_eq!(r["ok"], true, "{r}");
        let (ok, delayed) = direct_read(&mut guest, &agent, 11).await;
        assert!(ok);
        assert!(delayed >= 0.4, "delayed read took {delayed:.3} s");
        assert_eq!(api(&sock, r#"{"op":"set_faults","rules":{}}"#)["ok"], true);
        let (_, after) = direct_read(&mut guest, &agent, 12).await;
        assert!(after < delayed, "cleared: {after:.3} s, delayed {delayed:.3} s");
        say(&format!(
            "e2e figure: guest O_DIRECT 4 KiB read: {before:.3} s, with a 400 ms delay rule {delayed:.3} s, cleared {after:.3} s"
        ));

        // Dropping the NIC's transmit side: no guest frame reaches the switch.
        let ping = "ip link set eth0 up; ping -c 2 -W 1 10.0.2.2";
        let _ = sh(&mut guest, &agent, ping).await;
        let mut frame = [0u8; 2048];
        assert!(switch.recv(&mut frame).is_ok(), "frames reach the switch without rules");
        let r = api(&sock, r#"{"op":"set_faults","rules":{"net":[{"nic":0,"dir":"tx","action":"drop"}]}}"#);
        assert_eq!(r["ok"], true, "{r}");
        switch.set_nonblocking(true).unwrap();
        while switch.recv(&mut frame).is_ok() {}
        switch.set_nonblocking(false).unwrap();
        let _ = sh(&mut guest, &agent, ping).await;
        switch.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        assert!(switch.recv(&mut frame).is_err(), "a frame got past the drop rule");
        let r = api(&sock, r#"{"op":"faults"}"#);
        assert!(r["faults"]["net"][0]["hits"].as_u64().unwrap() >= 1, "{r}");
        assert_eq!(api(&sock, r#"{"op":"set_faults","rules":{}}"#)["ok"], true);

        // Power cut: a flushed write survives, an unflushed one does not.
        let flushed = sh(
            &mut guest,
            &agent,
            "dd if=/dev/zero of=/dev/vda bs=4096 seek=300 count=1 oflag=direct conv=fsync 2>&1",
        )
        .await;
        assert!(flushed.status.success(), "{flushed:?}");
        let unflushed = sh(
            &mut guest,
            &agent,
            "dd if=/dev/zero of=/dev/vda bs=4096 seek=301 count=1 oflag=direct 2>&1",
        )
        .await;
        assert!(unflushed.status.success(), "{unflushed:?}");
        let r = api(&sock, r#"{"op":"power_cut"}"#);
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["power_cut"]["lost_blocks"].as_u64().unwrap() >= 1, "{r}");
        let status = guest.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "vmm exited with {status}");
    });

    let after = std::fs::read(&disk).unwrap();
    let block = |n: usize| &after[n * 4096..(n + 1) * 4096];
    assert_eq!(block(300), &[0u8; 4096][..], "the flushed write survived");
    assert_eq!(
        block(301),
        &content[301 * 4096..302 * 4096],
        "the unflushed write was lost"
    );
    assert_eq!(block(302), &content[302 * 4096..303 * 4096]);

    let log = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records.iter().any(|r| r["action"] == "eio"
            && r["device"] == "disk0"
            && r["offset"] == EIO_FROM as u64),
        "{log}"
    );
    assert!(records.iter().any(|r| r["action"] == "delay"), "{log}");
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "drop" && r["device"] == "nic0" && r["op"] == "tx"),
        "{log}"
    );
}
