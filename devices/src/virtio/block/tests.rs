//! virtio-blk against real guest memory, real rings and real image files.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use virtio_bindings::bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;

use super::request::{RawRequest, Request, RequestError, MAX_DATA_BYTES};
use super::*;
use crate::fault::BlockFaults;
use crate::virtio::test_utils::{fired, guest_memory, interrupt, ro, wr, Buf, Driver, DATA_BASE};
use crate::virtio::{VirtioDevice, VIRTIO_F_VERSION_1};

pub(super) const SECTORS: u64 = 64;
pub(super) const HDR: u64 = DATA_BASE;
pub(super) const STATUS: u64 = DATA_BASE + 0x100;
pub(super) const DATA: u64 = DATA_BASE + 0x1000;
const STATUS_UNTOUCHED: u8 = 0xee;

/// An image of `sectors` sectors where byte i holds (i / 512 + i) as a pattern.
pub(super) fn image(sectors: u64) -> TempFile {
    let f = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..sectors * 512)
        .map(|i| ((i / 512) as u8).wrapping_add(i as u8))
        .collect();
    f.as_file().write_all(&bytes).unwrap();
    f
}

pub(super) fn file_bytes(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut v).unwrap();
    v
}

fn block(path: &Path, read_only: bool, id: Option<&str>, fault: BlockFaults) -> Block {
    Block::new(
        BlockConfig {
            path: path.to_path_buf(),
            read_only,
            id: id.map(str::to_string),
            cache: Default::default(),
        },
        None,
        fault,
    )
    .unwrap()
}

/// Writes a request header at HDR and resets the status byte.
pub(super) fn header(d: &Driver, request_type: u32, sector: u64) {
    let mut h = Vec::new();
    h.extend_from_slice(&request_type.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&sector.to_le_bytes());
    d.write(HDR, &h);
    d.write(STATUS, &[STATUS_UNTOUCHED]);
}

pub(super) fn status(d: &Driver) -> u8 {
    d.read(STATUS, 1)[0]
}

/// Submits one chain, processes the queue, returns (used len, status byte).
pub(super) fn run(d: &mut Driver, dev: &Block, bufs: &[Buf]) -> (u32, u8) {
    let before = d.used_idx();
    let head = d.submit(bufs);
    assert_eq!(dev.process_queue(), Some(1));
    assert_eq!(d.used_idx(), before.wrapping_add(1));
    let (id, len) = d.used(before % 64);
    assert_eq!(id, u32::from(head));
    (len, status(d))
}

pub(super) struct Setup {
    pub(super) img: TempFile,
    pub(super) dev: Block,
}

fn setup(read_only: bool, id: Option<&str>, fault: BlockFaults) -> Setup {
    let img = image(SECTORS);
    let dev = block(img.as_path(), read_only, id, fault);
    Setup { img, dev }
}

pub(super) fn activate<'a>(s: &mut Setup, mem: &'a crate::GuestMemory) -> Driver<'a> {
    let d = Driver::new(mem, 64);
    let irq = interrupt();
    let (ctx, _evt) = d.activate_context(&irq);
    s.dev.activate(ctx).unwrap();
    d
}

