//! Saving and restoring the CMOS RTC: registers, NVRAM and the guest's offset from host time.

use serde::{Deserialize, Serialize};

use super::{DateTime, Rtc, INDEX_MASK, NVRAM_SIZE, REG_A_UIP};
use crate::persist::Persist;

/// Saved RTC state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcState {
    /// Selected register.
    pub index: u8,
    /// Register A (rate/divider).
    pub reg_a: u8,
    /// Register B (modes).
    pub reg_b: u8,
    /// The 128 CMOS bytes (alarms and NVRAM; time registers here are unused).
    pub cmos: Vec<u8>,
    /// Guest time minus host time, in seconds.
    pub offset_secs: i64,
    /// The time being set while register B's SET bit is on.
    pub frozen: Option<DateTime>,
}

impl Persist for Rtc {
    type State = RtcState;
    type HostParts = ();
    type Error = std::convert::Infallible;

    fn save(&self) -> RtcState {
        RtcState {
            index: self.index,
            reg_a: self.reg_a,
            reg_b: self.reg_b,
            cmos: self.cmos.to_vec(),
            offset_secs: self.offset_secs,
            frozen: self.frozen,
        }
    }

    /// The guest clock keeps its offset from the host clock.
    fn restore(_parts: (), state: &RtcState) -> Result<Self, Self::Error> {
        let mut cmos = [0; NVRAM_SIZE];
        for (dst, src) in cmos.iter_mut().zip(&state.cmos) {
            *dst = *src;
        }
        Ok(Rtc {
            index: state.index & INDEX_MASK,
            reg_a: state.reg_a & !REG_A_UIP,
            reg_b: state.reg_b,
            cmos,
            offset_secs: state.offset_secs,
            frozen: state.frozen,
        })
    }
}
