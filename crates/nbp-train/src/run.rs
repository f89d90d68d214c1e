//! What every training run shares: its directory (checkpoints, effective config, log), atomic checkpoint files,
//! which checkpoints to keep, the progress display, and a small deterministic random source.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::Backend;
use burn::record::{FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError};
use burn::tensor::backend::AutodiffBackend;
use burn_train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn_train::metric::store::EventStoreClient;
use burn_train::metric::{MetricDefinition, NumericEntry};
use burn_train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn_train::{Interrupter, LearnerSummary};
use serde::Serialize;

use nbp_core::{Error, Result};

/// A checkpoint file's read error in a line: Burn's message without its advice about record formats of old
/// Burn versions (which a truncated or damaged file triggers too), e.g. `damaged or truncated
/// (InvalidDataRead(Kind(UnexpectedEof)))`.
pub fn checkpoint_error(e: &RecorderError) -> String {
    let text = match e {
        RecorderError::Unknown(m) => m.clone(),
        other => other.to_string(),
    };
    let first = text.lines().next().unwrap_or("").trim();
    if first.contains("not found") || first.contains("No such file") {
        format!("missing ({first})")
    } else {
        format!("damaged or truncated ({first})")
    }
}

/// `--resume` continues a run: its directory must exist (a mistyped `--out` would otherwise start a new run).
pub fn check_resume(out: &Path, resume: bool) -> Result<()> {
    if resume && !out.is_dir() {
        return Err(Error::file(
            out,
            "no such run folder: --resume continues the run in --out (check the path, or leave out --resume to start \
             a new run there)",
        ));
    }
    Ok(())
}

/// A run directory: `checkpoint/{model,optim,scheduler}-<step>.mpk`, the effective config, `train.log`, and the
/// exported model.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

/// Where a resumed run starts ([`RunDir::resume_from`]): the steps done, and the model and optimiser records of
/// that checkpoint.
pub type Resumed<MR, OR> = (usize, MR, OR);

