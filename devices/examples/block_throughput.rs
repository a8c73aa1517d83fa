//! virtio-blk request path throughput and latency, without a VM: a hand-written driver puts
//! read/write chains in real guest memory and the device serves them on this thread.
//!
//! It compares backend stacks on the same image in one run, batches interleaved so that
//! machine noise hits every stack alike:
//! - `raw`: the image file alone (the request path without a fault layer);
//! - `raw-again`: the same as `raw`, a second time: its ratio to `raw` is the noise floor
//!   of this run, against which the other ratios are read;
//! - `faults-off`: the fault layer with no rules over it (what every disk runs with);
//! - `faults-other`: rules armed for another disk (the layer takes its lock-free fast path
//!   only for the "any rules" check, then asks the engine);
//!
//! and prints p50/p95/p99 per request and each stack's throughput relative to `raw`. Then it
//! times the fault layer alone over a backend that does nothing (interleaved with that
//! backend bare), which gives the layer's own cost per request in nanoseconds, and sets it
//! against the p50 of a 4 KiB read.
//!
//! `cargo run --release -p devices --example block_throughput [image-dir] [rounds (5)]`
//! (the image goes to `image-dir`, default the system temp dir; it is page-cached, so this
//! measures the device model, not the disk).

use std::time::{Duration, Instant};

use devices::fault::{BlockFaults, FaultEngine, FaultRules};
use devices::virtio::block::backend::{BlockBackend, Completion, FaultLayer, GuestSlice, RawFile};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::{ActivateContext, VirtioDevice, VirtioInterrupt};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const QSIZE: u16 = 256;
const IMAGE_BYTES: u64 = 256 << 20;
/// Requests per notification.
const BATCH: u16 = 64;
/// Guest memory per stack: rings, headers, then data for one batch of 1 MiB requests.
const AREA: u64 = 96 << 20;

/// The driver side of one device's queue in its own area of guest memory.
struct Driver {
    mem: devices::GuestMemory,
    base: u64,
    avail_idx: u16,
}

impl Driver {
    fn desc_addr(&self) -> u64 {
        self.base
    }
    fn avail_addr(&self) -> u64 {
        self.base + 0x1000
    }
    fn used_addr(&self) -> u64 {
        self.base + 0x2000
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = GuestAddress(self.desc_addr() + u64::from(i) * 16);
        self.mem.write_obj(addr, a).unwrap();
        self.mem.write_obj(len, a.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, a.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, a.unchecked_add(14)).unwrap();
    }

    /// Request `slot` (0..QSIZE/3) of type `t` at `sector`, `len` bytes.
    fn request(&mut self, slot: u16, t: u32, sector: u64, len: u32) {
        let hdr = self.base + 0x1_0000 + u64::from(slot) * 32;
        self.mem.write_obj(t, GuestAddress(hdr)).unwrap();
        self.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
        let head = slot * 3;
        let data_flags = if t == 0 { 1 | 2 } else { 1 };
        let data = self.base + 0x10_0000 + u64::from(slot) * u64::from(len);
        self.desc(head, hdr, 16, 1, head + 1);
        self.desc(head + 1, data, len, data_flags, head + 2);
        self.desc(head + 2, hdr + 16, 1, 2, 0);
        let ring = GuestAddress(self.avail_addr() + 4 + u64::from(self.avail_idx % QSIZE) * 2);
        self.mem.write_obj(head, ring).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(self.avail_addr() + 2))
            .unwrap();
    }
}

struct Stack {
    name: &'static str,
    block: Block,
    driver: Driver,
    /// Per-request time of each batch (batch time / BATCH).
    times: Vec<Duration>,
    busy: Duration,
    bytes: u64,
}

fn stack(
    name: &'static str,
    index: u64,
    path: &std::path::Path,
    mem: &devices::GuestMemory,
    layer: impl FnOnce(RawFile) -> Box<dyn BlockBackend>,
) -> Stack {
    let raw = RawFile::open(path, false).unwrap();
    let mut block = Block::with_backend(
        BlockConfig {
            path: path.to_path_buf(),
            read_only: false,
            id: None,
            cache: Default::default(),
        },
        None,
        layer(raw),
    )
    .unwrap();
    let driver = Driver {
        mem: mem.clone(),
        base: index * AREA,
        avail_idx: 0,
    };
    let mut q = Queue::new(QSIZE).unwrap();
    q.set_ready(true);
    q.try_set_desc_table_address(GuestAddress(driver.desc_addr()))
        .unwrap();
    q.try_set_avail_ring_address(GuestAddress(driver.avail_addr()))
        .unwrap();
    q.try_set_used_ring_address(GuestAddress(driver.used_addr()))
        .unwrap();
    let irq = std::sync::Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    block
        .activate(ActivateContext {
            mem: mem.clone(),
            queues: vec![q],
            queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
            interrupt: irq,
            acked_features: 0,
        })
        .unwrap();
    Stack {
        name,
        block,
        driver,
        times: Vec::new(),
        busy: Duration::ZERO,
        bytes: 0,
    }
}

/// A backend that does nothing, to time the layers above it.
struct NullDisk;

