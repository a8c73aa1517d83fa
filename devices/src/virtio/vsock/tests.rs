//! vsock tests at the real boundary: real guest memory and descriptor chains (the test plays
//! the guest driver), real Unix sockets on the host side, real epoll via `EventManager`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::event_handler::VsockEventHandler;
use super::handler::VsockHandler;
use super::muxer::{host_port_path, Muxer};
use super::packet::{Op, PacketHeader, HDR_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::*;
use crate::virtio::net::test_driver::{guest_memory, Desc, GuestQueue};
use crate::virtio::{ActivateContext, Subscriber, VirtioDevice, VirtioInterrupt};
use crate::GuestMemory;

const CID: u64 = 3;
const RX_RING: u64 = 0x1000;
const TX_RING: u64 = 0x9000;
const EV_RING: u64 = 0x11000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x80_0000;
const EV_BUFS: u64 = 0x100_0000;
const RX_BUF_LEN: u32 = HDR_LEN as u32 + 4096;

fn guest_hdr(op: Op, src_port: u32, dst_port: u32) -> PacketHeader {
    PacketHeader {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op: op as u16,
        buf_alloc: 1 << 20,
        ..Default::default()
    }
}

/// The device's handler on an in-thread event manager, with the test as the guest driver.
struct Harness<'a> {
    em: EventManager<Subscriber>,
    handler: Arc<Mutex<VsockEventHandler>>,
    rx: GuestQueue<'a>,
    tx: GuestQueue<'a>,
    evts: Vec<EventFd>,
    _dir: tempfile::TempDir,
    uds: PathBuf,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemory) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        listener.set_nonblocking(true).unwrap();
        let rx = GuestQueue::new(mem, RX_RING, RX_BUFS, QUEUE_SIZE);
        let tx = GuestQueue::new(mem, TX_RING, TX_BUFS, QUEUE_SIZE);
        let ev = GuestQueue::new(mem, EV_RING, EV_BUFS, QUEUE_SIZE);
        let evts: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let handler = Arc::new(Mutex::new(VsockEventHandler::new(VsockHandler {
            mem: mem.clone(),
            rx: rx.device_queue(),
            tx: tx.device_queue(),
            event: ev.device_queue(),
            queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
            interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            muxer: Muxer::new(CID, uds.clone(), listener),
            send_reset: false,
        })));
        let mut em = EventManager::<Subscriber>::new().unwrap();
        em.add_subscriber(handler.clone());
        Harness {
            em,
            handler,
            rx,
            tx,
            evts,
            _dir: dir,
            uds,
        }
    }

    /// Runs the loop until idle; a loop that never idles is spinning and fails the test.
    fn run(&mut self) {
        for _ in 0..10_000 {
            if self.em.run_with_timeout(100).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop never went idle");
    }

    fn connections(&self) -> usize {
        self.handler
            .lock()
            .unwrap()
            .handler
            .muxer
            .connection_count()
    }

    fn give_rx_buffers(&mut self, n: usize) {
        for _ in 0..n {
            self.rx.add_writable(&[RX_BUF_LEN]);
        }
        self.evts[RX_INDEX].write(1).unwrap();
        self.run();
    }

    fn send(&mut self, hdr: PacketHeader, data: &[u8]) {
        let mut hdr = hdr;
        hdr.len = data.len() as u32;
        let bytes = hdr.to_bytes();
        if data.is_empty() {
            self.tx.add_readable(&[&bytes]);
        } else {
            self.tx.add_readable(&[&bytes, data]);
        }
        self.kick_tx();
    }

    fn kick_tx(&mut self) {
        self.evts[TX_INDEX].write(1).unwrap();
        self.run();
    }

    /// The next packet the device put in the rx queue.
    fn recv(&mut self) -> Option<(PacketHeader, Vec<u8>)> {
        let (head, len) = self.rx.next_used()?;
        let bytes = self.rx.written(head, len);
        assert!(bytes.len() >= HDR_LEN, "rx packet shorter than a header");
        let hdr = PacketHeader::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
        assert_eq!(hdr.len as usize, bytes.len() - HDR_LEN);
        Some((hdr, bytes[HDR_LEN..].to_vec()))
    }

    fn expect(&mut self, op: Op) -> (PacketHeader, Vec<u8>) {
        let (hdr, data) = self
            .recv()
            .unwrap_or_else(|| panic!("expected {op:?}, got nothing"));
        assert_eq!(hdr.op(), Some(op), "{hdr:?}");
        assert_eq!(
            (hdr.src_cid, hdr.dst_cid, hdr.type_),
            (HOST_CID, CID, TYPE_STREAM)
        );
        (hdr, data)
    }

    /// Host client does `CONNECT port`; returns it and the REQUEST the guest got.
    fn host_request(&mut self, port: u32) -> (UnixStream, PacketHeader) {
        let mut client = UnixStream::connect(&self.uds).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        writeln!(client, "CONNECT {port}").unwrap();
        self.run();
        let (req, _) = self.expect(Op::Request);
        (client, req)
    }

    /// Host client does `CONNECT port`; the guest accepts. Returns (client, host port).
    fn host_connect(&mut self, port: u32, guest_buf_alloc: u32) -> (UnixStream, u32) {
        let (client, req) = self.host_request(port);
        assert_eq!(req.dst_port, port);
        assert!(req.src_port >= 1 << 30);
        assert_eq!(req.buf_alloc, CONN_BUF_ALLOC);
        let mut resp = guest_hdr(Op::Response, port, req.src_port);
        resp.buf_alloc = guest_buf_alloc;
        self.send(resp, &[]);
        let mut line = String::new();
        BufReader::new(&client).read_line(&mut line).unwrap();
        assert_eq!(line, format!("OK {}\n", req.src_port));
        (client, req.src_port)
    }
}

