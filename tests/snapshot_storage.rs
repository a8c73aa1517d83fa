//! End-to-end: a stock Debian guest (`debian-minimal`) snapshotted while its disk holds what
//! only a running `vmm` holds, then killed and restored in a new process on a copy of the
//! disk:
//! - a write the guest was told is done but never flushed, in a `cache=writeback` cache: the
//!   snapshot writes it back, so the image (and its copy) holds it and the restored guest
//!   reads it;
//! - a read a fault rule is delaying (20 s) when the snapshot is taken: the restored guest's
//!   read is still waiting when the agent first answers, then completes, with the right data;
//! - the restored disk has its write cache again (its saved mode; the `--disk` override says
//!   nothing about it), so a power cut loses a write made after the restore, and the snapshot
//!   carried no fault rules.
//!
//! On a host whose /dev/kvm cannot boot Linux (PVM here) the test re-runs itself inside the
//! emulated KVM host.

mod e2e;

use std::time::{Duration, Instant};

use e2e::guest::{Guest, GuestSpec, Scratch};
use e2e::say;

const MIB: usize = 1 << 20;
/// The guest 4 KiB block written without a flush before the snapshot.
const UNFLUSHED: usize = 100;
/// The block written without a flush after the restore, lost at the power cut.
const AFTER_RESTORE: usize = 101;
/// The block whose read the delay rule holds back across the snapshot.
const DELAYED: usize = 200;
const DELAY_MS: u64 = 20_000;

async fn sh(guest: &mut Guest, agent: &agent::Client, cmd: impl Into<String>) -> agent::ExecOutput {
    let run = agent.exec_buffered(agent::ExecRequest::shell(cmd));
    guest.within(120, "agent exec", run).await.unwrap()
}

/// Block `n` of the disk as created: every byte is `n % 251 + 1` (never zero).
fn block_content(n: usize) -> Vec<u8> {
    vec![(n % 251 + 1) as u8; 4096]
}

fn file_block(path: &std::path::Path, n: usize) -> Vec<u8> {
    std::fs::read(path).unwrap()[n * 4096..(n + 1) * 4096].to_vec()
}

