//! Arbitrary guest memory and queue layout through the virtio-blk request path.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    devices::fuzzing::block_queue(data);
});
