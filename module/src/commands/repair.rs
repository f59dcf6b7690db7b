//! `LAKE.REMOVE` and `LAKE.DROP`: the repairs, each moving the catalog's
//! fence so no snapshot built before them is committed afterwards.

use lake_shared::journal::Change;
use lake_shared::{catalog, member, path, LakeError};
use redis_module::{Context, RedisString, RedisValue};

use super::{arg_str, call_replicated, catalog_arg, value_string};
use crate::journal;
use crate::owner::{self, Op};

/// Most index entries `LAKE.REMOVE` looks through for a uuid when it is
/// not told the delta's field: a bound on the main thread's time (8 ms
/// measured here; 100,000 took 97 ms). Past it, the caller names the field,
/// and the removal is one lookup however long the history.
pub const MAX_REMOVE_SCAN: usize = 10_000;

/// `LAKE.REMOVE <catalog> <uuid> [FIELD <field>]`: removes one delta from
/// the index (the repair for a delta that breaks reads) and moves the fence,
/// so no snapshot built before the removal is committed afterwards.
/// Snapshots already committed keep what they absorbed. Replies 1 if
/// removed, 0 if not found.
pub fn remove(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    const USAGE: &str = "LAKE.REMOVE <catalog> <uuid> [FIELD <field>]";
    if args.len() != 3 && args.len() != 5 {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let cat = catalog_arg(&args, 1)?;
    let uuid = arg_str(&args[2], "uuid")?;
    catalog::validate_uuid(uuid)?;
    let field = match args.get(3) {
        Some(opt) if arg_str(opt, "option")?.eq_ignore_ascii_case("FIELD") => {
            let f = arg_str(&args[4], "FIELD")?;
            path::parse(f)?;
            Some(f)
        }
        Some(_) => return Err(LakeError::invalid(format!("syntax error: {USAGE}"))),
        None => None,
    };
    owner::check_command(ctx, cat, Op::Repair)?;
    let idx = catalog::index_key(cat);
    let found = match field {
        Some(f) => {
            let m = member::encode(f, uuid);
            match ctx.call("ZSCORE", &[idx.as_str(), m.as_str()]) {
                Ok(RedisValue::Null) => None,
                Ok(_) => Some(m),
                Err(e) => return Err(LakeError::invalid(format!("ZSCORE {idx} failed: {e}"))),
            }
        }
        None => find_member(ctx, &idx, uuid)?,
    };
    let Some(m) = found else {
        return Ok(RedisValue::Integer(0));
    };
    call_replicated(ctx, "INCR", &[&catalog::fence_key(cat)])?;
    call_replicated(ctx, "ZREM", &[&idx, &m])?;
    journal::record(ctx, cat, &Change::Remove { member: m });
    Ok(RedisValue::Integer(1))
}

/// The member of `idx` whose uuid is `uuid`, looking through at most
/// [`MAX_REMOVE_SCAN`] entries.
fn find_member(ctx: &Context, idx: &str, uuid: &str) -> Result<Option<String>, LakeError> {
    let pattern = format!("*:{uuid}");
    let mut cursor = "0".to_string();
    let mut looked = 0usize;
    loop {
        let v = ctx
            .call("ZSCAN", &[idx, &cursor, "MATCH", &pattern, "COUNT", "1000"])
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
                    return Ok(Some(m));
                }
            }
        }
        looked += 1000;
        if cursor == "0" {
            return Ok(None);
        }
        if looked >= MAX_REMOVE_SCAN {
            return Err(LakeError::invalid(format!(
                "the uuid is not among the first {MAX_REMOVE_SCAN} entries looked at, and more would hold Redis for too long: name the delta's field (LAKE.HISTORY shows it): LAKE.REMOVE <catalog> <uuid> FIELD <field>"
            )));
        }
    }
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
    journal::record(ctx, cat, &Change::Drop);
    Ok(RedisValue::Integer(n))
}
