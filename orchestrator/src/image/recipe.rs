//! Image recipes: `images/<name>/recipe.toml` plus `images/<name>/init`,
//! compiled into the binary so it builds images from any directory.

use super::error::ImageError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// (name, recipe.toml, init) of every known image.
const RECIPES: &[(&str, &str, &str)] = &[
    (
        "debian-minimal",
        include_str!("../../../images/debian-minimal/recipe.toml"),
        include_str!("../../../images/debian-minimal/init"),
    ),
    (
        "debian-node",
        include_str!("../../../images/debian-node/recipe.toml"),
        include_str!("../../../images/debian-node/init"),
    ),
    (
        "host",
        include_str!("../../../images/host/recipe.toml"),
        include_str!("../../../images/host/init"),
    ),
];

/// A file copied from a Debian package into the initramfs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PackageFile {
    /// Debian package holding the file.
    pub package: String,
    /// Path inside the package.
    pub from: String,
    /// Path inside the initramfs.
    pub to: String,
}

/// A Debian root filesystem made with mmdebstrap, packed as ext4.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RootfsSpec {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// Archive mirror.
    pub mirror: String,
    /// Packages to install (with their dependencies).
    pub include: Vec<String>,
    /// Size of `rootfs.ext4` in MiB.
    pub size_mib: u32,
    /// systemd units the packages enable that should not start at boot (`etcd`
    /// means `etcd.service`); a node's setup enables what its role needs.
    #[serde(default)]
    pub disable: Vec<String>,
    /// systemd units that never start, not even as a dependency (linked to /dev/null):
    /// work a test node has no use for.
    #[serde(default)]
    pub mask: Vec<String>,
    /// systemd generators that never run (linked to /dev/null in
    /// `/etc/systemd/system-generators`): each runs on every boot and daemon-reload.
    #[serde(default)]
    pub mask_generators: Vec<String>,
    /// Files written into the root filesystem (configuration, systemd drop-ins).
    #[serde(default)]
    pub files: Vec<RootfsFile>,
}

/// A file a recipe writes into its root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RootfsFile {
    /// Absolute path inside the root filesystem.
    pub path: String,
    /// Its whole content.
    pub text: String,
}

/// Where an image carries the Kiln guest agent.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentPlacement {
    /// `/bin/kiln-agent` in the initramfs; the init execs it as PID 1.
    Initramfs,
    /// `/usr/local/bin/kiln-agent` in `rootfs.ext4` with an enabled systemd unit.
    Rootfs,
}

/// The parsed `recipe.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipeSpec {
    /// One line saying what the image is for.
    pub description: String,
    /// Kernel metapackage, e.g. `linux-image-cloud-amd64`.
    pub kernel: String,
    /// Modules to load at boot (dependencies are added).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Parameters per module, e.g. `kvm_amd = "nested=1"`.
    #[serde(default)]
    pub module_params: BTreeMap<String, String>,
    /// Suggested kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// Also ship `vmlinux`, the uncompressed ELF kernel (faster boots under TCG).
    #[serde(default)]
    pub uncompressed_kernel: bool,
    /// Files taken from other packages.
    #[serde(default)]
    pub files: Vec<PackageFile>,
    /// A root disk, for images that have one.
    #[serde(default)]
    pub rootfs: Option<RootfsSpec>,
    /// Where the guest agent goes (none when absent).
    #[serde(default)]
    pub agent: Option<AgentPlacement>,
}

/// A recipe with its source text (the text is part of the cache key).
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Image name.
    pub name: String,
    /// Parsed recipe.
    pub spec: RecipeSpec,
    /// Raw `recipe.toml`.
    pub recipe_text: String,
    /// Raw `init` script.
    pub init: String,
}

/// Names of all recipes.
pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r.0).collect()
}

impl Recipe {
    /// Look up and parse a built-in recipe.
    pub fn load(name: &str) -> Result<Self, ImageError> {
        let (_, text, init) =
            RECIPES
                .iter()
                .find(|r| r.0 == name)
                .ok_or_else(|| ImageError::UnknownImage {
                    name: name.to_string(),
                    known: names().join(", "),
                })?;
        Self::parse(name, text, init)
    }

