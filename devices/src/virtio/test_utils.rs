//! Test helpers: real guest memory and a driver-side view of a split queue built with
//! virtio-queue's `MockSplitQueue` (real rings in real guest memory).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use event_manager::EventManager;
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivateContext, VirtioInterrupt};
use crate::GuestMemory;

/// Size of the test guest memory.
pub const MEM_SIZE: u64 = 0x20_0000;
/// Where tests put data buffers (the rings live at 0).
pub const DATA_BASE: u64 = 0x1_0000;

/// 2 MiB of guest memory at address 0.
pub fn guest_memory() -> GuestMemory {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// An interrupt backed by a fresh non-blocking event fd.
pub fn interrupt() -> Arc<VirtioInterrupt> {
    Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()))
}

/// True if the event fd has been written since the last read (consumes the count).
pub fn fired(evt: &EventFd) -> bool {
    evt.read().is_ok()
}

/// Blocks until `evt` is readable, failing the test after a generous hang guard.
pub fn wait_readable(evt: &EventFd) {
    let mut pfd = libc::pollfd {
        fd: evt.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = Duration::from_secs(20).as_millis() as i32;
    // SAFETY: one valid pollfd, length 1.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
    assert_eq!(n, 1, "event fd never became readable");
}

/// One buffer of a chain: guest address, length, device-writable.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// Device-readable buffer.
pub fn ro(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: false,
    }
}

/// Device-writable buffer.
pub fn wr(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        writable: true,
    }
}

/// The driver side of one split queue.
pub struct Driver<'a> {
    pub mem: &'a GuestMemory,
    pub mock: MockSplitQueue<'a, GuestMemory>,
    next_desc: u16,
    size: u16,
}

impl<'a> Driver<'a> {
    /// Rings of `size` entries at guest address 0.
    pub fn new(mem: &'a GuestMemory, size: u16) -> Self {
        Driver {
            mem,
            mock: MockSplitQueue::create(mem, GuestAddress(0), size),
            next_desc: 0,
            size,
        }
    }

    /// A ready device-side queue over these rings.
    pub fn queue(&self) -> Queue {
        let mut q = self.mock.create_queue::<Queue>().unwrap();
        q.try_set_used_ring_address(self.used_addr()).unwrap();
        q
    }

    /// Where the used ring really is. `MockSplitQueue` sizes the avail ring in entries, not
    /// bytes, so its used ring overlaps the avail ring's second half; ours starts after it.
    pub fn used_addr(&self) -> GuestAddress {
        let end = self.mock.avail_addr().0 + 4 + 2 * u64::from(self.size) + 2;
        GuestAddress((end + 3) & !3)
    }

    /// An activation context for a single-queue device over these rings.
    pub fn activate_context(&self, interrupt: &Arc<VirtioInterrupt>) -> (ActivateContext, EventFd) {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues: vec![self.queue()],
            queue_evts: vec![evt.try_clone().unwrap()],
            interrupt: interrupt.clone(),
            acked_features: 0,
        };
        (ctx, evt)
    }

    /// Publishes a chain made of `bufs`; returns its head index. Chains never wrap around
    /// the descriptor table, and the avail ring wraps as a driver's does, so a test can
    /// submit any number of requests.
    pub fn submit(&mut self, bufs: &[Buf]) -> u16 {
        let mut start = self.next_desc;
        if usize::from(start) + bufs.len() > usize::from(self.size) {
            start = 0;
        }
        for (i, b) in bufs.iter().enumerate() {
            let i = i as u16;
            let mut flags = 0;
            if b.writable {
                flags |= VRING_DESC_F_WRITE as u16;
            }
            if usize::from(i) + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let desc =
                RawDescriptor::from(SplitDescriptor::new(b.addr, b.len, flags, start + i + 1));
            self.mock.desc_table().store(start + i, desc).unwrap();
        }
        let avail = self.mock.avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % self.size))
            .unwrap()
            .store(start);
        avail.idx().store(idx.wrapping_add(1));
        self.next_desc = (start + bufs.len() as u16) % self.size;
        start
    }

    /// Writes descriptors verbatim at table index `at` and publishes index `at` as a head.
    pub fn submit_raw(&self, descs: &[RawDescriptor], at: u16) {
        self.mock.add_desc_chains(descs, at).unwrap();
    }

    /// Raw descriptor with explicit flags and next.
    pub fn raw(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    /// The used ring's index.
    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(self.used_addr().unchecked_add(2))
            .unwrap()
    }

    /// Used element `i` (modulo the ring size): (head id, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = self
            .used_addr()
            .unchecked_add(4 + 8 * u64::from(i % self.size));
        let id: u32 = self.mem.read_obj(at).unwrap();
        let len: u32 = self.mem.read_obj(at.unchecked_add(4)).unwrap();
        (id, len)
    }

    /// Overwrites the avail ring's index (hostile drivers).
    pub fn set_avail_idx(&self, idx: u16) {
        self.mock.avail().idx().store(idx);
    }

    /// Writes `bytes` into guest memory.
    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    /// Reads `len` bytes from guest memory.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// An event-manager loop on its own thread, as the VMM runs it; stopped on drop.
