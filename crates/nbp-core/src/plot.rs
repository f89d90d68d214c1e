//! Line plots as SVG files (loss curves of training runs): axes with ticks, one polyline per series, a legend.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Result, write_atomic};

/// One curve: a name and `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// "Nice" tick positions covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= target as f64).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..=target * 2).map(|i| first + i as f64 * step).take_while(|v| *v <= hi + step * 1e-9).collect()
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-2 {
        format!("{v:.1e}")
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders `series` as an SVG document (`x_label` under the x axis, `title` on top).
pub fn line_plot_svg(title: &str, x_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 70.0, 20.0, 40.0, 50.0);
    let all = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    (y0, y1) = ((y0 - pad).max(if y0 >= 0.0 { 0.0 } else { f64::MIN }), y1 + pad);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        w / 2.0,
        escape(title)
    );
    for t in ticks(x0, x1, 8) {
        let x = px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            h - bottom,
            h - bottom + 16.0,
            label(t)
        );
    }
    for t in ticks(y0, y1, 6) {
        let y = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
        w - left - right,
        h - top - bottom,
        (left + w - right) / 2.0,
        h - 12.0,
        escape(x_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>
<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            pts.join(" "),
            w - right - 250.0,
            top + 16.0 + 18.0 * i as f64,
            w - right - 230.0,
            top + 16.0 + 18.0 * i as f64,
            w - right - 224.0,
            top + 20.0 + 18.0 * i as f64,
            escape(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes [`line_plot_svg`] to `path` (atomically).
pub fn write_line_plot(path: impl AsRef<Path>, title: &str, x_label: &str, series: &[Series]) -> Result<()> {
    write_atomic(path, line_plot_svg(title, x_label, series).as_bytes())
}

/// A moving average over `window` points (smooths noisy per-step losses).
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(points.len());
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 100.0, 5), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let t = ticks(2.13, 7.9, 6);
        assert_eq!(t.first().copied(), Some(3.0));
        assert_eq!(t.last().copied(), Some(7.0));
    }

    #[test]
    fn moving_average_by_hand() {
        let p = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)];
        assert_eq!(moving_average(&p, 2), vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]);
    }

    #[test]
    fn svg_has_one_polyline_per_series_and_maps_the_extremes_to_the_frame() {
        let s = line_plot_svg(
            "loss <run>",
            "step",
            &[
                Series { name: "train".into(), points: vec![(0.0, 4.0), (10.0, 1.0)] },
                Series { name: "valid".into(), points: vec![(5.0, 2.0)] },
            ],
        );
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("loss &lt;run&gt;"));
        // x = 0 maps to the left edge of the frame (70 px); x = 10 to the right edge (700 px).
        assert!(s.contains("points=\"70.0,"), "{s}");
        assert!(s.contains(" 700.0,"), "{s}");
    }
}
