//! The module's settings, as Redis 7 module configs: `CONFIG GET lake.*`,
//! `CONFIG SET lake.<name> <value>` at run time, `lake.<name> <value>` in
//! redis.conf, and still accepted as load arguments
//! (`--loadmodule liblake.so socket <path> timeout-ms 5000 ...`).
//!
//! Invariants:
//! - Every setting is read where it is used, from the atomics below, so a
//!   `CONFIG SET` takes effect for the next request (a request in flight keeps
//!   the deadline it was given).
//! - Redis checks each value against its range before storing it; load
//!   arguments that are not settings are refused at load ([`check_args`]),
//!   so a typo never passes silently.
//! - `socket` is immutable: the channel is opened once, at load.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use lake_shared::{LakeError, DEFAULT_MAX_VALUE_BYTES};

/// The sidecar's Unix socket (`lake.socket`, immutable).
pub static SOCKET: Mutex<String> = Mutex::new(String::new());
/// Every blocked client gets a reply within this (`lake.timeout-ms`).
pub static TIMEOUT_MS: AtomicI64 = AtomicI64::new(5000);
/// A read that merged at least this many deltas builds a snapshot in the
/// background; 0 never (`lake.snapshot-every`).
pub static SNAPSHOT_EVERY: AtomicI64 = AtomicI64::new(64);
/// Largest value `LAKE.WRITE` accepts (`lake.max-value-bytes`).
pub static MAX_VALUE_BYTES: AtomicI64 = AtomicI64::new(DEFAULT_MAX_VALUE_BYTES as i64);
/// Requests waiting for the sidecar at most; more get `LAKEBUSY`
/// (`lake.max-inflight`).
pub static MAX_INFLIGHT: AtomicI64 = AtomicI64::new(10_000);
/// `LAKE.GC` keeps unreferenced objects younger than this
/// (`lake.gc-grace-secs`).
pub static GC_GRACE_SECS: AtomicI64 = AtomicI64::new(3600);
/// History older than this and covered by a snapshot may be compacted; 0
/// keeps everything (`lake.retention-secs`; a catalog may override it).
pub static RETENTION_SECS: AtomicI64 = AtomicI64::new(0);
/// How often background compaction takes a step; 0 never
/// (`lake.compact-interval-ms`).
pub static COMPACT_INTERVAL_MS: AtomicI64 = AtomicI64::new(1000);
/// How often index changes are shipped to the store (0: never; see
/// `journal.rs`).
pub static SHIP_INTERVAL_MS: AtomicI64 = AtomicI64::new(1000);

/// Memory for hot-read answers kept on the main thread, in MiB; 0 off
/// (`lake.reply-cache-mb`, see `reply_cache.rs`).
pub static REPLY_CACHE_MB: AtomicI64 = AtomicI64::new(64);

/// The names a load argument may set (each also `lake.<name>`).
pub const NAMES: [&str; 10] = [
    "socket",
    "timeout-ms",
    "snapshot-every",
    "max-value-bytes",
    "max-inflight",
    "gc-grace-secs",
    "retention-secs",
    "compact-interval-ms",
    "ship-interval-ms",
    "reply-cache-mb",
];

fn get(v: &AtomicI64) -> u64 {
    v.load(Ordering::Relaxed).max(0) as u64
}

pub fn timeout() -> Duration {
    Duration::from_millis(get(&TIMEOUT_MS).max(1))
}

pub fn snapshot_every() -> usize {
    get(&SNAPSHOT_EVERY) as usize
}

pub fn max_value_bytes() -> usize {
    get(&MAX_VALUE_BYTES) as usize
}

pub fn max_inflight() -> usize {
    get(&MAX_INFLIGHT).max(1) as usize
}

pub fn gc_grace_secs() -> u64 {
    get(&GC_GRACE_SECS)
}

pub fn retention_secs() -> u64 {
    get(&RETENTION_SECS)
}

pub fn compact_interval_ms() -> u64 {
    get(&COMPACT_INTERVAL_MS)
}

pub fn reply_cache_bytes() -> usize {
    (get(&REPLY_CACHE_MB) as usize) << 20
}

pub fn ship_interval_ms() -> u64 {
    get(&SHIP_INTERVAL_MS)
}

/// The socket path; an error when it was never given.
pub fn socket() -> Result<String, LakeError> {
    let s = SOCKET.lock().map(|s| s.clone()).unwrap_or_default();
    if s.is_empty() {
        return Err(LakeError::invalid(
            "module argument 'socket <path>' (or config lake.socket) is required",
        ));
    }
    Ok(s)
}

/// Refuses load arguments that are not key/value pairs of known settings
/// (Redis has already stored their values in the configs).
pub fn check_args(args: &[String]) -> Result<(), LakeError> {
    if !args.len().is_multiple_of(2) {
        return Err(LakeError::invalid(format!(
            "module arguments are key/value pairs of: {}",
            NAMES.join(", ")
        )));
    }
    for pair in args.chunks(2) {
        if !NAMES.contains(&pair[0].as_str()) {
            return Err(LakeError::invalid(format!(
                "unknown module argument '{}' (known: {})",
                pair[0],
                NAMES.join(", ")
            )));
        }
    }
    Ok(())
}
