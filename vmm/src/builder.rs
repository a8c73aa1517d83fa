//! Turns a [`VmConfig`] into a running VM: KVM VM, memory, kernel, devices, ACPI, vCPU threads,
//! the device event loop and the control API.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Instant;

use devices::virtio::VirtioDevice;
use linux_loader::cmdline::Cmdline;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::ApiServer;
use crate::config::{NetBackend, SerialOutput, VmConfig};
use crate::device_manager::DeviceManager;
use crate::event_loop::{EventLoop, ExitWatcher};
use crate::exit::ExitReason;
use crate::faults::VmFaults;
use crate::handle::{Shared, VmHandle};
use crate::seccomp::{self, ThreadRole};
use crate::vstate::memory::create_guest_memory;
use crate::vstate::vcpu::{install_kick_handler, Vcpu, VcpuControl};
use crate::vstate::vm::Vm;
use crate::{arch, Error, Vmm};

fn io_err(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Config(format!(
        "{what} {} cannot be opened ({e}): check the path",
        path.display()
    ))
}

/// Builds and starts the VM described by `config`.
pub fn start(config: VmConfig) -> Result<Vmm, Error> {
    config
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    let started = Instant::now();
    let vm = Vm::new()?;
    let (mem, host_mappings) =
        create_guest_memory(config.mem_mib).map_err(|e| Error::Memory(e.to_string()))?;
    vm.register_memory(&mem, false)?;

    let mut kernel = File::open(&config.kernel).map_err(|e| io_err("kernel", &config.kernel, e))?;
    let entry = arch::load_kernel(&mem, &mut kernel)?;
    let initrd = match &config.initrd {
        Some(path) => {
            let mut f = File::open(path).map_err(|e| io_err("initrd", path, e))?;
            Some(arch::load_initrd(&mem, &mut f)?)
        }
        None => None,
    };

    let (exit_tx, exit_rx) = channel();
    let mut event_loop = EventLoop::new().map_err(|e| Error::Setup(format!("event loop: {e}")))?;
    let endpoint = event_loop.endpoint();
    let faults = Arc::new(VmFaults::new(&config)?);

    let mut dm = DeviceManager::new();
    let evt = || EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Setup(format!("eventfd: {e}")));
    let (i8042_reset, acpi_off, acpi_reset) = (evt()?, evt()?, evt()?);
    let watcher = ExitWatcher::subscriber(
        vec![
            (
                clone_fd(&i8042_reset)?,
                ExitReason::Reboot {
                    via: "i8042 reset".into(),
                },
            ),
            (clone_fd(&acpi_off)?, ExitReason::PowerOff),
            (
                clone_fd(&acpi_reset)?,
                ExitReason::Reboot {
                    via: "ACPI reset".into(),
                },
            ),
        ],
        exit_tx.clone(),
    );
    event_loop.add(watcher);
    dm.add_legacy(
        vm.fd(),
        serial_output(&config.serial)?,
        i8042_reset,
        acpi_off,
        acpi_reset,
    )?;

    let mut mmio = Vec::new();
    for (i, disk) in config.disks.iter().enumerate() {
        let dev = crate::disk::build_disk(i, disk, &endpoint, &faults)?;
        mmio.push(dm.add_virtio(vm.fd(), &mem, "block", Box::new(dev))?);
    }
    for (i, net) in config.nets.iter().enumerate() {
        let dev = build_net(i, net, &endpoint, faults.net(i))?;
        mmio.push(dm.add_virtio(vm.fd(), &mem, "net", dev)?);
    }
    if let Some(vsock) = &config.vsock {
        let mut dev = devices::virtio::vsock::Vsock::new(
            devices::virtio::vsock::VsockConfig {
                cid: vsock.cid,
                uds_path: vsock.uds.clone(),
            },
            endpoint.clone(),
        )
        .map_err(|e| Error::Config(format!("--vsock {vsock}: {e}")))?;
        dev.set_faults(faults.vsock());
        mmio.push(dm.add_virtio(vm.fd(), &mem, "vsock", Box::new(dev))?);
    }
    let rng = devices::virtio::rng::Rng::new(Some(endpoint.clone()));
    mmio.push(dm.add_virtio(vm.fd(), &mem, "rng", Box::new(rng))?);

    let mut cmdline = Cmdline::new(arch::layout::CMDLINE_MAX_SIZE)
        .map_err(|e| Error::Config(format!("cmdline: {e}")))?;
    cmdline
        .insert_str(&config.cmdline)
        .map_err(|e| Error::Config(format!("--cmdline: {e}")))?;
    for p in dm.cmdline_params() {
        cmdline
            .insert_str(&p)
            .map_err(|e| Error::Config(format!("--cmdline is too long to add devices: {e}")))?;
    }
    let rsdp = arch::create_acpi_tables(&mem, config.cpus, &mmio)?;
    arch::configure_system(&mem, &cmdline, initrd, rsdp)?;

    let control = Arc::new(VcpuControl::new(usize::from(config.cpus)));
    let devices_info = dm.virtio_devices().to_vec();
    let io = dm.into_io();
    let mut vcpus = Vec::new();
    for id in 0..config.cpus {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(|e| Error::Setup(format!("create vCPU {id}: {e}")))?;
        let cpuid = arch::cpuid::vcpu_cpuid(vm.kvm(), id, config.cpus)?;
        fd.set_cpuid2(&cpuid)
            .map_err(|e| Error::Setup(format!("set CPUID on vCPU {id}: {e}")))?;
        arch::regs::setup_vcpu_common(&fd)?;
        if id == 0 {
            arch::regs::setup_boot_vcpu(&fd, &mem, entry)?;
        }
        vcpus.push(Vcpu {
            id,
            fd,
            io: io.clone(),
            control: control.clone(),
            exits: exit_tx.clone(),
        });
    }

    let shared = Arc::new(Shared {
        control: control.clone(),
        exits: exit_tx,
        vcpus: config.cpus,
        mem_mib: config.mem_mib,
        devices: devices_info,
        started,
        faults: faults.clone(),
    });
    let handle = VmHandle { shared };
    let use_seccomp = config.seccomp;
    let role = move |r: ThreadRole| {
        move || {
            if use_seccomp {
                seccomp::apply(r)
            }
        }
    };

    let api = match &config.api_sock {
        Some(path) => Some(
            ApiServer::start(path, handle.clone(), role(ThreadRole::Api))
                .map_err(|e| Error::Setup(e.to_string()))?,
        ),
        None => None,
    };
    let event_loop = event_loop
        .spawn(role(ThreadRole::Devices))
        .map_err(|e| Error::Setup(format!("event loop thread: {e}")))?;
    install_kick_handler().map_err(|e| Error::Setup(format!("vCPU kick signal: {e}")))?;
    let mut threads = Vec::new();
    for vcpu in vcpus {
        let on_start = role(ThreadRole::Vcpu);
        let t = std::thread::Builder::new()
            .name(format!("kiln-vcpu{}", vcpu.id))
            .spawn(move || {
                on_start();
                vcpu.run()
            })
            .map_err(|e| Error::Setup(format!("vCPU thread: {e}")))?;
        control.add_thread(std::os::unix::thread::JoinHandleExt::as_pthread_t(&t));
        threads.push(t);
    }
    tracing::info!(
        "VM started: {} vCPU, {} MiB, {} virtio devices, boot setup took {:?}",
        config.cpus,
        config.mem_mib,
        mmio.len(),
        started.elapsed()
    );
    Ok(Vmm {
        handle,
        exits: exit_rx,
        vcpu_threads: threads,
        event_loop: Some(event_loop),
        api,
        _mem: mem,
        _vm: vm,
        _host_mappings: host_mappings,
    })
}

