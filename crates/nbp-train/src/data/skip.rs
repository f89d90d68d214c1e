//! Skip-and-report: unreadable videos are skipped (with a warning) instead of stopping a run, and listed at
//! the end.
//!
//! Only files that cannot be read or decoded (missing, corrupt, truncated before the first frame, no frame at
//! the requested rate) are skipped. Short videos are not: they are padded with black frames, as the official
//! loader does. Configuration errors (ffmpeg not installed, invalid options) stop at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use nbp_core::{Error, Result};

use super::{Clip, ClipSource, out_of_range};

/// How many skipped files a summary names before it says "and N more".
const NAMED_IN_SUMMARY: usize = 10;

/// A thread-safe record of the videos that were skipped and why; clones share the same record.
#[derive(Debug, Clone, Default)]
pub struct SkipLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug, Default)]
struct LogInner {
    /// `(source, reason)`, one entry per source, in the order they were first skipped.
    entries: Vec<(String, String)>,
    seen: HashSet<String>,
    /// Videos of the datasets this log covers.
    total: usize,
}

impl SkipLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `source` was skipped because of `reason`. Returns `true` the first time a source is
    /// recorded (later records of the same source are ignored).
    pub fn record(&self, source: impl Into<String>, reason: impl Into<String>) -> bool {
        let source = source.into();
        let mut inner = self.lock();
        if !inner.seen.insert(source.clone()) {
            return false;
        }
        inner.entries.push((source, reason.into()));
        true
    }

    /// Adds `n` to the number of videos this log covers (done by [`Skipping::with_log`]).
    pub fn add_total(&self, n: usize) {
        self.lock().total += n;
    }

    /// Number of videos of the datasets this log covers.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// `(source, reason)` of every skipped video, in the order they were first skipped.
    pub fn entries(&self) -> Vec<(String, String)> {
        self.lock().entries.clone()
    }

    /// Number of skipped videos.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no video was skipped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One line for the end of a run, e.g. `2 of 40 videos were skipped (unreadable or corrupt): a.mp4, b.mp4`,
    /// or `None` when nothing was skipped.
    pub fn summary(&self) -> Option<String> {
        let inner = self.lock();
        let n = inner.entries.len();
        if n == 0 {
            return None;
        }
        let count = if inner.total > 0 { format!("{n} of {}", inner.total) } else { n.to_string() };
        let noun = if inner.total.max(n) == 1 { "video" } else { "videos" };
        let verb = if n == 1 { "was" } else { "were" };
        let names: Vec<&str> = inner.entries.iter().take(NAMED_IN_SUMMARY).map(|(s, _)| s.as_str()).collect();
        let more = n.saturating_sub(NAMED_IN_SUMMARY);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        Some(format!("{count} {noun} {verb} skipped (unreadable or corrupt): {}{more}", names.join(", ")))
    }
}

/// The file and the reason of an error that means "this video cannot be used", or `None` for an error that
/// must stop the run.
fn skippable(error: &Error) -> Option<(String, String)> {
    match error {
        Error::File { path, message } => Some((path.display().to_string(), message.clone())),
        Error::Io { path, error: source } => Some((path.display().to_string(), source.to_string())),
        Error::Invalid(_) | Error::External(_) => None,
    }
}

/// A [`ClipSource`] that skips unreadable videos: when clip `i` fails to decode, a line
/// `warning: skipped <path>: <reason>` goes to stderr (once per file), the file is recorded in the [`SkipLog`],
/// and clips `i + 1, i + 2, …` are tried instead, wrapping around within `i`'s part of the dataset (see
/// [`Skipping::split_at`]: a held-out clip is never replaced by a training clip, nor the other way round). A file
/// that failed once is not decoded again.
#[derive(Debug)]
pub struct Skipping<S> {
    inner: S,
    log: SkipLog,
    bad: Mutex<HashSet<usize>>,
    /// Indices where a new part of the dataset starts (ascending).
    splits: Vec<usize>,
}

impl<S: ClipSource> Skipping<S> {
    /// Wraps `inner` with a new log.
    pub fn new(inner: S) -> Self {
        Self::with_log(inner, SkipLog::new())
    }

