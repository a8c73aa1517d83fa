//! One vsock stream between a guest port and a host Unix stream socket: state machine,
//! credit-based flow control in both directions, and bounded buffering towards the host.
//!
//! Terms: "guest -> host" bytes arrive in RW packets and are written to the Unix stream;
//! "host -> guest" bytes are read from the stream into RW packets. `fwd_cnt` counts bytes the
//! device has handed to the host; `tx_cnt` counts bytes sent to the guest.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use event_manager::EventSet;

use super::packet::{Op, PacketHeader, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{CONN_BUF_ALLOC, CREDIT_UPDATE_THRESHOLD, HOST_CID, MAX_PKT_DATA};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated: REQUEST sent (or about to be), waiting for the guest's RESPONSE.
    Connecting,
    /// Data may flow.
    Established,
}

/// A packet the connection wants delivered to the guest.
pub(crate) type OutPacket = (PacketHeader, Vec<u8>);

/// One connection; `local_port` is the host side, `peer_port` the guest side.
pub(crate) struct Connection {
    stream: UnixStream,
    local_port: u32,
    peer_port: u32,
    state: State,

    // Control packets owed to the guest.
    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    send_shutdown: bool,
    send_rst: bool,
    /// RST sent or received: the connection only waits to be removed.
    dead: bool,

    // Guest -> host.
    to_host: VecDeque<u8>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// Shutdown flags the guest sent.
    peer_shutdown: u32,

    // Host -> guest.
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Epoll said the stream is readable and it has not returned `WouldBlock` since.
    host_readable: bool,
    /// The host will send no more (EOF read).
    host_eof: bool,
    /// The host closed the socket entirely (EPOLLHUP): stop polling it.
    host_hup: bool,
    /// When a host-initiated connection asked the guest; cleared by its RESPONSE.
    requested_at: Option<Instant>,
}

