//! The Kiln guest agent and its host-side client.
//!
//! The agent runs in the guest (PID 1 in the minimal image, a systemd service in the node
//! image) and serves a framed protocol (see `agent/PROTOCOL.md`) over vsock, or over a
//! Unix socket in test mode. The [`Client`] runs on the host: it connects directly to a
//! Unix socket or through a VMM's vsock Unix socket, and runs many requests at once over
//! one connection.
//!
//! ```no_run
//! # async fn demo() -> agent::client::Result<()> {
//! use agent::{Client, ExecRequest};
//! use std::time::Duration;
//!
//! let client = Client::connect_unix("/tmp/agent.sock").await?;
//! let out = client
//!     .exec_buffered(ExecRequest::argv(["ls", "-l"]).cwd("/").timeout(Duration::from_secs(5)))
//!     .await?;
//! assert!(out.status.success());
//! client.put_bytes(b"hello", "/tmp/hello.txt", 0o644).await?;
//! assert_eq!(client.get_bytes("/tmp/hello.txt").await?, b"hello");
//! # Ok(()) }
//! ```

pub mod client;
pub mod codec;
pub mod pid1;
pub mod protocol;
pub mod server;

pub use client::{Client, ClientError, ExecOutput};
pub use protocol::{Command, ExecRequest, ExitStatus};
