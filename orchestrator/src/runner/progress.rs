//! The live view of a run on stderr: a spinner per booting node and one for the running
//! step, each with its elapsed time; finished lines stay. Without a terminal (CI logs) the
//! same events print as plain lines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The live view of one run.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    tty: bool,
    started: Instant,
}

/// A line that is live until finished.
pub struct Live {
    bar: ProgressBar,
    progress: Progress,
    label: String,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A view on stderr (animated when stderr is a terminal).
    pub fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        let target = if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            tty,
            started: Instant::now(),
        }
    }

    /// Prints a finished line above the live ones.
    pub fn line(&self, text: &str) {
        let stamped = format!("[{:>6}] {text}", clock(self.started.elapsed()));
        if self.tty {
            let _ = self.multi.println(stamped);
        } else {
            eprintln!("{stamped}");
        }
    }

    /// Starts a live line: `label` with a spinner and elapsed time.
    pub fn start(&self, label: impl Into<String>) -> Live {
        let label = label.into();
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise:>8}] {spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(label.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        if !self.tty {
            self.line(&format!("… {label}"));
        }
        Live {
            bar,
            progress: self.clone(),
            label,
            started: Instant::now(),
        }
    }
}

impl Live {
    /// Changes the live text (e.g. the phase a node is in); without a terminal each change
    /// prints a line.
    pub fn set(&self, text: &str) {
        self.bar.set_message(format!("{} ({text})", self.label));
        if !self.progress.tty {
            self.progress.line(&format!("… {}: {text}", self.label));
        }
    }

    /// Ends the line with a mark (`ok`, `FAIL`, ...) and an optional note.
    pub fn finish(self, mark: &str, note: Option<&str>) -> Duration {
        let took = self.started.elapsed();
        self.bar.finish_and_clear();
        self.progress.multi.remove(&self.bar);
        let note = note.map(|n| format!(": {n}")).unwrap_or_default();
        self.progress.line(&format!(
            "{mark:<4} {} ({:.1}s){note}",
            self.label,
            took.as_secs_f64()
        ));
        took
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}
