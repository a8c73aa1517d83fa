//! Saving and restoring a disk through the virtio-mmio transport, as a snapshot does, with
//! what only a running disk holds: a completion a fault delay keeps from the guest, and a
//! write cache's acknowledged but unflushed writes. Real guest memory, real descriptor
//! chains, real image files, real event loops; the "old process" is gone (its event loop
//! stopped and dropped) before the restored one starts.

use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vm_memory::bitmap::Bitmap;
use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::CacheMode;
use super::tests::{file_bytes, header, image, image_sector, status, DATA, HDR, SECTORS, STATUS};
use super::*;
use crate::fault::{BlockFaults, FaultEngine, FaultRules};
use crate::persist::Persist;
use crate::virtio::mmio::{MmioHostParts, MmioTransport};
use crate::virtio::test_utils::{
    bring_up, guest_memory, interrupt, ro, wait_readable, wr, Driver, EventLoop,
};
use crate::virtio::{EventLoopEndpoint, VirtioDevice};

const OK: u8 = VIRTIO_BLK_S_OK as u8;

fn faults(rules: &str) -> BlockFaults {
    let e = FaultEngine::new();
    e.set_rules(FaultRules::from_toml(rules, "test").unwrap())
        .unwrap();
    BlockFaults::new(e, 0)
}

fn config(path: &std::path::Path, cache: CacheMode) -> BlockConfig {
    BlockConfig {
        path: path.to_path_buf(),
        read_only: false,
        id: None,
        cache,
    }
}

