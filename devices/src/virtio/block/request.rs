//! Parsing and validation of virtio-blk requests (virtio spec 5.2.6). Everything here reads
//! guest-controlled data, so every length and address is checked against guest memory and
//! every failure is a value, never a panic.

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::virtio::queue_handler::Chain;
use crate::GuestMemory;

/// Bytes per virtio-blk sector (fixed by the spec, whatever the backing device uses).
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request header the driver puts in the first descriptor.
pub const HEADER_SIZE: u32 = 16;
/// Largest data payload of one request. Linux stays far below this (its default cap is
/// 1.25 MiB); anything larger is a broken or hostile driver.
pub const MAX_DATA_BYTES: u64 = 32 << 20;
/// Most data descriptors accepted in one chain (indirect tables may list up to 65535).
pub const MAX_DATA_SEGMENTS: usize = 1024;
/// Length of the device ID returned by `VIRTIO_BLK_T_GET_ID`.
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

/// A chain that cannot even carry a status byte back: it is completed with used length 0.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor chain is empty")]
    Empty,
    #[error("request header descriptor is device-writable")]
    HeaderWritable,
    #[error("request header descriptor is {0} bytes, need {HEADER_SIZE}")]
    HeaderTooShort(u32),
    #[error("request header at {0:#x} is outside guest memory")]
    HeaderOutOfMemory(u64),
    #[error("descriptor chain has no status descriptor")]
    NoStatus,
    #[error("status descriptor is not device-writable")]
    StatusReadOnly,
    #[error("status descriptor is empty")]
    StatusEmpty,
    #[error("status byte at {0:#x} is outside guest memory")]
    StatusOutOfMemory(u64),
    #[error("descriptor chain has more than {MAX_DATA_SEGMENTS} data descriptors")]
    TooManySegments,
}

/// A well-formed chain carrying a request the device refuses; the guest gets a status byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("data descriptor {0} has the wrong direction for this request")]
    WrongDirection(usize),
    #[error("data descriptor {0} is outside guest memory")]
    DataOutOfMemory(usize),
    #[error("data length {0} is not a multiple of {SECTOR_SIZE}")]
    Misaligned(u64),
    #[error("request data of {0} bytes exceeds the {MAX_DATA_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("sector {sector} + {len} bytes is beyond the disk end")]
    OutOfRange { sector: u64, len: u64 },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("read or write request without data")]
    NoData,
}

impl RequestError {
    /// The status byte reported to the guest for this error.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    /// Read from the disk into guest memory.
    In,
    /// Write guest memory to the disk.
    Out,
    /// Make previous writes durable.
    Flush,
    /// Return the device ID string.
    GetId,
    /// Anything else (reported as `VIRTIO_BLK_S_UNSUPP`).
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(value: u32) -> Self {
        match value {
            VIRTIO_BLK_T_IN => RequestType::In,
            VIRTIO_BLK_T_OUT => RequestType::Out,
            VIRTIO_BLK_T_FLUSH => RequestType::Flush,
            VIRTIO_BLK_T_GET_ID => RequestType::GetId,
            other => RequestType::Unsupported(other),
        }
    }
}

/// One guest buffer, already checked to lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
    /// The device may write it (else it may only read it).
    pub writable: bool,
}

/// The structure of a chain: header fields, data segments and where the status byte goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRequest {
    /// `type` field of the header.
    pub request_type: u32,
    /// `sector` field of the header.
    pub sector: u64,
    /// Descriptors between header and status (addresses not yet checked).
    pub data: Vec<Segment>,
    /// Guest address of the status byte (checked).
    pub status_addr: GuestAddress,
}

