//! `make bench`: Lake against its own baselines, in one run on one machine.
//!
//! Starts its own Redis + module + sidecar on `local://`, `file://` and
//! `s3://` (the workspace's S3 test server; segments, and one object per
//! write as the baseline; and with the index journal not shipped, for the
//! cost of shipping), plus sidecars with the merged-document cache off
//! on `local://` and `s3://`, and measures at each client count:
//! baselines (`PING`, raw `ZADD` with Lake-shaped members, `SET`/`GET` of
//! 1 KB, `GET` of a document's own bytes, `SET` on a second Redis with
//! `appendfsync always`, one-file-per-write and aws-sdk-s3 PUT/GET loops), `LAKE.WRITE` on
//! every store, `LAKE.READ` of a snapshot plus 0, 8 and 64 deltas; then read
//! latency against history length, `PING` p99 under write load, object-store
//! requests per operation and the memory of Redis and the sidecar. Prints
//! markdown tables and writes every figure as JSON. Other modes measure
//! one thing each (`--apps`, `--restore`, `--plateau`, `--large-values`,
//! `--batch-inflight`).

mod apps;
mod cpu;
mod load;
mod raw;
mod resp;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use lake_tests::{Lake, Options, StoreKind};
use load::{Gen, Stats};
use resp::encode;
use serde::Serialize;
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Client counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,8,50,200")]
    clients: Vec<usize>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// History lengths for the read-latency-against-history phase.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,100000")]
    history: Vec<u64>,
    /// A fast smoke run (0.2 s phases, 1 and 8 clients, short histories):
    /// checks the harness, measures nothing worth quoting.
    #[arg(long)]
    quick: bool,
    /// Where the raw results go.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Only measure `PING` while one client writes values of these sizes
    /// (MiB), e.g. `--large-values 8,32`, and print that table.
    #[arg(long, value_delimiter = ',')]
    large_values: Vec<usize>,
    /// Only run the retention plateau: this many writes over 100 catalogs
    /// with a retention of 2 s, printing Redis memory and store size every
    /// tenth of the way; then a `LAKE.HISTORY` page on a 1M-delta index.
    #[arg(long)]
    plateau: Option<u64>,
    /// With `--plateau`: the same load with background compaction off, to
    /// tell its pauses of the main thread from the load's.
    #[arg(long)]
    no_compaction: bool,
    /// Only measure `LAKE.WRITE` on `s3://` (segments) at 1 and 50 clients
    /// for each count of segment PUTs in flight, e.g. `--batch-inflight
    /// 1,2,4,8,16`, against raw PUTs in the same run.
    #[arg(long, value_delimiter = ',')]
    batch_inflight: Vec<usize>,
    /// Only measure a restore: at least this many writes over 100
    /// catalogs on `s3://` (50 clients), shipped, then `FLUSHALL` and
    /// `lake-sidecar restore` timed (the RTO), with the journal's cost
    /// (batches per write) printed.
    #[arg(long)]
    restore: Option<u64>,
    /// Only measure the application verbs (IFSTAMP read-modify-write,
    /// LAKE.VIEW, LAKE.CHANGES fan-out) against their baselines, at
    /// `--clients` (default here: 1,50).
    #[arg(long)]
    apps: bool,
    /// Only measure "LAKE.READ, 8 new deltas since the last read" and a
    /// hot read (an unchanged snapshot+8 catalog) at `--clients` (default
    /// here: 50), this many rounds, against `GET` of the same bytes: for
    /// A/B runs of the read paths.
    #[arg(long)]
    fresh: Option<usize>,
    /// Only measure an uncached `LAKE.READ` of snapshot+8 on `s3://`,
    /// segments against one object per write, alternating, this many rounds
    /// of `--secs` at `--clients` (default here: 50), with the object
    /// store's GETs and the CPU per read: for the cold-read target.
    #[arg(long)]
    cold: Option<usize>,
    /// Only measure `LAKE.WRITE` of 1 KB on local:// at `--clients`
    /// (default here: 50), this many rounds of `--secs`, against `SET` on
    /// a Redis with `appendfsync always`: for A/B runs of the write path.
    #[arg(long)]
    writes: Option<usize>,
}

/// The clients count the targets are set at.
const TARGET_CLIENTS: usize = 50;
const UUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

#[derive(Serialize)]
struct Row {
    name: String,
    clients: usize,
    #[serde(flatten)]
    stats: Stats,
}

fn gen(f: impl Fn(usize, u64) -> Vec<u8> + Send + Sync + 'static) -> Gen {
    Arc::new(f)
}

fn fixed(args: &[&[u8]]) -> Gen {
    let frame = encode(args);
    gen(move |_, _| frame.clone())
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `PING` latencies from a thread of its own, so the probe never queues
/// behind the load generator.
fn ping_probe(port: u16, secs: f64) -> std::thread::JoinHandle<Stats> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("ping probe");
        s.set_nodelay(true).ok();
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut lat = Vec::new();
        let mut buf = [0u8; 7];
        while Instant::now() < deadline {
            let t = Instant::now();
            if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() || s.read_exact(&mut buf).is_err() {
                break;
            }
            lat.push(t.elapsed().as_micros() as u32);
        }
        Stats::from_latencies(lat, 0, None, start.elapsed().as_secs_f64())
    })
}

/// Fills catalog `cat` with `n` deltas (1 KB values cycling over 8 fields),
/// reading every 500 writes as applications do, so background snapshots
/// keep up; then a snapshot and 8 more deltas.
async fn history(lake: &Lake, cat: &str, n: u64, value: &str) -> Stats {
    let (c, v) = (cat.to_string(), value.to_string());
    let fill = lake::write_or_read(c.clone(), v.clone(), 500);
    let s = load::run_count(lake.port, TARGET_CLIENTS.min(n as usize), n, fill).await;
    settle(lake, cat, value);
    s
}

