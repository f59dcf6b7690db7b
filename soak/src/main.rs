//! `lake-soak`: a real Lake under a list-append workload while faults are
//! injected on a random schedule from a printed seed; then everything
//! heals, the final state is read through the warm and cold sidecars, and
//! the checker ([`lake_soak::checker`]) judges the recorded history.
//!
//! Two topologies: `standalone` (a primary with AOF and a replica, one
//! sidecar) and `cluster` (3+3 Redis Cluster, a sidecar per node, one
//! shared bucket).
//!
//! Writes the report (`report.txt`) and the timeline (`timeline.svg`) to
//! `--out`, and the history (`history.json`) when the run found an anomaly
//! (or with `--history`); exits 1 on any anomaly.
//!
//! Rules of the workload: every append writes a value no other append uses;
//! an operation whose outcome is unknown (connection lost) is never
//! retried; a seed replays the fault schedule (the interleaving of clients
//! is the machine's).

mod client;
mod cluster;
mod standalone;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use client::{ms, read_log, Router};
use lake_soak::checker::PRIMARY_KILL;
use lake_soak::history::{Fault, Final, History};
use lake_soak::{checker, report};
use lake_tests::redis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The module's `timeout-ms` in the soak: faults that freeze something
/// hold past it.
const TIMEOUT_MS: u64 = 1000;

/// What a topology does for the soak.
trait Topology {
    /// The URLs clients start from (every node in a cluster).
    fn seeds(&self) -> Vec<String>;
    fn cluster(&self) -> bool;
    /// Applies fault `kind`, holds it for `hold`, and heals it.
    fn inject(&mut self, kind: &str, hold: Duration, cats: &[String], rng: &mut StdRng);
    /// Waits until every node serves again after the last fault.
    fn heal(&mut self);
    /// Restarts every sidecar: empty caches for the cold read.
    fn restart_sidecars(&mut self);
    /// Nodes that crashed (a crash report in the log, or not running).
    fn crashed(&mut self) -> Vec<String>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shape {
    Standalone,
    Cluster,
}

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 180)]
    secs: u64,
    /// The fault schedule's seed (default: a fresh one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// `standalone` (primary with AOF + replica) or `cluster` (3+3).
    #[arg(long, value_enum, default_value_t = Shape::Standalone)]
    topology: Shape,
    /// Client threads.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Catalogs the clients share.
    #[arg(long, default_value_t = 4)]
    catalogs: usize,
    /// Faults to inject (comma-separated; default: all the topology's).
    #[arg(long, value_delimiter = ',')]
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
    let mut args = Args::parse();
    let known: &[&str] = match args.topology {
        Shape::Standalone => &standalone::FAULTS,
        Shape::Cluster => &cluster::FAULTS,
    };
    if args.faults.is_empty() {
        args.faults = known.iter().map(|f| f.to_string()).collect();
    }
    for f in &args.faults {
        if !known.contains(&f.as_str()) {
            eprintln!(
                "lake-soak: unknown fault '{f}' for this topology (known: {})",
                known.join(", ")
            );
            std::process::exit(2);
        }
    }
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let replay = format!(
        "replay: lake-soak --topology {} --seed {seed} --secs {} --clients {} --catalogs {} --faults {}",
        format!("{:?}", args.topology).to_lowercase(),
        args.secs,
        args.clients,
        args.catalogs,
        args.faults.join(",")
    );
    eprintln!("lake-soak: seed {seed} ({replay})");
    let h = match args.topology {
        Shape::Standalone => run(&mut standalone::Standalone::start(), &args, seed),
        Shape::Cluster => run(&mut cluster::ClusterTopology::start(), &args, seed),
    };
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

/// Runs the soak on `topo`; the recorded history.
fn run(topo: &mut impl Topology, args: &Args, seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let cats: Vec<String> = (0..args.catalogs).map(|i| format!("soak/{i}")).collect();
    let mut router = Router::new(topo.seeds(), topo.cluster());
    for cat in &cats {
        let c = router.con(cat).expect("a node serving the catalog");
        redis::cmd("LAKE.WRITE")
            .arg(cat)
            .arg("log")
            .arg("[]")
            .query::<redis::Value>(c)
            .expect("initialise a catalog");
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (cats, stop, ops) = (cats.clone(), stop.clone(), ops.clone());
            let router = Router::new(topo.seeds(), topo.cluster());
            let seed = seed ^ ((i as u64 + 1) << 40);
            std::thread::spawn(move || client::run(i, router, &cats, seed, start, &stop, &ops))
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
        topo.inject(&kind, hold, &cats, &mut rng);
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
    topo.heal();
    let finals = final_state(topo, &cats);
    let ops = std::mem::take(&mut *ops.lock().unwrap_or_else(|e| e.into_inner()));
    History {
        seed,
        ops,
        may_lose_unconfirmed: faults.iter().any(|f| f.kind == PRIMARY_KILL),
        faults,
        finals,
        crashed: topo.crashed(),
    }
}

/// Each catalog's `log` through the sidecars that served the run, then
/// through restarted ones.
fn final_state(topo: &mut impl Topology, cats: &[String]) -> BTreeMap<String, Final> {
    let mut router = Router::new(topo.seeds(), topo.cluster());
    let warm: Vec<Vec<u64>> = cats.iter().map(|c| read_log(&mut router, c)).collect();
    topo.restart_sidecars();
    let mut router = Router::new(topo.seeds(), topo.cluster());
    let cold: Vec<Vec<u64>> = cats.iter().map(|c| read_log(&mut router, c)).collect();
    cats.iter()
        .cloned()
        .zip(warm.into_iter().zip(cold))
        .map(|(c, (warm, cold))| (c, Final { warm, cold }))
        .collect()
}

/// `LAKE.COMPACT` of `cat` with a 1 s retention (old `AT` stamps fall
/// below the floor).
fn compact(con: &mut redis::Connection, cat: &str) {
    let _ = redis::cmd("LAKE.RETENTION")
        .arg(cat)
        .arg(1)
        .query::<redis::Value>(con);
    let _ = redis::cmd("LAKE.COMPACT")
        .arg(cat)
        .query::<redis::Value>(con);
}

/// `LAKE.GC GRACE 0` on one node.
fn gc(con: &mut redis::Connection) {
    let _ = redis::cmd("LAKE.GC")
        .arg("GRACE")
        .arg(0)
        .query::<redis::Value>(con);
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
