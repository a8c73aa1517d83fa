//! The handle to a running VM: pause, resume, stop, status. Cheap to clone and `Send`, so the
//! control API thread and embedders share it.

use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::api::{Reply, Request};
use crate::exit::ExitReason;
use crate::faults::{PowerCutSummary, VmFaults};
use crate::snapshot::take::{take, SnapshotSource};
use crate::snapshot::{SnapshotError, SnapshotInfo, SnapshotKind};
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
    /// What snapshots read; `None` once the VM is torn down. The lock also serializes
    /// snapshots.
    pub snapshot: Mutex<Option<SnapshotSource>>,
    /// Fault rules, their log, and the disks' write caches (power cut).
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

    /// Snapshots the paused VM into the new directory `dir` (see [`crate::snapshot`]); the VM
    /// stays paused. Restore it with [`crate::restore`] or `vmm --restore DIR`. Disks with a
    /// write cache are written back to their images first; requests a fault delay holds back
    /// are saved and complete after a restore; fault rules are not saved (`FAULTS.md`).
    ///
    /// ```no_run
    /// use vmm::snapshot::SnapshotKind;
    /// # let vm = vmm::start(vmm::VmConfig::new("/path/to/vmlinux")).unwrap();
    /// let handle = vm.handle();
    /// handle.pause();
    /// let full = handle.snapshot("/tmp/snap-full", SnapshotKind::Full).unwrap();
    /// handle.resume();
    /// // ... later, only what changed since:
    /// handle.pause();
    /// let diff = SnapshotKind::Diff { parent: full.dir.clone() };
    /// let info = handle.snapshot("/tmp/snap-diff", diff).unwrap();
    /// println!("{} bytes in {} ms", info.bytes, info.ms);
    /// ```
    pub fn snapshot(
        &self,
        dir: impl AsRef<Path>,
        kind: SnapshotKind,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let mut source = self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let source = source.as_mut().ok_or(SnapshotError::Stopped)?;
        let result = take(source, &self.shared.control, dir.as_ref(), &kind);
        match &result {
            Ok(info) => tracing::info!(
                "snapshot {}: {} bytes in {} ms",
                info.dir.display(),
                info.bytes,
                info.ms
            ),
            Err(e) => tracing::warn!("snapshot {} failed: {e}", dir.as_ref().display()),
        }
        result
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
            Request::Snapshot { dir, kind, parent } => {
                let kind = match (kind.as_deref(), parent) {
                    (None | Some("full"), None) => SnapshotKind::Full,
                    (Some("diff"), Some(parent)) => SnapshotKind::Diff { parent },
                    (Some("diff"), None) => {
                        return Reply::error(
                            "a diff snapshot needs \"parent\": the last snapshot of this VM".into(),
                        )
                    }
                    (None | Some("full"), Some(_)) => {
                        return Reply::error("\"parent\" is only for \"kind\":\"diff\"".into())
                    }
                    (Some(k), _) => {
                        return Reply::error(format!(
                            "unknown snapshot kind {k:?}: use \"full\" or \"diff\""
                        ))
                    }
                };
                match self.snapshot(&dir, kind) {
                    Ok(info) => Reply {
                        snapshot: Some(info),
                        ..Reply::ok(None)
                    },
                    Err(e) => Reply::error(e.to_string()),
                }
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
