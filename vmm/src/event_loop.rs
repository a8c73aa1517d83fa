//! The device event loop: one thread running an `event-manager` loop for every device's I/O,
//! plus the watcher that turns guest reset/power-off events into an [`ExitReason`].

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use devices::virtio::{EventLoopEndpoint, Subscriber};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::exit::ExitReason;

/// The event manager before its thread starts; devices are added to it during build.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
    stop: Arc<AtomicBool>,
}

impl EventLoop {
    /// Creates an empty event loop.
    pub fn new() -> std::io::Result<Self> {
        let manager = EventManager::new().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(EventLoop {
            manager,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Lets other threads add subscribers once the loop runs.
    pub fn endpoint(&self) -> EventLoopEndpoint {
        self.manager.remote_endpoint()
    }

    /// Adds a subscriber before the loop starts.
    pub fn add(&mut self, s: Subscriber) {
        self.manager.add_subscriber(s);
    }

    /// Runs the loop on its own thread; `on_start` runs first on that thread (seccomp).
    pub fn spawn(
        mut self,
        on_start: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<RunningEventLoop> {
        let endpoint = self.endpoint();
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-devices".into())
            .spawn(move || {
                on_start();
                while !self.stop.load(Ordering::Acquire) {
                    if let Err(e) = self.manager.run() {
                        tracing::error!("device event loop failed: {e:?}");
                        break;
                    }
                }
            })?;
        Ok(RunningEventLoop {
            thread,
            stop,
            endpoint,
        })
    }
}

/// A running event loop thread.
pub struct RunningEventLoop {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    endpoint: EventLoopEndpoint,
}

impl RunningEventLoop {
    /// Stops the loop and waits for its thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.endpoint.kick();
        let _ = self.thread.join();
    }
}

/// Watches the event fds that guest devices raise to end the VM (i8042 reset, ACPI power-off
/// and reset) and reports them as exit reasons.
pub struct ExitWatcher {
    events: Vec<(EventFd, ExitReason)>,
    exits: Sender<ExitReason>,
}

impl ExitWatcher {
    /// `events` pairs each event fd with the reason it stands for.
    pub fn subscriber(events: Vec<(EventFd, ExitReason)>, exits: Sender<ExitReason>) -> Subscriber {
        Arc::new(Mutex::new(ExitWatcher { events, exits }))
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        for (fd, reason) in &self.events {
            if fd.as_raw_fd() == events.fd() {
                let _ = fd.read();
                let _ = self.exits.send(reason.clone());
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, _) in &self.events {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                tracing::error!("cannot watch guest exit events: {e:?}");
            }
        }
    }
}
