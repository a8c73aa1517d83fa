//! What one node's `vmm` is started with: a pure translation from the spec, the image and
//! the run directory to the `vmm` command line, so it is unit-tested without a VM.

use std::ffi::OsString;
use std::path::PathBuf;

use super::error::{ClusterError, Result};
use super::run_dir::NodePaths;
use crate::spec::NodeSpec;

/// The files of a guest image a node boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    /// Kernel (bzImage or ELF vmlinux).
    pub kernel: PathBuf,
    /// Initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// Root disk to copy per node, if the image has one.
    pub rootfs: Option<PathBuf>,
    /// The image's kernel command line; node parameters are appended.
    pub cmdline: String,
}

impl NodeImage {
    /// The files of a built image: the uncompressed ELF kernel when the image ships one
    /// (no decompression, which is slow under nested emulation), else the bzImage.
    pub fn from_image_dir(dir: &crate::image::ImageDir) -> NodeImage {
        NodeImage {
            kernel: dir.vmlinux().unwrap_or_else(|| dir.kernel()),
            initrd: Some(dir.initrd()),
            rootfs: dir.rootfs(),
            cmdline: dir.cmdline().to_string(),
        }
    }
}

/// A disk as handed to `vmm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDisk {
    /// The node's own copy.
    pub path: PathBuf,
    /// Serial the guest sees; `vmm` numbers unnamed disks itself.
    pub id: Option<String>,
    /// Size to create for data disks; `None` for the root disk (copied from the image).
    pub create_size: Option<u64>,
    /// Filesystem to make on a new data disk (labelled with `id`).
    pub format: Option<crate::spec::DiskFormat>,
    /// A volatile write cache in the `vmm` (`cache=writeback`): a power cut loses what the
    /// guest has not flushed.
    pub writeback: bool,
}

/// A network interface as handed to `vmm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Network name.
    pub network: String,
    /// The network's switch socket.
    pub switch: PathBuf,
    /// Deterministic MAC ([`mac_for`]).
    pub mac: [u8; 6],
    /// Address with prefix (`10.0.0.11/24`).
    pub address: String,
}

/// Everything needed to start one node's `vmm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLaunch {
    /// Node name (also the guest hostname).
    pub name: String,
    /// Position of the node in its cluster: makes MAC addresses and the vsock CID unique.
    pub index: u16,
    /// Kernel.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Full kernel command line (image's + `kiln.hostname=` + `kiln.ip=`).
    pub cmdline: String,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u8,
    /// Disks in guest order (root first when the image has one).
    pub disks: Vec<LaunchDisk>,
    /// Interfaces in guest order (eth0 first).
    pub nics: Vec<Nic>,
}

/// The deterministic MAC of interface `nic` of the node at `index`: locally administered
/// unicast `02:6b:69:II:II:NN` ("ki"), unique within a cluster.
pub fn mac_for(index: u16, nic: u8) -> [u8; 6] {
    let [hi, lo] = index.to_be_bytes();
    [0x02, 0x6b, 0x69, hi, lo, nic]
}

/// The vsock CID of the node at `index` (CIDs 0-2 are reserved).
pub fn cid_for(index: u16) -> u64 {
    3 + u64::from(index)
}

/// The image's command line plus the node's hostname and first address for the agent.
pub fn guest_cmdline(image_cmdline: &str, name: &str, address: Option<&str>) -> String {
    let mut line = image_cmdline.trim().to_string();
    let mut push = |p: String| {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&p);
    };
    push(format!("kiln.hostname={name}"));
    if let Some(addr) = address {
        push(format!("kiln.ip={addr}"));
    }
    line
}

