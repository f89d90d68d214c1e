//! Helpers that apply to any Burn module.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// Draws every lazily initialised parameter of `module` now.
///
/// Burn draws a new module's random weights on first use, so without this a benchmark that times the first
/// forward pass of a randomly initialised model would time the initialisation too.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// A parameter count for people: `878.5 M`, `61.4 k`, `950`, so that a small model does not read `0.0 M`.
pub fn parameter_count(n: usize) -> String {
    match n {
        n if n >= 100_000 => format!("{:.1} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    #[test]
    fn draws_every_lazy_parameter() {
        let layer: Linear<Flex> = LinearConfig::new(3, 2).init(&Default::default());
        let bias = layer.bias.as_ref().unwrap();
        assert!(!layer.weight.is_initialized() && !bias.is_initialized());
        materialize(&layer);
        assert!(layer.weight.is_initialized() && bias.is_initialized());
    }

    #[test]
    fn parameter_counts_keep_their_digits_at_every_size() {
        assert_eq!(parameter_count(878_458_368), "878.5 M");
        assert_eq!(parameter_count(1_803_000), "1.8 M");
        assert_eq!(parameter_count(61_440), "61.4 k");
        assert_eq!(parameter_count(950), "950");
    }
}
