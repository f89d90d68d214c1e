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

impl Lines {
    /// Counts `n` more done at `now`, and returns the line to print when [`LINE_EVERY`] has passed since the last.
    fn advance(&mut self, n: usize, now: Instant) -> Option<String> {
        self.done += n;
        if now.duration_since(self.last) < LINE_EVERY {
            return None;
        }
        self.last = now;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let left = if self.done > 0 && self.done < self.total {
            format!(", about {:.0} s left", elapsed * (self.total - self.done) as f64 / self.done as f64)
        } else {
            String::new()
        };
        Some(format!("{}: {}/{} after {elapsed:.0} s{left}", self.label, self.done, self.total))
    }
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
        if let Some(l) = &mut *self.lines.lock().unwrap()
            && let Some(line) = l.advance(n, Instant::now())
        {
            eprintln!("{line}");
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
        self.lines.lock().unwrap().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_every_fifteen_seconds_with_the_time_left() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut l = Lines { label: "encoding".into(), total: 40, done: 0, started: t0, last: t0 };
        assert_eq!(l.advance(5, at(14)), None);
        assert_eq!(l.advance(5, at(15)).as_deref(), Some("encoding: 10/40 after 15 s, about 45 s left"));
        assert_eq!(l.advance(10, at(29)), None, "15 s after the last line, not after the start");
        assert_eq!(l.advance(20, at(31)).as_deref(), Some("encoding: 40/40 after 31 s"));
    }
}
