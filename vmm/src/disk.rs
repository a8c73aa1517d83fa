//! Builds a disk: its backend stack (fault rules, and a write cache with `cache=writeback`)
//! under a virtio-blk device, its write cache registered for power cuts.

use crate::config::DiskConfig;
use crate::faults::VmFaults;
use crate::Error;

/// A disk with its backend stack (fault rules, and a write cache with `cache=writeback`),
/// its cache registered for power cuts.
pub(crate) fn build_disk(
    index: usize,
    disk: &DiskConfig,
    endpoint: &devices::virtio::EventLoopEndpoint,
    faults: &VmFaults,
) -> Result<devices::virtio::block::Block, Error> {
    let dev = devices::virtio::block::Block::new(
        devices::virtio::block::BlockConfig {
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