#[test]
fn capacity_and_features() {
    let s = setup(false, None, BlockFaults::none());
    let mut cap = [0u8; 8];
    s.dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    assert_eq!(s.dev.capacity_sectors(), SECTORS);
    let f = s.dev.features();
    assert_ne!(f & VIRTIO_F_VERSION_1, 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    // Past the end of config space reads as zero.
    let mut tail = [0xffu8; 4];
    s.dev.read_config(0x40, &mut tail);
    assert_eq!(tail, [0; 4]);

    let ro = setup(true, None, BlockFaults::none());
    assert_ne!(ro.dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    let state: BlockState = ro.dev.state().clone();
    assert!(state.read_only);
    assert_eq!(state.capacity_sectors, SECTORS);
}

#[test]
fn read_spanning_two_buffers() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let mut d = activate(&mut s, &mem);
    header(&d, VIRTIO_BLK_T_IN, 3);
    let (len, st) = run(
        &mut d,
        &s.dev,
        &[
            ro(HDR, 16),
            wr(DATA, 512),
            wr(DATA + 0x2000, 1024),
            wr(STATUS, 1),
        ],
    );
    assert_eq!(st, VIRTIO_BLK_S_OK as u8);
    assert_eq!(len, 1536 + 1);
    let disk = file_bytes(s.img.as_path());
    assert_eq!(d.read(DATA, 512), disk[3 * 512..4 * 512]);
    assert_eq!(d.read(DATA + 0x2000, 1024), disk[4 * 512..6 * 512]);
}

#[test]
fn write_lands_in_the_image_and_interrupts() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let d0 = Driver::new(&mem, 64);
    let irq = interrupt();
    let (ctx, _evt) = d0.activate_context(&irq);
    s.dev.activate(ctx).unwrap();
    let mut d = d0;
    header(&d, VIRTIO_BLK_T_OUT, 10);
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    d.write(DATA, &payload);
    let (len, st) = run(
        &mut d,
        &s.dev,
        &[ro(HDR, 16), ro(DATA, 1024), wr(STATUS, 1)],
    );
    assert_eq!((len, st), (1, VIRTIO_BLK_S_OK as u8));
    assert!(fired(irq.eventfd()));
    assert_eq!(
        irq.status() & crate::virtio::INT_VRING,
        crate::virtio::INT_VRING
    );
    let disk = file_bytes(s.img.as_path());
    assert_eq!(disk[10 * 512..12 * 512], payload[..]);
    // Neighbours untouched.
    assert_eq!(disk[9 * 512..10 * 512], image_sector(9)[..]);
    assert_eq!(disk[12 * 512..13 * 512], image_sector(12)[..]);
}

pub(super) fn image_sector(n: u64) -> Vec<u8> {
    (n * 512..(n + 1) * 512)
        .map(|i| ((i / 512) as u8).wrapping_add(i as u8))
        .collect()
}

#[test]
fn flush_and_get_id() {
    let mem = guest_memory();
    let mut s = setup(false, Some("kiln-disk-0"), BlockFaults::none());
    let mut d = activate(&mut s, &mem);
    header(&d, VIRTIO_BLK_T_FLUSH, 0);
    let (len, st) = run(&mut d, &s.dev, &[ro(HDR, 16), wr(STATUS, 1)]);
    assert_eq!((len, st), (1, VIRTIO_BLK_S_OK as u8));

    header(&d, VIRTIO_BLK_T_GET_ID, 0);
    d.write(DATA, &[0xaa; 32]);
    let (len, st) = run(&mut d, &s.dev, &[ro(HDR, 16), wr(DATA, 32), wr(STATUS, 1)]);
    assert_eq!((len, st), (21, VIRTIO_BLK_S_OK as u8));
    let mut want = b"kiln-disk-0".to_vec();
    want.resize(20, 0);
    assert_eq!(d.read(DATA, 20), want);
    // Bytes past the 20-byte ID are not touched.
    assert_eq!(d.read(DATA + 20, 12), vec![0xaa; 12]);

    // An ID split over two small buffers.
    header(&d, VIRTIO_BLK_T_GET_ID, 0);
    let (len, _) = run(
        &mut d,
        &s.dev,
        &[
            ro(HDR, 16),
            wr(DATA, 4),
            wr(DATA + 0x100, 64),
            wr(STATUS, 1),
        ],
    );
    assert_eq!(len, 21);
    assert_eq!(d.read(DATA, 4), b"kiln");
    assert_eq!(d.read(DATA + 0x100, 16), want[4..]);
}

