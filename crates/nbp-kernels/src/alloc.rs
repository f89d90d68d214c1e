//! A global allocator that starts every large buffer on a cache-line boundary, for binaries that run the
//! kernels (`nbp-cli` declares it with `#[global_allocator]`).
//!
//! The kernels read rows of weights and activations 64 bytes at a time. The system allocator returns large
//! buffers 16 bytes after a page boundary (glibc's `mmap`ed chunks), so every one of those loads then touches
//! two cache lines. On the Zen 5 of the README's measurements, 64-byte aligned weights made a 16-row pass
//! through all linear layers of `official-base` 4–5 % faster in bfloat16 and 9 % faster in f32, and a
//! 512-row product (a prefill) up to 12 % faster. The kernels work on any alignment: this only changes speed.
//!
//! Zeroed buffers stay lazily zeroed: asking the system for an over-aligned block and then zeroing it (what
//! `System::alloc_zeroed` does for alignments above 16) writes every page of a fresh buffer at once, where
//! `calloc` of fresh memory writes nothing. A KV cache for 1280 tokens of `official-base` is 377 MB of zeros
//! of which a run writes only the rows it fills. On a 2-core Zen 5, the first prefill and step of a process
//! (`official-base`, bfloat16, `nbp-cli bench sample`'s warm-up) took 2.50–2.75 s with eagerly zeroed buffers
//! and 1.49–1.56 s with lazily zeroed ones; later ones 1.06–1.16 s either way. So on Unix a large buffer is a
//! `malloc`/`calloc` block 64 bytes longer, with the pointer the system returned stored just before the
//! aligned start.
//!
//! Blocks of 32 MiB or more, which glibc maps afresh for every allocation, ask Linux for transparent huge pages
//! (`madvise`; the usual setting serves them to those who ask): their first use then takes a page fault per
//! 2 MiB instead of per 4 KiB. The `official` tokenizer, whose activations run to 143 MB, encoded a clip in
//! 7.49–7.85 s with them and 7.78–8.96 s without, and decoded it in 9.94–10.62 s against 10.87–11.52 s
//! (`nbp-cli bench tokenizer --preset official`, four alternate runs each, Zen 5); sampling did not change.

use std::alloc::{GlobalAlloc, Layout, System};

/// Alignment given to large buffers: one cache line.
pub const LINE: usize = 64;
/// Buffers of at least this many bytes are aligned to [`LINE`]; smaller ones keep the system's alignment
/// (aligning them would waste up to 48 bytes each for no gain).
pub const LARGE: usize = 16 * 1024;

/// [`System`], with buffers of [`LARGE`] bytes or more aligned to [`LINE`] bytes.
pub struct LineAligned;

/// Whether this allocator moves a block of `layout` to a cache-line boundary: a large block that asks for less
/// alignment. A function of the layout alone, so that `dealloc` and `realloc` know how the block was made.
fn realigned(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() < LINE
}

#[cfg(unix)]
mod raw {
    //! Realigned blocks: `malloc`, `calloc` or `realloc` of `size + LINE` bytes, the returned pointer stored in
    //! the 8 bytes before the first cache-line boundary at least 8 bytes into the block.

    use super::LINE;

    unsafe extern "C" {
        fn malloc(size: usize) -> *mut u8;
        fn calloc(count: usize, size: usize) -> *mut u8;
        fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
        fn free(ptr: *mut u8);
    }

    /// The aligned start inside the block at `raw` (which the C allocator aligns to at least 8 bytes, so the
    /// start is at most `LINE` bytes in).
    fn start(raw: *mut u8) -> *mut u8 {
        raw.wrapping_add((raw as usize + 8).next_multiple_of(LINE) - raw as usize)
    }

    /// Stores `raw` before its block's aligned start and returns that start (null for null).
    unsafe fn place(raw: *mut u8) -> *mut u8 {
        if raw.is_null() {
            return raw;
        }
        let ptr = start(raw);
        // SAFETY: `ptr - 8` lies in the block (at least 8 bytes in) and is 8-byte aligned (`ptr` is 64-aligned).
        unsafe { ptr.cast::<*mut u8>().sub(1).write(raw) };
        ptr
    }

    /// The block that `ptr` (from [`alloc`], [`alloc_zeroed`] or [`grow`]) starts in.
    unsafe fn block(ptr: *mut u8) -> *mut u8 {
        // SAFETY: [`place`] stored it there.
        unsafe { ptr.cast::<*mut u8>().sub(1).read() }
    }

