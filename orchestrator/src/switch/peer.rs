//! Peer socket addresses as hashable values (std's `SocketAddr` is neither `Eq` nor `Hash`).

use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::path::PathBuf;

/// The address a port's peer (a VMM) sends from and receives on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerAddr {
    /// A socket bound to a filesystem path.
    Path(PathBuf),
    /// A socket bound to a Linux abstract name (without the leading NUL).
    Abstract(Vec<u8>),
}

impl PeerAddr {
    /// Converts a std address; `None` for unnamed (unbound) sockets, which cannot be replied to.
    pub fn from_std(addr: &SocketAddr) -> Option<Self> {
        if let Some(path) = addr.as_pathname() {
            return Some(PeerAddr::Path(path.to_path_buf()));
        }
        addr.as_abstract_name()
            .map(|name| PeerAddr::Abstract(name.to_vec()))
    }

    /// The std address to send to.
    pub fn to_std(&self) -> io::Result<SocketAddr> {
        match self {
            PeerAddr::Path(p) => SocketAddr::from_pathname(p),
            PeerAddr::Abstract(name) => SocketAddr::from_abstract_name(name),
        }
    }
}

impl fmt::Display for PeerAddr {
    /// Paths print as themselves, abstract names with a leading `@` (as `ss` shows them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Path(p) => write!(f, "{}", p.display()),
            PeerAddr::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}
