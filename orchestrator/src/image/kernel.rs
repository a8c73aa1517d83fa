//! Turning a bzImage into an uncompressed ELF `vmlinux`.
//!
//! Under TCG, decompressing a kernel costs seconds per boot (about 3.5 s for Debian's
//! XZ-packed generic kernel). Kiln's `vmm` and QEMU (PVH) boot the ELF directly, so images
//! that boot often ship it. Debian's generic kernel is XZ, its cloud kernel LZ4.

use super::error::ImageError;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// How a bzImage's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// XZ (x86 BCJ + LZMA2), undone by the `xz` tool.
    Xz,
    /// LZ4 in the legacy frame format (`lz4 -l`), undone here.
    Lz4Legacy,
}

/// The magic of an LZ4 legacy frame (little-endian 0x184C2102).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Each legacy-frame chunk decompresses to at most this much.
const LZ4_LEGACY_CHUNK: usize = 8 << 20;

/// The compressed payload of a bzImage (boot protocol >= 2.08): its compression, the
/// stream, and the uncompressed size the kernel build appended.
pub fn payload(bzimage: &[u8]) -> Result<(Compression, &[u8], u32), String> {
    let u32_at = |off: usize| -> Result<u32, String> {
        bzimage
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("bzImage too short for the field at {off:#x}"))
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS magic)".into());
    }
    let version = u16::from_le_bytes([bzimage[0x206], bzimage[0x207]]);
    if version < 0x208 {
        return Err(format!("boot protocol {version:#x} has no payload fields"));
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)? as usize;
    let len = u32_at(0x24c)? as usize;
    let payload = bzimage
        .get(start..start.saturating_add(len))
        .ok_or("payload lies outside the file")?;
    let compression = if payload.starts_with(b"\xfd7zXZ\0") {
        Compression::Xz
    } else if payload.starts_with(&LZ4_LEGACY_MAGIC) {
        Compression::Lz4Legacy
    } else {
        return Err("payload is neither XZ nor LZ4 (other compressions are not supported)".into());
    };
    // The build appends the uncompressed size (u32 LE) after the stream.
    let (stream, size) = payload.split_at(len.saturating_sub(4));
    let size = u32::from_le_bytes(size.try_into().map_err(|_| "payload too short")?);
    Ok((compression, stream, size))
}

/// Undoes an LZ4 legacy frame: the magic, then chunks of (u32 LE compressed length, LZ4
/// block) until the input ends (or another frame's magic starts).
pub fn lz4_legacy_decode(stream: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut rest = stream
        .strip_prefix(&LZ4_LEGACY_MAGIC[..])
        .ok_or("no LZ4 legacy magic")?;
    let mut out = Vec::with_capacity(expected);
    let mut chunk = vec![0u8; LZ4_LEGACY_CHUNK];
    while rest.len() >= 4 {
        let (len, tail) = rest.split_at(4);
        if len == LZ4_LEGACY_MAGIC {
            rest = tail;
            continue;
        }
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let block = tail
            .get(..len)
            .ok_or_else(|| format!("an LZ4 chunk of {len} bytes runs past the end"))?;
        let n = lz4_flex::block::decompress_into(block, &mut chunk)
            .map_err(|e| format!("LZ4 chunk at byte {}: {e}", stream.len() - rest.len()))?;
        out.extend_from_slice(&chunk[..n]);
        if out.len() > expected {
            return Err(format!(
                "LZ4 stream holds more than the {expected} bytes announced"
            ));
        }
        rest = &tail[len..];
    }
    Ok(out)
}

/// Write the uncompressed ELF kernel of the bzImage `vmlinuz` to `out`.
pub fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<(), ImageError> {
    let bytes = std::fs::read(vmlinuz).map_err(ImageError::io("reading the kernel", vmlinuz))?;
    let bad = |reason: String| ImageError::BadRecipe {
        name: vmlinuz.display().to_string(),
        reason: format!("cannot uncompress the kernel: {reason}"),
    };
    let (compression, stream, size) = payload(&bytes).map_err(bad)?;
    match compression {
        Compression::Xz => xz_decode_to(stream, out)?,
        Compression::Lz4Legacy => {
            let elf = lz4_legacy_decode(stream, size as usize).map_err(bad)?;
            std::fs::write(out, elf).map_err(ImageError::io("writing vmlinux", out))?;
        }
    }
    let written = std::fs::metadata(out)
        .map_err(ImageError::io("reading vmlinux", out))?
        .len();
    let mut head = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open(out).map_err(ImageError::io("reading vmlinux", out))?,
        &mut head,
    )
    .map_err(ImageError::io("reading vmlinux", out))?;
    if written != u64::from(size) || &head != b"\x7fELF" {
        return Err(bad(format!(
            "got {written} bytes (expected an ELF of {size} bytes)"
        )));
    }
    Ok(())
}

