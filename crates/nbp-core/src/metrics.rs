//! Reconstruction metrics on [`Video`]s, computed as the official evaluation does (reference §5.1):
//! values scaled to `[0, 255]`, PSNR over the whole clip, SSIM per frame with an 11-tap Gaussian window
//! (σ = 1.5, K1 = 0.01, K2 = 0.03, valid filtering) averaged over channels and frames.

use crate::error::{Error, Result};
use crate::video::Video;

fn check_same(a: &Video, b: &Video) -> Result<()> {
    if (a.frames, a.height, a.width) != (b.frames, b.height, b.width) {
        return Err(Error::invalid(format!(
            "cannot compare videos of shapes {}x{}x{} and {}x{}x{}",
            a.frames, a.height, a.width, b.frames, b.height, b.width
        )));
    }
    Ok(())
}

/// Peak signal-to-noise ratio in dB between two clips with values in `[0, 1]` (both clamped first).
/// Identical clips give `f64::INFINITY`.
pub fn psnr(a: &Video, b: &Video) -> Result<f64> {
    check_same(a, b)?;
    let mse = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let d = (x.clamp(0.0, 1.0) as f64 - y.clamp(0.0, 1.0) as f64) * 255.0;
            d * d
        })
        .sum::<f64>()
        / a.data.len() as f64;
    Ok(20.0 * (255.0 / mse.sqrt()).log10())
}

fn gaussian_window() -> [f64; 11] {
    let mut w = [0.0; 11];
    for (i, v) in w.iter_mut().enumerate() {
        let x = i as f64 - 5.0;
        *v = (-(x * x) / (2.0 * 1.5 * 1.5)).exp();
    }
    let s: f64 = w.iter().sum();
    w.map(|v| v / s)
}

/// Valid separable Gaussian filtering of an `h × w` plane.
fn filter(plane: &[f64], h: usize, w: usize, win: &[f64; 11]) -> Vec<f64> {
    let (oh, ow) = (h - 10, w - 10);
    let mut tmp = vec![0.0; h * ow];
    for y in 0..h {
        for x in 0..ow {
            tmp[y * ow + x] = (0..11).map(|k| win[k] * plane[y * w + x + k]).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..11).map(|k| win[k] * tmp[(y + k) * ow + x]).sum();
        }
    }
    out
}

/// Structural similarity (SSIM) between two clips with values in `[0, 1]` (both clamped first), averaged over
/// frames and channels. Frames must be at least 11×11.
pub fn ssim(a: &Video, b: &Video) -> Result<f64> {
    check_same(a, b)?;
    let (h, w) = (a.height, a.width);
    if h < 11 || w < 11 {
        return Err(Error::invalid(format!("SSIM needs frames of at least 11x11 pixels, got {h}x{w}")));
    }
    let win = gaussian_window();
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let plane = h * w;
    let mut total = 0.0;
    for t in 0..a.frames {
        for c in 0..3 {
            let base = a.index(c, t, 0, 0);
            let x: Vec<f64> = a.data[base..base + plane].iter().map(|&v| v.clamp(0.0, 1.0) as f64 * 255.0).collect();
            let y: Vec<f64> = b.data[base..base + plane].iter().map(|&v| v.clamp(0.0, 1.0) as f64 * 255.0).collect();
            let mu_x = filter(&x, h, w, &win);
            let mu_y = filter(&y, h, w, &win);
            let xx = filter(&x.iter().map(|v| v * v).collect::<Vec<_>>(), h, w, &win);
            let yy = filter(&y.iter().map(|v| v * v).collect::<Vec<_>>(), h, w, &win);
            let xy = filter(&x.iter().zip(&y).map(|(p, q)| p * q).collect::<Vec<_>>(), h, w, &win);
            let n = mu_x.len();
            let mut s = 0.0;
            for i in 0..n {
                let (mx, my) = (mu_x[i], mu_y[i]);
                let (sx, sy, sxy) = (xx[i] - mx * mx, yy[i] - my * my, xy[i] - mx * my);
                s += ((2.0 * mx * my + c1) * (2.0 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2));
            }
            total += s / n as f64;
        }
    }
    Ok(total / (3 * a.frames) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(frames: usize, h: usize, w: usize, seed: u64) -> Video {
        let mut s = seed;
        let data = (0..3 * frames * h * w)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32) / (1u64 << 24) as f32
            })
            .collect();
        Video::new(frames, h, w, data).unwrap()
    }

    #[test]
    fn psnr_of_a_constant_offset_is_analytic() {
        let a = Video::new(1, 2, 2, vec![0.5; 12]).unwrap();
        let b = Video::new(1, 2, 2, vec![0.5 + 10.0 / 255.0; 12]).unwrap();
        // MSE = 100 → PSNR = 20·log10(255/10).
        assert!((psnr(&a, &b).unwrap() - 20.0 * 25.5f64.log10()).abs() < 1e-4);
        assert!(psnr(&a, &a).unwrap().is_infinite());
    }

    #[test]
    fn ssim_is_one_for_identical_and_lower_for_different_clips() {
        let a = noise(2, 16, 16, 1);
        assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let b = noise(2, 16, 16, 2);
        let s = ssim(&a, &b).unwrap();
        assert!(s < 0.1 && s > -0.1, "independent noise should be uncorrelated, got {s}");
        // Constant brightness shift: luminance term only, (2·μx·μy + C1)/(μx² + μy² + C1).
        let c = Video::new(1, 11, 11, vec![0.2; 363]).unwrap();
        let d = Video::new(1, 11, 11, vec![0.4; 363]).unwrap();
        let (x, y, c1) = (51.0f64, 102.0f64, 6.5025f64);
        let expected = (2.0 * x * y + c1) / (x * x + y * y + c1);
        assert!((ssim(&c, &d).unwrap() - expected).abs() < 1e-6);
        assert!(ssim(&Video::black(1, 8, 8), &Video::black(1, 8, 8)).is_err());
    }
}
