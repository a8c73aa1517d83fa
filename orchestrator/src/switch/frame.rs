//! Just enough Ethernet to switch: addresses of a frame.

/// Smallest frame the switch accepts: an Ethernet header (dst, src, ethertype).
pub const MIN_FRAME: usize = 14;
/// Largest frame the switch accepts (64 KiB payload plus header, as virtio-net allows).
pub const MAX_FRAME: usize = 65550;

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// Destination and source addresses of a frame, or `None` if it is too short or too long.
pub fn addresses(frame: &[u8]) -> Option<(Mac, Mac)> {
    if frame.len() > MAX_FRAME {
        return None;
    }
    let dst = frame.get(0..6)?.try_into().ok()?;
    let src = frame.get(6..12)?.try_into().ok()?;
    frame.get(..MIN_FRAME)?;
    Some((dst, src))
}

/// Group (broadcast or multicast) addresses have the lowest bit of the first octet set.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bounds() {
        assert!(addresses(&[0; 13]).is_none());
        assert!(addresses(&vec![0; MAX_FRAME + 1]).is_none());
        let mut f = vec![0u8; 14];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let (dst, src) = addresses(&f).unwrap();
        assert!(is_group(&dst));
        assert!(!is_group(&src));
        assert_eq!(src, [2, 0, 0, 0, 0, 1]);
    }
}
