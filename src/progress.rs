//! Progress bars for long work (copies, salvage): shown on a terminal,
//! never on a pipe.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether long work draws a bar on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    pub fn new(visible: bool) -> Progress {
        Progress { visible }
    }

    pub fn hidden() -> Progress {
        Progress { visible: false }
    }

    /// A byte-count bar for copying `total` bytes; hidden when not visible.
    pub fn bytes(&self, label: &str, total: u64) -> ProgressBar {
        self.bar(
            label,
            total,
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
    }

    /// A bar over `total` tables (salvage copies a table at a time).
    pub fn tables(&self, label: &str, total: u64) -> ProgressBar {
        self.bar(
            label,
            total,
            "{msg:>12} [{bar:30}] {pos}/{len} tables {per_sec} eta {eta}",
        )
    }

    fn bar(&self, label: &str, total: u64, template: &str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar
    }
}
