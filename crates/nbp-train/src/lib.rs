//! Datasets and (soon) training for `nbp`.

pub mod moving_shapes;
