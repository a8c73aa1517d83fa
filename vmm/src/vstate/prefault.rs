//! After a restore, guest memory loads lazily: the first touch of each page faults it in from
//! the snapshot's memory file. This background thread maps the pages the file holds (its
//! data extents; holes stay unmapped) into the host page tables ahead of the guest
//! (`MADV_POPULATE_READ`), so the guest finds most of them mapped instead of faulting one by
//! one. It never blocks the guest and stops when the VM is torn down.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes populated per call, so a stop request is seen quickly.
const CHUNK: usize = 2 << 20;

/// A region to populate: host address, length, offset of its pages in the file.
#[derive(Clone, Copy, Debug)]
pub struct PrefaultRegion {
    pub host: usize,
    pub len: usize,
    pub file_offset: u64,
}

/// The running prefault thread.
pub struct Prefault {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prefault {
    /// Starts populating `regions` from `file`; `on_start` runs first on the thread (seccomp).
    pub fn start(
        regions: Vec<PrefaultRegion>,
        file: Arc<File>,
        on_start: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Prefault> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-prefault".into())
            .spawn(move || {
                on_start();
                for r in regions {
                    if !populate_region(&r, &file, &flag) {
                        return;
                    }
                }
            })?;
        Ok(Prefault {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (before the memory is unmapped).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Populates the data extents of one region; false when the thread should end.
fn populate_region(r: &PrefaultRegion, file: &File, stop: &AtomicBool) -> bool {
    let fd = file.as_raw_fd();
    let end = r.file_offset + r.len as u64;
    let mut pos = r.file_offset;
    while pos < end {
        // SAFETY: lseek on an open fd; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= end {
            return true;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        let mut at = data as u64;
        while at < hole {
            if stop.load(Ordering::Acquire) {
                return false;
            }
            let len = ((hole - at) as usize).min(CHUNK);
            let addr = r.host + (at - r.file_offset) as usize;
            // SAFETY: the range lies inside the region's live mapping, which outlives this
            // thread (the VM joins it before unmapping); populating changes no contents.
            let rc =
                unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_READ) };
            if rc != 0 {
                tracing::debug!(
                    "prefault stopped: MADV_POPULATE_READ: {}",
                    std::io::Error::last_os_error()
                );
                return false;
            }
            at += len as u64;
        }
        pos = hole;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    fn present(addr: usize) -> bool {
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let mut e = [0u8; 8];
        pagemap
            .read_exact_at(&mut e, (addr / 4096) as u64 * 8)
            .unwrap();
        u64::from_le_bytes(e) & (1 << 63) != 0
    }

    #[test]
    fn maps_the_file_data_and_leaves_holes_alone() {
        let dir = std::env::temp_dir().join(format!("kiln-prefault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        let f = File::create(&path).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[7u8; 8192], 4 << 20).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let file = File::open(&path).unwrap();
        let (mem, maps) =
            crate::vstate::memory::restore_guest_memory(16, file.try_clone().unwrap()).unwrap();
        let host = mem.iter().next().unwrap().as_ptr() as usize;
        assert!(!present(host + (4 << 20)));
        let regions = vec![PrefaultRegion {
            host,
            len: 16 << 20,
            file_offset: 0,
        }];
        let p = Prefault::start(regions, Arc::new(file), || {}).unwrap();
        let t = std::time::Instant::now();
        while !present(host + (4 << 20)) {
            assert!(t.elapsed().as_secs() < 10, "data page never mapped");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        p.stop();
        assert!(present(host + (4 << 20) + 4096));
        assert!(!present(host + (8 << 20)), "a hole was mapped");
        drop(mem);
        drop(maps);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
