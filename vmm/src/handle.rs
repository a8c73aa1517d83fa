//! The handle to a running VM: pause, resume, stop, status. Cheap to clone and `Send`, so the
//! control API thread and embedders share it.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::api::{Reply, Request};
use crate::exit::ExitReason;
use crate::faults::{PowerCutSummary, VmFaults};
use crate::vstate::vcpu::{RunState, VcpuControl};

/// A device as placed on the guest's buses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `block`, `net`, `vsock`, `rng`.
    pub kind: String,
    /// MMIO window base address.
    pub mmio_base: u64,
    /// Interrupt line (GSI).
    pub gsi: u32,
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    /// `running`, `paused` or `stopping`.
    pub state: String,
    pub vcpus: u8,
    pub mem_mib: u32,
    pub uptime_ms: u64,
    pub devices: Vec<DeviceInfo>,
}

pub(crate) struct Shared {
    pub control: Arc<VcpuControl>,
    pub exits: Sender<ExitReason>,
    pub vcpus: u8,
    pub mem_mib: u32,
    pub devices: Vec<DeviceInfo>,
    pub started: Instant,
    pub faults: Arc<VmFaults>,
}

/// Controls a running VM.
#[derive(Clone)]
pub struct VmHandle {
    pub(crate) shared: Arc<Shared>,
}

impl VmHandle {
    /// Pauses every vCPU; returns once none is running guest code.
    pub fn pause(&self) {
        self.shared.control.pause();
    }

    /// Resumes after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared.control.resume();
    }

    /// Asks the VM to stop; [`Vmm::wait`](crate::Vmm::wait) then returns
    /// [`ExitReason::Shutdown`] unless the guest ended first.
    pub fn shutdown(&self) {
        let _ = self.shared.exits.send(ExitReason::Shutdown);
    }

    /// The VM's fault rules, hit counts and write caches.
    pub fn faults(&self) -> &VmFaults {
        &self.shared.faults
    }

    /// Pulls the plug: the vCPUs stop, unflushed writes in every write cache are lost (each
    /// unflushed 4 KiB block survives with probability `keep`), and the VM ends with
    /// [`ExitReason::PowerCut`].
    pub fn power_cut(&self, keep: f64) -> Result<PowerCutSummary, String> {
        crate::faults::check_keep(keep)?;
        // No guest code runs past this point; requests already queued meet a dead cache.
        self.shared.control.pause();
        let summary = self.shared.faults.power_cut(keep)?;
        let _ = self.shared.exits.send(ExitReason::PowerCut {
            lost_blocks: summary.lost_blocks,
            kept_blocks: summary.kept_blocks,
        });
        Ok(summary)
    }

    /// Current state and layout.
    pub fn status(&self) -> VmStatus {
        let s = &self.shared;
        VmStatus {
            state: match s.control.state() {
                RunState::Running => "running",
                RunState::Paused => "paused",
                RunState::Stopping => "stopping",
            }
            .into(),
            vcpus: s.vcpus,
            mem_mib: s.mem_mib,
            uptime_ms: s.started.elapsed().as_millis() as u64,
            devices: s.devices.clone(),
        }
    }

    /// Carries out one control API request.
    pub fn request(&self, req: Request) -> Reply {
        match req {
            Request::Status => Reply::ok(Some(self.status())),
            Request::Pause => {
                self.pause();
                Reply::ok(Some(self.status()))
            }
            Request::Resume => {
                self.resume();
                Reply::ok(Some(self.status()))
            }
            Request::Shutdown => {
                self.shutdown();
                Reply::ok(None)
            }
            Request::SetFaults { rules } => {
                match devices::fault::FaultRules::from_json(rules)
                    .and_then(|r| self.shared.faults.set_rules(r))
                {
                    Ok(()) => Reply {
                        faults: Some(self.shared.faults.report()),
                        ..Reply::ok(None)
                    },
                    Err(e) => Reply::error(e.0.join("; ")),
                }
            }
            Request::Faults => Reply {
                faults: Some(self.shared.faults.report()),
                ..Reply::ok(None)
            },
            Request::PowerCut { keep } => match self.power_cut(keep) {
                Ok(summary) => Reply {
                    power_cut: Some(summary),
                    ..Reply::ok(None)
                },
                Err(e) => Reply::error(e),
            },
        }
    }
}
