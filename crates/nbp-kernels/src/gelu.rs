//! The exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, in place.
//!
//! `erf` uses Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7) with the vector `exp`.

use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 16;

/// Replaces every element of `x` by its GELU. Returns `false` (leaving `x` untouched) without AVX-512.
pub fn gelu(x: &mut [f32]) -> bool {
    if !crate::available() {
        return false;
    }
    // SAFETY: AVX-512 was detected.
    let run = |c: &mut [f32]| unsafe { x86::gelu(c) };
    if x.len() > CHUNK {
        x.par_chunks_mut(CHUNK).for_each(run);
    } else {
        run(x);
    }
    true
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) unsafe fn gelu(_: &mut [f32]) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::simd::x86::exp;

    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: the chunk holds 16 floats.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), gelu16(_mm512_loadu_ps(c.as_ptr()))) };
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [0.0f32; 16];
            buf[..rest.len()].copy_from_slice(rest);
            // SAFETY: the buffer holds 16 floats.
            unsafe { _mm512_storeu_ps(buf.as_mut_ptr(), gelu16(_mm512_loadu_ps(buf.as_ptr()))) };
            let n = rest.len();
            rest.copy_from_slice(&buf[..n]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gelu16(x: __m512) -> __m512 {
        let u = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm512_abs_ps(u);
        let t =
            _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_fmadd_ps(z, _mm512_set1_ps(0.327_591_1), _mm512_set1_ps(1.0)));
        let mut p = _mm512_set1_ps(1.061_405_4);
        for c in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
        }
        p = _mm512_mul_ps(p, t);
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
        let erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0));
        // erf(u) carries the sign of u: 1 + erf(u) = 1 ± erf(|u|).
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(u, _mm512_setzero_ps());
        let erf = _mm512_mask_sub_ps(erf_abs, negative, _mm512_setzero_ps(), erf_abs);
        _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5)), _mm512_add_ps(erf, _mm512_set1_ps(1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series (|x| ≤ 3) or continued fraction, in double precision.
    fn erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let z = x.abs();
            let mut f = 0.0;
            for n in (1..60).rev() {
                f = (n as f64 / 2.0) / (z + f);
            }
            let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
            return x.signum() * (1.0 - erfc);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn matches_the_exact_gelu() {
        if !crate::available() {
            return;
        }
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.01).chain([-30.0, 30.0, 0.0]).collect();
        let mut got = xs.clone();
        assert!(gelu(&mut got));
        for (x, g) in xs.iter().zip(&got) {
            let x64 = *x as f64;
            let want = 0.5 * x64 * (1.0 + erf(x64 / std::f64::consts::SQRT_2));
            assert!((*g as f64 - want).abs() < 4e-7 * (1.0 + x64.abs()), "gelu({x}) = {g}, want {want}");
        }
    }
}
