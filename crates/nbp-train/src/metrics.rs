//! Training metrics as the Learner's dashboard shows them: every step reports a [`Stats`] (named scalars and the
//! number of items they average over) and a [`ScalarMetric`] picks one of them.

use std::sync::Arc;

use burn_train::metric::state::{FormatOptions, NumericMetricState};
use burn_train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

/// Named scalar values of one training or validation step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Items (tokens, clips) the values average over; the weight of the step in epoch averages.
    pub count: usize,
    pub values: Vec<(&'static str, f64)>,
}

impl Stats {
    pub fn new(count: usize) -> Self {
        Self { count, values: vec![] }
    }

    /// Adds a value.
    pub fn with(mut self, key: &'static str, value: f64) -> Self {
        self.values.push((key, value));
        self
    }

    /// The value called `key`, if the step reported it.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
    }
}

impl Adaptor<Stats> for Stats {
    fn adapt(&self) -> Stats {
        self.clone()
    }
}

/// A numeric metric reading the value `key` of each step's [`Stats`] (steps without it are skipped).
#[derive(Clone)]
pub struct ScalarMetric {
    name: MetricName,
    key: &'static str,
    higher_is_better: bool,
    state: NumericMetricState,
}

impl ScalarMetric {
    /// A metric shown as `name`, reading `key`.
    pub fn new(name: &str, key: &'static str, higher_is_better: bool) -> Self {
        Self { name: Arc::new(name.to_string()), key, higher_is_better, state: NumericMetricState::new() }
    }
}

impl Metric for ScalarMetric {
    type Input = Stats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, item: &Stats, _metadata: &MetricMetadata) -> SerializedEntry {
        let value = item.get(self.key).unwrap_or(f64::NAN);
        self.state.update(value, item.count.max(1), FormatOptions::new(self.name()).precision(4))
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: None, higher_is_better: self.higher_is_better }.into()
    }
}

impl Numeric for ScalarMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
