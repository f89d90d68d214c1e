//! The number format of the generator's linear-layer weights during sampling.

use std::fmt;
use std::str::FromStr;

use burn::tensor::DType;

/// How the weights of the linear layers (attention, MLP, head: 778 M of the 879 M parameters of `official-base`
/// with a 64 000-code vocabulary; the rest are the embeddings) are stored for sampling.
///
/// - `F32` (the default): as trained and as the parity tests check them.
/// - `Bf16`: rounded to bfloat16, half the memory and half the bytes each sampling step reads. The official
///   checkpoints are stored in bfloat16, so for them this keeps the weights exactly as released. On `flex`
///   with an AMX CPU the products run on the AMX tile units, on a CPU with AMD's AVX512-BF16 (Zen 4 and
///   later) on its dot-product instruction, and on other AVX-512 CPUs with the weights widened to f32 (all:
///   activations rounded to bfloat16, sums in f32); elsewhere they go through the backend's bfloat16 matrix
///   product, which on a CPU is slower than f32. Logits move by
///   about 1 % of their scale against `F32`, so greedy ids can differ where two candidates are nearly tied.
///
/// Embeddings, LayerNorms, biases, the KV cache and the attention stay in f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The tensor dtype of the linear weights.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(format!("precision '{s}': expected f32 or bf16")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_formats_and_refuses_others() {
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("BFloat16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("fp32".parse::<Precision>(), Ok(Precision::F32));
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert_eq!(Precision::default().dtype(), DType::F32);
        assert_eq!("f16".parse::<Precision>().unwrap_err(), "precision 'f16': expected f32 or bf16");
    }
}
