//! Root filesystems: mmdebstrap (unshare mode, tarball output) + `mkfs.ext4 -d`.
//!
//! No mounts: mmdebstrap installs inside a user namespace and writes a tarball
//! with the right owners; it is unpacked (keeping owners: root, because
//! bookworm's mke2fs 1.47.0 cannot read tarballs) and mke2fs fills the ext4
//! image from the tree.

use super::agent_bin::{NET_UNIT, NET_UNIT_NAME, SERVICE_NAME, SERVICE_UNIT};
use super::error::ImageError;
use super::recipe::{RootfsFile, RootfsSpec};
use crate::emulated_host::script::shell_quote;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// The mmdebstrap arguments for `spec`, writing `tarball`.
///
/// `modules` (the kernel's `lib/modules/<release>`) is copied in and indexed
/// with depmod, so systemd can load further modules (nfsd, ...) by name.
pub fn mmdebstrap_args(
    spec: &RootfsSpec,
    modules: &Path,
    release: &str,
    tarball: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--mode=unshare".into(),
        "--variant=apt".into(),
        "--format=tar".into(),
        format!("--include={}", spec.include.join(",")),
    ];
    for excluded in [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/locale/*",
    ] {
        args.push(format!("--dpkgopt=path-exclude={excluded}"));
    }
    args.push("--customize-hook=echo kiln-node > \"$1/etc/hostname\"".into());
    args.push("--customize-hook=mkdir -p \"$1/lib/modules\"".into());
    // Special hooks split on whitespace and take no quoting: `build` refuses
    // module paths with whitespace.
    args.push(format!(
        "--customize-hook=copy-in {} /lib/modules",
        modules.display()
    ));
    args.push(format!(
        "--customize-hook=chroot \"$1\" depmod {}",
        shell_quote(release)
    ));
    // A test machine: root logs in on the console without a password.
    args.push("--customize-hook=chroot \"$1\" passwd -d root".into());
    args.push(spec.suite.clone());
    args.push(tarball.display().to_string());
    args.push(spec.mirror.clone());
    args
}

/// Build `out` (ext4) for `spec`, with the guest agent `agent` installed as a
/// systemd service if given; `on_status` gets mmdebstrap's progress lines.
pub fn build(
    spec: &RootfsSpec,
    modules: &Path,
    release: &str,
    work: &Path,
    agent: Option<&Path>,
    out: &Path,
    mut on_status: impl FnMut(&str),
) -> Result<(), ImageError> {
    if modules.display().to_string().contains(char::is_whitespace) {
        return Err(ImageError::BadRecipe {
            name: modules.display().to_string(),
            reason: "mmdebstrap cannot copy in a path with whitespace: use a cache directory without spaces (KILN_CACHE_DIR)".into(),
        });
    }
    let tarball = work.join("rootfs.tar");
    let args = mmdebstrap_args(spec, modules, release, &tarball);
    let tool = |command: &str, detail: String, hint: &str| ImageError::Tool {
        command: command.to_string(),
        detail,
        hint: hint.to_string(),
    };
    let mut child = Command::new("mmdebstrap")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            tool(
                "mmdebstrap",
                e.to_string(),
                "install it: apt-get install mmdebstrap",
            )
        })?;
    let mut last_lines = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            on_status(&line);
            last_lines.push(line);
            if last_lines.len() > 20 {
                last_lines.remove(0);
            }
        }
    }
    let status = child.wait().map_err(|e| {
        tool(
            "mmdebstrap",
            e.to_string(),
            "install it: apt-get install mmdebstrap",
        )
    })?;
    if !status.success() {
        return Err(tool(
            "mmdebstrap",
            last_lines.join("\n"),
            "check the package names in the recipe and that unprivileged user namespaces are allowed",
        ));
    }
    // bookworm's mke2fs (1.47.0) cannot read a tarball: unpack it, keeping
    // owners (which needs root; the recipe fails clearly otherwise).
    let tree = work.join("rootfs");
    std::fs::create_dir_all(&tree)
        .map_err(ImageError::io("creating the rootfs directory", &tree))?;
    let unpacked = Command::new("tar")
        .args(["--numeric-owner", "--same-owner", "-xpf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| tool("tar", e.to_string(), "install tar"))?;
    if !unpacked.status.success() {
        return Err(tool(
            "tar -xpf rootfs.tar",
            String::from_utf8_lossy(&unpacked.stderr).trim().to_string(),
            "building a root filesystem keeps file owners, which needs root (or e2fsprogs >= 1.47.1)",
        ));
    }
    if let Some(agent) = agent {
        install_agent(&tree, agent)?;
        keep_tmp_at_boot(&tree)?;
    }
    disable_units(&tree, &spec.disable)?;
    mask_units(&tree, &spec.mask)?;
    mask_generators(&tree, &spec.mask_generators)?;
    write_files(&tree, &spec.files)?;
    let output = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-L", "kiln-root", "-d"])
        .arg(&tree)
        .arg(out)
        .arg(format!("{}M", spec.size_mib))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| tool("mkfs.ext4", e.to_string(), "install e2fsprogs"))?;
    if !output.status.success() {
        return Err(tool(
            "mkfs.ext4 -d",
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
            "raise size_mib in the recipe if the disk is full",
        ));
    }
    std::fs::remove_dir_all(&tree)
        .map_err(ImageError::io("removing the rootfs directory", &tree))?;
    std::fs::remove_file(&tarball).map_err(ImageError::io("removing the rootfs tarball", &tarball))
}

/// Where the agent goes in a root filesystem (the unit's `ExecStart`).
pub const ROOTFS_AGENT_PATH: &str = "usr/local/bin/kiln-agent";

/// Install the agent and its unit into the unpacked tree `root`, enabled in
/// `sysinit.target` (what `systemctl enable` would link, without a chroot).
pub fn install_agent(root: &Path, agent: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let bin = root.join(ROOTFS_AGENT_PATH);
    let units = root.join("etc/systemd/system");
    let wants = units.join("sysinit.target.wants");
    for dir in [bin.parent().unwrap_or(root), &wants] {
        std::fs::create_dir_all(dir).map_err(ImageError::io("creating a rootfs directory", dir))?;
    }
    std::fs::copy(agent, &bin).map_err(ImageError::io("installing the guest agent", &bin))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io("installing the guest agent", &bin))?;
    let unit = units.join(SERVICE_NAME);
    std::fs::write(&unit, SERVICE_UNIT).map_err(ImageError::io("writing the agent unit", &unit))?;
    enable_unit(&units, "sysinit.target", SERVICE_NAME)?;
    let net = units.join(NET_UNIT_NAME);
    std::fs::write(&net, NET_UNIT).map_err(ImageError::io("writing the network unit", &net))?;
    enable_unit(&units, "multi-user.target", NET_UNIT_NAME)
}

/// Links `units/<target>.wants/<name>` to `/etc/systemd/system/<name>`.
fn enable_unit(units: &Path, target: &str, name: &str) -> Result<(), ImageError> {
    let wants = units.join(format!("{target}.wants"));
    std::fs::create_dir_all(&wants)
        .map_err(ImageError::io("creating a rootfs directory", &wants))?;
    let link = wants.join(name);
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("enabling a unit", &link)(e)),
    }
    std::os::unix::fs::symlink(format!("/etc/systemd/system/{name}"), &link)
        .map_err(ImageError::io("enabling a unit", &link))
}

/// Removes the `*.wants/` links that enable each of `units` in the tree `root`
/// (what `systemctl disable` does, without a chroot). A unit that is not enabled
/// is no error: package scripts differ between releases.
pub fn disable_units(root: &Path, units: &[String]) -> Result<(), ImageError> {
    let system = root.join("etc/systemd/system");
    let Ok(dirs) = std::fs::read_dir(&system) else {
        return Ok(());
    };
    let wants: Vec<_> = dirs
        .filter_map(Result::ok)
        .map(|d| d.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wants"))
        .collect();
    for unit in units {
        let file = unit_file_name(unit);
        for dir in &wants {
            let link = dir.join(&file);
            match std::fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("disabling a unit", &link)(e)),
            }
        }
    }
    Ok(())
}

/// Links each of `units` to `/dev/null` in `/etc/systemd/system` (what `systemctl mask`
/// does, without a chroot): the unit never starts, not even as another's dependency.
pub fn mask_units(root: &Path, units: &[String]) -> Result<(), ImageError> {
    let names: Vec<String> = units.iter().map(|u| unit_file_name(u)).collect();
    link_to_dev_null(&root.join("etc/systemd/system"), &names)
}

/// Masks systemd generators by name (what a `/dev/null` link of the same name in
/// `/etc/systemd/system-generators` does).
pub fn mask_generators(root: &Path, generators: &[String]) -> Result<(), ImageError> {
    link_to_dev_null(&root.join("etc/systemd/system-generators"), generators)
}

fn link_to_dev_null(dir: &Path, names: &[String]) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir).map_err(ImageError::io("creating a rootfs directory", dir))?;
    for name in names {
        let link = dir.join(name);
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("masking a unit", &link)(e)),
        }
        std::os::unix::fs::symlink("/dev/null", &link)
            .map_err(ImageError::io("masking a unit", &link))?;
    }
    Ok(())
}

/// Writes the recipe's files into the tree `root` (paths were checked when the recipe was
/// parsed: absolute, no `..`).
pub fn write_files(root: &Path, files: &[RootfsFile]) -> Result<(), ImageError> {
    for file in files {
        let path = root.join(file.path.trim_start_matches('/'));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(ImageError::io("creating a rootfs directory", dir))?;
        }
        std::fs::write(&path, &file.text)
            .map_err(ImageError::io("writing a rootfs file", &path))?;
    }
    Ok(())
}

/// `etcd` -> `etcd.service`; names with a type suffix stay as they are.
fn unit_file_name(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// systemd-tmpfiles empties `/tmp` at boot (Debian's `D /tmp`); the agent answers
/// before that runs, so a file put into `/tmp` early would vanish. Each run boots a
/// fresh copy of the disk, so the clean-up has nothing to do: turn it into a plain
/// `d` (create, never empty) rather than delay the agent behind it (measured: ~17 s
/// later under nested KVM).
pub fn keep_tmp_at_boot(root: &Path) -> Result<(), ImageError> {
    let dir = root.join("etc/tmpfiles.d");
    std::fs::create_dir_all(&dir).map_err(ImageError::io("creating a rootfs directory", &dir))?;
    let conf = dir.join("tmp.conf");
    std::fs::write(&conf, TMP_CONF).map_err(ImageError::io("writing tmpfiles.d/tmp.conf", &conf))
}

/// Overrides `/usr/lib/tmpfiles.d/tmp.conf` (same name in /etc wins); Debian's holds
/// only `D /tmp 1777 root root -` and a commented-out `/var/tmp` line.
const TMP_CONF: &str =
    "# Kiln: the agent may put files into /tmp before this runs; do not empty it at boot.\n\
d /tmp 1777 root root -\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmdebstrap_is_unprivileged_and_includes_everything() {
        let spec = RootfsSpec {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            include: vec!["systemd".into(), "nginx".into()],
            size_mib: 512,
            disable: vec![],
            mask: vec![],
            mask_generators: vec![],
            files: vec![],
        };
        let args = mmdebstrap_args(
            &spec,
            Path::new("/c/k's/lib/modules/6.1"),
            "6.1'x",
            Path::new("/w/r.tar"),
        );
        assert_eq!(args[0], "--mode=unshare");
        assert!(args.contains(&"--include=systemd,nginx".to_string()));
        let copy_in = "--customize-hook=copy-in /c/k's/lib/modules/6.1 /lib/modules";
        assert!(args.contains(&copy_in.to_string()), "{args:?}");
        let depmod = r#"--customize-hook=chroot "$1" depmod '6.1'\''x'"#;
        assert!(args.contains(&depmod.to_string()), "{args:?}");
        assert_eq!(
            &args[args.len() - 3..],
            ["bookworm", "/w/r.tar", "http://deb.debian.org/debian"]
        );
    }

    #[test]
    fn agent_is_installed_and_enabled_early() {
        let root = tempfile::tempdir().unwrap();
        let agent = root.path().join("agent-bin");
        std::fs::write(&agent, b"\x7fELF agent").unwrap();
        install_agent(root.path(), &agent).unwrap();
        // Twice: a rebuild over the same tree must not fail on the existing link.
        install_agent(root.path(), &agent).unwrap();
        let bin = root.path().join(ROOTFS_AGENT_PATH);
        assert_eq!(std::fs::read(&bin).unwrap(), b"\x7fELF agent");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let unit =
            std::fs::read_to_string(root.path().join("etc/systemd/system/kiln-agent.service"))
                .unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/kiln-agent serve --vsock 10700"));
        assert!(unit.contains("DefaultDependencies=no"));
        keep_tmp_at_boot(root.path()).unwrap();
        let tmp = std::fs::read_to_string(root.path().join("etc/tmpfiles.d/tmp.conf")).unwrap();
        assert!(tmp.lines().any(|l| l == "d /tmp 1777 root root -"), "{tmp}");
        assert!(!tmp.lines().any(|l| l.starts_with("D ")), "{tmp}");
        let link = root
            .path()
            .join("etc/systemd/system/sysinit.target.wants/kiln-agent.service");
        assert_eq!(
            std::fs::read_link(link).unwrap(),
            Path::new("/etc/systemd/system/kiln-agent.service")
        );
        let net = root
            .path()
            .join("etc/systemd/system/multi-user.target.wants/kiln-net.service");
        assert_eq!(
            std::fs::read_link(net).unwrap(),
            Path::new("/etc/systemd/system/kiln-net.service")
        );
    }

    #[test]
    fn disabling_removes_every_wants_link_and_tolerates_absent_units() {
        let root = tempfile::tempdir().unwrap();
        let system = root.path().join("etc/systemd/system");
        for (dir, unit) in [
            ("multi-user.target.wants", "etcd.service"),
            ("multi-user.target.wants", "nginx.service"),
            ("remote-fs.target.wants", "etcd.service"),
            ("sockets.target.wants", "rpcbind.socket"),
        ] {
            std::fs::create_dir_all(system.join(dir)).unwrap();
            std::os::unix::fs::symlink("/lib/systemd/system/x", system.join(dir).join(unit))
                .unwrap();
        }
        disable_units(
            root.path(),
            &["etcd".into(), "rpcbind.socket".into(), "haproxy".into()],
        )
        .unwrap();
        let left = |dir: &str, unit: &str| system.join(dir).join(unit).symlink_metadata().is_ok();
        assert!(!left("multi-user.target.wants", "etcd.service"));
        assert!(!left("remote-fs.target.wants", "etcd.service"));
        assert!(!left("sockets.target.wants", "rpcbind.socket"));
        assert!(left("multi-user.target.wants", "nginx.service"));
    }

    #[test]
    fn masked_units_point_at_dev_null_and_files_are_written() {
        let root = tempfile::tempdir().unwrap();
        let system = root.path().join("etc/systemd/system");
        std::fs::create_dir_all(&system).unwrap();
        std::fs::write(system.join("fstrim.timer"), "[Timer]\n").unwrap();
        mask_units(root.path(), &["fstrim.timer".into(), "e2scrub_reap".into()]).unwrap();
        mask_generators(root.path(), &["systemd-sysv-generator".into()]).unwrap();
        assert_eq!(
            std::fs::read_link(
                root.path()
                    .join("etc/systemd/system-generators/systemd-sysv-generator")
            )
            .unwrap(),
            Path::new("/dev/null")
        );
        for unit in ["fstrim.timer", "e2scrub_reap.service"] {
            assert_eq!(
                std::fs::read_link(system.join(unit)).unwrap(),
                Path::new("/dev/null"),
                "{unit}"
            );
        }
        write_files(
            root.path(),
            &[RootfsFile {
                path: "/etc/systemd/system.conf.d/kiln.conf".into(),
                text: "[Manager]\nDefaultTimeoutStartSec=infinity\n".into(),
            }],
        )
        .unwrap();
        let conf = std::fs::read_to_string(root.path().join("etc/systemd/system.conf.d/kiln.conf"))
            .unwrap();
        assert!(conf.contains("DefaultTimeoutStartSec=infinity"));
    }
}
