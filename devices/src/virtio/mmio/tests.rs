//! The virtio-mmio transport driven the way a guest driver drives it, with real devices.

use std::sync::Arc;

use virtio_bindings::bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::mmio::{MmioError, MmioTransport, MAGIC_VALUE};
use crate::virtio::rng::Rng;
use crate::virtio::test_utils::{fired, guest_memory, interrupt, Driver};
use crate::virtio::{device_type, VirtioInterrupt, INT_CONFIG, VIRTIO_F_VERSION_1};

const MAGIC: u64 = 0x00;
const VERSION: u64 = 0x04;
const DEVICE_ID: u64 = 0x08;
const DEVICE_FEATURES: u64 = 0x10;
const DEVICE_FEATURES_SEL: u64 = 0x14;
const DRIVER_FEATURES: u64 = 0x20;
const DRIVER_FEATURES_SEL: u64 = 0x24;
const QUEUE_SEL: u64 = 0x30;
const QUEUE_NUM_MAX: u64 = 0x34;
const QUEUE_NUM: u64 = 0x38;
const QUEUE_READY: u64 = 0x44;
const QUEUE_NOTIFY: u64 = 0x50;
const INTERRUPT_STATUS: u64 = 0x60;
const INTERRUPT_ACK: u64 = 0x64;
const STATUS: u64 = 0x70;
const QUEUE_DESC_LOW: u64 = 0x80;
const QUEUE_DESC_HIGH: u64 = 0x84;
const QUEUE_DRIVER_LOW: u64 = 0x90;
const QUEUE_DEVICE_LOW: u64 = 0xa0;

fn r<D: crate::virtio::VirtioDevice>(t: &mut MmioTransport<D>, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.mmio_read(MmioAddress(0), off, &mut b);
    u32::from_le_bytes(b)
}

fn w<D: crate::virtio::VirtioDevice>(t: &mut MmioTransport<D>, off: u64, v: u32) {
    t.mmio_write(MmioAddress(0), off, &v.to_le_bytes());
}

fn rng_transport(irq: &Arc<VirtioInterrupt>) -> MmioTransport {
    MmioTransport::new(
        Box::new(Rng::new(None)) as Box<dyn crate::virtio::VirtioDevice>,
        guest_memory(),
        irq.clone(),
        vec![EventFd::new(EFD_NONBLOCK).unwrap()],
    )
    .unwrap()
}

fn device_features<D: crate::virtio::VirtioDevice>(t: &mut MmioTransport<D>) -> u64 {
    w(t, DEVICE_FEATURES_SEL, 0);
    let lo = r(t, DEVICE_FEATURES);
    w(t, DEVICE_FEATURES_SEL, 1);
    let hi = r(t, DEVICE_FEATURES);
    u64::from(lo) | (u64::from(hi) << 32)
}

/// ACK, DRIVER, write `features`, FEATURES_OK; returns the status read back.
fn negotiate<D: crate::virtio::VirtioDevice>(t: &mut MmioTransport<D>, features: u64) -> u32 {
    w(t, STATUS, ACK);
    w(t, STATUS, ACK | DRIVER);
    w(t, DRIVER_FEATURES_SEL, 0);
    w(t, DRIVER_FEATURES, features as u32);
    w(t, DRIVER_FEATURES_SEL, 1);
    w(t, DRIVER_FEATURES, (features >> 32) as u32);
    w(t, STATUS, ACK | DRIVER | FEATURES_OK);
    r(t, STATUS)
}

fn set_queue<D: crate::virtio::VirtioDevice>(
    t: &mut MmioTransport<D>,
    index: u32,
    size: u32,
    desc: u64,
    avail: u64,
    used: u64,
) {
    w(t, QUEUE_SEL, index);
    w(t, QUEUE_NUM, size);
    w(t, QUEUE_DESC_LOW, desc as u32);
    w(t, QUEUE_DESC_HIGH, (desc >> 32) as u32);
    w(t, QUEUE_DRIVER_LOW, avail as u32);
    w(t, QUEUE_DRIVER_LOW + 4, (avail >> 32) as u32);
    w(t, QUEUE_DEVICE_LOW, used as u32);
    w(t, QUEUE_DEVICE_LOW + 4, (used >> 32) as u32);
    w(t, QUEUE_READY, 1);
}

const ALL_OK: u32 = ACK | DRIVER | FEATURES_OK | DRIVER_OK;