#[test]
fn host_connect_handshake_then_data_flows_both_ways() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(16);
    let (mut client, host_port) = h.host_connect(52, 1 << 20);

    client.write_all(b"hello from host").unwrap();
    h.run();
    let (rw, data) = h.expect(Op::Rw);
    assert_eq!((rw.src_port, rw.dst_port), (host_port, 52));
    assert_eq!(data, b"hello from host");

    h.send(guest_hdr(Op::Rw, 52, host_port), b"hello from guest");
    let mut buf = [0u8; 16];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello from guest");
    assert_eq!(h.connections(), 1);
}

#[test]
fn host_to_guest_data_never_exceeds_guest_credit() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(64);
    let guest_buf = 8192u32;
    let (mut client, host_port) = h.host_connect(52, guest_buf);
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&sent).unwrap();
    h.run();

    let mut got = Vec::new();
    let mut fwd = 0u32;
    while got.len() < sent.len() {
        let before = got.len();
        while let Some((hdr, data)) = h.recv() {
            assert_eq!(hdr.op(), Some(Op::Rw));
            got.extend_from_slice(&data);
        }
        // Never more in flight than the guest's buffer.
        assert!(got.len() as u32 - fwd <= guest_buf, "credit overrun");
        assert!(got.len() > before, "no progress with credit available");
        // The guest "reads" everything and tells the device.
        fwd = got.len() as u32;
        let mut upd = guest_hdr(Op::CreditUpdate, 52, host_port);
        upd.buf_alloc = guest_buf;
        upd.fwd_cnt = fwd;
        h.send(upd, &[]);
    }
    assert_eq!(got, sent);
}

#[test]
fn device_grants_credit_back_as_it_forwards_guest_data() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(16);
    let (mut client, host_port) = h.host_connect(52, 1 << 20);
    let chunk = vec![7u8; MAX_PKT_DATA];
    h.send(guest_hdr(Op::Rw, 52, host_port), &chunk);
    let mut got = vec![0u8; MAX_PKT_DATA];
    client.read_exact(&mut got).unwrap();
    assert_eq!(got, chunk);
    let (upd, _) = h.expect(Op::CreditUpdate);
    assert_eq!(upd.fwd_cnt, MAX_PKT_DATA as u32);
    assert_eq!(upd.buf_alloc, CONN_BUF_ALLOC);

    // An explicit request is answered too.
    h.send(guest_hdr(Op::CreditRequest, 52, host_port), &[]);
    let (upd, _) = h.expect(Op::CreditUpdate);
    assert_eq!(upd.fwd_cnt, MAX_PKT_DATA as u32);
}

