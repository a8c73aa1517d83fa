//! Saving a device's state and building the device again from it (snapshot and restore).
//!
//! Every device implements [`Persist`] in a `persist.rs` beside it. The saved state is plain
//! data with no file descriptors or paths the host may want to change; what only the host can
//! supply on restore (event fds, output writers, disk files, sockets, the event loop, fault
//! hooks) comes in as [`Persist::HostParts`].

/// A device that can be saved and restored.
pub trait Persist: Sized {
    /// The device's saved state (serializable plain data).
    type State;
    /// What the host supplies when the device is built again.
    type HostParts;
    /// Why a saved state cannot be restored.
    type Error;

    /// The device's state now. The caller makes sure the device is quiescent (vCPUs paused,
    /// the device event loop parked), so the state is consistent with guest memory.
    fn save(&self) -> Self::State;

    /// Builds the device from `state` and the host's `parts`. A state that does not fit the
    /// parts (another disk size, a bad queue address) is an error, never a panic.
    fn restore(parts: Self::HostParts, state: &Self::State) -> Result<Self, Self::Error>;
}
