//! User-facing net configuration and the `--net` option syntax:
//! `switch=SOCK[,local=PATH][,mac=MAC]` or `tap=NAME[,mac=MAC]`.

use std::path::PathBuf;

use super::mac::{MacAddr, MacParseError};

/// Which backend a net device uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackendConfig {
    /// A userspace switch listening on a Unix datagram socket at `path`. `local` is the path
    /// the VMM binds for its own end; `None` picks an abstract address.
    Switch {
        path: PathBuf,
        local: Option<PathBuf>,
    },
    /// An existing (or creatable, with CAP_NET_ADMIN) TAP interface.
    Tap { name: String },
}

/// Configuration of one virtio-net device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Where frames go.
    pub backend: NetBackendConfig,
    /// The guest's MAC; derived from the backend description when `None`.
    pub mac: Option<MacAddr>,
}

/// Why a `--net` option string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetConfigError {
    #[error("--net: {0}")]
    Mac(#[from] MacParseError),
    #[error("--net: unknown key {0:?}; expected switch=SOCK[,local=PATH][,mac=MAC] or tap=NAME[,mac=MAC]")]
    UnknownKey(String),
    #[error("--net: {0:?} is not key=value; expected switch=SOCK[,mac=MAC] or tap=NAME[,mac=MAC]")]
    NotKeyValue(String),
    #[error("--net: give exactly one of switch=SOCK or tap=NAME")]
    Backend,
    #[error("--net: local=PATH only applies to switch=SOCK")]
    LocalWithoutSwitch,
}

impl NetConfig {
    /// Parses the `--net` option value.
    pub fn parse(spec: &str) -> Result<NetConfig, NetConfigError> {
        let mut switch = None;
        let mut tap = None;
        let mut local = None;
        let mut mac = None;
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| NetConfigError::NotKeyValue(item.to_string()))?;
            match key {
                "switch" if switch.is_none() => switch = Some(PathBuf::from(value)),
                "tap" if tap.is_none() => tap = Some(value.to_string()),
                "switch" | "tap" => return Err(NetConfigError::Backend),
                "local" => local = Some(PathBuf::from(value)),
                "mac" => mac = Some(value.parse()?),
                _ => return Err(NetConfigError::UnknownKey(key.to_string())),
            }
        }
        let backend = match (switch, tap) {
            (Some(path), None) => NetBackendConfig::Switch { path, local },
            (None, Some(name)) if local.is_none() => NetBackendConfig::Tap { name },
            (None, Some(_)) => return Err(NetConfigError::LocalWithoutSwitch),
            _ => return Err(NetConfigError::Backend),
        };
        Ok(NetConfig { backend, mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_switch_and_tap_specs() {
        let cfg = NetConfig::parse("switch=/run/sw.sock,mac=02:00:00:00:00:07").unwrap();
        assert_eq!(
            cfg,
            NetConfig {
                backend: NetBackendConfig::Switch {
                    path: "/run/sw.sock".into(),
                    local: None
                },
                mac: Some(MacAddr([2, 0, 0, 0, 0, 7])),
            }
        );
        let cfg = NetConfig::parse("tap=kiln0").unwrap();
        assert_eq!(
            cfg.backend,
            NetBackendConfig::Tap {
                name: "kiln0".into()
            }
        );
        assert_eq!(cfg.mac, None);
    }

    #[test]
    fn rejects_bad_specs() {
        assert_eq!(NetConfig::parse(""), Err(NetConfigError::Backend));
        assert_eq!(
            NetConfig::parse("switch=/a,tap=b"),
            Err(NetConfigError::Backend)
        );
        assert_eq!(
            NetConfig::parse("tap=b,local=/x"),
            Err(NetConfigError::LocalWithoutSwitch)
        );
        assert_eq!(
            NetConfig::parse("switch=/a,speed=10"),
            Err(NetConfigError::UnknownKey("speed".into()))
        );
        assert!(matches!(
            NetConfig::parse("switch=/a,mac=zz"),
            Err(NetConfigError::Mac(_))
        ));
        assert_eq!(
            NetConfig::parse("switch"),
            Err(NetConfigError::NotKeyValue("switch".into()))
        );
    }
}
