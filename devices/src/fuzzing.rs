//! Entry points of the cargo-fuzz targets (`devices/fuzz/`). They live here so that
//! `cargo test` replays fixed seeds through exactly the code the fuzzer runs.
//!
//! Each takes arbitrary bytes and must never panic, hang or touch memory outside the guest.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::fault::{BlockFaults, FaultEngine, FaultRules};
use crate::virtio::block::backend::{BlockBackend, FaultLayer, RawFile, WriteCache};
use crate::virtio::block::handler::BlockRequests;
use crate::virtio::mmio::MmioTransport;
use crate::virtio::queue_handler::QueueHandler;
use crate::virtio::rng::Rng;
use crate::virtio::VirtioInterrupt;
use crate::GuestMemory;

/// First region of the fuzzed guest; a second page sits after a hole at `HOLE_END`.
const LOW_SIZE: usize = 0x1_0000;
const HOLE_END: u64 = 0x2_0000;
const DISK_SECTORS: u64 = 64;

fn fuzz_memory() -> Option<GuestMemory> {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), LOW_SIZE),
        (GuestAddress(HOLE_END), 0x1000),
    ])
    .ok()
}

/// An in-memory disk image (no files left behind, no disk I/O).
fn memfd_disk(bytes: u64) -> Option<File> {
    // SAFETY: the name is a valid C string; the returned fd is checked before use.
    let fd = unsafe { libc::memfd_create(c"kiln-fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(bytes).ok()?;
    Some(file)
}

/// Rules that put every fault action on the request path (flag bit 2).
const FUZZ_RULES: &str = r#"
seed = 1
[[block]]
op = "write"
action = "torn"
keep_bytes = 700
probability = 0.3
[[block]]
action = "eio"
probability = 0.2
[[block]]
action = "corrupt"
probability = 0.5
[[block]]
action = "lose"
probability = 0.3
[[block]]
action = "delay"
delay_ms = 1
probability = 0.5
"#;

/// Block request processing. Input: 8 layout bytes (queue size exponent, descriptor table,
/// avail and used ring offsets, option flags: bit 0 read-only, bit 1 EVENT_IDX, bit 2 fault
/// rules, bit 3 a write-back cache of 8 KiB spilling to a memfd) followed by the guest memory
/// contents.
/// Returns how many chains were completed (0 if the layout was rejected).
pub fn block_queue(data: &[u8]) -> usize {
    let Some((layout, content)) = data.split_first_chunk::<8>() else {
        return 0;
    };
    let Some(mem) = fuzz_memory() else {
        return 0;
    };
    let n = content.len().min(LOW_SIZE);
    if mem.write_slice(&content[..n], GuestAddress(0)).is_err() {
        return 0;
    }
    let size = 1u16 << (layout[0] % 9);
    let at = |lo: u8, hi: u8| u64::from(u16::from_le_bytes([lo, hi]));
    let flags = layout[7];
    let Ok(mut queue) = Queue::new(size) else {
        return 0;
    };
    queue.set_size(size);
    queue.set_ready(true);
    queue.set_event_idx(flags & 2 != 0);
    if queue
        .try_set_desc_table_address(GuestAddress(at(layout[1], layout[2]) & !0xf))
        .and_then(|()| {
            queue.try_set_avail_ring_address(GuestAddress(at(layout[3], layout[4]) & !1))
        })
        .and_then(|()| queue.try_set_used_ring_address(GuestAddress(at(layout[5], layout[6]) & !3)))
        .is_err()
        || !queue.is_valid(&mem)
    {
        return 0;
    }
    let Some(disk) = memfd_disk(DISK_SECTORS * 512) else {
        return 0;
    };
    let mut backend: Box<dyn BlockBackend> = Box::new(RawFile::from_file(disk, DISK_SECTORS * 512));
    if flags & 8 != 0 {
        let Some(spill) = memfd_disk(0) else {
            return 0;
        };
        backend = Box::new(WriteCache::new(backend, spill, 8192));
    }
    let engine = FaultEngine::new();
    if flags & 4 != 0 {
        let Ok(rules) = FaultRules::from_toml(FUZZ_RULES, "fuzz") else {
            return 0;
        };
        if engine.set_rules(rules).is_err() {
            return 0;
        }
    }
    let backend: Box<dyn BlockBackend> =
        Box::new(FaultLayer::new(backend, BlockFaults::new(engine, 0)));
    let requests = BlockRequests::new(
        Arc::new(std::sync::Mutex::new(backend)),
        DISK_SECTORS,
        flags & 1 != 0,
        *b"fuzz-disk-id-0000000",
    );
    let (Ok(evt), Ok(irq)) = (EventFd::new(EFD_NONBLOCK), EventFd::new(EFD_NONBLOCK)) else {
        return 0;
    };
    let interrupt = Arc::new(VirtioInterrupt::new(irq));
    let mut handler = QueueHandler::new(mem, queue, evt, interrupt, requests);
    let completed = handler.process_queue();
    // A second pass sees the state the first one left (used ring, broken flag); then the
    // delayed completions are published (due after 1 ms).
    let completed = completed + handler.process_queue();
    if handler.deferred_count() > 0 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    completed + handler.complete_due()
}

/// The fault rules parser and engine. Input: a rules file (TOML, or JSON if it parses as
/// JSON); valid rules are then asked about a fixed mix of block requests and frames.
/// Returns how many faults fired (0 for rejected input).
pub fn fault_rules(data: &[u8]) -> usize {
    use crate::fault::{BlockOp, NetDirection, NetFaults, VsockFaults};
    let text = String::from_utf8_lossy(data);
    let rules = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => FaultRules::from_json(v),
        Err(_) => FaultRules::from_toml(&text, "fuzz"),
    };
    let Ok(rules) = rules else {
        return 0;
    };
    let engine = FaultEngine::new();
    if engine.set_rules(rules).is_err() {
        return 0;
    }
    let block = BlockFaults::new(engine.clone(), 0);
    let net = NetFaults::new(engine.clone(), 0);
    let vsock = VsockFaults::new(engine);
    let mut fired = 0;
    for n in 0..16u64 {
        let offset = n.wrapping_mul(0x1_0000_0001);
        for op in [
            BlockOp::Read { offset, len: 4096 },
            BlockOp::Write {
                offset,
                len: 1 << 20,
            },
            BlockOp::Flush,
        ] {
            fired += usize::from(block.decide(n, &op).is_some());
        }
        let frame = data.get(..data.len().min(256)).unwrap_or_default();
        fired += usize::from(net.decide(NetDirection::ToGuest, n, frame).is_some());
        fired += usize::from(vsock.reset_connection(n, 52, 1 << 30));
    }
    fired
}

/// The virtio-mmio register interface. Input: 7-byte operations
/// `[kind, offset lo, offset hi, value (4 bytes LE)]`; kind bit 0 = write, bits 1-2 = size.
pub fn mmio_registers(data: &[u8]) {
    let Some(mem) = fuzz_memory() else {
        return;
    };
    let (Ok(evt), Ok(irq)) = (EventFd::new(EFD_NONBLOCK), EventFd::new(EFD_NONBLOCK)) else {
        return;
    };
    let interrupt = Arc::new(VirtioInterrupt::new(irq));
    let Ok(mut transport) = MmioTransport::new(Box::new(Rng::new(None)), mem, interrupt, vec![evt])
    else {
        return;
    };
    for op in data.chunks_exact(7) {
        let len = [4usize, 1, 2, 8][usize::from((op[0] >> 1) & 3)];
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]) & 0x1ff);
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&op[3..7]);
        if op[0] & 1 == 1 {
            transport.mmio_write(MmioAddress(0), offset, &bytes[..len]);
        } else {
            transport.mmio_read(MmioAddress(0), offset, &mut bytes[..len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout whose rings fit in the first page, followed by memory with a read request.
    fn block_seed() -> Vec<u8> {
        // size 16 (1 << 4), desc 0x0, avail 0x100, used 0x200, writable disk.
        let mut seed = vec![4, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0];
        let mut mem = vec![0u8; 0x2000];
        let desc = |i: usize, addr: u64, len: u32, flags: u16, next: u16, m: &mut Vec<u8>| {
            let o = i * 16;
            m[o..o + 8].copy_from_slice(&addr.to_le_bytes());
            m[o + 8..o + 12].copy_from_slice(&len.to_le_bytes());
            m[o + 12..o + 14].copy_from_slice(&flags.to_le_bytes());
            m[o + 14..o + 16].copy_from_slice(&next.to_le_bytes());
        };
        // header (IN, sector 1) at 0x1000, data 0x1100 (512), status 0x1400.
        desc(0, 0x1000, 16, 1, 1, &mut mem);
        desc(1, 0x1100, 512, 3, 2, &mut mem);
        desc(2, 0x1400, 1, 2, 0, &mut mem);
        mem[0x1008..0x1010].copy_from_slice(&1u64.to_le_bytes());
        mem[0x1400] = 0xee;
        // avail: flags 0, idx 1, ring[0] = 0.
        mem[0x102] = 1;
        seed.extend_from_slice(&mem);
        seed
    }

    #[test]
    fn block_seed_is_served() {
        // The seed really reaches the request path; a broken header makes it a bare completion.
        assert_eq!(block_queue(&block_seed()), 1);
        let mut no_rings = block_seed();
        no_rings[3] = 0xff;
        no_rings[4] = 0xff;
        assert_eq!(
            block_queue(&no_rings),
            0,
            "avail ring outside memory is rejected"
        );
    }

    #[test]
    fn block_fixed_seeds() {
        let base = block_seed();
        let mut seeds: Vec<Vec<u8>> = vec![vec![], vec![0; 7], vec![0xff; 64], base.clone()];
        // Flip bytes of the descriptor table, header and rings one at a time.
        for i in [8, 9, 16, 20, 22, 24, 30, 40, 0x108, 0x10a, 0x1008, 0x100c] {
            for v in [0x00, 0x01, 0x7f, 0xff] {
                let mut s = base.clone();
                if let Some(b) = s.get_mut(i) {
                    *b = v;
                }
                seeds.push(s);
            }
        }
        for flags in 0..16 {
            let mut s = base.clone();
            s[7] = flags;
            seeds.push(s);
        }
        // A queue straddling the end of the first region and one of max size.
        seeds.push(vec![8, 0xf0, 0xff, 0, 0, 0, 0x10, 0]);
        seeds.push([vec![8, 0, 0, 0, 0x10, 0, 0x20, 0], vec![0xff; LOW_SIZE]].concat());
        for s in &seeds {
            block_queue(s);
        }
    }

    #[test]
    fn fault_rules_seeds() {
        let example = include_str!("../fuzz/seeds/fault_rules/example.toml");
        assert!(fault_rules(example.as_bytes()) > 0, "the seed fires rules");
        let json = br#"{"seed":3,"block":[{"action":"corrupt","probability":0.5}]}"#;
        assert!(fault_rules(json) > 0);
        for bad in [
            &b""[..],
            b"[[block]]",
            b"\xff\xfe",
            b"seed = -1",
            b"{\"block\":[{}]}",
        ] {
            assert_eq!(fault_rules(bad), 0);
        }
        // Every prefix of the example: truncated files never panic.
        for n in 0..example.len() {
            fault_rules(&example.as_bytes()[..n]);
        }
    }

    #[test]
    fn mmio_fixed_seeds() {
        let mut bring_up = Vec::new();
        let mut op = |kind: u8, off: u16, v: u32| {
            bring_up.push(kind);
            bring_up.extend_from_slice(&off.to_le_bytes());
            bring_up.extend_from_slice(&v.to_le_bytes());
        };
        op(1, 0x70, 1);
        op(1, 0x70, 3);
        op(1, 0x24, 1);
        op(1, 0x20, 1);
        op(1, 0x70, 0xb);
        op(1, 0x38, 16);
        op(1, 0x90, 0x100);
        op(1, 0xa0, 0x200);
        op(1, 0x44, 1);
        op(1, 0x70, 0xf);
        op(0, 0x70, 0);
        op(1, 0x50, 0);
        op(3, 0x70, 0);
        op(7, 0x100, 0);
        op(1, 0x70, 0);
        for s in [vec![], vec![0xff; 70], bring_up.clone(), bring_up.repeat(3)] {
            mmio_registers(&s);
        }
    }
}
