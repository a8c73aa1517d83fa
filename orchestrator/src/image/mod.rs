//! Guest images built from Debian packages into a content-addressed cache.
//!
//! `build("debian-minimal")` resolves the recipe's packages to exact versions
//! (`apt-cache`), and returns the cached image when one with the same key exists
//! (key = SHA-256 of recipe.toml, init and every package's name, version and
//! SHA256). Otherwise it downloads the .debs (`apt-get download`), unpacks them
//! (`dpkg-deb -x`), writes kernel + initramfs + manifest into a temporary
//! directory and renames it into place.

pub mod agent_bin;
pub mod apt;
pub mod cpio;
pub mod error;
pub mod initramfs;
pub mod kernel;
pub mod manifest;
pub mod modules;
pub mod progress;
pub mod recipe;
pub mod resolve;
pub mod rootfs;

pub use error::ImageError;
pub use manifest::Manifest;

use crate::cache::{cache_root, sha256_file, sha256_hex, KeyHasher};
use agent_bin::AgentBinary;
use apt::PackagePin;
use manifest::{ImageFile, ModuleEntry, MANIFEST_FORMAT};
use recipe::{AgentPlacement, Recipe};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the agent lives in an initramfs (the init script execs it).
pub const INITRAMFS_AGENT_PATH: &str = "bin/kiln-agent";

/// Bump when the build procedure changes what it produces for the same inputs.
const BUILDER_VERSION: &str = "kiln-image/2";

/// A built image in the cache.
#[derive(Debug, Clone)]
pub struct ImageDir {
    /// The image directory.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Whether it came from the cache without building.
    pub cache_hit: bool,
}

impl ImageDir {
    /// The kernel.
    pub fn kernel(&self) -> PathBuf {
        self.path.join("vmlinuz")
    }
    /// The uncompressed ELF kernel (PVH boot), for images that ship one.
    pub fn vmlinux(&self) -> Option<PathBuf> {
        self.manifest
            .file("vmlinux")
            .map(|_| self.path.join("vmlinux"))
    }
    /// The initramfs.
    pub fn initrd(&self) -> PathBuf {
        self.path.join("initrd.img")
    }
    /// The root disk, for images that have one.
    pub fn rootfs(&self) -> Option<PathBuf> {
        self.manifest
            .file("rootfs.ext4")
            .map(|_| self.path.join("rootfs.ext4"))
    }
    /// Suggested kernel command line.
    pub fn cmdline(&self) -> &str {
        &self.manifest.cmdline
    }

    /// Opens an image directory that was built before (it holds a `manifest.json`).
    pub fn open(dir: &Path) -> Result<ImageDir, ImageError> {
        load_existing(dir)?.ok_or_else(|| ImageError::BadRecipe {
            name: dir.display().to_string(),
            reason: "no manifest.json there: build the image with `orchestrator image build`"
                .into(),
        })
    }
}

/// Names of the images `build` knows.
pub fn names() -> Vec<&'static str> {
    recipe::names()
}

/// Build (or find in the cache) the image `name` under [`cache_root`].
pub fn build(name: &str) -> Result<ImageDir, ImageError> {
    build_in(name, &cache_root())
}

