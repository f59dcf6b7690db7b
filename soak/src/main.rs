//! `lake-soak`: a real Lake (Redis primary with AOF + replica, module,
//! sidecar, S3 test server) under a list-append workload while faults are
//! injected on a random schedule from a printed seed; then everything heals,
//! the final state is read through the warm and a cold sidecar, and the
//! checker ([`lake_soak::checker`]) judges the recorded history.
//!
//! Writes the report (`report.txt`) and the timeline (`timeline.svg`) to
//! `--out`, and the history (`history.json`) when the run found an anomaly
//! (or with `--history`); exits 1 on any anomaly.
//!
//! Rules of the workload: every append writes a value no other append uses;
//! an operation whose outcome is unknown (connection lost) is never
//! retried; a seed replays the fault schedule (the interleaving of clients
//! is the machine's).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use lake_soak::history::{self, Fault, Final, History, Kind, Op, Outcome, Seen};
use lake_soak::{checker, report};
use lake_tests::{redis, Lake, Options, StoreKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every fault this topology can inject.
const FAULTS: [&str; 9] = [
    "sidecar-kill",
    "sidecar-stop",
    "store-stop",
    "store-freeze",
    "client-pause",
    "compact",
    "gc",
    "redis-restart",
    "failover",
];

/// The module's `timeout-ms` in the soak: faults that freeze something
/// hold past it.
const TIMEOUT_MS: u64 = 1000;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 180)]
    secs: u64,
    /// The fault schedule's seed (default: a fresh one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Client threads.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Catalogs the clients share.
    #[arg(long, default_value_t = 4)]
    catalogs: usize,
    /// Faults to inject (comma-separated; default: all).
    #[arg(long, value_delimiter = ',', default_values_t = FAULTS.map(String::from))]
    faults: Vec<String>,
    /// Where the history, report and timeline go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// Write `history.json` (every operation; about 100 bytes each) even
    /// when the run found no anomaly.
    #[arg(long)]
    history: bool,
}

fn main() {
    let args = Args::parse();
    for f in &args.faults {
        if !FAULTS.contains(&f.as_str()) {
            eprintln!(
                "lake-soak: unknown fault '{f}' (known: {})",
                FAULTS.join(", ")
            );
            std::process::exit(2);
        }
    }
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let replay = format!(
        "replay: lake-soak --seed {seed} --secs {} --clients {} --catalogs {} --faults {}",
        args.secs,
        args.clients,
        args.catalogs,
        args.faults.join(",")
    );
    eprintln!("lake-soak: seed {seed} ({replay})");
    let h = run(&args, seed);
    let verdict = checker::check(&h);
    let text = report::text(&h, &verdict, &replay);
    std::fs::create_dir_all(&args.out).expect("output directory");
    let write = |name: &str, body: &[u8]| {
        let p = args.out.join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        eprintln!("lake-soak: wrote {} ({} bytes)", p.display(), body.len());
    };
    if args.history || !verdict.anomalies.is_empty() {
        write(
            "history.json",
            &serde_json::to_vec(&h).expect("history as JSON"),
        );
    }
    write("report.txt", text.as_bytes());
    write("timeline.svg", report::svg(&h).as_bytes());
    print!("{text}");
    if !verdict.anomalies.is_empty() {
        std::process::exit(1);
    }
}

/// Runs the soak; the recorded history.
fn run(args: &Args, seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lake = Lake::with(Options {
        store: StoreKind::S3,
        timeout_ms: TIMEOUT_MS,
        snapshot_every: 16,
        redis_args: ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let (replica, _) = lake.start_replica();
    let cats: Vec<String> = (0..args.catalogs).map(|i| format!("soak/{i}")).collect();
    let mut c = lake.con();
    for cat in &cats {
        redis::cmd("LAKE.WRITE")
            .arg(cat)
            .arg("log")
            .arg("[]")
            .query::<redis::Value>(&mut c)
            .expect("initialise a catalog");
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (url, cats, stop, ops) = (lake.url(), cats.clone(), stop.clone(), ops.clone());
            let seed = seed ^ ((i as u64 + 1) << 40);
            std::thread::spawn(move || client(i, &url, &cats, seed, start, &stop, &ops))
        })
        .collect();
    let mut faults = Vec::new();
    let deadline = Duration::from_secs(args.secs);
    while start.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(rng.random_range(1000..3000)));
        if start.elapsed() >= deadline {
            break;
        }
        let kind = args.faults[rng.random_range(0..args.faults.len())].clone();
        let hold = Duration::from_millis(rng.random_range(500..3000));
        let began = ms(start);
        inject(&mut lake, &replica.url(), &kind, hold, &cats, &mut rng);
        faults.push(Fault {
            kind,
            start: began,
            end: ms(start),
        });
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        let _ = t.join();
    }
    let finals = final_state(&mut lake, &cats);
    let mut crashed = Vec::new();
    for (who, log) in [("primary", lake.redis_log()), ("replica", replica.log())] {
        if crash_marks(&log) {
            crashed.push(who.to_string());
        }
    }
    let ops = std::mem::take(&mut *ops.lock().unwrap_or_else(|e| e.into_inner()));
    History {
        seed,
        ops,
        faults,
        finals,
        crashed,
        may_lose_unconfirmed: false,
    }
}

