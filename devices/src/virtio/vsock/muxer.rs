//! The connection table: routes guest packets to connections, turns host Unix sockets into
//! connections (listener at `uds`, guest connects to `<uds>_<port>`), queues what the guest
//! must receive, and keeps the event loop's interest in every host fd in sync.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use event_manager::{EventOps, EventSet, Events};
use socket2::{Domain, SockAddr, Socket, Type};

use super::connection::{Connection, OutPacket};
use super::host_connect::{LineStatus, PendingHostConn};
use super::packet::{Op, PacketHeader, TYPE_STREAM};
use super::{HOST_CID, MAX_CONNECTIONS, MAX_CONTROL_BACKLOG, MAX_PENDING_HOST};
use crate::fault::VsockFaults;

/// Event tag of an accepted stream still sending its `CONNECT` line.
pub(crate) const TAG_PENDING: u32 = 4;
/// Event tag of a connection's host stream.
pub(crate) const TAG_CONN: u32 = 5;

/// First host port handed to host-initiated connections (as Firecracker does, far above
/// the ports guests usually listen on).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// (host port, guest port).
type ConnKey = (u32, u32);

/// Something owed to the guest on the rx queue.
enum RxItem {
    /// An RST for a packet that matched no usable connection.
    Rst(PacketHeader),
    /// A connection with packets to send.
    Conn(ConnKey),
}

/// All vsock connections of one device.
pub(crate) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    conns: HashMap<ConnKey, Connection>,
    conn_by_fd: HashMap<RawFd, ConnKey>,
    pending: HashMap<RawFd, PendingHostConn>,
    rx_items: VecDeque<RxItem>,
    /// Connections currently in `rx_items` (so each is queued once).
    queued: std::collections::HashSet<ConnKey>,
    /// Number of `RxItem::Rst` in `rx_items`.
    rst_backlog: usize,
    next_local_port: u32,
    /// fd -> (tag, events) as registered with the event loop.
    registered: HashMap<RawFd, (u32, EventSet)>,
    /// Closed sockets kept open until they are removed from epoll.
    graveyard: Vec<OwnedFd>,
    /// How long a host CONNECT waits for the guest ([`super::CONNECT_TIMEOUT`]).
    connect_timeout: std::time::Duration,
    /// Fault rules that may reset a connection.
    pub(crate) faults: VsockFaults,
    /// Guest packets on open connections so far (the fault rules' packet numbers).
    packets_seen: u64,
}

impl Muxer {
    pub(crate) fn new(guest_cid: u64, uds_path: PathBuf, listener: UnixListener) -> Self {
        Muxer {
            guest_cid,
            uds_path,
            listener,
            conns: HashMap::new(),
            conn_by_fd: HashMap::new(),
            pending: HashMap::new(),
            rx_items: VecDeque::new(),
            queued: Default::default(),
            rst_backlog: 0,
            next_local_port: FIRST_LOCAL_PORT,
            registered: HashMap::new(),
            graveyard: Vec::new(),
            connect_timeout: super::CONNECT_TIMEOUT,
            faults: VsockFaults::none(),
            packets_seen: 0,
        }
    }

    /// The listening socket (polled by the event handler).
    pub(crate) fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Gives the listener back when the device is reset; connections are closed.
    pub(crate) fn into_listener(self) -> UnixListener {
        self.listener
    }

    /// Number of live connections.
    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether anything waits for an rx buffer.
    pub(crate) fn has_rx(&self) -> bool {
        !self.rx_items.is_empty()
    }

    /// Too many unsent RSTs: stop reading the tx queue until the guest takes some.
    pub(crate) fn rx_backlog_full(&self) -> bool {
        self.rst_backlog >= MAX_CONTROL_BACKLOG
    }

    fn reply_rst(&mut self, to: &PacketHeader) {
        if to.op == Op::Rst as u16 {
            return; // never answer an RST with an RST
        }
        self.rx_items
            .push_back(RxItem::Rst(PacketHeader::rst_reply(to)));
        self.rst_backlog += 1;
    }

