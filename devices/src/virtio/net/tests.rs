//! Net device tests at the real boundary: real guest memory and descriptor chains, a real
//! datagram socket standing in for the switch, real epoll through `EventManager`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::counters::AtomicCounters;
use super::event_handler::NetEventHandler;
use super::handler::NetHandler;
use super::test_driver::{guest_memory, Desc, GuestQueue};
use super::*;
use crate::fault::{FaultEngine, FaultRules, NetFaults};
use crate::virtio::{ActivateContext, Subscriber, VirtioDevice, VirtioInterrupt};
use crate::GuestMemory;

const RX_RING: u64 = 0x1000;
const TX_RING: u64 = 0x9000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x80_0000;

/// The switch end of the link: a datagram socket bound at a path.
pub(crate) struct FakeSwitchPort {
    _dir: tempfile::TempDir,
    path: PathBuf,
    pub(crate) socket: UnixDatagram,
}

impl FakeSwitchPort {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switch.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeSwitchPort {
            _dir: dir,
            path,
            socket,
        }
    }

    pub(crate) fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let (n, _) = self.socket.recv_from(&mut buf).expect("frame from the VMM");
        buf.truncate(n);
        buf
    }

    pub(crate) fn nothing_pending(&self) -> bool {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let r = self.socket.recv(&mut buf);
        self.socket.set_nonblocking(false).unwrap();
        r.is_err()
    }
}

/// A NIC hook with `rules` (TOML) in force.
pub(crate) fn faults(rules: &str) -> NetFaults {
    let engine = FaultEngine::new();
    engine
        .set_rules(FaultRules::from_toml(rules, "test").unwrap())
        .unwrap();
    NetFaults::new(engine, 0)
}

/// A handler subscribed to an in-thread event manager; tests drive the loop themselves.
pub(crate) struct Harness<'a> {
    em: EventManager<Subscriber>,
    handler: Arc<Mutex<NetEventHandler>>,
    pub(crate) rx: GuestQueue<'a>,
    pub(crate) tx: GuestQueue<'a>,
    rx_evt: EventFd,
    tx_evt: EventFd,
    irq: Arc<VirtioInterrupt>,
    counters: Arc<AtomicCounters>,
    pub(crate) vmm_addr: std::os::unix::net::SocketAddr,
}

impl<'a> Harness<'a> {
    pub(crate) fn new(mem: &'a GuestMemory, port: &FakeSwitchPort, fault: NetFaults) -> Self {
        let rx = GuestQueue::new(mem, RX_RING, RX_BUFS, QUEUE_SIZE);
        let tx = GuestQueue::new(mem, TX_RING, TX_BUFS, QUEUE_SIZE);
        let backend = SwitchBackend::new(&port.path, None).unwrap();
        let vmm_addr = backend.local_addr().unwrap();
        let rx_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let tx_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let counters = Arc::new(AtomicCounters::default());
        let handler = Arc::new(Mutex::new(NetEventHandler::new(NetHandler::new(
            mem.clone(),
            rx.device_queue(),
            tx.device_queue(),
            rx_evt.try_clone().unwrap(),
            tx_evt.try_clone().unwrap(),
            irq.clone(),
            Box::new(backend),
            fault,
            counters.clone(),
        ))));
        let mut em = EventManager::<Subscriber>::new().unwrap();
        em.add_subscriber(handler.clone());
        Harness {
            em,
            handler,
            rx,
            tx,
            rx_evt,
            tx_evt,
            irq,
            counters,
            vmm_addr,
        }
    }

    /// Runs the loop until nothing is ready (each round waits at most 200 ms for events).
    /// A loop that never goes idle is a bug (spinning on a ready fd), so it fails the test.
    pub(crate) fn run(&mut self) {
        for _ in 0..1000 {
            if self.em.run_with_timeout(200).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop never went idle");
    }

    pub(crate) fn kick_tx(&mut self) {
        self.tx_evt.write(1).unwrap();
        self.run();
    }

    pub(crate) fn kick_rx(&mut self) {
        self.rx_evt.write(1).unwrap();
        self.run();
    }

    pub(crate) fn counters(&self) -> NetCounters {
        self.counters.snapshot()
    }
}

pub(crate) fn frame(first: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| first.wrapping_add(i as u8)).collect()
}

