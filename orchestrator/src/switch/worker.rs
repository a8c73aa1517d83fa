//! The switch thread: waits for frames (or a stop request, or the next delayed frame),
//! forwards them, and releases delayed frames when due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::frame::MAX_FRAME;
use super::state::{PortId, State};

/// Frames read per wake-up before due delayed frames get their turn.
const BATCH: usize = 64;

/// A frame held back by a link delay. Ordered by due time, then arrival.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delayed {
    due: Instant,
    seq: u64,
    port: PortId,
    frame: Vec<u8>,
}

/// Runs until a byte arrives on `wake`.
pub fn run(socket: UnixDatagram, wake: UnixDatagram, state: Arc<Mutex<State>>) {
    let mut delayed = BinaryHeap::<Reverse<Delayed>>::new();
    let mut seq = 0u64;
    // One byte more than the largest frame, so oversized datagrams are seen as such.
    let mut buf = vec![0u8; MAX_FRAME + 1];
    loop {
        let timeout = delayed
            .peek()
            .map(|Reverse(d)| d.due.saturating_duration_since(Instant::now()));
        let (frames_ready, stop) = match wait(&socket, &wake, timeout) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "switch: poll failed, stopping");
                return;
            }
        };
        if stop {
            return;
        }
        if frames_ready {
            for _ in 0..BATCH {
                let (n, from) = match socket.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "switch: receive failed");
                        break;
                    }
                };
                let frame = &buf[..n];
                let now = Instant::now();
                let mut st = lock(&state);
                for d in st.forward(&from, frame, now) {
                    match d.due {
                        None => st.send(&socket, d.port, frame),
                        Some(due) => {
                            seq += 1;
                            delayed.push(Reverse(Delayed {
                                due,
                                seq,
                                port: d.port,
                                frame: frame.to_vec(),
                            }));
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        while delayed.peek().is_some_and(|Reverse(d)| d.due <= now) {
            if let Some(Reverse(d)) = delayed.pop() {
                lock(&state).send(&socket, d.port, &d.frame);
            }
        }
    }
}

/// Locks the state; a poisoned lock still holds consistent counters, so keep going.
pub fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for frames or a stop request; returns (frames ready, stop requested).
fn wait(
    socket: &UnixDatagram,
    wake: &UnixDatagram,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(socket, PollFlags::IN),
        PollFd::new(wake, PollFlags::IN),
    ];
    let timeout = timeout.map(|t| {
        Timespec::try_from(t).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    match poll(&mut fds, timeout.as_ref()) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok((false, false)),
        Err(e) => return Err(e.into()),
    }
    let stop = !fds[1].revents().is_empty();
    Ok((!fds[0].revents().is_empty(), stop))
}