fn ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Applies one fault, holds it for `hold`, and heals it.
fn inject(
    lake: &mut Lake,
    replica: &str,
    kind: &str,
    hold: Duration,
    cats: &[String],
    rng: &mut StdRng,
) {
    let mut con = lake.con();
    match kind {
        "sidecar-kill" => {
            lake.kill_sidecar();
            std::thread::sleep(hold);
            lake.start_sidecar();
        }
        "sidecar-stop" => {
            lake.signal_sidecar("STOP");
            std::thread::sleep(hold.max(Duration::from_millis(TIMEOUT_MS + 500)));
            lake.signal_sidecar("CONT");
        }
        "store-stop" => {
            lake.stop_store();
            std::thread::sleep(hold);
            lake.start_store();
        }
        "store-freeze" => {
            lake.signal_store("STOP");
            std::thread::sleep(hold);
            lake.signal_store("CONT");
        }
        "failover" => {
            // Coordinated: the primary hands over to its replica once it
            // caught up (nothing acknowledged may be lost), then back.
            drop(con);
            failover(&lake.url(), replica);
            std::thread::sleep(hold);
            failover(replica, &lake.url());
        }
        "client-pause" => {
            let _ = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(hold.as_millis() as u64)
                .arg("WRITE")
                .query::<redis::Value>(&mut con);
            std::thread::sleep(hold);
        }
        "compact" => {
            let cat = &cats[rng.random_range(0..cats.len())];
            let _ = redis::cmd("LAKE.RETENTION")
                .arg(cat)
                .arg(1)
                .query::<redis::Value>(&mut con);
            let _ = redis::cmd("LAKE.COMPACT")
                .arg(cat)
                .query::<redis::Value>(&mut con);
        }
        "gc" => {
            let _ = redis::cmd("LAKE.GC")
                .arg("GRACE")
                .arg(0)
                .query::<redis::Value>(&mut con);
        }
        "redis-restart" => {
            drop(con);
            lake.restart_redis();
        }
        _ => {}
    }
}

