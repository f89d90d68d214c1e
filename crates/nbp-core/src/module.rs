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
}
