//! virtio-rng against real guest memory and rings.

use crate::virtio::rng::{Rng, MAX_BYTES_PER_REQUEST};
use crate::virtio::test_utils::{fired, guest_memory, interrupt, ro, wr, Driver, DATA_BASE};
use crate::virtio::{device_type, VirtioDevice, VIRTIO_F_VERSION_1};

fn active<'a>(
    mem: &'a crate::GuestMemory,
) -> (
    Rng,
    Driver<'a>,
    std::sync::Arc<crate::virtio::VirtioInterrupt>,
) {
    let d = Driver::new(mem, 16);
    let irq = interrupt();
    let (ctx, _evt) = d.activate_context(&irq);
    let mut rng = Rng::new(None);
    rng.activate(ctx).unwrap();
    (rng, d, irq)
}

#[test]
fn identity() {
    let rng = Rng::new(None);
    assert_eq!(rng.device_type(), device_type::RNG);
    assert_eq!(rng.features(), VIRTIO_F_VERSION_1);
    assert_eq!(rng.queue_max_sizes(), &[256]);
}

#[test]
fn fills_writable_buffers() {
    let mem = guest_memory();
    let (rng, mut d, irq) = active(&mem);
    d.write(DATA_BASE, &[0; 0x400]);
    // A readable buffer in the chain is skipped, the writable ones are filled.
    d.submit(&[
        ro(DATA_BASE + 0x300, 16),
        wr(DATA_BASE, 64),
        wr(DATA_BASE + 0x100, 128),
    ]);
    assert_eq!(rng.process_queue(), Some(1));
    assert_eq!(d.used(0), (0, 192));
    assert!(fired(irq.eventfd()));
    let a = d.read(DATA_BASE, 64);
    let b = d.read(DATA_BASE + 0x100, 128);
    // 1536 random bits all zero is not going to happen.
    assert!(a.iter().any(|&x| x != 0) && b.iter().any(|&x| x != 0));
    assert_ne!(a[..32], b[..32]);
    assert_eq!(
        d.read(DATA_BASE + 0x300, 16),
        vec![0; 16],
        "readable buffer untouched"
    );
    assert_eq!(
        d.read(DATA_BASE + 64, 16),
        vec![0; 16],
        "past the buffer untouched"
    );
}

#[test]
fn request_size_is_capped() {
    let mem = guest_memory();
    let (rng, mut d, _irq) = active(&mem);
    let big = 1 << 20;
    d.write(DATA_BASE, &vec![0; big]);
    d.submit(&[wr(DATA_BASE, big as u32), wr(DATA_BASE + big as u64, 4096)]);
    rng.process_queue();
    assert_eq!(d.used(0), (0, MAX_BYTES_PER_REQUEST as u32));
    let after_cap = d.read(DATA_BASE + MAX_BYTES_PER_REQUEST as u64, 4096);
    assert!(after_cap.iter().all(|&x| x == 0));
}

#[test]
fn buffers_outside_memory_and_loops() {
    let mem = guest_memory();
    let (rng, mut d, _irq) = active(&mem);
    d.submit(&[wr(1 << 40, 64)]);
    d.submit(&[wr(u64::MAX - 8, 64)]);
    d.submit(&[wr(0x1f_fff0, 64)]);
    assert_eq!(rng.process_queue(), Some(3));
    assert_eq!(d.used(0).1, 0);
    assert_eq!(d.used(1).1, 0);
    assert_eq!(d.used(2).1, 0);
    // A self-referencing writable descriptor: cut at the queue size, capped in bytes.
    let looped = Driver::raw(DATA_BASE, 0x8000, 0x1 | 0x2, 3);
    d.submit_raw(&[looped], 3);
    assert_eq!(rng.process_queue(), Some(1));
    assert_eq!(d.used(3), (3, MAX_BYTES_PER_REQUEST as u32));
}
