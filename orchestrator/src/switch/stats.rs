//! Counters kept per port.

/// Traffic counters of one port, seen from the switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Well-formed frames received from the peer.
    pub frames_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
    /// Frames delivered to the peer.
    pub frames_out: u64,
    /// Bytes of those frames.
    pub bytes_out: u64,
    /// Frames meant for the peer that were not delivered: blocked or lost on the link, or
    /// the peer's socket refused them (gone, or its queue full).
    pub dropped: u64,
    /// Frames from the peer that were too short (< 14 bytes) or too long, and dropped.
    pub malformed: u64,
}

/// A port as reported by [`super::SwitchHandle::ports`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Node name (attached) or the peer address as text (learned, not attached).
    pub name: String,
    /// The peer address as text (`@name` for abstract addresses).
    pub peer: String,
    /// Counters.
    pub stats: PortStats,
}
