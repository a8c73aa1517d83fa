//! QEMU's human monitor (HMP) over a Unix socket, for the migration peer: `migrate` to a file
//! and `info status` / `info migrate` polling.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connected monitor.
pub struct Monitor(UnixStream);

impl Monitor {
    /// Connects to `-monitor unix:PATH,server,nowait`, waiting up to `timeout` for QEMU to
    /// create the socket.
    pub fn connect(path: &Path, timeout: Duration) -> std::io::Result<Monitor> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > end => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut m = Monitor(stream);
        m.until_prompt()?;
        Ok(m)
    }

    fn until_prompt(&mut self) -> std::io::Result<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(b"(qemu) ") {
            let n = self.0.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("monitor closed"));
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs one command and returns what it printed.
    pub fn cmd(&mut self, line: &str) -> std::io::Result<String> {
        writeln!(self.0, "{line}")?;
        self.until_prompt()
    }

    /// Polls `command` every millisecond until its output contains `needle`.
    pub fn wait_for(
        &mut self,
        command: &str,
        needle: &str,
        timeout: Duration,
    ) -> std::io::Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let out = self.cmd(command)?;
            if out.contains(needle) {
                return Ok(());
            }
            if out.contains("failed") || Instant::now() > end {
                return Err(std::io::Error::other(format!("{command}: {out}")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
