//! The virtio-vsock packet header and reading/writing packets from/to descriptor chains.
//! Every field that comes from the guest is checked here before anything trusts it.

use std::io::Read;

use virtio_queue::DescriptorChain;

use super::MAX_PKT_DATA;
use crate::GuestMemory;

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type Kiln supports.
pub const TYPE_STREAM: u16 = 1;
/// Shutdown flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// Shutdown flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operations (`VIRTIO_VSOCK_OP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Open a connection.
    Request = 1,
    /// Accept a connection.
    Response = 2,
    /// Refuse or abort a connection.
    Rst = 3,
    /// Stop sending and/or receiving (see `flags`).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// Tell the peer about freed buffer space.
    CreditUpdate = 6,
    /// Ask the peer for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The op for a raw value, `None` for unknown ones.
    pub fn from_raw(raw: u16) -> Option<Op> {
        Some(match raw {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// `struct virtio_vsock_hdr`, little-endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeader {
    /// Sender's context ID.
    pub src_cid: u64,
    /// Receiver's context ID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Data bytes following the header.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Raw [`Op`].
    pub op: u16,
    /// Op-specific flags (shutdown: [`SHUTDOWN_RCV`] | [`SHUTDOWN_SEND`]).
    pub flags: u32,
    /// Sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from this connection so far (wrapping).
    pub fwd_cnt: u32,
}

impl PacketHeader {
    /// Decodes a header.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> PacketHeader {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap_or_default());
        PacketHeader {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The op, if known.
    pub fn op(&self) -> Option<Op> {
        Op::from_raw(self.op)
    }

    /// An RST answering `to`: addresses swapped, no credit information.
    pub fn rst_reply(to: &PacketHeader) -> PacketHeader {
        PacketHeader {
            src_cid: to.dst_cid,
            dst_cid: to.src_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            type_: TYPE_STREAM,
            op: Op::Rst as u16,
            ..PacketHeader::default()
        }
    }
}

/// Why a tx chain does not hold a valid packet.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("tx chain contains a device-writable descriptor")]
    WrongDirection,
    #[error("tx chain of {0} bytes cannot hold the {HDR_LEN}-byte header")]
    TruncatedHeader(usize),
    #[error("packet claims {} data bytes, more than the {MAX_PKT_DATA}-byte maximum", .0.len)]
    TooLong(PacketHeader),
    #[error("packet claims {} data bytes but the chain holds {avail}", .hdr.len)]
    ChainTooShort { hdr: PacketHeader, avail: usize },
    #[error("bad guest memory in chain: {0}")]
    Memory(String),
}

impl PacketError {
    /// The header, when it was readable (so the sender can be told with an RST).
    pub fn header(&self) -> Option<&PacketHeader> {
        match self {
            PacketError::TooLong(hdr) | PacketError::ChainTooShort { hdr, .. } => Some(hdr),
            _ => None,
        }
    }
}

/// Reads one packet (header and `len` data bytes) from a driver-to-device chain.
pub fn read_tx_packet(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Result<(PacketHeader, Vec<u8>), PacketError> {
    if chain.clone().any(|d| d.is_write_only()) {
        return Err(PacketError::WrongDirection);
    }
    let mut reader = chain
        .reader(mem)
        .map_err(|e| PacketError::Memory(e.to_string()))?;
    let total = reader.available_bytes();
    if total < HDR_LEN {
        return Err(PacketError::TruncatedHeader(total));
    }
    let mut raw = [0u8; HDR_LEN];
    reader
        .read_exact(&mut raw)
        .map_err(|e| PacketError::Memory(e.to_string()))?;
    let hdr = PacketHeader::from_bytes(&raw);
    let len = hdr.len as usize;
    if len > MAX_PKT_DATA {
        return Err(PacketError::TooLong(hdr));
    }
    let avail = total - HDR_LEN;
    if len > avail {
        return Err(PacketError::ChainTooShort { hdr, avail });
    }
    let mut data = vec![0u8; len];
    reader
        .read_exact(&mut data)
        .map_err(|e| PacketError::Memory(e.to_string()))?;
    Ok((hdr, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_bytes() {
        let hdr = PacketHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 52,
            len: 7,
            type_: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: 3,
            buf_alloc: 65536,
            fwd_cnt: 99,
        };
        let bytes = hdr.to_bytes();
        assert_eq!(&bytes[0..8], &3u64.to_le_bytes());
        assert_eq!(&bytes[30..32], &5u16.to_le_bytes());
        assert_eq!(PacketHeader::from_bytes(&bytes), hdr);
        assert_eq!(hdr.op(), Some(Op::Rw));
        assert_eq!(Op::from_raw(0), None);
        assert_eq!(Op::from_raw(8), None);
    }
}