pub struct EventLoop {
    stop: Arc<AtomicBool>,
    pub endpoint: super::EventLoopEndpoint,
    thread: Option<thread::JoinHandle<()>>,
}

impl EventLoop {
    pub fn start() -> Self {
        let mut em = EventManager::<super::Subscriber>::new().unwrap();
        let endpoint = em.remote_endpoint();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                em.run().unwrap();
            }
        });
        EventLoop {
            stop,
            endpoint,
            thread: Some(thread),
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.endpoint.kick();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Brings `t` up through its registers as a guest driver does: every offered feature, queue
/// 0 over `d`'s rings (its full size), then `DRIVER_OK`, which activates the device.
pub fn bring_up<D: super::VirtioDevice>(t: &mut super::mmio::MmioTransport<D>, d: &Driver) {
    use virtio_bindings::bindings::virtio_config::{
        VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK, VIRTIO_CONFIG_S_DRIVER as DRIVER,
        VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
    };
    use vm_device::bus::MmioAddress;
    use vm_device::MutDeviceMmio;
    // Register offsets of virtio-mmio version 2 (spec 4.2.2).
    const DEVICE_FEATURES: u64 = 0x10;
    const DEVICE_FEATURES_SEL: u64 = 0x14;
    const DRIVER_FEATURES: u64 = 0x20;
    const DRIVER_FEATURES_SEL: u64 = 0x24;
    const QUEUE_SEL: u64 = 0x30;
    const QUEUE_NUM: u64 = 0x38;
    const QUEUE_READY: u64 = 0x44;
    const STATUS: u64 = 0x70;
    const QUEUE_DESC: u64 = 0x80;
    const QUEUE_DRIVER: u64 = 0x90;
    const QUEUE_DEVICE: u64 = 0xa0;
    let mut w = |off: u64, v: u32| t.mmio_write(MmioAddress(0), off, &v.to_le_bytes());
    w(STATUS, ACK);
    w(STATUS, ACK | DRIVER);
    let mut features = [0u32; 2];
    for (sel, f) in features.iter_mut().enumerate() {
        t.mmio_write(
            MmioAddress(0),
            DEVICE_FEATURES_SEL,
            &(sel as u32).to_le_bytes(),
        );
        let mut b = [0u8; 4];
        t.mmio_read(MmioAddress(0), DEVICE_FEATURES, &mut b);
        *f = u32::from_le_bytes(b);
    }
    let mut w = |off: u64, v: u32| t.mmio_write(MmioAddress(0), off, &v.to_le_bytes());
    for (sel, f) in features.iter().enumerate() {
        w(DRIVER_FEATURES_SEL, sel as u32);
        w(DRIVER_FEATURES, *f);
    }
    w(STATUS, ACK | DRIVER | FEATURES_OK);
    w(QUEUE_SEL, 0);
    w(QUEUE_NUM, u32::from(d.size));
    for (off, addr) in [
        (QUEUE_DESC, d.mock.desc_table_addr().0),
        (QUEUE_DRIVER, d.mock.avail_addr().0),
        (QUEUE_DEVICE, d.used_addr().0),
    ] {
        w(off, addr as u32);
        w(off + 4, (addr >> 32) as u32);
    }
    w(QUEUE_READY, 1);
    w(STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert!(t.state().activated, "the device did not activate");
}