/// Build (or find) the image `name` in the cache rooted at `cache`.
pub fn build_in(name: &str, cache: &Path) -> Result<ImageDir, ImageError> {
    let started = Instant::now();
    let recipe = Recipe::load(name)?;
    let progress = progress::BuildProgress::new();
    let step = progress.step("resolving package versions");
    let pins = resolve::pins_for(&recipe, &cache.join("resolve"))?;
    let kernel = pins.get(1).cloned().ok_or_else(|| ImageError::BadRecipe {
        name: name.to_string(),
        reason: "kernel package did not resolve".into(),
    })?;
    step.finish_and_clear();
    let agent = match recipe.spec.agent {
        Some(_) => {
            let step = progress.step("building the static guest agent (about a minute when cold)");
            tracing::info!(image = name, "building the static guest agent");
            let agent = agent_bin::locate()?;
            step.finish_and_clear();
            tracing::info!(path = %agent.path.display(), sha256 = %agent.sha256, "guest agent ready");
            Some(agent)
        }
        None => None,
    };
    let key = cache_key(&recipe, &pins, agent.as_ref());
    let dir = cache.join("images").join(format!("{name}-{}", &key[..16]));
    if let Some(found) = load_existing(&dir)? {
        tracing::info!(image = name, path = %dir.display(), "image cache hit");
        return Ok(found);
    }
    tracing::info!(image = name, key = %key, "building image");

    let tmp_root = cache.join("tmp");
    std::fs::create_dir_all(&tmp_root).map_err(ImageError::io("creating the cache", &tmp_root))?;
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".build-{name}-"))
        .tempdir_in(&tmp_root)
        .map_err(ImageError::io("creating a build directory", &tmp_root))?;
    let out = scratch.path().join("image");
    let work = scratch.path().join("work");
    for d in [&out, &work] {
        std::fs::create_dir_all(d).map_err(ImageError::io("creating a build directory", d))?;
    }

    // Download (the metapackage itself holds no files; skip it).
    let wanted: Vec<&PackagePin> = pins
        .iter()
        .filter(|p| p.name == kernel.name || recipe.spec.files.iter().any(|f| f.package == p.name))
        .collect();
    let debs = download(&progress, &wanted, &cache.join("debs"))?;

    let step = progress.step("unpacking packages");
    for (pkg, deb) in &debs {
        apt::extract(deb, &work.join(pkg))?;
    }
    step.finish_and_clear();

    let step = progress.step("resolving kernel modules");
    let kernel_root = work.join(&kernel.name);
    let release = kernel_release(&kernel_root)?;
    let modules_dir = kernel_root.join("lib/modules").join(&release);
    let (packed_modules, module_entries) = collect_modules(&recipe, &modules_dir)?;
    step.finish_and_clear();

    let step = progress.step("writing initramfs");
    let mut files: Vec<initramfs::PackedFile> = recipe
        .spec
        .files
        .iter()
        .map(|f| initramfs::PackedFile {
            file: work.join(&f.package).join(&f.from),
            to: f.to.clone(),
        })
        .collect();
    if let (Some(AgentPlacement::Initramfs), Some(agent)) = (recipe.spec.agent, &agent) {
        files.push(initramfs::PackedFile {
            file: agent.path.clone(),
            to: INITRAMFS_AGENT_PATH.to_string(),
        });
    }
    let spec = initramfs::InitramfsSpec {
        init: &recipe.init,
        files,
        modules: packed_modules,
        image_id: format!("{name} {key}\n"),
    };
    initramfs::write(&spec, &out.join("initrd.img"))?;
    let vmlinuz = kernel_root.join("boot").join(format!("vmlinuz-{release}"));
    std::fs::copy(&vmlinuz, out.join("vmlinuz"))
        .map_err(ImageError::io("copying the kernel", &vmlinuz))?;
    let mut outputs = vec!["vmlinuz", "initrd.img"];
    if recipe.spec.uncompressed_kernel {
        kernel::extract_vmlinux(&vmlinuz, &out.join("vmlinux"))?;
        outputs.push("vmlinux");
    }
    step.finish_and_clear();

    let rootfs_agent = agent
        .as_ref()
        .filter(|_| recipe.spec.agent == Some(AgentPlacement::Rootfs));
    if let Some(rootfs_spec) = &recipe.spec.rootfs {
        let step = progress.step("building the root filesystem (mmdebstrap)");
        rootfs::build(
            rootfs_spec,
            &modules_dir,
            &release,
            &work,
            rootfs_agent.map(|a| a.path.as_path()),
            &out.join("rootfs.ext4"),
            |line| {
                step.set_message(format!("mmdebstrap: {line}"));
            },
        )?;
        outputs.push("rootfs.ext4");
        step.finish_and_clear();
    }

    let files = describe_outputs(&out, &outputs)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: name.to_string(),
        key: key.clone(),
        recipe_sha256: sha256_hex(recipe.recipe_text.as_bytes()),
        init_sha256: sha256_hex(recipe.init.as_bytes()),
        kernel_release: release,
        cmdline: recipe.spec.cmdline.clone(),
        packages: pins,
        modules: module_entries,
        agent_sha256: agent.as_ref().map(|a| a.sha256.clone()),
        files,
        built_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    let manifest_path = out.join("manifest.json");
    std::fs::write(&manifest_path, manifest.to_json())
        .map_err(ImageError::io("writing the manifest", &manifest_path))?;
    std::fs::remove_dir_all(&work).map_err(ImageError::io("removing build files", &work))?;
    publish(&out, &dir)?;
    Ok(ImageDir {
        path: dir,
        manifest,
        cache_hit: false,
    })
}

