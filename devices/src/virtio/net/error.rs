//! Errors from setting up a net device (bad user configuration or an unusable backend).

use std::io;
use std::path::PathBuf;

/// Why a net device or its backend could not be created. Messages name the fix.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("net switch socket {path}: {source}; start the switch first or fix --net switch=PATH")]
    SwitchMissing { path: PathBuf, source: io::Error },
    #[error(
        "net switch path {0} is not a Unix socket; --net switch=PATH must name the switch's socket"
    )]
    SwitchNotSocket(PathBuf),
    #[error("net: cannot bind the VMM's switch port socket ({}): {source}", local.as_ref().map_or_else(|| "abstract address".to_string(), |p| p.display().to_string()))]
    SwitchBind {
        local: Option<PathBuf>,
        source: io::Error,
    },
    #[error(
        "net tap name {0:?} is invalid: it must be 1-15 characters without '/' (--net tap=NAME)"
    )]
    TapName(String),
    #[error("net tap {name}: cannot attach via /dev/net/tun: {source}; this needs CAP_NET_ADMIN or an existing tap owned by you (ip tuntap add {name} mode tap user $USER)")]
    Tap { name: String, source: io::Error },
}
