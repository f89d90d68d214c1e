//! "Moving shapes": a procedural video dataset, deterministic from a seed, at any resolution and frame count.
//!
//! Every clip shows one *main* shape whose kind and motion define the class (`shape × motion`), plus up to two
//! distractor shapes of other kinds that move independently and may pass in front of it (occlusion), on a plain
//! or textured background (variants: plain backgrounds only, larger shapes, the main shape alone, a fixed look).
//! Speeds, sizes, colours and start positions vary from clip to clip (the fixed look keeps one colour per shape
//! kind, one size and one background; positions, directions, speeds and phases still vary), so a model has to
//! learn motion, not memorise frames.

use nbp_core::video::Video;

/// Shape kinds.
pub const SHAPES: [&str; 4] = ["circle", "square", "triangle", "ring"];
/// Motion kinds.
pub const MOTIONS: [&str; 4] = ["bounce", "orbit", "zigzag", "grow"];

/// Number of classes (`SHAPES × MOTIONS`).
pub const NUM_CLASSES: usize = SHAPES.len() * MOTIONS.len();

/// Name of class `label`, e.g. `circle-bounce`.
pub fn class_name(label: usize) -> String {
    format!("{}-{}", SHAPES[label / MOTIONS.len()], MOTIONS[label % MOTIONS.len()])
}

/// A deterministic generator of clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovingShapes {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub seed: u64,
    /// Only plain backgrounds (no stripes): an easier variant for small, quickly trained models.
    pub plain: bool,
    /// Shapes [`LARGE_SHAPES`] times larger, so that each spans more latent tokens (a token of the usual
    /// tokenizers covers 8×8 pixels).
    pub large: bool,
    /// The main shape alone, without distractors (everything else as in the clip with them).
    pub single: bool,
    /// One colour per shape kind ([`FIXED_COLOURS`]), one size and one background ([`FIXED_BACKGROUND`]);
    /// positions, directions, speeds and phases still vary.
    pub fixed: bool,
}

/// Colour of each shape kind in the fixed-look variant ([`MovingShapes::with_fixed_look`]): circle red, square
/// green, triangle blue, ring yellow.
pub const FIXED_COLOURS: [[f32; 3]; 4] = [[0.95, 0.25, 0.2], [0.25, 0.9, 0.3], [0.3, 0.45, 1.0], [0.95, 0.85, 0.2]];
/// Background of the fixed-look variant (a dark blue-grey, flat).
pub const FIXED_BACKGROUND: [f32; 3] = [0.1, 0.1, 0.16];
/// Size of the fixed-look variant's shapes, as a fraction of the frame's shorter side (the middle of the usual
/// 0.12–0.22; times [`LARGE_SHAPES`] with the large variant; distractors 0.8 times it).
pub const FIXED_SIZE: f32 = 0.17;

/// Size factor of the large-shapes variant ([`MovingShapes::with_large_shapes`]).
pub const LARGE_SHAPES: f32 = 1.6;

/// A small deterministic random source (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Object {
    shape: usize,
    motion: usize,
    color: [f32; 3],
    size: f32,
    x: f32,
    y: f32,
    vx: f32,
    vy: f32,
    phase: f32,
}

impl Object {
    fn random(rng: &mut Rng, shape: usize, motion: usize, min_side: f32) -> Self {
        let speed = rng.uniform(0.02, 0.06); // fraction of the frame per frame
        let angle = rng.uniform(0.0, std::f32::consts::TAU);
        let mut color = [rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0)];
        color[rng.below(3)] = rng.uniform(0.8, 1.0); // saturated enough to stand out
        Self {
            shape,
            motion,
            color,
            size: rng.uniform(0.12, 0.22) * min_side,
            x: rng.uniform(0.25, 0.75),
            y: rng.uniform(0.25, 0.75),
            vx: speed * angle.cos(),
            vy: speed * angle.sin(),
            phase: rng.uniform(0.0, std::f32::consts::TAU),
        }
    }

    /// Centre (fractions of the frame) and size (pixels) at frame `t`.
    fn at(&self, t: f32) -> (f32, f32, f32) {
        match self.motion {
            // Straight line, reflected at the borders.
            0 => (reflect(self.x + self.vx * t), reflect(self.y + self.vy * t), self.size),
            // Circle around the start point.
            1 => {
                let a = self.phase + t * 0.35;
                (0.5 + 0.25 * a.cos(), 0.5 + 0.25 * a.sin(), self.size)
            }
            // Horizontal drift with a vertical zigzag.
            2 => {
                let tri = ((t * 0.25 + self.phase).rem_euclid(2.0) - 1.0).abs();
                (reflect(self.x + self.vx.abs().max(0.03) * t), 0.2 + 0.6 * tri, self.size)
            }
            // Pulsing size at a fixed place.
            _ => (self.x, self.y, self.size * (1.0 + 0.5 * (self.phase + t * 0.6).sin())),
        }
    }

    fn covers(&self, px: f32, py: f32, cx: f32, cy: f32, r: f32) -> bool {
        let (dx, dy) = (px - cx, py - cy);
        match self.shape {
            0 => dx * dx + dy * dy <= r * r,
            1 => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
            2 => dy <= r * 0.7 && dy >= -r && dx.abs() <= (dy + r) * 0.6,
            _ => {
                let d = (dx * dx + dy * dy).sqrt();
                d <= r && d >= r * 0.55
            }
        }
    }
}