impl RunDir {
    /// Creates the directory (and its parents).
    pub fn create(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path.join("checkpoint")).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Steps of the checkpoints whose files are all present.
    pub fn checkpoints(&self, parts: &[&str]) -> Result<Vec<usize>> {
        let dir = self.path.join("checkpoint");
        let mut found: HashMap<usize, usize> = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let name = entry.map_err(|e| Error::io(&dir, e))?.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".mpk") else { continue };
            for part in parts {
                if let Some(n) = stem.strip_prefix(&format!("{part}-")).and_then(|n| n.parse::<usize>().ok()) {
                    *found.entry(n).or_default() += 1;
                }
            }
        }
        let mut steps: Vec<usize> = found.into_iter().filter(|&(_, c)| c == parts.len()).map(|(s, _)| s).collect();
        steps.sort_unstable();
        Ok(steps)
    }

    /// Steps of the checkpoints with at least one of their files present (complete or not).
    fn any_checkpoints(&self, parts: &[&str]) -> Result<Vec<usize>> {
        let mut steps: Vec<usize> = parts.iter().map(|p| self.checkpoints(&[p])).collect::<Result<Vec<_>>>()?.concat();
        steps.sort_unstable();
        steps.dedup();
        Ok(steps)
    }

    /// The checkpoint a resumed run starts from: the latest one whose files `parts` are all present and read
    /// back (`read` loads the checkpoint of a step, or says which file failed and why). A later checkpoint that is
    /// incomplete or damaged (a crash while it was written, a full disk) is reported through `report`, naming the
    /// file, and the one before it is tried. `None` when the directory holds no checkpoint at all; an error when
    /// it holds some but none can be read.
    pub fn resumable_checkpoint(
        &self,
        parts: &[&str],
        read: &mut dyn FnMut(usize) -> std::result::Result<(), String>,
        report: &mut dyn FnMut(&str),
    ) -> Result<Option<usize>> {
        let complete = self.checkpoints(parts)?;
        let candidates = self.any_checkpoints(parts)?;
        let mut problems = vec![];
        for &step in candidates.iter().rev() {
            let problem = if complete.contains(&step) {
                read(step).err()
            } else {
                let missing: Vec<String> = parts
                    .iter()
                    .map(|p| format!("{p}-{step}.mpk"))
                    .filter(|f| !self.path.join("checkpoint").join(f).exists())
                    .collect();
                Some(format!("{} missing", missing.join(", ")))
            };
            match problem {
                None => {
                    if !problems.is_empty() {
                        report(&format!("resuming from the checkpoint at step {step} instead"));
                    }
                    return Ok(Some(step));
                }
                Some(why) => {
                    let line = format!(
                        "warning: the checkpoint at step {step} in {} cannot be used: {why}",
                        self.path.join("checkpoint").display()
                    );
                    report(&line);
                    problems.push(line);
                }
            }
        }
        if problems.is_empty() {
            return Ok(None);
        }
        Err(Error::file(
            self.path.join("checkpoint"),
            format!(
                "holds no checkpoint that can be read ({}): start a new run in another --out",
                problems.iter().map(|p| p.trim_start_matches("warning: ")).collect::<Vec<_>>().join("; ")
            ),
        ))
    }

    /// The checkpoint a resumed run of `steps` steps starts from ([`Self::resumable_checkpoint`]): each candidate
    /// is read back as the records of the model `M` (files `<model>-<step>.mpk`), its optimiser `O`
    /// (`<optim>-<step>.mpk`) and, if named, the Learner's scheduler (`<scheduler>-<step>.mpk`, a step count).
    /// Returns the step with the model and optimiser records read (a trainer that loads its own checkpoint, as
    /// Burn's Learner does, drops them). A run that has done more than `steps` steps is an error (it would train
    /// nothing).
    pub fn resume_from<B, M, O>(
        &self,
        (model, optim, scheduler): (&str, &str, Option<&str>),
        steps: usize,
        device: &B::Device,
        report: &mut dyn FnMut(&str),
    ) -> Result<Option<Resumed<M::Record, O::Record>>>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        let recorder = AtomicRecorder::default();
        // The records of the last checkpoint read back whole: the one `resumable_checkpoint` returns.
        let mut loaded = None;
        let mut read = |step: usize| -> std::result::Result<(), String> {
            let file = |part: &str| self.path.join("checkpoint").join(format!("{part}-{step}"));
            let why = |part: &str, e: RecorderError| format!("{part}-{step}.mpk: {}", checkpoint_error(&e));
            let m = Recorder::<B>::load::<M::Record>(&recorder, file(model), device).map_err(|e| why(model, e))?;
            let o = Recorder::<B>::load::<O::Record>(&recorder, file(optim), device).map_err(|e| why(optim, e))?;
            if let Some(part) = scheduler {
                Recorder::<B>::load::<usize>(&recorder, file(part), device).map_err(|e| why(part, e))?;
            }
            loaded = Some((m, o));
            Ok(())
        };
        let parts: Vec<&str> = [model, optim].into_iter().chain(scheduler).collect();
        let start = self.resumable_checkpoint(&parts, &mut read, report)?;
        if let Some(done) = start.filter(|&done| done > steps) {
            return Err(Error::file(
                &self.path,
                format!(
                    "holds a run that has done {done} steps, more than --steps {steps}: pass a larger --steps to continue it"
                ),
            ));
        }
        Ok(start.zip(loaded).map(|(step, (m, o))| (step, m, o)))
    }

    /// Removes the checkpoint files of `parts` older than the `keep` latest complete checkpoints, incomplete
    /// ones among them (a run killed while it wrote a checkpoint leaves parts that the checkpointer's own
    /// clean-up, which removes the checkpoint `keep` steps back, never reaches). Returns the files removed.
    pub fn prune_checkpoints(&self, parts: &[&str], keep: usize) -> Result<usize> {
        let complete = self.checkpoints(parts)?;
        let Some(&oldest_kept) = complete.len().checked_sub(keep.max(1)).and_then(|i| complete.get(i)) else {
            return Ok(0);
        };
        let dir = self.path.join("checkpoint");
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let Some(stem) = name.strip_suffix(".mpk") else { continue };
            let step = parts.iter().find_map(|p| stem.strip_prefix(&format!("{p}-")).and_then(|n| n.parse().ok()));
            if step.is_some_and(|s: usize| s < oldest_kept) {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The latest complete Learner checkpoint (model, optimiser and scheduler), by steps done.
    pub fn latest_checkpoint(&self) -> Result<Option<usize>> {
        Ok(self.checkpoints(&["model", "optim", "scheduler"])?.last().copied())
    }

    /// Errors when the directory already holds checkpoints (a new run would mix with an old one).
    pub fn refuse_existing(&self) -> Result<Option<usize>> {
        if let Some(step) = self.latest_checkpoint()? {
            return Err(Error::file(
                &self.path,
                format!(
                    "already holds a run (checkpoint at step {step}): pass --resume to continue it, or choose another --out"
                ),
            ));
        }
        Ok(None)
    }

    /// Errors when the directory holds a run of another trainer ([`refuse_other_kind`]; `own` is the asking
    /// trainer's config file): both write `architecture.toml` and their logs under the same names, so the second
    /// would break the first.
    pub fn refuse_other_kind(&self, own: &str) -> Result<()> {
        refuse_other_kind(&self.path, own)
    }

    /// Writes the effective config as TOML (atomically).
    pub fn save_config<T: Serialize>(&self, name: &str, config: &T) -> Result<()> {
        let text =
            toml::to_string_pretty(config).map_err(|e| Error::invalid(format!("config does not serialise: {e}")))?;
        nbp_core::error::write_atomic(self.path.join(name), text.as_bytes())
    }

    /// Checks that the model a run would build now, `arch` (its architecture config), is the one its checkpoints
    /// hold, recorded in `name` when the run started, then records it: a resumed run whose flags ask for another
    /// architecture gets an error naming the differing fields, not a failed load of the checkpoint. A run
    /// directory from before this record existed is not checked.
    pub fn check_architecture<T: Serialize>(&self, name: &str, arch: &T, resume: bool) -> Result<()> {
        self.check_recorded(name, arch, resume, true)
    }

    /// [`RunDir::check_architecture`] for what the checkpoints learnt from (`data.toml`): fields that the record
    /// does not hold (recorded only since a later version) are not compared.
    pub fn check_data<T: Serialize>(&self, name: &str, data: &T, resume: bool) -> Result<()> {
        self.check_recorded(name, data, resume, false)
    }

    fn check_recorded<T: Serialize>(&self, name: &str, arch: &T, resume: bool, strict: bool) -> Result<()> {
        let file = self.path.join(name);
        let now = toml::Value::try_from(arch).map_err(|e| Error::invalid(format!("config does not serialise: {e}")))?;
        if resume && file.exists() {
            let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
            let then: toml::Value =
                toml::from_str(&text).map_err(|e| Error::file(&file, format!("is not a valid TOML file: {e}")))?;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            flatten("", &then, &mut a);
            flatten("", &now, &mut b);
            let mut differ: Vec<String> = Vec::new();
            for (key, old) in &a {
                let new = b.iter().find(|(k, _)| k == key).map_or("(none)", |(_, v)| v.as_str());
                if new != old {
                    differ.push(format!("{key} = {old} when the run started, {new} now{}", set_by(key)));
                }
            }
            for (key, new) in b.iter().filter(|(k, _)| strict && !a.iter().any(|(ka, _)| ka == k)) {
                differ.push(format!("{key} = (none) when the run started, {new} now{}", set_by(key)));
            }
            if !differ.is_empty() {
                return Err(Error::file(
                    &file,
                    format!(
                        "records what the run's checkpoints were trained with, and this command asks for something \
                         else ({}): resume with the run's own settings (--resume and --out alone read them from the run's \
                         config), or choose another --out for a new run",
                        differ.join("; ")
                    ),
                ));
            }
        }
        nbp_core::error::write_atomic(&file, toml::to_string_pretty(&now).unwrap_or_default().as_bytes())
    }

    /// Writes the class names, one per line (label `i` on line `i`).
    pub fn save_classes(&self, classes: &[String]) -> Result<()> {
        nbp_core::error::write_atomic(self.path.join("classes.txt"), (classes.join("\n") + "\n").as_bytes())
    }

    /// Appends a line to `train.log`.
    pub fn log(&self, line: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(self.path.join("train.log")) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// `value` as `(dotted key, value)` pairs of its leaves.
fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        v => out.push((prefix.to_string(), v.to_string())),
    }
}

/// Burn's named MessagePack recorder (full precision), writing to a temporary file that is renamed into place,
/// so a crash never leaves a half-written checkpoint under the final name.
#[derive(Debug, Clone, Default)]
pub struct AtomicRecorder {
    inner: NamedMpkFileRecorder<FullPrecisionSettings>,
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: serde::Serialize>(&self, item: I, file: PathBuf) -> std::result::Result<(), RecorderError> {
        let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = file.with_file_name(format!("{name}-partial"));
        Recorder::<B>::save_item(&self.inner, item, tmp.clone())?;
        let mut target = file;
        target.set_extension("mpk");
        std::fs::rename(tmp.with_extension("mpk"), &target).map_err(|e| RecorderError::Unknown(e.to_string()))
    }

    fn load_item<I: serde::de::DeserializeOwned>(&self, file: &mut PathBuf) -> std::result::Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.inner, file)
    }
}

