//! The MC146818-style CMOS RTC at ports 0x70 (index; bit 7 is the NMI mask and is ignored)
//! and 0x71 (data).
//!
//! The time registers read the host clock (UTC) plus an offset the guest can change by
//! writing them; the rest of the 128 bytes is NVRAM. Register B honours 24h/12h and
//! BCD/binary and its SET bit (the time freezes while the guest writes it); register D
//! reports a valid battery; the update-in-progress bit never sticks. No RTC interrupts are
//! raised (periodic, alarm and update interrupts are not emulated).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod persist;
pub use persist::RtcState;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use crate::legacy::port_of;

/// Index port.
pub const PORT_BASE: u16 = 0x70;
/// Index and data port.
pub const PORT_LEN: u16 = 2;
/// CMOS index of the century byte (the FADT `century` field points here).
pub const CENTURY_INDEX: u8 = 0x32;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;

/// Register A: update in progress.
const REG_A_UIP: u8 = 0x80;
/// Register A after reset: 32.768 kHz divider, 1024 Hz rate.
const REG_A_DEFAULT: u8 = 0x26;
/// Register B: updates halted while the time is set.
pub const REG_B_SET: u8 = 0x80;
/// Register B: binary (not BCD) data mode.
pub const REG_B_DM_BINARY: u8 = 0x04;
/// Register B: 24-hour mode.
pub const REG_B_24H: u8 = 0x02;
/// Register D: valid RAM and time (battery good).
const REG_D_VRT: u8 = 0x80;
/// Hour bit for PM in 12-hour mode.
const HOUR_PM: u8 = 0x80;
const NVRAM_SIZE: usize = 128;
const INDEX_MASK: u8 = 0x7f;

/// A broken-down UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateTime {
    /// 0-59.
    pub second: u8,
    /// 0-59.
    pub minute: u8,
    /// 0-23.
    pub hour: u8,
    /// 1-31.
    pub day: u8,
    /// 1-12.
    pub month: u8,
    /// Full year, e.g. 2026.
    pub year: u16,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl DateTime {
    /// The date and time `secs` seconds after the Unix epoch (clamped to years 0..=9999).
    pub fn from_unix(secs: i64) -> DateTime {
        let secs = secs.clamp(-62_167_219_200, 253_402_300_799);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            second: (rem % 60) as u8,
            minute: (rem / 60 % 60) as u8,
            hour: (rem / 3600) as u8,
            day: day as u8,
            month: month as u8,
            year: year as u16,
        }
    }

    /// Seconds since the Unix epoch.
    pub fn to_unix(self) -> i64 {
        days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        ) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// Day of week as the RTC counts it: 1 = Sunday .. 7 = Saturday.
    fn day_of_week(self) -> u8 {
        let days = days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        );
        // 1970-01-01 was a Thursday (5 in 1-based, Sunday-first counting).
        ((days + 4).rem_euclid(7) + 1) as u8
    }
}

fn host_unix_time() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The CMOS RTC.
#[derive(Debug)]
pub struct Rtc {
    index: u8,
    reg_a: u8,
    reg_b: u8,
    cmos: [u8; NVRAM_SIZE],
    offset_secs: i64,
    frozen: Option<DateTime>,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

impl Rtc {
    /// An RTC showing the host's UTC time, BCD and 24-hour mode (what PC firmware sets).
    pub fn new() -> Self {
        Rtc {
            index: 0,
            reg_a: REG_A_DEFAULT,
            reg_b: REG_B_24H,
            cmos: [0; NVRAM_SIZE],
            offset_secs: 0,
            frozen: None,
        }
    }

    /// The guest's current date and time.
    pub fn now(&self) -> DateTime {
        self.frozen.unwrap_or_else(|| {
            DateTime::from_unix(host_unix_time().saturating_add(self.offset_secs))
        })
    }

    fn bcd(&self) -> bool {
        self.reg_b & REG_B_DM_BINARY == 0
    }

    fn encode(&self, v: u8) -> u8 {
        if self.bcd() {
            ((v / 10) << 4) | (v % 10)
        } else {
            v
        }
    }