impl Connection {
    fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: State) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state,
            send_request: false,
            send_response: false,
            send_credit_update: false,
            send_shutdown: false,
            send_rst: false,
            dead: false,
            to_host: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_shutdown: 0,
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            host_readable: false,
            host_eof: false,
            host_hup: false,
            requested_at: None,
        }
    }

    /// A host process asked (`CONNECT <peer_port>`) for a stream to the guest.
    pub(crate) fn host_initiated(stream: UnixStream, local_port: u32, peer_port: u32) -> Self {
        let mut conn = Connection::new(stream, local_port, peer_port, State::Connecting);
        conn.send_request = true;
        conn.requested_at = Some(Instant::now());
        conn
    }

    /// Whether this host-initiated connection has waited longer than `timeout` for the
    /// guest's RESPONSE at `now`.
    pub(crate) fn request_timed_out(&self, now: Instant, timeout: Duration) -> bool {
        self.state == State::Connecting
            && self
                .requested_at
                .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
    }

    /// The guest's REQUEST was connected to a host listener.
    pub(crate) fn guest_initiated(stream: UnixStream, request: &PacketHeader) -> Self {
        let mut conn = Connection::new(
            stream,
            request.dst_port,
            request.src_port,
            State::Established,
        );
        conn.update_peer_credit(request);
        conn.send_response = true;
        conn
    }

    /// The host stream.
    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Gives up the stream (to unregister it from epoll before it is closed).
    pub(crate) fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// RST sent or received and nothing left to send: remove it.
    pub(crate) fn is_finished(&self) -> bool {
        self.dead && !self.has_rx_work()
    }

    fn update_peer_credit(&mut self, hdr: &PacketHeader) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
    }

    /// Bytes the guest can still take. A guest reporting more forwarded bytes than it was
    /// sent (or any other nonsense) gets no credit rather than unbounded credit.
    fn peer_credit(&self) -> usize {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight) as usize
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && !self.dead
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }

    fn wants_credit_update(&self) -> bool {
        self.send_credit_update
            || (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD
    }

    /// Whether [`Connection::next_packet`] may have something for the guest.
    pub(crate) fn has_rx_work(&self) -> bool {
        self.send_rst
            || (!self.dead
                && (self.send_request
                    || self.send_response
                    || self.send_shutdown
                    || self.wants_credit_update()
                    || (self.host_readable && self.can_send_data())))
    }

    /// What to poll the host stream for; empty means "do not poll it".
    pub(crate) fn desired_events(&self) -> EventSet {
        let mut set = EventSet::empty();
        if self.dead || self.host_hup {
            return set;
        }
        if !self.host_readable && self.can_send_data() {
            set |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            set |= EventSet::OUT;
        }
        set
    }

    fn header(&self, op: Op) -> PacketHeader {
        PacketHeader {
            src_cid: HOST_CID,
            dst_cid: 0, // filled in by the muxer
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Abandons the connection: the next packet is an RST, then it is removed.
    pub(crate) fn reset(&mut self) {
        self.send_rst = true;
        self.send_request = false;
        self.send_response = false;
        self.send_shutdown = false;
        self.send_credit_update = false;
    }

    /// The next packet for the guest, with at most `max_data` data bytes.
    pub(crate) fn next_packet(&mut self, max_data: usize) -> Option<OutPacket> {
        let pkt = self.next_packet_inner(max_data)?;
        // Every header carries fwd_cnt, so every packet is also a credit update.
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.send_credit_update = false;
        Some(pkt)
    }

    fn next_packet_inner(&mut self, max_data: usize) -> Option<OutPacket> {
        if self.send_rst {
            self.send_rst = false;
            self.dead = true;
            return Some((self.header(Op::Rst), Vec::new()));
        }
        if self.dead {
            return None;
        }
        if std::mem::take(&mut self.send_request) {
            return Some((self.header(Op::Request), Vec::new()));
        }
        if std::mem::take(&mut self.send_response) {
            return Some((self.header(Op::Response), Vec::new()));
        }
        if self.host_readable && self.can_send_data() && max_data > 0 {
            if let Some(pkt) = self.read_from_host(max_data) {
                return Some(pkt);
            }
        }
        if std::mem::take(&mut self.send_shutdown) {
            let mut hdr = self.header(Op::Shutdown);
            hdr.flags = SHUTDOWN_SEND | if self.host_hup { SHUTDOWN_RCV } else { 0 };
            return Some((hdr, Vec::new()));
        }
        if self.wants_credit_update() {
            return Some((self.header(Op::CreditUpdate), Vec::new()));
        }
        None
    }

    fn read_from_host(&mut self, max_data: usize) -> Option<OutPacket> {
        let want = max_data.min(MAX_PKT_DATA).min(self.peer_credit());
        let mut data = vec![0u8; want];
        match self.stream.read(&mut data) {
            Ok(0) => {
                self.host_readable = false;
                self.host_eof = true;
                self.send_shutdown = true;
                None
            }
            Ok(n) => {
                data.truncate(n);
                self.tx_cnt += Wrapping(n as u32);
                let mut hdr = self.header(Op::Rw);
                hdr.len = n as u32;
                Some((hdr, data))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.host_readable = false;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                tracing::debug!(port = self.local_port, "vsock: host read failed: {e}");
                self.reset();
                self.next_packet_inner(0)
            }
        }
    }

    /// Epoll reported `events` on the host stream.
    pub(crate) fn on_host_event(&mut self, events: EventSet) {
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            self.host_hup = true;
        }
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
            // Read what is left; EOF or the error comes out of the read.
            self.host_readable = true;
        }
        if events.contains(EventSet::OUT) {
            self.flush_to_host();
        }
        if self.host_hup && self.state == State::Connecting {
            // The client left before the guest answered.
            self.reset();
        }
    }

    /// Handles a packet the guest sent on this connection.
    pub(crate) fn on_guest_packet(&mut self, op: Op, hdr: &PacketHeader, data: &[u8]) {
        if self.dead {
            return;
        }
        if op == Op::Rst {
            // The guest is gone; owe it nothing.
            self.reset();
            self.send_rst = false;
            self.dead = true;
            return;
        }
        self.update_peer_credit(hdr);
        match (self.state, op) {
            (State::Connecting, Op::Response) => {
                self.state = State::Established;
                self.requested_at = None;
                let line = format!("OK {}\n", self.local_port);
                // A fresh socket's buffer always takes a few bytes; anything else is fatal.
                if !matches!(self.stream.write(line.as_bytes()), Ok(n) if n == line.len()) {
                    self.reset();
                }
            }
            (State::Established, Op::Rw) => self.on_guest_data(data),
            (State::Established, Op::CreditUpdate) => {}
            (State::Established, Op::CreditRequest) => self.send_credit_update = true,
            (State::Established, Op::Shutdown) => {
                self.peer_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.after_flush();
            }
            _ => {
                tracing::debug!(
                    ?op,
                    port = self.local_port,
                    "vsock: unexpected op, resetting"
                );
                self.reset();
            }
        }
    }

    fn on_guest_data(&mut self, data: &[u8]) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            self.reset();
            return;
        }
        // The guest may only send what our buf_alloc allows; overrunning it is a violation.
        if self.to_host.len() + data.len() > CONN_BUF_ALLOC as usize {
            tracing::debug!(port = self.local_port, "vsock: guest overran its credit");
            self.reset();
            return;
        }
        self.to_host.extend(data);
        self.flush_to_host();
    }

    fn flush_to_host(&mut self) {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(port = self.local_port, "vsock: host write failed: {e}");
                    self.to_host.clear();
                    self.reset();
                    return;
                }
            }
        }
        self.after_flush();
    }

    /// Applies the guest's shutdown once everything it sent has reached the host.
    fn after_flush(&mut self) {
        if !self.to_host.is_empty() || self.send_rst || self.dead {
            return;
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
            // Full shutdown: the guest waits for our RST to finish closing.
            self.reset();
        }
    }
}
