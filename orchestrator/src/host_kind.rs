//! Can this machine's /dev/kvm boot a stock Linux guest?

use std::path::Path;

/// What kind of KVM this host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// Hardware virtualization (VMX or SVM) with a usable /dev/kvm: boot guests directly.
    HardwareKvm {
        /// Why we think so.
        reason: String,
    },
    /// PVM (software "Pagetable-based Virtual Machine"): stock kernels cannot
    /// boot; run inside the emulated KVM host.
    Pvm {
        /// Why we think so.
        reason: String,
    },
    /// No usable KVM: run inside the emulated KVM host.
    NoKvm {
        /// Why we think so.
        reason: String,
    },
}

impl HostKind {
    /// Whether stock Linux guests can be booted on /dev/kvm here.
    pub fn can_boot_linux(&self) -> bool {
        matches!(self, HostKind::HardwareKvm { .. })
    }

    /// The explanation.
    pub fn reason(&self) -> &str {
        match self {
            HostKind::HardwareKvm { reason }
            | HostKind::Pvm { reason }
            | HostKind::NoKvm { reason } => reason,
        }
    }
}

/// Inspect this machine: /proc/cpuinfo, /sys/module/kvm_pvm and /dev/kvm.
pub fn kvm_can_boot_linux() -> HostKind {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let pvm_loaded = Path::new("/sys/module/kvm_pvm").exists();
    let kvm_open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| e.to_string());
    classify(&cpuinfo, pvm_loaded, kvm_open)
}

/// The decision, from the facts (pure, for tests).
pub fn classify(cpuinfo: &str, pvm_loaded: bool, kvm_open: Result<(), String>) -> HostKind {
    if pvm_loaded {
        return HostKind::Pvm {
            reason: "/sys/module/kvm_pvm exists: /dev/kvm is PVM, which cannot boot stock kernels"
                .into(),
        };
    }
    let flag = cpu_virt_flag(cpuinfo);
    match (flag, kvm_open) {
        (Some(flag), Ok(())) => HostKind::HardwareKvm {
            reason: format!("CPU has {flag} and /dev/kvm opens read-write"),
        },
        (Some(flag), Err(e)) => HostKind::NoKvm {
            reason: format!("CPU has {flag} but /dev/kvm is not usable: {e}"),
        },
        (None, Ok(())) => HostKind::NoKvm {
            reason:
                "/dev/kvm opens but /proc/cpuinfo shows neither vmx nor svm (unknown KVM flavour)"
                    .into(),
        },
        (None, Err(e)) => HostKind::NoKvm {
            reason: format!("no vmx/svm in /proc/cpuinfo and /dev/kvm is not usable: {e}"),
        },
    }
}

/// `vmx` or `svm` if any CPU's `flags` line lists it.
fn cpu_virt_flag(cpuinfo: &str) -> Option<&'static str> {
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim() != "flags" {
            continue;
        }
        for flag in value.split_whitespace() {
            match flag {
                "vmx" => return Some("vmx"),
                "svm" => return Some("svm"),
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVM: &str = "processor\t: 0\nflags\t\t: fpu vme svm npt lm\n";
    const PLAIN: &str = "processor\t: 0\nflags\t\t: fpu vme lm hypervisor\n";

    #[test]
    fn hardware_kvm_needs_flag_and_device() {
        let kind = classify(SVM, false, Ok(()));
        assert!(kind.can_boot_linux(), "{kind:?}");
        assert!(kind.reason().contains("svm"));
        let vmx = "flags : a vmx b\n";
        assert!(classify(vmx, false, Ok(())).reason().contains("vmx"));
    }

    #[test]
    fn pvm_wins_over_everything() {
        let kind = classify(SVM, true, Ok(()));
        assert!(matches!(kind, HostKind::Pvm { .. }));
        assert!(!kind.can_boot_linux());
    }

    #[test]
    fn missing_pieces_mean_no_kvm() {
        let no_dev = classify(SVM, false, Err("No such file or directory".into()));
        assert!(matches!(no_dev, HostKind::NoKvm { .. }));
        assert!(no_dev.reason().contains("No such file"));
        assert!(matches!(
            classify(PLAIN, false, Ok(())),
            HostKind::NoKvm { .. }
        ));
        // A flag name inside another word does not count.
        assert!(matches!(
            classify("flags : svmx\n", false, Ok(())),
            HostKind::NoKvm { .. }
        ));
    }
}