#[test]
fn identification_registers() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    assert_eq!(r(&mut t, MAGIC), MAGIC_VALUE);
    assert_eq!(r(&mut t, VERSION), 2);
    assert_eq!(r(&mut t, DEVICE_ID), device_type::RNG);
    assert_eq!(device_features(&mut t), VIRTIO_F_VERSION_1);
    w(&mut t, DEVICE_FEATURES_SEL, 7);
    assert_eq!(r(&mut t, DEVICE_FEATURES), 0);
    assert_eq!(r(&mut t, QUEUE_NUM_MAX), 256);
    w(&mut t, QUEUE_SEL, 1);
    assert_eq!(r(&mut t, QUEUE_NUM_MAX), 0, "no queue 1");
}

#[test]
fn full_bring_up_and_notify() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    let features = device_features(&mut t);
    assert_eq!(negotiate(&mut t, features), ACK | DRIVER | FEATURES_OK);
    let mem = guest_memory();
    let d = Driver::new(&mem, 16);
    set_queue(
        &mut t,
        0,
        16,
        d.mock.desc_table_addr().0,
        d.mock.avail_addr().0,
        d.used_addr().0,
    );
    assert_eq!(r(&mut t, QUEUE_READY), 1);
    w(&mut t, STATUS, ALL_OK);
    assert_eq!(r(&mut t, STATUS), ALL_OK);
    assert!(t.state().activated);
    assert_eq!(t.state().queues[0].size, 16);
    // Without an ioeventfd, a QueueNotify write reaches the queue's event fd.
    w(&mut t, QUEUE_NOTIFY, 0);
    assert!(fired(&t.queue_evts()[0]));
    w(&mut t, QUEUE_NOTIFY, 5);
    assert!(!fired(&t.queue_evts()[0]));
    // Queue registers are frozen after DRIVER_OK.
    w(&mut t, QUEUE_NUM, 4);
    assert_eq!(t.state().queues[0].size, 16);
}

#[test]
fn unknown_or_missing_features_refused() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    // A feature the device never offered.
    assert_eq!(
        negotiate(&mut t, VIRTIO_F_VERSION_1 | (1 << 5)),
        ACK | DRIVER
    );
    w(&mut t, STATUS, 0);
    // A legacy driver (no VERSION_1).
    assert_eq!(negotiate(&mut t, 0), ACK | DRIVER);
    // The refusal leaves DRIVER_OK impossible.
    w(&mut t, STATUS, ACK | DRIVER | DRIVER_OK);
    assert_ne!(r(&mut t, STATUS) & NEEDS_RESET, 0);
    assert!(!t.state().activated);
    w(&mut t, STATUS, 0);
    assert_eq!(r(&mut t, STATUS), 0);
    assert_eq!(
        negotiate(&mut t, VIRTIO_F_VERSION_1),
        ACK | DRIVER | FEATURES_OK
    );
    // Features are frozen once FEATURES_OK is set.
    w(&mut t, DRIVER_FEATURES_SEL, 0);
    w(&mut t, DRIVER_FEATURES, 0xffff_ffff);
    assert_eq!(t.state().acked_features, VIRTIO_F_VERSION_1);
}

#[test]
fn features_before_driver_bit_ignored() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    w(&mut t, DRIVER_FEATURES_SEL, 1);
    w(&mut t, DRIVER_FEATURES, 1);
    assert_eq!(t.state().acked_features, 0);
    // Queue registers before FEATURES_OK are ignored too.
    w(&mut t, QUEUE_NUM, 8);
    assert_eq!(t.state().queues[0].size, 256);
}

/// Brings up a transport with the given queue layout and returns the status after DRIVER_OK.
fn bring_up(
    size: u32,
    desc: u64,
    avail: u64,
    used: u64,
    ready: bool,
) -> (u32, Arc<VirtioInterrupt>) {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    set_queue(&mut t, 0, size, desc, avail, used);
    if !ready {
        w(&mut t, QUEUE_READY, 0);
    }
    w(&mut t, STATUS, ALL_OK);
    let status = r(&mut t, STATUS);
    assert_eq!(status & DRIVER_OK != 0, t.state().activated);
    (status, irq)
}

