//! Errors of image building.

use std::path::PathBuf;

/// Anything that stops an image build.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No recipe of that name.
    #[error("unknown image `{name}`: known images are {known}")]
    UnknownImage {
        /// What was asked for.
        name: String,
        /// Comma-separated list of recipes.
        known: String,
    },
    /// A recipe file is malformed (a bug in `images/`).
    #[error("recipe `{name}` is invalid: {reason}")]
    BadRecipe {
        /// Recipe name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An external tool (apt-cache, apt-get, dpkg-deb) failed.
    #[error("`{command}` failed: {detail}\n  hint: {hint}")]
    Tool {
        /// The command line.
        command: String,
        /// Its error output or the spawn error.
        detail: String,
        /// How to fix it.
        hint: String,
    },
    /// A downloaded package does not match the archive's hash.
    #[error("package {package}: SHA256 {got} does not match the archive's {want}")]
    HashMismatch {
        /// Package name.
        package: String,
        /// Expected.
        want: String,
        /// Actual.
        got: String,
    },
    /// The guest agent could not be built or found.
    #[error("guest agent for the image: {reason}")]
    Agent {
        /// What went wrong and how to fix it.
        reason: String,
    },
    /// Kernel module lookup failed.
    #[error(transparent)]
    Module(#[from] super::modules::ModuleError),
    /// Filesystem error.
    #[error("{context} ({path}): {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl ImageError {
    /// Shorthand for an [`ImageError::Io`] mapper.
    pub fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            context,
            path,
            source,
        }
    }
}
