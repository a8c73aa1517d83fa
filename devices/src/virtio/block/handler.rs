//! Executes validated block requests against the image file, on the event-loop thread.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use virtio_bindings::bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::Bytes;

use super::request::{RawRequest, Request, RequestType, ID_BYTES};
use crate::fault::{BlockOp, FaultAction, FaultHook};
use crate::virtio::queue_handler::{Chain, ChainProcessor};
use crate::GuestMemory;

const STATUS_OK: u8 = VIRTIO_BLK_S_OK as u8;
const STATUS_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

/// Serves the requests of one virtio-blk queue from a raw image file.
pub struct BlockRequests {
    disk: File,
    capacity_sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    fault: Arc<dyn FaultHook>,
}

impl BlockRequests {
    /// `disk` must be at least `capacity_sectors` * 512 bytes (a shorter file gives IOERR).
    pub fn new(
        disk: File,
        capacity_sectors: u64,
        read_only: bool,
        id: [u8; ID_BYTES],
        fault: Arc<dyn FaultHook>,
    ) -> Self {
        BlockRequests {
            disk,
            capacity_sectors,
            read_only,
            id,
            fault,
        }
    }

    /// Runs one validated request; returns the status byte and the bytes written to the guest.
    fn execute(&mut self, mem: &GuestMemory, req: &Request) -> (u8, u32) {
        // data_len is capped far below 4 GiB by validation.
        let len = u32::try_from(req.data_len).unwrap_or(u32::MAX);
        let op = match req.kind {
            RequestType::In => BlockOp::Read {
                offset: req.offset,
                len,
            },
            RequestType::Out => BlockOp::Write {
                offset: req.offset,
                len,
            },
            RequestType::Flush => BlockOp::Flush,
            RequestType::GetId | RequestType::Unsupported(_) => BlockOp::Other,
        };
        match self.fault.on_block(&op) {
            FaultAction::Pass => {}
            // A dropped block request would hang the guest forever; report it as an error.
            FaultAction::Fail | FaultAction::Drop => return (STATUS_IOERR, 0),
        }
        let result = match req.kind {
            RequestType::In => self.read(mem, req).map(|()| len),
            RequestType::Out => self.write(mem, req).map(|()| 0),
            RequestType::Flush => self.disk.sync_data().map(|()| 0),
            RequestType::GetId => self.get_id(mem, req),
            RequestType::Unsupported(_) => Ok(0),
        };
        match result {
            Ok(written) => (STATUS_OK, written),
            Err(e) => {
                tracing::warn!("block {op:?} failed: {e}");
                (STATUS_IOERR, 0)
            }
        }
    }

    fn read(&mut self, mem: &GuestMemory, req: &Request) -> std::io::Result<()> {
        self.disk.seek(SeekFrom::Start(req.offset))?;
        for seg in &req.data {
            mem.read_exact_volatile_from(seg.addr, &mut self.disk, seg.len as usize)
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    fn write(&mut self, mem: &GuestMemory, req: &Request) -> std::io::Result<()> {
        self.disk.seek(SeekFrom::Start(req.offset))?;
        for seg in &req.data {
            mem.write_all_volatile_to(seg.addr, &mut self.disk, seg.len as usize)
                .map_err(std::io::Error::other)?;
        }
        Ok(())
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

impl ChainProcessor for BlockRequests {
    fn process_chain(&mut self, mem: &GuestMemory, chain: Chain<'_>) -> u32 {
        let raw = match RawRequest::from_chain(mem, chain) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::debug!("malformed block request, completing without status: {e}");
                return 0;
            }
        };
        let (status, written) =
            match Request::validate(mem, &raw, self.capacity_sectors, self.read_only) {
                Ok(req) => self.execute(mem, &req),
                Err(e) => {
                    tracing::debug!("rejected block request: {e}");
                    (e.status(), 0)
                }
            };
        if let Err(e) = mem.write_obj(status, raw.status_addr) {
            // Checked during parsing; only a racing memory change could get here.
            tracing::debug!("could not write block status: {e}");
            return 0;
        }
        written.saturating_add(1)
    }
}