/// Position on a bouncing path: maps any real to [0.1, 0.9] as a triangle wave.
fn reflect(v: f32) -> f32 {
    let p = (v - 0.1).rem_euclid(1.6);
    0.1 + if p <= 0.8 { p } else { 1.6 - p }
}

impl MovingShapes {
    /// A dataset of clips of `frames × height × width`.
    pub fn new(frames: usize, height: usize, width: usize, seed: u64) -> Self {
        Self { frames, height, width, seed, plain: false, large: false, single: false, fixed: false }
    }

    /// The same clips with every shape [`LARGE_SHAPES`] times larger (positions, motions and colours unchanged).
    pub fn with_large_shapes(mut self) -> Self {
        self.large = true;
        self
    }

    /// The same clips without the distractor shapes: the main shape alone, with the same size, motion, colour
    /// and background.
    pub fn with_single_shape(mut self) -> Self {
        self.single = true;
        self
    }

    /// The same clips with one colour per shape kind, one shape size and one flat background (positions,
    /// directions, speeds and phases unchanged): the easiest variant, for the bundled demo models.
    pub fn with_fixed_look(mut self) -> Self {
        self.fixed = true;
        self
    }

    /// The same clips with plain backgrounds only (shapes, motions and colours unchanged).
    pub fn with_plain_backgrounds(mut self) -> Self {
        self.plain = true;
        self
    }

    /// Class of clip `index` (classes cycle, so every class is equally frequent).
    pub fn label(&self, index: usize) -> usize {
        index % NUM_CLASSES
    }