#[test]
fn tx_frames_reach_the_switch_byte_exact_without_header() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    let f1 = frame(1, 60);
    let f2 = frame(9, 1514);
    // Header split across descriptors, frame split too.
    let hdr = [0u8; NET_HDR_LEN];
    h.tx.add_readable(&[&hdr[..5], &hdr[5..], &f1[..10], &f1[10..]]);
    h.tx.add_readable(&[&hdr, &f2]);
    h.kick_tx();
    assert_eq!(port.recv(), f1);
    assert_eq!(port.recv(), f2);
    assert_eq!(h.tx.next_used().map(|(_, len)| len), Some(0));
    assert!(h.tx.next_used().is_some());
    assert!(h.irq.eventfd().read().unwrap() >= 1);
    let c = h.counters();
    assert_eq!((c.tx_frames, c.tx_bytes, c.tx_drops), (2, 60 + 1514, 0));
}

#[test]
fn rx_frames_land_in_guest_buffers_behind_a_zeroed_header() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    let a = h.rx.add_writable(&[NET_HDR_LEN as u32 + 1514]);
    let b = h.rx.add_writable(&[4, 8, 2000]);
    h.kick_rx();
    let f1 = frame(3, 1000);
    let f2 = frame(7, 1514);
    port.socket.send_to_addr(&f1, &h.vmm_addr).unwrap();
    port.socket.send_to_addr(&f2, &h.vmm_addr).unwrap();
    h.run();
    let mut expected_hdr = [0u8; NET_HDR_LEN];
    expected_hdr[10] = 1; // num_buffers = 1
    for (head, f) in [(a, &f1), (b, &f2)] {
        let (used_head, len) = h.rx.next_used().expect("frame delivered");
        assert_eq!(used_head, head);
        assert_eq!(len as usize, NET_HDR_LEN + f.len());
        let got = h.rx.written(head, len);
        assert_eq!(got[..NET_HDR_LEN], expected_hdr);
        assert_eq!(&got[NET_HDR_LEN..], &f[..]);
    }
    let c = h.counters();
    assert_eq!((c.rx_frames, c.rx_bytes, c.rx_drops), (2, 2514, 0));
}

#[test]
fn rx_without_buffers_holds_the_frame_and_stops_polling_the_backend() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    let f1 = frame(1, 100);
    let f2 = frame(2, 100);
    port.socket.send_to_addr(&f1, &h.vmm_addr).unwrap();
    port.socket.send_to_addr(&f2, &h.vmm_addr).unwrap();
    h.run();
    assert!(h.handler.lock().unwrap().handler.holding_rx_frame());
    // The second frame is still readable on the socket, yet nothing is polled: no spinning.
    assert_eq!(h.em.run_with_timeout(0).unwrap(), 0);
    h.rx.add_writable(&[2048]);
    h.rx.add_writable(&[2048]);
    h.kick_rx();
    for f in [&f1, &f2] {
        let (head, len) = h.rx.next_used().unwrap();
        assert_eq!(&h.rx.written(head, len)[NET_HDR_LEN..], &f[..]);
    }
    assert!(!h.handler.lock().unwrap().handler.holding_rx_frame());
}

