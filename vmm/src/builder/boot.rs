//! Booting: kernel and initrd into memory, command line, ACPI tables and zero page, and the
//! vCPUs with the boot vCPU at the kernel's 64-bit entry point.

use std::fs::File;

use kvm_ioctls::VcpuFd;
use linux_loader::cmdline::Cmdline;

use super::attach::io_err;
use super::machine::Machine;
use crate::arch::{self, MmioDeviceInfo};
use crate::config::VmConfig;
use crate::Error;

/// Loads the kernel and boot data and creates the vCPUs ready to enter it.
pub(crate) fn boot(
    m: &mut Machine,
    config: &VmConfig,
    mmio: &[MmioDeviceInfo],
) -> Result<Vec<VcpuFd>, Error> {
    let mem = &m.mem;
    let mut kernel = File::open(&config.kernel).map_err(|e| io_err("kernel", &config.kernel, e))?;
    let entry = arch::load_kernel(mem, &mut kernel)?;
    let initrd = match &config.initrd {
        Some(path) => {
            let mut f = File::open(path).map_err(|e| io_err("initrd", path, e))?;
            Some(arch::load_initrd(mem, &mut f)?)
        }
        None => None,
    };
    let mut cmdline = Cmdline::new(arch::layout::CMDLINE_MAX_SIZE)
        .map_err(|e| Error::Config(format!("cmdline: {e}")))?;
    cmdline
        .insert_str(&config.cmdline)
        .map_err(|e| Error::Config(format!("--cmdline: {e}")))?;
    for p in m.dm.cmdline_params() {
        cmdline
            .insert_str(&p)
            .map_err(|e| Error::Config(format!("--cmdline is too long to add devices: {e}")))?;
    }
    let rsdp = arch::create_acpi_tables(mem, config.cpus, mmio)?;
    arch::configure_system(mem, &cmdline, initrd, rsdp)?;

    let mut vcpus = Vec::new();
    for id in 0..config.cpus {
        let fd =
            m.vm.fd()
                .create_vcpu(u64::from(id))
                .map_err(|e| Error::Setup(format!("create vCPU {id}: {e}")))?;
        let cpuid = arch::cpuid::vcpu_cpuid(m.vm.kvm(), id, config.cpus)?;
        fd.set_cpuid2(&cpuid)
            .map_err(|e| Error::Setup(format!("set CPUID on vCPU {id}: {e}")))?;
        arch::regs::setup_vcpu_common(&fd)?;
        if id == 0 {
            arch::regs::setup_boot_vcpu(&fd, mem, entry)?;
        }
        vcpus.push(fd);
    }
    Ok(vcpus)
}