fn settle(lake: &Lake, cat: &str, value: &str) {
    let mut con = lake.con();
    let _: Option<String> = lake_tests::redis::cmd("LAKE.READ")
        .arg(cat)
        .arg("SNAP")
        .query(&mut con)
        .expect("snapshot");
    for i in 0..8 {
        lake_tests::write(&mut con, cat, &format!("f{i}"), value).expect("write");
    }
}

mod lake {
    use super::*;

    /// `LAKE.WRITE <cat> f<i%8> <value>`.
    fn write_frame(cat: &str, value: &str, i: u64) -> Vec<u8> {
        let f = format!("f{}", i % 8);
        encode(&[
            b"LAKE.WRITE",
            cat.as_bytes(),
            f.as_bytes(),
            value.as_bytes(),
        ])
    }

    /// Writes only.
    pub fn write(cat: String, value: String) -> Gen {
        gen(move |_, i| write_frame(&cat, &value, i))
    }

    /// Writes, with a plain `LAKE.READ` every `every` requests.
    pub fn write_or_read(cat: String, value: String, every: u64) -> Gen {
        gen(move |_, i| {
            if i % every == every - 1 {
                encode(&[b"LAKE.READ", cat.as_bytes()])
            } else {
                write_frame(&cat, &value, i)
            }
        })
    }

    /// `LAKE.READ <cat> NOSNAP`: the catalog keeps its shape while measured.
    pub fn read(cat: &str) -> Gen {
        fixed(&[b"LAKE.READ", cat.as_bytes(), b"NOSNAP"])
    }
}

