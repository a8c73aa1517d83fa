//! The Kiln guest agent and its host-side client.
//!
//! The agent runs in the guest (PID 1 in the minimal image, a systemd service in the node
//! image) and serves a framed protocol (see `agent/PROTOCOL.md`) over vsock, or over a
//! Unix socket in test mode. The [`Client`] runs on the host: it connects directly to a
//! Unix socket or through a VMM's vsock Unix socket, and runs many requests at once over
//! one connection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use agent::server::{serve_unix, PowerAction, ServerOptions};
//! use agent::{Client, ExecRequest, ExitStatus};
//! use std::time::Duration;
//!
//! // An agent in this process, on a Unix socket (in a guest: `agent serve --vsock`).
//! let dir = tempfile::tempdir()?;
//! let socket = dir.path().join("agent.sock");
//! let listen = socket.clone();
//! tokio::spawn(async move { serve_unix(&listen, ServerOptions { power: PowerAction::Exit }).await });
//! while !socket.exists() { tokio::time::sleep(Duration::from_millis(5)).await; }
//!
//! let client = Client::connect_unix(&socket).await?;
//! let out = client
//!     .exec_buffered(ExecRequest::argv(["sh", "-c", "echo $GREETING; exit 3"])
//!         .env("GREETING", "hello")
//!         .timeout(Duration::from_secs(5)))
//!     .await?;
//! assert_eq!(out.stdout, b"hello\n");
//! assert_eq!(out.status, ExitStatus::Code(3));
//!
//! let file = dir.path().join("hello.txt");
//! let file = file.to_str().unwrap();
//! client.put_bytes(b"hello", file, 0o644).await?;
//! assert_eq!(client.get_bytes(file).await?, b"hello");
//! assert!(client.file_exists(file).await?);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod pid1;
pub mod protocol;
pub mod server;

pub use client::{Client, ClientError, ExecOutput};
pub use protocol::{Command, ExecRequest, ExitStatus};
