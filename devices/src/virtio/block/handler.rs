//! Executes validated block requests against the disk's backend stack, on the event-loop
//! thread.

use std::sync::{Arc, Mutex};

use virtio_bindings::bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestMemoryBackend};

use super::backend::{is_injected, BlockBackend, Completion, GuestSlice};
use super::request::{RawRequest, Request, RequestType, Segment, ID_BYTES};
use crate::virtio::queue_handler::{Chain, ChainProcessor, Used};
use crate::GuestMemory;

const STATUS_OK: u8 = VIRTIO_BLK_S_OK as u8;
const STATUS_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

/// A disk's backend stack, shared by the device (which outlives activations) and the
/// running request handler. Only the event-loop thread locks it per request.
pub type SharedBackend = Arc<Mutex<Box<dyn BlockBackend>>>;

/// Serves the requests of one virtio-blk queue from a backend stack.
pub struct BlockRequests {
    disk: SharedBackend,
    capacity_sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
}

impl BlockRequests {
    /// `disk` must hold at least `capacity_sectors` * 512 bytes (a shorter one gives IOERR).
    pub fn new(
        disk: SharedBackend,
        capacity_sectors: u64,
        read_only: bool,
        id: [u8; ID_BYTES],
    ) -> Self {
        BlockRequests {
            disk,
            capacity_sectors,
            read_only,
            id,
        }
    }

    /// Runs one validated request; returns the status byte, the bytes written to the guest
    /// and when the guest may see the completion.
    fn execute(&mut self, mem: &GuestMemory, req: &Request) -> (u8, u32, Completion) {
        // data_len is capped far below 4 GiB by validation.
        let len = u32::try_from(req.data_len).unwrap_or(u32::MAX);
        let mut disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        let result = match req.kind {
            RequestType::In => guest_slices(mem, &req.data, Access::DeviceWrites)
                .and_then(|bufs| disk.read(req.offset, &bufs)),
            RequestType::Out => guest_slices(mem, &req.data, Access::DeviceReads)
                .and_then(|bufs| disk.write(req.offset, &bufs)),
            RequestType::Flush => disk.flush(),
            RequestType::GetId => {
                return match self.get_id(mem, req) {
                    Ok(n) => (STATUS_OK, n, Completion::NOW),
                    Err(_) => (STATUS_IOERR, 0, Completion::NOW),
                }
            }
            RequestType::Unsupported(_) => Ok(Completion::NOW),
        };
        match result {
            Ok(done) => {
                let written = if req.kind == RequestType::In { len } else { 0 };
                (STATUS_OK, written, done)
            }
            Err(e) => {
                if is_injected(&e) {
                    tracing::debug!("block {:?} at {}: {e}", req.kind, req.offset);
                } else {
                    tracing::warn!("block {:?} at {} failed: {e}", req.kind, req.offset);
                }
                (STATUS_IOERR, 0, Completion::NOW)
            }
        }
    }

    fn get_id(&self, mem: &GuestMemory, req: &Request) -> std::io::Result<u32> {
        let mut remaining = &self.id[..];
        let mut written = 0;
        for seg in &req.data {
            let n = remaining.len().min(seg.len as usize);
            mem.write_slice(&remaining[..n], seg.addr)
                .map_err(std::io::Error::other)?;
            remaining = &remaining[n..];
            written += n as u32;
        }
        Ok(written)
    }
}

/// Whether the device writes a request's buffers (a read from the disk) or only reads them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    DeviceWrites,
    DeviceReads,
}

/// The guest buffers of a request as volatile slices (a buffer crossing a memory region
/// boundary becomes several). Layers write into them with `preadv` and plain copies, past
/// guest memory's dirty bitmap, so buffers the device writes are marked dirty here: a diff
/// snapshot must include pages a disk read filled (KVM's dirty log only sees the guest's
/// own writes). The event loop is parked during a snapshot, so no request is between this
/// mark and its write when the bitmap is read.
fn guest_slices<'a>(
    mem: &'a GuestMemory,
    segs: &[Segment],
    access: Access,
) -> std::io::Result<Vec<GuestSlice<'a>>> {
    let mut out = Vec::with_capacity(segs.len());
    for seg in segs {
        for slice in mem.get_slices(seg.addr, seg.len as usize) {
            let slice = slice.map_err(std::io::Error::other)?;
            if access == Access::DeviceWrites {
                slice.bitmap().mark_dirty(0, slice.len());
            }
            let guard = slice.ptr_guard_mut();
            // SAFETY: the slice lies in a mapped region of `mem`, which stays mapped for 'a;
            // every layer accesses it with volatile copies or the kernel (preadv/pwritev).
            out.push(unsafe { GuestSlice::new(guard.as_ptr(), slice.len()) });
        }
    }
    Ok(out)
}

impl ChainProcessor for BlockRequests {
    fn process_chain(&mut self, mem: &GuestMemory, chain: Chain<'_>) -> Used {
        let raw = match RawRequest::from_chain(mem, chain) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::debug!("malformed block request, completing without status: {e}");
                return Used::now(0);
            }
        };
        let (status, written, done) =
            match Request::validate(mem, &raw, self.capacity_sectors, self.read_only) {
                Ok(req) => self.execute(mem, &req),
                Err(e) => {
                    tracing::debug!("rejected block request: {e}");
                    (e.status(), 0, Completion::NOW)
                }
            };
        if let Err(e) = mem.write_obj(status, raw.status_addr) {
            // Checked during parsing; only a racing memory change could get here.
            tracing::debug!("could not write block status: {e}");
            return Used::now(0);
        }
        Used {
            len: written.saturating_add(1),
            delay: done.delay,
        }
    }
}
