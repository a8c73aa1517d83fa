//! Kiln's emulated devices: legacy PC devices (serial, i8042, CMOS RTC), the virtio-mmio
//! transport and the virtio devices behind it (block, net, vsock, rng), and fault injection
//! ([`fault`]): rules that every block request, network frame and vsock packet passes.
//! A disk's bytes live in a stack of layers ([`virtio::block::backend`]): raw file, optional
//! write-back cache, fault layer.
//!
//! This crate knows nothing of KVM: a device is handed guest memory, an [`EventFd`] to raise
//! its interrupt (the VMM registers it as an irqfd) and event fds for queue notifications
//! (registered as ioeventfds). Device I/O runs on one event-loop thread (`event-manager`).
//!
//! [`EventFd`]: vmm_sys_util::eventfd::EventFd

pub mod fault;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod legacy;
pub mod persist;
pub mod virtio;

/// Guest memory as every device sees it.
/// Pages written through it are marked in a per-region bitmap, so diff snapshots include
/// what devices wrote (KVM's dirty log only sees the guest's own writes).
pub type GuestMemory = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;