#[test]
fn guest_ignoring_credit_is_reset_instead_of_buffered() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(16);
    // The client never reads, so the device must buffer until its credit is used up.
    let (_client, host_port) = h.host_connect(52, 1 << 20);
    let chunk = vec![1u8; MAX_PKT_DATA];
    let mut granted = CONN_BUF_ALLOC;
    let mut sent = 0u32;
    let mut reset = false;
    for _ in 0..64 {
        h.send(guest_hdr(Op::Rw, 52, host_port), &chunk);
        sent += chunk.len() as u32;
        while let Some((hdr, _)) = h.recv() {
            match hdr.op() {
                // Credit the device grants while the host socket still takes data.
                Some(Op::CreditUpdate) => granted = CONN_BUF_ALLOC + hdr.fwd_cnt,
                Some(Op::Rst) => reset = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        if reset {
            break;
        }
    }
    assert!(reset, "guest overrunning its credit must be reset");
    // The RST came only once the guest went past the credit it was given.
    assert!(
        sent > granted,
        "reset at {sent} bytes with {granted} granted"
    );
    assert_eq!(h.connections(), 0);
}

#[test]
fn guest_connects_to_host_listener_at_uds_port_path() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(16);
    let listener = UnixListener::bind(host_port_path(&h.uds, 1234)).unwrap();
    h.send(guest_hdr(Op::Request, 5000, 1234), &[]);
    let (resp, _) = h.expect(Op::Response);
    assert_eq!((resp.src_port, resp.dst_port), (1234, 5000));
    let (mut server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    h.send(guest_hdr(Op::Rw, 5000, 1234), b"ping");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").unwrap();
    h.run();
    let (_, data) = h.expect(Op::Rw);
    assert_eq!(data, b"pong");

    // Nothing listens on port 4321: RST.
    h.send(guest_hdr(Op::Request, 5001, 4321), &[]);
    let (rst, _) = h.expect(Op::Rst);
    assert_eq!((rst.src_port, rst.dst_port), (4321, 5001));
    assert_eq!(h.connections(), 1);
}

#[test]
fn host_client_disconnecting_mid_stream_shuts_down_the_guest_side() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(16);
    let (mut client, host_port) = h.host_connect(52, 1 << 20);
    client.write_all(b"last words").unwrap();
    drop(client);
    h.run();
    let (_, data) = h.expect(Op::Rw);
    assert_eq!(data, b"last words");
    let (shut, _) = h.expect(Op::Shutdown);
    assert_eq!(shut.flags & SHUTDOWN_SEND, SHUTDOWN_SEND);
    assert_eq!(shut.dst_port, 52);
    // The guest acknowledges with an RST; the connection is gone and nothing more is sent.
    h.send(guest_hdr(Op::Rst, 52, host_port), &[]);
    assert_eq!(h.connections(), 0);
    assert!(h.recv().is_none());
}

#[test]
fn guest_full_shutdown_flushes_then_resets_and_host_sees_eof() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(16);
    let (mut client, host_port) = h.host_connect(52, 1 << 20);
    h.send(guest_hdr(Op::Rw, 52, host_port), b"bye");
    let mut shut = guest_hdr(Op::Shutdown, 52, host_port);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    h.send(shut, &[]);
    h.expect(Op::Rst);
    assert_eq!(h.connections(), 0);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");
}

