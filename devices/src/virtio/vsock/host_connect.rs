//! Host-initiated connections before they reach the guest: the accepted Unix stream and the
//! `CONNECT <port>\n` line it must send first (Firecracker's convention).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;

/// Longest accepted `CONNECT` line, newline included.
const MAX_LINE: usize = 32;

/// What reading the connect line produced so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineStatus {
    /// Not complete yet; wait for more bytes.
    Partial,
    /// The host asked for this guest port.
    Port(u32),
    /// Malformed line, EOF or error: close the stream.
    Invalid(String),
}

/// An accepted host stream that has not finished its `CONNECT` line.
pub(crate) struct PendingHostConn {
    pub(crate) stream: UnixStream,
    line: Vec<u8>,
}

impl PendingHostConn {
    pub(crate) fn new(stream: UnixStream) -> Self {
        PendingHostConn {
            stream,
            line: Vec::with_capacity(MAX_LINE),
        }
    }

    /// Reads byte by byte up to the newline, so data the host sends after the line stays in
    /// the socket for the connection to forward.
    pub(crate) fn read_line(&mut self) -> LineStatus {
        loop {
            let mut byte = [0u8; 1];
            match self.stream.read(&mut byte) {
                Ok(0) => return LineStatus::Invalid("closed before CONNECT line".into()),
                Ok(_) if byte[0] == b'\n' => return parse_connect_line(&self.line),
                Ok(_) if self.line.len() + 1 >= MAX_LINE => {
                    return LineStatus::Invalid("CONNECT line too long".into())
                }
                Ok(_) => self.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return LineStatus::Partial,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return LineStatus::Invalid(e.to_string()),
            }
        }
    }
}

/// Parses `CONNECT <port>` (without the newline).
pub(crate) fn parse_connect_line(line: &[u8]) -> LineStatus {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    match text.strip_prefix("CONNECT ").map(str::parse::<u32>) {
        Some(Ok(port)) => LineStatus::Port(port),
        _ => LineStatus::Invalid(format!("expected \"CONNECT <port>\", got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 52"), LineStatus::Port(52));
        assert_eq!(parse_connect_line(b"CONNECT 52\r"), LineStatus::Port(52));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT -1",
            b"connect 5",
            b"CONNECT 99999999999",
            b"",
        ] {
            assert!(matches!(parse_connect_line(bad), LineStatus::Invalid(_)));
        }
    }
}
