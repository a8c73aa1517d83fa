//! Static network setup without external tools: address, netmask and link up through the
//! classic SIOCSIF* ioctls (no netlink crate, no `ip` binary needed in the image).

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::cmdline::IpConfig;

/// Sets `ip` on `iface` and brings `iface` and `lo` up.
pub fn configure(iface: &str, ip: IpConfig) -> io::Result<()> {
    let sock = control_socket()?;
    set_up(&sock, "lo")?;
    set_addr(&sock, iface, libc::SIOCSIFADDR, ip.addr)?;
    set_addr(&sock, iface, libc::SIOCSIFNETMASK, ip.netmask())?;
    set_up(&sock, iface)
}

/// Sets the kernel hostname.
pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a valid byte buffer.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(iface: &str) -> io::Result<libc::ifreq> {
    let name = CString::new(iface).map_err(io::Error::other)?;
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "interface name {iface:?} is longer than {} bytes",
                libc::IFNAMSIZ - 1
            ),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(
    sock: &OwnedFd,
    request: libc::Ioctl,
    req: &mut libc::ifreq,
    what: &str,
) -> io::Result<()> {
    // SAFETY: req is a valid ifreq for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

fn set_addr(sock: &OwnedFd, iface: &str, request: libc::Ioctl, addr: Ipv4Addr) -> io::Result<()> {
    let mut req = ifreq_for(iface)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in the sockaddr member of the ifreq union.
    unsafe {
        std::ptr::write(
            (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<libc::sockaddr_in>(),
            sin,
        );
    }
    ioctl(
        sock,
        request,
        &mut req,
        &format!("setting {addr} on {iface}"),
    )
}

fn set_up(sock: &OwnedFd, iface: &str) -> io::Result<()> {
    let mut req = ifreq_for(iface)?;
    ioctl(
        sock,
        libc::SIOCGIFFLAGS,
        &mut req,
        &format!("reading flags of {iface}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        &mut req,
        &format!("bringing {iface} up"),
    )
}