    /// Parse a recipe from its texts.
    pub fn parse(name: &str, recipe_text: &str, init: &str) -> Result<Self, ImageError> {
        let bad = |reason: String| ImageError::BadRecipe {
            name: name.to_string(),
            reason,
        };
        let spec: RecipeSpec = toml::from_str(recipe_text).map_err(|e| bad(e.to_string()))?;
        if !init.starts_with("#!") {
            return Err(bad("init must start with #!".into()));
        }
        for file in spec.rootfs.iter().flat_map(|r| &r.files) {
            let path = std::path::Path::new(&file.path);
            let escapes = path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            if !path.is_absolute() || escapes || path.parent().is_none() {
                return Err(bad(format!(
                    "rootfs file path {:?} must be absolute and stay inside the root filesystem \
                     (no `..`)",
                    file.path
                )));
            }
        }
        if spec.agent == Some(AgentPlacement::Rootfs) && spec.rootfs.is_none() {
            return Err(bad("agent = \"rootfs\" needs a [rootfs] section".into()));
        }
        for param_module in spec.module_params.keys() {
            let wanted = super::modules::normalize(param_module);
            if !spec
                .modules
                .iter()
                .any(|m| super::modules::normalize(m) == wanted)
            {
                return Err(bad(format!(
                    "module_params names `{param_module}`, which is not in modules"
                )));
            }
        }
        Ok(Self {
            name: name.to_string(),
            spec,
            recipe_text: recipe_text.to_string(),
            init: init.to_string(),
        })
    }

    /// Packages named for the root filesystem (empty without one).
    pub fn rootfs_packages(&self) -> &[String] {
        self.spec
            .rootfs
            .as_ref()
            .map(|r| r.include.as_slice())
            .unwrap_or(&[])
    }

    /// Parameters for a module, if any.
    pub fn params_for(&self, module: &str) -> &str {
        let wanted = super::modules::normalize(module);
        self.spec
            .module_params
            .iter()
            .find(|(k, _)| super::modules::normalize(k) == wanted)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipes_parse() {
        for name in names() {
            let recipe = Recipe::load(name).unwrap();
            assert!(!recipe.spec.modules.is_empty(), "{name}");
        }
        let host = Recipe::load("host").unwrap();
        assert_eq!(host.params_for("kvm-amd"), "nested=1");
        assert_eq!(host.params_for("kvm"), "");
        assert_eq!(host.spec.agent, None);
        let minimal = Recipe::load("debian-minimal").unwrap();
        assert_eq!(minimal.spec.agent, Some(AgentPlacement::Initramfs));
        let node = Recipe::load("debian-node").unwrap();
        assert_eq!(node.spec.agent, Some(AgentPlacement::Rootfs));
    }

    #[test]
    fn unknown_image_lists_known_ones() {
        let err = Recipe::load("nope").unwrap_err().to_string();
        assert!(err.contains("unknown image `nope`"), "{err}");
        assert!(err.contains("debian-minimal"), "{err}");
    }

    #[test]
    fn bad_recipes_are_rejected() {
        let init = "#!/bin/sh\n";
        assert!(Recipe::parse("x", "description = 1", init).is_err());
        assert!(
            Recipe::parse("x", "description = \"d\"\nkernel = \"k\"\nbogus = 1", init).is_err()
        );
        let params = "description = \"d\"\nkernel = \"k\"\n[module_params]\nkvm = \"x=1\"\n";
        assert!(Recipe::parse("x", params, init)
            .unwrap_err()
            .to_string()
            .contains("kvm"));
        assert!(Recipe::parse("x", "description = \"d\"\nkernel = \"k\"", "echo").is_err());
        let no_rootfs = "description = \"d\"\nkernel = \"k\"\nagent = \"rootfs\"\n";
        assert!(Recipe::parse("x", no_rootfs, init)
            .unwrap_err()
            .to_string()
            .contains("[rootfs]"));
        let rootfs = "description = \"d\"\nkernel = \"k\"\n[rootfs]\nsuite = \"s\"\n\
                      mirror = \"m\"\ninclude = []\nsize_mib = 1\n";
        for path in ["etc/relative", "/etc/../../escape", "/"] {
            let text = format!("{rootfs}[[rootfs.files]]\npath = {path:?}\ntext = \"\"\n");
            let err = Recipe::parse("x", &text, init).unwrap_err().to_string();
            assert!(err.contains("must be absolute"), "{path}: {err}");
        }
        let good = format!("{rootfs}[[rootfs.files]]\npath = \"/etc/x.conf\"\ntext = \"y\"\n");
        assert!(Recipe::parse("x", &good, init).is_ok());
    }
}
