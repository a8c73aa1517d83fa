//! A rules file (TOML or JSON) through the fault rules parser, validation and engine.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    devices::fuzzing::fault_rules(data);
});
