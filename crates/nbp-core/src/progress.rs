//! Progress reporting that libraries can drive without knowing whether a terminal is attached.

/// Receives progress of long operations (layers of a network, sampling steps, frames written).
///
/// The CLI implements it with a progress bar; library callers that do not care pass [`NoProgress`].
pub trait Progress {
    /// Starts a new phase called `label` with `total` units of work.
    fn start(&self, label: &str, total: usize);
    /// Marks `n` more units of the current phase as done.
    fn advance(&self, n: usize);
    /// Ends the current phase.
    fn finish(&self);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: usize) {}
    fn advance(&self, _n: usize) {}
    fn finish(&self) {}
}
