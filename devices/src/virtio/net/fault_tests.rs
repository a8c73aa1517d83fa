//! Every net fault action in both directions, through real descriptor chains, a real
//! datagram socket as the switch and a real event loop (the held-frame timer included).

use std::time::{Duration, Instant};

use super::held_frames::REORDER_WAIT;
use super::test_driver::guest_memory;
use super::tests::{faults, frame, FakeSwitchPort, Harness};
use super::NET_HDR_LEN;

const HDR: [u8; NET_HDR_LEN] = [0; NET_HDR_LEN];

fn bit_difference(a: &[u8], b: &[u8]) -> u32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Sends `frames` from the guest and returns what the switch received, in order.
fn tx(rules: &str, frames: Vec<Vec<u8>>, expect: usize) -> Vec<Vec<u8>> {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, faults(rules));
    for f in &frames {
        h.tx.add_readable(&[&HDR, f]);
    }
    h.kick_tx();
    let got = (0..expect).map(|_| port.recv()).collect();
    h.run();
    assert!(port.nothing_pending(), "more frames than expected");
    got
}

/// Sends `frames` to the guest (which has plenty of buffers) and returns what it got.
fn rx(rules: &str, frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, faults(rules));
    for _ in 0..8 {
        h.rx.add_writable(&[2048]);
    }
    h.kick_rx();
    for f in &frames {
        port.socket.send_to_addr(f, &h.vmm_addr).unwrap();
    }
    h.run();
    let mut got = Vec::new();
    while let Some((head, len)) = h.rx.next_used() {
        got.push(h.rx.written(head, len)[NET_HDR_LEN..].to_vec());
    }
    got
}

#[test]
fn duplicate_both_ways() {
    let a = frame(1, 60);
    assert_eq!(
        tx("[[net]]\naction = \"duplicate\"\n", vec![a.clone()], 2),
        [a.clone(), a.clone()]
    );
    assert_eq!(
        rx("[[net]]\naction = \"duplicate\"\n", vec![a.clone()]),
        [a.clone(), a]
    );
}

#[test]
fn corrupt_flips_exactly_one_bit_both_ways() {
    let a = frame(1, 200);
    let sent = tx("[[net]]\naction = \"corrupt\"\n", vec![a.clone()], 1);
    assert_eq!(bit_difference(&sent[0], &a), 1);
    let got = rx("[[net]]\naction = \"corrupt\"\n", vec![a.clone()]);
    assert_eq!(bit_difference(&got[0], &a), 1);
}

#[test]
fn reorder_lets_the_next_frame_overtake() {
    let (a, b, c) = (frame(1, 60), frame(2, 60), frame(3, 60));
    let rules = "[[net]]\naction = \"reorder\"\ncount = 1\n";
    assert_eq!(
        tx(rules, vec![a.clone(), b.clone(), c.clone()], 3),
        [b.clone(), a.clone(), c.clone()]
    );
    assert_eq!(rx(rules, vec![a.clone(), b.clone(), c.clone()]), [b, a, c]);
}

#[test]
fn a_reordered_frame_with_no_successor_still_arrives() {
    let a = frame(1, 60);
    let start = Instant::now();
    assert_eq!(
        rx("[[net]]\naction = \"reorder\"\n", vec![a.clone()]),
        vec![a.clone()]
    );
    assert!(start.elapsed() >= REORDER_WAIT);
    assert_eq!(
        tx("[[net]]\naction = \"reorder\"\n", vec![a.clone()], 1),
        [a]
    );
}

#[test]
fn delay_holds_a_frame_without_holding_up_the_next() {
    let (a, b) = (frame(1, 60), frame(2, 60));
    let rules = "[[net]]\naction = \"delay\"\ndelay_ms = 120\ncount = 1\n";
    let start = Instant::now();
    // The first frame is delayed; the second overtakes it.
    assert_eq!(
        tx(rules, vec![a.clone(), b.clone()], 2),
        [b.clone(), a.clone()]
    );
    assert!(start.elapsed() >= Duration::from_millis(120));
    let start = Instant::now();
    assert_eq!(rx(rules, vec![a.clone(), b.clone()]), [b, a]);
    assert!(start.elapsed() >= Duration::from_millis(120));
}

#[test]
fn drop_and_header_filters_on_the_device() {
    let udp = |dport: u16| {
        let mut f = vec![0u8; 14 + 20 + 8 + 10];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = 17;
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    };
    let rules = "[[net]]\ndir = \"rx\"\nip_proto = 17\nport = 53\naction = \"drop\"\n";
    let got = rx(rules, vec![udp(53), udp(80), udp(53), frame(9, 60)]);
    assert_eq!(got, [udp(80), frame(9, 60)]);
    // The same rule leaves transmitted frames alone.
    assert_eq!(tx(rules, vec![udp(53)], 1), [udp(53)]);
}
