//! The inner loop of the 4 × 6 register tile shared by the f32 kernel ([`crate::linear`]) and the
//! AVX512-BF16 one (`bf16/dot.rs`): written once, with the load and multiply-add instructions as parameters.

/// One pass of the 4 × 6 register tile in assembly: for each of `$n` steps, prefetch the six weight rows at `$pa`/`$pb`
/// (rows 0–2 and 3–5, `$sw` bytes apart), load one 64-byte vector of each of the six weight rows at `$wa`/`$wb` with
/// `$load`, then for each of the four rows of `x` at `$xa`/`$xb` (rows 0–2 and 3, `$sx` bytes apart) load its vector
/// and `$op` it with the six into the 24 accumulators `r·6 + c`; all pointers advance by 64 bytes per step. The
/// accumulators start from `$init` and end in `$acc` (`acc => acc` to add to sums, or a zero array, which the compiler
/// sets in the registers without touching memory). The accumulators, six weight vectors and a row of `x` stay in the 32
/// vector registers (the compiler spills such a tile's accumulators to the stack when it is written with intrinsics).
///
/// Must be expanded inside an `unsafe` block of a function with the target features that `$load` and `$op`
/// need; the caller guarantees that `$n` vectors of every row are readable.
macro_rules! tile_4x6_asm {
    (
        $load:literal,
        $op:literal,
        $init:expr => $acc:expr,
        n = $n:expr,
        w = ($wa:expr, $wb:expr, $sw:expr),
        prefetch = ($pa:expr, $pb:expr),
        x = ($xa:expr, $xb:expr, $sx:expr)
    ) => {
        std::arch::asm!(
            "2:",
            "prefetcht0 [{pa}]",
            "prefetcht0 [{pa} + {sw}]",
            "prefetcht0 [{pa} + {sw}*2]",
            "prefetcht0 [{pb}]",
            "prefetcht0 [{pb} + {sw}]",
            "prefetcht0 [{pb} + {sw}*2]",
            concat!($load, " zmm24, [{wa}]"),
            concat!($load, " zmm25, [{wa} + {sw}]"),
            concat!($load, " zmm26, [{wa} + {sw}*2]"),
            concat!($load, " zmm27, [{wb}]"),
            concat!($load, " zmm28, [{wb} + {sw}]"),
            concat!($load, " zmm29, [{wb} + {sw}*2]"),
            concat!($load, " zmm30, [{xa}]"),
            concat!($op, " zmm0, zmm30, zmm24"),
            concat!($op, " zmm1, zmm30, zmm25"),
            concat!($op, " zmm2, zmm30, zmm26"),
            concat!($op, " zmm3, zmm30, zmm27"),
            concat!($op, " zmm4, zmm30, zmm28"),
            concat!($op, " zmm5, zmm30, zmm29"),
            concat!($load, " zmm31, [{xa} + {sx}]"),
            concat!($op, " zmm6, zmm31, zmm24"),
            concat!($op, " zmm7, zmm31, zmm25"),
            concat!($op, " zmm8, zmm31, zmm26"),
            concat!($op, " zmm9, zmm31, zmm27"),
            concat!($op, " zmm10, zmm31, zmm28"),
            concat!($op, " zmm11, zmm31, zmm29"),
            concat!($load, " zmm30, [{xa} + {sx}*2]"),
            concat!($op, " zmm12, zmm30, zmm24"),
            concat!($op, " zmm13, zmm30, zmm25"),
            concat!($op, " zmm14, zmm30, zmm26"),
            concat!($op, " zmm15, zmm30, zmm27"),
            concat!($op, " zmm16, zmm30, zmm28"),
            concat!($op, " zmm17, zmm30, zmm29"),
            concat!($load, " zmm31, [{xb}]"),
            concat!($op, " zmm18, zmm31, zmm24"),
            concat!($op, " zmm19, zmm31, zmm25"),
            concat!($op, " zmm20, zmm31, zmm26"),
            concat!($op, " zmm21, zmm31, zmm27"),
            concat!($op, " zmm22, zmm31, zmm28"),
            concat!($op, " zmm23, zmm31, zmm29"),
            "add {wa}, 64",
            "add {wb}, 64",
            "add {pa}, 64",
            "add {pb}, 64",
            "add {xa}, 64",
            "add {xb}, 64",
            "dec {n}",
            "jnz 2b",
            wa = inout(reg) $wa => _,
            wb = inout(reg) $wb => _,
            pa = inout(reg) $pa => _,
            pb = inout(reg) $pb => _,
            xa = inout(reg) $xa => _,
            xb = inout(reg) $xb => _,
            sw = in(reg) $sw,
            sx = in(reg) $sx,
            n = inout(reg) $n => _,
            inout("zmm0") $init[0] => $acc[0],
            inout("zmm1") $init[1] => $acc[1],
            inout("zmm2") $init[2] => $acc[2],
            inout("zmm3") $init[3] => $acc[3],
            inout("zmm4") $init[4] => $acc[4],
            inout("zmm5") $init[5] => $acc[5],
            inout("zmm6") $init[6] => $acc[6],
            inout("zmm7") $init[7] => $acc[7],
            inout("zmm8") $init[8] => $acc[8],
            inout("zmm9") $init[9] => $acc[9],
            inout("zmm10") $init[10] => $acc[10],
            inout("zmm11") $init[11] => $acc[11],
            inout("zmm12") $init[12] => $acc[12],
            inout("zmm13") $init[13] => $acc[13],
            inout("zmm14") $init[14] => $acc[14],
            inout("zmm15") $init[15] => $acc[15],
            inout("zmm16") $init[16] => $acc[16],
            inout("zmm17") $init[17] => $acc[17],
            inout("zmm18") $init[18] => $acc[18],
            inout("zmm19") $init[19] => $acc[19],
            inout("zmm20") $init[20] => $acc[20],
            inout("zmm21") $init[21] => $acc[21],
            inout("zmm22") $init[22] => $acc[22],
            inout("zmm23") $init[23] => $acc[23],
            out("zmm24") _,
            out("zmm25") _,
            out("zmm26") _,
            out("zmm27") _,
            out("zmm28") _,
            out("zmm29") _,
            out("zmm30") _,
            out("zmm31") _,
            options(nostack, readonly),
        )
    };
}

/// [`tile_4x6_asm`] for the kernels' accumulate functions: over `$n` steps (none when `$n` is 0), starting from
/// zeroed registers when `$first` (the first chunk of a weight tile: no memset of the accumulators) or else
/// from the sums in `$acc` (a `&mut [__m512; 24]`), which receives the result.
///
/// Same safety conditions as [`tile_4x6_asm`].
macro_rules! tile_4x6 {
    ($load:literal, $op:literal, $acc:expr, first = $first:expr, n = $n:expr, w = $w:tt, prefetch = $p:tt, x = $x:tt) => {{
        let zero = [std::arch::x86_64::_mm512_setzero_ps(); 24];
        match ($n > 0, $first) {
            (true, true) => tile_4x6_asm!($load, $op, zero => $acc, n = $n, w = $w, prefetch = $p, x = $x),
            (true, false) => tile_4x6_asm!($load, $op, $acc => $acc, n = $n, w = $w, prefetch = $p, x = $x),
            (false, true) => *$acc = zero,
            (false, false) => {}
        }
    }};
}
