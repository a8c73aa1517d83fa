//! `manifest.json`: what an image was built from and what it contains.

use super::apt::PackagePin;
use serde::{Deserialize, Serialize};

/// A file of the image with its size and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// File name inside the image directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

/// A kernel module packed into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// Module name.
    pub name: String,
    /// Path in the kernel package, relative to `lib/modules/<release>`.
    pub source: String,
    /// Parameters given to insmod.
    pub params: String,
}

/// Contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Image (recipe) name.
    pub name: String,
    /// Full cache key (hex SHA-256 of recipe, init and package pins).
    pub key: String,
    /// SHA-256 of the recipe.toml text.
    pub recipe_sha256: String,
    /// SHA-256 of the init script.
    pub init_sha256: String,
    /// Kernel release (`uname -r` of the guest).
    pub kernel_release: String,
    /// Suggested kernel command line.
    pub cmdline: String,
    /// Every Debian package used, with exact version and hash.
    pub packages: Vec<PackagePin>,
    /// Modules in load order.
    pub modules: Vec<ModuleEntry>,
    /// SHA-256 of the guest agent binary, for images that carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_sha256: Option<String>,
    /// Output files.
    pub files: Vec<ImageFile>,
    /// Build time in seconds since the Unix epoch.
    pub built_at_unix: u64,
    /// How long the build took.
    pub build_seconds: f64,
}

/// Current manifest format.
pub const MANIFEST_FORMAT: u32 = 1;

impl Manifest {
    /// Serialize as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse from JSON.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The entry for an output file.
    pub fn file(&self, name: &str) -> Option<&ImageFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_roundtrip() {
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: "debian-minimal".into(),
            key: "ab".repeat(32),
            recipe_sha256: "11".into(),
            init_sha256: "22".into(),
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            cmdline: "console=ttyS0".into(),
            packages: vec![PackagePin {
                name: "busybox-static".into(),
                version: "1:1.35.0-4".into(),
                sha256: "33".into(),
                size: 928188,
            }],
            modules: vec![ModuleEntry {
                name: "kvm_amd".into(),
                source: "kernel/arch/x86/kvm/kvm-amd.ko".into(),
                params: "nested=1".into(),
            }],
            agent_sha256: Some("55".into()),
            files: vec![ImageFile {
                name: "vmlinuz".into(),
                size: 7,
                sha256: "44".into(),
            }],
            built_at_unix: 1,
            build_seconds: 2.5,
        };
        let json = manifest.to_json();
        assert!(json.contains("\"kernel_release\": \"6.1.0-56-cloud-amd64\""));
        assert_eq!(Manifest::from_json(&json).unwrap(), manifest);
        assert_eq!(manifest.file("vmlinuz").unwrap().size, 7);
        assert!(manifest.file("rootfs.ext4").is_none());
    }
}
