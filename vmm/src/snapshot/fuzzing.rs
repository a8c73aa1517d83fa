//! Entry point of the cargo-fuzz target `snapshot_state` (`vmm/fuzz/`), here so that
//! `cargo test` replays seeds through exactly the code the fuzzer runs.

use super::format::{assemble, verify, FORMAT_VERSION};

/// Parses `data` as a state file, twice: as it is (magic, version, lengths and checksum
/// must reject it cleanly) and wrapped in a valid prefix and checksum, so the header and
/// state decoders see arbitrary bytes. The first input byte splits header from state. Must
/// never panic, hang or allocate without bound.
pub fn snapshot_state(data: &[u8]) {
    if let Ok(v) = verify(data) {
        let _ = v.state();
    }
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (usize::from(split) * rest.len()) / 255;
    let (header, state) = rest.split_at(cut.min(rest.len()));
    let (file, _) = assemble(FORMAT_VERSION, header, state);
    if let Ok(v) = verify(&file) {
        let _ = v.state();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_seeds_without_panicking() {
        let seeds: &[&[u8]] = &[
            b"",
            b"KILNSNAP",
            b"KILNSNAP\x01\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            &[0x80; 300],
            &[0xff; 4096],
            &[0x00; 1000],
        ];
        for s in seeds {
            snapshot_state(s);
        }
        // Header bytes that decode as a long Vec length must not allocate it.
        let mut huge = vec![0u8; 64];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        snapshot_state(&huge);
    }
}