/// Keeps the latest `n` checkpoints (numbered by steps), those of earlier sessions of a resumed run included.
#[derive(Debug, Clone)]
pub struct KeepLast {
    n: usize,
    saved: Vec<usize>,
}

impl KeepLast {
    /// `existing`: the steps of the checkpoints already in the run directory, in ascending order.
    pub fn new(n: usize, existing: Vec<usize>) -> Self {
        Self { n: n.max(1), saved: existing }
    }
}

impl CheckpointingStrategy for KeepLast {
    fn checkpointing(&mut self, step: usize, _store: &EventStoreClient) -> Vec<CheckpointingAction> {
        let mut actions = vec![CheckpointingAction::Save];
        self.saved.push(step);
        while self.saved.len() > self.n {
            actions.push(CheckpointingAction::Delete(self.saved.remove(0)));
        }
        actions
    }
}

/// Seconds still needed for `left` steps at the pace of the `done` steps that took `elapsed` seconds.
pub fn remaining_seconds(elapsed: f64, done: usize, left: usize) -> f64 {
    if done == 0 { 0.0 } else { elapsed / done as f64 * left as f64 }
}

/// A duration for people, rounded: `42 s`, `7 min`, `2 h 05 min`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let minutes = (s + 30) / 60;
    if s < 60 {
        format!("{s} s")
    } else if minutes < 60 {
        format!("{minutes} min")
    } else {
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

/// The progress display: Burn's terminal dashboard when stdout is a terminal, plain progress lines otherwise;
/// the lines always go to `<run>/train.log` too.
pub struct RunRenderer {
    tui: Option<Box<dyn MetricsRenderer>>,
    dir: RunDir,
    print: bool,
    steps: usize,
    names: HashMap<String, String>,
    train: Vec<(String, f64)>,
    /// The validation pass so far: per metric, the sum of its batch values weighted by their item counts, and
    /// the count (the line shows their mean over the held-out clips, not the last batch).
    valid: Vec<(String, f64, f64)>,
    last: Option<Instant>,
    started: Instant,
    /// Step count when this session's first step was rendered, for the time left.
    first: Option<usize>,
    /// The last step rendered: a validation pass follows the checkpoint of that step.
    step: usize,
}

/// The config file each trainer saves in its run folder, and what such a folder is.
const RUN_KINDS: [(&str, &str); 2] = [
    ("generator.toml", "a generator run (continue it with `nbp-cli train --resume`)"),
    ("tokenizer.toml", "a tokenizer run (continue it with `nbp-cli train-tokenizer --resume`)"),
];

/// An error when the folder `run` is another trainer's run: it holds another kind's config file and not `own`
/// (the config file of the trainer asking). A new run there would mix two kinds of checkpoints.
pub fn refuse_other_kind(run: &Path, own: &str) -> Result<()> {
    if run.join(own).is_file() {
        return Ok(());
    }
    match RUN_KINDS.iter().find(|(name, _)| *name != own && run.join(name).is_file()) {
        Some((_, kind)) => {
            Err(Error::file(run, format!("is {kind}, not the run this command trains: choose another --out")))
        }
        None => Ok(()),
    }
}

/// The renderer of a run of `steps` optimiser steps.
pub fn renderer(dir: &RunDir, steps: usize, interrupter: &Interrupter, checkpoint: Option<usize>) -> RunRenderer {
    let terminal = std::io::stdout().is_terminal() && std::env::var_os("NBP_PLAIN_PROGRESS").is_none();
    let tui: Option<Box<dyn MetricsRenderer>> = if terminal {
        Some(Box::new(burn_train::renderer::tui::TuiMetricsRendererWrapper::new(interrupter.clone(), checkpoint)))
    } else {
        None
    };
    RunRenderer {
        tui,
        dir: dir.clone(),
        print: !terminal,
        steps,
        names: HashMap::new(),
        train: vec![],
        valid: vec![],
        last: None,
        started: Instant::now(),
        first: None,
        step: 0,
    }
}

fn set(values: &mut Vec<(String, f64)>, name: String, v: f64) {
    match values.iter_mut().find(|(n, _)| *n == name) {
        Some(e) => e.1 = v,
        None => values.push((name, v)),
    }
}

fn fmt_values(values: &[(String, f64)]) -> String {
    values
        .iter()
        .map(|(n, v)| if v.abs() < 1e-2 && *v != 0.0 { format!("{n} {v:.3e}") } else { format!("{n} {v:.4}") })
        .collect::<Vec<_>>()
        .join("  ")
}

impl RunRenderer {
    fn record(&mut self, state: &MetricState, valid: bool) {
        if let MetricState::Numeric(entry, value) = state {
            let id = format!("{:?}", entry.metric_id);
            let name = self.names.get(&id).cloned().unwrap_or(id);
            if !valid {
                set(&mut self.train, name, value.current());
                return;
            }
            let count = match value {
                NumericEntry::Aggregated { count, .. } => *count as f64,
                NumericEntry::Value(_) => 1.0,
            };
            match self.valid.iter_mut().find(|(n, _, _)| *n == name) {
                Some(e) => {
                    e.1 += value.current() * count;
                    e.2 += count;
                }
                None => self.valid.push((name, value.current() * count, count)),
            }
        }
    }

    /// The mean of each metric over the validation pass so far.
    fn valid_means(&self) -> Vec<(String, f64)> {
        self.valid.iter().map(|(n, sum, count)| (n.clone(), sum / count.max(1.0))).collect()
    }

    fn line(&self, line: &str) {
        if self.print {
            println!("{line}");
        }
        self.dir.log(line);
    }
}

/// Burn's dashboard puts the terminal in raw mode, which also turns Ctrl-C into a plain key that the dashboard
/// ignores: a run could then only be stopped from its menu ('q'). Turning the terminal's signal keys back on
/// (`ISIG`; the dashboard reads its keys as before) makes Ctrl-C stop the run after the step with a checkpoint, as
/// without the dashboard. Called at every step, since the dashboard's thread enters raw mode when it starts;
/// leaving the dashboard restores the terminal as it was before.
fn signal_keys_on() {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // The terminal the dashboard set to raw mode: stdin's, else the process's own (`/dev/tty`).
        let on = |fd: i32| {
            // SAFETY: `termios` is plain data, filled by `tcgetattr` before it is read; both calls only read or
            // set the attributes of the terminal `fd`, and fail harmlessly when it is not one.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(fd, &mut t) != 0 {
                    return false;
                }
                if t.c_lflag & libc::ISIG == 0 {
                    t.c_lflag |= libc::ISIG;
                    libc::tcsetattr(fd, libc::TCSANOW, &t);
                }
                true
            }
        };
        if !on(std::io::stdin().as_raw_fd())
            && let Ok(tty) = std::fs::File::open("/dev/tty")
        {
            on(tty.as_raw_fd());
        }
    }
}

