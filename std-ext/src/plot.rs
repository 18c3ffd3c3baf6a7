//! Forecast plots: the history, the median (or mean) and a quantile band per variate, as SVG,
//! and as PNG by rendering that same SVG with `resvg` (pure Rust; text in an embedded subset of
//! DejaVu Sans, so the picture is the same on every machine and needs no system fonts).

use std::fmt::Write;
use std::sync::Arc;

/// One variate's lines.
pub struct PlotSeries<'a> {
    /// Legend name.
    pub name: &'a str,
    /// History (NaN gaps are left open).
    pub history: &'a [f64],
    /// Point forecast (median or mean), one per future step.
    pub center: &'a [f64],
    /// Lower and upper band edges, one per future step (empty: no band).
    pub band: (&'a [f64], &'a [f64]),
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// Renders an SVG document `width × height` pixels.
///
/// `x_labels` names the plotted positions, history first then forecast steps (for example
/// timestamps); when its length is not `history + horizon`, ticks count steps relative to the
/// first forecast step instead.
pub fn svg(
    series: &[PlotSeries<'_>],
    title: &str,
    x_labels: &[String],
    width: f64,
    height: f64,
) -> String {
    // The legend has a row per variate above the plot area, the first beside the title.
    let (left, right, bottom) = (70.0, 20.0, 44.0);
    let top = 40.0 + 16.0 * series.len().saturating_sub(1) as f64;
    let hist_len = series.iter().map(|s| s.history.len()).max().unwrap_or(0);
    let horizon = series.iter().map(|s| s.center.len()).max().unwrap_or(0);
    let total = (hist_len + horizon).max(2) as f64;
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for s in series {
        for &v in s
            .history
            .iter()
            .chain(s.center)
            .chain(s.band.0)
            .chain(s.band.1)
        {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let pad = 0.05 * (hi - lo);
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |i: f64| left + (width - left - right) * i / (total - 1.0);
    let y = |v: f64| top + (height - top - bottom) * (hi - v) / (hi - lo);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    // Round y ticks (1, 2 or 5 times a power of ten apart), about five of them.
    let y_step = nice_step((hi - lo) / 5.0);
    let first_tick = (lo / y_step).ceil() as i64;
    for k in first_tick..=first_tick + 10 {
        let v = k as f64 * y_step;
        if v > hi {
            break;
        }
        let yy = y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - right,
            left - 6.0,
            yy + 4.0,
            tick_label(v, y_step)
        );
    }
    // About six x ticks at round step counts, always one at the first forecast step.
    let positions = hist_len + horizon;
    let step = nice_step(positions.max(1) as f64 / 6.0).max(1.0) as usize;
    let first = hist_len % step;
    for i in (first..positions).step_by(step) {
        let label = if x_labels.len() == positions {
            x_labels[i].clone()
        } else {
            format!("{:+}", i as isize - hist_len as isize)
        };
        let xx = x(i as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{}" y2="{}" stroke="#888"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            height - bottom,
            height - bottom + 4.0,
            height - bottom + 17.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
        left + (width - left - right) / 2.0,
        height - 6.0,
        if x_labels.len() == positions {
            "time"
        } else {
            "steps (0 = first forecast step)"
        }
    );
    let split = x(hist_len as f64 - 0.5);
    let _ = writeln!(
        out,
        r##"<line x1="{split:.1}" x2="{split:.1}" y1="{top}" y2="{}" stroke="#888" stroke-dasharray="4 3"/>"##,
        height - bottom
    );
    for (n, s) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let offset = hist_len - s.history.len();
        if !s.band.0.is_empty() {
            let mut pts = String::new();
            for (i, v) in s.band.1.iter().enumerate() {
                let _ = write!(pts, "{:.1},{:.1} ", x((hist_len + i) as f64), y(*v));
            }
            for (i, v) in s.band.0.iter().enumerate().rev() {
                let _ = write!(pts, "{:.1},{:.1} ", x((hist_len + i) as f64), y(*v));
            }
            let _ = writeln!(
                out,
                r#"<polygon points="{pts}" fill="{color}" fill-opacity="0.2" stroke="none"/>"#
            );
        }
        let mut path = String::new();
        let mut pen_up = true;
        for (i, v) in s.history.iter().enumerate() {
            if !v.is_finite() {
                pen_up = true;
                continue;
            }
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if pen_up { "M" } else { "L" },
                x((offset + i) as f64),
                y(*v)
            );
            pen_up = false;
        }
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="1.3"/>"#
        );
        let mut path = String::new();
        for (i, v) in s.center.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                x((hist_len + i) as f64),
                y(*v)
            );
        }
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="6 3"/>"#
        );
        // Legend: the name on a solid swatch (history), "forecast" on a dashed one, the band.
        let ly = 21.0 + 16.0 * n as f64;
        let lx = width - right - 250.0;
        let _ = writeln!(
            out,
            r##"<rect x="{lx}" y="{:.1}" width="14" height="2" fill="{color}"/><text x="{}" y="{:.1}">{}</text><line x1="{}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="4 2"/><text x="{}" y="{:.1}">forecast</text>"##,
            ly - 3.0,
            lx + 18.0,
            ly + 1.0,
            escape(s.name),
            lx + 110.0,
            lx + 124.0,
            ly - 2.0,
            ly - 2.0,
            lx + 128.0,
            ly + 1.0,
        );
        if !s.band.0.is_empty() {
            let _ = writeln!(
                out,
                r#"<rect x="{}" y="{:.1}" width="14" height="8" fill="{color}" fill-opacity="0.2"/><text x="{}" y="{:.1}">band</text>"#,
                lx + 186.0,
                ly - 6.0,
                lx + 204.0,
                ly + 1.0,
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power)
}

