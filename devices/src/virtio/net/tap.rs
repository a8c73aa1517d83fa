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
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    /// IEEE "local experimental" EtherType: nothing else on the test interface uses it.
    const ETH_TEST: u16 = 0x88b5;

    fn test_frame(fill: u8) -> Vec<u8> {
        let mut f = vec![0xffu8; 6]; // broadcast
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x11]);
        f.extend_from_slice(&ETH_TEST.to_be_bytes());
        f.extend(std::iter::repeat_n(fill, 100));
        f
    }

    /// Brings `name` up using an ioctl socket of the current network namespace.
    fn link_up(name: &str) -> io::Result<()> {
        // SAFETY: plain socket creation; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain old data.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: valid fd and ifreq; SIOC[GS]IFFLAGS stay within the struct.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// An AF_PACKET socket on `name` that sees only `ETH_TEST` frames.
    fn packet_socket(name: &str) -> io::Result<OwnedFd> {
        let proto = ETH_TEST.to_be();
        // SAFETY: plain socket creation; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: cname is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        // SAFETY: sockaddr_ll is plain old data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: valid fd; addr and tv are valid for the sizes passed.
        unsafe {
            if libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(sock)
    }

    /// Frames move both ways through a real TAP in a private network namespace (needs root;
    /// skipped with a message where namespaces cannot be created).
    #[test]
    fn frames_cross_a_real_tap_in_a_private_netns() {
        std::thread::spawn(|| {
            // SAFETY: only this thread's network namespace changes; the thread ends after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                // Past libtest's capture, so tests/run counts it.
                let _ = writeln!(
                    io::stderr(),
                    "SKIPPED tap test: cannot create a network namespace ({})",
                    io::Error::last_os_error()
                );
                return;
            }
            let mut tap = TapBackend::open("kilntap0").unwrap();
            assert_eq!(tap.describe(), "tap=kilntap0");
            link_up("kilntap0").unwrap();
            let sock = packet_socket("kilntap0").unwrap();

            // Guest -> host.
            let out = test_frame(0xab);
            tap.send(&out).unwrap();
            let mut buf = vec![0u8; 2048];
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(
                n > 0,
                "no frame on the host side: {}",
                io::Error::last_os_error()
            );
            assert_eq!(&buf[..n as usize], &out[..]);

            // Host -> guest (skipping the kernel's own IPv6 chatter on the link).
            let inbound = test_frame(0xcd);
            // SAFETY: valid fd and buffer.
            let sent =
                unsafe { libc::send(sock.as_raw_fd(), inbound.as_ptr().cast(), inbound.len(), 0) };
            assert_eq!(sent, inbound.len() as isize);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match tap.recv(&mut buf) {
                    Ok(n) if buf[12..14] == ETH_TEST.to_be_bytes() => {
                        assert_eq!(&buf[..n], &inbound[..]);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "frame never reached the tap");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("tap read failed: {e}"),
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn bad_tap_names_are_rejected_before_touching_the_system() {
        for bad in ["", "a-name-that-is-far-too-long", "x/y"] {
            let err = TapBackend::open(bad).unwrap_err();
            assert!(matches!(err, NetError::TapName(_)), "{bad}: {err}");
            assert!(err.to_string().contains("tap"));
        }
    }
}
