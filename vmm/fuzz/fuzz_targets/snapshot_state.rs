//! Arbitrary bytes as a snapshot state file: the format checks, then the header and machine
//! state decoders behind a valid checksum.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmm::snapshot::fuzzing::snapshot_state(data);
});