impl MetricsRendererTraining for RunRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(&state, false);
        if let Some(t) = self.tui.as_mut() {
            t.update_train(state);
        }
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(&state, true);
        if let Some(t) = self.tui.as_mut() {
            t.update_valid(state);
        }
    }

    fn render_train(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        let step = item.iteration.unwrap_or(0);
        self.step = step;
        let first = *self.first.get_or_insert(step.saturating_sub(1));
        let due = self.last.is_none_or(|t| t.elapsed().as_secs_f64() >= 5.0) || step == self.steps;
        if due {
            self.last = Some(Instant::now());
            let secs = self.started.elapsed().as_secs_f64();
            let left =
                format_duration(remaining_seconds(secs, step.saturating_sub(first), self.steps.saturating_sub(step)));
            self.line(&format!("step {step}/{}  {}  [{secs:.0} s, {left} left]", self.steps, fmt_values(&self.train)));
        }
        if let Some(t) = self.tui.as_mut() {
            t.render_train(item, indicators);
            signal_keys_on();
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        if let Some(p) = &item.progress
            && p.items_processed >= p.items_total
        {
            self.line(&format!("validation at step {}: {}", self.step, fmt_values(&self.valid_means())));
            self.valid.clear();
        }
        if let Some(t) = self.tui.as_mut() {
            t.render_valid(item, indicators);
        }
    }

    fn on_train_end(&mut self, summary: Option<LearnerSummary>) -> std::result::Result<(), Box<dyn std::error::Error>> {
        match self.tui.as_mut() {
            Some(t) => t.on_train_end(summary),
            None => Ok(()),
        }
    }
}