fn clone_fd(e: &EventFd) -> Result<EventFd, Error> {
    e.try_clone()
        .map_err(|e| Error::Setup(format!("eventfd: {e}")))
}

fn serial_output(s: &SerialOutput) -> Result<Box<dyn Write + Send>, Error> {
    Ok(match s {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::Off => Box::new(std::io::sink()),
        SerialOutput::File(p) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| io_err("serial log", p, e))?,
        ),
    })
}

fn build_net(
    index: usize,
    net: &crate::config::NetConfig,
    endpoint: &devices::virtio::EventLoopEndpoint,
    faults: devices::fault::NetFaults,
) -> Result<Box<dyn VirtioDevice>, Error> {
    use devices::virtio::net::{MacAddr, Net, NetBackendConfig, NetConfig};
    let backend = match &net.backend {
        NetBackend::Switch(p) => NetBackendConfig::Switch {
            path: p.clone(),
            local: None,
        },
        NetBackend::Tap(n) => NetBackendConfig::Tap { name: n.clone() },
    };
    // A locally administered MAC derived from the index keeps guests reproducible.
    let mac = MacAddr(
        net.mac
            .unwrap_or([0x52, 0x54, 0x00, 0x4b, 0x4c, index as u8]),
    );
    let config = NetConfig {
        backend,
        mac: Some(mac),
    };
    let dev = Net::new(config, endpoint.clone(), faults)
        .map_err(|e| Error::Config(format!("--net {net}: {e}")))?;
    Ok(Box::new(dev))
}
