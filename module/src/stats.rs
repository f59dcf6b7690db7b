//! The module's own counters, reported by `INFO lake`: what an operator
//! reads to see whether Lake is healthy (sidecar connected, requests in
//! flight and parked, writes, reads, errors by reply prefix, snapshot
//! commits).
//!
//! Counters are process-wide atomics, bumped where the event happens and
//! never reset (like Redis's own `INFO` totals); a restart starts from zero.
//!
//! Latency percentiles (`latency_<command>_p50_us`, `_p99_us`, `_samples`)
//! are the time from a command blocking its client to its reply, over the
//! last one to two minutes ([`lake_shared::latency`]): what the client
//! sees of Lake, minus the network. Commands answered without blocking
//! (a hot read from the reply cache, an empty `LAKE.CHANGES` page) are not
//! counted: they take no longer than any plain Redis command.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lake_shared::latency::Window;
use lake_shared::ErrorKind;
use redis_module::{InfoContext, RedisResult};

pub static WRITES: AtomicU64 = AtomicU64::new(0);
pub static READS: AtomicU64 = AtomicU64::new(0);
pub static SNAPSHOT_COMMITS: AtomicU64 = AtomicU64::new(0);
/// Background compaction steps that removed something.
pub static COMPACTIONS: AtomicU64 = AtomicU64::new(0);

/// Error replies, by kind (index: [`KINDS`]).
static ERRORS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
const KINDS: [ErrorKind; 9] = [
    ErrorKind::Invalid,
    ErrorKind::Unavailable,
    ErrorKind::Timeout,
    ErrorKind::Data,
    ErrorKind::Busy,
    ErrorKind::Retry,
    ErrorKind::ReadOnly,
    ErrorKind::Conflict,
    ErrorKind::Internal,
];

/// The commands whose latency `INFO lake` reports, by their latency
/// monitor event (`lake-<name>`).
const TIMED: [&str; 6] = ["write", "read", "mread", "view", "changes", "gc"];

/// One window per [`TIMED`] command.
static LATENCY: Mutex<Vec<Window>> = Mutex::new(Vec::new());

fn minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// Records one answer of the command whose latency event is `event`
/// (`lake-write`, ...), `took` after its client blocked.
pub fn latency(event: &str, took: Duration) {
    let Some(i) = TIMED
        .iter()
        .position(|t| event.strip_prefix("lake-") == Some(*t))
    else {
        return;
    };
    if let Ok(mut w) = LATENCY.lock() {
        if w.len() < TIMED.len() {
            w.resize_with(TIMED.len(), Window::default);
        }
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        w[i].record(minute(), us);
    }
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counts one error reply of `kind`.
pub fn error(kind: ErrorKind) {
    if let Some(i) = KINDS.iter().position(|k| *k == kind) {
        bump(&ERRORS[i]);
    }
}

/// The `lake` section of `INFO`.
pub fn info(ctx: &InfoContext) -> RedisResult<()> {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (connected, in_flight) = crate::state::client()
        .map(|c| (c.connected(), c.in_flight()))
        .unwrap_or((false, 0));
    let mut section = ctx
        .builder()
        .add_section("lake")
        .field("sidecar_connected", i64::from(connected))?
        .field("requests_in_flight", in_flight as u64)?
        .field("commits_parked", crate::gate::parked() as u64)?
        .field("writes", get(&WRITES))?
        .field("reads", get(&READS))?
        .field("snapshot_commits", get(&SNAPSHOT_COMMITS))?
        .field("compactions", get(&COMPACTIONS))?;
    let (entries, bodies, bytes) = crate::reply_cache::size();
    section = section
        .field("reply_cache_hits", get(&crate::reply_cache::HITS))?
        .field("reply_cache_misses", get(&crate::reply_cache::MISSES))?
        .field("reply_cache_folds", get(&crate::reply_cache::FOLDS))?
        .field("reply_cache_entries", entries as u64)?
        .field("reply_cache_bodies", bodies as u64)?
        .field("reply_cache_bytes", bytes as u64)?;
    let pending = crate::journal::pending();
    section = section
        .field("journal_recorded", get(&crate::journal::RECORDED))?
        .field("journal_shipped", get(&crate::journal::SHIPPED))?
        .field("journal_batches", get(&crate::journal::BATCHES))?
        .field("journal_catalogs_pending", pending as u64)?
        .field("journal_record_errors", get(&crate::journal::RECORD_ERRORS))?
        .field("journal_ship_errors", get(&crate::journal::SHIP_ERRORS))?
        .field("journal_walks", get(&crate::journal::WALKS))?
        .field("journal_last_walk_ms", get(&crate::journal::LAST_WALK_MS))?;
    if let Ok(mut windows) = LATENCY.lock() {
        let now = minute();
        for (name, w) in TIMED.iter().zip(windows.iter_mut()) {
            let (p50, p99) = (w.quantile(now, 0.5), w.quantile(now, 0.99));
            section = section
                .field(&format!("latency_{name}_p50_us"), p50.unwrap_or(0))?
                .field(&format!("latency_{name}_p99_us"), p99.unwrap_or(0))?
                .field(&format!("latency_{name}_samples"), w.count(now))?;
        }
    }
    for (k, c) in KINDS.iter().zip(&ERRORS) {
        let name = format!("errors_{}", k.prefix().to_ascii_lowercase());
        section = section.field(&name, get(c))?;
    }
    section.build_section()?.build_info()?;
    Ok(())
}
