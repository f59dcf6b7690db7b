//! `lake-bench --apps`: the application verbs against their baselines in
//! one run, on one `local://` Lake: conditional writes (`IFSTAMP`
//! read-modify-write, own catalog and one shared catalog) next to plain
//! `LAKE.WRITE`; `LAKE.VIEW` cached next to `LAKE.READ` of the same
//! catalog, and recomputed after every write next to write + read; the
//! `LAKE.CHANGES` feed with 1 and 50 blocked followers next to the same
//! writers with none (delivery latency: a delta's commit stamp, wall-clock
//! microseconds on this machine, to the follower's receipt).
//!
//! Closed loops on redis-rs connections, one thread each; every latency is
//! kept (see [`crate::load::Stats`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lake_tests::redis::{self, Connection};
use lake_tests::{Lake, Options, StoreKind};

use crate::load::Stats;
use crate::{fmt_cell, read_catalog};

/// Runs `clients` threads of `op` for `secs`; `op(con, client, i)` returns
/// `Err` for a failed request.
fn closed_loop(
    lake: &Lake,
    clients: usize,
    secs: f64,
    op: impl Fn(&mut Connection, usize, u64) -> Result<(), String> + Send + Sync + 'static,
) -> Stats {
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (mut con, op) = (lake.con(), op.clone());
            std::thread::spawn(move || {
                let (mut lat, mut errors, mut first) = (Vec::new(), 0u64, None);
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op(&mut con, c, i) {
                        Ok(()) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e);
                        }
                    }
                    i += 1;
                }
                (lat, errors, first)
            })
        })
        .collect();
    let (mut lat, mut errors, mut first) = (Vec::new(), 0, None);
    for t in threads {
        let (l, e, f) = t.join().expect("bench thread");
        lat.extend(l);
        errors += e;
        first = first.or(f);
    }
    Stats::from_latencies(lat, errors, first, secs)
}

fn write(con: &mut Connection, cat: &str, field: &str, value: &str) -> Result<i64, String> {
    redis::cmd("LAKE.WRITE")
        .arg(cat)
        .arg(field)
        .arg(value)
        .query::<(String, i64)>(con)
        .map(|(_, s)| s)
        .map_err(lake_tests::err_text)
}

/// One read-modify-write of counter `n`: read `WITHSTAMP`, write
/// `IFSTAMP`; a `CONFLICT` is counted in `conflicts` and retried.
fn increment(con: &mut Connection, cat: &str, conflicts: &AtomicU64) -> Result<(), String> {
    loop {
        let (text, stamp): (Option<String>, i64) = redis::cmd("LAKE.READ")
            .arg(cat)
            .arg("PATH")
            .arg("n")
            .arg("WITHSTAMP")
            .query(con)
            .map_err(lake_tests::err_text)?;
        let n: i64 = text.and_then(|t| t.parse().ok()).unwrap_or(0);
        match redis::cmd("LAKE.WRITE")
            .arg(cat)
            .arg("n")
            .arg(n + 1)
            .arg("IFSTAMP")
            .arg(stamp)
            .query::<(String, i64)>(con)
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some("CONFLICT") => {
                conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(lake_tests::err_text(e)),
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `writers` writing one catalog for `secs` while `followers` follow it
/// with `LAKE.CHANGES ... BLOCK`: the writers' stats and the delivery
/// latency of every entry every follower got (`with_values`: each entry's
/// mode and value too, fetched by the sidecar).
fn feed(
    lake: &Lake,
    cat: &str,
    writers: usize,
    followers: usize,
    with_values: bool,
    secs: f64,
) -> (Stats, Stats) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = {
        let mut con = lake.con();
        write(&mut con, cat, "start", "0").expect("write")
    };
    let threads: Vec<_> = (0..followers)
        .map(|_| {
            let (mut con, stop, cat) = (lake.con(), stop.clone(), cat.to_string());
            std::thread::spawn(move || {
                let (mut lat, mut since) = (Vec::new(), start);
                while !stop.load(Ordering::Relaxed) {
                    let mut cmd = redis::cmd("LAKE.CHANGES");
                    cmd.arg(&cat)
                        .arg("SINCE")
                        .arg(since)
                        .arg("COUNT")
                        .arg(1000)
                        .arg("BLOCK")
                        .arg(200);
                    if with_values {
                        cmd.arg("WITHVALUES");
                    }
                    let page: Vec<Vec<redis::Value>> = cmd.query(&mut con).unwrap_or_default();
                    let now = now_us();
                    for entry in &page {
                        let Some(Ok(stamp)) = entry.first().map(redis::from_redis_value::<i64>)
                        else {
                            continue;
                        };
                        lat.push((now - stamp).clamp(0, u32::MAX as i64) as u32);
                        since = since.max(stamp);
                    }
                }
                lat
            })
        })
        .collect();
    let cat2 = cat.to_string();
    let w = closed_loop(lake, writers, secs, move |con, c, i| {
        write(con, &cat2, &format!("w{c}.n{}", i % 64), "1").map(|_| ())
    });
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().expect("follower"));
    }
    (w, Stats::from_latencies(lat, 0, None, secs))
}

