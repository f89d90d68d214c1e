//! Finding an infinity or a NaN among the values of a loaded checkpoint (here so that it runs optimised in debug
//! builds too: the official generators hold 0.9 to 3 billion values).

/// The index of the first infinity or NaN among the little-endian IEEE floats in `bytes`, each `width` bytes
/// (4 for f32, 2 for bfloat16 and f16) with the exponent field `exponent` (`0x7f80_0000` for f32, `0x7f80` for
/// bfloat16, `0x7c00` for f16): a value is not finite when that field is all ones.
///
/// # Panics
/// When `width` is neither 2 nor 4.
pub fn first_non_finite(bytes: &[u8], width: usize, exponent: u32) -> Option<usize> {
    assert!(width == 2 || width == 4, "first_non_finite: floats of 2 or 4 bytes, not {width}");
    const BLOCK: usize = 4096;
    let bits = |c: &[u8]| {
        if width == 4 { u32::from_le_bytes([c[0], c[1], c[2], c[3]]) } else { u16::from_le_bytes([c[0], c[1]]) as u32 }
    };
    let bad = |c: &[u8]| bits(c) & exponent == exponent;
    bytes.chunks(width * BLOCK).enumerate().find_map(|(n, block)| {
        // A whole block without an early exit first (vectorised), then where in it.
        let any = block.chunks_exact(width).fold(false, |a, c| a | bad(c));
        any.then(|| n * BLOCK + block.chunks_exact(width).position(bad).expect("found above"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinities_and_nans_are_found_where_they_are() {
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 - 5000.5).collect();
        v.push(f32::MAX);
        v.push(f32::MIN_POSITIVE / 2.0);
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(first_non_finite(&bytes(&v), 4, 0x7f80_0000), None);
        for (at, bad) in [(0, f32::NAN), (4097, f32::INFINITY), (10_001, f32::NEG_INFINITY)] {
            let mut w = v.clone();
            w[at] = bad;
            w[10_000] = f32::NAN;
            assert_eq!(first_non_finite(&bytes(&w), 4, 0x7f80_0000), Some(at.min(10_000)));
        }
        // bfloat16: the upper half of an f32; f16: 0x7c00 is infinity, 0x7bff its largest finite value.
        let bf16: Vec<u8> = [0x3f80u16, 0xff80, 0x7fc0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(first_non_finite(&bf16, 2, 0x7f80), Some(1));
        let f16: Vec<u8> = [0x7bffu16, 0x3c00, 0xfe00].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(first_non_finite(&f16, 2, 0x7c00), Some(2));
    }
}
