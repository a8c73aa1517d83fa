//! Frames a net fault holds back: delayed frames (until their time) and reordered frames
//! (until the next frame in the same direction has passed, or [`REORDER_WAIT`] at most).
//! Memory is bounded by [`MAX_HELD_BYTES`]; past it, frames to hold are dropped instead.

use std::time::{Duration, Instant};

use crate::fault::NetDirection;
use crate::virtio::timer_queue::TimerQueue;

/// Longest a reordered frame waits for a frame to overtake it.
pub const REORDER_WAIT: Duration = Duration::from_millis(100);
/// Most frame bytes held at once per NIC.
pub const MAX_HELD_BYTES: usize = 16 << 20;

enum Held {
    Frame(NetDirection, Vec<u8>),
    /// Release the reorder slot of this direction if it still holds frame `generation`.
    ReorderTimeout(NetDirection, u64),
}

/// The frames one NIC holds back.
pub(crate) struct HeldFrames {
    queue: TimerQueue<Held>,
    /// Reordered frame per direction (tx, rx) with its generation.
    reorder: [Option<(u64, Vec<u8>)>; 2],
    generation: u64,
    bytes: usize,
}

fn slot(dir: NetDirection) -> usize {
    match dir {
        NetDirection::FromGuest => 0,
        NetDirection::ToGuest => 1,
    }
}

impl HeldFrames {
    pub(crate) fn new() -> Self {
        HeldFrames {
            queue: TimerQueue::new(),
            reorder: [None, None],
            generation: 0,
            bytes: 0,
        }
    }

    /// The timer to poll.
    pub(crate) fn timer(&self) -> Option<&vmm_sys_util::timerfd::TimerFd> {
        self.queue.timer()
    }

    /// Holds `frame` until `due`; hands it back if it cannot be held (over the memory bound
    /// or no timer): the caller drops it.
    pub(crate) fn delay(
        &mut self,
        dir: NetDirection,
        due: Instant,
        frame: Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        if self.bytes + frame.len() > MAX_HELD_BYTES {
            return Err(frame);
        }
        let len = frame.len();
        match self.queue.push(due, Held::Frame(dir, frame)) {
            Ok(()) => {
                self.bytes += len;
                Ok(())
            }
            Err(Held::Frame(_, f)) => Err(f),
            Err(Held::ReorderTimeout(..)) => Err(Vec::new()),
        }
    }

    /// Holds `frame` until the next frame in `dir` passes. A frame already held there is
    /// handed back to go out now (only one is held per direction); so is `frame` if it
    /// cannot be held.
    pub(crate) fn hold_for_reorder(
        &mut self,
        dir: NetDirection,
        frame: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let previous = self.take_reordered(dir);
        if self.bytes + frame.len() > MAX_HELD_BYTES {
            return Some(frame);
        }
        self.generation += 1;
        let g = self.generation;
        if self
            .queue
            .push(Instant::now() + REORDER_WAIT, Held::ReorderTimeout(dir, g))
            .is_err()
        {
            return Some(frame);
        }
        self.bytes += frame.len();
        self.reorder[slot(dir)] = Some((g, frame));
        previous
    }

    /// A frame in `dir` has passed: the frame held for reordering (if any) goes next.
    pub(crate) fn take_reordered(&mut self, dir: NetDirection) -> Option<Vec<u8>> {
        let (_, frame) = self.reorder[slot(dir)].take()?;
        self.bytes -= frame.len();
        Some(frame)
    }

    /// Frames whose time has come, in order.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(NetDirection, Vec<u8>)> {
        let mut out = Vec::new();
        for held in self.queue.take_due(now) {
            match held {
                Held::Frame(dir, frame) => {
                    self.bytes -= frame.len();
                    out.push((dir, frame));
                }
                Held::ReorderTimeout(dir, g) => {
                    if self.reorder[slot(dir)]
                        .as_ref()
                        .is_some_and(|(held, _)| *held == g)
                    {
                        if let Some(frame) = self.take_reordered(dir) {
                            out.push((dir, frame));
                        }
                    }
                }
            }
        }
        out
    }
}
