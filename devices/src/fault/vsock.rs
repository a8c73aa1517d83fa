//! vsock faults: the per-device hook the vsock muxer asks about every packet the guest sends
//! on an open connection; a rule that fires resets that connection.

use std::sync::Arc;

use super::engine::{fire, FaultEngine, ARMED_VSOCK};
use super::log::FaultRecord;
use super::Stream;

/// The fault hook of the vsock device.
#[derive(Clone, Debug)]
pub struct VsockFaults {
    engine: Arc<FaultEngine>,
}

impl VsockFaults {
    /// The vsock hook on `engine`.
    pub fn new(engine: Arc<FaultEngine>) -> Self {
        VsockFaults { engine }
    }

    /// A hook on an engine of its own without rules.
    pub fn none() -> Self {
        VsockFaults::new(FaultEngine::new())
    }

    /// True if any vsock rule exists (one atomic load).
    #[inline]
    pub fn armed(&self) -> bool {
        self.engine.armed(ARMED_VSOCK)
    }

    /// Whether packet number `packet_no` from the guest, on the connection between host port
    /// `host_port` and guest port `guest_port`, resets that connection (logged if so).
    pub fn reset_connection(&self, packet_no: u64, host_port: u32, guest_port: u32) -> bool {
        if !self.armed() {
            return false;
        }
        let mut st = self.engine.lock();
        let st = &mut *st;
        let seed = st.rules.seed;
        for (i, rule) in st.rules.vsock.iter().enumerate() {
            if rule.port.is_some_and(|p| p != host_port && p != guest_port) {
                continue;
            }
            if fire(
                seed,
                Stream::Vsock(i),
                &mut st.vsock[i],
                rule.after,
                rule.count,
                rule.probability,
            )
            .is_none()
            {
                continue;
            }
            st.record(FaultRecord {
                time: FaultRecord::now(),
                device: "vsock".into(),
                op: "packet".into(),
                request: packet_no,
                offset: None,
                len: None,
                rule: format!("vsock[{i}]"),
                action: "reset".into(),
                detail: Some(format!("host port {host_port}, guest port {guest_port}")),
            });
            return true;
        }
        false
    }
}
