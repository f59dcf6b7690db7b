//! One soak client: appends, reads and reads `AT` its own acknowledged
//! stamps until stopped, recording every operation, each sent to the node
//! serving its catalog.
//!
//! Rules: an operation whose outcome is unknown (connection lost) is never
//! retried; `WAIT` goes over the connection that took the write (the node
//! whose replica must confirm it); in a cluster the client keeps its own
//! slot map (no client library retrying behind its back) and refreshes it
//! after a redirect, a `CLUSTERDOWN` or a lost connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lake_shared::cluster::catalog_slot;
use lake_soak::history::{self, Kind, Op, Outcome, Seen};
use lake_tests::redis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Routes a catalog to the node serving it and keeps one connection per
/// node.
pub struct Router {
    seeds: Vec<String>,
    cluster: bool,
    /// `(first slot, last slot, node URL)`; empty until learned.
    slots: Vec<(u16, u16, String)>,
    cons: HashMap<String, redis::Connection>,
}

impl Router {
    /// A router over `seeds` (one URL standalone; every node in a cluster).
    pub fn new(seeds: Vec<String>, cluster: bool) -> Router {
        Router {
            seeds,
            cluster,
            slots: Vec::new(),
            cons: HashMap::new(),
        }
    }

    /// The URL of the node serving `cat`, if known.
    fn url_for(&mut self, cat: &str) -> Option<String> {
        if !self.cluster {
            return self.seeds.first().cloned();
        }
        if self.slots.is_empty() {
            self.learn_slots();
        }
        let slot = catalog_slot(cat);
        self.slots
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
            .map(|(_, _, url)| url.clone())
    }

    /// Asks the seeds for `CLUSTER SLOTS` until one answers.
    fn learn_slots(&mut self) {
        for seed in &self.seeds {
            let Some(mut c) = connect(seed) else { continue };
            let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c)
            else {
                continue;
            };
            let slots: Vec<(u16, u16, String)> = ranges.iter().filter_map(slot_range).collect();
            if !slots.is_empty() {
                self.slots = slots;
                return;
            }
        }
    }

    /// The connection to the node serving `cat`; `None` when it cannot be
    /// reached now.
    pub fn con(&mut self, cat: &str) -> Option<&mut redis::Connection> {
        let url = self.url_for(cat)?;
        if !self.cons.contains_key(&url) {
            let c = connect(&url)?;
            self.cons.insert(url.clone(), c);
        }
        self.cons.get_mut(&url)
    }

    /// The connection serving `cat` was lost: drop it and relearn the
    /// slots (a failover may have moved them).
    pub fn lost(&mut self, cat: &str) {
        if let Some(url) = self.url_for(cat) {
            self.cons.remove(&url);
        }
        self.slots.clear();
    }

    /// A redirect or `CLUSTERDOWN`: relearn the slots before the next
    /// operation.
    pub fn stale(&mut self) {
        self.slots.clear();
    }
}

/// One `CLUSTER SLOTS` entry: `[first, last, [host, port, id], replicas..]`.
fn slot_range(v: &redis::Value) -> Option<(u16, u16, String)> {
    let redis::Value::Array(parts) = v else {
        return None;
    };
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let (lo, hi) = (int(parts.first()?)?, int(parts.get(1)?)?);
    let redis::Value::Array(primary) = parts.get(2)? else {
        return None;
    };
    let host = match primary.first()? {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    };
    let port = int(primary.get(1)?)?;
    Some((lo, hi, format!("redis://{host}:{port}/")))
}

/// A connection with the soak's timeouts, or `None`.
pub fn connect(url: &str) -> Option<redis::Connection> {
    let c = redis::Client::open(url).ok()?;
    let con = c.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    Some(con)
}

/// Milliseconds since `start`.
pub fn ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Runs client `id` until `stop`, then adds its operations to `ops`.
pub fn run(
    id: usize,
    mut router: Router,
    cats: &[String],
    seed: u64,
    start: Instant,
    stop: &AtomicBool,
    ops: &Mutex<Vec<Op>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counter = 0u64;
    let mut stamps: Vec<(usize, i64)> = Vec::new();
    let mut mine = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let ci = rng.random_range(0..cats.len());
        let cat = &cats[ci];
        let Some(c) = router.con(cat) else {
            router.stale();
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let roll = rng.random_range(0..100);
        let invoked = ms(start);
        let (kind, outcome) = if roll < 65 {
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
                    let stamp = Some(stamp);
                    (
                        Kind::Append {
                            value,
                            stamp,
                            confirmed,
                        },
                        Outcome::Ok,
                    )
                }
                Err(e) => {
                    let outcome = outcome_of(&e);
                    let (stamp, confirmed) = (None, false);
                    let kind = Kind::Append {
                        value,
                        stamp,
                        confirmed,
                    };
                    (kind, outcome)
                }
            }
        } else {
            let at = (roll >= 90)
                .then(|| {
                    // Recent stamps mostly: compaction (1 s retention)
                    // refuses most older ones below the floor.
                    let known: Vec<i64> = stamps
                        .iter()
                        .rev()
                        .filter(|(i, _)| *i == ci)
                        .map(|(_, s)| *s)
                        .take(if rng.random_range(0..4) == 0 {
                            usize::MAX
                        } else {
                            8
                        })
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
                    (Kind::Read { at, seen }, Outcome::Ok)
                }
                Err(e) => {
                    let seen = Seen::of(&[]);
                    (Kind::Read { at, seen }, outcome_of(&e))
                }
            }
        };
        match &outcome {
            Outcome::Unknown(why) if why == LOST => router.lost(cat),
            Outcome::Definite(e) => {
                if ["MOVED", "ASK", "CLUSTERDOWN"].contains(&e.as_str()) {
                    router.stale();
                }
                // A client backs off after a refusal, as a real one would.
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {}
        }
        mine.push(Op {
            client: id,
            catalog: cat.clone(),
            kind,
            invoked,
            completed: ms(start),
            outcome,
        });
    }
    ops.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
}

/// The unknown outcome of an operation whose connection was lost.
const LOST: &str = "connection";

/// The outcome of a failed command.
fn outcome_of(e: &redis::RedisError) -> Outcome {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        return Outcome::Unknown(LOST.into());
    }
    let text = match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    };
    history::classify(&text)
}

/// `cat`'s `log` read through `router` (retried until a node answers, at
/// most a minute).
pub fn read_log(router: &mut Router, cat: &str) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = router.con(cat).map(|c| {
            redis::cmd("LAKE.READ")
                .arg(cat)
                .arg("PATH")
                .arg("log")
                .query::<Option<String>>(c)
        });
        match got {
            Some(Ok(text)) => {
                return text
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default()
            }
            Some(Err(e)) if e.is_io_error() || e.is_connection_dropped() => router.lost(cat),
            _ => router.stale(),
        }
        assert!(
            Instant::now() < deadline,
            "{cat} never read back after healing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