    /// Clip `index` and its class label. The same `(seed, index)` always gives the same clip.
    pub fn clip(&self, index: usize) -> (Video, usize) {
        let label = self.label(index);
        let mut rng = Rng(self.seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let (h, w) = (self.height, self.width);
        let min_side = h.min(w) as f32;
        // Shape sizes are fractions of this side (the background stripes keep `min_side`).
        let scale_side = min_side * if self.large { LARGE_SHAPES } else { 1.0 };
        let main = Object::random(&mut rng, label / MOTIONS.len(), label % MOTIONS.len(), scale_side);
        let mut objects = vec![main];
        for _ in 0..rng.below(3) {
            // Distractors: another shape kind, any motion, drawn in front half of the time (occlusion).
            let shape = (objects[0].shape + 1 + rng.below(SHAPES.len() - 1)) % SHAPES.len();
            let motion = rng.below(MOTIONS.len());
            objects.push(Object::random(&mut rng, shape, motion, scale_side * 0.8));
        }
        if objects.len() > 1 && rng.below(2) == 0 {
            objects.rotate_left(1); // main shape drawn first: distractors may occlude it
        }
        if self.single {
            // Drawn (so the random draws, and with them the background, stay those of the full clip), then dropped:
            // distractors are always of another kind than the main shape.
            objects.retain(|o| o.shape == label / MOTIONS.len());
        }
        let textured = rng.below(2) == 1 && !self.plain && !self.fixed;
        let mut bg = [rng.uniform(0.0, 0.35), rng.uniform(0.0, 0.35), rng.uniform(0.0, 0.35)];
        if self.fixed {
            // Set after every random draw, so positions and motions stay those of the clip without it.
            bg = FIXED_BACKGROUND;
            for o in &mut objects {
                o.color = FIXED_COLOURS[o.shape];
                // The main shape is the only one of the class's kind (distractors are of other kinds).
                let main = o.shape == label / MOTIONS.len();
                o.size = FIXED_SIZE * scale_side * if main { 1.0 } else { 0.8 };
            }
        }
        let stripes = rng.uniform(4.0, 10.0);
        let mut v = Video::black(self.frames, h, w);
        for t in 0..self.frames {
            let placed: Vec<(f32, f32, f32)> = objects.iter().map(|o| o.at(t as f32)).collect();
            for y in 0..h {
                for x in 0..w {
                    let mut color = bg;
                    if textured {
                        let s = 0.06 * (((x + y) as f32 / min_side * stripes).sin() > 0.0) as u8 as f32;
                        color = color.map(|c| c + s);
                    }
                    for (o, &(cx, cy, r)) in objects.iter().zip(&placed) {
                        if o.covers(x as f32 + 0.5, y as f32 + 0.5, cx * w as f32, cy * h as f32, r) {
                            color = o.color;
                        }
                    }
                    for (c, value) in color.iter().enumerate() {
                        let i = v.index(c, t, y, x);
                        v.data[i] = value.clamp(0.0, 1.0);
                    }
                }
            }
        }
        (v, label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_are_deterministic_and_differ_by_seed_and_index() {
        let ds = MovingShapes::new(9, 32, 48, 1);
        assert_eq!(ds.clip(3), ds.clip(3));
        assert_ne!(ds.clip(3).0, ds.clip(4).0);
        assert_ne!(ds.clip(3).0, MovingShapes::new(9, 32, 48, 2).clip(3).0);
        let (v, label) = ds.clip(21);
        assert_eq!((v.frames, v.height, v.width, label), (9, 32, 48, 21 % NUM_CLASSES));
        assert!(v.data.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn every_class_moves_and_shows_its_shape() {
        let ds = MovingShapes::new(9, 32, 32, 5);
        assert_eq!(NUM_CLASSES, 16);
        assert_eq!(class_name(5), "square-orbit");
        for index in 0..NUM_CLASSES {
            let (v, _) = ds.clip(index);
            let first = v.frames_range(0, 1).unwrap();
            let last = v.frames_range(8, 1).unwrap();
            let changed = first.data.iter().zip(&last.data).filter(|(a, b)| (*a - *b).abs() > 0.05).count();
            assert!(changed > 20, "class {} hardly moves ({changed} values changed)", class_name(index));
            // The clip is not a flat background: some pixels are bright object pixels.
            assert!(first.data.iter().filter(|&&x| x > 0.75).count() > 10, "class {}", class_name(index));
        }
    }

    #[test]
    fn plain_variant_keeps_the_classes_and_flattens_the_background() {
        // The plain variant's most frequent red value covers most of every frame (the flat background); the
        // striped variant splits its background in two shades, so some clip falls below that share.
        let share = |v: &Video| {
            let plane = &v.data[..v.height * v.width];
            let mut counts = std::collections::HashMap::new();
            for x in plane {
                *counts.entry(x.to_bits()).or_insert(0usize) += 1;
            }
            *counts.values().max().unwrap() as f64 / plane.len() as f64
        };
        let a = MovingShapes::new(5, 32, 32, 3);
        let b = a.with_plain_backgrounds();
        let mut striped_min: f64 = 1.0;
        for i in 0..16 {
            let (va, la) = a.clip(i);
            let (vb, lb) = b.clip(i);
            assert_eq!(la, lb);
            assert!(share(&vb) > 0.6, "clip {i}: background share {}", share(&vb));
            striped_min = striped_min.min(share(&va));
        }
        assert!(striped_min < 0.6, "some default clips have striped backgrounds");
    }

    #[test]
    fn large_variant_keeps_the_clips_and_grows_the_shapes() {
        // Shape pixels: those that differ from the flat background (the most frequent colour of frame 0).
        let shape_pixels = |v: &Video| {
            let plane = v.height * v.width;
            let pixel = |i: usize| [0, 1, 2].map(|c| v.data[c * v.frames * plane + i].to_bits());
            let mut counts = std::collections::HashMap::new();
            for i in 0..plane {
                *counts.entry(pixel(i)).or_insert(0usize) += 1;
            }
            let (&bg, _) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
            (0..plane).filter(|&i| pixel(i) != bg).count()
        };
        let small = MovingShapes::new(5, 64, 64, 7).with_plain_backgrounds();
        let large = small.with_large_shapes();
        let (mut a, mut b) = (0, 0);
        for i in 0..16 {
            let ((vs, ls), (vl, ll)) = (small.clip(i), large.clip(i));
            assert_eq!(ls, ll);
            a += shape_pixels(&vs);
            b += shape_pixels(&vl);
        }
        // Areas grow with the square of the size (1.6² = 2.56), less what the frame edges and overlaps cut off.
        let ratio = b as f64 / a as f64;
        assert!((1.9..2.7).contains(&ratio), "area ratio {ratio} ({a} → {b} pixels)");
        // Only the shapes grow: the pixels where the large clip differs from the small one are the same with or
        // without background stripes (the stripes do not change with the shape size), and some clips are striped.
        let textured = MovingShapes::new(5, 64, 64, 7);
        let differing = |ds: MovingShapes, i: usize| {
            let (u, v) = (ds.clip(i).0, ds.with_large_shapes().clip(i).0);
            u.data.iter().zip(&v.data).filter(|(p, q)| p != q).count()
        };
        let mut striped = 0;
        for i in 0..16 {
            assert_eq!(differing(textured, i), differing(small, i), "clip {i}");
            striped += usize::from(textured.clip(i).0 != small.clip(i).0);
        }
        assert!(striped > 0);
    }

    #[test]
    fn single_variant_keeps_the_main_shape_and_background_and_drops_the_distractors() {
        // The distinct colours of frame `t` and the most frequent one (the plain background).
        let colours = |v: &Video, t: usize| {
            let plane = v.height * v.width;
            let mut counts = std::collections::HashMap::new();
            for i in 0..plane {
                let px = [0, 1, 2].map(|c| v.data[(c * v.frames + t) * plane + i].to_bits());
                *counts.entry(px).or_insert(0usize) += 1;
            }
            let bg = *counts.iter().max_by_key(|(_, n)| **n).unwrap().0;
            (counts.len(), bg)
        };
        let full = MovingShapes::new(5, 64, 64, 3).with_plain_backgrounds();
        let single = full.with_single_shape();
        let mut with_distractors = 0;
        for i in 0..32 {
            let ((vf, lf), (vs, ls)) = (full.clip(i), single.clip(i));
            assert_eq!(lf, ls);
            for t in 0..5 {
                let ((nf, bf), (ns, bs)) = (colours(&vf, t), colours(&vs, t));
                assert_eq!(bf, bs, "clip {i} frame {t}: the same background");
                assert!(ns <= 2, "clip {i} frame {t}: {ns} colours, background and one shape at most");
                with_distractors += usize::from(nf > ns);
            }
        }
        assert!(with_distractors > 20, "the full clips have distractors ({with_distractors} frames)");
    }

    #[test]
    fn fixed_look_gives_each_kind_its_colour_on_one_background_and_keeps_the_motion() {
        let pixel = |v: &Video, t: usize, i: usize| {
            let plane = v.height * v.width;
            [0, 1, 2].map(|c| v.data[(c * v.frames + t) * plane + i])
        };
        let ds = MovingShapes::new(5, 64, 64, 4).with_plain_backgrounds().with_large_shapes().with_single_shape();
        let fixed = ds.with_fixed_look();
        let mut areas = Vec::new();
        for i in 0..NUM_CLASSES {
            let ((vr, lr), (vf, lf)) = (ds.clip(i), fixed.clip(i));
            assert_eq!(lr, lf);
            let kind = lf / MOTIONS.len();
            let plane = vf.height * vf.width;
            // Every pixel is the background or the kind's colour.
            let mut shape = Vec::new();
            for p in 0..plane {
                let c = pixel(&vf, 0, p);
                assert!(c == FIXED_BACKGROUND || c == FIXED_COLOURS[kind], "clip {i} pixel {p}: {c:?}");
                if c == FIXED_COLOURS[kind] {
                    shape.push(p);
                }
            }
            // The shape is where it is in the clip without the fixed look (same position, same motion): their
            // centres of mass in frame 0 agree within a few pixels.
            let centre = |v: &Video, bg: [f32; 3]| {
                let pts: Vec<usize> = (0..plane).filter(|&p| pixel(v, 0, p) != bg).collect();
                let n = pts.len() as f32;
                let x = pts.iter().map(|&p| (p % v.width) as f32).sum::<f32>() / n;
                let y = pts.iter().map(|&p| (p / v.width) as f32).sum::<f32>() / n;
                (x, y)
            };
            let bg_r = pixel(&vr, 0, 0); // corner pixels are background in these clips
            let (a, b) = (centre(&vr, bg_r), centre(&vf, FIXED_BACKGROUND));
            assert!((a.0 - b.0).abs() < 4.0 && (a.1 - b.1).abs() < 4.0, "clip {i}: centres {a:?} and {b:?}");
            if lf % MOTIONS.len() != 3 {
                areas.push((kind, shape.len()));
            }
        }
        // One size: shapes of a kind that do not grow cover the same area (up to the frame edges cutting them).
        for (k, name) in SHAPES.iter().enumerate() {
            let a: Vec<usize> = areas.iter().filter(|(kind, _)| *kind == k).map(|(_, n)| *n).collect();
            let max = *a.iter().max().unwrap() as f32;
            assert!(a.iter().filter(|&&n| n as f32 > 0.97 * max).count() >= 2, "{name}: areas {a:?}");
        }
    }
}
