//! Fault rules and the write cache on the real request path: real guest memory, real
//! descriptor chains, real image files, and for delays a real event loop with its timer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};

use super::backend::CacheMode;
use super::tests::{
    activate, file_bytes, header, image, image_sector, run, status, Setup, DATA, HDR, SECTORS,
    STATUS,
};
use super::*;
use crate::fault::{read_log, BlockFaults, FaultEngine, FaultRecord, FaultRules};
use crate::virtio::test_utils::{
    guest_memory, interrupt, ro, wait_readable, wr, Driver, EventLoop,
};
use crate::virtio::VirtioDevice;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

fn engine(rules: &str) -> Arc<FaultEngine> {
    let e = FaultEngine::new();
    e.set_rules(FaultRules::from_toml(rules, "test").unwrap())
        .unwrap();
    e
}

fn setup_with(rules: &str, cache: CacheMode) -> (Setup, Arc<FaultEngine>) {
    let img = image(SECTORS);
    let e = engine(rules);
    let dev = Block::new(
        BlockConfig {
            path: img.as_path().to_path_buf(),
            read_only: false,
            id: None,
            cache,
        },
        None,
        BlockFaults::new(e.clone(), 0),
    )
    .unwrap();
    (Setup { img, dev }, e)
}

fn read_req(d: &mut Driver, dev: &Block, sector: u64, len: u32) -> (u8, Vec<u8>) {
    header(d, VIRTIO_BLK_T_IN, sector);
    d.write(DATA, &vec![0xcc; len as usize]);
    let (_, st) = run(d, dev, &[ro(HDR, 16), wr(DATA, len), wr(STATUS, 1)]);
    (st, d.read(DATA, len as usize))
}

fn write_req(d: &mut Driver, dev: &Block, sector: u64, data: &[u8]) -> u8 {
    header(d, VIRTIO_BLK_T_OUT, sector);
    d.write(DATA, data);
    run(
        d,
        dev,
        &[ro(HDR, 16), ro(DATA, data.len() as u32), wr(STATUS, 1)],
    )
    .1
}

fn flush_req(d: &mut Driver, dev: &Block) -> u8 {
    header(d, VIRTIO_BLK_T_FLUSH, 0);
    run(d, dev, &[ro(HDR, 16), wr(STATUS, 1)]).1
}

fn sectors(first: u64, n: u64) -> Vec<u8> {
    (first..first + n).flat_map(image_sector).collect()
}

#[test]
fn eio_fails_exactly_the_named_sectors() {
    // Sectors 8..12 (bytes 4096..6144) of reads fail; everything else reads fine.
    let (mut s, e) = setup_with(
        "[[block]]\nop = \"read\"\nfrom = 4096\nto = 6144\naction = \"eio\"\n",
        CacheMode::WriteThrough,
    );
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    for sector in 0..SECTORS {
        let (st, data) = read_req(&mut d, &s.dev, sector, 512);
        if (8..12).contains(&sector) {
            assert_eq!(st, IOERR, "sector {sector}");
            assert_eq!(data, vec![0xcc; 512], "no data for a failed read");
        } else {
            assert_eq!((st, data), (OK, image_sector(sector)), "sector {sector}");
        }
    }
    // A request straddling the range fails as a whole; writes there are not affected.
    assert_eq!(read_req(&mut d, &s.dev, 6, 2048).0, IOERR);
    assert_eq!(write_req(&mut d, &s.dev, 8, &[1; 512]), OK);
    assert_eq!(e.report().block[0].counters.hits, 5);
}

#[test]
fn eio_on_writes_and_flushes_leaves_the_image_alone() {
    let (mut s, _) = setup_with("[[block]]\naction = \"eio\"\nop = \"write\"\n[[block]]\nop = \"flush\"\naction = \"eio\"\n", CacheMode::WriteThrough);
    let before = file_bytes(s.img.as_path());
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    assert_eq!(write_req(&mut d, &s.dev, 2, &[0x55; 1024]), IOERR);
    assert_eq!(flush_req(&mut d, &s.dev), IOERR);
    assert_eq!(file_bytes(s.img.as_path()), before);
    assert_eq!(read_req(&mut d, &s.dev, 2, 512).0, OK);
}

