//! virtio-blk request path throughput and latency, without a VM: a hand-written driver puts
//! read/write chains in real guest memory and the device serves them on this thread.
//!
//! `cargo run --release -p devices --example block_throughput [image-dir]`
//! (the image goes to `image-dir`, default the system temp dir; it is page-cached, so this
//! measures the device model, not the disk).

use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::fault::NoFaults;
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::{ActivateContext, VirtioDevice, VirtioInterrupt};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const QSIZE: u16 = 256;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const HDRS: u64 = 0x1_0000;
const DATA: u64 = 0x10_0000;
const IMAGE_BYTES: u64 = 256 << 20;

struct Driver {
    mem: devices::GuestMemory,
    avail_idx: u16,
}

impl Driver {
    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = GuestAddress(DESC + u64::from(i) * 16);
        self.mem.write_obj(addr, a).unwrap();
        self.mem.write_obj(len, a.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, a.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, a.unchecked_add(14)).unwrap();
    }

    /// Request `slot` (0..QSIZE/3) of type `t` at `sector`, `len` bytes.
    fn request(&mut self, slot: u16, t: u32, sector: u64, len: u32) {
        let hdr = HDRS + u64::from(slot) * 32;
        self.mem.write_obj(t, GuestAddress(hdr)).unwrap();
        self.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
        let head = slot * 3;
        let data_flags = if t == 0 { 1 | 2 } else { 1 };
        self.desc(head, hdr, 16, 1, head + 1);
        self.desc(
            head + 1,
            DATA + u64::from(slot) * u64::from(len),
            len,
            data_flags,
            head + 2,
        );
        self.desc(head + 2, hdr + 16, 1, 2, 0);
        let ring = GuestAddress(AVAIL + 4 + u64::from(self.avail_idx % QSIZE) * 2);
        self.mem.write_obj(head, ring).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("kiln-blk-bench-{}.img", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(IMAGE_BYTES).unwrap();
    drop(f);

    let mem: devices::GuestMemory =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 512 << 20)]).unwrap();
    let mut block = Block::new(
        BlockConfig {
            path: path.clone(),
            read_only: false,
            id: None,
        },
        None,
        Arc::new(NoFaults),
    )
    .unwrap();
    let mut q = Queue::new(QSIZE).unwrap();
    q.set_ready(true);
    q.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
    q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
    q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
    let irq = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    block
        .activate(ActivateContext {
            mem: mem.clone(),
            queues: vec![q],
            queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
            interrupt: irq,
            acked_features: 0,
        })
        .unwrap();
    let mut d = Driver { mem, avail_idx: 0 };

    println!(
        "request      MiB/s  us per request (batch mean) p50 p95 p99; 64 requests per notification"
    );
    for (name, t) in [("read", 0u32), ("write", 1u32)] {
        for len in [4096u32, 65536, 1 << 20] {
            let sectors_per = u64::from(len) / 512;
            let max_sector = IMAGE_BYTES / 512 - sectors_per;
            let batches = (256 << 20) / (u64::from(len) * 64);
            let batches = batches.clamp(20, 2000);
            let mut times = Vec::new();
            let mut bytes = 0u64;
            let mut sector = 0;
            let start = Instant::now();
            for _ in 0..batches {
                for slot in 0..64 {
                    d.request(slot, t, sector, len);
                    sector = (sector + sectors_per) % max_sector;
                }
                let t0 = Instant::now();
                let done = block.process_queue().unwrap();
                times.push(t0.elapsed() / 64);
                assert_eq!(done, 64);
                bytes += u64::from(len) * 64;
            }
            let total = start.elapsed();
            times.sort();
            println!(
                "{name:5} {:>5}K {:>8.0} {:>8.1} {:>7.1} {:>7.1}",
                len / 1024,
                bytes as f64 / (1 << 20) as f64 / total.as_secs_f64(),
                percentile(&times, 0.5).as_secs_f64() * 1e6,
                percentile(&times, 0.95).as_secs_f64() * 1e6,
                percentile(&times, 0.99).as_secs_f64() * 1e6,
            );
        }
    }
    std::fs::remove_file(&path).unwrap();
}
