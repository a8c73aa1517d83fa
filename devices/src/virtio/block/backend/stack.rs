//! Builds the layer stack of one disk from its configuration.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{BlockBackend, CacheHandle, FaultLayer, RawFile, WriteCache, DEFAULT_CACHE_MEMORY};
use crate::fault::BlockFaults;
use crate::virtio::block::BlockError;

/// How a disk treats writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Writes go straight to the image file (the host page cache); flush syncs the file.
    #[default]
    WriteThrough,
    /// A volatile write cache: writes reach the file only on the guest's flush, and a power
    /// cut loses what was not flushed.
    WriteBack,
}

impl FromStr for CacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "writethrough" => Ok(CacheMode::WriteThrough),
            "writeback" => Ok(CacheMode::WriteBack),
            other => Err(format!(
                "unknown cache mode {other:?}: use cache=writethrough (default) or cache=writeback"
            )),
        }
    }
}

/// A disk's layers, plus a handle on its write cache if it has one.
pub struct DiskStack {
    /// The top of the stack, for the request code.
    pub backend: Box<dyn BlockBackend>,
    /// The write cache (power cut, flush), with `cache=writeback`.
    pub cache: Option<CacheHandle>,
}

/// Where a disk's write cache spills: beside the image.
pub fn spill_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".kiln-cache");
    PathBuf::from(name)
}

/// Opens `path` and stacks fault rules (and, with [`CacheMode::WriteBack`], a write cache)
/// on it: faults -> [cache ->] file.
pub fn open_stack(
    path: &Path,
    read_only: bool,
    cache: CacheMode,
    faults: BlockFaults,
) -> Result<DiskStack, BlockError> {
    let raw = RawFile::open(path, read_only)?;
    match cache {
        CacheMode::WriteThrough => Ok(DiskStack {
            backend: Box::new(FaultLayer::new(raw, faults)),
            cache: None,
        }),
        CacheMode::WriteBack => {
            if read_only {
                return Err(BlockError::WriteBackReadOnly {
                    path: path.to_path_buf(),
                });
            }
            let spill = spill_path(path);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&spill)
                .map_err(|source| BlockError::Spill {
                    path: spill.clone(),
                    source,
                })?;
            // The spill file is scratch space: unlinked at once, nothing is left behind.
            if let Err(e) = std::fs::remove_file(&spill) {
                tracing::warn!(
                    "cannot unlink write-cache spill file {}: {e}",
                    spill.display()
                );
            }
            let cache = WriteCache::new(Box::new(raw), file, DEFAULT_CACHE_MEMORY);
            let handle = cache.handle();
            Ok(DiskStack {
                backend: Box::new(FaultLayer::new(cache, faults)),
                cache: Some(handle),
            })
        }
    }
}
