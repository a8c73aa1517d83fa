//! The event-loop side of a single-queue virtio device (block, rng): wait on the queue's
//! notification event fd, walk the available ring, hand each descriptor chain to a
//! device-specific [`ChainProcessor`], publish the used entries and raise the interrupt.
//! A processor may ask for a chain's completion to be held back ([`Used::delay`]): it then
//! waits in a [`TimerQueue`] and a timer on the event loop publishes it later. A snapshot
//! saves the completions still held back ([`HeldCompletion`]) and a restore holds them back
//! again for the time they had left, so none is lost.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber, SubscriberId};
use serde::{Deserialize, Serialize};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::timer_queue::TimerQueue;
use super::{
    add_to_event_loop, remove_from_event_loop, ActivateContext, ActivateError, EventLoopEndpoint,
    VirtioInterrupt,
};
use crate::GuestMemory;

/// A descriptor chain as handed to a [`ChainProcessor`].
pub type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// How a processed chain is to be completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// Bytes the device wrote into the chain (the used length).
    pub len: u32,
    /// How long to hold the completion back (zero: publish it now).
    pub delay: Duration,
}

impl Used {
    /// Completes at once with used length `len`.
    pub fn now(len: u32) -> Self {
        Used {
            len,
            delay: Duration::ZERO,
        }
    }
}

/// A completion held back when its device was saved. The chain was carried out (its data is
/// in guest memory or on the disk); only its used entry is still to be published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCompletion {
    /// Head of the chain.
    pub head: u16,
    /// Used length.
    pub len: u32,
    /// How long it still had to wait.
    pub remaining: Duration,
}

/// Longest wait a restored completion may have left: the longest fault delay.
const MAX_HELD: Duration = Duration::from_millis(crate::fault::rules::MAX_DELAY_MS);

/// Device-specific handling of one descriptor chain.
pub trait ChainProcessor: Send {
    /// Handles one chain and says how to complete it. Must never panic on guest data.
    fn process_chain(&mut self, mem: &GuestMemory, chain: Chain<'_>) -> Used;
}

/// Event data of the queue notification fd and of the deferred-completion timer.
const EVENT_QUEUE: u32 = 0;
const EVENT_TIMER: u32 = 1;

/// Why a queue stopped being processed. The guest must reset the device to recover.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("virtio queue access failed: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("the available index moved but no descriptor chain could be read")]
    Stalled,
}

/// Owns one queue of an activated device and processes it on notification.
pub struct QueueHandler<P> {
    mem: GuestMemory,
    queue: Queue,
    queue_evt: EventFd,
    interrupt: Arc<VirtioInterrupt>,
    processor: P,
    broken: bool,
    /// Held-back completions: (head, used length).
    deferred: TimerQueue<(u16, u32)>,
}

impl<P: ChainProcessor> QueueHandler<P> {
    /// Builds a handler; `queue` must already be validated by the transport.
    pub fn new(
        mem: GuestMemory,
        queue: Queue,
        queue_evt: EventFd,
        interrupt: Arc<VirtioInterrupt>,
        processor: P,
    ) -> Self {
        QueueHandler {
            mem,
            queue,
            queue_evt,
            interrupt,
            processor,
            broken: false,
            deferred: TimerQueue::new(),
        }
    }

    /// The device-specific processor (e.g. to inspect it in tests).
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// The queue being processed.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// True once the guest corrupted the queue; nothing more is processed until reset.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Processes every available chain, then interrupts the guest if it asked for it.
    /// Returns the number of chains completed. A corrupt queue is logged once and then
    /// ignored: the host keeps running, the guest has to reset the device.
    pub fn process_queue(&mut self) -> usize {
        if self.broken {
            return 0;
        }
        let mut completed = 0;
        let result = self.drain(&mut completed);
        if let Err(e) = result {
            tracing::warn!("virtio queue is broken, ignoring it until reset: {e}");
            self.broken = true;
        }
        self.notify(completed);
        completed
    }

