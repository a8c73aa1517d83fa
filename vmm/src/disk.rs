//! Builds a disk, at boot from its configuration or at restore from its saved state: the
//! same backend stack either way (fault rules, and a write cache with `cache=writeback`,
//! over the image) under a virtio-blk device, its write cache registered for power cuts.

use devices::persist::Persist;
use devices::virtio::block::{Block, BlockConfig, BlockHostParts, BlockSavedState};
use devices::virtio::EventLoopEndpoint;

use crate::config::DiskConfig;
use crate::faults::VmFaults;
use crate::Error;

/// Disk `index` as configured, for a boot.
pub(crate) fn build_disk(
    index: usize,
    disk: &DiskConfig,
    endpoint: &EventLoopEndpoint,
    faults: &VmFaults,
) -> Result<Block, Error> {
    let dev = Block::new(
        BlockConfig {
            path: disk.path.clone(),
            read_only: disk.read_only,
            id: disk
                .id
                .clone()
                .or_else(|| Some(format!("kiln-disk{index}"))),
            cache: disk.cache,
        },
        Some(endpoint.clone()),
        faults.block(index),
    )
    .map_err(|e| Error::Config(format!("disk {}: {e}", disk.path.display())))?;
    faults.add_disk(dev.cache().cloned());
    Ok(dev)
}

/// Disk `index` from its saved state, over the image and cache mode of `disk` (the saved
/// configuration with the restore's overrides), for a restore.
pub(crate) fn restore_disk(
    index: usize,
    disk: &DiskConfig,
    saved: &BlockSavedState,
    endpoint: &EventLoopEndpoint,
    faults: &VmFaults,
) -> Result<Block, Error> {
    if disk.read_only != saved.device.read_only {
        return Err(Error::Config(format!(
            "--disk {disk}: the snapshot's disk {index} was {}; keep it so",
            if saved.device.read_only {
                "read-only"
            } else {
                "read-write"
            }
        )));
    }
    let parts = BlockHostParts {
        path: disk.path.clone(),
        cache: disk.cache,
        faults: faults.block(index),
        endpoint: Some(endpoint.clone()),
    };
    let dev = Block::restore(parts, saved)
        .map_err(|e| Error::Config(format!("disk {}: {e}", disk.path.display())))?;
    faults.add_disk(dev.cache().cloned());
    Ok(dev)
}
