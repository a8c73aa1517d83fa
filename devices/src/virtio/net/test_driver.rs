//! Test-only guest driver: builds real descriptor chains in real guest memory with
//! virtio-queue's `MockSplitQueue` and reads back what the device put in the used ring.
//! (Shared with the vsock tests; belongs in `virtio/` once the lead merges the branches.)

use std::collections::HashMap;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemory;

/// Guest memory big enough for a few queues and their buffers.
pub(crate) fn guest_memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
}

/// One descriptor as the driver describes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Desc {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

/// The driver side of one split queue.
pub(crate) struct GuestQueue<'a> {
    mem: &'a GuestMemory,
    mock: MockSplitQueue<'a, GuestMemory>,
    size: u16,
    next_desc: u16,
    next_buf: u64,
    buf_end: u64,
    used_seen: u16,
    chains: HashMap<u16, Vec<Desc>>,
}

impl<'a> GuestQueue<'a> {
    /// A queue with its rings at `ring` and data buffers allocated from `buf..buf+4MiB`.
    pub(crate) fn new(mem: &'a GuestMemory, ring: u64, buf: u64, size: u16) -> Self {
        GuestQueue {
            mem,
            mock: MockSplitQueue::create(mem, GuestAddress(ring), size),
            size,
            next_desc: 0,
            next_buf: buf,
            buf_end: buf + (4 << 20),
            used_seen: 0,
            chains: HashMap::new(),
        }
    }

    /// The device-side `Queue` for these rings.
    pub(crate) fn device_queue(&self) -> Queue {
        self.mock.create_queue().unwrap()
    }

    fn alloc(&mut self, len: u32) -> u64 {
        if self.next_buf + u64::from(len) > self.buf_end {
            self.next_buf = self.buf_end - (4 << 20);
        }
        let addr = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(16);
        addr
    }

    /// Makes `descs` available as one chain; returns the head index.
    pub(crate) fn add_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let last = i + 1 == descs.len();
                let mut flags = 0u16;
                if d.device_writes {
                    flags |= VRING_DESC_F_WRITE as u16;
                }
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let next = (head + i as u16 + 1) % self.size;
                RawDescriptor::from(Descriptor::new(d.addr, d.len, flags, next))
            })
            .collect();
        assert!(head as usize + raw.len() <= self.size as usize);
        self.mock.add_desc_chains(&raw, head).unwrap();
        self.next_desc = (head + descs.len() as u16) % self.size;
        if self.next_desc as usize + 8 > self.size as usize {
            self.next_desc = 0;
        }
        self.chains.insert(head, descs.to_vec());
        head
    }

    /// A chain of device-readable buffers holding `parts`.
    pub(crate) fn add_readable(&mut self, parts: &[&[u8]]) -> u16 {
        let descs: Vec<Desc> = parts
            .iter()
            .map(|p| {
                let addr = self.alloc(p.len() as u32);
                self.mem.write_slice(p, GuestAddress(addr)).unwrap();
                Desc {
                    addr,
                    len: p.len() as u32,
                    device_writes: false,
                }
            })
            .collect();
        self.add_chain(&descs)
    }

    /// A chain of zeroed device-writable buffers of the given lengths.
    pub(crate) fn add_writable(&mut self, lens: &[u32]) -> u16 {
        let descs: Vec<Desc> = lens
            .iter()
            .map(|&len| {
                let addr = self.alloc(len);
                self.mem
                    .write_slice(&vec![0xee; len as usize], GuestAddress(addr))
                    .unwrap();
                Desc {
                    addr,
                    len,
                    device_writes: true,
                }
            })
            .collect();
        self.add_chain(&descs)
    }

    /// The next used element `(head, len)`, if the device returned one.
    pub(crate) fn next_used(&mut self) -> Option<(u16, u32)> {
        let used = self.mock.used_addr().0;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        if idx == self.used_seen {
            return None;
        }
        let slot = u64::from(self.used_seen % self.size);
        let id: u32 = self
            .mem
            .read_obj(GuestAddress(used + 4 + 8 * slot))
            .unwrap();
        let len: u32 = self
            .mem
            .read_obj(GuestAddress(used + 8 + 8 * slot))
            .unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id as u16, len))
    }

    /// The first `len` bytes the device wrote into the chain at `head`.
    pub(crate) fn written(&self, head: u16, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut left = len as usize;
        for d in &self.chains[&head] {
            let n = left.min(d.len as usize);
            let mut buf = vec![0u8; n];
            self.mem.read_slice(&mut buf, GuestAddress(d.addr)).unwrap();
            out.extend_from_slice(&buf);
            left -= n;
        }
        out
    }
}
