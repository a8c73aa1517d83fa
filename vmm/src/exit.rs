//! Why a VM stopped, and the process exit status that goes with it.

use serde::Serialize;

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest powered off through ACPI sleep control (S5).
    PowerOff,
    /// The guest rebooted; `via` says how ("i8042 reset", "ACPI reset", ...). Kiln does not
    /// restart the guest: a reboot ends the VMM, like Firecracker.
    Reboot { via: String },
    /// The host asked the VM to stop (control API, handle, or signal).
    Shutdown,
    /// The host pulled the plug (`power_cut`): unflushed writes in write caches were lost.
    PowerCut { lost_blocks: u64, kept_blocks: u64 },
    /// A vCPU executed `hlt` in a way that exits to the VMM (no in-kernel irqchip wake-up).
    Halted { vcpu: u8 },
    /// The guest triple-faulted; `regs` is a register dump of that vCPU.
    TripleFault { vcpu: u8, regs: String },
    /// KVM or the VMM failed to run a vCPU.
    VcpuError {
        vcpu: u8,
        error: String,
        regs: String,
    },
}

impl ExitReason {
    /// Exit status for the `vmm` process: 0 for an orderly end, 1 for a failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PowerOff
            | ExitReason::Reboot { .. }
            | ExitReason::Shutdown
            | ExitReason::PowerCut { .. }
            | ExitReason::Halted { .. } => 0,
            ExitReason::TripleFault { .. } | ExitReason::VcpuError { .. } => 1,
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            ExitReason::PowerOff => "guest powered off".into(),
            ExitReason::Reboot { via } => format!("guest rebooted ({via}); stopping the VM"),
            ExitReason::Shutdown => "VM shut down by the host".into(),
            ExitReason::PowerCut {
                lost_blocks,
                kept_blocks,
            } => format!(
                "power cut by the host: {lost_blocks} unflushed 4 KiB block(s) lost, {kept_blocks} kept"
            ),
            ExitReason::Halted { vcpu } => format!("vCPU {vcpu} halted; stopping the VM"),
            ExitReason::TripleFault { vcpu, regs } => {
                format!("guest triple fault on vCPU {vcpu}\n{regs}")
            }
            ExitReason::VcpuError { vcpu, error, regs } => {
                format!("vCPU {vcpu} failed: {error}\n{regs}")
            }
        }
    }
}
