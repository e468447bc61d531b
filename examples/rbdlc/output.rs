//! Output for rbdlc: one JSON object on stdout with `--json`, human lines otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Where a subcommand's results go.
pub struct Out {
    pub json: bool,
}

impl Out {
    /// A human line (stderr-free, stdout) unless `--json`.
    pub fn line(&self, s: impl AsRef<str>) {
        if !self.json {
            println!("{}", s.as_ref());
        }
    }

    /// Prints the final result: the JSON object with `--json`, or `human` lines.
    pub fn result(&self, v: Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{v}");
        } else {
            let s = human(&v);
            if !s.is_empty() {
                println!("{s}");
            }
        }
    }

    /// A progress bar on stderr (hidden with `--json` or when stderr is not a terminal).
    pub fn bar(&self, msg: &str, total: u64) -> ProgressBar {
        let pb = if self.json { ProgressBar::hidden() } else { ProgressBar::new(total) };
        pb.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