    /// Number of completions waiting for their delay.
    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    /// The completions held back now, earliest first, with the time each has left (for a
    /// snapshot, taken while the event loop is parked so none is published meanwhile).
    pub fn held_completions(&self) -> Vec<HeldCompletion> {
        let now = Instant::now();
        self.deferred
            .pending()
            .into_iter()
            .map(|(due, &(head, len))| HeldCompletion {
                head,
                len,
                remaining: due.saturating_duration_since(now),
            })
            .collect()
    }

    /// Holds back `held` (saved with the device) again, each for the time it had left. A
    /// list that no device state could hold (more entries than the queue has, a head outside
    /// it, a wait longer than any fault delay) is refused and nothing is held.
    pub fn restore_held(&mut self, held: &[HeldCompletion]) -> Result<(), String> {
        let size = self.queue.size();
        if held.len() > usize::from(size) {
            return Err(format!(
                "{} held completions for a queue of {size}",
                held.len()
            ));
        }
        if let Some(bad) = held
            .iter()
            .find(|h| h.head >= size || h.remaining > MAX_HELD)
        {
            return Err(format!(
                "held completion of chain {} ({:?} left) does not fit a queue of {size}",
                bad.head, bad.remaining
            ));
        }
        let now = Instant::now();
        let mut completed = 0;
        for h in held {
            if self
                .deferred
                .push(now + h.remaining, (h.head, h.len))
                .is_err()
            {
                // No timer to wait with: complete it now rather than never.
                self.queue
                    .add_used(&self.mem, h.head, h.len)
                    .map_err(|e| format!("cannot complete held chain {}: {e}", h.head))?;
                completed += 1;
            }
        }
        self.notify(completed);
        Ok(())
    }

    /// Publishes every held-back completion whose time has come; returns how many.
    pub fn complete_due(&mut self) -> usize {
        let due = self.deferred.take_due(Instant::now());
        if self.broken {
            return 0;
        }
        let mut completed = 0;
        for (head, len) in due {
            if let Err(e) = self.queue.add_used(&self.mem, head, len) {
                tracing::warn!("virtio queue is broken, ignoring it until reset: {e}");
                self.broken = true;
                break;
            }
            completed += 1;
        }
        self.notify(completed);
        completed
    }

    fn notify(&mut self, completed: usize) {
        if completed > 0 {
            match self.queue.needs_notification(&self.mem) {
                Ok(true) => self.interrupt.signal_used_queue(),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!("used_event unreadable ({e}), interrupting anyway");
                    self.interrupt.signal_used_queue();
                }
            }
        }
    }

    fn drain(&mut self, completed: &mut usize) -> Result<(), QueueError> {
        loop {
            self.queue.disable_notification(&self.mem)?;
            let mut progressed = false;
            // A fresh iterator per chain so the queue is free for add_used in between.
            while let Some(chain) = self.queue.iter(&self.mem)?.next() {
                progressed = true;
                let head = chain.head_index();
                let used = self.processor.process_chain(&self.mem, chain);
                if head >= self.queue.size() {
                    // The guest put an out-of-range head in the avail ring: nothing to report.
                    tracing::debug!("avail ring head {head} out of range, dropped");
                    continue;
                }
                // A driver has at most queue-size chains in flight; a hostile one reusing
                // heads could pile up more, so past that delays are not applied.
                if !used.delay.is_zero()
                    && self.deferred.len() < usize::from(self.queue.size())
                    && self
                        .deferred
                        .push(Instant::now() + used.delay, (head, used.len))
                        .is_ok()
                {
                    continue;
                }
                self.queue.add_used(&self.mem, head, used.len)?;
                *completed += 1;
            }
            if !self.queue.enable_notification(&self.mem)? {
                return Ok(());
            }
            if !progressed {
                return Err(QueueError::Stalled);
            }
        }
    }
}