/// Decompresses an XZ stream into `out` with `xz` (xz-utils, part of every Debian system).
fn xz_decode_to(stream: &[u8], out: &Path) -> Result<(), ImageError> {
    let file = std::fs::File::create(out).map_err(ImageError::io("creating vmlinux", out))?;
    let tool = |detail: String| ImageError::Tool {
        command: "xz -dc --single-stream".into(),
        detail,
        hint: "install xz-utils".into(),
    };
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tool(e.to_string()))?;
    let mut stdin = child.stdin.take().ok_or_else(|| tool("no stdin".into()))?;
    let fed = std::thread::scope(|s| {
        let writer = s.spawn(move || stdin.write_all(stream));
        let output = child.wait_with_output();
        (writer.join(), output)
    });
    let output = fed.1.map_err(|e| tool(e.to_string()))?;
    if !output.status.success() {
        return Err(tool(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    if !matches!(fed.0, Ok(Ok(()))) {
        return Err(tool("xz stopped reading its input".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 5 * 512];
        image[0x1f1] = 4;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0u8; 16]);
        image.extend_from_slice(payload);
        image.extend_from_slice(b"trailing");
        image
    }

    #[test]
    fn payload_and_size_are_found() {
        let mut payload = b"\xfd7zXZ\0stream".to_vec();
        payload.extend_from_slice(&1234u32.to_le_bytes());
        let image = fake_bzimage(&payload);
        let (compression, stream, size) = super::payload(&image).unwrap();
        assert_eq!(compression, Compression::Xz);
        assert_eq!(stream, b"\xfd7zXZ\0stream");
        assert_eq!(size, 1234);
    }

    /// An LZ4 legacy frame as `lz4 -l` writes it: magic, then (length, block) chunks.
    fn legacy_frame(chunks: &[&[u8]]) -> Vec<u8> {
        let mut frame = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in chunks {
            let block = lz4_flex::block::compress(chunk);
            frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
            frame.extend_from_slice(&block);
        }
        frame
    }

    #[test]
    fn lz4_legacy_frames_decode_chunk_by_chunk() {
        let a = b"\x7fELF"
            .iter()
            .chain(&[7u8; 5000])
            .copied()
            .collect::<Vec<u8>>();
        let b: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut payload = legacy_frame(&[&a, &b]);
        let total = a.len() + b.len();
        payload.extend_from_slice(&(total as u32).to_le_bytes());
        let image = fake_bzimage(&payload);
        let (compression, stream, size) = super::payload(&image).unwrap();
        assert_eq!(
            (compression, size as usize),
            (Compression::Lz4Legacy, total)
        );
        let out = lz4_legacy_decode(stream, total).unwrap();
        assert_eq!(out, [a.clone(), b].concat());
        // A frame that holds more than announced, or is cut short, is refused.
        assert!(lz4_legacy_decode(stream, 10)
            .unwrap_err()
            .contains("more than"));
        let cut = &stream[..stream.len() - 10];
        assert!(lz4_legacy_decode(cut, total).is_err());
        assert!(lz4_legacy_decode(b"nope", total).is_err());
    }

    #[test]
    fn unknown_compressions_and_garbage_are_rejected() {
        let image = fake_bzimage(b"\x1f\x8bgzipdata");
        assert!(super::payload(&image)
            .unwrap_err()
            .contains("neither XZ nor LZ4"));
        assert!(super::payload(b"short").is_err());
        let mut truncated = fake_bzimage(b"\xfd7zXZ\0stream0000");
        truncated.truncate(5 * 512 + 20);
        assert!(super::payload(&truncated).unwrap_err().contains("outside"));
    }
}