#[test]
fn torn_write_lands_keep_bytes_then_fails() {
    let (mut s, _) = setup_with(
        "[[block]]\naction = \"torn\"\nkeep_bytes = 1024\n",
        CacheMode::WriteThrough,
    );
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    let payload: Vec<u8> = (0..2048u32).map(|i| (i * 3) as u8).collect();
    assert_eq!(write_req(&mut d, &s.dev, 4, &payload), IOERR);
    let disk = file_bytes(s.img.as_path());
    assert_eq!(
        disk[4 * 512..6 * 512],
        payload[..1024],
        "the first 1024 bytes landed"
    );
    assert_eq!(
        disk[6 * 512..8 * 512],
        sectors(6, 2)[..],
        "the rest did not"
    );
}

#[test]
fn corrupt_flips_one_bit_per_sector_in_range_and_leaves_the_file() {
    let (mut s, _) = setup_with(
        "seed = 3\n[[block]]\nfrom = 2048\nto = 3072\naction = \"corrupt\"\n",
        CacheMode::WriteThrough,
    );
    let before = file_bytes(s.img.as_path());
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    let (st, data) = read_req(&mut d, &s.dev, 2, 4 * 512);
    assert_eq!(st, OK);
    let want = sectors(2, 4);
    let flipped: Vec<u32> = data
        .chunks(512)
        .zip(want.chunks(512))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum())
        .collect();
    // Sectors 2 and 3 are outside, 4 and 5 inside the range.
    assert_eq!(flipped, [0, 0, 1, 1]);
    assert_eq!(file_bytes(s.img.as_path()), before);
}

#[test]
fn lose_acknowledges_and_stores_nothing() {
    let (mut s, e) = setup_with(
        "[[block]]\naction = \"lose\"\ncount = 1\n",
        CacheMode::WriteThrough,
    );
    let before = file_bytes(s.img.as_path());
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    assert_eq!(write_req(&mut d, &s.dev, 1, &[0x77; 512]), OK);
    assert_eq!(flush_req(&mut d, &s.dev), OK);
    assert_eq!(file_bytes(s.img.as_path()), before);
    assert_eq!(read_req(&mut d, &s.dev, 1, 512).1, image_sector(1));
    // count = 1: the next write is stored.
    assert_eq!(write_req(&mut d, &s.dev, 1, &[0x77; 512]), OK);
    assert_eq!(file_bytes(s.img.as_path())[512..1024], [0x77; 512]);
    assert_eq!(e.report().block[0].counters.hits, 1);
}

