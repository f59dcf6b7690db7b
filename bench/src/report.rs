//! Renders the results as markdown: throughput by client count, the issue's
//! targets with pass/fail, history, requests per operation and memory.

use std::fmt::Write;

use serde_json::Value;

use crate::load::Stats;
use crate::{fmt_cell, Args, Row, TARGET_CLIENTS};

fn find<'a>(rows: &'a [Row], name: &str, clients: usize) -> Option<&'a Stats> {
    rows.iter()
        .find(|r| r.name == name && r.clients == clients)
        .map(|r| &r.stats)
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

#[allow(clippy::too_many_arguments)]
pub fn render(
    a: &Args,
    rows: &[Row],
    idle: &Stats,
    loaded: &Stats,
    under: &Stats,
    hist: &[Value],
    requests: &serde_json::Map<String, Value>,
    rss: &Value,
) -> String {
    let mut o = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        o,
        "### Throughput: requests/s (p50/p99 ms), 1 KB values, {cores} cores, {} s per cell\n",
        a.secs
    );
    let _ = write!(o, "| command |");
    for c in &a.clients {
        let _ = write!(o, " {c} clients |");
    }
    let _ = write!(o, "\n|---|");
    for _ in &a.clients {
        let _ = write!(o, "---:|");
    }
    o.push('\n');
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    for name in names {
        let _ = write!(o, "| {name} |");
        for &c in &a.clients {
            let cell = find(rows, name, c).map_or("-".to_string(), fmt_cell);
            let _ = write!(o, " {cell} |");
        }
        o.push('\n');
    }

    let t = if a.clients.contains(&TARGET_CLIENTS) {
        TARGET_CLIENTS
    } else {
        a.clients.iter().copied().max().unwrap_or(1)
    };
    let rps = |name: &str| find(rows, name, t).map_or(0.0, |s| s.rps);
    let _ = writeln!(o, "\n### Targets ({t} clients, same run)\n");
    let _ = writeln!(o, "| target | measured | |\n|---|---:|---|");
    let write = rps("LAKE.WRITE local://");
    let zadd = rps("ZADD (Lake-shaped member)");
    let _ = writeln!(
        o,
        "| LAKE.WRITE local:// >= 20,000/s | {write:.0}/s | {} |",
        mark(write >= 20_000.0)
    );
    if let Some(sync) = rows
        .iter()
        .find(|r| r.name == "raw append+fdatasync, 1 writer")
        .map(|r| &r.stats)
    {
        let ceiling = t as f64 * 1e6 / sync.p50_us.max(1) as f64;
        let _ = writeln!(
            o,
            "| (disk: fdatasync p50 {} us; {t} clients each waiting for their own flush top out near {ceiling:.0}/s) | {:.2} x that | |",
            sync.p50_us,
            write / ceiling.max(1.0)
        );
    }
    let _ = writeln!(
        o,
        "| LAKE.WRITE >= 0.3 x raw ZADD ({zadd:.0}/s) | {:.2} x | {} |",
        write / zadd.max(1.0),
        mark(write >= 0.3 * zadd)
    );
    let read = rps("LAKE.READ snapshot+8 local://");
    let get = rps("GET 1 KB");
    let _ = writeln!(
        o,
        "| LAKE.READ snapshot+8 >= 10,000/s | {read:.0}/s | {} |",
        mark(read >= 10_000.0)
    );
    let _ = writeln!(
        o,
        "| LAKE.READ >= 0.3 x raw GET ({get:.0}/s) | {:.2} x | {} |",
        read / get.max(1.0),
        mark(read >= 0.3 * get)
    );
    let doc_get = rps("GET of the snapshot+8 document's bytes");
    let _ = writeln!(
        o,
        "| LAKE.READ snapshot+8, unchanged (hot) >= 0.7 x GET of the same bytes ({doc_get:.0}/s) | {:.2} x | {} |",
        read / doc_get.max(1.0),
        mark(read >= 0.7 * doc_get)
    );
    let fresh = rps("LAKE.READ, 8 new deltas since the last read");
    let _ = writeln!(
        o,
        "| LAKE.READ with 8 new deltas since the last read >= 0.4 x GET of the same bytes | {fresh:.0}/s ({:.2} x) | {} |",
        fresh / doc_get.max(1.0),
        mark(fresh >= 0.4 * doc_get)
    );
    let durable = rps("SET 1 KB, appendfsync always");
    let _ = writeln!(
        o,
        "| LAKE.WRITE local:// >= 0.8 x SET 1 KB on Redis with appendfsync always ({durable:.0}/s) | {:.2} x | {} |",
        write / durable.max(1.0),
        mark(write >= 0.8 * durable)
    );
    let limit = 2 * idle.p99_us + 500;
    let _ = writeln!(
        o,
        "| PING p99 under write load ({:.0} writes/s) <= 2 x idle p99 ({} us) + 0.5 ms | {} us | {} |",
        under.rps,
        idle.p99_us,
        loaded.p99_us,
        mark(loaded.p99_us <= limit)
    );
    let p50 = |store: &str, pick: fn(u64, u64) -> bool| {
        hist.iter()
            .filter(|h| h["store"] == store)
            .fold(None::<(u64, u64)>, |acc, h| {
                let d = h["deltas"].as_u64().unwrap_or(0);
                let p = h["read"]["p50_us"].as_u64().unwrap_or(0);
                match acc {
                    Some((ad, _)) if !pick(d, ad) => acc,
                    _ => Some((d, p)),
                }
            })
    };
    if let (Some((lo_d, lo)), Some((hi_d, hi))) =
        (p50("local://", |d, a| d < a), p50("local://", |d, a| d > a))
    {
        let _ = writeln!(
            o,
            "| read p50 with {hi_d} deltas of history <= 1.5 x with {lo_d} ({lo} us) | {hi} us ({:.2} x) | {} |",
            hi as f64 / lo.max(1) as f64,
            mark(hi as f64 <= 1.5 * lo as f64)
        );
    }
    let s3w = rps("LAKE.WRITE s3://");
    let put = rps("raw S3 PUT (aws-sdk-s3)");
    let _ = writeln!(
        o,
        "| LAKE.WRITE s3:// >= 5 x raw S3 PUT ({put:.0}/s) | {s3w:.0}/s ({:.2} x) | {} |",
        s3w / put.max(1.0),
        mark(s3w >= 5.0 * put)
    );
    let _ = writeln!(
        o,
        "| LAKE.WRITE s3:// >= 0.5 x LAKE.WRITE local:// ({write:.0}/s) | {:.2} x | {} |",
        s3w / write.max(1.0),
        mark(s3w >= 0.5 * write)
    );
    if let Some(per) = requests.get("s3_puts_per_write").and_then(Value::as_f64) {
        let _ = writeln!(
            o,
            "| PUTs per LAKE.WRITE on s3:// <= 0.1 | {per:.3} | {} |",
            mark(per <= 0.1)
        );
    }
    if let (Some(w1), Some(p1)) = (
        find(rows, "LAKE.WRITE s3://", 1),
        find(rows, "raw S3 PUT (aws-sdk-s3)", 1),
    ) {
        let _ = writeln!(
            o,
            "| 1 client: LAKE.WRITE s3:// p50 <= 1.5 x raw PUT p50 ({} us) | {} us ({:.2} x) | {} |",
            p1.p50_us,
            w1.p50_us,
            w1.p50_us as f64 / p1.p50_us.max(1) as f64,
            mark(w1.p50_us as f64 <= 1.5 * p1.p50_us as f64)
        );
    }
    let seg = rps("LAKE.READ snapshot+8 uncached s3://");
    let obj = rps("LAKE.READ snapshot+8 uncached s3:// objects");
    let _ = writeln!(
        o,
        "| uncached LAKE.READ snapshot+8 on s3:// segments >= 1.0 x one object per write ({obj:.0}/s) | {seg:.0}/s ({:.2} x) | {} |",
        seg / obj.max(1.0),
        mark(seg >= obj)
    );

    let _ = writeln!(
        o,
        "\n### LAKE.READ latency against history (1 client; snapshot + 8 deltas after filling)\n"
    );
    let _ = writeln!(
        o,
        "| store | deltas written | fill writes/s | read p50 | read p99 |\n|---|---:|---:|---:|---:|"
    );
    for h in hist {
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} | {} us | {} us |",
            h["store"].as_str().unwrap_or("?"),
            h["deltas"],
            h["fill_writes_per_s"].as_f64().unwrap_or(0.0),
            h["read"]["p50_us"],
            h["read"]["p99_us"]
        );
    }
    let _ = writeln!(
        o,
        "\n### Object-store requests per operation ({t} clients)\n"
    );
    let _ = writeln!(o, "| measure | requests |\n|---|---:|");
    for (k, v) in requests {
        let _ = writeln!(o, "| {k} | {:.3} |", v.as_f64().unwrap_or(0.0));
    }
    let _ = writeln!(
        o,
        "\nMemory at the end (local:// instance): Redis {} MiB, sidecar {} MiB RSS.",
        rss["redis_kb"].as_u64().unwrap_or(0) / 1024,
        rss["sidecar_kb"].as_u64().unwrap_or(0) / 1024
    );
    o
}