impl RawRequest {
    /// Splits a chain into header, data and status, reading the header from guest memory.
    pub fn from_chain(mem: &GuestMemory, chain: Chain<'_>) -> Result<Self, ChainError> {
        let mut descs = chain;
        let head = descs.next().ok_or(ChainError::Empty)?;
        if head.is_write_only() {
            return Err(ChainError::HeaderWritable);
        }
        if head.len() < HEADER_SIZE {
            return Err(ChainError::HeaderTooShort(head.len()));
        }
        let header_addr = head.addr();
        let out_of_memory = ChainError::HeaderOutOfMemory(header_addr.0);
        let request_type = u32::from_le(read_at(mem, header_addr, 0).ok_or(out_of_memory.clone())?);
        let sector = u64::from_le(read_at(mem, header_addr, 8).ok_or(out_of_memory)?);

        let mut rest = Vec::new();
        for desc in descs {
            // Status plus the segment limit: stop collecting before a huge indirect table
            // makes us allocate.
            if rest.len() > MAX_DATA_SEGMENTS {
                return Err(ChainError::TooManySegments);
            }
            rest.push(Segment {
                addr: desc.addr(),
                len: desc.len(),
                writable: desc.is_write_only(),
            });
        }
        let status = rest.pop().ok_or(ChainError::NoStatus)?;
        if !status.writable {
            return Err(ChainError::StatusReadOnly);
        }
        if status.len == 0 {
            return Err(ChainError::StatusEmpty);
        }
        if !mem.check_range(status.addr, 1) {
            return Err(ChainError::StatusOutOfMemory(status.addr.0));
        }
        Ok(RawRequest {
            request_type,
            sector,
            data: rest,
            status_addr: status.addr,
        })
    }
}

fn read_at<T: vm_memory::ByteValued>(
    mem: &GuestMemory,
    base: GuestAddress,
    offset: u64,
) -> Option<T> {
    let addr = base.0.checked_add(offset)?;
    mem.read_obj(GuestAddress(addr)).ok()
}

/// A validated request: the device can execute it without further checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: RequestType,
    /// Byte offset on the disk (reads and writes).
    pub offset: u64,
    /// Total data length in bytes.
    pub data_len: u64,
    /// The data buffers, in order, each inside guest memory.
    pub data: Vec<Segment>,
}

impl Request {
    /// Checks a raw request against guest memory, the disk size (in sectors) and the
    /// read-only flag.
    pub fn validate(
        mem: &GuestMemory,
        raw: &RawRequest,
        capacity_sectors: u64,
        read_only: bool,
    ) -> Result<Request, RequestError> {
        let kind = RequestType::from(raw.request_type);
        let needs_writable = match kind {
            RequestType::In | RequestType::GetId => true,
            RequestType::Out => false,
            // Flush carries no data; stray descriptors are ignored.
            RequestType::Flush => {
                return Ok(Request {
                    kind,
                    offset: 0,
                    data_len: 0,
                    data: Vec::new(),
                })
            }
            RequestType::Unsupported(t) => return Err(RequestError::Unsupported(t)),
        };
        if kind == RequestType::Out && read_only {
            return Err(RequestError::ReadOnly);
        }
        let mut data_len: u64 = 0;
        for (i, seg) in raw.data.iter().enumerate() {
            if seg.writable != needs_writable {
                return Err(RequestError::WrongDirection(i));
            }
            if !mem.check_range(seg.addr, seg.len as usize) {
                return Err(RequestError::DataOutOfMemory(i));
            }
            data_len = data_len.saturating_add(u64::from(seg.len));
            if data_len > MAX_DATA_BYTES {
                return Err(RequestError::TooLarge(data_len));
            }
        }
        let mut offset = 0;
        if matches!(kind, RequestType::In | RequestType::Out) {
            if data_len == 0 {
                return Err(RequestError::NoData);
            }
            if !data_len.is_multiple_of(SECTOR_SIZE) {
                return Err(RequestError::Misaligned(data_len));
            }
            let out_of_range = RequestError::OutOfRange {
                sector: raw.sector,
                len: data_len,
            };
            offset = raw
                .sector
                .checked_mul(SECTOR_SIZE)
                .ok_or_else(|| out_of_range.clone())?;
            let end = offset
                .checked_add(data_len)
                .ok_or_else(|| out_of_range.clone())?;
            if end > capacity_sectors.saturating_mul(SECTOR_SIZE) {
                return Err(out_of_range);
            }
        }
        Ok(Request {
            kind,
            offset,
            data_len,
            data: raw.data.clone(),
        })
    }
}
