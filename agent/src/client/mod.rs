//! The host-side client: one connection, many concurrent requests.
//!
//! ```no_run
//! # async fn demo() -> agent::client::Result<()> {
//! use agent::{Client, ExecRequest};
//! let client = Client::connect_vsock_uds("/run/kiln/node1.vsock", 10_700).await?;
//! let out = client.exec_buffered(ExecRequest::shell("uname -r")).await?;
//! println!("{} (exit {:?})", String::from_utf8_lossy(&out.stdout), out.status);
//! # Ok(()) }
//! ```

mod announce;
mod error;
mod exec;
mod files;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

pub use announce::{accept_announcement, announce_socket_path};
pub use error::{ClientError, Result};
pub use exec::{Exec, ExecEvent, ExecOutput, ExecStdin, MAX_BUFFERED_OUTPUT};
pub use files::GetInfo;

use crate::codec::FrameCodec;
use crate::protocol::{
    ClientFrame, ClientMsg, DirEntry, FileStat, ServerFrame, ServerMsg, HANDSHAKE_ID,
    PROTOCOL_VERSION,
};

/// Answers queued per request before the connection's reader waits for the consumer.
const REPLY_DEPTH: usize = 64;
/// Frames queued for the socket.
const SEND_DEPTH: usize = 256;
/// Longest reply line accepted from the VMM's vsock socket.
const MAX_CONNECT_REPLY: usize = 64;

/// What the agent said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Protocol version.
    pub version: u32,
    /// Agent build version.
    pub agent_version: String,
    /// Guest hostname at connect time.
    pub hostname: String,
}

/// State of a systemd unit as reported by `systemctl is-active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// Whether the unit is active.
    pub active: bool,
    /// The printed state (`active`, `inactive`, `failed`, `activating`...).
    pub state: String,
}

#[derive(Default)]
struct Routes {
    map: HashMap<u64, mpsc::Sender<ServerMsg>>,
    closed: bool,
}

