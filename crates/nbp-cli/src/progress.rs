//! Progress reports for the library's [`Progress`] trait: a bar on a terminal, and otherwise (logs, CI, pipes)
//! a plain line now and then, so that long work never runs for minutes without a word.

use indicatif::{ProgressBar, ProgressStyle};
use nbp_core::progress::Progress;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds between two progress lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(15);

/// An indicatif progress bar when stderr is a terminal; otherwise a line every [`LINE_EVERY`] of a phase.
#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    lines: Mutex<Option<Lines>>,
}

/// A phase reported in plain lines.
struct Lines {
    label: String,
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl Progress for Bar {
    fn start(&self, label: &str, total: usize) {
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            *self.lines.lock().unwrap() =
                Some(Lines { label: label.to_string(), total, done: 0, started: now, last: now });
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        *self.bar.lock().unwrap() = Some(bar);
    }
    fn advance(&self, n: usize) {
        if let Some(b) = &*self.bar.lock().unwrap() {
            b.inc(n as u64);
        }
        if let Some(l) = &mut *self.lines.lock().unwrap() {
            l.done += n;
            if l.last.elapsed() >= LINE_EVERY {
                l.last = Instant::now();
                let elapsed = l.started.elapsed().as_secs_f64();
                let left = if l.done > 0 && l.done < l.total {
                    format!(", about {:.0} s left", elapsed * (l.total - l.done) as f64 / l.done as f64)
                } else {
                    String::new()
                };
                eprintln!("{}: {}/{} after {elapsed:.0} s{left}", l.label, l.done, l.total);
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
        self.lines.lock().unwrap().take();
    }
}