/// Holds the event loop inside a closure (as a snapshot parks it) until the sender drops.
fn park(endpoint: &EventLoopEndpoint) -> std::sync::mpsc::Sender<()> {
    let (parked_tx, parked_rx) = channel();
    let (release_tx, release_rx) = channel::<()>();
    endpoint
        .fire(move |_| {
            parked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
        .unwrap();
    parked_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    release_tx
}

/// Waits until the used ring holds `n` entries.
fn wait_used(d: &Driver, n: u16, within: Duration) {
    let end = Instant::now() + within;
    while d.used_idx() != n {
        assert!(
            Instant::now() < end,
            "used index {} after {within:?}, want {n}",
            d.used_idx()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A request held back by a delay rule when the disk is saved is not in the saved queue (the
/// device already took it) and the guest has not seen it complete. The restored disk, in a
/// new "process" with no rules, completes it once the time it had left has passed: once,
/// with its status and data, and the guest's later requests go on normally.
#[test]
fn a_completion_held_by_a_delay_at_save_reaches_the_guest_after_restore() {
    let img = image(SECTORS);
    let mem = guest_memory();
    let mut d = Driver::new(&mem, 64);
    let old_loop = EventLoop::start();
    let block = Block::new(
        config(img.as_path(), CacheMode::WriteThrough),
        Some(old_loop.endpoint.clone()),
        faults(
            "[[block]]\nop = \"read\"\nfrom = 0\nto = 512\naction = \"delay\"\ndelay_ms = 1500\n",
        ),
    )
    .unwrap();
    let (irq, evt) = (interrupt(), EventFd::new(EFD_NONBLOCK).unwrap());
    let mut t = MmioTransport::new(
        block,
        mem.clone(),
        irq.clone(),
        vec![evt.try_clone().unwrap()],
    )
    .unwrap();
    bring_up(&mut t, &d);

    // Sector 0 is delayed; sector 1, in the same notification, is not.
    header(&d, VIRTIO_BLK_T_IN, 0);
    let slow = d.submit(&[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    let hdr2 = HDR + 0x40;
    let mut h = VIRTIO_BLK_T_IN.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&1u64.to_le_bytes());
    d.write(hdr2, &h);
    let fast = d.submit(&[ro(hdr2, 16), wr(DATA + 0x1000, 512), wr(STATUS + 1, 1)]);
    evt.write(1).unwrap();
    wait_readable(irq.eventfd());
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0), (u32::from(fast), 513));

    // The snapshot: loop parked, transport and disk saved.
    let release = park(&old_loop.endpoint);
    let saved_transport = t.save();
    let saved = t.device().save();
    assert_eq!(saved.held.len(), 1, "{saved:?}");
    let held = saved.held[0];
    assert_eq!((held.head, held.len), (slow, 513));
    assert!(
        held.remaining > Duration::ZERO && held.remaining <= Duration::from_millis(1500),
        "{held:?}"
    );
    assert_eq!(
        saved_transport.registers.queues[0].next_avail, 2,
        "the saved queue is past the held request"
    );
    assert_eq!(saved_transport.registers.queues[0].next_used, 1);
    // The old process goes away: its loop (and the handler on it) is stopped and dropped.
    drop(release);
    drop(old_loop);
    drop(t);
    assert_eq!(d.used_idx(), 1, "the old device completed it after all");

    let new_loop = EventLoop::start();
    let parts = BlockHostParts {
        path: img.as_path().to_path_buf(),
        cache: CacheMode::WriteThrough,
        faults: BlockFaults::none(),
        endpoint: Some(new_loop.endpoint.clone()),
    };
    let restored = Block::restore(parts, &saved).unwrap();
    let (irq2, evt2) = (interrupt(), EventFd::new(EFD_NONBLOCK).unwrap());
    let restore_started = Instant::now();
    let t2 = MmioTransport::restore(
        MmioHostParts {
            device: restored,
            mem: mem.clone(),
            interrupt: irq2.clone(),
            queue_evts: vec![evt2.try_clone().unwrap()],
        },
        &saved_transport,
    )
    .unwrap();
    assert_eq!(t2.device().held_completions().len(), 1);
    assert_eq!(d.used_idx(), 1, "completed before its time was up");
    wait_used(&d, 2, Duration::from_secs(20));
    assert!(
        restore_started.elapsed() + Duration::from_millis(50) >= held.remaining,
        "completed {:?} after restore, {:?} were left",
        restore_started.elapsed(),
        held.remaining
    );
    assert_eq!(d.used(1), (u32::from(slow), 513));
    assert_eq!((status(&d), d.read(DATA, 512)), (OK, image_sector(0)));
    assert!(t2.device().held_completions().is_empty());

    // Once only, and the restored disk (no rules now) serves the next read at once.
    header(&d, VIRTIO_BLK_T_IN, 0);
    let again = d.submit(&[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    evt2.write(1).unwrap();
    wait_used(&d, 3, Duration::from_secs(5));
    assert_eq!(d.used(2), (u32::from(again), 513));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.used_idx(), 3, "a completion was published twice");
    drop(t2);
    drop(new_loop);
}

/// A restored queue refuses held completions no saved device could have had.
#[test]
fn impossible_held_completions_are_refused_at_restore() {
    let img = image(SECTORS);
    let mem = guest_memory();
    let d = Driver::new(&mem, 64);
    let mut t = MmioTransport::new(
        Block::new(
            config(img.as_path(), CacheMode::WriteThrough),
            None,
            BlockFaults::none(),
        )
        .unwrap(),
        mem.clone(),
        interrupt(),
        vec![EventFd::new(EFD_NONBLOCK).unwrap()],
    )
    .unwrap();
    bring_up(&mut t, &d);
    let saved_transport = t.save();
    let good = t.device().save();
    assert!(good.held.is_empty());
    let held = |head, secs| crate::virtio::queue_handler::HeldCompletion {
        head,
        len: 1,
        remaining: Duration::from_secs(secs),
    };
    for bad in [
        vec![held(64, 0)],
        vec![held(0, 2 * 3600)],
        vec![held(0, 0); 65],
    ] {
        let saved = BlockSavedState {
            held: bad,
            ..good.clone()
        };
        let parts = BlockHostParts {
            path: img.as_path().to_path_buf(),
            cache: CacheMode::WriteThrough,
            faults: BlockFaults::none(),
            endpoint: None,
        };
        let dev = Block::restore(parts, &saved).unwrap();
        let result = MmioTransport::restore(
            MmioHostParts {
                device: dev,
                mem: mem.clone(),
                interrupt: interrupt(),
                queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
            },
            &saved_transport,
        );
        let err = result
            .err()
            .expect("restored with impossible held completions");
        assert!(err.to_string().contains("held completion"), "{err}");
    }
}

fn write_sector(d: &mut Driver, dev: &Block, sector: u64, byte: u8) {
    header(d, VIRTIO_BLK_T_OUT, sector);
    d.write(DATA, &[byte; 512]);
    let before = d.used_idx();
    d.submit(&[ro(HDR, 16), ro(DATA, 512), wr(STATUS, 1)]);
    assert_eq!(dev.process_queue(), Some(1));
    assert_eq!((d.used_idx(), status(d)), (before.wrapping_add(1), OK));
}

fn read_sector(d: &mut Driver, dev: &Block, sector: u64) -> Vec<u8> {
    header(d, VIRTIO_BLK_T_IN, sector);
    d.write(DATA, &[0xcc; 512]);
    d.submit(&[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    assert_eq!(dev.process_queue(), Some(1));
    assert_eq!(status(d), OK);
    d.read(DATA, 512)
}

/// A write the guest was told is done but never flushed lives only in the write cache. The
/// snapshot writes it back, so the image the restore uses holds it, even after the old
/// process lost its cache; the restored disk has a write cache again (its saved mode), which
/// a power cut still empties.
#[test]
fn a_snapshot_keeps_unflushed_writes_and_the_restored_disk_caches_again() {
    let img = image(SECTORS);
    let mem = guest_memory();
    let mut d = Driver::new(&mem, 64);
    let mut t = MmioTransport::new(
        Block::new(
            config(img.as_path(), CacheMode::WriteBack),
            None,
            BlockFaults::none(),
        )
        .unwrap(),
        mem.clone(),
        interrupt(),
        vec![EventFd::new(EFD_NONBLOCK).unwrap()],
    )
    .unwrap();
    bring_up(&mut t, &d);
    let before = file_bytes(img.as_path());
    write_sector(&mut d, t.device(), 2, 0xa1);
    assert_eq!(
        file_bytes(img.as_path()),
        before,
        "the write went past the cache"
    );

    t.device().write_back().unwrap();
    let saved_transport = t.save();
    let saved = t.device().save();
    assert_eq!(file_bytes(img.as_path())[1024..1536], [0xa1; 512]);
    // The old process dies without writing anything more back.
    let report = t.device().cache().unwrap().power_cut(0, 0, 0.0).unwrap();
    assert_eq!(report.lost_blocks, 0, "written back, nothing left to lose");
    drop(t);

    let parts = BlockHostParts {
        path: img.as_path().to_path_buf(),
        cache: CacheMode::WriteBack,
        faults: BlockFaults::none(),
        endpoint: None,
    };
    let t2 = MmioTransport::restore(
        MmioHostParts {
            device: Block::restore(parts, &saved).unwrap(),
            mem: mem.clone(),
            interrupt: interrupt(),
            queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
        },
        &saved_transport,
    )
    .unwrap();
    assert_eq!(read_sector(&mut d, t2.device(), 2), [0xa1; 512]);
    // The restored disk caches again: an unflushed write is lost at a power cut.
    write_sector(&mut d, t2.device(), 5, 0xb2);
    let cache = t2
        .device()
        .cache()
        .expect("the restored disk has a write cache");
    assert_eq!(cache.power_cut(0, 0, 0.0).unwrap().lost_blocks, 1);
    let after = file_bytes(img.as_path());
    assert_eq!(after[5 * 512..6 * 512], image_sector(5)[..]);
    assert_eq!(after[1024..1536], [0xa1; 512]);
}

/// Layers fill guest buffers past guest memory's dirty bitmap (preadv, plain copies); the
/// request code marks them, or a diff snapshot would miss what a disk read brought in.
#[test]
fn a_disk_read_marks_the_guest_pages_it_fills_dirty() {
    let img = image(SECTORS);
    let mem = guest_memory();
    let mut d = Driver::new(&mem, 64);
    let mut dev = Block::new(
        config(img.as_path(), CacheMode::WriteThrough),
        None,
        BlockFaults::none(),
    )
    .unwrap();
    let (ctx, _evt) = d.activate_context(&interrupt());
    dev.activate(ctx).unwrap();
    let region = mem.find_region(GuestAddress(0)).unwrap();
    let bitmap = MmapRegion::bitmap(region);
    let page = |addr: u64| bitmap.dirty_at(addr as usize);
    // A write only reads guest memory: its data page stays clean.
    d.write(DATA, &[7; 8192]);
    bitmap.reset();
    header(&d, VIRTIO_BLK_T_OUT, 0);
    d.submit(&[ro(HDR, 16), ro(DATA, 8192), wr(STATUS, 1)]);
    bitmap.reset();
    assert_eq!(dev.process_queue(), Some(1));
    assert!(!page(DATA) && !page(DATA + 0x1000));
    // A read fills two pages: both are marked, the next one is not.
    header(&d, VIRTIO_BLK_T_IN, 0);
    d.submit(&[ro(HDR, 16), wr(DATA, 8192), wr(STATUS, 1)]);
    bitmap.reset();
    assert_eq!(dev.process_queue(), Some(1));
    assert_eq!(status(&d), OK);
    assert!(page(DATA) && page(DATA + 0x1000));
    assert!(!page(DATA + 0x2000));
}
