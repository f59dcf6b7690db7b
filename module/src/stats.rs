//! The module's own counters, reported by `INFO lake`: what an operator
//! reads to see whether Lake is healthy (sidecar connected, requests in
//! flight and parked, writes, reads, errors by reply prefix, snapshot
//! commits).
//!
//! Counters are process-wide atomics, bumped where the event happens and
//! never reset (like Redis's own `INFO` totals); a restart starts from zero.

use std::sync::atomic::{AtomicU64, Ordering};

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
    let (entries, bytes) = crate::reply_cache::size();
    section = section
        .field("reply_cache_hits", get(&crate::reply_cache::HITS))?
        .field("reply_cache_misses", get(&crate::reply_cache::MISSES))?
        .field("reply_cache_entries", entries as u64)?
        .field("reply_cache_bytes", bytes as u64)?;
    let pending = crate::journal::pending();
    section = section
        .field("journal_recorded", get(&crate::journal::RECORDED))?
        .field("journal_shipped", get(&crate::journal::SHIPPED))?
        .field("journal_batches", get(&crate::journal::BATCHES))?
        .field("journal_catalogs_pending", pending as u64)?
        .field("journal_record_errors", get(&crate::journal::RECORD_ERRORS))?
        .field("journal_ship_errors", get(&crate::journal::SHIP_ERRORS))?;
    for (k, c) in KINDS.iter().zip(&ERRORS) {
        let name = format!("errors_{}", k.prefix().to_ascii_lowercase());
        section = section.field(&name, get(c))?;
    }
    section.build_section()?.build_info()?;
    Ok(())
}
