//! Closed-loop load: `clients` connections, each sending its next request as
//! soon as the previous reply arrived, for a fixed time. Every latency is
//! kept, so percentiles are exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::resp::Conn;

/// One measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Stats {
    pub fn from_latencies(
        mut lat: Vec<u32>,
        errors: u64,
        first_error: Option<String>,
        secs: f64,
    ) -> Stats {
        lat.sort_unstable();
        let pct = |p: f64| -> u64 {
            if lat.is_empty() {
                0
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize] as u64
            }
        };
        Stats {
            ops: lat.len() as u64,
            errors,
            first_error,
            secs,
            rps: lat.len() as f64 / secs.max(1e-9),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            max_us: pct(1.0),
        }
    }
}

/// Builds request `i` of connection `client`.
pub type Gen = Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>;

/// When a phase ends.
#[derive(Clone)]
enum Until {
    Deadline(Instant),
    /// A shared counter of requests handed out, and the total.
    Count(Arc<AtomicU64>, u64),
}

impl Until {
    /// The next request number for a connection that sent `sent` so far.
    fn next(&self, sent: u64) -> Option<u64> {
        match self {
            Until::Deadline(d) => (Instant::now() < *d).then_some(sent),
            Until::Count(next, n) => Some(next.fetch_add(1, Ordering::Relaxed)).filter(|i| i < n),
        }
    }
}

/// Runs `clients` connections against `port` for `secs` seconds.
pub async fn run(port: u16, clients: usize, secs: f64, gen: Gen) -> Stats {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    drive(port, clients, Until::Deadline(deadline), gen).await
}

/// Runs `n` requests spread over `clients` connections, as fast as they go.
pub async fn run_count(port: u16, clients: usize, n: u64, gen: Gen) -> Stats {
    let until = Until::Count(Arc::new(AtomicU64::new(0)), n);
    drive(port, clients, until, gen).await
}

async fn drive(port: u16, clients: usize, until: Until, gen: Gen) -> Stats {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (gen, until) = (gen.clone(), until.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut first) = (0u64, None);
            let mut conn = match Conn::connect(port).await {
                Ok(c) => c,
                Err(e) => return (lat, 1, Some(format!("connect: {e}"))),
            };
            let mut sent = 0u64;
            while let Some(i) = until.next(sent) {
                sent += 1;
                let frame = gen(c, i);
                let t = Instant::now();
                match conn.call(&frame).await {
                    Ok(Ok(())) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Ok(Err(e)) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(format!("connection: {e}"));
                        break;
                    }
                }
            }
            (lat, errors, first)
        });
    }
    gather(tasks, start).await
}

/// What one load task returns: its latencies (µs), its error count and its
/// first error.
pub type TaskResult = (Vec<u32>, u64, Option<String>);

/// Waits for every task and merges their results into one [`Stats`].
pub async fn gather(mut tasks: tokio::task::JoinSet<TaskResult>, start: Instant) -> Stats {
    let (mut lat, mut errors, mut first) = (Vec::new(), 0, None);
    while let Some(r) = tasks.join_next().await {
        if let Ok((l, e, f)) = r {
            lat.extend(l);
            errors += e;
            if first.is_none() {
                first = f;
            }
        }
    }
    Stats::from_latencies(lat, errors, first, start.elapsed().as_secs_f64())
}
