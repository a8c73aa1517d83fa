//! Copying the command's output and the console out of QEMU while it runs.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A listening socket QEMU connects to; everything it sends is copied to `sink`.
pub struct PortPump {
    path: PathBuf,
    thread: JoinHandle<std::io::Result<u64>>,
}

impl PortPump {
    /// Listen at `path` and copy the first connection into `sink` until EOF.
    pub fn start(path: PathBuf, mut sink: impl Write + Send + 'static) -> std::io::Result<Self> {
        let listener = UnixListener::bind(&path)?;
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept()?;
            let mut buf = [0u8; 16 * 1024];
            let mut total = 0;
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                total += n as u64;
                // Live streaming: flush every chunk.
                sink.write_all(&buf[..n])?;
                sink.flush()?;
            }
            Ok(total)
        });
        Ok(Self { path, thread })
    }

    /// Wait for the copy to end. QEMU has exited by now; if it never
    /// connected, connect ourselves so the accept returns at once.
    pub fn finish(self) -> std::io::Result<u64> {
        if !self.thread.is_finished() {
            let _unblock = UnixStream::connect(&self.path);
        }
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("output copy thread panicked"))?
    }
}

/// The serial console: every line goes to a log file, optionally to stderr,
/// and the last lines are kept for error messages.
pub struct ConsolePump {
    tail: Arc<Mutex<VecDeque<String>>>,
    thread: JoinHandle<()>,
}

const TAIL_LINES: usize = 60;

impl ConsolePump {
    /// Start reading `source` (QEMU's stdout).
    pub fn start(source: impl Read + Send + 'static, mut log: std::fs::File, echo: bool) -> Self {
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let keep = Arc::clone(&tail);
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(source);
            let mut raw = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut raw) {
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                raw.clear();
                let _ = writeln!(log, "{line}");
                if echo {
                    eprintln!("[console] {line}");
                }
                if let Ok(mut tail) = keep.lock() {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        Self { tail, thread }
    }

    /// Wait for EOF and return the last console lines.
    pub fn finish(self) -> Vec<String> {
        let _ = self.thread.join();
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink shared with the test.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pump_copies_a_real_socket_until_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.sock");
        let sink = Shared::default();
        let pump = PortPump::start(path.clone(), sink.clone()).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"hello\0binary\xff").unwrap();
        drop(client);
        assert_eq!(pump.finish().unwrap(), 13);
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\0binary\xff");
    }

    #[test]
    fn pump_without_a_client_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let pump = PortPump::start(dir.path().join("s"), Shared::default()).unwrap();
        assert_eq!(pump.finish().unwrap(), 0);
    }

    #[test]
    fn console_keeps_log_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("console.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let text: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
        let pump = ConsolePump::start(std::io::Cursor::new(text.into_bytes()), log, false);
        let tail = pump.finish();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "line 99");
        let logged = std::fs::read_to_string(log_path).unwrap();
        assert_eq!(logged.lines().count(), 100);
    }
}
