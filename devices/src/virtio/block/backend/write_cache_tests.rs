//! Model-based test of the write cache: random writes, reads, flushes and power cuts on a
//! real image file (through the raw file layer, with a spill file and a memory bound small
//! enough to spill), checked against a reference model of what must and may survive:
//! - reads always return the latest write;
//! - after a flush the file holds exactly the latest data;
//! - after a power cut with nothing kept the file holds exactly the last flushed data;
//! - after a power cut keeping a seeded subset, every 4 KiB block holds either its last
//!   flushed or its latest content, and the same seed keeps the same blocks.

use proptest::prelude::*;

use super::{BlockBackend, CacheHandle, GuestSlice, RawFile, WriteCache};

const SECTORS: u64 = 64;
const DISK: usize = (SECTORS * 512) as usize;
const BLOCK: usize = 4096;
/// Three blocks in memory; the rest spills.
const MEMORY: u64 = 3 * 4096;

#[derive(Clone, Debug)]
enum Op {
    Write { sector: u64, sectors: u64, fill: u8 },
    Read { sector: u64, sectors: u64 },
    Flush,
    PowerCut { keep: f64, seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SECTORS, 1..20u64, any::<u8>()).prop_map(|(sector, n, fill)| Op::Write {
            sector,
            sectors: n.min(SECTORS - sector),
            fill,
        }),
        3 => (0..SECTORS, 1..20u64).prop_map(|(sector, n)| Op::Read {
            sector,
            sectors: n.min(SECTORS - sector),
        }),
        1 => Just(Op::Flush),
        1 => (prop_oneof![Just(0.0), Just(0.5), Just(1.0)], any::<u64>())
            .prop_map(|(keep, seed)| Op::PowerCut { keep, seed }),
    ]
}

struct Disk {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    cache: WriteCache,
    handle: CacheHandle,
}

impl Disk {
    fn open(dir: tempfile::TempDir, path: std::path::PathBuf) -> Disk {
        let raw = RawFile::open(&path, false).unwrap();
        let spill = tempfile::tempfile_in(dir.path()).unwrap();
        let cache = WriteCache::new(Box::new(raw), spill, MEMORY);
        let handle = cache.handle();
        Disk {
            _dir: dir,
            path,
            cache,
            handle,
        }
    }

    fn file(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

/// Each write's bytes differ from sector to sector, so misplaced sectors show.
fn pattern(sector: u64, sectors: u64, fill: u8) -> Vec<u8> {
    (sector..sector + sectors)
        .flat_map(|s| (0..512u32).map(move |i| fill ^ (s as u8) ^ (i as u8)))
        .collect()
}

fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; DISK]).unwrap();
    let mut disk = Disk::open(dir, path);
    // The model: what reads must return, and what the file holds durably.
    let mut latest = vec![0u8; DISK];
    let mut durable = vec![0u8; DISK];
    for op in ops {
        match *op {
            Op::Write {
                sector,
                sectors,
                fill,
            } => {
                let mut data = pattern(sector, sectors, fill);
                // Split into two guest buffers to cover multi-slice requests.
                let (a, b) = data.split_at_mut(512);
                disk.cache
                    .write(sector * 512, &[GuestSlice::from(a), GuestSlice::from(b)])
                    .unwrap();
                let at = (sector * 512) as usize;
                latest[at..at + data.len()].copy_from_slice(&data);
            }
            Op::Read { sector, sectors } => {
                let mut out = vec![0xeeu8; (sectors * 512) as usize];
                disk.cache
                    .read(sector * 512, &[GuestSlice::from(&mut out[..])])
                    .unwrap();
                let at = (sector * 512) as usize;
                prop_assert_eq!(
                    &out[..],
                    &latest[at..at + out.len()],
                    "read at sector {}",
                    sector
                );
            }
            Op::Flush => {
                disk.cache.flush().unwrap();
                durable.clone_from(&latest);
                prop_assert_eq!(disk.file(), durable.clone(), "file after flush");
            }
            Op::PowerCut { keep, seed } => {
                let report = disk.handle.power_cut(seed, 0, keep).unwrap();
                let file = disk.file();
                for (i, (got, (old, new))) in file
                    .chunks(BLOCK)
                    .zip(durable.chunks(BLOCK).zip(latest.chunks(BLOCK)))
                    .enumerate()
                {
                    if keep == 0.0 {
                        prop_assert_eq!(got, old, "block {} after a cut keeping nothing", i);
                    } else {
                        prop_assert!(
                            got == old || got == new,
                            "block {} is neither flushed nor latest",
                            i
                        );
                    }
                }
                if keep == 1.0 {
                    prop_assert_eq!(&file, &latest, "keep = 1 keeps every write");
                    prop_assert_eq!(report.lost_blocks, 0);
                }
                // Restart on the same file, as the VMM does after a cut.
                let Disk { _dir, path, .. } = disk;
                disk = Disk::open(_dir, path);
                latest = file.clone();
                durable = file;
            }
        }
        prop_assert!(
            disk.handle.memory_bytes() <= MEMORY,
            "memory bound exceeded"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn write_cache_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_ops(&ops)?;
    }
}