    /// Queues `key` for the rx queue if it has something to send; removes it if finished.
    fn schedule(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        if conn.is_finished() {
            self.remove(key);
        } else if conn.has_rx_work() && self.queued.insert(key) {
            self.rx_items.push_back(RxItem::Conn(key));
        }
    }

    fn remove(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            let stream = conn.into_stream();
            self.conn_by_fd.remove(&stream.as_raw_fd());
            self.graveyard.push(stream.into());
        }
    }

    /// Handles a well-formed packet from the guest's tx queue.
    pub(crate) fn on_guest_packet(&mut self, hdr: &PacketHeader, data: &[u8]) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            tracing::debug!(?hdr, "vsock: dropping packet with wrong addresses");
            return;
        }
        let op = match hdr.op() {
            Some(op) if hdr.type_ == TYPE_STREAM => op,
            _ => {
                tracing::debug!(?hdr, "vsock: unsupported type or op, resetting");
                self.reject(hdr);
                return;
            }
        };
        let key = (hdr.dst_port, hdr.src_port);
        if self.conns.contains_key(&key) {
            let n = self.packets_seen;
            self.packets_seen += 1;
            let reset = op != Op::Rst && self.faults.reset_connection(n, key.0, key.1);
            if let Some(conn) = self.conns.get_mut(&key) {
                if reset {
                    conn.reset();
                } else {
                    conn.on_guest_packet(op, hdr, data);
                }
            }
            self.schedule(key);
            return;
        }
        match op {
            Op::Request => self.connect_to_host(hdr),
            Op::Rst => {}
            _ => self.reply_rst(hdr),
        }
    }

    /// A packet whose header was readable but which was invalid: reset its connection.
    pub(crate) fn reject(&mut self, hdr: &PacketHeader) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.reset();
            self.schedule(key);
        } else {
            self.reply_rst(hdr);
        }
    }

    fn connect_to_host(&mut self, req: &PacketHeader) {
        if self.conns.len() >= MAX_CONNECTIONS {
            tracing::warn!("vsock: {MAX_CONNECTIONS} connections open, refusing another");
            self.reply_rst(req);
            return;
        }
        let path = host_port_path(&self.uds_path, req.dst_port);
        match connect_nonblocking(&path) {
            Ok(stream) => {
                let key = (req.dst_port, req.src_port);
                self.conn_by_fd.insert(stream.as_raw_fd(), key);
                self.conns
                    .insert(key, Connection::guest_initiated(stream, req));
                self.schedule(key);
            }
            Err(e) => {
                tracing::debug!("vsock: guest connect to {}: {e}", path.display());
                self.reply_rst(req);
            }
        }
    }

    /// Accepts every waiting host client.
    pub(crate) fn on_listener_ready(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.pending.len() >= MAX_PENDING_HOST || self.conns.len() >= MAX_CONNECTIONS
                    {
                        tracing::warn!("vsock: too many host connections, closing a new one");
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!("vsock: cannot make host stream non-blocking: {e}");
                        continue;
                    }
                    self.pending
                        .insert(stream.as_raw_fd(), PendingHostConn::new(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("vsock: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Resets every host-initiated connection whose guest has not answered its REQUEST
    /// within the connect timeout at `now`: the guest gets an RST, the host client's stream
    /// closes (it reads EOF instead of an `OK` line).
    pub(crate) fn expire_requests(&mut self, now: std::time::Instant) {
        let late: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.request_timed_out(now, self.connect_timeout))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            tracing::debug!(
                ?key,
                "vsock: guest never answered a host CONNECT; resetting"
            );
            if let Some(c) = self.conns.get_mut(&key) {
                c.reset();
            }
            self.schedule(key);
        }
    }

    /// Changes the connect timeout (tests use a short one).
    #[cfg(test)]
    pub(crate) fn set_connect_timeout(&mut self, timeout: std::time::Duration) {
        self.connect_timeout = timeout;
    }

    /// A host client that has not finished its `CONNECT` line sent something.
    pub(crate) fn on_pending_ready(&mut self, fd: RawFd) {
        let Some(pending) = self.pending.get_mut(&fd) else {
            return;
        };
        match pending.read_line() {
            LineStatus::Partial => {}
            LineStatus::Invalid(why) => {
                tracing::debug!("vsock: dropping host client: {why}");
                if let Some(p) = self.pending.remove(&fd) {
                    self.graveyard.push(p.stream.into());
                }
            }
            LineStatus::Port(peer_port) => {
                let Some(p) = self.pending.remove(&fd) else {
                    return;
                };
                let local_port = self.alloc_local_port();
                let key = (local_port, peer_port);
                self.conn_by_fd.insert(fd, key);
                self.conns.insert(
                    key,
                    Connection::host_initiated(p.stream, local_port, peer_port),
                );
                self.schedule(key);
            }
        }
    }

    fn alloc_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|(local, _)| *local == port) {
                return port;
            }
        }
    }

    /// Epoll reported `events` on a connection's host stream.
    pub(crate) fn on_conn_event(&mut self, fd: RawFd, events: EventSet) {
        let Some(&key) = self.conn_by_fd.get(&fd) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.on_host_event(events);
        }
        self.schedule(key);
    }

    /// The next packet for the guest with at most `max_data` data bytes, if any.
    pub(crate) fn next_rx_packet(&mut self, max_data: usize) -> Option<OutPacket> {
        // Each item is looked at once per call, so an item that cannot use this buffer
        // (e.g. data with max_data == 0) does not spin.
        for _ in 0..self.rx_items.len() {
            let item = self.rx_items.pop_front()?;
            let key = match item {
                RxItem::Rst(hdr) => {
                    self.rst_backlog -= 1;
                    return Some((hdr, Vec::new()));
                }
                RxItem::Conn(key) => key,
            };
            self.queued.remove(&key);
            let pkt = self
                .conns
                .get_mut(&key)
                .and_then(|conn| conn.next_packet(max_data));
            self.schedule(key);
            if let Some((mut hdr, data)) = pkt {
                hdr.dst_cid = self.guest_cid;
                return Some((hdr, data));
            }
        }
        None
    }

    /// Brings the event loop's interest in host fds in line with what each one needs, and
    /// closes removed sockets after unregistering them.
    pub(crate) fn sync_interest(&mut self, ops: &mut EventOps) {
        for fd in self.graveyard.drain(..) {
            if let Some((tag, set)) = self.registered.remove(&fd.as_raw_fd()) {
                let _ = ops.remove(Events::with_data(&fd, tag, set));
            }
        }
        let wanted = self
            .pending
            .keys()
            .map(|&fd| (fd, TAG_PENDING, EventSet::IN))
            .chain(
                self.conns
                    .values()
                    .map(|c| (c.stream().as_raw_fd(), TAG_CONN, c.desired_events())),
            );
        let mut changes = Vec::new();
        for (fd, tag, set) in wanted {
            let current = self.registered.get(&fd).copied();
            if set.is_empty() {
                if current.is_some() {
                    changes.push((fd, None, current));
                }
            } else if current != Some((tag, set)) {
                changes.push((fd, Some((tag, set)), current));
            }
        }
        for (fd, want, current) in changes {
            let result = match (want, current) {
                (None, Some((tag, set))) => ops.remove(Events::with_data_raw(fd, tag, set)),
                (Some((tag, set)), None) => ops.add(Events::with_data_raw(fd, tag, set)),
                (Some((tag, set)), Some(_)) => ops.modify(Events::with_data_raw(fd, tag, set)),
                (None, None) => Ok(()),
            };
            match result {
                Ok(()) => match want {
                    Some(w) => {
                        self.registered.insert(fd, w);
                    }
                    None => {
                        self.registered.remove(&fd);
                    }
                },
                Err(e) => tracing::error!("vsock: cannot update polling of fd {fd}: {e}"),
            }
        }
    }
}

/// `<uds>_<port>`: where a guest connection to host port `port` goes.
pub(crate) fn host_port_path(uds: &Path, port: u32) -> PathBuf {
    let mut s = uds.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Connects without blocking the event loop: a listener with a full backlog fails with
/// `WouldBlock` instead of stalling every other device.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)?;
    Ok(UnixStream::from(OwnedFd::from(socket)))
}
