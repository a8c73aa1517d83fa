//! The control API socket thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::{Reply, Request};
use crate::handle::VmHandle;

/// Longest request line accepted; anything longer is a client bug (a `set_faults` with a
/// few hundred rules fits).
const MAX_REQUEST: usize = 256 * 1024;

/// A listening control socket and the thread serving it.
pub struct ApiServer {
    path: PathBuf,
    listener_fd: i32,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `path` (which must not exist yet) and serves requests against `handle`.
    pub fn start(
        path: &Path,
        handle: VmHandle,
        on_start: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let listener = UnixListener::bind(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create API socket {}: {e} (remove a stale socket or pick another path)",
                    path.display()
                ),
            )
        })?;
        let listener_fd = listener.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("kiln-api".into())
            .spawn(move || {
                on_start();
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => serve(stream, &handle),
                        Err(_) => break,
                    }
                }
            })?;
        Ok(ApiServer {
            path: path.to_path_buf(),
            listener_fd,
            thread: Some(thread),
        })
    }

    /// Stops serving and removes the socket file.
    pub fn stop(mut self) {
        // Shutting the listening socket down makes the blocked accept() return an error.
        // SAFETY: the fd belongs to the listener owned by the server thread, still open.
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves one client connection: one JSON request per line, one reply per line.
fn serve(stream: UnixStream, handle: &VmHandle) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream).take(MAX_REQUEST as u64);
    let mut line = String::new();
    loop {
        line.clear();
        reader.set_limit(MAX_REQUEST as u64);
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with('\n') && line.len() >= MAX_REQUEST {
            let _ = writeln!(out, "{}", to_json(&Reply::error("request too long".into())));
            return;
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => handle.request(req),
            Err(e) => Reply::error(format!(
                "bad request: {e}; send one JSON object per line, e.g. {{\"op\":\"status\"}}"
            )),
        };
        if writeln!(out, "{}", to_json(&reply)).is_err() {
            return;
        }
    }
}

fn to_json(r: &Reply) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| r#"{"ok":false,"error":"internal"}"#.into())
}
