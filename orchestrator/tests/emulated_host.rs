//! End-to-end: `orchestrator emulated-host run` boots the emulated KVM host in
//! QEMU, runs a command in the current directory and returns its status.
//! Needs qemu-system-x86_64 and the Debian archive (apt) for the host image.

use std::io::Write;
use std::process::Command;

fn orchestrator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
}

/// Why the emulated host cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if std::env::var_os("KILN_QEMU").is_some() {
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join("qemu-system-x86_64").is_file()) {
        None
    } else {
        Some("qemu-system-x86_64 is not on PATH (install: apt-get install qemu-system-x86)".into())
    }
}

/// Print past libtest's capture (it only captures the print macros), so a
/// skip is never silent.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

#[test]
fn command_runs_in_cwd_with_kvm_and_its_status_and_output_come_back() {
    if let Some(reason) = skip_reason() {
        say(&format!("SKIPPED emulated-host end-to-end test: {reason}"));
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("marker.txt"), "from the host\n").unwrap();
    let script = "test -e /dev/kvm && echo inside; cat marker.txt; \
                  echo to-stderr >&2; echo from the guest > made-inside.txt; \
                  grep -q svm /proc/cpuinfo && echo svm; exit 7";
    let output = orchestrator()
        .args(["emulated-host", "run", "--", "sh", "-c", script])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(7),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout, "inside\nfrom the host\nsvm\n", "stderr:\n{stderr}");
    assert!(stderr.contains("to-stderr"), "stderr:\n{stderr}");
    let made = std::fs::read_to_string(cwd.path().join("made-inside.txt")).unwrap();
    assert_eq!(made, "from the guest\n");
}

#[test]
fn missing_command_is_a_clear_error() {
    let output = orchestrator()
        .args(["emulated-host", "run"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CMD"), "{stderr}");
}

#[test]
fn unknown_image_is_a_clear_error() {
    let output = orchestrator()
        .args(["image", "build", "no-such-image"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown image `no-such-image`") && stderr.contains("debian-minimal"),
        "{stderr}"
    );
}

#[test]
fn a_run_over_its_timeout_is_stopped_with_a_clear_error() {
    if let Some(reason) = skip_reason() {
        say(&format!("SKIPPED emulated-host timeout test: {reason}"));
        return;
    }
    let output = orchestrator()
        .args([
            "emulated-host",
            "run",
            "--timeout",
            "1",
            "--",
            "sleep",
            "600",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ran longer than 1 s"), "{stderr}");
}
