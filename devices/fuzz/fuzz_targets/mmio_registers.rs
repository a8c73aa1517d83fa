//! Arbitrary register accesses against the virtio-mmio transport.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    devices::fuzzing::mmio_registers(data);
});