#[test]
fn bad_queue_configuration_needs_reset() {
    let good = bring_up(16, 0, 0x100, 0x200, true).0;
    assert_eq!(good, ALL_OK);
    let cases: &[(&str, u32, u64, u64, u64, bool)] = &[
        ("size not a power of two", 15, 0, 0x100, 0x200, true),
        ("size zero", 0, 0, 0x100, 0x200, true),
        ("size above max", 512, 0, 0x2000, 0x3000, true),
        ("size above u16", 0x1_0000, 0, 0x100, 0x200, true),
        (
            "descriptors outside memory",
            16,
            1 << 40,
            0x100,
            0x200,
            true,
        ),
        ("avail ring outside memory", 16, 0, 0x1f_fff0, 0x200, true),
        ("used ring outside memory", 16, 0, 0x100, !3u64, true),
        ("misaligned descriptors", 16, 0x8, 0x100, 0x200, true),
        ("misaligned used ring", 16, 0, 0x100, 0x202, true),
        ("queue not ready", 16, 0, 0x100, 0x200, false),
    ];
    for &(name, size, desc, avail, used, ready) in cases {
        let (status, irq) = bring_up(size, desc, avail, used, ready);
        assert_eq!(status & DRIVER_OK, 0, "{name}");
        assert_ne!(status & NEEDS_RESET, 0, "{name}");
        assert_ne!(irq.status() & INT_CONFIG, 0, "{name}");
        assert!(fired(irq.eventfd()), "{name}");
    }
}

#[test]
fn reset_clears_state_and_allows_reactivation() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    set_queue(&mut t, 0, 1 << 9, 0, 0x100, 0x200);
    w(&mut t, STATUS, ALL_OK);
    assert_ne!(r(&mut t, STATUS) & NEEDS_RESET, 0);
    assert_ne!(r(&mut t, INTERRUPT_STATUS), 0);
    w(&mut t, STATUS, 0);
    assert_eq!(r(&mut t, STATUS), 0);
    assert_eq!(r(&mut t, INTERRUPT_STATUS), 0);
    assert_eq!(t.state().queues[0].size, 256);
    assert!(!t.state().queues[0].ready);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    set_queue(&mut t, 0, 16, 0, 0x100, 0x200);
    w(&mut t, STATUS, ALL_OK);
    assert_eq!(r(&mut t, STATUS), ALL_OK);
    // And reset after activation.
    w(&mut t, STATUS, 0);
    assert!(!t.state().activated);
}

#[test]
fn status_bits_cannot_be_cleared_or_forged() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    w(&mut t, STATUS, ACK);
    assert_eq!(r(&mut t, STATUS), ACK | DRIVER | FEATURES_OK);
    w(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | NEEDS_RESET);
    assert_eq!(r(&mut t, STATUS) & NEEDS_RESET, 0);
    w(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | FAILED);
    assert_ne!(r(&mut t, STATUS) & FAILED, 0);
}

#[test]
fn interrupt_ack() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    irq.signal_used_queue();
    irq.signal_config_change();
    assert_eq!(r(&mut t, INTERRUPT_STATUS), 3);
    w(&mut t, INTERRUPT_ACK, 1);
    assert_eq!(r(&mut t, INTERRUPT_STATUS), 2);
    w(&mut t, INTERRUPT_ACK, 0xffff_ffff);
    assert_eq!(r(&mut t, INTERRUPT_STATUS), 0);
}

#[test]
fn odd_sizes_and_offsets_are_ignored() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    for len in [0usize, 1, 2, 3, 8, 16] {
        let mut buf = vec![0xaau8; len];
        t.mmio_read(MmioAddress(0), MAGIC, &mut buf);
        assert!(buf.iter().all(|&b| b == 0), "read of {len} bytes");
        t.mmio_write(MmioAddress(0), STATUS, &vec![0xffu8; len]);
        assert_eq!(t.state().status, 0, "write of {len} bytes");
    }
    for off in [1u64, 2, 3, 0x71, 0x0fd, 0x0b0, 0xf0] {
        let mut b = [0xaau8; 4];
        t.mmio_read(MmioAddress(0), off, &mut b);
        assert_eq!(b, [0; 4], "read at {off:#x}");
        w(&mut t, off, ACK);
    }
    assert_eq!(t.state().status, 0);
    // Config space of rng is empty; any read there is zero, huge offsets included.
    for off in [0x100u64, 0x1ff, 0xfff, u64::MAX] {
        let mut b = [0xaau8; 8];
        t.mmio_read(MmioAddress(0), off, &mut b);
        assert_eq!(b, [0; 8]);
        t.mmio_write(MmioAddress(0), off, &[1, 2, 3]);
    }
    // Selecting an absent queue: its registers are inert.
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    w(&mut t, QUEUE_SEL, u32::MAX);
    w(&mut t, QUEUE_NUM, 8);
    w(&mut t, QUEUE_READY, 1);
    assert_eq!(r(&mut t, QUEUE_READY), 0);
    w(&mut t, QUEUE_NOTIFY, u32::MAX);
}