/// `FAILOVER` from the primary at `from` to its replica at `to`, asked
/// again until `to` is a primary (a failover gives up when the replica
/// lags).
fn failover(from: &str, to: &str) {
    let role = |url: &str| -> String {
        connect(url)
            .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c).ok())
            .and_then(|v| match v.first() {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let port = to.rsplit(':').next().unwrap_or("").trim_end_matches('/');
    let deadline = Instant::now() + Duration::from_secs(60);
    while role(to) != "master" {
        assert!(Instant::now() < deadline, "FAILOVER to {to} never happened");
        if let Some(mut c) = connect(from) {
            let _ = redis::cmd("FAILOVER")
                .arg("TO")
                .arg("127.0.0.1")
                .arg(port)
                .arg("TIMEOUT")
                .arg(5000)
                .query::<redis::Value>(&mut c);
        }
        let asked = Instant::now();
        while role(to) != "master" && asked.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The old primary follows the new one once it has synced.
    while role(from) != "slave" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One client: appends, reads and reads `AT` its own acknowledged stamps
/// until stopped, recording every operation; reconnects after a lost
/// connection and never retries an operation.
fn client(
    id: usize,
    url: &str,
    cats: &[String],
    seed: u64,
    start: Instant,
    stop: &AtomicBool,
    ops: &Mutex<Vec<Op>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut con = None;
    let mut counter = 0u64;
    let mut stamps: Vec<(usize, i64)> = Vec::new();
    let mut mine = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = con.as_mut() else {
            con = connect(url);
            if con.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        let ci = rng.random_range(0..cats.len());
        let cat = &cats[ci];
        let roll = rng.random_range(0..100);
        let invoked = ms(start);
        let (kind, outcome, lost) = if roll < 65 {
            counter += 1;
            let value = ((id as u64 + 1) << 32) | counter;
            let res = redis::cmd("LAKE.WRITE")
                .arg(cat)
                .arg("/log/-")
                .arg(value.to_string())
                .query::<(String, i64)>(c);
            match res {
                Ok((_, stamp)) => {
                    let confirmed = redis::cmd("WAIT")
                        .arg(1)
                        .arg(200)
                        .query::<i64>(c)
                        .is_ok_and(|n| n >= 1);
                    stamps.push((ci, stamp));
                    (
                        Kind::Append {
                            value,
                            stamp: Some(stamp),
                            confirmed,
                        },
                        Outcome::Ok,
                        false,
                    )
                }
                Err(e) => {
                    let (o, lost) = outcome_of(&e);
                    (
                        Kind::Append {
                            value,
                            stamp: None,
                            confirmed: false,
                        },
                        o,
                        lost,
                    )
                }
            }
        } else {
            let at = (roll >= 90)
                .then(|| {
                    let known: Vec<i64> = stamps
                        .iter()
                        .filter(|(i, _)| *i == ci)
                        .map(|(_, s)| *s)
                        .collect();
                    (!known.is_empty()).then(|| known[rng.random_range(0..known.len())])
                })
                .flatten();
            let mut cmd = redis::cmd("LAKE.READ");
            cmd.arg(cat).arg("PATH").arg("log");
            if let Some(s) = at {
                cmd.arg("AT").arg(s);
            }
            match cmd.query::<Option<String>>(c) {
                Ok(text) => {
                    // Nil or an unparsable answer (the log always exists)
                    // is no prefix of anything: the checker reports it.
                    let seen = text
                        .and_then(|t| serde_json::from_str::<Vec<u64>>(&t).ok())
                        .map_or(Seen::UNREADABLE, |v| Seen::of(&v));
                    (Kind::Read { at, seen }, Outcome::Ok, false)
                }
                Err(e) => {
                    let (o, lost) = outcome_of(&e);
                    let seen = Seen::of(&[]);
                    (Kind::Read { at, seen }, o, lost)
                }
            }
        };
        mine.push(Op {
            client: id,
            catalog: cat.clone(),
            kind,
            invoked,
            completed: ms(start),
            outcome,
        });
        if lost {
            con = None;
        } else if matches!(mine.last().map(|o| &o.outcome), Some(Outcome::Definite(_))) {
            // A client backs off after a refusal, as a real one would.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    ops.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
}

/// The outcome of a failed command, and whether the connection is lost.
fn outcome_of(e: &redis::RedisError) -> (Outcome, bool) {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        return (Outcome::Unknown("connection".into()), true);
    }
    let text = match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    };
    (history::classify(&text), false)
}

fn connect(url: &str) -> Option<redis::Connection> {
    let c = redis::Client::open(url).ok()?;
    let con = c.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    Some(con)
}

/// Each catalog's `log` through the sidecar that served the run, then
/// through a restarted one; retried until the node answers.
fn final_state(lake: &mut Lake, cats: &[String]) -> std::collections::BTreeMap<String, Final> {
    let read_all = |lake: &Lake| -> Vec<Vec<u64>> {
        cats.iter()
            .map(|cat| {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let got = connect(&lake.url()).and_then(|mut c| {
                        redis::cmd("LAKE.READ")
                            .arg(cat)
                            .arg("PATH")
                            .arg("log")
                            .query::<Option<String>>(&mut c)
                            .ok()
                    });
                    if let Some(text) = got {
                        return text
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or_default();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{cat} never read back after healing"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .collect()
    };
    let warm = read_all(lake);
    lake.kill_sidecar();
    lake.start_sidecar();
    let cold = read_all(lake);
    cats.iter()
        .cloned()
        .zip(warm.into_iter().zip(cold))
        .map(|(c, (warm, cold))| (c, Final { warm, cold }))
        .collect()
}

fn crash_marks(log: &str) -> bool {
    [
        "ASSERTION FAILED",
        "BUG REPORT",
        "crashed by signal",
        "cannot unwind",
    ]
    .iter()
    .any(|m| log.contains(m))
}
