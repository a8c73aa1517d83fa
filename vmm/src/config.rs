//! VM configuration: what to boot and which devices to give it.
//!
//! The same settings come from CLI flags or a TOML file (`--config`); list-valued devices use
//! the CLI's option-string syntax in both, e.g. `disk = ["root.img", "data.img,ro"]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use devices::virtio::block::backend::CacheMode;
use serde::{Deserialize, Serialize};

/// Default kernel command line: serial console, reboot through the keyboard controller, and
/// reboot (which ends the VMM) one second after a panic instead of hanging.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// Default guest memory in MiB.
pub const DEFAULT_MEM_MIB: u32 = 256;

/// Everything needed to build and boot one VM.
///
/// ```
/// use vmm::config::{DiskConfig, VmConfig};
/// let mut cfg = VmConfig::new("/boot/vmlinuz");
/// cfg.mem_mib = 512;
/// cfg.disks.push("root.img,ro".parse::<DiskConfig>().unwrap());
/// assert!(cfg.disks[0].read_only);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// ELF `vmlinux` or `bzImage`.
    pub kernel: PathBuf,
    /// Optional initramfs.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; device parameters are appended to it.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Guest memory in MiB.
    #[serde(default = "default_mem", rename = "mem")]
    pub mem_mib: u32,
    /// Number of vCPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    /// Block devices, in order (`/dev/vda`, `/dev/vdb`, ...).
    #[serde(default, rename = "disk")]
    pub disks: Vec<DiskConfig>,
    /// Network devices, in order (`eth0`, `eth1`, ...).
    #[serde(default, rename = "net")]
    pub nets: Vec<NetConfig>,
    /// Optional virtio-vsock device.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Where the serial console goes.
    #[serde(default)]
    pub serial: SerialOutput,
    /// Unix socket for the control API.
    #[serde(default)]
    pub api_sock: Option<PathBuf>,
    /// Seccomp filters on every thread (on by default; turn off only to debug).
    #[serde(default = "default_true")]
    pub seccomp: bool,
    /// Fault rules file (TOML, see `FAULTS.md`) in force from boot.
    #[serde(default)]
    pub faults: Option<PathBuf>,
    /// Where injected faults are appended (JSON lines).
    #[serde(default)]
    pub fault_log: Option<PathBuf>,
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}
fn default_mem() -> u32 {
    DEFAULT_MEM_MIB
}
fn default_cpus() -> u8 {
    1
}
fn default_true() -> bool {
    true
}

impl VmConfig {
    /// A config with defaults: 256 MiB, 1 vCPU, serial on stdout, no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: default_cmdline(),
            mem_mib: DEFAULT_MEM_MIB,
            cpus: 1,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            serial: SerialOutput::Stdout,
            api_sock: None,
            seccomp: true,
            faults: None,
            fault_log: None,
        }
    }

    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))
    }

    /// Checks values and that input files exist, so that errors name the bad setting before
    /// any VM resource is created.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        for d in &self.disks {
            check_file("disk", &d.path)?;
        }
        if let Some(f) = &self.faults {
            check_file("--faults", f)?;
        }
        if self.mem_mib < 16 {
            return Err(ConfigError::Invalid(format!(
                "--mem {} is too small: give at least 16 MiB",
                self.mem_mib
            )));
        }
        if self.cpus == 0 || self.cpus > 64 {
            return Err(ConfigError::Invalid(format!(
                "--cpus {} is out of range: use 1 to 64",
                self.cpus
            )));
        }
        Ok(())
    }
}

fn check_file(what: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::Invalid(format!(
            "{what} {} is not a regular file: pass the path of a file",
            path.display()
        ))),
        Err(e) => Err(ConfigError::Invalid(format!(
            "{what} {} cannot be read ({e}): check the path",
            path.display()
        ))),
    }
}

/// A configuration problem, worded for the person who wrote it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("config file: {0}")]
    Toml(String),
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

/// Splits `a=b,c=d,flag` option strings.
fn options(s: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
}

/// `--disk PATH[,ro][,id=SERIAL][,cache=writethrough|writeback]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// Device ID the guest sees (`/sys/block/vdX/serial`).
    pub id: Option<String>,
    /// Write-through (default) or a volatile write-back cache (lost at a power cut).
    pub cache: CacheMode,
}

