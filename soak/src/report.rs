//! What a person reads after a run: a text report (operations by outcome,
//! faults with their windows, anomalies by kind with examples, the seed to
//! replay) and a timeline picture: operations per second, errors by class,
//! fault windows shaded.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::checker::Verdict;
use crate::history::{History, Kind, Outcome};

/// Examples shown per anomaly kind.
const EXAMPLES: usize = 3;

/// The text report.
pub fn text(h: &History, v: &Verdict, replay: &str) -> String {
    let mut out = String::new();
    let secs = h.ops.iter().map(|o| o.completed).max().unwrap_or(0) as f64 / 1e3;
    let _ = writeln!(out, "lake-soak: seed {} ({replay})", h.seed);
    let _ = writeln!(
        out,
        "{} operations in {secs:.0} s, {} faults",
        h.ops.len(),
        h.faults.len()
    );
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for op in &h.ops {
        let kind = match op.kind {
            Kind::Append { .. } => "append",
            Kind::Read { at: None, .. } => "read",
            Kind::Read { at: Some(_), .. } => "read-at",
        };
        let outcome = match &op.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Definite(e) => format!("definite {e}"),
            Outcome::Unknown(e) => format!("unknown {e}"),
        };
        *outcomes.entry(format!("{kind} {outcome}")).or_default() += 1;
    }
    let _ = writeln!(out, "\noperations by outcome:");
    for (k, n) in &outcomes {
        let _ = writeln!(out, "  {k:<32} {n}");
    }
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &h.faults {
        *faults.entry(&f.kind).or_default() += 1;
    }
    let _ = writeln!(out, "\nfaults by kind:");
    for (k, n) in &faults {
        let _ = writeln!(out, "  {k:<32} {n}");
    }
    let _ = writeln!(out, "\nfault windows (ms since start):");
    for f in &h.faults {
        let _ = writeln!(out, "  {:>8} - {:>8}  {}", f.start, f.end, f.kind);
    }
    let _ = writeln!(
        out,
        "\nacknowledged writes lost to faults that may lose them (no replica had confirmed them): {}",
        v.allowed_losses
    );
    let _ = writeln!(
        out,
        "reads that saw such writes, completed within {} ms before a primary was killed: {}",
        crate::checker::LOSS_WINDOW_MS,
        v.excused_reads
    );
    let by = v.by_kind();
    let _ = writeln!(out, "anomalies: {}", v.anomalies.len());
    for (kind, found) in &by {
        let _ = writeln!(out, "  {} ({}):", kind.name(), found.len());
        for f in found.iter().take(EXAMPLES) {
            let _ = writeln!(out, "    [{}] {}", f.catalog, f.detail);
        }
    }
    out
}

/// The timeline picture, as SVG.
pub fn svg(h: &History) -> String {
    let secs = (h.ops.iter().map(|o| o.completed).max().unwrap_or(0) / 1000 + 1) as usize;
    let mut ok = vec![0u32; secs];
    let mut definite = vec![0u32; secs];
    let mut unknown = vec![0u32; secs];
    for op in &h.ops {
        let s = (op.completed / 1000) as usize;
        let bucket = match op.outcome {
            Outcome::Ok => &mut ok,
            Outcome::Definite(_) => &mut definite,
            Outcome::Unknown(_) => &mut unknown,
        };
        if let Some(b) = bucket.get_mut(s) {
            *b += 1;
        }
    }
    let (w, hgt, left, top, bottom) = (1000.0, 360.0, 60.0, 20.0, 40.0);
    let plot_h = hgt - top - bottom;
    let max = ok
        .iter()
        .chain(&definite)
        .chain(&unknown)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |s: f64| left + (w - left - 10.0) * s / secs as f64;
    let y = |n: f64| top + plot_h * (1.0 - n / max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    for f in &h.faults {
        let (a, b) = (x(f.start as f64 / 1e3), x(f.end as f64 / 1e3));
        let _ = writeln!(
            out,
            r##"<rect x="{a:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="#f4b400" fill-opacity="0.18"><title>{} {}-{} ms</title></rect>"##,
            (b - a).max(1.0),
            f.kind,
            f.start,
            f.end
        );
        let _ = writeln!(
            out,
            r##"<text x="{a:.1}" y="{:.1}" fill="#a06000" font-size="9">{}</text>"##,
            top + 10.0,
            f.kind
        );
    }
    for (series, color, label) in [
        (&ok, "#1a73e8", "ok/s"),
        (&definite, "#d93025", "definite errors/s"),
        (&unknown, "#8e24aa", "unknown outcomes/s"),
    ] {
        let pts: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(s, n)| format!("{:.1},{:.1}", x(s as f64 + 0.5), y(*n as f64)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"><title>{label}</title></polyline>"##,
            pts.join(" ")
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"##,
        top + plot_h,
        w - 10.0,
        top + plot_h
    );
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="black"/>"##,
        top + plot_h
    );
    let _ = writeln!(
        out,
        r##"<text x="5" y="{:.1}">{max:.0}/s</text><text x="5" y="{:.1}">0</text>"##,
        top + 10.0,
        top + plot_h
    );
    let _ = writeln!(
        out,
        r##"<text x="{left}" y="{:.1}">0 s</text><text x="{:.1}" y="{:.1}" text-anchor="end">{secs} s</text>"##,
        hgt - 22.0,
        w - 10.0,
        hgt - 22.0
    );
    let _ = writeln!(
        out,
        r##"<text x="{left}" y="{:.1}"><tspan fill="#1a73e8">ok/s</tspan>  <tspan fill="#d93025">definite errors/s</tspan>  <tspan fill="#8e24aa">unknown outcomes/s</tspan>  <tspan fill="#a06000">faults shaded</tspan>  seed {}</text>"##,
        hgt - 6.0,
        h.seed
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker;
    use crate::history::{Fault, Op};

    #[test]
    fn the_report_and_picture_name_what_happened() {
        let h = History {
            seed: 7,
            ops: vec![Op {
                client: 0,
                catalog: "c".into(),
                kind: Kind::Append {
                    value: 1,
                    stamp: Some(1),
                    confirmed: true,
                },
                invoked: 0,
                completed: 1500,
                outcome: Outcome::Ok,
            }],
            faults: vec![Fault {
                kind: "sidecar-kill".into(),
                start: 100,
                end: 900,
            }],
            crashed: vec!["primary".into()],
            ..History::default()
        };
        let v = checker::check(&h);
        let t = text(&h, &v, "replay");
        assert!(t.contains("seed 7"), "{t}");
        assert!(t.contains("sidecar-kill"), "{t}");
        assert!(t.contains("crash (1)"), "{t}");
        let s = svg(&h);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("sidecar-kill"));
    }
}
