//! The state file's layout. Everything in it is checked before it is believed:
//!
//! ```text
//! 0   magic "KILNSNAP"
//! 8   format version (u32 LE)
//! 12  header length (u32 LE)
//! 16  state length (u64 LE)
//! 24  SHA-256 of header and state (32 bytes)
//! 56  header (postcard), then state (postcard)
//! ```
//!
//! A wrong magic, another version, a length that disagrees with the file, a checksum
//! mismatch or bytes that do not decode each give their own one-line error.

use sha2::{Digest, Sha256};

use super::state::{MachineState, SnapshotHeader, SnapshotId};

/// First bytes of every state file.
pub const MAGIC: &[u8; 8] = b"KILNSNAP";
/// The format this `vmm` writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the header.
pub const PREFIX_LEN: usize = 56;
/// Largest state file accepted (a guard against absurd length fields).
const MAX_STATE_FILE: u64 = 256 << 20;

/// Why a state file cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("is not a Kiln snapshot (no KILNSNAP magic)")]
    NotASnapshot,
    #[error(
        "is truncated ({got} bytes, {want} expected): the snapshot was not written completely"
    )]
    Truncated { got: u64, want: u64 },
    #[error("has {extra} bytes after its end: the file was altered")]
    TrailingBytes { extra: u64 },
    #[error("uses snapshot format version {found}; this vmm reads version {FORMAT_VERSION}: restore it with the vmm that took it")]
    Version { found: u32 },
    #[error("is damaged (checksum mismatch): the file was altered or corrupted")]
    Checksum,
    #[error("cannot be decoded ({what}: {why})")]
    Decode { what: &'static str, why: String },
}

/// Encodes a state file; returns its bytes and the snapshot's identity (the checksum).
pub fn encode(
    header: &SnapshotHeader,
    state: &MachineState,
) -> Result<(Vec<u8>, SnapshotId), postcard::Error> {
    let h = postcard::to_allocvec(header)?;
    let b = postcard::to_allocvec(state)?;
    Ok(assemble(FORMAT_VERSION, &h, &b))
}

/// Lays out prefix, header and state with their checksum.
pub fn assemble(version: u32, header: &[u8], state: &[u8]) -> (Vec<u8>, SnapshotId) {
    let mut hasher = Sha256::new();
    hasher.update(header);
    hasher.update(state);
    let sum: SnapshotId = hasher.finalize().into();
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len() + state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(&sum);
    out.extend_from_slice(header);
    out.extend_from_slice(state);
    (out, sum)
}

/// A verified state file: header decoded, state bytes checked but not yet decoded.
pub struct Verified<'a> {
    pub id: SnapshotId,
    pub header: SnapshotHeader,
    state: &'a [u8],
}

impl Verified<'_> {
    /// The encoded machine state (checksummed, not decoded).
    pub fn state_bytes(&self) -> &[u8] {
        self.state
    }

    /// Decodes the machine state.
    pub fn state(&self) -> Result<MachineState, FormatError> {
        decode(self.state, "machine state")
    }
}

fn decode<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, FormatError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(FormatError::Decode {
            what,
            why: format!("{} stray bytes at its end", rest.len()),
        }),
        Err(e) => Err(FormatError::Decode {
            what,
            why: e.to_string(),
        }),
    }
}

/// Checks magic, version, lengths and checksum, and decodes the header.
pub fn verify(file: &[u8]) -> Result<Verified<'_>, FormatError> {
    let len = file.len() as u64;
    if len >= MAGIC.len() as u64 && &file[..MAGIC.len()] != MAGIC {
        return Err(FormatError::NotASnapshot);
    }
    if len < PREFIX_LEN as u64 {
        if len < MAGIC.len() as u64 && !MAGIC.starts_with(file) {
            return Err(FormatError::NotASnapshot);
        }
        return Err(FormatError::Truncated {
            got: len,
            want: PREFIX_LEN as u64,
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes(file[o..o + 4].try_into().unwrap_or_default());
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version });
    }
    let header_len = u64::from(u32_at(12));
    let state_len = u64::from_le_bytes(file[16..24].try_into().unwrap_or_default());
    let want = (PREFIX_LEN as u64)
        .saturating_add(header_len)
        .saturating_add(state_len);
    if want > MAX_STATE_FILE || len < want {
        return Err(FormatError::Truncated { got: len, want });
    }
    if len > want {
        return Err(FormatError::TrailingBytes { extra: len - want });
    }
    let stored: SnapshotId = file[24..56].try_into().unwrap_or_default();
    let header_end = PREFIX_LEN + header_len as usize;
    let (header, state) = (&file[PREFIX_LEN..header_end], &file[header_end..]);
    let mut hasher = Sha256::new();
    hasher.update(header);
    hasher.update(state);
    let sum: SnapshotId = hasher.finalize().into();
    if sum != stored {
        return Err(FormatError::Checksum);
    }
    Ok(Verified {
        id: sum,
        header: decode(header, "header")?,
        state,
    })
}