impl MetricsRendererEvaluation for RunRenderer {
    fn update_test(&mut self, name: EvaluationName, state: MetricState) {
        if let Some(t) = self.tui.as_mut() {
            t.update_test(name, state);
        }
    }

    fn render_test(&mut self, item: EvaluationProgress, indicators: Vec<ProgressType>) {
        if let Some(t) = self.tui.as_mut() {
            t.render_test(item, indicators);
        }
    }
}

impl MetricsRenderer for RunRenderer {
    fn manual_close(&mut self) {
        if let Some(t) = self.tui.as_mut() {
            t.manual_close();
        }
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(format!("{:?}", definition.metric_id), definition.name.clone());
        if let Some(t) = self.tui.as_mut() {
            t.register_metric(definition);
        }
    }
}

/// What sets a recorded field of a run (`architecture.toml`, `data.toml`), for the message that refuses to change
/// it: ` (set by …)`, or nothing for a field that one flag does not explain.
fn set_by(key: &str) -> &'static str {
    let top = key.split(['.', '[']).next().unwrap_or(key);
    match top {
        "n_layer" => " (set by --preset or --n-layer)",
        "n_head" => " (set by --preset or --n-head)",
        "n_embd" => " (set by --preset or --n-embd)",
        "channels" | "encoder_res_blocks" | "decoder_res_blocks" | "norm_groups" | "group_norm" => " (set by --preset)",
        "vocab_size" => " (set by --mode, --condition and the --tokens cache's codebook and classes)",
        "block_size" => " (the positions: set by the --tokens cache's latent grid, --mode and --condition)",
        "cond_tokens" => " (set by --condition and --mode)",
        "block_shape" => " (set by --block-shape)",
        "latent_grid" | "classes" | "tokenizer" | "tokenizer_fingerprint" | "codebook" | "dataset" | "clips" => {
            " (set by the --tokens cache)"
        }
        "valid_clips" => " (the clips held out: set by --valid-clips)",
        "fsq_levels" => " (set by --preset or --fsq-levels)",
        _ => "",
    }
}

