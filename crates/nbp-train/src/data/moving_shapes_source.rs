//! The procedural moving-shapes dataset as a [`ClipSource`].

use nbp_core::Result;

use super::{Clip, ClipOptions, ClipSource, out_of_range};
use crate::moving_shapes::{MovingShapes, NUM_CLASSES, class_name};

/// `count` clips of [`MovingShapes`]; the label is the class, the text the class name with `-` replaced by a
/// space (`"circle bounce"`). Clips depend only on the generator's seed and the index (the `seed` argument of
/// [`ClipSource::clip`] and the split are not used: there is no longer video to cut a clip from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovingShapesSource {
    pub shapes: MovingShapes,
    pub count: usize,
}

impl MovingShapesSource {
    /// `count` clips of `opts.frames × opts.height × opts.width` from the generator seeded with `seed`.
    pub fn new(count: usize, opts: &ClipOptions, seed: u64) -> Result<Self> {
        opts.validate()?;
        Ok(Self { shapes: MovingShapes::new(opts.frames, opts.height, opts.width, seed), count })
    }
}

impl ClipSource for MovingShapesSource {
    fn len(&self) -> usize {
        self.count
    }

    fn clip(&self, index: usize, _seed: u64) -> Result<Clip> {
        if index >= self.count {
            return Err(out_of_range(index, self.count));
        }
        let (video, label) = self.shapes.clip(index);
        let (text, source) = (class_name(label).replace('-', " "), format!("moving-shapes #{index}"));
        Ok(Clip { video, label, text, source, padded: 0 })
    }

    fn class_names(&self) -> Vec<String> {
        (0..NUM_CLASSES).map(class_name).collect()
    }

    fn describe(&self) -> String {
        let s = &self.shapes;
        let parts: Vec<&str> = [
            (s.plain, "plain backgrounds"),
            (s.large, "large shapes"),
            (s.single, "no distractors"),
            (s.fixed, "fixed look"),
        ]
        .into_iter()
        .filter_map(|(on, what)| on.then_some(what))
        .collect();
        let variant = if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) };
        format!("moving shapes{variant}: {} clips, {NUM_CLASSES} classes, seed {}", self.count, self.shapes.seed)
    }
}
