//! Assembles the initramfs: init, busybox, kernel modules and device nodes.

use super::cpio::CpioWriter;
use super::error::ImageError;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A module to pack: file on disk, and insmod parameters.
pub struct PackedModule {
    /// The `.ko` file.
    pub file: PathBuf,
    /// insmod parameters.
    pub params: String,
}

/// A file from a package to pack at `to`.
pub struct PackedFile {
    /// File on disk.
    pub file: PathBuf,
    /// Path in the initramfs.
    pub to: String,
}

/// Everything the initramfs holds.
pub struct InitramfsSpec<'a> {
    /// The /init script.
    pub init: &'a str,
    /// Files from packages (busybox).
    pub files: Vec<PackedFile>,
    /// Modules in load order.
    pub modules: Vec<PackedModule>,
    /// Text of /etc/kiln/image.
    pub image_id: String,
}

const DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "mnt",
    "etc",
    "etc/kiln",
    "lib",
    "lib/modules",
    "root",
];

/// Write an uncompressed newc initramfs to `out`.
///
/// Uncompressed on purpose: it is a few MiB, and skipping decompression is
/// measurably faster under TCG than saving the copy.
pub fn write(spec: &InitramfsSpec<'_>, out: &Path) -> Result<(), ImageError> {
    let file = std::fs::File::create(out).map_err(ImageError::io("creating the initramfs", out))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    let io = ImageError::io("writing the initramfs", out);
    (|| -> std::io::Result<()> {
        for dir in DIRS {
            cpio.dir(dir, 0o755)?;
        }
        cpio.char_dev("dev/console", 0o600, 5, 1)?;
        cpio.char_dev("dev/null", 0o666, 1, 3)?;
        cpio.file("init", 0o755, spec.init.as_bytes())?;
        for packed in &spec.files {
            let data = std::fs::read(&packed.file)?;
            cpio.file(&packed.to, 0o755, &data)?;
        }
        let mut list = String::new();
        for module in &spec.modules {
            let base = module
                .file
                .file_name()
                .and_then(|f| f.to_str())
                .ok_or_else(|| std::io::Error::other("module file name is not UTF-8"))?;
            cpio.file(
                &format!("lib/modules/{base}"),
                0o644,
                &std::fs::read(&module.file)?,
            )?;
            list.push_str(base);
            if !module.params.is_empty() {
                list.push(' ');
                list.push_str(&module.params);
            }
            list.push('\n');
        }
        cpio.file("etc/kiln/modules", 0o644, list.as_bytes())?;
        cpio.file("etc/kiln/image", 0o644, spec.image_id.as_bytes())?;
        cpio.finish()?.flush()
    })()
    .map_err(io)
}
