//! Finding QEMU and building its command line for the emulated KVM host.

use super::shares::Share;
use super::EmulatedHostError;
use std::path::{Path, PathBuf};

/// The QEMU binary: `$KILN_QEMU`, else `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Result<PathBuf, EmulatedHostError> {
    if let Some(explicit) = std::env::var_os("KILN_QEMU").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(EmulatedHostError::QemuMissing(format!(
                "KILN_QEMU={} is not a file",
                path.display()
            )))
        };
    }
    crate::programs::find_on_path("qemu-system-x86_64")
        .ok_or_else(|| EmulatedHostError::QemuMissing("qemu-system-x86_64 is not on PATH".into()))
}

/// The host's TSC rate in kHz, from the first `cpu MHz` line of /proc/cpuinfo.
///
/// TCG's guest TSC runs at the host TSC rate. Telling the guest kernel
/// (`tsc_early_khz=`) matters: when the machine is busy, its PIT calibration
/// fails under TCG, the TSC is marked unusable and the boot hangs with no timer.
pub fn host_tsc_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split_once(':')?.1.trim().parse().ok()?;
    (mhz > 1.0).then(|| (mhz * 1000.0).round() as u64)
}

/// QEMU option values escape `,` as `,,`.
pub fn escape_opt(value: &Path) -> String {
    value.display().to_string().replace(',', ",,")
}

/// What the QEMU command line is made of.
pub struct QemuPlan<'a> {
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// Kernel image.
    pub kernel: &'a Path,
    /// Initramfs.
    pub initrd: &'a Path,
    /// Kernel command line.
    pub cmdline: &'a str,
    /// The run directory (9p tag `kilnrun`).
    pub run_dir: &'a Path,
    /// Read-write shares.
    pub shares: &'a [Share],
    /// Unix socket QEMU connects to for the command's stdout.
    pub stdout_socket: &'a Path,
    /// Same for stderr.
    pub stderr_socket: &'a Path,
    /// Forward `127.0.0.1:<port>` to `<addr>` inside over a user-mode NIC.
    pub forward_port: Option<(u16, &'a str)>,
}

/// The arguments (after the program name).
///
/// microvm + TCG multi-threaded + qemu64 with SVM and nested paging is the
/// fastest measured setup (PLATFORM.md); `rtc=on` avoids the kernel's 5 s wait
/// for a missing CMOS clock. All devices are virtio-mmio, which microvm
/// describes to the guest through ACPI.
pub fn qemu_args(plan: &QemuPlan<'_>) -> Vec<String> {
    let mut args: Vec<String> = [
        "-accel",
        "tcg,thread=multi",
        "-M",
        "microvm,rtc=on",
        "-cpu",
        "qemu64,+svm,+npt",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-smp".into(),
        plan.cpus.to_string(),
        "-m".into(),
        plan.mem_mib.to_string(),
    ]);
    args.extend([
        "-kernel".into(),
        escape_opt(plan.kernel),
        "-initrd".into(),
        escape_opt(plan.initrd),
    ]);
    args.extend(["-append".into(), plan.cmdline.to_string()]);

    let mut ninep = |id: &str, path: &Path, readonly: bool| {
        let ro = if readonly { ",readonly=on" } else { "" };
        args.push("-fsdev".into());
        args.push(format!(
            "local,id={id},path={},security_model=none,multidevs=remap{ro}",
            escape_opt(path)
        ));
        args.push("-device".into());
        args.push(format!("virtio-9p-device,fsdev={id},mount_tag={id}"));
    };
    ninep("kilnrun", plan.run_dir, false);
    ninep("hostroot", Path::new("/"), true);
    for share in plan.shares {
        ninep(&share.tag, &share.path, false);
    }

    if let Some((port, inside)) = plan.forward_port {
        // restrict=on: the guest reaches nothing outside; only the forwarded port goes in.
        args.extend([
            "-netdev".into(),
            format!("user,id=kilnnet,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{inside}"),
            "-device".into(),
            "virtio-net-device,netdev=kilnnet".into(),
        ]);
    }
    args.extend(["-device".into(), "virtio-serial-device,id=vser".into()]);
    for (id, socket, name) in [
        ("kout", plan.stdout_socket, "kiln.stdout"),
        ("kerr", plan.stderr_socket, "kiln.stderr"),
    ] {
        args.push("-chardev".into());
        args.push(format!("socket,id={id},path={}", escape_opt(socket)));
        args.push("-device".into());
        args.push(format!(
            "virtserialport,bus=vser.0,chardev={id},name={name}"
        ));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_rate_from_cpuinfo() {
        let cpuinfo =
            "processor\t: 0\ncpu MHz\t\t: 2596.142\ncache size\t: 512 KB\ncpu MHz\t\t: 1.0\n";
        assert_eq!(host_tsc_khz(cpuinfo), Some(2_596_142));
        assert_eq!(host_tsc_khz("processor : 0\n"), None);
        assert_eq!(host_tsc_khz("cpu MHz : fast\n"), None);
    }

    #[test]
    fn args_contain_shares_ports_and_escaping() {
        let shares = vec![Share {
            tag: "share0".into(),
            path: PathBuf::from("/work/a,b"),
        }];
        let plan = QemuPlan {
            cpus: 2,
            mem_mib: 3072,
            kernel: Path::new("/c/vmlinuz"),
            initrd: Path::new("/c/initrd.img"),
            cmdline: "console=ttyS0 quiet",
            run_dir: Path::new("/c/run/1"),
            shares: &shares,
            stdout_socket: Path::new("/tmp/s/out"),
            stderr_socket: Path::new("/tmp/s/err"),
            forward_port: None,
        };
        let args = qemu_args(&plan).join(" ");
        assert!(!args.contains("-netdev"), "no network unless asked: {args}");
        let forwarded = QemuPlan {
            forward_port: Some((40123, "10.0.2.15:7070")),
            ..plan
        };
        let with_net = qemu_args(&forwarded).join(" ");
        assert!(
            with_net
                .contains("user,id=kilnnet,restrict=on,hostfwd=tcp:127.0.0.1:40123-10.0.2.15:7070"),
            "{with_net}"
        );
        assert!(args.contains("-M microvm,rtc=on"), "{args}");
        assert!(args.contains("-smp 2 -m 3072"), "{args}");
        assert!(
            args.contains("path=/work/a,,b,security_model=none"),
            "{args}"
        );
        assert!(
            args.contains("path=/,security_model=none,multidevs=remap,readonly=on"),
            "{args}"
        );
        assert!(
            args.contains("virtio-9p-device,fsdev=share0,mount_tag=share0"),
            "{args}"
        );
        assert!(
            args.contains("name=kiln.stdout") && args.contains("name=kiln.stderr"),
            "{args}"
        );
        assert!(args.contains("-append console=ttyS0 quiet"), "{args}");
    }
}
