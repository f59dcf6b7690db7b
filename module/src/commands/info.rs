//! `LAKE.INFO <catalog>`: what the index holds for one catalog, as
//! `XINFO STREAM` answers (a map in RESP3, a flat field/value array in
//! RESP2), read in one command execution: every figure is of the same
//! moment.
//!
//! Fields: `deltas`, `deltas-since-snapshot` (what a read merges beyond the
//! newest snapshot), `first-stamp` / `last-stamp` (nil when empty),
//! `snapshots`, `snapshot-uuid` / `snapshot-covers` (the newest snapshot,
//! nil when none), `fence` (removals so far), `floor` (where compacted
//! history starts; nil when never compacted), `retention-secs` (in force;
//! 0 keeps everything), `slot` (its Redis Cluster hash slot).

use std::collections::BTreeMap;

use lake_shared::stamp::Bound;
use lake_shared::{catalog, cluster, member, LakeError};
use redis_module::redisvalue::RedisValueKey;
use redis_module::{Context, RedisString, RedisValue};

use super::{catalog_arg, read_fence, read_int};
use crate::owner::{self, Op};
use crate::zset;

pub fn info(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() != 2 {
        return Err(LakeError::invalid(
            "wrong number of arguments: LAKE.INFO <catalog>",
        ));
    }
    let cat = catalog_arg(&args, 1)?;
    owner::check_command(ctx, cat, Op::Read)?;
    let (idx, snap) = (catalog::index_key(cat), catalog::snap_key(cat));
    let first = zset::page(ctx, &idx, Bound::LOWEST, Bound::HIGHEST, false, 1)?;
    let last = zset::last_score(ctx, &idx)?;
    let newest = zset::last_at_or_below(ctx, &snap, f64::INFINITY)?;
    let since = match &newest {
        Some(s) => count_after(ctx, &idx, s.score)?,
        None => zset::len(ctx, &idx)? as i64,
    };
    let stamp = |s: Option<i64>| s.map_or(RedisValue::Null, RedisValue::Integer);
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: RedisValue| {
        m.insert(RedisValueKey::String(k.to_string()), v);
    };
    put("deltas", RedisValue::Integer(zset::len(ctx, &idx)? as i64));
    put("deltas-since-snapshot", RedisValue::Integer(since));
    put("first-stamp", stamp(first.first().map(|e| e.score)));
    put("last-stamp", stamp(last));
    put(
        "snapshots",
        RedisValue::Integer(zset::len(ctx, &snap)? as i64),
    );
    match &newest {
        Some(s) => {
            put(
                "snapshot-uuid",
                RedisValue::BulkString(member::decode_snap(&s.member)?.to_string()),
            );
            put("snapshot-covers", RedisValue::Integer(s.score));
        }
        None => {
            put("snapshot-uuid", RedisValue::Null);
            put("snapshot-covers", RedisValue::Null);
        }
    }
    put("fence", RedisValue::Integer(read_fence(ctx, cat)?));
    put("floor", stamp(read_int(ctx, &catalog::floor_key(cat))?));
    put(
        "retention-secs",
        RedisValue::Integer(super::compact::retention(ctx, cat)? as i64),
    );
    put(
        "slot",
        RedisValue::Integer(i64::from(cluster::catalog_slot(cat))),
    );
    Ok(RedisValue::OrderedMap(m))
}

/// `ZCOUNT idx (<after> +inf`: O(log n), however long the history.
fn count_after(ctx: &Context, idx: &str, after: i64) -> Result<i64, LakeError> {
    match ctx.call("ZCOUNT", &[idx, &format!("({after}"), "+inf"]) {
        Ok(RedisValue::Integer(n)) => Ok(n),
        Ok(other) => Err(LakeError::internal(format!("ZCOUNT returned {other:?}"))),
        Err(e) => Err(LakeError::internal(format!("ZCOUNT {idx} failed: {e}"))),
    }
}