#[test]
fn malformed_and_oversized_tx_chains_are_dropped_and_the_device_keeps_working() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    let hdr = [0u8; NET_HDR_LEN];
    // Shorter than the header.
    h.tx.add_readable(&[&hdr[..7]]);
    // One frame byte over the limit.
    let big = vec![0x11u8; MAX_FRAME_LEN + 1];
    h.tx.add_readable(&[&hdr, &big]);
    // A device-writable descriptor in a tx chain.
    h.tx.add_chain(&[
        Desc {
            addr: TX_BUFS,
            len: 64,
            device_writes: false,
        },
        Desc {
            addr: TX_BUFS + 64,
            len: 64,
            device_writes: true,
        },
    ]);
    // A buffer outside guest memory.
    h.tx.add_chain(&[Desc {
        addr: 1 << 40,
        len: 100,
        device_writes: false,
    }]);
    let good = frame(5, 64);
    h.tx.add_readable(&[&hdr, &good]);
    h.kick_tx();
    assert_eq!(port.recv(), good);
    assert!(port.nothing_pending());
    for _ in 0..5 {
        assert!(h.tx.next_used().is_some(), "every chain is returned");
    }
    let c = h.counters();
    assert_eq!((c.tx_frames, c.tx_drops), (1, 4));
    // A frame of exactly the limit still goes through.
    let max = vec![0x22u8; MAX_FRAME_LEN];
    h.tx.add_readable(&[&hdr, &max]);
    h.kick_tx();
    assert_eq!(port.recv().len(), MAX_FRAME_LEN);
}

#[test]
fn rx_frame_bigger_than_the_buffer_is_dropped_and_the_buffer_reused() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    let head = h.rx.add_writable(&[NET_HDR_LEN as u32 + 100]);
    h.kick_rx();
    port.socket
        .send_to_addr(&frame(1, 101), &h.vmm_addr)
        .unwrap();
    let small = frame(2, 100);
    port.socket.send_to_addr(&small, &h.vmm_addr).unwrap();
    h.run();
    let (used, len) = h.rx.next_used().unwrap();
    assert_eq!(used, head);
    assert_eq!(&h.rx.written(head, len)[NET_HDR_LEN..], &small[..]);
    let c = h.counters();
    assert_eq!((c.rx_frames, c.rx_drops), (1, 1));
}

#[test]
fn fault_rule_drop_applies_in_both_directions() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    // The first frame each way is dropped.
    let rules = "[[net]]\ndir = \"tx\"\naction = \"drop\"\ncount = 1\n[[net]]\ndir = \"rx\"\naction = \"drop\"\ncount = 1\n";
    let mut h = Harness::new(&mem, &port, faults(rules));
    let hdr = [0u8; NET_HDR_LEN];
    let dropped = frame(0xff, 60);
    let kept = frame(0x01, 60);
    h.tx.add_readable(&[&hdr, &dropped]);
    h.tx.add_readable(&[&hdr, &kept]);
    h.kick_tx();
    assert_eq!(port.recv(), kept);
    h.rx.add_writable(&[2048]);
    h.kick_rx();
    port.socket.send_to_addr(&dropped, &h.vmm_addr).unwrap();
    port.socket.send_to_addr(&kept, &h.vmm_addr).unwrap();
    h.run();
    let (head, len) = h.rx.next_used().unwrap();
    assert_eq!(&h.rx.written(head, len)[NET_HDR_LEN..], &kept[..]);
    assert!(h.rx.next_used().is_none());
    let c = h.counters();
    assert_eq!(
        (c.tx_frames, c.tx_drops, c.rx_frames, c.rx_drops),
        (1, 1, 1, 1)
    );
}

#[test]
fn datagrams_from_anyone_but_the_switch_are_ignored() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    h.rx.add_writable(&[2048]);
    h.kick_rx();
    let stranger = UnixDatagram::unbound().unwrap();
    stranger.send_to_addr(&frame(9, 60), &h.vmm_addr).unwrap();
    let real = frame(1, 60);
    port.socket.send_to_addr(&real, &h.vmm_addr).unwrap();
    h.run();
    let (head, len) = h.rx.next_used().unwrap();
    assert_eq!(&h.rx.written(head, len)[NET_HDR_LEN..], &real[..]);
}

