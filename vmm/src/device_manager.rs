//! Places devices on the guest's buses: legacy PC devices on I/O ports, virtio devices in
//! 4 KiB virtio-mmio windows, each with an irqfd for its interrupt and an ioeventfd per queue.

use std::io::Write;
use std::sync::{Arc, Mutex};

use devices::virtio::mmio::MmioTransport;
use devices::virtio::{VirtioDevice, VirtioInterrupt};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vm_device::{MutDeviceMmio, MutDevicePio};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::layout;
use crate::arch::MmioDeviceInfo;
use crate::handle::DeviceInfo;
use crate::vstate::memory::GuestMemory;

/// Offset of the QueueNotify register in a virtio-mmio window.
const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// Why a device could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot create an event fd: {0}")]
    EventFd(std::io::Error),
    #[error("KVM refused to wire {what}: {err}")]
    Kvm {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("device bus conflict: {0:?}")]
    Bus(vm_device::bus::Error),
    #[error("too many virtio devices: at most {0}")]
    TooMany(u32),
    #[error("{0}")]
    Device(String),
}

fn eventfd() -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(DeviceError::EventFd)
}

/// The guest's I/O buses and what is on them.
pub struct DeviceManager {
    io: IoManager,
    virtio: Vec<DeviceInfo>,
    next_index: u32,
}

impl Default for DeviceManager {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceManager {
    /// An empty device manager.
    pub fn new() -> Self {
        DeviceManager {
            io: IoManager::new(),
            virtio: Vec::new(),
            next_index: 0,
        }
    }

    /// Puts a port-I/O device at `base..base+len`.
    pub fn add_pio<D: MutDevicePio + Send + 'static>(
        &mut self,
        base: u16,
        len: u16,
        dev: Arc<Mutex<D>>,
    ) -> Result<(), DeviceError> {
        let range = PioRange::new(PioAddress(base), len).map_err(DeviceError::Bus)?;
        self.io.register_pio(range, dev).map_err(DeviceError::Bus)
    }

    /// Adds the legacy PC devices: COM1 serial, i8042 (reset), CMOS RTC, ACPI PM.
    pub fn add_legacy(
        &mut self,
        vm: &VmFd,
        serial_out: Box<dyn Write + Send>,
        i8042_reset: EventFd,
        acpi_poweroff: EventFd,
        acpi_reset: EventFd,
    ) -> Result<(), DeviceError> {
        use devices::legacy::{acpi_pm, AcpiPmDevice, Rtc, SerialDevice, I8042};
        let serial_irq = eventfd()?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .map_err(|err| DeviceError::Kvm {
                what: "the serial interrupt",
                err,
            })?;
        self.add_pio(
            0x3f8,
            8,
            Arc::new(Mutex::new(SerialDevice::new(serial_irq, serial_out))),
        )?;
        let kbd_irq = eventfd()?;
        vm.register_irqfd(&kbd_irq, layout::I8042_IRQ)
            .map_err(|err| DeviceError::Kvm {
                what: "the i8042 interrupt",
                err,
            })?;
        let i8042 = Arc::new(Mutex::new(I8042::new(i8042_reset, kbd_irq)));
        self.add_pio(0x60, 1, i8042.clone())?;
        self.add_pio(0x64, 1, i8042)?;
        self.add_pio(0x70, 2, Arc::new(Mutex::new(Rtc::new())))?;
        self.add_pio(
            acpi_pm::PORT_BASE,
            acpi_pm::PORT_LEN,
            Arc::new(Mutex::new(AcpiPmDevice::new(acpi_poweroff, acpi_reset))),
        )?;
        Ok(())
    }

    /// Adds a virtio device in the next virtio-mmio window with its own GSI.
    pub fn add_virtio(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemory,
        kind: &str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<MmioDeviceInfo, DeviceError> {
        let Some(gsi) = layout::virtio_gsi(self.next_index) else {
            return Err(DeviceError::TooMany(layout::VIRTIO_GSI_COUNT));
        };
        let base =
            layout::MMIO_DEVICES_START + u64::from(self.next_index) * layout::MMIO_DEVICE_SIZE;
        self.next_index += 1;

        let irq = eventfd()?;
        vm.register_irqfd(&irq, gsi)
            .map_err(|err| DeviceError::Kvm {
                what: "a virtio interrupt",
                err,
            })?;
        let mut queue_evts = Vec::new();
        for q in 0..device.queue_max_sizes().len() {
            let evt = eventfd()?;
            vm.register_ioevent(
                &evt,
                &IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET),
                q as u32,
            )
            .map_err(|err| DeviceError::Kvm {
                what: "a virtio queue notification",
                err,
            })?;
            queue_evts.push(evt);
        }
        let interrupt = Arc::new(VirtioInterrupt::new(irq));
        let transport = MmioTransport::new(device, mem.clone(), interrupt, queue_evts)
            .map_err(|e| DeviceError::Device(e.to_string()))?;
        self.add_mmio(
            base,
            layout::MMIO_DEVICE_SIZE,
            Arc::new(Mutex::new(transport)),
        )?;
        self.virtio.push(DeviceInfo {
            kind: kind.to_string(),
            mmio_base: base,
            gsi,
        });
        Ok(MmioDeviceInfo {
            base,
            size: layout::MMIO_DEVICE_SIZE,
            gsi,
        })
    }

    /// Puts an MMIO device at `base..base+len`.
    pub fn add_mmio<D: MutDeviceMmio + Send + 'static>(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<D>>,
    ) -> Result<(), DeviceError> {
        let range = MmioRange::new(MmioAddress(base), len).map_err(DeviceError::Bus)?;
        self.io.register_mmio(range, dev).map_err(DeviceError::Bus)
    }

    /// `virtio_mmio.device=` parameters, for kernels built with command-line devices.
    pub fn cmdline_params(&self) -> Vec<String> {
        self.virtio
            .iter()
            .map(|d| format!("virtio_mmio.device=4K@{:#x}:{}", d.mmio_base, d.gsi))
            .collect()
    }

    /// The virtio devices placed so far.
    pub fn virtio_devices(&self) -> &[DeviceInfo] {
        &self.virtio
    }

    /// Finishes building: the buses, shared by the vCPU threads.
    pub fn into_io(self) -> Arc<IoManager> {
        Arc::new(self.io)
    }
}