    /// Wraps `inner`, recording into `log` (which may be shared with other sources: its total grows by
    /// `inner.len()`).
    pub fn with_log(inner: S, log: SkipLog) -> Self {
        log.add_total(inner.len());
        Self::sharing(inner, log)
    }

    /// Wraps `inner`, recording into `log` without counting its videos again: for a second view (another split
    /// or clip rule) of a dataset that `log` already covers.
    pub fn sharing(inner: S, log: SkipLog) -> Self {
        Self { inner, log, bad: Mutex::new(HashSet::new()), splits: vec![] }
    }

    /// Divides the dataset at `index` (for example between training and held-out clips): an unreadable clip is
    /// replaced by another of its own part only.
    pub fn split_at(mut self, index: usize) -> Self {
        self.splits.push(index);
        self.splits.sort_unstable();
        self
    }

    /// The part `[start, end)` of the dataset that holds `index`.
    fn part(&self, index: usize) -> (usize, usize) {
        let start = self.splits.iter().copied().filter(|&b| b <= index).max().unwrap_or(0);
        let end = self.splits.iter().copied().filter(|&b| b > index).min().unwrap_or(self.inner.len());
        (start, end)
    }

    /// The log of skipped videos.
    pub fn log(&self) -> &SkipLog {
        &self.log
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped source, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Clip `index`, or `None` (with the warning and the log entry) when its video cannot be read: for clips
    /// that must not be replaced by another.
    pub fn clip_or_skip(&self, index: usize, seed: u64) -> Result<Option<Clip>> {
        if self.is_bad(index) {
            return Ok(None);
        }
        match self.inner.clip(index, seed) {
            Ok(clip) => Ok(Some(clip)),
            Err(e) => {
                let Some((source, reason)) = skippable(&e) else { return Err(e) };
                self.bad.lock().unwrap_or_else(PoisonError::into_inner).insert(index);
                if self.log.record(source.clone(), reason.clone()) {
                    eprintln!("warning: skipped {source}: {reason}");
                }
                Ok(None)
            }
        }
    }

    fn is_bad(&self, index: usize) -> bool {
        self.bad.lock().unwrap_or_else(PoisonError::into_inner).contains(&index)
    }
}

impl<S: ClipSource> ClipSource for Skipping<S> {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn clip(&self, index: usize, seed: u64) -> Result<Clip> {
        let n = self.inner.len();
        if index >= n {
            return Err(out_of_range(index, n));
        }
        let (start, end) = self.part(index);
        let len = end - start;
        for k in 0..len {
            let i = start + (index - start + k) % len;
            if let Some(clip) = self.clip_or_skip(i, seed)? {
                return Ok(clip);
            }
        }
        let which = if len == n { format!("the {n} videos") } else { format!("videos {start}..{end} of {n}") };
        Err(Error::invalid(format!(
            "none of {which} of the dataset could be read ({}); {}",
            self.inner.describe(),
            self.log.summary().unwrap_or_default()
        )))
    }

    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbp_core::video::Video;

    /// Items listed in `bad` fail with a file error, the others succeed.
    struct Fake {
        n: usize,
        bad: Vec<usize>,
        calls: Mutex<Vec<usize>>,
    }

    impl ClipSource for Fake {
        fn len(&self) -> usize {
            self.n
        }
        fn clip(&self, index: usize, _seed: u64) -> Result<Clip> {
            self.calls.lock().unwrap().push(index);
            if self.bad.contains(&index) {
                return Err(Error::file(format!("v{index}.mp4"), "cannot be decoded as a video: moov atom not found"));
            }
            let source = format!("v{index}.mp4");
            Ok(Clip { video: Video::black(1, 1, 1), label: 0, text: String::new(), source, padded: 0 })
        }
        fn class_names(&self) -> Vec<String> {
            vec![String::new()]
        }
        fn describe(&self) -> String {
            format!("fake: {} videos", self.n)
        }
    }

    fn fake(n: usize, bad: &[usize]) -> Fake {
        Fake { n, bad: bad.to_vec(), calls: Mutex::new(vec![]) }
    }

