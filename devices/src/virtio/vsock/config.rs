//! vsock configuration (`--vsock cid=N,uds=PATH`) and setup errors.

use std::io;
use std::path::PathBuf;

/// Configuration of the vsock device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID (3 ..= 0xffff_fffe).
    pub cid: u64,
    /// Path of the host-side Unix listening socket.
    pub uds_path: PathBuf,
}

/// Why the vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock: guest CID {0} is reserved; use a CID from 3 to 4294967294 (--vsock cid=N)")]
    BadCid(u64),
    #[error("vsock: {0:?} is not key=value; expected --vsock cid=N,uds=PATH")]
    NotKeyValue(String),
    #[error("vsock: unknown key {0:?}; expected --vsock cid=N,uds=PATH")]
    UnknownKey(String),
    #[error("vsock: cid {0:?} is not a number (--vsock cid=N,uds=PATH)")]
    CidNotNumber(String),
    #[error("vsock: missing {0}=...; expected --vsock cid=N,uds=PATH")]
    Missing(&'static str),
    #[error("vsock: socket path {0} already exists; remove it (is another VMM using it?)")]
    UdsExists(PathBuf),
    #[error("vsock: cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

impl VsockConfig {
    /// Parses the `--vsock` option value `cid=N,uds=PATH`.
    pub fn parse(spec: &str) -> Result<VsockConfig, VsockError> {
        let mut cid = None;
        let mut uds = None;
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| VsockError::NotKeyValue(item.to_string()))?;
            match key {
                "cid" => {
                    cid = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| VsockError::CidNotNumber(value.to_string()))?,
                    )
                }
                "uds" => uds = Some(PathBuf::from(value)),
                _ => return Err(VsockError::UnknownKey(key.to_string())),
            }
        }
        let config = VsockConfig {
            cid: cid.ok_or(VsockError::Missing("cid"))?,
            uds_path: uds.ok_or(VsockError::Missing("uds"))?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the CID is usable by a guest.
    pub fn validate(&self) -> Result<(), VsockError> {
        if self.cid < 3 || self.cid > 0xffff_fffe {
            return Err(VsockError::BadCid(self.cid));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let cfg = VsockConfig::parse("cid=3,uds=/run/v.sock").unwrap();
        assert_eq!(cfg.cid, 3);
        assert_eq!(cfg.uds_path, PathBuf::from("/run/v.sock"));
        assert!(matches!(
            VsockConfig::parse("cid=2,uds=/x"),
            Err(VsockError::BadCid(2))
        ));
        assert!(matches!(
            VsockConfig::parse("cid=x,uds=/x"),
            Err(VsockError::CidNotNumber(_))
        ));
        assert!(matches!(
            VsockConfig::parse("uds=/x"),
            Err(VsockError::Missing("cid"))
        ));
        assert!(matches!(
            VsockConfig::parse("cid=3,port=1"),
            Err(VsockError::UnknownKey(_))
        ));
    }
}