impl NodeLaunch {
    /// Translates a node of a validated spec. `switch_of` gives each network's switch socket.
    pub fn from_spec(
        spec: &NodeSpec,
        index: u16,
        image: &NodeImage,
        paths: &NodePaths,
        switch_of: impl Fn(&str) -> PathBuf,
    ) -> Result<NodeLaunch> {
        let bad = |reason: String| ClusterError::BadNode {
            node: spec.name.clone(),
            reason,
        };
        let cpus = u8::try_from(spec.cpus)
            .ok()
            .filter(|c| (1..=64).contains(c))
            .ok_or_else(|| bad(format!("cpus = {} is out of range; use 1 to 64", spec.cpus)))?;
        let mut disks = Vec::new();
        if image.rootfs.is_some() {
            disks.push(LaunchDisk {
                path: paths.root_disk.clone(),
                id: Some(ROOT_DISK.into()),
                create_size: None,
                format: None,
                writeback: false,
            });
        }
        for (i, d) in spec.disks.iter().enumerate() {
            let size = d
                .size_bytes()
                .map_err(|e| bad(format!("disks[{i}].size: {e}")))?;
            if d.name.as_ref().is_some_and(|n| n.len() > 20) {
                return Err(bad(format!(
                    "disks[{i}].name is longer than the 20 bytes a virtio-blk serial holds; shorten it"
                )));
            }
            disks.push(LaunchDisk {
                path: paths.data_disk(i),
                id: d.name.clone(),
                create_size: Some(size),
                format: d.format,
                writeback: d.writeback(),
            });
        }
        let nics = spec
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let nic = u8::try_from(i).map_err(|_| bad("more than 256 networks".into()))?;
                Ok(Nic {
                    network: n.network.clone(),
                    switch: switch_of(&n.network),
                    mac: mac_for(index, nic),
                    address: n.address.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cmdline = guest_cmdline(
            &image.cmdline,
            &spec.name,
            nics.first().map(|n| n.address.as_str()),
        );
        Ok(NodeLaunch {
            name: spec.name.clone(),
            index,
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            cmdline,
            memory_mib: spec.memory,
            cpus,
            disks,
            nics,
        })
    }

    /// The `vmm` arguments for this node with its files in `paths`.
    pub fn vmm_args(&self, paths: &NodePaths) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut opt = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        opt("--kernel", self.kernel.clone().into());
        if let Some(initrd) = &self.initrd {
            opt("--initrd", initrd.clone().into());
        }
        opt("--cmdline", self.cmdline.clone().into());
        opt("--mem", self.memory_mib.to_string().into());
        opt("--cpus", self.cpus.to_string().into());
        for d in &self.disks {
            let mut v = d.path.clone().into_os_string();
            if let Some(id) = &d.id {
                v.push(format!(",id={id}"));
            }
            if d.writeback {
                v.push(",cache=writeback");
            }
            opt("--disk", v);
        }
        for n in &self.nics {
            let mut v = OsString::from("switch=");
            v.push(&n.switch);
            v.push(format!(",mac={}", vmm_mac(&n.mac)));
            opt("--net", v);
        }
        let mut vsock = OsString::from(format!("cid={},uds=", cid_for(self.index)));
        vsock.push(&paths.vsock_sock);
        opt("--vsock", vsock);
        opt("--serial", paths.serial_log.clone().into());
        opt("--api-sock", paths.api_sock.clone().into());
        opt("--fault-log", paths.fault_log.clone().into());
        args
    }

    /// The `vmm` index of the disk a spec names `name` (`root`: the image's root disk):
    /// its position in `--disk` order, which counts the root disk first when there is one.
    pub fn disk_index(&self, name: &str) -> Option<usize> {
        self.disks
            .iter()
            .position(|d| d.id.as_deref() == Some(name))
    }

    /// The `vmm` index of the node's NIC on `network` (its position in `--net` order).
    pub fn nic_index(&self, network: &str) -> Option<usize> {
        self.nics.iter().position(|n| n.network == network)
    }

    /// How a `vmm` device name of the fault log (`disk1`, `nic0`) reads in spec terms
    /// (`data (disk1)`, `net0 (nic0)`); other names as they are.
    pub fn device_label(&self, device: &str) -> String {
        let index = |prefix: &str| {
            device
                .strip_prefix(prefix)
                .and_then(|i| i.parse::<usize>().ok())
        };
        let name = if let Some(i) = index("disk") {
            self.disks.get(i).and_then(|d| d.id.clone())
        } else if let Some(i) = index("nic") {
            self.nics.get(i).map(|n| n.network.clone())
        } else {
            None
        };
        match name {
            Some(n) => format!("{n} ({device})"),
            None => device.to_string(),
        }
    }
}

/// The serial (and the name `fault` steps use) of a node's root disk.
pub const ROOT_DISK: &str = "root";

fn vmm_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
