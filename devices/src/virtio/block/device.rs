//! The virtio-blk device as the transport sees it: features, config space, activation.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
};

use super::backend::{open_stack, BlockBackend, CacheHandle, CacheMode};
use super::handler::{BlockRequests, SharedBackend};
use super::request::{ID_BYTES, SECTOR_SIZE};
use crate::fault::BlockFaults;
use crate::virtio::queue_handler::{HeldCompletion, RunningQueue};
use crate::virtio::{
    device_type, read_config_bytes, ActivateContext, ActivateError, EventLoopEndpoint,
    VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;

/// How the user asks for a disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// Raw image file (or block device); its size must be a multiple of 512 bytes.
    pub path: PathBuf,
    /// Offer the disk read-only (`VIRTIO_BLK_F_RO`); guest writes fail with IOERR.
    pub read_only: bool,
    /// Answer to `VIRTIO_BLK_T_GET_ID` (at most 20 bytes; shows up as the disk serial).
    pub id: Option<String>,
    /// Write-through (default) or a volatile write-back cache.
    #[serde(default)]
    pub cache: CacheMode,
}

/// Why a disk could not be set up. Every message names the image path.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk image {path}: {source} (check that it exists and is readable{})",
        if *read_only { "" } else { " and writable, or mark the disk read-only" })]
    Open {
        path: PathBuf,
        read_only: bool,
        source: std::io::Error,
    },
    #[error("disk image {path} is a directory, expected a raw image file")]
    NotAFile { path: PathBuf },
    #[error("cannot find the size of disk image {path}: {source}")]
    Size {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk image {path} is empty; give it a size (e.g. `truncate -s 64M {}`)", path.display())]
    Empty { path: PathBuf },
    #[error("disk image {path} is {size} bytes, not a multiple of 512; round it up with `truncate -s %512 {}`", path.display())]
    Misaligned { path: PathBuf, size: u64 },
    #[error("disk image {path} is {size} bytes but the snapshot's disk was {saved}: restore with the disk (or a copy of it) as it was when the snapshot was taken")]
    SizeChanged {
        path: PathBuf,
        size: u64,
        saved: u64,
    },
    #[error("device id {id:?} for disk image {path} is longer than 20 bytes; shorten it")]
    IdTooLong { path: PathBuf, id: String },
    #[error("disk image {path} is read-only, so cache=writeback has nothing to cache; drop cache=writeback or make the disk writable")]
    WriteBackReadOnly { path: PathBuf },
    #[error("cannot create the write cache's spill file {path}: {source} (cache=writeback needs a writable directory beside the disk; or use cache=writethrough)")]
    Spill {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk backend for {path} is {size} bytes, not a non-zero multiple of 512")]
    BackendSize { path: PathBuf, size: u64 },
}

/// Everything that describes the device apart from its queue (plain data, for snapshots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    /// Image path.
    pub path: PathBuf,
    /// Offered read-only.
    pub read_only: bool,
    /// GET_ID answer, zero-padded.
    pub id: Vec<u8>,
    /// Disk size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Feature bits offered.
    pub avail_features: u64,
    /// Device config space (`struct virtio_blk_config` prefix).
    pub config_space: Vec<u8>,
}

/// A virtio-blk device backed by a raw image.
pub struct Block {
    state: BlockState,
    backend: SharedBackend,
    cache: Option<CacheHandle>,
    endpoint: Option<EventLoopEndpoint>,
    running: Option<RunningQueue<BlockRequests>>,
    /// Restored from a snapshot: completions a fault delay held back when it was saved, held
    /// back again by the next activation.
    pub(super) restored_held: Vec<HeldCompletion>,
}

impl Block {
    /// Opens the image, stacks the disk's layers on it (fault rules from `faults`, and a
    /// write cache with [`CacheMode::WriteBack`]) and prepares the device. With `endpoint`,
    /// activation registers the request handler on that event loop (which must be running:
    /// activation and reset wait for it); without, call [`Block::process_queue`] yourself.
    pub fn new(
        config: BlockConfig,
        endpoint: Option<EventLoopEndpoint>,
        faults: BlockFaults,
    ) -> Result<Self, BlockError> {
        check_id(&config)?;
        let stack = open_stack(&config.path, config.read_only, config.cache, faults)?;
        let mut block = Block::with_backend(config, endpoint, stack.backend)?;
        block.cache = stack.cache;
        Ok(block)
    }

