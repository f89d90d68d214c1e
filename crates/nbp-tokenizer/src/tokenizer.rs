//! The video tokenizer: encoder, FSQ and decoder (reference §1).

use burn::prelude::*;

use nbp_core::progress::{NoProgress, Progress};
use nbp_core::{Error, Result};

use crate::config::TokenizerConfig;
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::fsq::Fsq;
use crate::layer::{Layer, run_layers};

/// MAGVIT-v2-style video tokenizer: a causal 3D CNN encoder, finite scalar quantisation, and a causal 3D CNN
/// decoder. Videos are `[batch, 3, 1 + 4n, H, W]` with values in `[0, 1]`; token grids are
/// `[batch, 1 + n, H/8, W/8]` of code indices in `0..codebook_size`.
#[derive(Module, Debug)]
pub struct VideoTokenizer<B: Backend> {
    pub encoder: Encoder<B>,
    pub fsq: Fsq,
    pub decoder: Decoder<B>,
    #[module(skip)]
    config: TokenizerConfig,
}

impl<B: Backend> VideoTokenizer<B> {
    /// A tokenizer with fresh weights (PyTorch-default initialisation).
    pub fn new(config: &TokenizerConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            encoder: Encoder::new(config, device),
            fsq: Fsq::new(config.fsq_levels.clone()),
            decoder: Decoder::new(config, device),
            config: config.clone(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// Number of codes.
    pub fn codebook_size(&self) -> usize {
        self.fsq.codebook_size()
    }

    /// Checks a video shape `[B, 3, T, H, W]` and returns the latent grid `[T', H', W']`.
    pub fn check_video(&self, dims: [usize; 5]) -> Result<[usize; 3]> {
        let [b, c, t, h, w] = dims;
        if b == 0 || c != 3 {
            return Err(Error::invalid(format!(
                "the tokenizer takes videos shaped [batch ≥ 1, 3, frames, height, width], got {dims:?}"
            )));
        }
        let latent = self.config.latent_shape(t, h, w)?;
        self.check_memory(b, t, h, w)?;
        Ok(latent)
    }

    /// Refuses an encode or decode of `batch` clips of `frames` frames of `height × width` that would take more
    /// memory than the machine has. The estimate is a lower bound: the full-resolution activations (as wide as
    /// the widest of the first two levels, whose outputs reach full resolution) with a few temporaries.
    pub fn check_memory(&self, batch: usize, frames: usize, height: usize, width: usize) -> Result<()> {
        let wide = self.config.channels.iter().take(2).copied().max().unwrap_or(1);
        let bytes = nbp_core::system::product(&[batch, frames.saturating_add(2), height, width, wide, 4 * 4]);
        nbp_core::system::check_memory(
            &format!("the tokenizer on {batch} clip(s) of {frames} frames of {height}x{width}"),
            bytes,
            "use fewer clips, frames or pixels",
        )
    }

    /// Pre-quantisation encoder output `[B, D, T', H/8, W/8]` of a video `[B, 3, T, H, W]` in `[0, 1]`.
    pub fn encode_latents(&self, video: Tensor<B, 5>, progress: &dyn Progress) -> Result<Tensor<B, 5>> {
        self.check_video(video.dims())?;
        progress.start("encoding", self.encoder.layers.len());
        let z = self.encoder.forward_observed(video, &mut |_, _| progress.advance(1));
        progress.finish();
        Ok(z)
    }

    /// Token indices `[B, T', H/8, W/8]` of a video `[B, 3, T, H, W]` in `[0, 1]` (`T = 1 + 4n`, `H` and `W`
    /// multiples of 8).
    pub fn encode(&self, video: Tensor<B, 5>) -> Result<Tensor<B, 4, Int>> {
        self.encode_with(video, &NoProgress)
    }

    /// [`encode`](Self::encode), reporting progress per layer.
    pub fn encode_with(&self, video: Tensor<B, 5>, progress: &dyn Progress) -> Result<Tensor<B, 4, Int>> {
        let z = self.encode_latents(video, progress)?;
        Ok(self.fsq.quantize(z).1)
    }

    /// Decoder output `[B, 3, T, 8h, 8w]` of FSQ codes `[B, D, T', h, w]`, not clamped.
    pub fn decode_codes(&self, codes: Tensor<B, 5>, progress: &dyn Progress) -> Tensor<B, 5> {
        progress.start("decoding", self.decoder.layers.len());
        let x = self.decoder.forward_observed(codes, &mut |_, _| progress.advance(1));
        progress.finish();
        x
    }

    /// Decodes token indices `[B, T', h, w]` (each in `0..codebook_size`) into a video `[B, 3, T, 8h, 8w]`,
    /// clamped to `[0, 1]` as the official API does.
    pub fn decode(&self, indices: Tensor<B, 4, Int>) -> Tensor<B, 5> {
        self.decode_with(indices, &NoProgress)
    }

    /// [`decode`](Self::decode), reporting progress per layer.
    pub fn decode_with(&self, indices: Tensor<B, 4, Int>, progress: &dyn Progress) -> Tensor<B, 5> {
        let codes = self.fsq.indices_to_codes(indices);
        self.decode_codes(codes, progress).clamp(0.0, 1.0)
    }

    /// Encodes and decodes a video: `(indices, reconstruction in [0, 1])`.
    pub fn reconstruct(
        &self,
        video: Tensor<B, 5>,
        progress: &dyn Progress,
    ) -> Result<(Tensor<B, 4, Int>, Tensor<B, 5>)> {
        let indices = self.encode_with(video, progress)?;
        let recon = self.decode_with(indices.clone(), progress);
        Ok((indices, recon))
    }

    /// Training forward pass of a video `[B, 3, T, H, W]` in `[0, 1]`: the FSQ codes (straight-through
    /// gradients), the input of the decoder's last layer, and the reconstruction (not clamped). The last layer is
    /// split off so that a trainer can weigh losses by their gradients at it (the adaptive GAN weight).
    ///
    /// With `quantize` off the decoder reads the unrounded codes ([`Fsq::unrounded_codes`]) instead: the
    /// warm-up of a run that would otherwise stall with rounded codes from the first step. With `train_encoder`
    /// off the encoder's outputs are detached: no gradient reaches the encoder, and only the decoder learns.
    pub fn forward_train(&self, video: Tensor<B, 5>, quantize: bool, train_encoder: bool) -> Result<TrainForward<B>> {
        self.check_video(video.dims())?;
        let z = self.encoder.forward(video);
        let z = if train_encoder { z } else { z.detach() };
        let codes = if quantize { self.fsq.quantize_straight_through(z) } else { self.fsq.unrounded_codes(z) };
        let n = self.decoder.layers.len();
        let before_last = run_layers(&self.decoder.layers[..n - 1], codes.clone(), &mut |_, _| {});
        let reconstruction = self.decoder.layers[n - 1].forward(before_last.clone());
        Ok(TrainForward { codes, before_last, reconstruction })
    }

    /// The decoder's last layer (whose weight gradients the adaptive GAN weight compares).
    pub fn last_layer(&self) -> &Layer<B> {
        self.decoder.layers.last().expect("the decoder has layers")
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.num_params()
    }
}

/// Checks that every index lies in `0..codebook_size`, naming the first one that does not.
pub fn check_indices(indices: &[i64], codebook_size: usize) -> Result<()> {
    if let Some((i, v)) = indices.iter().enumerate().find(|(_, v)| **v < 0 || **v >= codebook_size as i64) {
        return Err(Error::invalid(format!(
            "token index {v} at position {i} is outside the codebook 0..{codebook_size}"
        )));
    }
    Ok(())
}

/// What [`VideoTokenizer::forward_train`] returns.
#[derive(Debug, Clone)]
pub struct TrainForward<B: Backend> {
    /// FSQ codes `[B, D, T', h, w]`.
    pub codes: Tensor<B, 5>,
    /// Input of the decoder's last layer.
    pub before_last: Tensor<B, 5>,
    /// Decoder output `[B, 3, T, H, W]`, not clamped.
    pub reconstruction: Tensor<B, 5>,
}