#[test]
fn queue_event_count_must_match() {
    let irq = interrupt();
    let err = MmioTransport::new(Box::new(Rng::new(None)), guest_memory(), irq, vec![])
        .err()
        .unwrap();
    assert!(matches!(
        err,
        MmioError::QueueEvtCount { queues: 1, evts: 0 }
    ));
}

#[test]
fn state_round_trips_through_serde_types() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    set_queue(&mut t, 0, 16, 0x1000, 0x2000, 0x3000);
    let q = t.state().queues[0];
    let qs: virtio_queue::QueueState = q.into();
    assert_eq!(
        (qs.size, qs.desc_table, qs.avail_ring, qs.used_ring),
        (16, 0x1000, 0x2000, 0x3000)
    );
    assert_eq!(crate::virtio::mmio::QueueConfig::from(qs), q);
}

#[test]
fn high_address_halves_are_combined() {
    let irq = interrupt();
    let mut t = rng_transport(&irq);
    negotiate(&mut t, VIRTIO_F_VERSION_1);
    w(&mut t, QUEUE_DESC_LOW, 0x1000);
    w(&mut t, QUEUE_DESC_HIGH, 0x2);
    assert_eq!(t.state().queues[0].desc_table, 0x2_0000_1000);
}

/// A running rng over real rings: serve one request, save, restore into a new transport and
/// device over the same memory. The restored device is running, skips the request already
/// served and serves the next one; its interrupt status comes back too.
#[test]
fn restored_transport_resumes_at_the_saved_ring_position() {
    use crate::persist::Persist;
    use crate::virtio::mmio::MmioHostParts;
    use crate::virtio::test_utils::{wr, DATA_BASE};
    let mem = guest_memory();
    let mut d = Driver::new(&mem, 16);
    let irq = interrupt();
    let evt = || vec![EventFd::new(EFD_NONBLOCK).unwrap()];
    let mut t = MmioTransport::new(Rng::new(None), mem.clone(), irq.clone(), evt()).unwrap();
    let features = device_features(&mut t);
    negotiate(&mut t, features);
    let (desc, avail, used) = (
        d.mock.desc_table_addr().0,
        d.mock.avail_addr().0,
        d.used_addr().0,
    );
    set_queue(&mut t, 0, 16, desc, avail, used);
    w(&mut t, STATUS, ALL_OK);
    d.submit(&[wr(DATA_BASE, 64)]);
    assert_eq!(t.device().process_queue(), Some(1));
    let saved = t.save();
    assert!(saved.registers.activated);
    assert_eq!(saved.registers.queues[0].next_avail, 1);
    assert_eq!(saved.registers.queues[0].next_used, 1);
    assert_ne!(saved.interrupt_status, 0);

    let irq2 = interrupt();
    let parts = MmioHostParts {
        device: Rng::new(None),
        mem: mem.clone(),
        interrupt: irq2.clone(),
        queue_evts: evt(),
    };
    let mut t2 = MmioTransport::restore(parts, &saved).unwrap();
    assert_eq!(r(&mut t2, STATUS), ALL_OK);
    assert_eq!(r(&mut t2, INTERRUPT_STATUS), saved.interrupt_status);
    assert!(fired(irq2.eventfd()), "pending interrupt not raised again");
    d.submit(&[wr(DATA_BASE + 0x100, 64)]);
    assert_eq!(t2.device().process_queue(), Some(1));
    assert_eq!(d.used_idx(), 2);

    // A state that does not fit the device is refused, not trusted.
    let mut bad = saved.clone();
    bad.registers.queues.push(bad.registers.queues[0]);
    let parts = MmioHostParts {
        device: Rng::new(None),
        mem: mem.clone(),
        interrupt: interrupt(),
        queue_evts: evt(),
    };
    assert!(matches!(
        MmioTransport::restore(parts, &bad),
        Err(MmioError::Restore(_))
    ));
    // So are features the device never offered.
    let mut bad = saved.clone();
    bad.registers.acked_features |= 1 << 40;
    let parts = MmioHostParts {
        device: Rng::new(None),
        mem: mem.clone(),
        interrupt: interrupt(),
        queue_evts: evt(),
    };
    assert!(matches!(
        MmioTransport::restore(parts, &bad),
        Err(MmioError::Restore(_))
    ));
    // So is a running queue whose rings lie outside guest memory.
    let mut bad = saved;
    bad.registers.queues[0].desc_table = 1 << 40;
    let parts = MmioHostParts {
        device: Rng::new(None),
        mem,
        interrupt: interrupt(),
        queue_evts: evt(),
    };
    assert!(matches!(
        MmioTransport::restore(parts, &bad),
        Err(MmioError::Restore(_))
    ));
}