impl<P: ChainProcessor> MutEventSubscriber for QueueHandler<P> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events
            .event_set()
            .intersects(EventSet::ERROR | EventSet::HANG_UP)
        {
            tracing::warn!("queue event fd failed, no longer watching it");
            if let Err(e) = ops.remove(events) {
                tracing::warn!("could not unregister queue event fd: {e:?}");
            }
            return;
        }
        if events.data() == EVENT_TIMER {
            self.complete_due();
            return;
        }
        // The counter value is irrelevant; a failed read (EAGAIN) still means "look at the ring".
        let _ = self.queue_evt.read();
        self.process_queue();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.queue_evt,
            EVENT_QUEUE,
            EventSet::IN,
        )) {
            tracing::error!("could not watch queue event fd: {e:?}");
        }
        if let Some(timer) = self.deferred.timer() {
            if let Err(e) = ops.add(Events::with_data(timer, EVENT_TIMER, EventSet::IN)) {
                tracing::error!("could not watch the delayed-completion timer: {e:?}");
            }
        }
    }
}

/// The handler of an activated single-queue device, plus its event-loop registration.
pub struct RunningQueue<P> {
    handler: Arc<Mutex<QueueHandler<P>>>,
    registration: Option<(EventLoopEndpoint, SubscriberId)>,
}

impl<P: ChainProcessor + 'static> RunningQueue<P> {
    /// Takes the single queue out of `ctx`, builds the handler and, if an endpoint is given,
    /// adds it to the event loop (blocking until the loop has accepted it).
    pub fn start(
        ctx: ActivateContext,
        processor: P,
        endpoint: Option<&EventLoopEndpoint>,
    ) -> Result<Self, ActivateError> {
        Self::start_restored(ctx, processor, &[], endpoint)
    }

    /// Like [`RunningQueue::start`], for a restored device: the completions it held back
    /// when saved are held back again (for the time they had left) before the handler joins
    /// the event loop.
    pub fn start_restored(
        ctx: ActivateContext,
        processor: P,
        held: &[HeldCompletion],
        endpoint: Option<&EventLoopEndpoint>,
    ) -> Result<Self, ActivateError> {
        let ActivateContext {
            mem,
            queues,
            queue_evts,
            interrupt,
            ..
        } = ctx;
        if queues.len() != 1 || queue_evts.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: queues.len().min(queue_evts.len()),
            });
        }
        let (Some(queue), Some(evt)) = (queues.into_iter().next(), queue_evts.into_iter().next())
        else {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: 0,
            });
        };
        if !queue.ready() {
            return Err(ActivateError::Backend("queue 0 is not ready".into()));
        }
        let mut handler = QueueHandler::new(mem, queue, evt, interrupt, processor);
        handler
            .restore_held(held)
            .map_err(|why| ActivateError::Backend(format!("restored queue: {why}")))?;
        let handler = Arc::new(Mutex::new(handler));
        let registration = match endpoint {
            Some(endpoint) => {
                let id = add_to_event_loop(endpoint, handler.clone())?;
                Some((endpoint.clone(), id))
            }
            None => None,
        };
        Ok(RunningQueue {
            handler,
            registration,
        })
    }

    /// Locks the handler (to process the queue on this thread when there is no event loop).
    pub fn lock(&self) -> MutexGuard<'_, QueueHandler<P>> {
        self.handler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue as the handler has it now (ring positions included).
    pub fn queue_state(&self) -> virtio_queue::QueueState {
        self.lock().queue.state()
    }

    /// The completions held back now (see [`QueueHandler::held_completions`]).
    pub fn held_completions(&self) -> Vec<HeldCompletion> {
        self.lock().held_completions()
    }

    /// Removes the handler from the event loop; the queue is dropped with it.
    pub fn stop(self) {
        if let Some((endpoint, id)) = self.registration {
            remove_from_event_loop(&endpoint, id, "virtio queue");
        }
    }
}