/// Runs every phase and prints one markdown table.
pub fn run(clients: &[usize], secs: f64) {
    let value = format!("\"{}\"", "x".repeat(1022));
    let lake = Lake::with(Options {
        store: StoreKind::Local,
        views: vec![(
            "count".into(),
            "function view(doc) { return Object.keys(doc).length; }".into(),
        )],
        ..Options::default()
    });
    read_catalog(&lake, "v8", 8, &value);
    let mut rows: Vec<(String, usize, Stats)> = Vec::new();
    let mut add = |name: String, n: usize, s: Stats| {
        eprintln!("  {name:<58} {n:>3} clients {}", fmt_cell(&s));
        rows.push((name, n, s));
    };
    for &n in clients {
        eprintln!("bench: {n} clients");
        let v = value.clone();
        add(
            "LAKE.WRITE, own catalog (baseline)".into(),
            n,
            closed_loop(&lake, n, secs, move |con, c, i| {
                write(con, &format!("w{c}"), &format!("f{}", i % 8), &v).map(|_| ())
            }),
        );
        let conflicts = Arc::new(AtomicU64::new(0));
        let cf = conflicts.clone();
        add(
            "read WITHSTAMP + write IFSTAMP, own catalog".into(),
            n,
            closed_loop(&lake, n, secs, move |con, c, _| {
                increment(con, &format!("own{c}"), &cf)
            }),
        );
        let before = conflicts.load(Ordering::Relaxed);
        let cf = conflicts.clone();
        let shared = format!("shared{n}");
        let s = closed_loop(&lake, n, secs, move |con, _, _| {
            increment(con, &shared, &cf)
        });
        let lost = conflicts.load(Ordering::Relaxed) - before;
        add(
            format!("same, one shared catalog ({lost} conflicts retried)"),
            n,
            s,
        );
        add(
            "LAKE.READ snapshot+8 (baseline)".into(),
            n,
            closed_loop(&lake, n, secs, |con, _, _| {
                redis::cmd("LAKE.READ")
                    .arg("v8")
                    .arg("NOSNAP")
                    .query::<String>(con)
                    .map(|_| ())
                    .map_err(lake_tests::err_text)
            }),
        );
        add(
            "LAKE.VIEW count of that catalog, cached".into(),
            n,
            closed_loop(&lake, n, secs, |con, _, _| {
                redis::cmd("LAKE.VIEW")
                    .arg("v8")
                    .arg("count")
                    .query::<String>(con)
                    .map(|_| ())
                    .map_err(lake_tests::err_text)
            }),
        );
        for (name, cmd) in [
            ("write + LAKE.READ, own catalog (baseline)", "read"),
            ("write + LAKE.VIEW count, own catalog (recomputed)", "view"),
        ] {
            let v = value.clone();
            add(
                name.into(),
                n,
                closed_loop(&lake, n, secs, move |con, c, i| {
                    let cat = format!("wv{c}");
                    write(con, &cat, &format!("f{}", i % 8), &v)?;
                    let mut q = redis::cmd(if cmd == "read" {
                        "LAKE.READ"
                    } else {
                        "LAKE.VIEW"
                    });
                    q.arg(&cat);
                    if cmd == "view" {
                        q.arg("count");
                    }
                    q.query::<String>(con)
                        .map(|_| ())
                        .map_err(lake_tests::err_text)
                }),
            );
        }
    }
    eprintln!("bench: LAKE.CHANGES fan-out, 8 writers on one catalog");
    let mut fan = Vec::new();
    for (followers, with_values) in [(0, false), (1, false), (50, false), (1, true)] {
        let cat = format!("feed{followers}{}", if with_values { "v" } else { "" });
        let (w, d) = feed(&lake, &cat, 8, followers, with_values, secs);
        let what = if with_values { " WITHVALUES" } else { "" };
        eprintln!(
            "  {followers:>2} followers{what}: writes {}, delivered {} entries, p50 {} us p99 {} us",
            fmt_cell(&w),
            d.ops,
            d.p50_us,
            d.p99_us
        );
        fan.push((format!("{followers}{what}"), w, d));
    }
    println!(
        "### Application verbs: requests/s (p50/p99 ms), local://, {} s per cell\n",
        secs
    );
    println!("| operation | clients | result |\n|---|---:|---:|");
    for (name, n, s) in &rows {
        println!("| {name} | {n} | {} |", fmt_cell(s));
    }
    println!("\n#### LAKE.CHANGES fan-out: 8 writers on one catalog, followers blocked on it\n");
    println!("| followers | writes/s (p50/p99 ms) | entries delivered/s | delivery p50 / p99 ms |\n|---:|---:|---:|---:|");
    for (f, w, d) in &fan {
        if f == "0" {
            println!("| 0 | {} | - | - |", fmt_cell(w));
            continue;
        }
        println!(
            "| {f} | {} | {:.0} | {:.2} / {:.2} |",
            fmt_cell(w),
            d.rps,
            d.p50_us as f64 / 1e3,
            d.p99_us as f64 / 1e3
        );
    }
}