#[test]
fn read_only_disk_rejects_writes() {
    let mem = guest_memory();
    let mut s = setup(true, None, BlockFaults::none());
    let before = file_bytes(s.img.as_path());
    let mut d = activate(&mut s, &mem);
    header(&d, VIRTIO_BLK_T_OUT, 0);
    d.write(DATA, &[0x55; 512]);
    let (len, st) = run(&mut d, &s.dev, &[ro(HDR, 16), ro(DATA, 512), wr(STATUS, 1)]);
    assert_eq!((len, st), (1, VIRTIO_BLK_S_IOERR as u8));
    assert_eq!(file_bytes(s.img.as_path()), before);
    // Reads still work.
    header(&d, VIRTIO_BLK_T_IN, 0);
    let (_, st) = run(&mut d, &s.dev, &[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    assert_eq!(st, VIRTIO_BLK_S_OK as u8);
    assert_eq!(d.read(DATA, 512), before[..512]);
}

#[test]
fn invalid_requests_get_error_status() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let before = file_bytes(s.img.as_path());
    let mut d = activate(&mut s, &mem);
    let ioerr = VIRTIO_BLK_S_IOERR as u8;
    let cases: Vec<(&str, u32, u64, Vec<Buf>, u8)> = vec![
        (
            "unknown type",
            99,
            0,
            vec![wr(DATA, 512)],
            VIRTIO_BLK_S_UNSUPP as u8,
        ),
        (
            "discard unsupported",
            11,
            0,
            vec![ro(DATA, 16)],
            VIRTIO_BLK_S_UNSUPP as u8,
        ),
        (
            "past the end",
            VIRTIO_BLK_T_IN,
            SECTORS,
            vec![wr(DATA, 512)],
            ioerr,
        ),
        (
            "straddles the end",
            VIRTIO_BLK_T_IN,
            SECTORS - 1,
            vec![wr(DATA, 1024)],
            ioerr,
        ),
        (
            "write past the end",
            VIRTIO_BLK_T_OUT,
            SECTORS,
            vec![ro(DATA, 512)],
            ioerr,
        ),
        (
            "sector overflow",
            VIRTIO_BLK_T_IN,
            u64::MAX,
            vec![wr(DATA, 512)],
            ioerr,
        ),
        (
            "write overflow",
            VIRTIO_BLK_T_OUT,
            u64::MAX / 512,
            vec![ro(DATA, 512)],
            ioerr,
        ),
        (
            "not sector multiple",
            VIRTIO_BLK_T_IN,
            0,
            vec![wr(DATA, 100)],
            ioerr,
        ),
        ("read without data", VIRTIO_BLK_T_IN, 0, vec![], ioerr),
        (
            "read into readable buf",
            VIRTIO_BLK_T_IN,
            0,
            vec![ro(DATA, 512)],
            ioerr,
        ),
        (
            "write from writable buf",
            VIRTIO_BLK_T_OUT,
            0,
            vec![wr(DATA, 512)],
            ioerr,
        ),
        (
            "mixed directions",
            VIRTIO_BLK_T_IN,
            0,
            vec![wr(DATA, 512), ro(DATA, 512)],
            ioerr,
        ),
        (
            "data outside memory",
            VIRTIO_BLK_T_IN,
            0,
            vec![wr(1 << 40, 512)],
            ioerr,
        ),
        (
            "data crosses memory end",
            VIRTIO_BLK_T_IN,
            0,
            vec![wr(0x1f_ff00, 512)],
            ioerr,
        ),
        (
            "write from outside memory",
            VIRTIO_BLK_T_OUT,
            0,
            vec![ro(u64::MAX - 100, 512)],
            ioerr,
        ),
        (
            "get-id into readable buf",
            VIRTIO_BLK_T_GET_ID,
            0,
            vec![ro(DATA, 20)],
            ioerr,
        ),
    ];
    for (name, t, sector, data, want) in cases {
        header(&d, t, sector);
        let mut bufs = vec![ro(HDR, 16)];
        bufs.extend(data);
        bufs.push(wr(STATUS, 1));
        let (len, st) = run(&mut d, &s.dev, &bufs);
        assert_eq!((len, st), (1, want), "{name}");
    }
    assert_eq!(file_bytes(s.img.as_path()), before);
}

#[test]
fn malformed_chains_complete_without_status() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let mut d = activate(&mut s, &mem);
    let cases: Vec<(&str, Vec<Buf>)> = vec![
        ("header only", vec![ro(HDR, 16)]),
        ("header too short", vec![ro(HDR, 8), wr(STATUS, 1)]),
        ("header writable", vec![wr(HDR, 16), wr(STATUS, 1)]),
        (
            "header outside memory",
            vec![ro(1 << 40, 16), wr(STATUS, 1)],
        ),
        (
            "header at address overflow",
            vec![ro(u64::MAX - 4, 16), wr(STATUS, 1)],
        ),
        (
            "status readable",
            vec![ro(HDR, 16), wr(DATA, 512), ro(STATUS, 1)],
        ),
        (
            "status empty",
            vec![ro(HDR, 16), wr(DATA, 512), wr(STATUS, 0)],
        ),
        (
            "status outside memory",
            vec![ro(HDR, 16), wr(DATA, 512), wr(1 << 40, 1)],
        ),
    ];
    for (name, bufs) in cases {
        header(&d, VIRTIO_BLK_T_IN, 0);
        let (len, st) = run(&mut d, &s.dev, &bufs);
        assert_eq!((len, st), (0, STATUS_UNTOUCHED), "{name}");
    }
}

