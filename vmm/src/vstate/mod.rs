//! KVM state: the VM, its memory and its vCPUs.

pub mod memory;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
pub mod vm_state;