/// SplitMix64: a small deterministic random source for data order, corruption and dropout decisions.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        let mut s = Self(seed);
        s.next_u64();
        s
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Reads a TOML run config; unknown keys and bad values are errors naming the file.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| Error::file(path, format!("is not a valid run config: {e}")))
}

/// One SVG plot of a [`LossHistory`]: file name, title, and the series drawn (name, moving-average window).
pub type Plot<'a> = (&'a str, &'a str, &'a [(&'a str, usize)]);

/// Loss history of a run, kept in `<run>/losses.csv` (`step,series,value`) and drawn as SVG curves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossHistory {
    /// `(series, step, value)` rows.
    pub rows: Vec<(String, usize, f64)>,
}

impl LossHistory {
    /// The history of `dir` up to step `until` (later rows belong to an abandoned future of a resumed run).
    pub fn read(dir: &RunDir, until: usize) -> Self {
        let text = std::fs::read_to_string(dir.path().join("losses.csv")).unwrap_or_default();
        let rows = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split(',');
                let step = f.next()?.parse().ok()?;
                let series = f.next()?.to_string();
                let value = f.next()?.parse().ok()?;
                (step <= until).then_some((series, step, value))
            })
            .collect();
        Self { rows }
    }

    pub fn push(&mut self, series: &str, step: usize, value: f64) {
        self.rows.push((series.to_string(), step, value));
    }

    /// Points of one series.
    pub fn series(&self, name: &str) -> Vec<(f64, f64)> {
        self.rows.iter().filter(|r| r.0 == name).map(|r| (r.1 as f64, r.2)).collect()
    }

    /// Writes `losses.csv` and one SVG per `(file, title, [(series, smoothing window)])` plot.
    pub fn write(&self, dir: &RunDir, plots: &[Plot<'_>]) -> Result<()> {
        let mut csv = String::from("step,series,value\n");
        for (s, step, v) in &self.rows {
            csv.push_str(&format!("{step},{s},{v}\n"));
        }
        nbp_core::error::write_atomic(dir.path().join("losses.csv"), csv.as_bytes())?;
        for (file, title, names) in plots {
            let series: Vec<nbp_core::plot::Series> = names
                .iter()
                .map(|&(name, window)| {
                    let pts = self.series(name);
                    let pts = if window > 1 { nbp_core::plot::moving_average(&pts, window) } else { pts };
                    let label = if window > 1 { format!("{name} (mean of {window})") } else { name.to_string() };
                    nbp_core::plot::Series { name: label, points: pts }
                })
                .collect();
            nbp_core::plot::write_line_plot(dir.path().join(file), title, "step", &series)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Arch {
        n_layer: usize,
        width: Vec<usize>,
    }

    #[test]
    fn pruning_keeps_the_latest_complete_checkpoints_and_drops_leftovers() {
        let path = std::env::temp_dir().join(format!("nbp-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = RunDir::create(&path).unwrap();
        let ck = path.join("checkpoint");
        std::fs::create_dir_all(&ck).unwrap();
        // A kill left optim-79 and scheduler-79 (model-79 was already removed),
        // then 80 and 81 are complete, and 82 only has its model.
        let files = ["optim-79", "scheduler-79", "model-80", "optim-80", "scheduler-80", "model-81", "optim-81"];
        for f in files.iter().chain(&["scheduler-81", "model-82", "notes"]) {
            std::fs::write(ck.join(format!("{f}.mpk")), b"x").unwrap();
        }
        let parts = ["model", "optim", "scheduler"];
        assert_eq!(dir.prune_checkpoints(&parts, 2).unwrap(), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(&ck).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        left.sort();
        let expected =
            ["model-80", "model-81", "model-82", "notes", "optim-80", "optim-81", "scheduler-80", "scheduler-81"];
        assert_eq!(left, expected.map(|f| format!("{f}.mpk")));
        // Fewer complete checkpoints than kept: nothing removed.
        assert_eq!(dir.prune_checkpoints(&parts, 3).unwrap(), 0);
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn a_resumed_run_must_ask_for_the_architecture_its_checkpoints_hold() {
        let path = std::env::temp_dir().join(format!("nbp-arch-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = RunDir::create(&path).unwrap();
        let arch = Arch { n_layer: 2, width: vec![8, 16] };
        // Resuming a run directory without the record (an older run) only writes it.
        dir.check_architecture("architecture.toml", &arch, true).unwrap();
        assert!(std::fs::read_to_string(path.join("architecture.toml")).unwrap().contains("n_layer = 2"));
        dir.check_architecture("architecture.toml", &arch, true).unwrap();
        let other = Arch { n_layer: 3, width: vec![8, 32] };
        let err = dir.check_architecture("architecture.toml", &other, true).unwrap_err().to_string();
        assert!(err.contains("architecture.toml"), "{err}");
        assert!(err.contains("n_layer = 2 when the run started, 3 now"), "{err}");
        assert!(err.contains("width = [8, 16] when the run started, [8, 32] now"), "{err}");
        // The record is unchanged by a refused resume, and replaced by a new run.
        dir.check_architecture("architecture.toml", &arch, true).unwrap();
        dir.check_architecture("architecture.toml", &other, false).unwrap();
        dir.check_architecture("architecture.toml", &other, true).unwrap();
        // A field the record does not hold is a difference for the architecture, not for the data record (it
        // was recorded only since a later version).
        #[derive(Serialize)]
        struct Wider {
            n_layer: usize,
            width: Vec<usize>,
            heads: usize,
        }
        let wider = Wider { n_layer: 3, width: vec![8, 32], heads: 4 };
        let err = dir.check_architecture("architecture.toml", &wider, true).unwrap_err().to_string();
        assert!(err.contains("heads = (none) when the run started, 4 now"), "{err}");
        dir.check_data("data.toml", &other, true).unwrap();
        dir.check_data("data.toml", &wider, true).unwrap();
        let err = dir.check_data("data.toml", &Wider { heads: 5, ..wider }, true).unwrap_err().to_string();
        assert!(err.contains("heads = 4 when the run started, 5 now"), "{err}");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn time_left_follows_the_pace_of_this_session() {
        assert_eq!(remaining_seconds(10.0, 0, 100), 0.0);
        assert_eq!(remaining_seconds(10.0, 5, 100), 200.0);
        assert_eq!(remaining_seconds(10.0, 5, 0), 0.0);
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(format_duration(-3.0), "0 s");
        assert_eq!(format_duration(42.4), "42 s");
        assert_eq!(format_duration(59.6), "1 min");
        assert_eq!(format_duration(89.0), "1 min");
        assert_eq!(format_duration(91.0), "2 min");
        assert_eq!(format_duration(3569.0), "59 min");
        assert_eq!(format_duration(3599.0), "1 h 00 min");
        assert_eq!(format_duration(2.0 * 3600.0 + 5.0 * 60.0), "2 h 05 min");
    }
}