impl BlockBackend for NullDisk {
    fn capacity(&self) -> u64 {
        IMAGE_BYTES
    }
    fn read(&mut self, _: u64, _: &[GuestSlice<'_>]) -> std::io::Result<Completion> {
        Ok(Completion::NOW)
    }
    fn write(&mut self, _: u64, _: &[GuestSlice<'_>]) -> std::io::Result<Completion> {
        Ok(Completion::NOW)
    }
    fn flush(&mut self) -> std::io::Result<Completion> {
        Ok(Completion::NOW)
    }
}

/// Nanoseconds per 4 KiB read through `disk`, over `n` calls.
fn ns_per_read(disk: &mut dyn BlockBackend, buf: &mut [u8], n: u64) -> f64 {
    let t0 = Instant::now();
    for i in 0..n {
        let bufs = [GuestSlice::from(&mut buf[..])];
        std::hint::black_box(disk.read((i % 1000) * 4096, std::hint::black_box(&bufs))).ok();
    }
    t0.elapsed().as_secs_f64() * 1e9 / n as f64
}

/// The fault layer's own cost: samples of (bare, layered) alternate; returns their p50s.
fn layer_cost() -> (f64, f64) {
    let mut bare: Box<dyn BlockBackend> = Box::new(NullDisk);
    let mut layered: Box<dyn BlockBackend> =
        Box::new(FaultLayer::new(NullDisk, BlockFaults::none()));
    let mut buf = vec![0u8; 4096];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        a.push(ns_per_read(bare.as_mut(), &mut buf, 20_000));
        b.push(ns_per_read(layered.as_mut(), &mut buf, 20_000));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    (a[a.len() / 2], b[b.len() / 2])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let rounds: u64 = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let path = dir.join(format!("kiln-blk-bench-{}.img", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(IMAGE_BYTES).unwrap();
    drop(f);

    let mem: devices::GuestMemory =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (4 * AREA) as usize)]).unwrap();
    let armed_elsewhere = FaultEngine::new();
    armed_elsewhere
        .set_rules(
            FaultRules::from_toml("[[block]]\ndisk = 1\naction = \"eio\"\n", "bench").unwrap(),
        )
        .unwrap();
    let mut stacks = [
        stack("raw", 0, &path, &mem, |raw| Box::new(raw)),
        stack("raw-again", 3, &path, &mem, |raw| Box::new(raw)),
        stack("faults-off", 1, &path, &mem, |raw| {
            Box::new(FaultLayer::new(raw, BlockFaults::none()))
        }),
        stack("faults-other", 2, &path, &mem, |raw| {
            Box::new(FaultLayer::new(raw, BlockFaults::new(armed_elsewhere, 0)))
        }),
    ];

    println!(
        "{} requests per notification, batches interleaved across stacks, {rounds} round(s)",
        BATCH
    );
    println!(
        "request      stack          MiB/s   p50 us   p95 us   p99 us  MiB/s vs raw  p50 vs raw"
    );
    let mut read_4k_p50_ns = None;
    for (name, t) in [("read", 0u32), ("write", 1u32)] {
        for len in [4096u32, 65536, 1 << 20] {
            let sectors_per = u64::from(len) / 512;
            let max_sector = IMAGE_BYTES / 512 - sectors_per;
            let batches =
                ((256 << 20) / (u64::from(len) * u64::from(BATCH))).clamp(20, 2000) * rounds;
            for s in stacks.iter_mut() {
                s.times.clear();
                s.busy = Duration::ZERO;
                s.bytes = 0;
            }
            let mut sector = 0;
            for b in 0..batches {
                // Rotate which stack goes first so none always gets the warm cache.
                for k in 0..stacks.len() {
                    let n = stacks.len();
                    let s = &mut stacks[(k + b as usize) % n];
                    let mut sec = sector;
                    for slot in 0..BATCH {
                        s.driver.request(slot, t, sec, len);
                        sec = (sec + sectors_per) % max_sector;
                    }
                    let t0 = Instant::now();
                    let done = s.block.process_queue().unwrap();
                    let elapsed = t0.elapsed();
                    assert_eq!(done, usize::from(BATCH));
                    s.times.push(elapsed / u32::from(BATCH));
                    s.busy += elapsed;
                    s.bytes += u64::from(len) * u64::from(BATCH);
                }
                sector = (sector + sectors_per * u64::from(BATCH)) % max_sector;
            }
            let mib_s = |s: &Stack| s.bytes as f64 / (1 << 20) as f64 / s.busy.as_secs_f64();
            let base = mib_s(&stacks[0]);
            for s in stacks.iter_mut() {
                s.times.sort();
            }
            let base_p50 = percentile(&stacks[0].times, 0.5).as_secs_f64();
            if t == 0 && len == 4096 {
                read_4k_p50_ns = Some(base_p50 * 1e9);
            }
            for s in stacks.iter() {
                println!(
                    "{name:5} {:>5}K  {:<12} {:>8.0} {:>8.1} {:>8.1} {:>8.1}  {:>12.3}  {:>10.3}",
                    len / 1024,
                    s.name,
                    mib_s(s),
                    us(percentile(&s.times, 0.5)),
                    us(percentile(&s.times, 0.95)),
                    us(percentile(&s.times, 0.99)),
                    mib_s(s) / base,
                    percentile(&s.times, 0.5).as_secs_f64() / base_p50,
                );
            }
        }
    }
    std::fs::remove_file(&path).unwrap();

    let (bare, layered) = layer_cost();
    let read_4k_p50 = read_4k_p50_ns.unwrap_or(f64::NAN);
    println!(
        "fault layer, no rules: {:.1} ns per request ({bare:.1} ns bare, {layered:.1} ns layered, p50 of 200 x 20000 calls) = {:.3}% of a 4 KiB read's p50 ({:.0} ns)",
        layered - bare,
        (layered - bare) / read_4k_p50 * 100.0,
        read_4k_p50,
    );
}
