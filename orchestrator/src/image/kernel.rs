//! Turning a bzImage into an uncompressed ELF `vmlinux`.
//!
//! Under TCG, decompressing Debian's XZ-packed generic kernel costs about
//! 3.5 s per boot. QEMU boots the ELF directly through its PVH entry point
//! (Debian kernels have CONFIG_PVH=y), so images that boot often ship it.

use super::error::ImageError;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The compressed payload of a bzImage (boot protocol >= 2.08), if it is XZ.
///
/// Returns the XZ stream and the uncompressed size the kernel build appended.
pub fn xz_payload(bzimage: &[u8]) -> Result<(&[u8], u32), String> {
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
        .get(start..start + len)
        .ok_or("payload lies outside the file")?;
    if !payload.starts_with(b"\xfd7zXZ\0") {
        return Err("payload is not XZ".into());
    }
    // The build appends the uncompressed size (u32 LE) after the stream.
    let (stream, size) = payload.split_at(len.saturating_sub(4));
    let size = u32::from_le_bytes(size.try_into().map_err(|_| "payload too short")?);
    Ok((stream, size))
}

/// Write the uncompressed ELF kernel of the bzImage `vmlinuz` to `out`, using
/// `xz` (xz-utils, part of every Debian system) for the x86 BCJ + LZMA2 stream.
pub fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<(), ImageError> {
    let bytes = std::fs::read(vmlinuz).map_err(ImageError::io("reading the kernel", vmlinuz))?;
    let bad = |reason: String| ImageError::BadRecipe {
        name: vmlinuz.display().to_string(),
        reason: format!("cannot uncompress the kernel: {reason}"),
    };
    let (stream, size) = xz_payload(&bytes).map_err(bad)?;
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
        let (stream, size) = xz_payload(&image).unwrap();
        assert_eq!(stream, b"\xfd7zXZ\0stream");
        assert_eq!(size, 1234);
    }

    #[test]
    fn non_xz_and_garbage_are_rejected() {
        let image = fake_bzimage(b"\x02\x21\x4c\x18lz4data");
        assert!(xz_payload(&image).unwrap_err().contains("not XZ"));
        assert!(xz_payload(b"short").is_err());
        let mut truncated = fake_bzimage(b"\xfd7zXZ\0stream0000");
        truncated.truncate(5 * 512 + 20);
        assert!(xz_payload(&truncated).unwrap_err().contains("outside"));
    }
}