    /// A device over a backend stack built by the caller (`config.path` only names it in
    /// state and errors; `config.cache` is not looked at).
    pub fn with_backend(
        config: BlockConfig,
        endpoint: Option<EventLoopEndpoint>,
        backend: Box<dyn BlockBackend>,
    ) -> Result<Self, BlockError> {
        let id_bytes = check_id(&config)?;
        let BlockConfig {
            path, read_only, ..
        } = config;
        let size = backend.capacity();
        if size == 0 || !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::BackendSize { path, size });
        }
        let capacity_sectors = size / SECTOR_SIZE;
        let mut avail_features =
            VIRTIO_F_VERSION_1 | (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX);
        if read_only {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        }
        Ok(Block {
            state: BlockState {
                path,
                read_only,
                id: id_bytes.to_vec(),
                capacity_sectors,
                avail_features,
                config_space: config_space(capacity_sectors),
            },
            backend: Arc::new(Mutex::new(backend)),
            cache: None,
            endpoint,
            running: None,
            restored_held: Vec::new(),
        })
    }

    /// Completions held back by delays now (`None` while not activated).
    pub fn running_deferred(&self) -> Option<usize> {
        self.running.as_ref().map(|r| r.lock().deferred_count())
    }

    /// The disk's write cache (power cut, flush), if it was opened with `cache=writeback`.
    pub fn cache(&self) -> Option<&CacheHandle> {
        self.cache.as_ref()
    }

    /// Completions held back now by fault delays, with the time each has left (for a
    /// snapshot: the event loop must be parked). Before activation, those a restore will
    /// hold back again.
    pub fn held_completions(&self) -> Vec<HeldCompletion> {
        match &self.running {
            Some(r) => r.held_completions(),
            None => self.restored_held.clone(),
        }
    }

    /// Before a snapshot: writes the write cache (if any) back to the image and syncs it, so
    /// the image holds every write the guest was told is done and a restore from it (or from
    /// a copy) loses none. The cache stays in place and keeps working; a power cut after
    /// this only loses later writes. Fails after a power cut.
    pub fn write_back(&self) -> std::io::Result<()> {
        match &self.cache {
            Some(cache) => cache.flush(),
            None => Ok(()),
        }
    }

    /// Completes requests whose delay has passed, on the calling thread (without an event
    /// loop; the loop's timer does this otherwise). Returns how many were completed.
    pub fn complete_deferred(&self) -> Option<usize> {
        self.running.as_ref().map(|r| r.lock().complete_due())
    }

    /// The device's plain state.
    pub fn state(&self) -> &BlockState {
        &self.state
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.state.capacity_sectors
    }

    /// Processes the request queue on the calling thread. For devices without an event loop
    /// (tests, fuzzing); returns `None` while the device is not activated.
    pub fn process_queue(&self) -> Option<usize> {
        self.running.as_ref().map(|r| r.lock().process_queue())
    }
}

fn check_id(config: &BlockConfig) -> Result<[u8; ID_BYTES], BlockError> {
    let mut id_bytes = [0u8; ID_BYTES];
    if let Some(id) = &config.id {
        if id.len() > ID_BYTES {
            return Err(BlockError::IdTooLong {
                path: config.path.clone(),
                id: id.clone(),
            });
        }
        id_bytes[..id.len()].copy_from_slice(id.as_bytes());
    }
    Ok(id_bytes)
}

/// `struct virtio_blk_config` up to `seg_max`: capacity, size_max (unused), seg_max.
fn config_space(capacity_sectors: u64) -> Vec<u8> {
    let mut config = Vec::with_capacity(16);
    config.extend_from_slice(&capacity_sectors.to_le_bytes());
    config.extend_from_slice(&0u32.to_le_bytes());
    // Header and status take two descriptors of a chain.
    config.extend_from_slice(&(u32::from(QUEUE_SIZE) - 2).to_le_bytes());
    config
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.state.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.state.config_space, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if let Some(old) = self.running.take() {
            old.stop();
        }
        let id: [u8; ID_BYTES] = self.state.id.as_slice().try_into().unwrap_or([0; ID_BYTES]);
        let requests = BlockRequests::new(
            self.backend.clone(),
            self.state.capacity_sectors,
            self.state.read_only,
            id,
        );
        let held = std::mem::take(&mut self.restored_held);
        self.running = Some(RunningQueue::start_restored(
            ctx,
            requests,
            &held,
            self.endpoint.as_ref(),
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        // A reset device completes nothing it had in flight.
        self.restored_held.clear();
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }

    fn live_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        self.running.as_ref().map(|r| vec![r.queue_state()])
    }
}