/// The subset of DejaVu Sans (ASCII and a few symbols; std-ext/assets/README.md) PNG text uses.
static PLOT_FONT: &[u8] = include_bytes!("../assets/DejaVuSans-plot.ttf");

/// Renders an SVG from [`svg`] to PNG bytes at its own pixel size (`scale` 2.0 for high-DPI).
pub fn png(svg: &str, scale: f32) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut fonts = usvg::fontdb::Database::new();
    fonts.load_font_data(PLOT_FONT.to_vec());
    fonts.set_sans_serif_family("DejaVu Sans");
    let options = usvg::Options {
        font_family: "DejaVu Sans".to_string(),
        fontdb: Arc::new(fonts),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("plot SVG: {e}"))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or("plot size")?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| format!("cannot allocate a {}×{} image", size.width(), size.height()))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| format!("PNG encoding: {e}"))
}

/// A tick value with as many decimals as the tick spacing needs.
fn tick_label(v: f64, step: f64) -> String {
    if v.abs() >= 1e7 || step < 1e-6 {
        return format!("{v:.3e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    // Snap away accumulated error so 0.30000000000000004 prints as 0.3 and -0 as 0.
    let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
    format!("{v:.decimals$}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_part() {
        let hist = [1.0, f64::NAN, 3.0, 4.0];
        let s = svg(
            &[PlotSeries {
                name: "a<b",
                history: &hist,
                center: &[4.5, 5.0],
                band: (&[4.0, 4.2], &[5.0, 6.0]),
            }],
            "t",
            &[],
            600.0,
            300.0,
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("<polygon") && s.contains("a&lt;b"));
        assert_eq!(s.matches("<path").count(), 2);
        assert!(!s.contains("NaN"));
        // Relative step ticks, including the first forecast step.
        assert!(s.contains(">+0<") && s.contains(">-4<"));
    }

    #[test]
    fn timestamp_labels_are_used() {
        let labels: Vec<String> = (0..6).map(|i| format!("day{i}")).collect();
        let s = svg(
            &[PlotSeries {
                name: "x",
                history: &[1.0, 2.0, 3.0, 4.0],
                center: &[4.5, 5.0],
                band: (&[], &[]),
            }],
            "t",
            &labels,
            600.0,
            300.0,
        );
        assert!(s.contains(">day4<") && !s.contains(">+0<"));
        assert!(!s.contains("<polygon"));
    }

    #[test]
    fn png_is_a_decodable_image_with_the_chart_drawn() {
        let s = svg(
            &[PlotSeries {
                name: "x",
                history: &[1.0, 2.0, 3.0, 4.0],
                center: &[4.5, 5.0],
                band: (&[4.0, 4.2], &[5.0, 6.0]),
            }],
            "title",
            &[],
            300.0,
            150.0,
        );
        let bytes = png(&s, 1.0).expect("renders");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let pixmap = resvg::tiny_skia::Pixmap::decode_png(&bytes).expect("decodes");
        assert_eq!((pixmap.width(), pixmap.height()), (300, 150));
        // White background with coloured and dark (text, grid) pixels on it.
        let px = pixmap.pixels();
        let white = px
            .iter()
            .filter(|p| p.red() == 255 && p.green() == 255 && p.blue() == 255);
        let dark = px
            .iter()
            .filter(|p| p.red() < 100 && p.green() < 100 && p.blue() < 100);
        let blue = px.iter().filter(|p| p.blue() > 150 && p.red() < 100);
        assert!(white.count() > px.len() / 2);
        assert!(dark.count() > 50, "text is rendered");
        assert!(blue.count() > 20, "the series is drawn");
        let double = png(&s, 2.0).expect("renders");
        let big = resvg::tiny_skia::Pixmap::decode_png(&double).expect("decodes");
        assert_eq!((big.width(), big.height()), (600, 300));
    }

    #[test]
    fn tick_labels_have_the_decimals_the_spacing_needs() {
        assert_eq!(tick_label(365.0, 5.0), "365");
        assert_eq!(tick_label(0.30000000000000004, 0.1), "0.3");
        assert_eq!(tick_label(1e-12, 0.5), "0.0");
        assert_eq!(tick_label(2.5e8, 1e8), "2.500e8");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(43.0), 50.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
    }
}
