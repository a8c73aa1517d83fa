//! The bottom layer: a raw image file (or block device), read and written with `preadv` /
//! `pwritev` straight between the file and guest memory (no bounce buffer, no seek).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{BlockBackend, Completion, GuestSlice};
use crate::virtio::block::request::SECTOR_SIZE;
use crate::virtio::block::BlockError;

/// Most iovecs one `preadv`/`pwritev` takes (Linux `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// A raw image file.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    capacity: u64,
}

impl RawFile {
    /// Opens the image; its size must be a non-zero multiple of 512 bytes.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_path_buf(),
                read_only,
                source,
            })?;
        match file.metadata() {
            Ok(m) if m.is_dir() => {
                return Err(BlockError::NotAFile {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => {}
            Err(source) => {
                return Err(BlockError::Size {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        // Seeking to the end also works for block devices, whose metadata length is 0.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.to_path_buf(),
                source,
            })?;
        if size == 0 {
            return Err(BlockError::Empty {
                path: path.to_path_buf(),
            });
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::Misaligned {
                path: path.to_path_buf(),
                size,
            });
        }
        Ok(RawFile {
            file,
            capacity: size,
        })
    }

    /// Wraps an open file of `capacity` bytes (fuzzing, tests, embedders with their own fd).
    pub fn from_file(file: File, capacity: u64) -> Self {
        RawFile { file, capacity }
    }

    fn transfer(&self, mut offset: u64, bufs: &[GuestSlice<'_>], write: bool) -> io::Result<()> {
        // The guards keep each slice's pointer valid while the kernel uses it.
        let guards: Vec<_> = bufs.iter().map(|b| b.ptr_guard_mut()).collect();
        let mut iovs: Vec<libc::iovec> = guards
            .iter()
            .zip(bufs)
            .filter(|(_, b)| !b.is_empty())
            .map(|(g, b)| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut first = 0;
        while first < iovs.len() {
            let n = (iovs.len() - first).min(IOV_MAX);
            let off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
            let iov = iovs[first..].as_ptr();
            // SAFETY: `iov` points to `n` iovecs describing guest memory kept mapped by the
            // guards above; the kernel reads or writes only inside them.
            let r = unsafe {
                if write {
                    libc::pwritev(self.file.as_raw_fd(), iov, n as libc::c_int, off)
                } else {
                    libc::preadv(self.file.as_raw_fd(), iov, n as libc::c_int, off)
                }
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Err(if write {
                    io::Error::new(io::ErrorKind::WriteZero, "image accepted no more bytes")
                } else {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "image ends before the request",
                    )
                });
            }
            let mut done = r as usize;
            offset += done as u64;
            // Skip what was transferred; a short transfer resumes mid-iovec.
            while done > 0 && first < iovs.len() {
                let iov = &mut iovs[first];
                if done >= iov.iov_len {
                    done -= iov.iov_len;
                    first += 1;
                } else {
                    // SAFETY: stays inside the same iovec (done < iov_len).
                    iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(done).cast() };
                    iov.iov_len -= done;
                    done = 0;
                }
            }
        }
        Ok(())
    }
}

impl BlockBackend for RawFile {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn read(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        self.transfer(offset, bufs, false).map(|()| Completion::NOW)
    }

    fn write(&mut self, offset: u64, bufs: &[GuestSlice<'_>]) -> io::Result<Completion> {
        self.transfer(offset, bufs, true).map(|()| Completion::NOW)
    }

    fn flush(&mut self) -> io::Result<Completion> {
        self.file.sync_data().map(|()| Completion::NOW)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn vectored_io_round_trips_and_short_files_fail() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8).collect();
        f.write_all(&content).unwrap();
        let mut raw = RawFile::open(f.path(), false).unwrap();
        assert_eq!(raw.capacity(), 4096);
        let (mut a, mut b, mut empty) = (vec![0u8; 100], vec![0u8; 924], vec![]);
        raw.read(
            512,
            &[
                GuestSlice::from(&mut a[..]),
                GuestSlice::from(&mut empty[..]),
                GuestSlice::from(&mut b[..]),
            ],
        )
        .unwrap();
        assert_eq!([a, b].concat(), content[512..1536]);
        let mut new = vec![7u8; 1024];
        raw.write(2048, &[GuestSlice::from(&mut new[..])]).unwrap();
        raw.flush().unwrap();
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(on_disk[2048..3072], [7u8; 1024]);
        assert_eq!(on_disk[..2048], content[..2048]);
        let mut past = vec![0u8; 1024];
        let e = raw
            .read(3584, &[GuestSlice::from(&mut past[..])])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn more_than_iov_max_slices() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(3000 * 512).unwrap();
        let mut raw = RawFile::open(f.path(), false).unwrap();
        let mut data: Vec<u8> = (0..3000 * 512).map(|i| (i / 512) as u8).collect();
        let bufs: Vec<GuestSlice<'_>> = data.chunks_mut(512).map(GuestSlice::from).collect();
        raw.write(0, &bufs).unwrap();
        drop(bufs);
        assert_eq!(std::fs::read(f.path()).unwrap(), data);
        let mut back = vec![0u8; 3000 * 512];
        let bufs: Vec<GuestSlice<'_>> = back.chunks_mut(512).map(GuestSlice::from).collect();
        raw.read(0, &bufs).unwrap();
        drop(bufs);
        assert_eq!(back, data);
        data.clear();
    }
}
