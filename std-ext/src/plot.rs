//! Forecast plots as SVG: the history, the median (or mean) and a quantile band per variate.

use std::fmt::Write;

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
pub fn svg(series: &[PlotSeries<'_>], title: &str, width: f64, height: f64) -> String {
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 40.0);
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
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let yy = y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - right,
            left - 6.0,
            yy + 4.0,
            short(v)
        );
    }
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
        let ly = top + 16.0 * n as f64 + 8.0;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{}" y="{:.1}">{}</text>"#,
            width - right - 150.0,
            ly - 3.0,
            width - right - 132.0,
            ly + 1.0,
            escape(s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn short(v: f64) -> String {
    if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.2e}")
    } else {
        format!("{v:.2}")
    }
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
            600.0,
            300.0,
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("<polygon") && s.contains("a&lt;b"));
        assert_eq!(s.matches("<path").count(), 2);
        assert!(!s.contains("NaN"));
    }
}
