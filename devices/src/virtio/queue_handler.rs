//! The event-loop side of a single-queue virtio device (block, rng): wait on the queue's
//! notification event fd, walk the available ring, hand each descriptor chain to a
//! device-specific [`ChainProcessor`], publish the used entries and raise the interrupt.

use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber, SubscriberId};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{
    add_to_event_loop, remove_from_event_loop, ActivateContext, ActivateError, EventLoopEndpoint,
    VirtioInterrupt,
};
use crate::GuestMemory;

/// A descriptor chain as handed to a [`ChainProcessor`].
pub type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Device-specific handling of one descriptor chain.
pub trait ChainProcessor: Send {
    /// Handles one chain and returns how many bytes the device wrote into it (the used length).
    /// Must never panic on guest data.
    fn process_chain(&mut self, mem: &GuestMemory, chain: Chain<'_>) -> u32;
}

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
        completed
    }

    fn drain(&mut self, completed: &mut usize) -> Result<(), QueueError> {
        loop {
            self.queue.disable_notification(&self.mem)?;
            let mut progressed = false;
            // A fresh iterator per chain so the queue is free for add_used in between.
            while let Some(chain) = self.queue.iter(&self.mem)?.next() {
                progressed = true;
                let head = chain.head_index();
                let used_len = self.processor.process_chain(&self.mem, chain);
                if head >= self.queue.size() {
                    // The guest put an out-of-range head in the avail ring: nothing to report.
                    tracing::debug!("avail ring head {head} out of range, dropped");
                    continue;
                }
                self.queue.add_used(&self.mem, head, used_len)?;
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
        // The counter value is irrelevant; a failed read (EAGAIN) still means "look at the ring".
        let _ = self.queue_evt.read();
        self.process_queue();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.queue_evt, EventSet::IN)) {
            tracing::error!("could not watch queue event fd: {e:?}");
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
        let handler = Arc::new(Mutex::new(QueueHandler::new(
            mem, queue, evt, interrupt, processor,
        )));
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

    /// Removes the handler from the event loop; the queue is dropped with it.
    pub fn stop(self) {
        if let Some((endpoint, id)) = self.registration {
            remove_from_event_loop(&endpoint, id, "virtio queue");
        }
    }
}