/// Writes `name` (an SVG chart) into `dir`, saying where.
fn save_chart(dir: &std::path::Path, name: &str, c: &chart::Chart) {
    let path = dir.join(name);
    match std::fs::write(&path, c.svg()) {
        Ok(()) => eprintln!("bench: chart {}", path.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
    }
}

/// The main run's charts: throughput against clients for writes and for
/// reads, each with its baselines (dashed), and read latency against
/// history length.
fn charts(dir: &std::path::Path, rows: &[Row], hist: &[serde_json::Value]) {
    let series = |name: &str, label: &str, baseline: bool| chart::Series {
        name: label.to_string(),
        points: rows
            .iter()
            .filter(|r| r.name == name)
            .map(|r| (r.clients as f64, r.stats.rps))
            .collect(),
        baseline,
    };
    let by_clients = |title: &str, series: Vec<chart::Series>| chart::Chart {
        title: title.to_string(),
        x_label: "clients (closed loop)".into(),
        y_label: "requests/s".into(),
        log_x: true,
        series,
    };
    save_chart(
        dir,
        "writes.svg",
        &by_clients(
            "Durable writes, 1 KB",
            vec![
                series("LAKE.WRITE local://", "LAKE.WRITE local://", false),
                series("LAKE.WRITE s3://", "LAKE.WRITE s3:// (segments)", false),
                series("LAKE.WRITE file://", "LAKE.WRITE file://", false),
                series(
                    "SET 1 KB, appendfsync always",
                    "SET, appendfsync always",
                    true,
                ),
                series("raw S3 PUT (aws-sdk-s3)", "raw S3 PUT", true),
            ],
        ),
    );
    save_chart(
        dir,
        "reads.svg",
        &by_clients(
            "Reads of a snapshot + 8 document (8.3 KB)",
            vec![
                series("LAKE.READ snapshot+8 local://", "unchanged (hot)", false),
                series(
                    "LAKE.READ snapshot+8 reply cache off",
                    "reply cache off",
                    false,
                ),
                series(
                    "LAKE.READ, 8 new deltas since the last read",
                    "8 new deltas since last read",
                    false,
                ),
                series("LAKE.READ snapshot+8 uncached", "uncached", false),
                series(
                    "GET of the snapshot+8 document's bytes",
                    "GET, same bytes",
                    true,
                ),
            ],
        ),
    );
    let mut stores: Vec<&str> = hist.iter().filter_map(|h| h["store"].as_str()).collect();
    stores.dedup();
    save_chart(
        dir,
        "history.svg",
        &chart::Chart {
            title: "LAKE.READ p50 against history length (1 client)".into(),
            x_label: "deltas written before (then a snapshot and 8 more)".into(),
            y_label: "read p50 (us)".into(),
            log_x: true,
            series: stores
                .into_iter()
                .map(|store| chart::Series {
                    name: store.to_string(),
                    points: hist
                        .iter()
                        .filter(|h| h["store"] == store)
                        .filter_map(|h| {
                            Some((h["deltas"].as_f64()?, h["read"]["p50_us"].as_f64()?))
                        })
                        .collect(),
                    baseline: false,
                })
                .collect(),
        },
    );
}

/// Catalogs per "8 new deltas" cell: each is read once, and all of them
/// stay in the sidecar's default 256 MiB cache (a tree is counted at four
/// times its 8.3 KB text).
const FRESH_CATALOGS: u64 = 2000;

/// `--fresh`: the "8 new deltas since the last read" cell alone, `rounds`
/// times per client count, next to `GET` of the same bytes.
fn fresh_only(clients: &[usize], rounds: usize) {
    let value = format!("\"{}\"", "x".repeat(1022));
    let lake = Lake::with(Options {
        store: StoreKind::Local,
        ..Options::default()
    });
    read_catalog(&lake, "r8", 8, &value);
    let doc: String = lake_tests::redis::cmd("LAKE.READ")
        .arg("r8")
        .arg("NOSNAP")
        .query(&mut lake.con())
        .expect("read r8");
    let _: () = lake_tests::redis::cmd("SET")
        .arg("bench:doc8")
        .arg(&doc)
        .query(&mut lake.con())
        .expect("SET");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| clients | round | 8 new deltas, reads/s (p50/p99) | unchanged (hot), reads/s | GET same bytes | ratios |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in clients {
        for round in 0..rounds {
            let prefix = format!("fresh{n}-{round}-");
            let (k, v) = (FRESH_CATALOGS, value.clone());
            let r = rt.block_on(async {
                fresh_deltas(lake.port, &prefix, k, TARGET_CLIENTS, &v).await;
                quiesce(&lake);
                let read = gen(move |_, i| {
                    let cat = format!("{prefix}{i}");
                    encode(&[b"LAKE.READ", cat.as_bytes(), b"NOSNAP"])
                });
                let before = timings(&lake);
                let r = load::run_count(lake.port, n, k, read).await;
                where_time_goes(&before, &timings(&lake), r.ops);
                r
            });
            let before = timings(&lake);
            let hot = rt.block_on(load::run(
                lake.port,
                n,
                1.0,
                fixed(&[b"LAKE.READ", b"r8", b"NOSNAP"]),
            ));
            where_time_goes(&before, &timings(&lake), hot.ops);
            let get = rt.block_on(load::run(
                lake.port,
                n,
                1.0,
                fixed(&[b"GET", b"bench:doc8"]),
            ));
            println!(
                "| {n} | {round} | {} | {} | {:.0} | {:.2} x, hot {:.2} x |",
                fmt_cell(&r),
                fmt_cell(&hot),
                get.rps,
                r.rps / get.rps.max(1.0),
                hot.rps / get.rps.max(1.0)
            );
        }
    }
}

/// A plain Redis with `appendonly yes` and `appendfsync always` (Redis's
/// own durable write, group-committed per event-loop turn): its guard and
/// port.
fn durable_redis(dir: &std::path::Path) -> (lake_tests::Reaped, u16) {
    let (guard, url) = lake_tests::plain_redis(dir);
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let mut d = lake_tests::redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("durable Redis");
    for (k, v) in [("appendonly", "yes"), ("appendfsync", "always")] {
        let _: () = lake_tests::redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query(&mut d)
            .expect("CONFIG SET");
    }
    lake_tests::wait_for("the AOF rewrite", Duration::from_secs(30), || {
        let i: String = lake_tests::redis::cmd("INFO")
            .arg("persistence")
            .query(&mut d)
            .unwrap_or_default();
        i.contains("aof_rewrite_in_progress:0") && i.contains("aof_enabled:1")
    });
    (guard, port)
}

/// `--cold`: uncached reads of snapshot+8 on `s3://`, segments against one
/// object per write (each Lake with its own S3 test server, both caches
/// off), alternating, `rounds` times per client count.
fn cold_only(clients: &[usize], rounds: usize, secs: f64) {
    let value = format!("\"{}\"", "x".repeat(1022));
    let uncached = |layout: &str| {
        Lake::with(Options {
            store: StoreKind::S3,
            sidecar_args: ["--cache-mb", "0", "--layout", layout]
                .map(String::from)
                .to_vec(),
            module_args: ["reply-cache-mb", "0"].map(String::from).to_vec(),
            ..Options::default()
        })
    };
    let (segments, objects) = (uncached("segments"), uncached("objects"));
    for lake in [&segments, &objects] {
        read_catalog(lake, "r8", 8, &value);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ratios = Vec::new();
    println!("| clients | round | uncached snapshot+8, segments, reads/s (p50/p99) | one object per write | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in clients {
        for round in 0..rounds {
            let cell = |lake: &Lake, name: &str| {
                let procs = [
                    ("redis", lake.redis_pid()),
                    ("sidecar", lake.sidecar_pid()),
                    ("s3 server", lake.s3_pid()),
                ];
                let (gets, cpu) = (lake.metric("store_gets_total"), cpu::sample(&procs));
                let r = rt.block_on(load::run(lake.port, n, secs, lake::read("r8")));
                cpu::report(name, &cpu, &cpu::sample(&procs), r.ops);
                let per = (lake.metric("store_gets_total") - gets) as f64 / r.ops.max(1) as f64;
                eprintln!("  {per:.2} GETs per read");
                r
            };
            let seg = cell(&segments, "uncached read, segments");
            let obj = cell(&objects, "uncached read, one object per write");
            let ratio = seg.rps / obj.rps.max(1.0);
            ratios.push(ratio);
            println!(
                "| {n} | {round} | {} | {} | {ratio:.2} x |",
                fmt_cell(&seg),
                fmt_cell(&obj)
            );
        }
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(m) = ratios.get(ratios.len() / 2) {
        println!("median ratio over {} rounds: {m:.2} x", ratios.len());
    }
}

/// `--writes`: `LAKE.WRITE` of 1 KB on local:// alone, `rounds` times per
/// client count, next to `SET` of 1 KB on a Redis with `appendfsync
/// always`, alternating, with where the sidecar's time and the machine's CPU
/// go per write.
fn writes_only(clients: &[usize], rounds: usize, secs: f64) {
    let value = format!("\"{}\"", "x".repeat(1022));
    let lake = Lake::with(Options {
        store: StoreKind::Local,
        ..Options::default()
    });
    let (durable, durable_port) = durable_redis(&lake.dir.path().join("durable"));
    let lake_procs = [("redis", lake.redis_pid()), ("sidecar", lake.sidecar_pid())];
    let set_procs = [("durable redis", durable.0.id())];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| clients | round | LAKE.WRITE local://, writes/s (p50/p99) | SET 1 KB, appendfsync always | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in clients {
        for round in 0..rounds {
            let v = value.clone();
            let set = gen(move |c, i| {
                let k = format!("bench:s:{}", (c as u64 + i) % 100);
                encode(&[b"SET", k.as_bytes(), v.as_bytes()])
            });
            let cpu = cpu::sample(&set_procs);
            let set = rt.block_on(load::run(durable_port, n, secs, set));
            cpu::report("SET", &cpu, &cpu::sample(&set_procs), set.ops);
            let idle = ping_probe(lake.port, 1.0).join().expect("probe");
            let probe = ping_probe(lake.port, secs);
            let before = timings(&lake);
            let cpu = cpu::sample(&lake_procs);
            let w = rt.block_on(load::run(
                lake.port,
                n,
                secs,
                lake::write(format!("w{round}"), value.clone()),
            ));
            cpu::report("LAKE.WRITE", &cpu, &cpu::sample(&lake_procs), w.ops);
            where_time_goes(&before, &timings(&lake), w.ops);
            let loaded = probe.join().expect("probe");
            eprintln!(
                "PING p99: idle {} us, under the writes {} us (limit {} us), max {} us",
                idle.p99_us,
                loaded.p99_us,
                2 * idle.p99_us + 500,
                loaded.max_us
            );
            let info: String = lake_tests::redis::cmd("INFO")
                .arg("lake")
                .query(&mut lake.con())
                .unwrap_or_default();
            let module: Vec<&str> = info
                .lines()
                .filter(|l| l.starts_with("lake_latency_write_"))
                .collect();
            eprintln!("module, blocked to reply: {}", module.join(" "));
            println!(
                "| {n} | {round} | {} | {} | {:.2} x |",
                fmt_cell(&w),
                fmt_cell(&set),
                w.rps / set.rps.max(1.0)
            );
        }
    }
}

/// Every histogram's `_sum` and `_count` series in the sidecar's metrics.
/// The sidecar's histograms (`_count`, `_sum`), and Redis's main-thread
/// time per command (`INFO commandstats`) in the same shape.
fn timings(lake: &Lake) -> HashMap<String, f64> {
    let (_, body) = lake.http_get("/metrics");
    let mut out: HashMap<String, f64> = body
        .lines()
        .filter(|l| l.contains("_sum") || l.contains("_count"))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    let stats: String = lake_tests::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut lake.con())
        .unwrap_or_default();
    for line in stats.lines() {
        let Some((cmd, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |name: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let (Some(calls), Some(usec)) = (field("calls="), field("usec=")) {
            let key = format!("redis_main_thread_seconds{{cmd=\"{cmd}\"}}");
            out.insert(format!("{key}_count"), calls);
            out.insert(format!("{key}_sum"), usec / 1e6);
        }
    }
    out
}

/// Prints, per request (read or write), each sidecar histogram and each
/// Redis command's main-thread time that moved between two scrapes: how
/// many observations and their mean.
fn where_time_goes(before: &HashMap<String, f64>, after: &HashMap<String, f64>, reads: u64) {
    let moved =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let mut rows: Vec<String> = after
        .keys()
        .filter(|k| k.contains("_count"))
        .filter(|k| moved(k) > 0.0)
        .map(|k| {
            let n = moved(k);
            let sum = moved(&k.replacen("_count", "_sum", 1));
            format!(
                "  {k}: {:.2} per request, mean {:.0} us",
                n / reads.max(1) as f64,
                sum / n * 1e6
            )
        })
        .collect();
    rows.sort();
    eprintln!(
        "where the time goes, per request ({reads} requests; sidecar histograms, Redis main thread per command):\n{}",
        rows.join("\n")
    );
}

/// `k` catalogs `<prefix><i>` that each hold a snapshot of 8 fields, 8
/// deltas folded by a read since (so Lake's caches hold that document),
/// and then 8 new deltas: each one's next read is "a read with 8 new
/// deltas since the last one". Built `clients` requests at a time.
async fn fresh_deltas(port: u16, prefix: &str, k: u64, clients: usize, value: &str) {
    let write = |prefix: String, value: String| {
        gen(move |_, i| {
            let (cat, f) = (format!("{prefix}{}", i / 8), format!("f{}", i % 8));
            encode(&[
                b"LAKE.WRITE",
                cat.as_bytes(),
                f.as_bytes(),
                value.as_bytes(),
            ])
        })
    };
    let read = |prefix: String, how: &'static [u8]| {
        gen(move |_, i| {
            let cat = format!("{prefix}{i}");
            encode(&[b"LAKE.READ", cat.as_bytes(), how])
        })
    };
    let (p, v) = (prefix.to_string(), value.to_string());
    for step in 0..5 {
        let s = match step {
            0 | 2 | 4 => load::run_count(port, clients, k * 8, write(p.clone(), v.clone())).await,
            1 => load::run_count(port, clients, k, read(p.clone(), b"SNAP")).await,
            _ => load::run_count(port, clients, k, read(p.clone(), b"NOSNAP")).await,
        };
        assert_eq!(s.errors, 0, "preparing {prefix}: {:?}", s.first_error);
    }
}

/// A catalog with a snapshot of 8 fields and then `tail` deltas.
fn read_catalog(lake: &Lake, cat: &str, tail: usize, value: &str) {
    let mut con = lake.con();
    for i in 0..8 {
        lake_tests::write(&mut con, cat, &format!("f{i}"), value).expect("write");
    }
    let _: Option<String> = lake_tests::redis::cmd("LAKE.READ")
        .arg(cat)
        .arg("SNAP")
        .query(&mut con)
        .expect("snapshot");
    for i in 0..tail {
        lake_tests::write(&mut con, cat, &format!("f{}", i % 8), value).expect("write");
    }
}

fn fmt_cell(s: &Stats) -> String {
    let err = if s.errors > 0 {
        format!(" ({} errors)", s.errors)
    } else {
        String::new()
    };
    format!(
        "{:.0} ({:.2}/{:.2} ms){err}",
        s.rps,
        s.p50_us as f64 / 1000.0,
        s.p99_us as f64 / 1000.0
    )
}

/// A JSON array of small objects, about `bytes` long: what a large document
/// write looks like (numbers, strings, nesting), not one long string.
fn large_value(bytes: usize) -> String {
    let item = r#"{"id":1234567,"name":"lake-item","tags":["a","b"],"v":[1.5,2,3e2],"ok":true}"#;
    let mut s = String::with_capacity(bytes + item.len() + 2);
    s.push('[');
    while s.len() + item.len() + 1 < bytes {
        if s.len() > 1 {
            s.push(',');
        }
        s.push_str(item);
    }
    s.push(']');
    s
}

/// `PING` latency while one client writes large values: how long a write's
/// work holds Redis's main thread.
fn large_values(sizes: &[usize], secs: f64) {
    let lake = Lake::with(Options {
        store: StoreKind::Local,
        timeout_ms: 60_000,
        ..Options::default()
    });
    let idle = ping_probe(lake.port, secs).join().expect("probe");
    println!("| value | writes | write p50 | PING p50 | PING p99 | PING max |");
    println!("|---|---:|---:|---:|---:|---:|");
    let us = |v: u64| format!("{:.2} ms", v as f64 / 1000.0);
    println!(
        "| none (idle) | - | - | {} | {} | {} |",
        us(idle.p50_us),
        us(idle.p99_us),
        us(idle.max_us)
    );
    for &mib in sizes {
        let value = large_value(mib << 20);
        let probe = ping_probe(lake.port, secs);
        let mut con = lake.con();
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut lat = Vec::new();
        while Instant::now() < deadline {
            let t = Instant::now();
            lake_tests::write(&mut con, "large", "doc", &value).expect("large write");
            lat.push(t.elapsed().as_micros() as u32);
        }
        let ping = probe.join().expect("probe");
        let w = Stats::from_latencies(lat, 0, None, secs);
        println!(
            "| {mib} MiB | {} | {} | {} | {} | {} |",
            w.ops,
            us(w.p50_us),
            us(ping.p50_us),
            us(ping.p99_us),
            us(ping.max_us)
        );
    }
}

/// Waits until the preparation's own work is done (journal shipped,
/// nothing in flight), so a measured phase runs alone.
fn quiesce(lake: &Lake) {
    let mut con = lake.con();
    lake_tests::wait_for("the journal to ship", Duration::from_secs(60), || {
        info_field(&mut con, "lake", "lake_journal_catalogs_pending") == 0
            && info_field(&mut con, "lake", "lake_requests_in_flight") == 0
    });
}

fn info_field(con: &mut lake_tests::redis::Connection, section: &str, field: &str) -> i64 {
    let text: String = lake_tests::redis::cmd("INFO")
        .arg(section)
        .query(con)
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// Redis memory and store size as writes go on, with a retention: they
/// must level off. Writes go to 100 catalogs (1 KB values, 50 clients), each
/// read after every 64 of its writes so snapshots are built; the module compacts
/// in the background and `LAKE.GC` runs after every tenth of the writes.
fn plateau(total: u64, compaction: bool, rt: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let interval = if compaction { "100" } else { "0" };
    let lake = Lake::with(Options {
        store: StoreKind::File,
        timeout_ms: 1000,
        snapshot_every: 32,
        module_args: ["retention-secs", "2", "compact-interval-ms", interval]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let v = format!("\"{}\"", "x".repeat(1022));
    let writes = gen(move |_, i| {
        // Catalog i % 100; each one read after every 64 of its writes.
        let cat = format!("p{}", i % 100);
        if (i / 100) % 64 == 63 {
            encode(&[b"LAKE.READ", cat.as_bytes()])
        } else {
            let f = format!("f{}", (i / 100) % 8);
            encode(&[b"LAKE.WRITE", cat.as_bytes(), f.as_bytes(), v.as_bytes()])
        }
    });
    let mut con = lake.con();
    println!("| writes | Redis used_memory | index entries | store bytes | store objects | writes/s | PING p99 during |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let step = (total / 10).max(1);
    let mut done = 0;
    let (mut memory, mut stored) = (Vec::new(), Vec::new());
    while done < total {
        let probe = ping_probe(lake.port, 1.0);
        let s = rt.block_on(load::run_count(
            lake.port,
            TARGET_CLIENTS,
            step,
            writes.clone(),
        ));
        let ping = probe.join().expect("probe");
        done += step;
        let _: Vec<i64> = lake_tests::redis::cmd("LAKE.GC")
            .arg("GRACE")
            .arg(0)
            .query(&mut con)
            .unwrap_or_default();
        let entries: usize = (0..100)
            .map(|c| lake_tests::zrange(&mut con, &format!("catalog:{{p{c}}}")).len())
            .sum();
        let (mem_mb, store_mb) = (
            info_field(&mut con, "memory", "used_memory") as f64 / 1e6,
            dir_bytes(&lake.store_dir()) as f64 / 1e6,
        );
        memory.push((done as f64, mem_mb));
        stored.push((done as f64, store_mb));
        println!(
            "| {done} | {:.1} MB | {entries} | {:.1} MB | {} | {:.0} | {:.2} ms |",
            mem_mb,
            store_mb,
            lake.objects().len(),
            s.rps,
            ping.p99_us as f64 / 1000.0,
        );
    }
    let name = if compaction {
        "plateau.svg"
    } else {
        "plateau-no-compaction.svg"
    };
    save_chart(
        dir,
        name,
        &chart::Chart {
            title: "Retention 2 s: memory and store size level off".into(),
            x_label: "writes (100 catalogs, 50 clients)".into(),
            y_label: "MB".into(),
            log_x: false,
            series: vec![
                chart::Series {
                    name: "Redis used_memory".into(),
                    points: memory,
                    baseline: false,
                },
                chart::Series {
                    name: "store bytes (after LAKE.GC)".into(),
                    points: stored,
                    baseline: false,
                },
            ],
        },
    );
    // A LAKE.HISTORY page on a long index: fill 1M entries with raw ZADDs
    // (HISTORY reads only the index), then page from the middle.
    let fill = gen(|_, i| {
        let m = format!("f:{:08x}-0000-4000-8000-{:012x}", i, i);
        let s = (1_700_000_000_000_000u64 + i).to_string();
        encode(&[b"ZADD", b"catalog:{long}", s.as_bytes(), m.as_bytes()])
    });
    rt.block_on(load::run_count(lake.port, TARGET_CLIENTS, 1_000_000, fill));
    let page = gen(|_, i| {
        let from = (1_700_000_000_000_000u64 + (i * 7919) % 999_000).to_string();
        encode(&[
            b"LAKE.HISTORY",
            b"long",
            b"FROM",
            from.as_bytes(),
            b"COUNT",
            b"1000",
        ])
    });
    let h = rt.block_on(load::run(lake.port, 1, 2.0, page));
    println!();
    println!(
        "LAKE.HISTORY COUNT 1000 on a 1,000,000-delta index, 1 client: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        h.rps,
        h.p50_us as f64 / 1000.0,
        h.p99_us as f64 / 1000.0
    );
}

/// `LAKE.WRITE` on `s3://` for each count of segment PUTs in flight, at 1
/// and 50 clients, with raw PUTs and one-object writes measured alongside.
fn batch_inflight(counts: &[usize], secs: f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let value = format!("\"{}\"", "x".repeat(1022));
    let body = vec![b'x'; 1024];
    println!("| segment PUTs in flight | clients | writes/s | p50 ms | p99 ms | PUTs per write | x raw PUT/s | p50 / raw PUT p50 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let objects = Lake::with(Options {
        store: StoreKind::S3,
        sidecar_args: ["--layout", "objects"].map(String::from).to_vec(),
        ..Options::default()
    });
    let client = lake_tests::s3_client(objects.s3_port());
    rt.block_on(raw::s3_seed(&client, lake_tests::BUCKET, &body));
    let mut raw_put = std::collections::HashMap::new();
    for n in [1, TARGET_CLIENTS] {
        let put = rt.block_on(raw::s3_loop(
            &client,
            lake_tests::BUCKET,
            n,
            secs,
            &body,
            false,
        ));
        println!(
            "| raw PUT | {n} | {:.0} | {:.2} | {:.2} | 1 | 1.00 | 1.00 |",
            put.rps,
            put.p50_us as f64 / 1e3,
            put.p99_us as f64 / 1e3
        );
        raw_put.insert(n, put);
    }
    let row = |label: &str, lake: &Lake, n: usize| {
        let puts = lake.metric("store_puts_total");
        let w = rt.block_on(load::run(
            lake.port,
            n,
            secs,
            lake::write("bw".into(), value.clone()),
        ));
        let per = (lake.metric("store_puts_total") - puts) as f64 / w.ops.max(1) as f64;
        let put = &raw_put[&n];
        println!(
            "| {label} | {n} | {:.0} | {:.2} | {:.2} | {per:.3} | {:.2} | {:.2} |",
            w.rps,
            w.p50_us as f64 / 1e3,
            w.p99_us as f64 / 1e3,
            w.rps / put.rps.max(1.0),
            w.p50_us as f64 / put.p50_us.max(1) as f64
        );
    };
    for n in [1, TARGET_CLIENTS] {
        row("one object per write", &objects, n);
    }
    drop(objects);
    for &k in counts {
        let lake = Lake::with(Options {
            store: StoreKind::S3,
            sidecar_args: vec!["--batch-inflight".into(), k.to_string()],
            ..Options::default()
        });
        for n in [1, TARGET_CLIENTS] {
            row(&k.to_string(), &lake, n);
        }
    }
}

/// `--restore <n>`: see [`Args::restore`].
fn restore(n: u64, secs: f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        sidecar_args: ["--checkpoint-secs", "0"].map(String::from).to_vec(),
        ..Options::default()
    });
    let value = format!("\"{}\"", "x".repeat(1022));
    let mut written = 0;
    let mut phases = Vec::new();
    while written < n {
        let v = value.clone();
        let w = gen(move |c, i| {
            let cat = format!("rc/{}", (c as u64 + i) % 100);
            let field = format!("f{c}.n{i}");
            encode(&[
                b"LAKE.WRITE",
                cat.as_bytes(),
                field.as_bytes(),
                v.as_bytes(),
            ])
        });
        let s = rt.block_on(load::run(lake.port, TARGET_CLIENTS, secs, w));
        written += s.ops;
        phases.push(s.rps);
    }
    lake.wait_shipped();
    let batches = lake.journal_batches().len();
    let mut con = lake.con();
    let _: () = lake_tests::redis::cmd("FLUSHALL")
        .query(&mut con)
        .expect("FLUSHALL");
    let began = Instant::now();
    let out = lake.restore(&lake.url(), &[]);
    let took = began.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored: u64 = (0..100)
        .map(|i| {
            lake_tests::redis::cmd("ZCARD")
                .arg(format!("catalog:{{rc/{i}}}"))
                .query::<u64>(&mut con)
                .expect("ZCARD")
        })
        .sum();
    println!(
        "| writes | journal batches | batches per write | restored deltas | restore s | deltas/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {written} | {batches} | {:.5} | {restored} | {took:.2} | {:.0} |",
        batches as f64 / written.max(1) as f64,
        restored as f64 / took
    );
    eprintln!("write phases (writes/s): {phases:?}");
    eprintln!("{}", report.lines().next().unwrap_or_default());
}

fn main() {
    let mut a = Args::parse();
    // The one-cell modes measure at their own client counts unless
    // `--clients` names others.
    let default_clients = a.clients == [1, 8, 50, 200];
    let clients_or = |own: &[usize]| {
        if default_clients {
            own.to_vec()
        } else {
            a.clients.clone()
        }
    };
    if a.apps {
        apps::run(&clients_or(&[1, TARGET_CLIENTS]), a.secs);
        return;
    }
    if let Some(rounds) = a.fresh {
        fresh_only(&clients_or(&[TARGET_CLIENTS]), rounds);
        return;
    }
    if let Some(rounds) = a.cold {
        cold_only(&clients_or(&[TARGET_CLIENTS]), rounds, a.secs);
        return;
    }
    if let Some(rounds) = a.writes {
        writes_only(&clients_or(&[TARGET_CLIENTS]), rounds, a.secs);
        return;
    }
    if let Some(n) = a.restore {
        restore(n, a.secs.max(5.0));
        return;
    }
    if let Some(n) = a.plateau {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = a.out.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).ok();
        plateau(n, !a.no_compaction, &rt, dir);
        return;
    }
    if !a.batch_inflight.is_empty() {
        batch_inflight(&a.batch_inflight, a.secs);
        return;
    }
    if !a.large_values.is_empty() {
        large_values(&a.large_values, a.secs.max(5.0));
        return;
    }
    if a.quick {
        a.secs = 0.2;
        a.clients = vec![1, 8];
        a.history = vec![10, 300];
    }
    let value = format!("\"{}\"", "x".repeat(1022));
    let body = vec![b'x'; 1024];
    eprintln!("bench: starting Redis, sidecars and the S3 test server");
    let local = Lake::with(Options {
        store: StoreKind::Local,
        ..Options::default()
    });
    // "uncached" Lakes keep nothing between reads: neither the sidecar's
    // merged documents nor the module's hot-read answers.
    let no_reply_cache = || ["reply-cache-mb", "0"].map(String::from).to_vec();
    let uncached = Lake::with(Options {
        store: StoreKind::Local,
        sidecar_args: vec!["--cache-mb".into(), "0".into()],
        module_args: no_reply_cache(),
        ..Options::default()
    });
    // The sidecar's warm path alone (the module's reply cache off).
    let warm = Lake::with(Options {
        store: StoreKind::Local,
        module_args: no_reply_cache(),
        ..Options::default()
    });
    let file = Lake::with(Options {
        store: StoreKind::File,
        ..Options::default()
    });
    let s3 = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let s3_uncached = Lake::with(Options {
        store: StoreKind::S3,
        sidecar_args: vec!["--cache-mb".into(), "0".into()],
        module_args: no_reply_cache(),
        ..Options::default()
    });
    let s3_objects = Lake::with(Options {
        store: StoreKind::S3,
        sidecar_args: ["--cache-mb", "0", "--layout", "objects"]
            .map(String::from)
            .to_vec(),
        module_args: no_reply_cache(),
        ..Options::default()
    });
    // The cost of shipping the index journal: the same store with it off.
    let s3_unshipped = Lake::with(Options {
        store: StoreKind::S3,
        module_args: ["ship-interval-ms", "0"].map(String::from).to_vec(),
        ..Options::default()
    });
    for lake in [&local, &warm, &uncached, &s3, &s3_uncached, &s3_objects] {
        for tail in [0, 8, 64] {
            read_catalog(lake, &format!("r{tail}"), tail, &value);
        }
    }
    // Fair baselines: the document's own bytes for GET, and Redis's own
    // durable write (a second Redis, AOF with appendfsync always).
    let doc8: String = lake_tests::redis::cmd("LAKE.READ")
        .arg("r8")
        .arg("NOSNAP")
        .query(&mut local.con())
        .expect("read r8");
    let (_durable, durable_port) = durable_redis(&local.dir.path().join("durable"));
    let mut con = local.con();
    let _: () = lake_tests::redis::cmd("SET")
        .arg("bench:doc8")
        .arg(&doc8)
        .query(&mut con)
        .expect("seed the document's bytes");
    for i in 0..100 {
        let _: () = lake_tests::redis::cmd("SET")
            .arg(format!("bench:s:{i}"))
            .arg(&body)
            .query(&mut con)
            .expect("seed SET");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s3_client = lake_tests::s3_client(s3.s3_port());
    rt.block_on(raw::s3_seed(&s3_client, lake_tests::BUCKET, &body));

    let mut rows: Vec<Row> = Vec::new();
    let mut requests = serde_json::Map::new();
    let raw_dir = local.dir.path().join("raw-file");
    for &n in &a.clients {
        eprintln!("bench: {n} clients");
        let secs = a.secs;
        let mut add = |name: &str, stats: Stats| {
            eprintln!("  {name:<34} {}", fmt_cell(&stats));
            // Write back what this phase left dirty, so the next one does
            // not pay for it.
            let _ = std::process::Command::new("sync").status();
            rows.push(Row {
                name: name.to_string(),
                clients: n,
                stats,
            });
        };
        rt.block_on(async {
            let p = local.port;
            add("PING", load::run(p, n, secs, fixed(&[b"PING"])).await);
            let zadd = gen(|c, i| {
                let m = format!("f{}.n{i}:{UUID}", c % 8);
                let score = (c as u64 * 1_000_000_000 + i).to_string();
                encode(&[b"ZADD", b"bench:z", score.as_bytes(), m.as_bytes()])
            });
            add(
                "ZADD (Lake-shaped member)",
                load::run(p, n, secs, zadd).await,
            );
            let b = body.clone();
            let set = gen(move |c, i| {
                let k = format!("bench:s:{}", (c as u64 + i) % 100);
                encode(&[b"SET", k.as_bytes(), &b])
            });
            add("SET 1 KB", load::run(p, n, secs, set).await);
            let get = gen(|c, i| {
                let k = format!("bench:s:{}", (c as u64 + i) % 100);
                encode(&[b"GET", k.as_bytes()])
            });
            add("GET 1 KB", load::run(p, n, secs, get).await);
            add(
                "GET of the snapshot+8 document's bytes",
                load::run(p, n, secs, fixed(&[b"GET", b"bench:doc8"])).await,
            );
            let b = body.clone();
            let set = gen(move |c, i| {
                let k = format!("bench:s:{}", (c as u64 + i) % 100);
                encode(&[b"SET", k.as_bytes(), &b])
            });
            add(
                "SET 1 KB, appendfsync always",
                load::run(durable_port, n, secs, set).await,
            );
        });
        let d = raw_dir.join(n.to_string());
        if n == a.clients[0] {
            let sync = raw::fdatasync_loop(&d, secs, &body);
            add("raw append+fdatasync, 1 writer", sync);
        }
        add(
            "raw file: write+fsync+rename",
            raw::file_loop(&d, n, secs, &body),
        );
        rt.block_on(async {
            let put = raw::s3_loop(&s3_client, lake_tests::BUCKET, n, secs, &body, false).await;
            add("raw S3 PUT (aws-sdk-s3)", put);
            let get = raw::s3_loop(&s3_client, lake_tests::BUCKET, n, secs, &body, true).await;
            add("raw S3 GET (aws-sdk-s3)", get);
            let v = value.clone();
            let w = load::run(local.port, n, secs, lake::write("bw".into(), v.clone())).await;
            add("LAKE.WRITE local://", w);
            add(
                "LAKE.WRITE file://",
                load::run(file.port, n, secs, lake::write("bw".into(), v.clone())).await,
            );
            for (lake, name, key) in [
                (
                    &s3_objects,
                    "LAKE.WRITE s3:// objects",
                    "s3_puts_per_write_objects",
                ),
                (&s3, "LAKE.WRITE s3://", "s3_puts_per_write"),
                (
                    &s3_unshipped,
                    "LAKE.WRITE s3:// journal not shipped",
                    "s3_puts_per_write_unshipped",
                ),
            ] {
                let puts = lake.metric("store_puts_total");
                let batches = lake.metric("journal_batches_total");
                let w = load::run(lake.port, n, secs, lake::write("bw".into(), v.clone())).await;
                if n == TARGET_CLIENTS || a.quick {
                    let per = (lake.metric("store_puts_total") - puts) as f64 / w.ops.max(1) as f64;
                    requests.insert(key.into(), json!(per));
                    let per = (lake.metric("journal_batches_total") - batches) as f64
                        / w.ops.max(1) as f64;
                    requests.insert(format!("{key}_journal"), json!(per));
                }
                add(name, w);
            }
            for tail in [0, 8, 64] {
                let cat = format!("r{tail}");
                let name = format!("LAKE.READ snapshot+{tail} local://");
                add(
                    &name,
                    load::run(local.port, n, secs, lake::read(&cat)).await,
                );
                add(
                    &format!("LAKE.READ snapshot+{tail} reply cache off"),
                    load::run(warm.port, n, secs, lake::read(&cat)).await,
                );
                let gets = uncached.metric("store_gets_total");
                let r = load::run(uncached.port, n, secs, lake::read(&cat)).await;
                if tail == 8 && (n == TARGET_CLIENTS || a.quick) {
                    let per =
                        (uncached.metric("store_gets_total") - gets) as f64 / r.ops.max(1) as f64;
                    requests.insert("store_gets_per_uncached_read".into(), json!(per));
                }
                add(&format!("LAKE.READ snapshot+{tail} uncached"), r);
            }
            // Every read finds 8 deltas written since the previous one,
            // through this node: Redis folds them onto the answer it keeps
            // (the sidecar, where the bodies are not in Redis).
            let k = if a.quick { 200 } else { FRESH_CATALOGS };
            let prefix = format!("fresh{n}-");
            fresh_deltas(local.port, &prefix, k, TARGET_CLIENTS, &value).await;
            quiesce(&local);
            let read = gen(move |_, i| {
                let cat = format!("{prefix}{i}");
                encode(&[b"LAKE.READ", cat.as_bytes(), b"NOSNAP"])
            });
            add(
                "LAKE.READ, 8 new deltas since the last read",
                load::run_count(local.port, n, k, read).await,
            );
            let gets = s3.metric("store_gets_total");
            let r = load::run(s3.port, n, secs, lake::read("r8")).await;
            if n == TARGET_CLIENTS || a.quick {
                let per = (s3.metric("store_gets_total") - gets) as f64 / r.ops.max(1) as f64;
                requests.insert("s3_gets_per_cached_read".into(), json!(per));
            }
            add("LAKE.READ snapshot+8 s3://", r);
            for (lake, name, key) in [
                (
                    &s3_objects,
                    "LAKE.READ snapshot+8 uncached s3:// objects",
                    "s3_gets_per_uncached_read_objects",
                ),
                (
                    &s3_uncached,
                    "LAKE.READ snapshot+8 uncached s3://",
                    "s3_gets_per_uncached_read",
                ),
            ] {
                let gets = lake.metric("store_gets_total");
                let r = load::run(lake.port, n, secs, lake::read("r8")).await;
                if n == TARGET_CLIENTS || a.quick {
                    let per = (lake.metric("store_gets_total") - gets) as f64 / r.ops.max(1) as f64;
                    requests.insert(key.into(), json!(per));
                }
                add(name, r);
            }
        });
    }

    eprintln!("bench: PING latency, idle and under {TARGET_CLIENTS}-client write load");
    let idle = ping_probe(local.port, a.secs).join().expect("probe");
    let probe = ping_probe(local.port, a.secs);
    let under = rt.block_on(load::run(
        local.port,
        TARGET_CLIENTS,
        a.secs,
        lake::write("pw".into(), value.clone()),
    ));
    let loaded = probe.join().expect("probe");

    eprintln!("bench: read latency against history length");
    let mut hist = Vec::new();
    for (lake, label) in [(&local, "local://"), (&uncached, "uncached")] {
        for &h in &a.history {
            let cat = format!("h{h}");
            let fill = rt.block_on(history(lake, &cat, h, &value));
            let r = rt.block_on(load::run(lake.port, 1, a.secs, lake::read(&cat)));
            eprintln!(
                "  {label} {h:>7} deltas: write {:.0}/s, read p50 {} us",
                fill.rps, r.p50_us
            );
            hist.push(
                json!({"store": label, "deltas": h, "fill_writes_per_s": fill.rps, "read": r}),
            );
        }
    }
    let rss = json!({
        "redis_kb": rss_kb(local.redis_pid()),
        "sidecar_kb": rss_kb(local.sidecar_pid()),
    });

    let report = report::render(&a, &rows, &idle, &loaded, &under, &hist, &requests, &rss);
    println!("{report}");
    let results = json!({
        "machine": {"cores": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "secs_per_phase": a.secs,
        "rows": rows,
        "ping_idle": idle,
        "ping_under_write_load": loaded,
        "write_load_during_ping": under,
        "history": hist,
        "requests_per_op": requests,
        "rss": rss,
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    match serde_json::to_string_pretty(&results) {
        Ok(text) => match std::fs::write(&a.out, text) {
            Ok(()) => eprintln!("bench: raw results in {}", a.out.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", a.out.display()),
        },
        Err(e) => eprintln!("bench: cannot encode results: {e}"),
    }
    charts(
        a.out.parent().unwrap_or(std::path::Path::new(".")),
        &rows,
        &hist,
    );
    let failed: u64 = rows.iter().map(|r| r.stats.errors).sum();
    if failed > 0 {
        eprintln!("bench: {failed} requests failed; see the errors column");
        std::process::exit(1);
    }
}

mod chart;
mod report;