#[test]
fn descriptor_loop_terminates() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let d = activate(&mut s, &mem);
    header(&d, VIRTIO_BLK_T_IN, 0);
    // Descriptor 0 points to itself: the chain is cut at the queue size.
    let looped = Driver::raw(HDR, 16, VRING_DESC_F_NEXT, 0);
    d.submit_raw(&[looped], 0);
    assert_eq!(s.dev.process_queue(), Some(1));
    assert_eq!(d.used(0), (0, 0));
    // Two descriptors pointing at each other, the second writable.
    let a = Driver::raw(HDR, 16, VRING_DESC_F_NEXT, 2);
    let b = Driver::raw(STATUS, 1, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
    d.submit_raw(&[a, b], 1);
    assert_eq!(s.dev.process_queue(), Some(1));
    assert_eq!(d.used_idx(), 2);
}

#[test]
fn hostile_avail_ring() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let mut d = activate(&mut s, &mem);
    // Head index beyond the queue size: dropped, the next chain is still served.
    header(&d, VIRTIO_BLK_T_FLUSH, 0);
    d.mock.avail().ring().ref_at(0).unwrap().store(u16::MAX);
    d.set_avail_idx(1);
    assert_eq!(s.dev.process_queue(), Some(0));
    let (len, st) = run(&mut d, &s.dev, &[ro(HDR, 16), wr(STATUS, 1)]);
    assert_eq!((len, st), (1, VIRTIO_BLK_S_OK as u8));

    // An avail index far ahead of the ring: the queue is declared broken, nothing panics.
    d.set_avail_idx(1000);
    assert_eq!(s.dev.process_queue(), Some(0));
    assert_eq!(s.dev.process_queue(), Some(0));
}