    pub(super) unsafe fn alloc(size: usize) -> *mut u8 {
        // SAFETY: `place` gets a fresh block of `size + LINE` bytes (or null).
        unsafe { huge(place(malloc(size + LINE)), size) }
    }

    pub(super) unsafe fn alloc_zeroed(size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`; `calloc` leaves fresh pages untouched.
        unsafe { huge(place(calloc(1, size + LINE)), size) }
    }

    /// Blocks of at least this many bytes ask for transparent huge pages.
    pub(super) const HUGE: usize = 32 << 20;

    /// Asks Linux for 2 MiB pages under the whole 2 MiB spans of a block of `size` bytes at `ptr`, when it is at
    /// least [`HUGE`] bytes: glibc maps such blocks afresh every time (it keeps nothing above 32 MiB), so each
    /// of their pages is faulted in and zeroed on first use, 512 times fewer with huge pages. Only a hint.
    fn huge(ptr: *mut u8, size: usize) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if !ptr.is_null() && size >= HUGE {
            unsafe extern "C" {
                fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
            }
            const MADV_HUGEPAGE: i32 = 14;
            const SPAN: usize = 2 << 20;
            let (from, to) = ((ptr as usize).next_multiple_of(SPAN), (ptr as usize + size) / SPAN * SPAN);
            // SAFETY: the range lies inside the block, on page boundaries; the advice changes no contents.
            unsafe { madvise(from as *mut u8, to - from, MADV_HUGEPAGE) };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = size;
        ptr
    }

    pub(super) unsafe fn dealloc(ptr: *mut u8) {
        // SAFETY: `ptr` came from this module, so `block` is the C allocator's pointer.
        unsafe { free(block(ptr)) }
    }

    /// `realloc` of the block at `ptr` (holding `old` bytes) to `new` bytes, the contents moved to the new
    /// block's aligned start when the system returns it at another offset.
    pub(super) unsafe fn grow(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this module; after `realloc`, the contents sit at the old offset in the new
        // block, which holds `new + LINE` bytes, so both the source and the destination of the move are in it.
        unsafe {
            let raw = block(ptr);
            let offset = ptr as usize - raw as usize;
            let moved = realloc(raw, new + LINE);
            if moved.is_null() {
                return moved;
            }
            let ptr = start(moved);
            std::ptr::copy(moved.add(offset), ptr, old.min(new));
            place(moved)
        }
    }
}

// SAFETY: realigned blocks (see `raw`) are valid for the caller's size from a 64-byte boundary, which satisfies
// every alignment below 64; everything else, and everything on other systems (where `System` itself is asked
// for the cache-line alignment), goes to `System`, with the same layout function in `dealloc` and `realloc` as
// in `alloc`.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(unix)]
        if realigned(layout) {
            // SAFETY: a non-zero size, as the caller guarantees.
            return unsafe { raw::alloc(layout.size()) };
        }
        // SAFETY: `line_layout` keeps the (non-zero) size, as the caller guarantees for `layout`.
        unsafe { System.alloc(line_layout(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        #[cfg(unix)]
        if realigned(layout) {
            // SAFETY: as for `alloc`.
            return unsafe { raw::alloc_zeroed(layout.size()) };
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(line_layout(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        #[cfg(unix)]
        if realigned(layout) {
            // SAFETY: `ptr` was allocated by `raw` (the same layout decided it).
            return unsafe { raw::dealloc(ptr) };
        }
        // SAFETY: `ptr` was allocated by `alloc` with `line_layout(layout)`.
        unsafe { System.dealloc(ptr, line_layout(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to `layout.align()`, does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (realigned(layout), realigned(new)) {
            #[cfg(unix)]
            // SAFETY: `ptr` was allocated by `raw` (the same layout decided it).
            (true, true) => unsafe { raw::grow(ptr, layout.size(), new_size) },
            // SAFETY: `ptr` was allocated with `line_layout(layout)`, which keeps the alignment of small and of
            // already aligned layouts.
            (false, false) => unsafe { System.realloc(ptr, line_layout(layout), new_size) },
            // The buffer crosses `LARGE` (or, off Unix, any change): a new block, the contents copied over.
            // SAFETY: `new` has a non-zero size; both blocks are valid for `min(old, new)` bytes and distinct.
            _ => unsafe {
                let fresh = self.alloc(new);
                if !fresh.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                fresh
            },
        }
    }
}

/// The layout this allocator asks [`System`] for: `layout` itself, or for a realigned block off Unix the same
/// size at [`LINE`] alignment.
fn line_layout(layout: Layout) -> Layout {
    if realigned(layout) { layout.align_to(LINE).unwrap_or(layout) } else { layout }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates through [`LineAligned`] directly (the test binary keeps the system allocator).
    fn with_block(size: usize, align: usize, f: impl FnOnce(*mut u8)) {
        let layout = Layout::from_size_align(size, align).unwrap();
        let ptr = unsafe { LineAligned.alloc(layout) };
        assert!(!ptr.is_null());
        f(ptr);
        unsafe { LineAligned.dealloc(ptr, layout) };
    }

    #[test]
    fn large_buffers_start_on_a_cache_line_and_small_ones_keep_their_alignment() {
        for size in [LARGE, LARGE + 2, 1 << 20, 3 << 24] {
            for align in [1, 2, 4, 16] {
                with_block(size, align, |p| assert_eq!(p as usize % LINE, 0, "{size} bytes at align {align}"));
            }
        }
        with_block(100, 4, |p| assert_eq!(p as usize % 4, 0));
        with_block(LARGE, 4096, |p| assert_eq!(p as usize % 4096, 0));
        assert_eq!(line_layout(Layout::from_size_align(64, 4).unwrap()).align(), 4);
        assert_eq!(line_layout(Layout::from_size_align(LARGE, 4).unwrap()).align(), LINE);
    }

    #[test]
    fn zeroed_large_buffers_are_zero_and_aligned_also_after_reuse() {
        for round in 0..3 {
            for size in [LARGE, 3 * LARGE + 5, 1 << 22, raw::HUGE + 12345] {
                let layout = Layout::from_size_align(size, 4).unwrap();
                unsafe {
                    // Dirty a block of the same size first, so that the zeroed one may reuse its memory.
                    let dirty = LineAligned.alloc(layout);
                    std::ptr::write_bytes(dirty, 0xa5, size);
                    LineAligned.dealloc(dirty, layout);
                    let p = LineAligned.alloc_zeroed(layout);
                    assert_eq!(p as usize % LINE, 0, "round {round}, {size} bytes");
                    assert!((0..size).all(|i| *p.add(i) == 0), "round {round}, {size} bytes");
                    LineAligned.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn growing_and_shrinking_large_buffers_keeps_their_contents_and_alignment() {
        // As a growing Vec does, through the heap and through mmap'ed blocks (whose start offsets differ).
        let pattern = |i: usize| (i * 31 % 253) as u8;
        unsafe {
            let mut layout = Layout::from_size_align(LARGE, 8).unwrap();
            let mut p = LineAligned.alloc_zeroed(layout);
            for i in 0..LARGE {
                *p.add(i) = pattern(i);
            }
            let mut sizes: Vec<usize> = std::iter::successors(Some(LARGE), |s| Some(s * 3 / 2)).take(22).collect();
            sizes.extend(sizes.clone().into_iter().rev().skip(1));
            for &size in &sizes[1..] {
                let kept = layout.size().min(size);
                p = LineAligned.realloc(p, layout, size);
                layout = Layout::from_size_align(size, 8).unwrap();
                assert_eq!(p as usize % LINE, 0, "{size} bytes");
                assert!((0..kept).all(|i| *p.add(i) == pattern(i)), "{size} bytes");
                for i in kept..size {
                    *p.add(i) = pattern(i);
                }
            }
            LineAligned.dealloc(p, layout);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_the_large_threshold_both_ways() {
        let small = Layout::from_size_align(1000, 4).unwrap();
        unsafe {
            let p = LineAligned.alloc(small);
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            // Small to large: moved to a cache-line boundary, contents kept.
            let big = LineAligned.realloc(p, small, 3 * LARGE);
            assert_eq!(big as usize % LINE, 0);
            assert!((0..1000).all(|i| *big.add(i) == (i % 251) as u8));
            for i in 1000..3 * LARGE {
                *big.add(i) = (i % 7) as u8;
            }
            // Large to larger: still aligned.
            let big_layout = Layout::from_size_align(3 * LARGE, 4).unwrap();
            let bigger = LineAligned.realloc(big, big_layout, 40 * LARGE);
            assert_eq!(bigger as usize % LINE, 0);
            assert!((1000..3 * LARGE).all(|i| *bigger.add(i) == (i % 7) as u8));
            // Large to small: the first bytes kept.
            let bigger_layout = Layout::from_size_align(40 * LARGE, 4).unwrap();
            let back = LineAligned.realloc(bigger, bigger_layout, 500);
            assert!((0..500).all(|i| *back.add(i) == (i % 251) as u8));
            LineAligned.dealloc(back, Layout::from_size_align(500, 4).unwrap());
        }
    }
}
