//! Terminal progress bars for the library's [`Progress`] trait.

use indicatif::{ProgressBar, ProgressStyle};
use nbp_core::progress::Progress;
use std::sync::Mutex;

/// An indicatif progress bar (hidden when stderr is not a terminal).
#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, label: &str, total: usize) {
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
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
}
