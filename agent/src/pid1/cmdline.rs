//! Settings read from the kernel command line (`/proc/cmdline`).

use std::net::Ipv4Addr;

use crate::protocol::DEFAULT_VSOCK_PORT;

/// Default network interface configured by `kiln.ip=`.
pub const DEFAULT_IFACE: &str = "eth0";

/// Default vsock port for the start-up announcement to the host.
pub const DEFAULT_ANNOUNCE_PORT: u32 = 10_701;

/// An IPv4 address with its prefix length, as in `10.0.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpConfig {
    /// Address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl IpConfig {
    /// The netmask for the prefix.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        Ipv4Addr::from(bits)
    }
}

impl std::str::FromStr for IpConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected ADDR/PREFIX, e.g. 10.0.0.2/24"))?;
        let addr = addr
            .parse()
            .map_err(|e| format!("{s:?}: bad IPv4 address: {e}"))?;
        let prefix = match prefix.parse::<u8>() {
            Ok(p) if p <= 32 => p,
            _ => return Err(format!("{s:?}: prefix must be 0..=32")),
        };
        Ok(IpConfig { addr, prefix })
    }
}

/// What the agent takes from the kernel command line in PID 1 mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// `kiln.ip=ADDR/PREFIX`: static address of [`BootConfig::iface`].
    pub ip: Option<IpConfig>,
    /// `kiln.iface=NAME` (default `eth0`).
    pub iface: String,
    /// `kiln.hostname=NAME`.
    pub hostname: Option<String>,
    /// `kiln.modules=a,b,c`: modules loaded after those of the modules file.
    pub modules: Vec<String>,
    /// `kiln.port=N`: vsock port to listen on (default 10700).
    pub port: u32,
    /// `kiln.announce=N`: vsock port on the host to announce readiness to (default
    /// 10701, `0` disables).
    pub announce_port: u32,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            ip: None,
            iface: DEFAULT_IFACE.to_string(),
            hostname: None,
            modules: Vec::new(),
            port: DEFAULT_VSOCK_PORT,
            announce_port: DEFAULT_ANNOUNCE_PORT,
        }
    }
}

/// Parses the `kiln.*` parameters of a kernel command line. Unknown parameters are
/// ignored; a malformed `kiln.*` value is an error naming the parameter.
pub fn parse_cmdline(cmdline: &str) -> Result<BootConfig, String> {
    let mut cfg = BootConfig::default();
    for param in cmdline.split_whitespace() {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let port = |v: &str| {
            v.parse::<u32>()
                .map_err(|e| format!("{key}={v}: not a port number: {e}"))
        };
        match key {
            "kiln.ip" => cfg.ip = Some(value.parse()?),
            "kiln.iface" => cfg.iface = value.to_string(),
            "kiln.hostname" if !value.is_empty() => cfg.hostname = Some(value.to_string()),
            "kiln.modules" => cfg.modules.extend(
                value
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
            ),
            "kiln.port" => cfg.port = port(value)?,
            "kiln.announce" => cfg.announce_port = port(value)?,
            _ => {}
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kiln_parameters_and_ignores_others() {
        let cfg = parse_cmdline(
            "console=ttyS0 root=/dev/vda kiln.ip=10.0.0.7/24 kiln.hostname=node7 \
             kiln.modules=virtio_mmio,vmw_vsock_virtio_transport kiln.port=1234 quiet",
        )
        .unwrap();
        assert_eq!(cfg.ip.unwrap().addr, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(cfg.ip.unwrap().netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(cfg.hostname.as_deref(), Some("node7"));
        assert_eq!(cfg.modules, ["virtio_mmio", "vmw_vsock_virtio_transport"]);
        assert_eq!(cfg.port, 1234);
        assert_eq!(cfg.iface, "eth0");
        assert_eq!(cfg.announce_port, DEFAULT_ANNOUNCE_PORT);
    }

    #[test]
    fn rejects_bad_values_with_the_parameter_name() {
        let err = parse_cmdline("kiln.ip=10.0.0.300/24").unwrap_err();
        assert!(err.contains("10.0.0.300/24"), "{err}");
        assert!(parse_cmdline("kiln.ip=10.0.0.1")
            .unwrap_err()
            .contains("ADDR/PREFIX"));
        assert!(parse_cmdline("kiln.ip=10.0.0.1/33").is_err());
        assert!(parse_cmdline("kiln.port=x")
            .unwrap_err()
            .contains("kiln.port"));
    }

    #[test]
    fn netmask_edges() {
        let ip = |p| IpConfig {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: p,
        };
        assert_eq!(ip(0).netmask(), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(ip(32).netmask(), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(ip(17).netmask(), Ipv4Addr::new(255, 255, 128, 0));
    }
}
