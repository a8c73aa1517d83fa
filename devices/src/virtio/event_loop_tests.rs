//! A block device behind the mmio transport, served by a real event-manager loop on its own
//! thread: the path a guest request takes in the VMM.

use std::io::Write;

use virtio_bindings::bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempfile::TempFile;

use super::block::{Block, BlockConfig};
use super::mmio::MmioTransport;
use super::test_utils::{
    guest_memory, interrupt, ro, wait_readable, wr, Driver, EventLoop, DATA_BASE,
};
use super::INT_VRING;
use crate::fault::BlockFaults;

fn w<D: crate::virtio::VirtioDevice>(t: &mut MmioTransport<D>, off: u64, v: u32) {
    t.mmio_write(MmioAddress(0), off, &v.to_le_bytes());
}

fn r<D: crate::virtio::VirtioDevice>(t: &mut MmioTransport<D>, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.mmio_read(MmioAddress(0), off, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn block_read_through_transport_and_event_loop() {
    let event_loop = EventLoop::start();
    let img = TempFile::new().unwrap();
    let content: Vec<u8> = (0..8 * 512u32).map(|i| (i % 251) as u8).collect();
    img.as_file().write_all(&content).unwrap();
    let block = Block::new(
        BlockConfig {
            path: img.as_path().to_path_buf(),
            read_only: false,
            id: None,
            cache: Default::default(),
        },
        Some(event_loop.endpoint.clone()),
        BlockFaults::none(),
    )
    .unwrap();

    let mem = guest_memory();
    let irq = interrupt();
    let mut t = MmioTransport::new(
        Box::new(block),
        mem.clone(),
        irq.clone(),
        vec![EventFd::new(EFD_NONBLOCK).unwrap()],
    )
    .unwrap();
    let mut d = Driver::new(&mem, 64);

    // Driver bring-up: ACK, DRIVER, features, FEATURES_OK, queue 0, DRIVER_OK.
    w(&mut t, 0x70, 1);
    w(&mut t, 0x70, 3);
    w(&mut t, 0x14, 1);
    let hi = r(&mut t, 0x10);
    w(&mut t, 0x24, 1);
    w(&mut t, 0x20, hi);
    w(&mut t, 0x70, 0xb);
    w(&mut t, 0x38, 64);
    w(&mut t, 0x80, d.mock.desc_table_addr().0 as u32);
    w(&mut t, 0x90, d.mock.avail_addr().0 as u32);
    w(&mut t, 0xa0, d.used_addr().0 as u32);
    w(&mut t, 0x44, 1);
    w(&mut t, 0x70, 0xf);
    assert_eq!(r(&mut t, 0x70), 0xf);

    let hdr = DATA_BASE;
    let status = DATA_BASE + 0x100;
    let data = DATA_BASE + 0x1000;
    let mut h = VIRTIO_BLK_T_IN.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&2u64.to_le_bytes());
    d.write(hdr, &h);
    d.write(status, &[0xee]);
    d.submit(&[ro(hdr, 16), wr(data, 1024), wr(status, 1)]);
    w(&mut t, 0x50, 0);

    wait_readable(irq.eventfd());
    assert_eq!(r(&mut t, 0x60) & INT_VRING, INT_VRING);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0), (0, 1025));
    assert_eq!(d.read(status, 1)[0], VIRTIO_BLK_S_OK as u8);
    assert_eq!(d.read(data, 1024), content[1024..2048]);

    // Reset takes the handler off the loop; notifications then go nowhere.
    w(&mut t, 0x70, 0);
    assert_eq!(r(&mut t, 0x70), 0);
    d.submit(&[ro(hdr, 16), wr(data, 1024), wr(status, 1)]);
    w(&mut t, 0x50, 0);
    // The loop must still be alive and responsive after the removal.
    event_loop
        .endpoint
        .call_blocking(|_| Ok::<_, event_manager::Error>(()))
        .unwrap();
    assert_eq!(d.used_idx(), 1);
}
