//! Guest buffers as layers handle them: volatile slices, with helpers to copy a range of a
//! request's data in or out and to cut a request short (torn writes).

use std::io;

use vm_memory::VolatileSlice;

/// One contiguous piece of a request's guest buffers.
pub type GuestSlice<'a> = VolatileSlice<'a, ()>;

/// Total length of `bufs` in bytes.
pub fn total_len(bufs: &[GuestSlice<'_>]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

/// The slices covering bytes `[start, start + len)` of the request data in `bufs` (clamped
/// to what `bufs` hold).
pub(crate) fn sub_range<'a>(bufs: &[GuestSlice<'a>], start: u64, len: u64) -> Vec<GuestSlice<'a>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let end = start.saturating_add(len);
    for b in bufs {
        let b_start = pos;
        let b_end = pos + b.len() as u64;
        pos = b_end;
        if b_end <= start || b_start >= end {
            continue;
        }
        let from = start.max(b_start) - b_start;
        let to = end.min(b_end) - b_start;
        // In range by construction; a failure would only drop a piece.
        if let Ok(s) = b.subslice(from as usize, (to - from) as usize) {
            out.push(s);
        }
    }
    out
}

/// Copies `data` into the request buffers at request byte `at`.
pub(crate) fn copy_into(bufs: &[GuestSlice<'_>], at: u64, data: &[u8]) -> io::Result<()> {
    let mut done = 0;
    for s in sub_range(bufs, at, data.len() as u64) {
        s.copy_from(&data[done..done + s.len()]);
        done += s.len();
    }
    if done == data.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "request buffers end before the data",
        ))
    }
}

/// Copies request bytes `[at, at + out.len())` out of the buffers.
pub(crate) fn copy_out(bufs: &[GuestSlice<'_>], at: u64, out: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    for s in sub_range(bufs, at, out.len() as u64) {
        let n = s.len();
        s.copy_to(&mut out[done..done + n]);
        done += n;
    }
    if done == out.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "request buffers end before the range",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_across_slices() {
        let mut a = [0u8; 3];
        let mut b = [0u8; 5];
        let bufs = [GuestSlice::from(&mut a[..]), GuestSlice::from(&mut b[..])];
        assert_eq!(total_len(&bufs), 8);
        copy_into(&bufs, 1, &[1, 2, 3, 4]).unwrap();
        let mut out = [0u8; 8];
        copy_out(&bufs, 0, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 4, 0, 0, 0]);
        assert_eq!(
            sub_range(&bufs, 2, 2)
                .iter()
                .map(|s| s.len())
                .collect::<Vec<_>>(),
            [1, 1]
        );
        assert!(sub_range(&bufs, 8, 4).is_empty());
        assert!(copy_into(&bufs, 6, &[9; 4]).is_err());
        assert!(copy_out(&bufs, u64::MAX - 1, &mut [0; 4]).is_err());
    }
}
