//! Things held back until a time (delayed block completions, delayed or reordered frames): a
//! min-heap of due times and a timer fd on the event loop armed for the earliest, so a delay
//! never blocks the device thread and other requests and devices go on.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

struct Pending<T> {
    due: Instant,
    /// Arrival order, so items due at the same instant come out in order.
    seq: u64,
    item: T,
}

impl<T> PartialEq for Pending<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<T> Eq for Pending<T> {}
impl<T> PartialOrd for Pending<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Pending<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Items waiting for their time, and the timer that says when to look.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<Pending<T>>>,
    seq: u64,
    /// Non-blocking; `None` if it could not be created (then nothing can be held back).
    timer: Option<TimerFd>,
}

fn nonblocking_timer() -> std::io::Result<TimerFd> {
    let t = TimerFd::new().map_err(std::io::Error::from)?;
    let fd = t.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(t)
}

impl<T> TimerQueue<T> {
    /// An empty queue with a disarmed, non-blocking timer.
    pub fn new() -> Self {
        let timer = nonblocking_timer()
            .map_err(|e| tracing::error!("no timer for delayed I/O, delays are not applied: {e}"))
            .ok();
        TimerQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            timer,
        }
    }

    /// The timer to poll (readable when something may be due).
    pub fn timer(&self) -> Option<&TimerFd> {
        self.timer.as_ref()
    }

    /// Number of items waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Holds `item` until `due`. Without a timer the item is handed back (use it now).
    pub fn push(&mut self, due: Instant, item: T) -> Result<(), T> {
        if self.timer.is_none() {
            return Err(item);
        }
        self.seq += 1;
        self.heap.push(Reverse(Pending {
            due,
            seq: self.seq,
            item,
        }));
        self.arm(Instant::now());
        Ok(())
    }

    /// Takes every item due at `now`, earliest first, and re-arms the timer for the rest.
    pub fn take_due(&mut self, now: Instant) -> Vec<T> {
        if let Some(t) = &mut self.timer {
            // Clears readiness; EAGAIN (nothing expired yet) is fine.
            let _ = t.wait();
        }
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|Reverse(p)| p.due <= now) {
            if let Some(Reverse(p)) = self.heap.pop() {
                due.push(p.item);
            }
        }
        self.arm(now);
        due
    }

    /// Every waiting item with its due time, earliest first (items due at the same instant
    /// in arrival order). Nothing is taken out.
    pub fn pending(&self) -> Vec<(Instant, &T)> {
        let mut all: Vec<&Pending<T>> = self.heap.iter().map(|Reverse(p)| p).collect();
        all.sort();
        all.into_iter().map(|p| (p.due, &p.item)).collect()
    }

    /// When the earliest item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(p)| p.due)
    }

    fn arm(&mut self, now: Instant) {
        let next = self.next_due();
        let Some(timer) = &mut self.timer else {
            return;
        };
        let result = match next {
            // A zero duration would disarm the timer: wait at least a nanosecond.
            Some(due) => timer.reset(
                due.saturating_duration_since(now)
                    .max(Duration::from_nanos(1)),
                None,
            ),
            None => timer.clear(),
        };
        if let Err(e) = result {
            tracing::warn!("cannot arm the delayed-I/O timer: {e}");
        }
    }
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_due_order_and_the_timer_fires() {
        let mut q = TimerQueue::new();
        let t0 = Instant::now();
        q.push(t0 + Duration::from_millis(30), "b").unwrap();
        q.push(t0 + Duration::from_millis(10), "a").unwrap();
        q.push(t0 + Duration::from_millis(30), "c").unwrap();
        assert_eq!(q.take_due(t0), Vec::<&str>::new());
        // The timer becomes readable at the earliest due time.
        let mut pfd = libc::pollfd {
            fd: q.timer().unwrap().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);
        assert!(t0.elapsed() >= Duration::from_millis(10));
        assert_eq!(q.take_due(t0 + Duration::from_millis(10)), ["a"]);
        assert_eq!(q.take_due(t0 + Duration::from_millis(40)), ["b", "c"]);
        assert!(q.is_empty());
    }

    #[test]
    fn pending_lists_everything_in_due_order_without_taking_it() {
        let mut q = TimerQueue::new();
        let t0 = Instant::now() + Duration::from_secs(60);
        q.push(t0 + Duration::from_millis(30), "b").unwrap();
        q.push(t0 + Duration::from_millis(10), "a").unwrap();
        q.push(t0 + Duration::from_millis(30), "c").unwrap();
        let pending = q.pending();
        let items: Vec<&str> = pending.iter().map(|(_, i)| **i).collect();
        assert_eq!(items, ["a", "b", "c"]);
        assert_eq!(pending[0].0, t0 + Duration::from_millis(10));
        assert_eq!(q.len(), 3);
    }
}
