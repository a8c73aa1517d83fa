//! One client connection: handshake, then a reader loop that routes frames by request id
//! to per-request tasks, and a writer task that serialises all answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::{exec, files, readiness, system, ServerOptions};
use crate::codec::FrameCodec;
use crate::protocol::{
    ClientFrame, ClientMsg, ErrorKind, ServerFrame, ServerMsg, HANDSHAKE_ID, PROTOCOL_VERSION,
};

/// Frames queued for the socket; bounded so slow clients push back on producers.
const OUTBOX_DEPTH: usize = 256;
/// Client messages queued per request (stdin chunks, file chunks).
const INBOX_DEPTH: usize = 64;

/// A frame to write, with an optional notification once it has been flushed.
pub(crate) struct Outgoing {
    frame: ServerFrame,
    flushed: Option<oneshot::Sender<()>>,
}

/// Where a request task sends its answers.
#[derive(Clone)]
pub(crate) struct Outbox {
    id: u64,
    tx: mpsc::Sender<Outgoing>,
}

impl Outbox {
    /// Queues a message; false when the connection is gone.
    pub(crate) async fn send(&self, msg: ServerMsg) -> bool {
        let frame = ServerFrame { id: self.id, msg };
        self.tx
            .send(Outgoing {
                frame,
                flushed: None,
            })
            .await
            .is_ok()
    }

    /// Sends an error answer.
    pub(crate) async fn error(&self, kind: ErrorKind, message: impl Into<String>) -> bool {
        self.send(ServerMsg::Error {
            kind,
            message: message.into(),
        })
        .await
    }

    /// Sends a message and waits (bounded) until it has been written to the socket.
    pub(crate) async fn send_flushed(&self, msg: ServerMsg) {
        let (done_tx, done_rx) = oneshot::channel();
        let frame = ServerFrame { id: self.id, msg };
        let queued = self.tx.send(Outgoing {
            frame,
            flushed: Some(done_tx),
        });
        if queued.await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), done_rx).await;
        }
    }

    /// Resolves when the connection's writer is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Serves one connection until the client disconnects or sends a bad frame. Errors are
/// logged; they never affect other connections.
pub async fn serve_connection<S>(stream: S, options: Arc<ServerOptions>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, FrameCodec::<ClientFrame, ServerFrame>::new());
    let mut sink = FramedWrite::new(wr, FrameCodec::<ClientFrame, ServerFrame>::new());

    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTBOX_DEPTH);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            if let Err(e) = sink.send(out.frame).await {
                tracing::warn!(error = %e, "write failed, closing connection");
                break;
            }
            if let Some(done) = out.flushed {
                let _ = done.send(());
            }
        }
    });

    match handshake(&mut reader, &tx).await {
        Ok(()) => route_requests(&mut reader, &tx, &options).await,
        Err(reason) => tracing::warn!(%reason, "handshake failed, closing connection"),
    }
    // Let already-queued answers (e.g. the handshake refusal) go out, then stop the writer
    // so that request tasks see the connection closed and clean up.
    drop(tx);
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_millis(200), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}

async fn handshake<R>(
    reader: &mut FramedRead<R, FrameCodec<ClientFrame, ServerFrame>>,
    tx: &mpsc::Sender<Outgoing>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
{
    let first = match reader.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("closed before the handshake".into()),
    };
    let outbox = Outbox {
        id: HANDSHAKE_ID,
        tx: tx.clone(),
    };
    match first {
        ClientFrame {
            id: HANDSHAKE_ID,
            msg: ClientMsg::Hello { version },
        } if version == PROTOCOL_VERSION => {
            outbox.send(super::announcement().msg).await;
            Ok(())
        }
        ClientFrame {
            msg: ClientMsg::Hello { version },
            ..
        } => {
            let message =
                format!("client speaks protocol {version}, agent speaks {PROTOCOL_VERSION}");
            outbox
                .error(ErrorKind::UnsupportedVersion, message.clone())
                .await;
            Err(message)
        }
        other => Err(format!("first frame is not Hello: {other:?}")),
    }
}

async fn route_requests<R>(
    reader: &mut FramedRead<R, FrameCodec<ClientFrame, ServerFrame>>,
    tx: &mpsc::Sender<Outgoing>,
    options: &Arc<ServerOptions>,
) where
    R: AsyncRead + Unpin,
{
    // Running requests that accept follow-up messages (stdin, file chunks, kill).
    let mut inboxes: HashMap<u64, mpsc::Sender<ClientMsg>> = HashMap::new();
    while let Some(frame) = reader.next().await {
        let ClientFrame { id, msg } = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "bad frame, closing connection");
                return;
            }
        };
        if is_follow_up(&msg) {
            match inboxes.get(&id) {
                // The task may have finished (process exited): its leftovers are dropped.
                Some(inbox) => {
                    let _ = inbox.send(msg).await;
                }
                None => tracing::debug!(id, "follow-up for no running request, dropped"),
            }
            continue;
        }
        inboxes.retain(|_, inbox| !inbox.is_closed());
        let outbox = Outbox { id, tx: tx.clone() };
        if id == HANDSHAKE_ID || inboxes.contains_key(&id) {
            outbox
                .error(
                    ErrorKind::InvalidRequest,
                    format!("request id {id} is reserved or still in use"),
                )
                .await;
            continue;
        }
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_DEPTH);
        if takes_follow_ups(&msg) {
            inboxes.insert(id, inbox_tx);
        }
        tokio::spawn(handle_request(msg, inbox_rx, outbox, options.clone()));
    }
}

fn is_follow_up(msg: &ClientMsg) -> bool {
    matches!(
        msg,
        ClientMsg::Stdin(_)
            | ClientMsg::StdinEof
            | ClientMsg::Kill
            | ClientMsg::PutData(_)
            | ClientMsg::PutEnd { .. }
    )
}

fn takes_follow_ups(msg: &ClientMsg) -> bool {
    matches!(msg, ClientMsg::Exec(_) | ClientMsg::PutBegin { .. })
}

async fn handle_request(
    msg: ClientMsg,
    inbox: mpsc::Receiver<ClientMsg>,
    out: Outbox,
    options: Arc<ServerOptions>,
) {
    match msg {
        ClientMsg::Exec(req) => exec::run(req, inbox, out).await,
        ClientMsg::PutBegin { path, mode } => files::put(&path, mode, inbox, &out).await,
        ClientMsg::Get { path } => files::get(&path, &out).await,
        ClientMsg::Stat { path } => files::stat(&path, &out).await,
        ClientMsg::List { path } => files::list(&path, &out).await,
        ClientMsg::IsUnitActive { unit } => readiness::unit_active(&unit, &out).await,
        ClientMsg::IsPortOpen { port } => readiness::port_open(port, &out).await,
        ClientMsg::FileExists { path } => readiness::file_exists(&path, &out).await,
        ClientMsg::Hostname => system::answer_hostname(&out).await,
        ClientMsg::Uptime => system::answer_uptime(&out).await,
        ClientMsg::Sync => system::answer_sync(&out).await,
        ClientMsg::Poweroff => system::power(options.power, false, &out).await,
        ClientMsg::Reboot => system::power(options.power, true, &out).await,
        ClientMsg::Hello { .. } => {
            out.error(
                ErrorKind::InvalidRequest,
                "Hello is only valid as the first frame",
            )
            .await;
        }
        other => {
            out.error(
                ErrorKind::InvalidRequest,
                format!("{other:?} is not a request start"),
            )
            .await;
        }
    }
}
