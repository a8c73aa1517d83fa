//! Backend on a host TAP interface (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`, no vnet header).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::backend::NetBackend;
use super::error::NetError;

const TUN_PATH: &str = "/dev/net/tun";

/// An open TAP interface; frames are read and written whole.
#[derive(Debug)]
pub struct TapBackend {
    file: File,
    name: String,
}

impl TapBackend {
    /// Attaches to the TAP interface `name` (needs CAP_NET_ADMIN, or a tap created beforehand
    /// with `ip tuntap add NAME mode tap user $USER`).
    pub fn open(name: &str) -> Result<Self, NetError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
            return Err(NetError::TapName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| NetError::Tap {
                name: name.to_string(),
                source: e,
            })?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the fd is open, `req` is a valid ifreq that outlives the call, and
        // TUNSETIFF only reads/writes within it.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(NetError::Tap {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(TapBackend {
            file,
            name: name.to_string(),
        })
    }
}

impl AsRawFd for TapBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl NetBackend for TapBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write(frame).map(|_| ())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn describe(&self) -> String {
        format!("tap={}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tap_names_are_rejected_before_touching_the_system() {
        for bad in ["", "a-name-that-is-far-too-long", "x/y"] {
            let err = TapBackend::open(bad).unwrap_err();
            assert!(matches!(err, NetError::TapName(_)), "{bad}: {err}");
            assert!(err.to_string().contains("tap"));
        }
    }
}
