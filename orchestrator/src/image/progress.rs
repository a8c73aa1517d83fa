//! Progress bars for image builds (drawn on stderr only when it is a terminal).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::time::Duration;

/// The progress display of one build.
pub struct BuildProgress {
    multi: MultiProgress,
}

impl BuildProgress {
    /// A display on stderr.
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
        }
    }

    /// A byte bar for downloading `total` bytes.
    pub fn download(&self, total: u64) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{spinner} download {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = self.multi.add(ProgressBar::new(total).with_style(style));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A spinner for one build step.
    pub fn step(&self, message: &str) -> ProgressBar {
        let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

impl Default for BuildProgress {
    fn default() -> Self {
        Self::new()
    }
}
