//! SVG line charts for `make bench`: one file per chart beside the JSON
//! results, shown in docs/performance.md. No dependency: axes with rounded
//! ticks, a linear or log-2 x axis, one polyline with markers per series,
//! a legend. Baselines are drawn dashed so a Lake series and the Redis (or
//! disk, or S3) figure it is compared with read apart at a glance.
//!
//! Invariants: the output is a complete SVG document whatever the data
//! (empty series, one point, zeros, non-finite values are skipped); text is
//! XML-escaped.

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed: a baseline measured in the same run.
    pub baseline: bool,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Log-2 x axis (client counts, history lengths).
    pub log_x: bool,
    pub series: Vec<Series>,
}

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `n` ticks.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v.abs() >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let fx = |x: f64| if self.log_x { x.max(1e-9).log2() } else { x };
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
            .collect();
        let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
            (a.min(fx(*x)), b.max(fx(*x)))
        });
        if pts.is_empty() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let ymax = pts.iter().fold(0.0f64, |m, (_, y)| m.max(*y));
        let ystep = nice_step(if ymax > 0.0 { ymax } else { 1.0 }, 5.0);
        let y1 = (ymax / ystep).ceil().max(1.0) * ystep;
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |x: f64| LEFT + (fx(x) - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - y / y1 * ph;

        let mut o = String::new();
        let _ = write!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
            LEFT + pw / 2.0,
            esc(&self.title)
        );
        // Y grid and ticks.
        let mut y = 0.0;
        while y <= y1 + ystep / 2.0 {
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#e0e0e0"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
                py(y),
                LEFT + pw,
                LEFT - 6.0,
                py(y) + 4.0,
                label(y)
            );
            y += ystep;
        }
        // X ticks: each distinct x of the data (client counts, lengths).
        let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        for x in xs {
            let _ = writeln!(
                o,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#999"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
                px(x),
                TOP + ph,
                TOP + ph + 5.0,
                TOP + ph + 18.0,
                label(x)
            );
        }
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{0}" stroke="#333"/><line x1="{LEFT}" y1="{0}" x2="{1}" y2="{0}" stroke="#333"/>
<text x="{2}" y="{3}" text-anchor="middle">{4}</text>
<text transform="translate(18 {5}) rotate(-90)" text-anchor="middle">{6}</text>
"##,
            TOP + ph,
            LEFT + pw,
            LEFT + pw / 2.0,
            H - 18.0,
            esc(&self.x_label),
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let dash = if s.baseline {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let mut points: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let line: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            if line.len() > 1 {
                let _ = writeln!(
                    o,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                    line.join(" ")
                );
            }
            for (x, y) in &points {
                let _ = writeln!(
                    o,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(*x),
                    py(*y)
                );
            }
            let ly = TOP + 10.0 + i as f64 * 20.0;
            let lx = W - RIGHT + 15.0;
            let _ = writeln!(
                o,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 24.0,
                lx + 30.0,
                ly + 4.0,
                esc(&s.name)
            );
        }
        o.push_str("</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &str, pat: &str) -> usize {
        s.matches(pat).count()
    }

    #[test]
    fn draws_every_series_and_stays_a_document_for_odd_data() {
        let chart = Chart {
            title: "reads <& writes>".into(),
            x_label: "clients".into(),
            y_label: "requests/s".into(),
            log_x: true,
            series: vec![
                Series {
                    name: "LAKE.READ".into(),
                    points: vec![(1.0, 5000.0), (8.0, 30000.0), (50.0, 76000.0)],
                    baseline: false,
                },
                Series {
                    name: "GET".into(),
                    points: vec![(1.0, 15000.0), (50.0, 88000.0), (0.0, 1.0), (2.0, f64::NAN)],
                    baseline: true,
                },
                Series {
                    name: "empty".into(),
                    points: vec![],
                    baseline: false,
                },
            ],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(count(&svg, "<polyline"), 2);
        assert_eq!(
            count(&svg, "<circle"),
            5,
            "the x=0 (log) and NaN points are skipped"
        );
        assert_eq!(
            count(&svg, "stroke-dasharray"),
            2,
            "baseline line and legend"
        );
        assert!(svg.contains("reads &lt;&amp; writes&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let none = Chart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            log_x: false,
            series: vec![],
        };
        assert!(none.svg().ends_with("</svg>\n"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(76000.0, 5.0), 20000.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(label(20000.0), "20k");
        assert_eq!(label(1500000.0), "1.5M");
        assert_eq!(label(0.25), "0.25");
    }
}