#[test]
fn malformed_packets_are_reset_or_dropped_and_the_device_keeps_going() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(32);

    // Truncated header: dropped silently.
    let bytes = guest_hdr(Op::Request, 1, 2).to_bytes();
    h.tx.add_readable(&[&bytes[..20]]);
    h.kick_tx();
    assert!(h.recv().is_none());

    // Device-writable descriptor in a tx chain: dropped.
    h.tx.add_chain(&[Desc {
        addr: TX_BUFS,
        len: HDR_LEN as u32,
        device_writes: true,
    }]);
    h.kick_tx();
    assert!(h.recv().is_none());

    // Wrong source CID: dropped.
    let mut spoofed = guest_hdr(Op::Request, 1, 2);
    spoofed.src_cid = 7;
    h.send(spoofed, &[]);
    assert!(h.recv().is_none());

    // len larger than the chain.
    let mut hdr = guest_hdr(Op::Rw, 10, 20);
    hdr.len = 100;
    h.tx.add_readable(&[&hdr.to_bytes(), &[0u8; 10]]);
    h.kick_tx();
    let (rst, _) = h.expect(Op::Rst);
    assert_eq!((rst.src_port, rst.dst_port), (20, 10));

    // len over the 64 KiB maximum.
    let mut hdr = guest_hdr(Op::Rw, 11, 20);
    hdr.len = MAX_PKT_DATA as u32 + 1;
    h.tx.add_readable(&[&hdr.to_bytes(), &vec![0u8; MAX_PKT_DATA + 1]]);
    h.kick_tx();
    assert_eq!(h.expect(Op::Rst).0.dst_port, 11);

    // Unknown op, and a non-stream type.
    let mut hdr = guest_hdr(Op::Request, 12, 20);
    hdr.op = 99;
    h.send(hdr, &[]);
    assert_eq!(h.expect(Op::Rst).0.dst_port, 12);
    let mut hdr = guest_hdr(Op::Request, 13, 20);
    hdr.type_ = 2;
    h.send(hdr, &[]);
    assert_eq!(h.expect(Op::Rst).0.dst_port, 13);

    // Data for a connection that does not exist.
    h.send(guest_hdr(Op::Rw, 14, 20), b"x");
    assert_eq!(h.expect(Op::Rst).0.dst_port, 14);
    // An RST for nothing is not answered.
    h.send(guest_hdr(Op::Rst, 15, 20), &[]);
    assert!(h.recv().is_none());

    // A bad len on a live connection resets that connection.
    let (_client, host_port) = h.host_connect(52, 1 << 20);
    let mut hdr = guest_hdr(Op::Rw, 52, host_port);
    hdr.len = 500;
    h.tx.add_readable(&[&hdr.to_bytes(), &[0u8; 5]]);
    h.kick_tx();
    assert_eq!(h.expect(Op::Rst).0.src_port, host_port);
    assert_eq!(h.connections(), 0);

    // Still working.
    let (_client, _) = h.host_connect(53, 1 << 20);
    assert_eq!(h.connections(), 1);
}

#[test]
fn guest_refusing_a_host_connect_closes_the_client() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(4);
    let (mut client, req) = h.host_request(99);
    h.send(guest_hdr(Op::Rst, 99, req.src_port), &[]);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no OK line for a refused connection");
    assert_eq!(h.connections(), 0);
    assert!(h.recv().is_none());
}

/// A host client whose CONNECT the guest never answers: before the timeout nothing
/// happens, after it the guest gets an RST and the client reads EOF, not `OK`.
#[test]
fn guest_never_answering_a_host_connect_is_reset_after_the_timeout() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(4);
    let (mut client, req) = h.host_request(77);
    let expire = |h: &mut Harness<'_>, at: Instant| {
        h.handler.lock().unwrap().handler.muxer.expire_requests(at);
        h.give_rx_buffers(1);
    };
    expire(&mut h, Instant::now());
    assert!(h.recv().is_none(), "nothing before the timeout");
    assert_eq!(h.connections(), 1);
    expire(&mut h, Instant::now() + super::CONNECT_TIMEOUT);
    let (rst, _) = h.expect(Op::Rst);
    assert_eq!((rst.src_port, rst.dst_port), (req.src_port, 77));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "no OK line for an unanswered connect: {rest:?}"
    );
    assert_eq!(h.connections(), 0);
    // A late RESPONSE finds no connection and is refused.
    h.send(guest_hdr(Op::Response, 77, req.src_port), &[]);
    h.expect(Op::Rst);
}

/// The same through the device's own timer on the event loop.
#[test]
fn the_connect_timeout_fires_from_the_event_loop() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.handler
        .lock()
        .unwrap()
        .handler
        .muxer
        .set_connect_timeout(Duration::from_millis(100));
    h.give_rx_buffers(4);
    let (_client, _) = h.host_request(78);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "the timer never expired the connection"
        );
        h.em.run_with_timeout(200).unwrap();
    }
    h.expect(Op::Rst);
}

