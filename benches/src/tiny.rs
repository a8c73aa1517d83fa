//! Tiny hand-written guests run in-process through the `vmm` crate (they run on any /dev/kvm,
//! PVM included).

use std::path::Path;
use std::time::{Duration, Instant};

use vmm::config::SerialOutput;

use crate::{first_byte, ms};

/// A `vmm` configuration for the tiny guest `kernel` with `mem` MiB.
pub fn tiny_config(kernel: &Path, mem: u32, serial: SerialOutput) -> vmm::VmConfig {
    let mut cfg = vmm::VmConfig::new(kernel);
    cfg.mem_mib = mem;
    cfg.serial = serial;
    cfg
}

/// Cold boot to the first guest instruction, in-process: milliseconds from calling
/// `vmm::start` to the first byte the guest writes to its serial console (`log`, which must
/// not exist yet). The guest's first instructions write to COM1, so that byte marks them
/// running. The VM is shut down afterwards.
pub fn cold_boot_to_first_byte(kernel: &Path, mem: u32, log: &Path) -> Result<f64, String> {
    let t = Instant::now();
    let vm = vmm::start(tiny_config(
        kernel,
        mem,
        SerialOutput::File(log.to_path_buf()),
    ))
    .map_err(|e| e.to_string())?;
    let r = first_byte(log, t, Duration::from_secs(10));
    vm.handle().shutdown();
    vm.wait();
    r.map(ms)
}