/// Runs writes then a power cut keeping half; returns the file.
fn cut_with_seed(seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; DISK]).unwrap();
    let mut disk = Disk::open(dir, path);
    for block in 0..(DISK / BLOCK) as u64 {
        let mut data = vec![block as u8 + 1; BLOCK];
        disk.cache
            .write(block * BLOCK as u64, &[GuestSlice::from(&mut data[..])])
            .unwrap();
    }
    let report = disk.handle.power_cut(seed, 0, 0.5).unwrap();
    assert_eq!(
        report.kept_blocks + report.lost_blocks,
        (DISK / BLOCK) as u64
    );
    disk.file()
}

#[test]
fn the_surviving_subset_is_a_function_of_the_seed() {
    let a = cut_with_seed(5);
    assert_eq!(a, cut_with_seed(5));
    let seeds_differ = (6..12).any(|s| cut_with_seed(s) != a);
    assert!(seeds_differ, "the seed picks which blocks survive");
}

#[test]
fn spilled_blocks_read_back_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; DISK]).unwrap();
    let mut disk = Disk::open(dir, path);
    let mut data = pattern(0, SECTORS, 9);
    disk.cache
        .write(0, &[GuestSlice::from(&mut data[..])])
        .unwrap();
    assert_eq!(
        disk.handle.memory_bytes(),
        MEMORY,
        "only three blocks in memory"
    );
    assert_eq!(disk.handle.dirty_bytes(), DISK as u64);
    let mut back = vec![0u8; DISK];
    disk.cache
        .read(0, &[GuestSlice::from(&mut back[..])])
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(disk.file(), vec![0u8; DISK]);
    disk.handle.flush().unwrap();
    assert_eq!(disk.file(), data);
    assert_eq!(
        (disk.handle.dirty_bytes(), disk.handle.memory_bytes()),
        (0, 0)
    );
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; DISK]).unwrap();
    let mut disk = Disk::open(dir, path);
    let mut buf = vec![0u8; 512];
    let mut odd = [0u8; 100];
    assert!(disk
        .cache
        .write(DISK as u64, &[GuestSlice::from(&mut buf[..])])
        .is_err());
    assert!(disk
        .cache
        .write(u64::MAX - 511, &[GuestSlice::from(&mut buf[..])])
        .is_err());
    assert!(disk
        .cache
        .read(100, &[GuestSlice::from(&mut buf[..])])
        .is_err());
    assert!(disk
        .cache
        .write(0, &[GuestSlice::from(&mut odd[..])])
        .is_err());
}

#[test]
fn dropping_without_a_power_cut_writes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; DISK]).unwrap();
    let disk = Disk::open(dir, path.clone());
    let Disk {
        _dir,
        mut cache,
        handle,
        ..
    } = disk;
    let mut data = vec![4u8; 1024];
    cache
        .write(2048, &[GuestSlice::from(&mut data[..])])
        .unwrap();
    drop(cache);
    drop(handle);
    assert_eq!(std::fs::read(&path).unwrap()[2048..3072], [4u8; 1024]);
}
