//! Running commands: a streaming handle and a buffered form.

use tokio::sync::mpsc;

use super::{sender_send, unexpected, Client, ClientError, Pending, Result};
use crate::protocol::{ClientFrame, ClientMsg, ExecRequest, ExitStatus, ServerMsg, CHUNK_LEN};

/// Default cap on each of stdout and stderr for buffered execs.
pub const MAX_BUFFERED_OUTPUT: usize = 1 << 30;

/// Something a running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// A chunk of stdout.
    Stdout(Vec<u8>),
    /// A chunk of stderr.
    Stderr(Vec<u8>),
    /// The command ended (the last event).
    Exited {
        /// Exit code or signal.
        status: ExitStatus,
        /// Whether the agent killed it on timeout.
        timed_out: bool,
    },
}

/// Everything a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// All of stdout.
    pub stdout: Vec<u8>,
    /// All of stderr.
    pub stderr: Vec<u8>,
    /// Exit code or signal.
    pub status: ExitStatus,
    /// Whether the agent killed it on timeout.
    pub timed_out: bool,
}

/// A command running in the guest. Read its events with [`Exec::next_event`].
pub struct Exec {
    pending: Pending,
    pid: u32,
    stdin: Option<ExecStdin>,
    finished: bool,
}

/// Writes to the stdin of a running command (only if requested with
/// [`ExecRequest::with_stdin`]). Closing it (or [`ExecStdin::close`]) sends EOF.
pub struct ExecStdin {
    id: u64,
    out: mpsc::Sender<ClientFrame>,
    closed: bool,
}

impl ExecStdin {
    /// Sends bytes, split into protocol-sized chunks.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(CHUNK_LEN) {
            sender_send(&self.out, self.id, ClientMsg::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Closes stdin (the command sees EOF).
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        sender_send(&self.out, self.id, ClientMsg::StdinEof).await
    }
}

impl Drop for ExecStdin {
    fn drop(&mut self) {
        if !self.closed {
            // Best effort: if the queue is full the command keeps its stdin until exit.
            let _ = self.out.try_send(ClientFrame {
                id: self.id,
                msg: ClientMsg::StdinEof,
            });
        }
    }
}

impl Exec {
    /// Pid of the command in the guest (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes the stdin writer (once); `None` if stdin was not requested.
    pub fn take_stdin(&mut self) -> Option<ExecStdin> {
        self.stdin.take()
    }

    /// Kills the command's whole process group.
    pub async fn kill(&self) -> Result<()> {
        self.pending.send(ClientMsg::Kill).await
    }

    /// Next output chunk or the exit; `None` after the exit was returned.
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>> {
        if self.finished {
            return Ok(None);
        }
        let event = match self.pending.recv().await? {
            ServerMsg::Stdout(data) => ExecEvent::Stdout(data),
            ServerMsg::Stderr(data) => ExecEvent::Stderr(data),
            ServerMsg::Exited { status, timed_out } => {
                self.finished = true;
                ExecEvent::Exited { status, timed_out }
            }
            other => return Err(unexpected(other)),
        };
        Ok(Some(event))
    }

    /// Collects all remaining output and the exit status, at most
    /// [`MAX_BUFFERED_OUTPUT`] bytes per stream (the guest is not trusted to be brief).
    pub async fn wait_output(self) -> Result<ExecOutput> {
        self.wait_output_limited(MAX_BUFFERED_OUTPUT).await
    }

    /// Like [`Exec::wait_output`] with a chosen limit per stream; beyond it the command's
    /// process group is killed and [`ClientError::OutputTooLarge`] returned.
    pub async fn wait_output_limited(mut self, limit: usize) -> Result<ExecOutput> {
        drop(self.stdin.take());
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = self.next_event().await? {
            let over_limit = match &event {
                ExecEvent::Stdout(d) => stdout.len() + d.len() > limit,
                ExecEvent::Stderr(d) => stderr.len() + d.len() > limit,
                ExecEvent::Exited { .. } => false,
            };
            if over_limit {
                let _ = self.kill().await;
                return Err(ClientError::OutputTooLarge { limit });
            }
            match event {
                ExecEvent::Stdout(d) => stdout.extend_from_slice(&d),
                ExecEvent::Stderr(d) => stderr.extend_from_slice(&d),
                ExecEvent::Exited { status, timed_out } => {
                    return Ok(ExecOutput {
                        stdout,
                        stderr,
                        status,
                        timed_out,
                    })
                }
            }
        }
        Err(ClientError::Closed)
    }
}

impl Client {
    /// Starts a command and returns once the agent has spawned it.
    pub async fn exec(&self, req: ExecRequest) -> Result<Exec> {
        let wants_stdin = req.stdin;
        let mut pending = self.start(ClientMsg::Exec(req)).await?;
        let pid = match pending.recv().await? {
            ServerMsg::Started { pid } => pid,
            other => return Err(unexpected(other)),
        };
        let stdin = wants_stdin.then(|| ExecStdin {
            id: pending.id,
            out: self.inner.out.clone(),
            closed: false,
        });
        Ok(Exec {
            pending,
            pid,
            stdin,
            finished: false,
        })
    }

    /// Runs a command to completion and returns all its output at once (at most
    /// [`MAX_BUFFERED_OUTPUT`] bytes per stream). If the request asked for stdin, stdin
    /// is closed immediately.
    pub async fn exec_buffered(&self, req: ExecRequest) -> Result<ExecOutput> {
        self.exec(req).await?.wait_output().await
    }
}