#[test]
fn oversized_request_rejected() {
    // A big (lazily mapped) guest so the length check, not the memory check, trips.
    let mem: crate::GuestMemory =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 80 << 20)]).unwrap();
    let raw = RawRequest {
        request_type: VIRTIO_BLK_T_IN,
        sector: 0,
        data: vec![
            super::request::Segment {
                addr: GuestAddress(0),
                len: (MAX_DATA_BYTES / 2) as u32,
                writable: true,
            },
            super::request::Segment {
                addr: GuestAddress(MAX_DATA_BYTES / 2),
                len: (MAX_DATA_BYTES / 2 + 512) as u32,
                writable: true,
            },
        ],
        status_addr: GuestAddress(0),
    };
    let err = Request::validate(&mem, &raw, u64::MAX / 512, false).unwrap_err();
    assert_eq!(err, RequestError::TooLarge(MAX_DATA_BYTES + 512));
    assert_eq!(err.status(), VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn truncated_image_gives_ioerr() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let mut d = activate(&mut s, &mem);
    // Someone shrinks the image under the running device.
    OpenOptions::new()
        .write(true)
        .open(s.img.as_path())
        .unwrap()
        .set_len(512)
        .unwrap();
    header(&d, VIRTIO_BLK_T_IN, 4);
    let (len, st) = run(&mut d, &s.dev, &[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    assert_eq!((len, st), (1, VIRTIO_BLK_S_IOERR as u8));
    // Sector 0 is still there.
    header(&d, VIRTIO_BLK_T_IN, 0);
    let (len, st) = run(&mut d, &s.dev, &[ro(HDR, 16), wr(DATA, 512), wr(STATUS, 1)]);
    assert_eq!((len, st), (513, VIRTIO_BLK_S_OK as u8));
}

#[test]
fn reset_stops_processing_and_reactivation_works() {
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let _d = activate(&mut s, &mem);
    s.dev.reset();
    assert_eq!(s.dev.process_queue(), None);
    let mem2 = guest_memory();
    let mut d = activate(&mut s, &mem2);
    header(&d, VIRTIO_BLK_T_FLUSH, 0);
    let (_, st) = run(&mut d, &s.dev, &[ro(HDR, 16), wr(STATUS, 1)]);
    assert_eq!(st, VIRTIO_BLK_S_OK as u8);
}

fn new_err(path: &Path, read_only: bool, id: Option<&str>) -> String {
    match Block::new(
        BlockConfig {
            path: path.to_path_buf(),
            read_only,
            id: id.map(str::to_string),
            cache: Default::default(),
        },
        None,
        BlockFaults::none(),
    ) {
        Ok(_) => panic!("expected an error for {}", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_images_are_clear_errors() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let missing = dir.as_path().join("nope.img");
    let msg = new_err(&missing, false, None);
    assert!(
        msg.contains("nope.img") && msg.contains("cannot open"),
        "{msg}"
    );

    let msg = new_err(dir.as_path(), true, None);
    assert!(msg.contains("directory"), "{msg}");

    let odd = dir.as_path().join("odd.img");
    fs::write(&odd, [0u8; 1000]).unwrap();
    let msg = new_err(&odd, false, None);
    assert!(msg.contains("odd.img") && msg.contains("1000"), "{msg}");

    let empty = dir.as_path().join("empty.img");
    fs::write(&empty, []).unwrap();
    let msg = new_err(&empty, false, None);
    assert!(msg.contains("empty.img") && msg.contains("empty"), "{msg}");

    let ok = image(1);
    let msg = new_err(ok.as_path(), false, Some("this-id-is-much-longer-than-20"));
    assert!(msg.contains("longer than 20"), "{msg}");
}

#[test]
fn huge_indirect_table_is_bounded() {
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_INDIRECT;
    let mem = guest_memory();
    let mut s = setup(false, None, BlockFaults::none());
    let d = activate(&mut s, &mem);
    header(&d, VIRTIO_BLK_T_IN, 0);
    // 4096 indirect descriptors: header, then writable 512-byte buffers, looping at the end.
    let table = 0x10_0000u64;
    let n: u16 = 4096;
    for i in 0..n {
        let desc = if i == 0 {
            Driver::raw(HDR, 16, VRING_DESC_F_NEXT, 1)
        } else {
            Driver::raw(
                DATA,
                512,
                VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
                (i + 1) % n,
            )
        };
        let bytes: [u8; 16] = vm_memory::ByteValued::as_slice(&desc).try_into().unwrap();
        d.write(table + u64::from(i) * 16, &bytes);
    }
    let head = Driver::raw(table, u32::from(n) * 16, VRING_DESC_F_INDIRECT, 0);
    d.submit_raw(&[head], 0);
    assert_eq!(s.dev.process_queue(), Some(1));
    assert_eq!(d.used(0), (0, 0));
    assert_eq!(status(&d), STATUS_UNTOUCHED);
}