impl FromStr for DiskConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.splitn(2, ',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(invalid(format!(
                "--disk '{s}': missing path; use --disk PATH[,ro]"
            )));
        }
        let mut disk = DiskConfig {
            path: path.into(),
            read_only: false,
            id: None,
            cache: CacheMode::WriteThrough,
        };
        for (k, v) in options(parts.next().unwrap_or("")) {
            match (k, v) {
                ("ro", None) => disk.read_only = true,
                ("rw", None) => disk.read_only = false,
                ("id", Some(v)) if v.len() <= 20 => disk.id = Some(v.to_string()),
                ("cache", Some(v)) => {
                    disk.cache = v
                        .parse()
                        .map_err(|e: String| invalid(format!("--disk '{s}': {e}")))?
                }
                _ => {
                    return Err(invalid(format!(
                    "--disk '{s}': unknown option '{k}'; use --disk PATH[,ro][,id=UP_TO_20_CHARS][,cache=writeback]"
                )))
                }
            }
        }
        Ok(disk)
    }
}

impl fmt::Display for DiskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.read_only {
            write!(f, ",ro")?;
        }
        if let Some(id) = &self.id {
            write!(f, ",id={id}")?;
        }
        if self.cache == CacheMode::WriteBack {
            write!(f, ",cache=writeback")?;
        }
        Ok(())
    }
}

/// Where a network device's frames go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackend {
    /// A userspace switch's Unix datagram socket.
    Switch(PathBuf),
    /// An existing TAP interface.
    Tap(String),
}

/// `--net switch=SOCK[,mac=MAC]` or `--net tap=NAME[,mac=MAC]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetConfig {
    pub backend: NetBackend,
    /// `aa:bb:cc:dd:ee:ff`; derived from the device index when absent.
    pub mac: Option<[u8; 6]>,
}

impl FromStr for NetConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let usage = "use --net switch=SOCK[,mac=MAC] or --net tap=NAME[,mac=MAC]";
        let mut backend = None;
        let mut mac = None;
        for (k, v) in options(s) {
            match (k, v) {
                ("switch", Some(p)) if !p.is_empty() => {
                    backend = Some(NetBackend::Switch(p.into()))
                }
                ("tap", Some(n)) if !n.is_empty() => backend = Some(NetBackend::Tap(n.into())),
                ("mac", Some(m)) => {
                    mac = Some(parse_mac(m).map_err(|e| invalid(format!("--net '{s}': {e}")))?)
                }
                _ => {
                    return Err(invalid(format!(
                        "--net '{s}': unknown option '{k}'; {usage}"
                    )))
                }
            }
        }
        let backend =
            backend.ok_or_else(|| invalid(format!("--net '{s}': no backend; {usage}")))?;
        Ok(NetConfig { backend, mac })
    }
}

impl fmt::Display for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            NetBackend::Switch(p) => write!(f, "switch={}", p.display())?,
            NetBackend::Tap(n) => write!(f, "tap={n}")?,
        }
        if let Some(m) = &self.mac {
            write!(f, ",mac={}", format_mac(m))?;
        }
        Ok(())
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("bad MAC address '{s}': write six hex bytes like 52:54:00:12:34:56");
    let mut mac = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.len() != 2 {
            return Err(bad());
        }
        mac[n] = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        n += 1;
    }
    if n != 6 {
        return Err(bad());
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "MAC address '{s}' is multicast: the first byte must be even"
        ));
    }
    Ok(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `--vsock cid=N,uds=PATH`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VsockConfig {
    /// Guest context ID (3 or more).
    pub cid: u64,
    /// Host Unix socket; guest-initiated connections go to `<uds>_<port>`.
    pub uds: PathBuf,
}

impl FromStr for VsockConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let usage = "use --vsock cid=N,uds=PATH with N >= 3";
        let (mut cid, mut uds) = (None, None);
        for (k, v) in options(s) {
            match (k, v) {
                ("cid", Some(c)) => {
                    cid =
                        Some(c.parse::<u64>().ok().filter(|c| *c >= 3).ok_or_else(|| {
                            invalid(format!("--vsock '{s}': bad cid '{c}'; {usage}"))
                        })?)
                }
                ("uds", Some(p)) if !p.is_empty() => uds = Some(PathBuf::from(p)),
                _ => {
                    return Err(invalid(format!(
                        "--vsock '{s}': unknown option '{k}'; {usage}"
                    )))
                }
            }
        }
        match (cid, uds) {
            (Some(cid), Some(uds)) => Ok(VsockConfig { cid, uds }),
            _ => Err(invalid(format!(
                "--vsock '{s}': cid and uds are both needed; {usage}"
            ))),
        }
    }
}

impl fmt::Display for VsockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cid={},uds={}", self.cid, self.uds.display())
    }
}