#[test]
fn switch_going_away_drops_frames_without_failing() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    std::fs::remove_file(&port.path).unwrap();
    let hdr = [0u8; NET_HDR_LEN];
    for _ in 0..3 {
        h.tx.add_readable(&[&hdr, &frame(1, 60)]);
    }
    h.kick_tx();
    assert_eq!(h.counters().tx_drops, 3);
    assert_eq!(h.tx.next_used().map(|u| u.0), Some(0));
}

#[test]
fn missing_switch_socket_is_a_clear_error() {
    let err = Net::new(
        NetConfig::parse("switch=/nonexistent/kiln-switch.sock").unwrap(),
        EventManager::<Subscriber>::new().unwrap().remote_endpoint(),
        NetFaults::none(),
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/kiln-switch.sock"), "{msg}");
    assert!(msg.contains("start the switch"), "{msg}");
}

#[test]
fn device_runs_on_a_real_event_manager_thread_and_survives_reset() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let (ep_tx, ep_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_loop = stop.clone();
    let event_loop = std::thread::spawn(move || {
        let mut em = EventManager::<Subscriber>::new().unwrap();
        ep_tx.send(em.remote_endpoint()).unwrap();
        while !stop_loop.load(std::sync::atomic::Ordering::SeqCst) {
            em.run_with_timeout(50).unwrap();
        }
    });
    let endpoint = ep_rx.recv().unwrap();
    let cfg = NetConfig {
        backend: NetBackendConfig::Switch {
            path: port.path.clone(),
            local: None,
        },
        mac: Some("02:00:00:00:00:2a".parse().unwrap()),
    };
    let mut net = Net::new(cfg, endpoint, NetFaults::none()).unwrap();
    assert_eq!(net.device_type(), 1);
    let mut cfg_bytes = [0u8; 8];
    net.read_config(0, &mut cfg_bytes);
    assert_eq!(cfg_bytes, [2, 0, 0, 0, 0, 0x2a, 1, 0]);

    for round in 0..2u8 {
        let mut tx = GuestQueue::new(&mem, TX_RING, TX_BUFS, QUEUE_SIZE);
        let rx = GuestQueue::new(&mem, RX_RING, RX_BUFS, QUEUE_SIZE);
        let tx_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        net.activate(ActivateContext {
            mem: mem.clone(),
            queues: vec![rx.device_queue(), tx.device_queue()],
            queue_evts: vec![
                EventFd::new(EFD_NONBLOCK).unwrap(),
                tx_evt.try_clone().unwrap(),
            ],
            interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            acked_features: net.features(),
        })
        .unwrap();
        let f = frame(round, 60);
        tx.add_readable(&[&[0u8; NET_HDR_LEN], &f]);
        tx_evt.write(1).unwrap();
        assert_eq!(port.recv(), f);
        net.reset();
    }
    assert_eq!(net.counters().tx_frames, 2);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    event_loop.join().unwrap();
}

#[test]
fn broken_rx_chains_are_returned_unused_and_the_frame_takes_the_next_buffer() {
    let mem = guest_memory();
    let port = FakeSwitchPort::new();
    let mut h = Harness::new(&mem, &port, NetFaults::none());
    // Device-readable descriptor in an rx chain.
    let readable = h.rx.add_chain(&[Desc {
        addr: RX_BUFS,
        len: 2048,
        device_writes: false,
    }]);
    // Buffer outside guest memory.
    let outside = h.rx.add_chain(&[Desc {
        addr: 1 << 40,
        len: 2048,
        device_writes: true,
    }]);
    let good = h.rx.add_writable(&[2048]);
    h.kick_rx();
    let f = frame(4, 80);
    port.socket.send_to_addr(&f, &h.vmm_addr).unwrap();
    h.run();
    assert_eq!(h.rx.next_used(), Some((readable, 0)));
    assert_eq!(h.rx.next_used(), Some((outside, 0)));
    let (head, len) = h.rx.next_used().unwrap();
    assert_eq!(head, good);
    assert_eq!(&h.rx.written(head, len)[NET_HDR_LEN..], &f[..]);
    assert_eq!(h.counters().rx_frames, 1);
}