    fn decode(&self, v: u8) -> Option<u8> {
        if !self.bcd() {
            return Some(v);
        }
        let (hi, lo) = (v >> 4, v & 0xf);
        (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.reg_b & REG_B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> Option<u8> {
        if self.reg_b & REG_B_24H != 0 {
            return self.decode(v).filter(|h| *h < 24);
        }
        let h12 = self.decode(v & !HOUR_PM).filter(|h| (1..=12).contains(h))?;
        Some(h12 % 12 + if v & HOUR_PM != 0 { 12 } else { 0 })
    }

    fn read_register(&self, index: u8) -> u8 {
        let now = self.now();
        match index {
            SECONDS => self.encode(now.second),
            MINUTES => self.encode(now.minute),
            HOURS => self.encode_hour(now.hour),
            DAY_OF_WEEK => self.encode(now.day_of_week()),
            DAY_OF_MONTH => self.encode(now.day),
            MONTH => self.encode(now.month),
            YEAR => self.encode((now.year % 100) as u8),
            CENTURY_INDEX => self.encode((now.year / 100) as u8),
            REG_A => self.reg_a & !REG_A_UIP,
            REG_B => self.reg_b,
            REG_C => 0,
            REG_D => REG_D_VRT,
            _ => self.cmos[usize::from(index & INDEX_MASK)],
        }
    }

    /// Applies a new guest date/time (from a write or from leaving SET mode).
    fn set_time(&mut self, t: DateTime) {
        if self.reg_b & REG_B_SET != 0 {
            self.frozen = Some(t);
        } else {
            self.offset_secs = t.to_unix() - host_unix_time();
        }
    }

    fn write_time_field(&mut self, index: u8, value: u8) {
        let mut t = self.now();
        let ok = match index {
            SECONDS => self.decode(value).filter(|v| *v < 60).map(|v| t.second = v),
            MINUTES => self.decode(value).filter(|v| *v < 60).map(|v| t.minute = v),
            HOURS => self.decode_hour(value).map(|v| t.hour = v),
            DAY_OF_MONTH => self
                .decode(value)
                .filter(|v| (1..=31).contains(v))
                .map(|v| t.day = v),
            MONTH => self
                .decode(value)
                .filter(|v| (1..=12).contains(v))
                .map(|v| t.month = v),
            YEAR => self
                .decode(value)
                .filter(|v| *v < 100)
                .map(|v| t.year = t.year / 100 * 100 + u16::from(v)),
            CENTURY_INDEX => self
                .decode(value)
                .filter(|v| *v < 100)
                .map(|v| t.year = u16::from(v) * 100 + t.year % 100),
            _ => None,
        };
        match ok {
            Some(()) => self.set_time(t),
            None => tracing::debug!(index, value, "ignored invalid RTC time write"),
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_MONTH | MONTH | YEAR | CENTURY_INDEX => {
                self.write_time_field(index, value)
            }
            DAY_OF_WEEK => {} // derived from the date
            REG_A => self.reg_a = value & !REG_A_UIP,
            REG_B => {
                let was_set = self.reg_b & REG_B_SET != 0;
                let now = self.now();
                self.reg_b = value;
                match (was_set, value & REG_B_SET != 0) {
                    (false, true) => self.frozen = Some(now),
                    (true, false) => {
                        self.frozen = None;
                        self.set_time(now);
                    }
                    _ => {}
                }
            }
            REG_C | REG_D => {} // read-only
            _ => self.cmos[usize::from(index & INDEX_MASK)] = value,
        }
    }
}

impl MutDevicePio for Rtc {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let value = match (port_of(base, offset), data.len()) {
            (Some(PORT_BASE), 1) => self.index,
            (Some(p), 1) if p == PORT_BASE + 1 => self.read_register(self.index),
            _ => 0xff,
        };
        data.fill(value);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        match (port_of(base, offset), data) {
            (Some(PORT_BASE), [index]) => self.index = index & INDEX_MASK,
            (Some(p), [value]) if p == PORT_BASE + 1 => self.write_register(self.index, *value),
            _ => tracing::debug!(len = data.len(), "ignored RTC write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::Persist;

    fn read(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.pio_write(PioAddress(PORT_BASE), 0, &[index]);
        let mut b = [0u8];
        rtc.pio_read(PioAddress(PORT_BASE), 1, &mut b);
        b[0]
    }

    fn write(rtc: &mut Rtc, index: u8, value: u8) {
        rtc.pio_write(PioAddress(PORT_BASE), 0, &[index]);
        rtc.pio_write(PioAddress(PORT_BASE), 1, &[value]);
    }

    fn from_bcd(v: u8) -> u8 {
        (v >> 4) * 10 + (v & 0xf)
    }

    /// Reads the clock like Linux's mc146818_get_time, decoding with `decode`.
    fn read_clock(rtc: &mut Rtc, decode: fn(u8) -> u8) -> DateTime {
        DateTime {
            second: decode(read(rtc, SECONDS)),
            minute: decode(read(rtc, MINUTES)),
            hour: decode(read(rtc, HOURS)),
            day: decode(read(rtc, DAY_OF_MONTH)),
            month: decode(read(rtc, MONTH)),
            year: u16::from(decode(read(rtc, CENTURY_INDEX))) * 100
                + u16::from(decode(read(rtc, YEAR))),
        }
    }

    /// The clock agrees with the host clock (taken before and after, so a second boundary
    /// crossed during the reads cannot fail the test).
    fn assert_matches_host(rtc: &mut Rtc, decode: fn(u8) -> u8) {
        let before = host_unix_time();
        let t = read_clock(rtc, decode).to_unix();
        let after = host_unix_time();
        assert!(
            before - 1 <= t && t <= after,
            "rtc {t}, host {before}..{after}"
        );
    }

    #[test]
    fn bcd_time_matches_host_clock() {
        let mut rtc = Rtc::new();
        assert_eq!(
            read(&mut rtc, REG_B) & (REG_B_DM_BINARY | REG_B_24H),
            REG_B_24H
        );
        assert_matches_host(&mut rtc, from_bcd);
    }

    #[test]
    fn binary_time_matches_host_clock() {
        let mut rtc = Rtc::new();
        write(&mut rtc, REG_B, REG_B_24H | REG_B_DM_BINARY);
        assert_matches_host(&mut rtc, |v| v);
    }

    #[test]
    fn twelve_hour_mode_flags_pm() {
        let mut rtc = Rtc::new();
        write(&mut rtc, REG_B, REG_B_SET | REG_B_DM_BINARY);
        write(&mut rtc, HOURS, 0x80 | 3); // 3 PM in 12-hour mode
        write(&mut rtc, REG_B, REG_B_24H | REG_B_DM_BINARY);
        assert_eq!(read(&mut rtc, HOURS), 15);
    }

    #[test]
    fn status_registers_say_valid_and_idle() {
        let mut rtc = Rtc::new();
        assert_eq!(read(&mut rtc, REG_A), REG_A_DEFAULT);
        assert_eq!(read(&mut rtc, REG_A) & REG_A_UIP, 0);
        assert_eq!(read(&mut rtc, REG_C), 0);
        assert_eq!(read(&mut rtc, REG_D), REG_D_VRT);
        // The NMI-disable bit in the index is ignored.
        assert_eq!(read(&mut rtc, 0x80 | REG_D), REG_D_VRT);
    }

    #[test]
    fn day_of_week_is_right() {
        // 2000-01-01 was a Saturday (7).
        let t = DateTime {
            second: 0,
            minute: 0,
            hour: 0,
            day: 1,
            month: 1,
            year: 2000,
        };
        assert_eq!(t.day_of_week(), 7);
        assert_eq!(t.to_unix(), 946_684_800);
        assert_eq!(DateTime::from_unix(946_684_800), t);
        let leap = DateTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!((leap.month, leap.day), (2, 29));
    }

    #[test]
    fn guest_can_set_the_time_with_the_set_bit() {
        let mut rtc = Rtc::new();
        write(&mut rtc, REG_B, REG_B_24H | REG_B_SET);
        for (index, value) in [
            (SECONDS, 0x30),
            (MINUTES, 0x45),
            (HOURS, 0x13),
            (DAY_OF_MONTH, 0x31),
            (MONTH, 0x12),
            (YEAR, 0x35),
            (CENTURY_INDEX, 0x20),
        ] {
            write(&mut rtc, index, value);
        }
        write(&mut rtc, REG_B, REG_B_24H);
        let t = read_clock(&mut rtc, from_bcd);
        let set = DateTime {
            second: 30,
            minute: 45,
            hour: 13,
            day: 31,
            month: 12,
            year: 2035,
        };
        let drift = t.to_unix() - set.to_unix();
        assert!((0..=1).contains(&drift), "{t:?}");
        // The offset survives a snapshot.
        let mut restored = Rtc::restore((), &rtc.save()).unwrap();
        assert_eq!(read_clock(&mut restored, from_bcd).year, 2035);
    }

    #[test]
    fn invalid_time_writes_are_ignored() {
        let mut rtc = Rtc::new();
        write(&mut rtc, MONTH, 0x13);
        write(&mut rtc, SECONDS, 0xaa);
        assert_matches_host(&mut rtc, from_bcd);
    }

    #[test]
    fn nvram_keeps_bytes_and_round_trips() {
        let mut rtc = Rtc::new();
        write(&mut rtc, 0x40, 0xab);
        write(&mut rtc, 0x7f, 0xcd);
        assert_eq!(read(&mut rtc, 0x40), 0xab);
        let state: RtcState =
            serde_json::from_str(&serde_json::to_string(&rtc.save()).unwrap()).unwrap();
        let mut restored = Rtc::restore((), &state).unwrap();
        assert_eq!(
            (read(&mut restored, 0x40), read(&mut restored, 0x7f)),
            (0xab, 0xcd)
        );
    }
}
