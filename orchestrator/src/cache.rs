//! Location of Kiln's on-disk cache and content-addressed keys.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Root of the Kiln cache: `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
///
/// `KILN_CACHE_DIR` overrides both (tests and CI use it to isolate runs).
pub fn cache_root() -> PathBuf {
    cache_root_from(
        std::env::var_os("KILN_CACHE_DIR"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// Pure form of [`cache_root`], so the precedence rules can be tested.
pub fn cache_root_from(
    kiln: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if let Some(dir) = kiln.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = xdg.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("kiln");
    }
    let home = home
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("kiln")
}

/// Incremental builder of a cache key: a SHA-256 over length-prefixed fields,
/// so that field boundaries can never be confused ("ab"+"c" != "a"+"bc").
#[derive(Default)]
pub struct KeyHasher {
    hasher: Sha256,
}

impl KeyHasher {
    /// Start a key; `domain` separates unrelated kinds of keys.
    pub fn new(domain: &str) -> Self {
        let mut key = Self::default();
        key.field(domain.as_bytes());
        key
    }

    /// Add one field to the key.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    /// The hex-encoded key.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_precedence() {
        let root = cache_root_from(Some("/k".into()), Some("/x".into()), Some("/h".into()));
        assert_eq!(root, PathBuf::from("/k"));
        let root = cache_root_from(None, Some("/x".into()), Some("/h".into()));
        assert_eq!(root, PathBuf::from("/x/kiln"));
        let root = cache_root_from(Some("".into()), Some("".into()), Some("/h".into()));
        assert_eq!(root, PathBuf::from("/h/.cache/kiln"));
    }

    #[test]
    fn key_fields_are_length_prefixed() {
        let mut a = KeyHasher::new("t");
        a.field(b"ab").field(b"c");
        let mut b = KeyHasher::new("t");
        b.field(b"a").field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn key_is_stable_and_domain_separated() {
        let mut a = KeyHasher::new("one");
        a.field(b"x");
        let mut b = KeyHasher::new("one");
        b.field(b"x");
        let mut c = KeyHasher::new("two");
        c.field(b"x");
        let (a, b, c) = (a.finish(), b.finish(), c.finish());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
