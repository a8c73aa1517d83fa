//! Virtio devices in virtio-mmio windows: irqfd, ioeventfds, transport; new or restored.

use std::sync::{Arc, Mutex};

use devices::persist::Persist;
use devices::virtio::mmio::{MmioHostParts, MmioSavedState, MmioTransport, QUEUE_NOTIFY_OFFSET};
use devices::virtio::{VirtioDevice, VirtioInterrupt};
use kvm_ioctls::{IoEventAddress, VmFd};

use super::handles::VirtioHandle;
use super::{eventfd, irqfd, DeviceError, DeviceManager};
use crate::arch::layout;
use crate::arch::MmioDeviceInfo;
use crate::handle::DeviceInfo;
use crate::vstate::memory::GuestMemory;

impl DeviceManager {
    /// Adds `device` in the next virtio-mmio window with its own GSI. With `saved`, the
    /// transport takes the saved registers and, if the device was running, starts it again
    /// with the saved queues. `handle` wraps the transport in its typed handle.
    pub fn add_virtio<D: VirtioDevice + 'static>(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemory,
        device: D,
        saved: Option<&MmioSavedState>,
        handle: fn(Arc<Mutex<MmioTransport<D>>>) -> VirtioHandle,
    ) -> Result<MmioDeviceInfo, DeviceError> {
        let Some(gsi) = layout::virtio_gsi(self.next_index) else {
            return Err(DeviceError::TooMany(layout::VIRTIO_GSI_COUNT));
        };
        let base =
            layout::MMIO_DEVICES_START + u64::from(self.next_index) * layout::MMIO_DEVICE_SIZE;
        self.next_index += 1;

        let irq = irqfd(vm, gsi, "a virtio interrupt")?;
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
        let transport = match saved {
            None => MmioTransport::new(device, mem.clone(), interrupt, queue_evts),
            Some(state) => MmioTransport::restore(
                MmioHostParts {
                    device,
                    mem: mem.clone(),
                    interrupt,
                    queue_evts,
                },
                state,
            ),
        }
        .map_err(|e| DeviceError::Device(e.to_string()))?;
        let transport = Arc::new(Mutex::new(transport));
        self.add_mmio(base, layout::MMIO_DEVICE_SIZE, transport.clone())?;
        let handle = handle(transport);
        self.virtio.push((
            DeviceInfo {
                kind: handle.kind().to_string(),
                mmio_base: base,
                gsi,
            },
            handle,
        ));
        Ok(MmioDeviceInfo {
            base,
            size: layout::MMIO_DEVICE_SIZE,
            gsi,
        })
    }
}