/// Fetch `pins` into the package cache with a byte progress bar.
fn download(
    progress: &progress::BuildProgress,
    pins: &[&PackagePin],
    debs_dir: &Path,
) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let total: u64 = pins.iter().map(|p| p.size).sum();
    let bar = progress.download(total);
    let mut debs = Vec::new();
    let mut done = 0;
    for pin in pins {
        bar.set_message(pin.name.clone());
        let deb = apt::fetch(pin, debs_dir, |bytes| {
            bar.set_position(done + bytes.min(pin.size))
        })?;
        done += pin.size;
        bar.set_position(done);
        debs.push((pin.name.clone(), deb));
    }
    bar.finish_and_clear();
    Ok(debs)
}

/// The recipe's modules plus dependencies, in load order, from `modules_dir`
/// (`lib/modules/<release>` of the unpacked kernel package).
fn collect_modules(
    recipe: &Recipe,
    modules_dir: &Path,
) -> Result<(Vec<initramfs::PackedModule>, Vec<ModuleEntry>), ImageError> {
    let index = modules::ModuleIndex::scan(modules_dir)?;
    let mut packed = Vec::new();
    let mut entries = Vec::new();
    for module in index.load_order(&recipe.spec.modules)? {
        let rel = index
            .relative_path(&module)
            .ok_or_else(|| modules::ModuleError::NotFound(module.clone()))?;
        let params = recipe.params_for(&module).to_string();
        packed.push(initramfs::PackedModule {
            file: modules_dir.join(rel),
            params: params.clone(),
        });
        entries.push(ModuleEntry {
            source: rel.display().to_string(),
            name: module,
            params,
        });
    }
    Ok((packed, entries))
}

/// Size and SHA-256 of each output file.
fn describe_outputs(out: &Path, names: &[&str]) -> Result<Vec<ImageFile>, ImageError> {
    names
        .iter()
        .map(|name| {
            let path = out.join(name);
            let size = std::fs::metadata(&path)
                .map_err(ImageError::io("reading an image file", &path))?
                .len();
            let sha256 =
                sha256_file(&path).map_err(ImageError::io("hashing an image file", &path))?;
            Ok(ImageFile {
                name: name.to_string(),
                size,
                sha256,
            })
        })
        .collect()
}

/// The cache key of a recipe with its exact package pins and guest agent.
pub fn cache_key(recipe: &Recipe, pins: &[PackagePin], agent: Option<&AgentBinary>) -> String {
    let mut key = KeyHasher::new(BUILDER_VERSION);
    key.field(recipe.name.as_bytes())
        .field(recipe.recipe_text.as_bytes())
        .field(recipe.init.as_bytes());
    if let Some(agent) = agent {
        key.field(agent.sha256.as_bytes())
            .field(agent_bin::SERVICE_UNIT.as_bytes())
            .field(agent_bin::NET_UNIT.as_bytes());
    }
    for pin in pins {
        key.field(pin.name.as_bytes())
            .field(pin.version.as_bytes())
            .field(pin.sha256.as_bytes());
    }
    key.finish()
}

/// The finished image at `dir`, if there is one.
fn load_existing(dir: &Path) -> Result<Option<ImageDir>, ImageError> {
    let path = dir.join("manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("reading a manifest", &path)(e)),
    };
    let manifest = Manifest::from_json(&text).map_err(|e| ImageError::BadRecipe {
        name: dir.display().to_string(),
        reason: format!("cached manifest.json is unreadable ({e}); delete that directory"),
    })?;
    Ok(Some(ImageDir {
        path: dir.to_path_buf(),
        manifest,
        cache_hit: true,
    }))
}

