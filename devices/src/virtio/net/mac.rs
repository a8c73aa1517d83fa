//! Ethernet MAC addresses: parsing `aa:bb:cc:dd:ee:ff`, formatting, and a deterministic default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacParseError {
    #[error("MAC {0:?} must be six hex bytes separated by ':' (e.g. 02:00:00:00:00:01)")]
    Format(String),
    #[error("MAC {0} is a multicast address (lowest bit of the first byte set); use a unicast MAC such as 02:...")]
    Multicast(String),
}

impl MacAddr {
    /// A locally administered unicast MAC derived from `seed` (e.g. the backend's name), so a
    /// node keeps the same MAC across restarts without configuration.
    pub fn derived_from(seed: &str) -> MacAddr {
        // FNV-1a: tiny, stable across Rust versions (unlike DefaultHasher).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let h = hash.to_le_bytes();
        // 0x02: locally administered, unicast.
        MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]])
    }

    /// The six bytes.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts
                .next()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| MacParseError::Format(s.to_string()))?;
            *byte =
                u8::from_str_radix(part, 16).map_err(|_| MacParseError::Format(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError::Format(s.to_string()));
        }
        if out[0] & 1 != 0 {
            return Err(MacParseError::Multicast(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let mac: MacAddr = "02:AB:cd:00:10:ff".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0xab, 0xcd, 0x00, 0x10, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:cd:00:10:ff");
    }

    #[test]
    fn rejects_bad_strings_with_clear_errors() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "0g:00:00:00:00:00",
            "2:0:0:0:0:0",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(err, MacParseError::Format(bad.to_string()));
            assert!(err.to_string().contains("six hex bytes"));
        }
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(MacParseError::Multicast(_))
        ));
    }

    #[test]
    fn derived_mac_is_stable_local_unicast_and_seed_dependent() {
        let a = MacAddr::derived_from("switch=/run/net0.sock");
        assert_eq!(a, MacAddr::derived_from("switch=/run/net0.sock"));
        assert_ne!(a, MacAddr::derived_from("switch=/run/net1.sock"));
        assert_eq!(a.0[0], 0x02);
    }
}
