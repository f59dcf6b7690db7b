//! Compaction in the background: a timer on Redis's main thread walks the
//! catalogs a little at a time and runs one bounded compaction step
//! ([`crate::commands::compact::step`]) on those that have history older
//! than their retention.
//!
//! Invariants:
//! - Runs only on a primary, never while writes are paused, and in Redis
//!   Cluster only for catalogs in slots this node serves and is not moving
//!   (the same rule as snapshot commits).
//! - One tick runs one `SCAN` step (about [`KEYS_PER_TICK`] keys) and removes
//!   at most [`DELTAS_PER_TICK`] deltas, so a tick is a short pause of the
//!   main thread however large the index. A SCAN cursor carries the walk
//!   over to the next tick; it moves on only when every catalog of the step
//!   was visited, so no catalog is ever skipped for good.
//! - With no retention anywhere, a tick reads keys and removes nothing.

use std::sync::Mutex;

use lake_shared::{catalog, cluster, stamp};
use redis_module::{raw, Context, ContextFlags, RedisValue};

use crate::commands::compact;
use crate::{config, entry, owner, stats};

/// Keys one `SCAN` step looks at (a hint to Redis).
pub const KEYS_PER_TICK: &str = "64";
/// Deltas one tick removes at most.
pub const DELTAS_PER_TICK: usize = 2_000;

/// Where the walk over `catalog:{*}:snap` keys stands.
static CURSOR: Mutex<String> = Mutex::new(String::new());

/// Arms the timer for the next step (`lake.compact-interval-ms`; while it
/// is 0 the timer only checks again every second).
pub fn start(ctx: &Context) {
    let ms = match config::compact_interval_ms() {
        0 => 1000,
        ms => ms,
    };
    if let Some(create) = unsafe { raw::RedisModule_CreateTimer } {
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        unsafe {
            create(
                ctx.ctx,
                ms,
                Some(entry::compaction_timer),
                std::ptr::null_mut(),
            )
        };
    }
}

/// One timer tick ([`crate::entry::compaction_timer`] re-arms it).
pub fn tick(ctx: &Context) {
    if config::compact_interval_ms() > 0 {
        run(ctx);
    }
}

fn run(ctx: &Context) {
    let flags = ctx.get_flags();
    if owner::paused()
        || !flags.contains(ContextFlags::MASTER)
        || flags.contains(ContextFlags::SLAVE)
    {
        return;
    }
    let stable = if flags.contains(ContextFlags::CLUSTER) {
        match owner::myself(ctx) {
            Ok(me) => Some(me.stable()),
            Err(_) => return,
        }
    } else {
        None
    };
    let mut cursor = CURSOR.lock().map(|c| c.clone()).unwrap_or_default();
    if cursor.is_empty() {
        cursor = "0".into();
    }
    let Ok(RedisValue::Array(mut parts)) = ctx.call(
        "SCAN",
        &[
            cursor.as_str(),
            "MATCH",
            "catalog:{*}:snap",
            "COUNT",
            KEYS_PER_TICK,
            "TYPE",
            "zset",
        ],
    ) else {
        return;
    };
    let keys = parts.pop().unwrap_or(RedisValue::Null);
    let next = match parts.pop() {
        Some(RedisValue::BulkString(s)) | Some(RedisValue::SimpleString(s)) => s,
        _ => "0".into(),
    };
    let RedisValue::Array(keys) = keys else {
        return;
    };
    let now = stamp::now_us();
    let mut budget = DELTAS_PER_TICK;
    for k in keys {
        let key = match k {
            RedisValue::BulkString(s) | RedisValue::SimpleString(s) => s,
            _ => continue,
        };
        let Some(cat) = key
            .strip_prefix("catalog:{")
            .and_then(|r| r.strip_suffix("}:snap"))
        else {
            continue;
        };
        if catalog::validate(cat).is_err()
            || stable
                .as_ref()
                .is_some_and(|s| !s.contains(cluster::catalog_slot(cat)))
        {
            continue;
        }
        match compact::step(ctx, cat, now, budget) {
            Ok(s) => {
                if s.deltas > 0 || s.snapshots > 0 {
                    stats::bump(&stats::COMPACTIONS);
                }
                budget = budget.saturating_sub(s.deltas);
            }
            Err(e) => crate::reply::warning(
                ctx,
                &format!(
                    "lake: background compaction of '{cat}' failed: {}",
                    e.message
                ),
            ),
        }
        if budget == 0 {
            // Out of budget: this step's keys are visited again next tick.
            return;
        }
    }
    if let Ok(mut c) = CURSOR.lock() {
        *c = next;
    }
}
