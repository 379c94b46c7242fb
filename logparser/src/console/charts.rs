//! Small SVG line charts for the overview (no script library, no external asset): one series
//! over the last minutes, its scale and its latest value.

use std::fmt::Write;

/// Escapes text for SVG/HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Formats a value for a chart label: whole numbers plain, others with up to 2 decimals.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders `points` (`(seconds relative to now, value)`, oldest first) as an SVG line chart
/// `width`×`height` titled `title`, with the unit `unit`. An empty series draws an empty frame
/// that says so. Non-finite values are skipped.
pub fn line_chart(
    title: &str,
    unit: &str,
    points: &[(f64, f64)],
    width: u32,
    height: u32,
) -> String {
    let points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (w, h) = (f64::from(width), f64::from(height));
    let (left, right, top, bottom) = (4.0, 4.0, 18.0, 14.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{t}">"#,
        t = escape(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="0.5" y="0.5" width="{}" height="{}" fill="#fff" stroke="#ccc"/>"##,
        w - 1.0,
        h - 1.0
    );
    let latest = points.last().map(|p| p.1);
    let _ = write!(
        svg,
        r##"<text x="{left}" y="12" font-size="11" fill="#333">{} {}</text>"##,
        escape(title),
        latest.map_or_else(
            || "no data yet".to_string(),
            |v| format!("{} {}", fmt_value(v), escape(unit))
        )
    );
    if points.len() >= 2 {
        let x0 = points.first().map_or(0.0, |p| p.0);
        let x1 = points.last().map_or(1.0, |p| p.0);
        let span_x = (x1 - x0).max(1e-9);
        let max_y = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
        let max_y = if max_y <= 0.0 { 1.0 } else { max_y * 1.1 };
        let plot_w = w - left - right;
        let plot_h = h - top - bottom;
        let coords: Vec<String> = points
            .iter()
            .map(|(x, y)| {
                let px = left + (x - x0) / span_x * plot_w;
                let py = top + plot_h - (y.max(0.0) / max_y) * plot_h;
                format!("{px:.1},{py:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#2a6ebb" stroke-width="1.5" points="{}"/>"##,
            coords.join(" ")
        );
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="9" fill="#777" text-anchor="end">max {}</text>"##,
            w - right,
            12,
            fmt_value(max_y / 1.1)
        );
        let _ = write!(
            svg,
            r##"<text x="{left}" y="{}" font-size="9" fill="#777">{}s</text><text x="{}" y="{}" font-size="9" fill="#777" text-anchor="end">now</text>"##,
            h - 3.0,
            fmt_value(x0),
            w - right,
            h - 3.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_points_scaled_into_the_frame() {
        let svg = line_chart(
            "checkouts/s",
            "/s",
            &[(-10.0, 0.0), (-5.0, 5.0), (0.0, 10.0)],
            200,
            80,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("checkouts/s 10 /s"), "{svg}");
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let coords: Vec<(f64, f64)> = points
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(coords.len(), 3);
        assert!(coords
            .iter()
            .all(|(x, y)| (0.0..=200.0).contains(x) && (0.0..=80.0).contains(y)));
        assert!(
            coords[0].0 < coords[1].0 && coords[1].0 < coords[2].0,
            "time goes right"
        );
        assert!(coords[0].1 > coords[2].1, "larger values are higher");
    }

    #[test]
    fn an_empty_or_odd_series_still_draws_and_escapes() {
        let svg = line_chart("<p99>", "ms", &[], 100, 50);
        assert!(
            svg.contains("no data yet") && svg.contains("&lt;p99&gt;") && !svg.contains("<p99>")
        );
        assert!(!svg.contains("polyline"));
        let svg = line_chart("x", "", &[(0.0, f64::NAN), (1.0, 0.0), (2.0, 0.0)], 100, 50);
        assert!(svg.contains("polyline") && !svg.contains("NaN"));
        assert_eq!(fmt_value(2.0), "2");
        assert_eq!(fmt_value(2.345), "2.35");
    }
}
