//! Vector helpers shared by the kernels.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// `e^x` for 16 lanes (relative error about 2e-7; `x ≤ −104` gives 0, `−∞` included).
    ///
    /// `x = n·ln2 + r` with `|r| ≤ ln2/2`, a degree-6 Taylor polynomial for `e^r`, and `2^n` applied by
    /// `vscalefps`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0)), _mm512_set1_ps(88.7));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp_is_accurate_over_the_softmax_range() {
            if !crate::available() {
                return;
            }
            let xs: Vec<f32> = (-1600..=880).map(|i| i as f32 * 0.1).chain([f32::NEG_INFINITY, -200.0]).collect();
            for chunk in xs.chunks(16) {
                let mut buf = [0.0f32; 16];
                buf[..chunk.len()].copy_from_slice(chunk);
                let mut got = [0.0f32; 16];
                // SAFETY: AVX-512 was checked; both buffers hold 16 floats.
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp(_mm512_loadu_ps(buf.as_ptr()))) };
                for (x, g) in chunk.iter().zip(got) {
                    let want = (*x as f64).exp();
                    if *x < -103.0 {
                        assert!(g.abs() < 1e-38, "exp({x}) = {g}");
                    } else if want > 1e-37 {
                        assert!(((g as f64 - want) / want).abs() < 4e-7, "exp({x}) = {g}, want {want}");
                    }
                }
            }
        }
    }
}