/// Writes zeros to guest block `n` with O_DIRECT and no flush.
async fn unflushed_write(guest: &mut Guest, agent: &agent::Client, n: usize) {
    let out = sh(
        guest,
        agent,
        format!("dd if=/dev/zero of=/dev/vda bs=4096 seek={n} count=1 oflag=direct 2>&1"),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn debian_snapshot_keeps_unflushed_writes_and_delayed_reads() {
    let _serial = e2e::one_at_a_time();
    let Some(img) = e2e::prepare(
        "debian_snapshot_keeps_unflushed_writes_and_delayed_reads",
        "debian-minimal",
    ) else {
        return;
    };
    let vmm = e2e::vmm_binary();
    let dir = Scratch::new("snap-storage");
    let disk = dir.0.join("data.img");
    let content: Vec<u8> = (0..8 * MIB).map(|i| ((i / 4096) % 251 + 1) as u8).collect();
    std::fs::write(&disk, &content).unwrap();
    let rules = dir.0.join("faults.toml");
    std::fs::write(
        &rules,
        format!(
            "seed = 1\n[[block]]\ndisk = 0\nop = \"read\"\nfrom = {}\nto = {}\naction = \"delay\"\ndelay_ms = {DELAY_MS}\n",
            DELAYED * 4096,
            (DELAYED + 1) * 4096
        ),
    )
    .unwrap();
    let spec = GuestSpec {
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: format!("{} kiln.hostname=e2e-snap-storage", img.cmdline()),
        mem_mib: 256,
        cpus: 1,
        disks: vec![format!("{},cache=writeback", disk.display())],
        nets: vec![],
        extra_args: vec![
            "--faults".into(),
            rules.display().to_string(),
            "--fault-log".into(),
            dir.0.join("boot-faults.jsonl").display().to_string(),
        ],
    };
    let boot_dir = dir.0.join("boot");
    std::fs::create_dir_all(&boot_dir).unwrap();
    let mut guest = Guest::start(&vmm, &spec, &boot_dir);
    let snap = dir.0.join("snapshot");
    e2e::runtime().block_on(async {
        let agent = guest.agent(Duration::from_secs(180)).await;
        unflushed_write(&mut guest, &agent, UNFLUSHED).await;
        assert_eq!(
            file_block(&disk, UNFLUSHED),
            block_content(UNFLUSHED),
            "the write reached the image without a flush: nothing to prove"
        );
        // A read of the delayed block, in its own session so that it outlives this exec.
        let out = sh(
            &mut guest,
            &agent,
            format!(
                "setsid sh -c 'dd if=/dev/vda of=/tmp/delayed bs=4096 skip={DELAYED} count=1 \
                 iflag=direct 2>/dev/null; echo $? > /tmp/delayed.rc' </dev/null >/dev/null 2>&1 &"
            ),
        )
        .await;
        assert!(out.status.success(), "{out:?}");
    });
    // The read reached the disk and is held: the rule hit once.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = guest.api(r#"{"op":"faults"}"#);
        if r["faults"]["block"][0]["hits"] == 1 {
            break;
        }
        assert!(Instant::now() < end, "the delayed read never came: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    assert_eq!(guest.api(r#"{"op":"pause"}"#)["ok"], true);
    let r = guest.api(&format!(
        r#"{{"op":"snapshot","dir":"{}"}}"#,
        snap.display()
    ));
    assert_eq!(r["ok"], true, "{r}");
    say(&format!(
        "e2e figure: snapshot with a write-back disk: {} ms in vmm, {:.2} s with pause",
        r["snapshot"]["ms"],
        t.elapsed().as_secs_f64()
    ));
    assert!(
        t.elapsed() < Duration::from_millis(DELAY_MS / 2),
        "the snapshot took so long the delayed read may have completed before it"
    );
    assert_eq!(
        file_block(&disk, UNFLUSHED),
        vec![0u8; 4096],
        "the snapshot did not write the cache back"
    );
    guest.kill();
    let copy = dir.0.join("copy.img");
    std::fs::copy(&disk, &copy).unwrap();

    let mut restored = Guest::restore(
        &vmm,
        &snap,
        &dir.0.join("restore"),
        &["--disk".into(), copy.display().to_string()],
    );
    e2e::runtime().block_on(async {
        let agent = restored.agent(Duration::from_secs(120)).await;
        let ready = restored.started.elapsed();
        let out = sh(&mut restored, &agent, "cat /tmp/delayed.rc 2>/dev/null || echo pending").await;
        assert_eq!(
            out.stdout, b"pending\n",
            "the delayed read finished before the restored guest could see it wait"
        );
        // The rest of its delay passes in the restored VM.
        let end = Instant::now() + Duration::from_millis(DELAY_MS + 60_000);
        let rc = loop {
            let out = sh(&mut restored, &agent, "cat /tmp/delayed.rc 2>/dev/null").await;
            if !out.stdout.is_empty() {
                break String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            assert!(Instant::now() < end, "the delayed read never completed");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(rc, "0", "the delayed read failed in the guest");
        let got = sh(&mut restored, &agent, "cat /tmp/delayed").await;
        assert_eq!(got.stdout, block_content(DELAYED), "the delayed read's data");
        say(&format!(
            "e2e figure: restore to agent {:.2} s; held read completed {:.2} s after the restore",
            ready.as_secs_f64(),
            restored.started.elapsed().as_secs_f64()
        ));

        // The unflushed write is in the copy and the guest reads it back from the disk.
        assert_eq!(file_block(&copy, UNFLUSHED), vec![0u8; 4096]);
        let out = sh(
            &mut restored,
            &agent,
            format!(
                "dd if=/dev/vda bs=4096 skip={UNFLUSHED} count=1 iflag=direct 2>/dev/null | tr -d '\\000' | wc -c"
            ),
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");

        // No rules came with the snapshot; the disk caches writes again.
        let r = restored.api(r#"{"op":"faults"}"#);
        assert_eq!(r["faults"]["block"].as_array().unwrap().len(), 0, "{r}");
        unflushed_write(&mut restored, &agent, AFTER_RESTORE).await;
    });
    let r = restored.api(r#"{"op":"power_cut"}"#);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["power_cut"]["cached_disks"], 1, "{r}");
    assert!(r["power_cut"]["lost_blocks"].as_u64().unwrap() >= 1, "{r}");
    let status = restored.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "vmm exited with {status}");
    assert_eq!(
        file_block(&copy, AFTER_RESTORE),
        block_content(AFTER_RESTORE),
        "the write after the restore was not cached"
    );
    assert_eq!(file_block(&copy, UNFLUSHED), vec![0u8; 4096]);
    assert_eq!(file_block(&copy, DELAYED), block_content(DELAYED));
}