#[test]
fn host_half_close_keeps_the_guest_to_host_direction_open() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(8);
    let (mut client, host_port) = h.host_connect(52, 1 << 20);
    client.write_all(b"request").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    h.run();
    assert_eq!(h.expect(Op::Rw).1, b"request");
    let (shut, _) = h.expect(Op::Shutdown);
    assert_eq!(shut.flags, SHUTDOWN_SEND, "host still receives");
    h.send(guest_hdr(Op::Rw, 52, host_port), b"reply");
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"reply");
}

#[test]
fn bad_connect_lines_are_closed_without_reaching_the_guest() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    h.give_rx_buffers(4);
    let mut client = UnixStream::connect(&h.uds).unwrap();
    client.write_all(b"HELLO 52\n").unwrap();
    h.run();
    let mut rest = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(h.recv().is_none());
    assert_eq!(h.connections(), 0);
}

#[test]
fn device_on_a_real_event_manager_thread() {
    let mem = guest_memory();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let (ep_tx, ep_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_loop = stop.clone();
    let event_loop = std::thread::spawn(move || {
        let mut em = EventManager::<Subscriber>::new().unwrap();
        ep_tx.send(em.remote_endpoint()).unwrap();
        while !stop_loop.load(std::sync::atomic::Ordering::SeqCst) {
            em.run_with_timeout(20).unwrap();
        }
    });
    let mut dev = Vsock::new(
        VsockConfig {
            cid: CID,
            uds_path: uds.clone(),
        },
        ep_rx.recv().unwrap(),
    )
    .unwrap();
    assert_eq!(dev.device_type(), 19);
    let mut cfg = [0u8; 8];
    dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), CID);
    assert!(matches!(
        Vsock::new(
            VsockConfig {
                cid: CID,
                uds_path: uds.clone()
            },
            EventManager::<Subscriber>::new().unwrap().remote_endpoint()
        ),
        Err(VsockError::UdsExists(_))
    ));

    let mut rx = GuestQueue::new(&mem, RX_RING, RX_BUFS, QUEUE_SIZE);
    let mut tx = GuestQueue::new(&mem, TX_RING, TX_BUFS, QUEUE_SIZE);
    let ev = GuestQueue::new(&mem, EV_RING, EV_BUFS, QUEUE_SIZE);
    let evts: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    for _ in 0..4 {
        rx.add_writable(&[RX_BUF_LEN]);
    }
    dev.activate(ActivateContext {
        mem: mem.clone(),
        queues: vec![rx.device_queue(), tx.device_queue(), ev.device_queue()],
        queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
        interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
        acked_features: dev.features(),
    })
    .unwrap();

    let mut client = UnixStream::connect(&uds).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"CONNECT 52\n").unwrap();
    let wait_used = |q: &mut GuestQueue| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(u) = q.next_used() {
                return u;
            }
            assert!(Instant::now() < deadline, "device never answered");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let (head, len) = wait_used(&mut rx);
    let req = PacketHeader::from_bytes(rx.written(head, len)[..HDR_LEN].try_into().unwrap());
    assert_eq!((req.op(), req.dst_port), (Some(Op::Request), 52));
    let mut resp = guest_hdr(Op::Response, 52, req.src_port);
    resp.buf_alloc = 4096;
    tx.add_readable(&[&resp.to_bytes()]);
    evts[TX_INDEX].write(1).unwrap();
    let mut line = String::new();
    BufReader::new(&client).read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", req.src_port));
    assert_eq!(dev.connection_count(), 1);

    dev.reset();
    assert_eq!(dev.connection_count(), 0);
    // Reset closed the connection.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    // The listener survived the reset: a new activation accepts clients again.
    // Fresh rings, as a driver sets up after a reset.
    let mut rx = GuestQueue::new(&mem, 0x200_0000, 0x280_0000, QUEUE_SIZE);
    let tx = GuestQueue::new(&mem, 0x201_0000, 0x2c0_0000, QUEUE_SIZE);
    let ev = GuestQueue::new(&mem, 0x202_0000, 0x300_0000, QUEUE_SIZE);
    rx.add_writable(&[RX_BUF_LEN]);
    dev.activate(ActivateContext {
        mem: mem.clone(),
        queues: vec![rx.device_queue(), tx.device_queue(), ev.device_queue()],
        queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
        interrupt: Arc::new(VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())),
        acked_features: dev.features(),
    })
    .unwrap();
    UnixStream::connect(&uds)
        .unwrap()
        .write_all(b"CONNECT 7\n")
        .unwrap();
    let (head, len) = wait_used(&mut rx);
    let req = PacketHeader::from_bytes(rx.written(head, len)[..HDR_LEN].try_into().unwrap());
    assert_eq!((req.op(), req.dst_port), (Some(Op::Request), 7));
    dev.reset();
    drop(dev);
    assert!(!uds.exists(), "socket file removed with the device");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    event_loop.join().unwrap();
}