#[test]
fn delay_holds_the_completion_but_not_the_queue() {
    let (mut s, _) = setup_with(
        "[[block]]\nfrom = 0\nto = 512\naction = \"delay\"\ndelay_ms = 80\n",
        CacheMode::WriteThrough,
    );
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    // A delayed read of sector 0 and a normal read of sector 1 in one notification.
    header(&d, VIRTIO_BLK_T_IN, 0);
    let slow = d.submit(&[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    let hdr2 = HDR + 0x40;
    let mut h = VIRTIO_BLK_T_IN.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&1u64.to_le_bytes());
    d.write(hdr2, &h);
    let fast = d.submit(&[ro(hdr2, 16), wr(DATA + 0x1000, 512), wr(STATUS + 1, 1)]);
    let start = Instant::now();
    assert_eq!(
        s.dev.process_queue(),
        Some(1),
        "only the undelayed request completes"
    );
    assert_eq!(d.used(0), (u32::from(fast), 513));
    assert_eq!(s.dev.complete_deferred(), Some(0), "not due yet");
    std::thread::sleep(Duration::from_millis(90));
    assert_eq!(s.dev.complete_deferred(), Some(1));
    assert!(start.elapsed() >= Duration::from_millis(80));
    assert_eq!(d.used(1), (u32::from(slow), 513));
    assert_eq!((status(&d), d.read(DATA, 512)), (OK, image_sector(0)));
}

#[test]
fn delay_completes_from_the_event_loop_timer() {
    let event_loop = EventLoop::start();
    let img = image(SECTORS);
    let e = engine("[[block]]\naction = \"delay\"\ndelay_ms = 100\n");
    let mut dev = Block::new(
        BlockConfig {
            path: img.as_path().to_path_buf(),
            read_only: false,
            id: None,
            cache: CacheMode::WriteThrough,
        },
        Some(event_loop.endpoint.clone()),
        BlockFaults::new(e, 0),
    )
    .unwrap();
    let mem = guest_memory();
    let mut d = Driver::new(&mem, 64);
    let irq = interrupt();
    let (ctx, evt) = d.activate_context(&irq);
    dev.activate(ctx).unwrap();
    header(&d, VIRTIO_BLK_T_IN, 3);
    d.submit(&[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    let start = Instant::now();
    evt.write(1).unwrap();
    // Nothing completes before the delay; the loop publishes it when the timer fires.
    wait_readable(irq.eventfd());
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(d.used_idx(), 1);
    assert_eq!((status(&d), d.read(DATA, 512)), (OK, image_sector(3)));
    // The loop is still responsive; reset drops nothing it should not.
    dev.reset();
}

#[test]
fn rules_change_while_the_device_runs() {
    let img = image(SECTORS);
    let e = FaultEngine::new();
    let mut s = Setup {
        dev: Block::new(
            BlockConfig {
                path: img.as_path().to_path_buf(),
                read_only: false,
                id: None,
                cache: CacheMode::WriteThrough,
            },
            None,
            BlockFaults::new(e.clone(), 0),
        )
        .unwrap(),
        img,
    };
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    assert_eq!(read_req(&mut d, &s.dev, 0, 512).0, OK);
    e.set_rules(FaultRules::from_json(serde_json::json!({"block": [{"action": "eio"}]})).unwrap())
        .unwrap();
    assert_eq!(read_req(&mut d, &s.dev, 0, 512).0, IOERR);
    e.set_rules(FaultRules::default()).unwrap();
    assert_eq!(read_req(&mut d, &s.dev, 0, 512).0, OK);
}

/// One guest's request sequence against a fresh disk with `rules`: what it saw and the log.
fn replay(rules: &str) -> (Vec<(u8, Vec<u8>)>, Vec<FaultRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, e) = setup_with(rules, CacheMode::WriteThrough);
    e.log_to(&dir.path().join("log")).unwrap();
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    let mut seen = Vec::new();
    for i in 0..60u64 {
        let sector = (i * 7) % (SECTORS - 2);
        seen.push(match i % 4 {
            0 => (
                write_req(&mut d, &s.dev, sector, &vec![i as u8; 1024]),
                vec![],
            ),
            3 => (flush_req(&mut d, &s.dev), vec![]),
            _ => read_req(&mut d, &s.dev, sector, 1024),
        });
    }
    seen.push((0, file_bytes(s.img.as_path())));
    let log = read_log(&dir.path().join("log"))
        .unwrap()
        .into_iter()
        .map(|r| FaultRecord { time: 0.0, ..r })
        .collect();
    (seen, log)
}

#[test]
fn same_seed_and_requests_give_the_same_faults_on_the_device() {
    let rules = r#"
seed = 99
[[block]]
op = "read"
action = "corrupt"
probability = 0.4
[[block]]
action = "eio"
probability = 0.2
[[block]]
action = "torn"
keep_bytes = 512
probability = 0.3
"#;
    let (a, log_a) = replay(rules);
    let (b, log_b) = replay(rules);
    assert_eq!(a, b, "guest-visible results differ");
    assert_eq!(log_a, log_b, "fault logs differ");
    let actions: std::collections::BTreeSet<_> = log_a.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions.into_iter().collect::<Vec<_>>(),
        ["corrupt", "eio", "torn"]
    );
    let (_, log_c) = replay(&rules.replace("seed = 99", "seed = 100"));
    assert_ne!(log_a, log_c, "another seed, other faults");
}

#[test]
fn writeback_disk_keeps_writes_until_flush_and_loses_them_at_a_power_cut() {
    let (mut s, _) = setup_with("", CacheMode::WriteBack);
    let before = file_bytes(s.img.as_path());
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    assert_ne!(
        s.dev.features() & (1 << virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_F_FLUSH),
        0
    );
    assert_eq!(write_req(&mut d, &s.dev, 2, &[0xa1; 1024]), OK);
    assert_eq!(
        file_bytes(s.img.as_path()),
        before,
        "not on disk before the flush"
    );
    assert_eq!(
        read_req(&mut d, &s.dev, 2, 1024).1,
        vec![0xa1; 1024],
        "the guest reads its write"
    );
    assert_eq!(flush_req(&mut d, &s.dev), OK);
    assert_eq!(file_bytes(s.img.as_path())[1024..2048], [0xa1; 1024]);
    assert_eq!(write_req(&mut d, &s.dev, 10, &[0xb2; 512]), OK);
    let cache = s.dev.cache().unwrap().clone();
    assert_eq!(cache.dirty_bytes(), 512);
    let report = cache.power_cut(0, 0, 0.0).unwrap();
    assert_eq!((report.lost_blocks, report.kept_blocks), (1, 0));
    let after = file_bytes(s.img.as_path());
    assert_eq!(after[1024..2048], [0xa1; 1024], "flushed write survives");
    assert_eq!(
        after[10 * 512..11 * 512],
        image_sector(10)[..],
        "unflushed write is lost"
    );
    // After the cut the disk answers nothing but errors, and dropping it writes nothing.
    assert_eq!(read_req(&mut d, &s.dev, 0, 512).0, IOERR);
    drop(s.dev);
    assert_eq!(file_bytes(s.img.as_path()), after);
}

#[test]
fn writeback_needs_a_writable_disk_and_directory() {
    let img = image(1);
    let err = |read_only| {
        Block::new(
            BlockConfig {
                path: img.as_path().to_path_buf(),
                read_only,
                id: None,
                cache: CacheMode::WriteBack,
            },
            None,
            BlockFaults::none(),
        )
        .err()
        .map(|e| e.to_string())
    };
    assert!(err(true).unwrap().contains("read-only"));
    assert_eq!(err(false), None);
}

#[test]
fn a_guest_reusing_heads_cannot_pile_up_delayed_completions() {
    let (mut s, _) = setup_with(
        "[[block]]\naction = \"delay\"\ndelay_ms = 60000\n",
        CacheMode::WriteThrough,
    );
    let mem = guest_memory();
    let mut d = activate(&mut s, &mem);
    header(&d, VIRTIO_BLK_T_IN, 0);
    let head = d.submit(&[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    // The same chain published again and again: a correct driver never does this.
    let mut published = 1u16;
    let mut completed_now = 0;
    for _ in 0..5 {
        let avail = d.mock.avail();
        for _ in 0..63 {
            avail
                .ring()
                .ref_at(usize::from(published % 64))
                .unwrap()
                .store(head);
            published += 1;
        }
        avail.idx().store(published);
        completed_now += s.dev.process_queue().unwrap();
        let waiting = s.dev.running_deferred().unwrap();
        assert!(waiting <= 64, "{waiting} completions held back");
    }
    // Past the queue size the delay is not applied: those completed at once.
    assert_eq!(s.dev.running_deferred(), Some(64));
    assert_eq!(completed_now, usize::from(published) - 64);
}
