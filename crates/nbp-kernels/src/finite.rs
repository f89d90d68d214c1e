//! Finding an infinity or a NaN among the values of a loaded checkpoint (here so that it runs optimised in debug
//! builds too: the official generators hold 0.9 to 3 billion values).

/// The index of the first infinity or NaN in `values`.
pub fn first_non_finite(values: &[f32]) -> Option<usize> {
    const BLOCK: usize = 4096;
    values.chunks(BLOCK).enumerate().find_map(|(n, block)| {
        // A whole block without an early exit first (vectorised), then where in it.
        let any = block.iter().fold(false, |a, v| a | !v.is_finite());
        any.then(|| n * BLOCK + block.iter().position(|v| !v.is_finite()).expect("found above"))
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
        assert_eq!(first_non_finite(&v), None);
        for (at, bad) in [(0, f32::NAN), (4097, f32::INFINITY), (10_001, f32::NEG_INFINITY)] {
            let mut w = v.clone();
            w[at] = bad;
            w[10_000] = f32::NAN;
            assert_eq!(first_non_finite(&w), Some(at.min(10_000)));
        }
    }
}
