//! `LAKE.REMOVE` and `LAKE.DROP`: the repairs, each moving the catalog's
//! fence so no snapshot built before them is committed afterwards.

use lake_shared::{catalog, member, LakeError};
use redis_module::{Context, RedisString, RedisValue};

use super::{arg_str, call_replicated, catalog_arg, value_string};
use crate::owner::{self, Op};

/// `LAKE.REMOVE <catalog> <uuid>`: removes one delta from the index (the
/// repair for a delta that breaks reads) and moves the fence, so no snapshot
/// built before the removal is committed afterwards. Snapshots already
/// committed keep what they absorbed. Replies 1 if removed, 0 if not found.
pub fn remove(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() != 3 {
        return Err(LakeError::invalid(
            "wrong number of arguments: LAKE.REMOVE <catalog> <uuid>",
        ));
    }
    let cat = catalog_arg(&args, 1)?;
    let uuid = arg_str(&args[2], "uuid")?;
    catalog::validate_uuid(uuid)?;
    owner::check_command(ctx, cat, Op::Repair)?;
    let idx = catalog::index_key(cat);
    let pattern = format!("*:{uuid}");
    let mut cursor = "0".to_string();
    let mut found = None;
    loop {
        let v = ctx
            .call(
                "ZSCAN",
                &[idx.as_str(), &cursor, "MATCH", &pattern, "COUNT", "1000"],
            )
            .map_err(|e| LakeError::invalid(format!("ZSCAN {idx} failed: {e}")))?;
        let RedisValue::Array(mut parts) = v else {
            return Err(LakeError::internal("ZSCAN returned no array"));
        };
        if parts.len() != 2 {
            return Err(LakeError::internal("ZSCAN returned an unexpected shape"));
        }
        let items = parts.pop().unwrap_or(RedisValue::Null);
        cursor = value_string(parts.pop().unwrap_or(RedisValue::Null))?;
        if let RedisValue::Array(items) = items {
            for pair in items.chunks(2) {
                let m = value_string(pair[0].clone())?;
                if member::decode(&m).is_ok_and(|(_, u)| u == uuid) {
                    found = Some(m);
                }
            }
        }
        if found.is_some() || cursor == "0" {
            break;
        }
    }
    let Some(m) = found else {
        return Ok(RedisValue::Integer(0));
    };
    call_replicated(ctx, "INCR", &[&catalog::fence_key(cat)])?;
    call_replicated(ctx, "ZREM", &[&idx, &m])?;
    Ok(RedisValue::Integer(1))
}

/// `LAKE.DROP <catalog>`: removes the catalog's index keys (its objects are
/// left to GC) and moves the fence. Replies the number of deltas dropped.
pub fn drop_catalog(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() != 2 {
        return Err(LakeError::invalid(
            "wrong number of arguments: LAKE.DROP <catalog>",
        ));
    }
    let cat = catalog_arg(&args, 1)?;
    owner::check_command(ctx, cat, Op::Repair)?;
    let idx = catalog::index_key(cat);
    let n = match ctx.call("ZCARD", &[idx.as_str()]) {
        Ok(RedisValue::Integer(n)) => n,
        Ok(_) => 0,
        Err(e) => return Err(LakeError::invalid(format!("ZCARD {idx} failed: {e}"))),
    };
    call_replicated(ctx, "INCR", &[&catalog::fence_key(cat)])?;
    call_replicated(
        ctx,
        "DEL",
        &[
            &idx,
            &catalog::snap_key(cat),
            &catalog::floor_key(cat),
            &catalog::retention_key(cat),
        ],
    )?;
    Ok(RedisValue::Integer(n))
}