/// `--serial stdout|PATH`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SerialOutput {
    #[default]
    Stdout,
    /// Append to this file (created if needed).
    File(PathBuf),
    /// Discard output.
    Off,
}

impl FromStr for SerialOutput {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Ok(match s {
            "" => {
                return Err(invalid(
                    "--serial needs a value: stdout, off or a file path".into(),
                ))
            }
            "stdout" => SerialOutput::Stdout,
            "off" | "none" => SerialOutput::Off,
            p => SerialOutput::File(p.into()),
        })
    }
}

impl fmt::Display for SerialOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialOutput::Stdout => write!(f, "stdout"),
            SerialOutput::Off => write!(f, "off"),
            SerialOutput::File(p) => write!(f, "{}", p.display()),
        }
    }
}

macro_rules! string_serde {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = ConfigError;
            fn try_from(s: String) -> Result<Self, ConfigError> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    )*};
}
string_serde!(DiskConfig, NetConfig, VsockConfig, SerialOutput);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_options() {
        let d: DiskConfig = "a.img,ro,id=root".parse().unwrap();
        assert_eq!(
            (d.path.to_str(), d.read_only, d.id.as_deref()),
            (Some("a.img"), true, Some("root"))
        );
        let n: NetConfig = "switch=/tmp/s.sock,mac=52:54:00:00:00:01".parse().unwrap();
        assert_eq!(n.backend, NetBackend::Switch("/tmp/s.sock".into()));
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(
            "tap=tap0".parse::<NetConfig>().unwrap().backend,
            NetBackend::Tap("tap0".into())
        );
        let v: VsockConfig = "cid=3,uds=/tmp/v.sock".parse().unwrap();
        assert_eq!(v.cid, 3);
        assert_eq!(
            "/tmp/x".parse::<SerialOutput>().unwrap(),
            SerialOutput::File("/tmp/x".into())
        );
    }

    #[test]
    fn parses_disk_cache_modes() {
        let d: DiskConfig = "a.img,cache=writeback".parse().unwrap();
        assert_eq!(d.cache, CacheMode::WriteBack);
        assert_eq!(d.to_string(), "a.img,cache=writeback");
        assert_eq!(d.to_string().parse::<DiskConfig>().unwrap(), d);
        let d: DiskConfig = "a.img,cache=writethrough".parse().unwrap();
        assert_eq!(
            (d.cache, d.to_string().as_str()),
            (CacheMode::WriteThrough, "a.img")
        );
        let e = "a.img,cache=fast"
            .parse::<DiskConfig>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cache=writeback") && e.contains("\"fast\""),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn rejects_bad_options_with_usage() {
        for (bad, needle) in [("a.img,rx", "--disk"), ("", "missing path")] {
            let e = bad.parse::<DiskConfig>().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert!("switch=/s,mac=zz:00:00:00:00:00"
            .parse::<NetConfig>()
            .unwrap_err()
            .to_string()
            .contains("MAC"));
        assert!("mac=52:54:00:00:00:01"
            .parse::<NetConfig>()
            .unwrap_err()
            .to_string()
            .contains("no backend"));
        assert!("cid=2,uds=/x"
            .parse::<VsockConfig>()
            .unwrap_err()
            .to_string()
            .contains("cid"));
        assert!("cid=3"
            .parse::<VsockConfig>()
            .unwrap_err()
            .to_string()
            .contains("both"));
        assert!(parse_mac("01:00:00:00:00:00")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("52:54:00:00:00").is_err());
        assert!(parse_mac("52:54:00:00:00:00:00").is_err());
    }

    #[test]
    fn toml_round_trip_uses_cli_spelling() {
        let cfg = VmConfig::from_toml(
            r#"
            kernel = "/k"
            mem = 512
            cpus = 2
            disk = ["/a.img", "/b.img,ro"]
            net = ["switch=/s.sock"]
            vsock = "cid=7,uds=/v.sock"
            serial = "/tmp/serial.log"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.mem_mib, 512);
        assert_eq!(cfg.disks.len(), 2);
        assert!(cfg.disks[1].read_only);
        assert_eq!(cfg.vsock.as_ref().unwrap().cid, 7);
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
        let again = VmConfig::from_toml(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
        let e = VmConfig::from_toml("kernel = '/k'\nmemory = 5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory"), "{e}");
    }

    #[test]
    fn validate_names_missing_files() {
        let cfg = VmConfig::new("/nonexistent/vmlinux");
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("kernel /nonexistent/vmlinux"), "{e}");
    }
}