/// After a restore the handler's first act is a transport reset event in the guest's event
/// buffer (id 0), with the interrupt raised, so the driver drops its stale connections.
#[test]
fn restored_device_sends_transport_reset_on_the_event_queue() {
    let mem = guest_memory();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&uds).unwrap();
    listener.set_nonblocking(true).unwrap();
    let rx = GuestQueue::new(&mem, RX_RING, RX_BUFS, QUEUE_SIZE);
    let tx = GuestQueue::new(&mem, TX_RING, TX_BUFS, QUEUE_SIZE);
    let mut ev = GuestQueue::new(&mem, EV_RING, EV_BUFS, QUEUE_SIZE);
    let head = ev.add_writable(&[8]);
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let handler = Arc::new(Mutex::new(VsockEventHandler::new(VsockHandler {
        mem: mem.clone(),
        rx: rx.device_queue(),
        tx: tx.device_queue(),
        event: ev.device_queue(),
        queue_evts: (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect(),
        interrupt: Arc::new(VirtioInterrupt::new(irq.try_clone().unwrap())),
        muxer: Muxer::new(CID, uds, listener),
        send_reset: true,
    })));
    let mut em = EventManager::<Subscriber>::new().unwrap();
    em.add_subscriber(handler.clone());
    assert_eq!(ev.next_used(), Some((head, 4)));
    assert_eq!(
        ev.written(head, 4),
        super::handler::EVENT_TRANSPORT_RESET.to_le_bytes()
    );
    assert!(irq.read().unwrap() >= 1, "no interrupt for the event");
    // Sent once only.
    em.run_with_timeout(10).unwrap();
    assert_eq!(ev.next_used(), None);
    assert!(!handler.lock().unwrap().handler.send_reset);
}

#[test]
fn a_vsock_reset_rule_resets_the_matching_connection_and_later_ones_work() {
    use crate::fault::{FaultEngine, FaultRules, VsockFaults};
    let mem = guest_memory();
    let mut h = Harness::new(&mem);
    let engine = FaultEngine::new();
    // The second matching guest packet resets its connection, once.
    let rules = "[[vsock]]\nport = 52\naction = \"reset\"\nafter = 1\ncount = 1\n";
    engine
        .set_rules(FaultRules::from_toml(rules, "test").unwrap())
        .unwrap();
    h.handler.lock().unwrap().handler.muxer.faults = VsockFaults::new(engine.clone());
    h.give_rx_buffers(32);
    let (mut client, host_port) = h.host_connect(52, 1 << 20);
    let (mut other, other_port) = h.host_connect(53, 1 << 20);
    // The guest's RESPONSE for port 52 was match 0; this RW is match 1 and resets.
    h.send(guest_hdr(Op::Rw, 52, host_port), b"lost");
    let (rst, _) = h.expect(Op::Rst);
    assert_eq!((rst.src_port, rst.dst_port), (host_port, 52));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"", "the host side sees EOF, not the guest's data");
    // Port 53 is untouched.
    h.send(guest_hdr(Op::Rw, 53, other_port), b"fine");
    let mut buf = [0u8; 4];
    other.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"fine");
    // count = 1: a new connection to port 52 works (an agent reconnecting recovers).
    let (mut again, again_port) = h.host_connect(52, 1 << 20);
    h.send(guest_hdr(Op::Rw, 52, again_port), b"back");
    again.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
    assert_eq!(engine.report().vsock[0].counters.hits, 1);
    assert_eq!(h.connections(), 2);
}
