//! virtio-rng (spec 5.4): fills device-writable buffers with bytes from the host's
//! `getrandom`. Each request is capped so a guest cannot make the host do unbounded work.

use vm_memory::Bytes;

use crate::virtio::queue_handler::{Chain, ChainProcessor, RunningQueue, Used};
use crate::virtio::{
    device_type, ActivateContext, ActivateError, EventLoopEndpoint, VirtioDevice,
    VIRTIO_F_VERSION_1,
};
use crate::GuestMemory;

mod persist;
pub use persist::RngState;

/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most random bytes handed out per request (Linux asks for at most a page or so).
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// Fills chains with entropy.
#[derive(Debug)]
pub struct EntropyRequests {
    buf: Vec<u8>,
}

impl EntropyRequests {
    fn new() -> Self {
        EntropyRequests { buf: Vec::new() }
    }
}

impl ChainProcessor for EntropyRequests {
    fn process_chain(&mut self, mem: &GuestMemory, chain: Chain<'_>) -> Used {
        let mut written = 0usize;
        for desc in chain.writable() {
            let want = (desc.len() as usize).min(MAX_BYTES_PER_REQUEST - written);
            if want == 0 {
                break;
            }
            self.buf.resize(want, 0);
            if let Err(e) = getrandom::fill(&mut self.buf[..want]) {
                tracing::warn!("host getrandom failed: {e}");
                break;
            }
            if let Err(e) = mem.write_slice(&self.buf[..want], desc.addr()) {
                tracing::debug!("rng buffer outside guest memory: {e}");
                break;
            }
            written += want;
        }
        // Never return more than the cap, which fits in u32.
        Used::now(written as u32)
    }
}

/// A virtio-rng device.
pub struct Rng {
    endpoint: Option<EventLoopEndpoint>,
    running: Option<RunningQueue<EntropyRequests>>,
}

impl Rng {
    /// With `endpoint`, activation registers the handler on that event loop; without, call
    /// [`Rng::process_queue`] yourself.
    pub fn new(endpoint: Option<EventLoopEndpoint>) -> Self {
        Rng {
            endpoint,
            running: None,
        }
    }

    /// Processes the queue on the calling thread (no event loop); `None` before activation.
    pub fn process_queue(&self) -> Option<usize> {
        self.running.as_ref().map(|r| r.lock().process_queue())
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no config space.
        data.fill(0);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if let Some(old) = self.running.take() {
            old.stop();
        }
        self.running = Some(RunningQueue::start(
            ctx,
            EntropyRequests::new(),
            self.endpoint.as_ref(),
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }

    fn live_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        self.running.as_ref().map(|r| vec![r.queue_state()])
    }
}

#[cfg(test)]
mod tests;
