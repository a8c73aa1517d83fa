//! The switch with the VMM's own switch backend (`devices::virtio::net::SwitchBackend`) on
//! both ends, as two VMs would use it.

use std::io;
use std::time::{Duration, Instant};

use devices::virtio::net::{NetBackend, SwitchBackend};

use super::*;

/// Receives one frame from a non-blocking backend, waiting at most a generous bound.
fn recv(backend: &mut SwitchBackend) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        match backend.recv(&mut buf) {
            Ok(n) => return buf[..n].to_vec(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("no frame: {e}"),
        }
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    [&dst[..], &src[..], &[0x08, 0x00], payload].concat()
}

#[test]
fn two_vmm_backends_talk_through_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let sw = Switch::start(dir.path().join("net0.sock"), 7).unwrap();
    let mut vm1 = SwitchBackend::new(sw.path(), None).unwrap();
    let mut vm2 = SwitchBackend::new(sw.path(), None).unwrap();
    sw.attach("vm1", &vm1.local_addr().unwrap()).unwrap();
    sw.attach("vm2", &vm2.local_addr().unwrap()).unwrap();
    let (mac1, mac2) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);

    let arp = frame([0xff; 6], mac1, b"who-has");
    vm1.send(&arp).unwrap();
    assert_eq!(recv(&mut vm2), arp);
    let reply = frame(mac1, mac2, b"is-at");
    vm2.send(&reply).unwrap();
    assert_eq!(recv(&mut vm1), reply);

    sw.partition("vm1", "vm2");
    vm1.send(&frame(mac2, mac1, b"lost")).unwrap();
    // Rules apply when the switch handles a frame: heal only once this one was dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.stats("vm2").unwrap().dropped == 0 {
        assert!(Instant::now() < deadline, "frame was never dropped");
        std::thread::sleep(Duration::from_millis(1));
    }
    sw.heal_all();
    let after = frame(mac2, mac1, b"after-heal");
    vm1.send(&after).unwrap();
    assert_eq!(recv(&mut vm2), after);
}
