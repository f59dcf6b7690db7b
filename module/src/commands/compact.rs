//! `LAKE.COMPACT <catalog>` and `LAKE.RETENTION <catalog> [<seconds>|DEFAULT]`:
//! history older than the retention leaves the index once a snapshot covers
//! it, so Redis's memory stops growing with every write ever made.
//!
//! Invariants (each one is a test):
//! - Only what a retained snapshot covers leaves: the newest snapshot whose
//!   stamp is at least the retention old becomes the catalog's floor; deltas
//!   at or below the floor and snapshots below it are removed. A read (plain,
//!   `PATH`, or `AT` the floor or later) answers exactly what it answered
//!   before.
//! - One command execution moves the floor and removes entries, so no read
//!   sees a floor without the deltas after it. The floor is set before the
//!   first removal and never moves back; `AT` below it is refused naming it,
//!   and no snapshot below it is ever committed (a late, older snapshot could
//!   otherwise bring back a range whose deltas are gone).
//! - A step removes at most [`STEP`] deltas, so one call never holds the
//!   main thread for long; the reply says whether more remain.
//! - Every change is a replicated Redis write (replicas, AOF). Removed
//!   objects are left to `LAKE.GC`, after its grace period.
//! - With no retention (module `retention-secs 0`, no catalog override)
//!   nothing is ever removed.

use lake_shared::journal::Change;
use lake_shared::stamp::{self, Bound};
use lake_shared::{catalog, LakeError};
use redis_module::{Context, RedisString, RedisValue};

use super::{arg_str, call_replicated, catalog_arg, read_int};
use crate::owner::{self, Op};
use crate::{config, journal, zset};

/// Longest retention a catalog may set (100 years, as `retention-secs`):
/// it must stay an integer every later read of the key can parse.
pub const MAX_RETENTION_SECS: u64 = 3_153_600_000;

/// Most deltas one compaction step removes.
pub const STEP: usize = 10_000;

/// `LAKE.COMPACT <catalog>` -> `[deltas removed, snapshots removed, floor
/// (nil when none), more (1 when another step has work)]`.
pub fn compact(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() != 2 {
        return Err(LakeError::invalid(
            "wrong number of arguments: LAKE.COMPACT <catalog>",
        ));
    }
    let cat = catalog_arg(&args, 1)?;
    owner::check_command(ctx, cat, Op::Repair)?;
    let s = step(ctx, cat, stamp::now_us(), STEP)?;
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(s.deltas as i64),
        RedisValue::Integer(s.snapshots as i64),
        s.floor.map_or(RedisValue::Null, RedisValue::Integer),
        RedisValue::Integer(i64::from(s.more)),
    ]))
}

/// What one compaction step did.
pub struct Step {
    pub deltas: usize,
    pub snapshots: usize,
    pub floor: Option<i64>,
    pub more: bool,
}

/// The retention in force for `cat`, in seconds (0: keep everything).
pub fn retention(ctx: &Context, cat: &str) -> Result<u64, LakeError> {
    match read_int(ctx, &catalog::retention_key(cat))? {
        Some(s) => Ok(s.max(0) as u64),
        None => Ok(config::retention_secs()),
    }
}

/// One bounded compaction step of `cat` at time `now_us`. Main thread,
/// inside one command execution.
pub fn step(ctx: &Context, cat: &str, now_us: i64, max: usize) -> Result<Step, LakeError> {
    let floor_key = catalog::floor_key(cat);
    let old_floor = read_int(ctx, &floor_key)?;
    let keep = retention(ctx, cat)?;
    let none = Step {
        deltas: 0,
        snapshots: 0,
        floor: old_floor,
        more: false,
    };
    if keep == 0 {
        return Ok(none);
    }
    let cutoff = now_us.saturating_sub((keep as i64).saturating_mul(1_000_000));
    let snap_key = catalog::snap_key(cat);
    let Some(base) = zset::last_at_or_below(ctx, &snap_key, cutoff as f64)? else {
        return Ok(none);
    };
    let floor = old_floor.map_or(base.score, |f| f.max(base.score));
    if old_floor != Some(floor) {
        call_replicated(ctx, "SET", &[&floor_key, &floor.to_string()])?;
        journal::record(ctx, cat, &Change::Floor { floor });
    }
    let snapshots = remove_below(ctx, &snap_key, floor)?;
    let idx = catalog::index_key(cat);
    let upto = Bound {
        score: floor as f64,
        exclusive: false,
    };
    let covered = zset::page(ctx, &idx, Bound::LOWEST, upto, false, max + 1)?;
    let deltas = covered.len().min(max);
    if deltas > 0 {
        call_replicated(
            ctx,
            "ZREMRANGEBYRANK",
            &[&idx, "0", &(deltas - 1).to_string()],
        )?;
    }
    Ok(Step {
        deltas,
        snapshots,
        floor: Some(floor),
        more: covered.len() > max,
    })
}

/// `ZREMRANGEBYSCORE key -inf (<floor>`, replicated; the count removed.
fn remove_below(ctx: &Context, key: &str, floor: i64) -> Result<usize, LakeError> {
    let below = Bound {
        score: floor as f64,
        exclusive: true,
    };
    let n = zset::page(ctx, key, Bound::LOWEST, below, false, usize::MAX)?.len();
    if n > 0 {
        call_replicated(
            ctx,
            "ZREMRANGEBYSCORE",
            &[key, "-inf", &format!("({floor}")],
        )?;
    }
    Ok(n)
}

/// `LAKE.RETENTION <catalog>` -> seconds in force (0: keep everything);
/// `LAKE.RETENTION <catalog> <seconds>` sets the catalog's own; `DEFAULT`
/// goes back to the module's `retention-secs`.
pub fn set_retention(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    const USAGE: &str = "LAKE.RETENTION <catalog> [<seconds>|DEFAULT]";
    if args.len() != 2 && args.len() != 3 {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let cat = catalog_arg(&args, 1)?;
    let Some(v) = args.get(2) else {
        return Ok(RedisValue::Integer(retention(ctx, cat)? as i64));
    };
    let v = arg_str(v, "retention")?;
    owner::check_command(ctx, cat, Op::Repair)?;
    let key = catalog::retention_key(cat);
    if v.eq_ignore_ascii_case("DEFAULT") {
        call_replicated(ctx, "DEL", &[&key])?;
        journal::record(ctx, cat, &Change::Retention { secs: None });
    } else {
        let secs = v
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_RETENTION_SECS)
            .ok_or_else(|| {
                LakeError::invalid(format!(
                    "retention needs whole seconds from 0 to {MAX_RETENTION_SECS} or DEFAULT, got '{v}' ({USAGE})"
                ))
            })?;
        call_replicated(ctx, "SET", &[&key, &secs.to_string()])?;
        journal::record(ctx, cat, &Change::Retention { secs: Some(secs) });
    }
    Ok(RedisValue::SimpleStringStatic("OK"))
}