/// Move a finished image into place atomically; a concurrent build of the same
/// key that won the race is as good as ours.
fn publish(from: &Path, to: &Path) -> Result<(), ImageError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .map_err(ImageError::io("creating the image cache", parent))?;
    }
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) if to.join("manifest.json").exists() => Ok(()),
        Err(e) => Err(ImageError::io("moving the image into the cache", to)(e)),
    }
}

/// The single kernel release under `boot/vmlinuz-*` of an unpacked kernel package.
fn kernel_release(root: &Path) -> Result<String, ImageError> {
    let boot = root.join("boot");
    let entries =
        std::fs::read_dir(&boot).map_err(ImageError::io("reading the kernel package", &boot))?;
    entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .next()
        .ok_or_else(|| ImageError::BadRecipe {
            name: root.display().to_string(),
            reason: "the kernel package has no boot/vmlinuz-*".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(name: &str, version: &str, sha: &str) -> PackagePin {
        PackagePin {
            name: name.into(),
            version: version.into(),
            sha256: sha.into(),
            size: 1,
        }
    }

    #[test]
    fn key_changes_with_any_input() {
        let recipe = Recipe::load("debian-minimal").unwrap();
        let pins = vec![
            pin("linux-image-x", "1", "aa"),
            pin("busybox-static", "2", "bb"),
        ];
        let base = cache_key(&recipe, &pins, None);
        assert_eq!(base, cache_key(&recipe, &pins, None));
        let newer = vec![
            pin("linux-image-x", "1", "aa"),
            pin("busybox-static", "3", "bb"),
        ];
        assert_ne!(base, cache_key(&recipe, &newer, None));
        let rehashed = vec![
            pin("linux-image-x", "1", "aa"),
            pin("busybox-static", "2", "cc"),
        ];
        assert_ne!(base, cache_key(&recipe, &rehashed, None));
        let mut edited = recipe.clone();
        edited.init.push_str("# edit\n");
        assert_ne!(base, cache_key(&edited, &pins, None));
        let other = Recipe::load("host").unwrap();
        assert_ne!(base, cache_key(&other, &pins, None));
        // A changed agent is a new image; the same agent is the same key.
        let agent = |sha: &str| AgentBinary {
            path: "/a".into(),
            sha256: sha.into(),
        };
        let with_agent = cache_key(&recipe, &pins, Some(&agent("11")));
        assert_ne!(base, with_agent);
        assert_eq!(with_agent, cache_key(&recipe, &pins, Some(&agent("11"))));
        assert_ne!(with_agent, cache_key(&recipe, &pins, Some(&agent("12"))));
    }

    #[test]
    fn existing_image_is_a_cache_hit_and_publish_is_atomic() {
        let cache = tempfile::tempdir().unwrap();
        let dest = cache.path().join("images/x-0123");
        assert!(load_existing(&dest).unwrap().is_none());
        let built = cache.path().join("tmp/out");
        std::fs::create_dir_all(&built).unwrap();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: "x".into(),
            key: "k".into(),
            recipe_sha256: String::new(),
            init_sha256: String::new(),
            kernel_release: "r".into(),
            cmdline: "console=ttyS0".into(),
            packages: vec![],
            modules: vec![],
            agent_sha256: None,
            files: vec![],
            built_at_unix: 0,
            build_seconds: 0.0,
        };
        std::fs::write(built.join("manifest.json"), manifest.to_json()).unwrap();
        publish(&built, &dest).unwrap();
        let found = load_existing(&dest).unwrap().unwrap();
        assert!(found.cache_hit);
        assert_eq!(found.manifest, manifest);
        assert_eq!(found.cmdline(), "console=ttyS0");
        assert!(found.rootfs().is_none());
        // A second build of the same key losing the race is fine.
        let again = cache.path().join("tmp/out2");
        std::fs::create_dir_all(&again).unwrap();
        std::fs::write(again.join("manifest.json"), manifest.to_json()).unwrap();
        std::fs::write(again.join("extra"), "x").unwrap();
        publish(&again, &dest).unwrap();
    }

    #[test]
    fn corrupt_manifest_is_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        std::fs::write(cache.path().join("manifest.json"), "{").unwrap();
        let err = load_existing(cache.path()).unwrap_err().to_string();
        assert!(err.contains("delete that directory"), "{err}");
    }
}
