//! Harness for end-to-end tests: decides where real Linux guests can run, re-runs a test
//! inside the emulated KVM host when this machine's /dev/kvm cannot boot Linux, and starts
//! Kiln's `vmm` binary with a guest image.

#![allow(dead_code)] // each test binary uses its own subset

pub mod guest;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use orchestrator::host_kind::kvm_can_boot_linux;

/// Where this test's guests run.
pub enum Placement {
    /// This process can boot Linux guests on /dev/kvm (hardware KVM, or we are inside the
    /// emulated host already).
    Here,
    /// Re-run this test inside the emulated KVM host.
    EmulatedHost,
}

/// Prints past libtest's capture, so a skip or a figure is never silent.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

const INSIDE: &str = "KILN_E2E_INSIDE";

/// Serializes end-to-end tests within a test binary: each boots real kernels (often inside an
/// emulated host that needs a whole core), so running two at once only makes both slower.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decides where guests run. A host that can run neither way fails the test with the reason
/// and the fix (it never skips silently).
pub fn placement() -> Placement {
    if std::env::var(INSIDE).as_deref() == Ok("1") {
        return Placement::Here;
    }
    let kind = kvm_can_boot_linux();
    if kind.can_boot_linux() {
        say(&format!("e2e: guests run directly: {}", kind.reason()));
        return Placement::Here;
    }
    if let Err(e) = orchestrator::emulated_host::qemu::find_qemu() {
        panic!(
            "e2e: this host cannot boot Linux guests on /dev/kvm ({}) and the emulated KVM host \
             cannot start: {e}",
            kind.reason()
        );
    }
    say(&format!(
        "e2e: {}; running this test inside the emulated KVM host",
        kind.reason()
    ));
    Placement::EmulatedHost
}

/// Runs `test` of the current test binary inside the emulated host, passing `env`, and
/// fails if it failed there.
pub fn rerun_in_emulated_host(test: &str, env: &[(&str, String)]) {
    let exe = std::env::current_exe().expect("test executable path");
    let mut argv = vec!["env".to_string(), format!("{INSIDE}=1")];
    argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    argv.extend([
        exe.display().to_string(),
        "--exact".into(),
        test.into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]);
    let mut opts = orchestrator::emulated_host::RunOptions::new(argv).expect("current directory");
    opts.timeout = Some(Duration::from_secs(900));
    // One vCPU, as for cluster runs (`runner::placement::emulated_host_cpus`): nested guests
    // on a multi-vCPU TCG host stall or triple-fault at random; on one they are reliable,
    // two-vCPU guests included.
    opts.cpus = orchestrator::runner::placement::emulated_host_cpus();
    let out = orchestrator::emulated_host::run(&opts).expect("emulated KVM host runs");
    if let Some(boot) = out.boot_seconds {
        say(&format!(
            "e2e: emulated host booted in {boot:.1} s; whole run {:.1} s",
            out.qemu_wall.as_secs_f64()
        ));
    }
    assert_eq!(out.status, 0, "{test} failed inside the emulated KVM host");
}

/// The workspace's `vmm` binary, brought up to date before going into the emulated host
/// (where compiling would be slow; inside, the binary is used as it is).
pub fn vmm_binary() -> PathBuf {
    let profile_dir = orchestrator::vmm_binary::profile_dir();
    if std::env::var(INSIDE).as_deref() == Ok("1") {
        return profile_dir.join("vmm");
    }
    orchestrator::vmm_binary::build_vmm(&profile_dir)
}

/// Prepares an end-to-end test that boots `image_name`: returns the image to boot here, or
/// `None` when the test was re-run inside the emulated KVM host instead (and passed there).
pub fn prepare(test: &str, image_name: &str) -> Option<orchestrator::image::ImageDir> {
    const IMAGE: &str = "KILN_E2E_IMAGE";
    if let Placement::EmulatedHost = placement() {
        vmm_binary();
        let img = image(image_name);
        rerun_in_emulated_host(test, &[(IMAGE, img.path.display().to_string())]);
        return None;
    }
    Some(match std::env::var(IMAGE) {
        Ok(dir) => orchestrator::image::ImageDir::open(dir.as_ref())
            .unwrap_or_else(|e| panic!("{IMAGE}={dir}: {e}")),
        Err(_) => image(image_name),
    })
}

/// A single-threaded async runtime for the agent client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Builds (or finds in the cache) a guest image and says how long it took.
pub fn image(name: &str) -> orchestrator::image::ImageDir {
    let t = std::time::Instant::now();
    let img = orchestrator::image::build(name)
        .unwrap_or_else(|e| panic!("image build {name} failed: {e}"));
    say(&format!(
        "e2e: image {name}: {} in {:.1} s ({})",
        img.path.display(),
        t.elapsed().as_secs_f64(),
        if img.cache_hit { "cache hit" } else { "built" }
    ));
    img
}