    #[test]
    fn skips_to_the_next_readable_item_and_wraps() {
        let s = Skipping::new(fake(5, &[1, 2, 4]));
        assert_eq!(s.clip(0, 0).unwrap().source, "v0.mp4");
        assert_eq!(s.clip(1, 0).unwrap().source, "v3.mp4");
        assert_eq!(s.clip(4, 0).unwrap().source, "v0.mp4");
        // Known bad items are not decoded again.
        assert_eq!(s.clip(2, 0).unwrap().source, "v3.mp4");
        assert_eq!(*s.inner().calls.lock().unwrap(), vec![0, 1, 2, 3, 4, 0, 3]);
        assert_eq!(s.log().len(), 3);
        assert_eq!(
            s.log().summary().unwrap(),
            "3 of 5 videos were skipped (unreadable or corrupt): v1.mp4, v2.mp4, v4.mp4"
        );
        assert_eq!(s.log().entries()[0].1, "cannot be decoded as a video: moov atom not found");
    }

    #[test]
    fn replacements_stay_within_their_part_of_the_dataset() {
        // Training clips 0..3, held-out clips 3..5; the last training clip and the last held-out one are bad.
        let log = SkipLog::new();
        let train = Skipping::with_log(fake(5, &[2, 4]), log.clone()).split_at(3);
        let held_out = Skipping::sharing(fake(5, &[2, 4]), log.clone()).split_at(3);
        assert_eq!(train.clip(2, 0).unwrap().source, "v0.mp4", "wraps to the first training clip");
        assert_eq!(held_out.clip(4, 0).unwrap().source, "v3.mp4", "wraps to the first held-out clip");
        assert_eq!(held_out.clip(3, 0).unwrap().source, "v3.mp4");
        // Both views report into one log, which counts the dataset once.
        assert_eq!(log.summary().unwrap(), "2 of 5 videos were skipped (unreadable or corrupt): v2.mp4, v4.mp4");
        let all_bad = Skipping::new(fake(4, &[2, 3])).split_at(2);
        let msg = all_bad.clip(3, 0).unwrap_err().to_string();
        assert!(msg.contains("none of videos 2..4 of 4"), "{msg}");
    }

    #[test]
    fn a_clip_that_must_not_be_replaced_is_skipped() {
        let s = Skipping::new(fake(3, &[1]));
        assert_eq!(s.clip_or_skip(0, 0).unwrap().unwrap().source, "v0.mp4");
        assert!(s.clip_or_skip(1, 0).unwrap().is_none());
        assert!(s.clip_or_skip(1, 0).unwrap().is_none(), "not decoded again");
        assert_eq!(*s.inner().calls.lock().unwrap(), vec![0, 1]);
        assert_eq!(s.log().len(), 1);
    }

    #[test]
    fn everything_unreadable_is_a_clear_error() {
        let s = Skipping::new(fake(2, &[0, 1]));
        let msg = s.clip(1, 0).unwrap_err().to_string();
        assert!(msg.contains("none of the 2 videos"), "{msg}");
        assert!(msg.contains("v0.mp4, v1.mp4") || msg.contains("v1.mp4, v0.mp4"), "{msg}");
        assert!(s.clip(2, 0).unwrap_err().to_string().contains("out of range"));
    }

    #[test]
    fn shared_log_counts_every_source_once() {
        let log = SkipLog::new();
        assert_eq!(log.summary(), None);
        let a = Skipping::with_log(fake(3, &[0]), log.clone());
        let b = Skipping::with_log(fake(4, &[0]), log.clone());
        a.clip(0, 0).unwrap();
        b.clip(0, 0).unwrap();
        assert_eq!(log.total(), 7);
        assert_eq!(log.summary().unwrap(), "1 of 7 videos was skipped (unreadable or corrupt): v0.mp4");
    }

    #[test]
    fn long_summaries_are_shortened() {
        let log = SkipLog::new();
        for i in 0..12 {
            log.record(format!("f{i}"), "bad");
        }
        let s = log.summary().unwrap();
        assert!(s.starts_with("12 videos were skipped") && s.ends_with("f9 and 2 more"), "{s}");
    }
}