struct Inner {
    out: mpsc::Sender<ClientFrame>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    info: ServerInfo,
    tasks: [AbortHandle; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A connection to a guest agent. Cheap to clone; clones share the connection, and any
/// number of requests may run at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Connects to an agent listening on a Unix socket (`agent serve --unix PATH`).
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Client> {
        let stream = UnixStream::connect(path.as_ref()).await?;
        Client::over(stream).await
    }

    /// Connects through a VMM's vsock Unix socket (Firecracker convention): writes
    /// `CONNECT <port>\n`, expects `OK <port>\n`, then speaks the protocol.
    pub async fn connect_vsock_uds(path: impl AsRef<Path>, port: u32) -> Result<Client> {
        let mut stream = UnixStream::connect(path.as_ref()).await?;
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await?;
        // Byte by byte: anything after the newline already belongs to the agent.
        let mut reply = Vec::new();
        loop {
            let byte = match stream.read_u8().await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ClientError::VsockConnect {
                        port,
                        reply: "connection closed without a reply".into(),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            if byte == b'\n' {
                break;
            }
            reply.push(byte);
            if reply.len() > MAX_CONNECT_REPLY {
                break;
            }
        }
        let reply = String::from_utf8_lossy(&reply).into_owned();
        if !reply.starts_with("OK ") {
            return Err(ClientError::VsockConnect { port, reply });
        }
        Client::over(stream).await
    }

    /// Speaks the protocol over an already connected stream (handshake included).
    pub async fn over<S>(stream: S) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(stream);
        let mut reader = FramedRead::new(rd, FrameCodec::<ServerFrame, ClientFrame>::new());
        let mut sink = FramedWrite::new(wr, FrameCodec::<ServerFrame, ClientFrame>::new());

        sink.send(ClientFrame {
            id: HANDSHAKE_ID,
            msg: ClientMsg::Hello {
                version: PROTOCOL_VERSION,
            },
        })
        .await?;
        let info = match reader.next().await {
            Some(Ok(ServerFrame {
                msg:
                    ServerMsg::Hello {
                        version,
                        agent_version,
                        hostname,
                    },
                ..
            })) => ServerInfo {
                version,
                agent_version,
                hostname,
            },
            Some(Ok(ServerFrame {
                msg: ServerMsg::Error { kind, message },
                ..
            })) => return Err(ClientError::Remote { kind, message }),
            Some(Ok(other)) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClientError::Closed),
        };

        let (out, mut out_rx) = mpsc::channel::<ClientFrame>(SEND_DEPTH);
        let writer = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if let Err(e) = sink.send(frame).await {
                    tracing::warn!(error = %e, "agent connection write failed");
                    break;
                }
            }
        });
        let routes = Arc::new(Mutex::new(Routes::default()));
        let reader_routes = routes.clone();
        let reader = tokio::spawn(async move {
            while let Some(frame) = reader.next().await {
                let ServerFrame { id, msg } = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "bad frame from the agent, closing");
                        break;
                    }
                };
                let route = lock(&reader_routes).map.get(&id).cloned();
                match route {
                    Some(tx) => {
                        if tx.send(msg).await.is_err() {
                            lock(&reader_routes).map.remove(&id);
                        }
                    }
                    None => tracing::debug!(id, "answer for a finished request, dropped"),
                }
            }
            let mut routes = lock(&reader_routes);
            routes.closed = true;
            routes.map.clear();
        });
        Ok(Client {
            inner: Arc::new(Inner {
                out,
                routes,
                next_id: AtomicU64::new(HANDSHAKE_ID + 1),
                info,
                tasks: [writer.abort_handle(), reader.abort_handle()],
            }),
        })
    }

    /// What the agent reported in the handshake.
    pub fn server_info(&self) -> &ServerInfo {
        &self.inner.info
    }

    /// Starts a request: allocates an id, routes its answers, sends the first frame.
    async fn start(&self, msg: ClientMsg) -> Result<Pending> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(REPLY_DEPTH);
        {
            let mut routes = lock(&self.inner.routes);
            if routes.closed {
                return Err(ClientError::Closed);
            }
            routes.map.insert(id, tx);
        }
        let pending = Pending {
            id,
            rx,
            client: self.clone(),
        };
        pending.send(msg).await?;
        Ok(pending)
    }

    /// One request, one answer; agent errors become [`ClientError::Remote`].
    async fn call(&self, msg: ClientMsg) -> Result<ServerMsg> {
        let mut pending = self.start(msg).await?;
        pending.recv().await
    }

    /// Metadata of a guest path (a final symlink is not followed).
    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        match self.call(ClientMsg::Stat { path: path.into() }).await? {
            ServerMsg::Stat(stat) => Ok(stat),
            other => Err(unexpected(other)),
        }
    }

    /// Entries of a guest directory, sorted by name.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        match self.call(ClientMsg::List { path: path.into() }).await? {
            ServerMsg::List(entries) => Ok(entries),
            other => Err(unexpected(other)),
        }
    }

    /// `systemctl is-active UNIT` in the guest, with the printed state.
    pub async fn unit_state(&self, unit: &str) -> Result<UnitState> {
        match self
            .call(ClientMsg::IsUnitActive { unit: unit.into() })
            .await?
        {
            ServerMsg::UnitState { active, state } => Ok(UnitState { active, state }),
            other => Err(unexpected(other)),
        }
    }

    /// Whether a systemd unit is active in the guest.
    pub async fn is_unit_active(&self, unit: &str) -> Result<bool> {
        Ok(self.unit_state(unit).await?.active)
    }

    /// Whether some socket listens on TCP `port` in the guest.
    pub async fn is_port_open(&self, port: u16) -> Result<bool> {
        self.call_bool(ClientMsg::IsPortOpen { port }).await
    }

    /// Whether a guest path exists (following symlinks).
    pub async fn file_exists(&self, path: &str) -> Result<bool> {
        self.call_bool(ClientMsg::FileExists { path: path.into() })
            .await
    }

    async fn call_bool(&self, msg: ClientMsg) -> Result<bool> {
        match self.call(msg).await? {
            ServerMsg::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// The guest's hostname.
    pub async fn hostname(&self) -> Result<String> {
        match self.call(ClientMsg::Hostname).await? {
            ServerMsg::Hostname(name) => Ok(name),
            other => Err(unexpected(other)),
        }
    }

    /// Time since the guest booted.
    pub async fn uptime(&self) -> Result<Duration> {
        match self.call(ClientMsg::Uptime).await? {
            ServerMsg::Uptime(ms) => Ok(Duration::from_millis(ms)),
            other => Err(unexpected(other)),
        }
    }

    /// sync(2) in the guest.
    pub async fn sync(&self) -> Result<()> {
        self.call_ok(ClientMsg::Sync).await
    }

    /// Powers the guest off; returns once the agent acknowledged.
    pub async fn poweroff(&self) -> Result<()> {
        self.call_ok(ClientMsg::Poweroff).await
    }

    /// Reboots the guest; returns once the agent acknowledged.
    pub async fn reboot(&self) -> Result<()> {
        self.call_ok(ClientMsg::Reboot).await
    }

    async fn call_ok(&self, msg: ClientMsg) -> Result<()> {
        match self.call(msg).await? {
            ServerMsg::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(msg: ServerMsg) -> ClientError {
    ClientError::Unexpected(format!("{msg:?}"))
}

/// A running request: its id and the channel of its answers. Dropping it forgets the
/// route, so late answers are discarded.
struct Pending {
    id: u64,
    rx: mpsc::Receiver<ServerMsg>,
    client: Client,
}

impl Pending {
    /// Next answer; an agent `Error` becomes [`ClientError::Remote`].
    async fn recv(&mut self) -> Result<ServerMsg> {
        match self.rx.recv().await {
            Some(ServerMsg::Error { kind, message }) => Err(ClientError::Remote { kind, message }),
            Some(msg) => Ok(msg),
            None => Err(ClientError::Closed),
        }
    }

    /// Sends a follow-up frame for this request.
    async fn send(&self, msg: ClientMsg) -> Result<()> {
        sender_send(&self.client.inner.out, self.id, msg).await
    }
}

async fn sender_send(out: &mpsc::Sender<ClientFrame>, id: u64, msg: ClientMsg) -> Result<()> {
    out.send(ClientFrame { id, msg })
        .await
        .map_err(|_| ClientError::Closed)
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock(&self.client.inner.routes).map.remove(&self.id);
    }
}
