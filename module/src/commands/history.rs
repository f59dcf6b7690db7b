//! `LAKE.HISTORY <catalog> [FROM <bound>] [TO <bound>] [COUNT <n>] [REV]
//! [SNAPSHOTS]`: a page of a catalog's index, oldest first (newest first with
//! `REV`), read on the main thread in O(log n + COUNT).
//!
//! Bounds are written as `XRANGE` writes them: a stamp, `-` / `+` for the
//! ends, `(` before a stamp to exclude it; the next page starts at
//! `(<last stamp>`. Each entry is `[stamp, "delta", uuid, field]`, or with
//! `SNAPSHOTS` also `[stamp, "snapshot", uuid, nil]` for a snapshot covering
//! up to `stamp` (listed after the delta it covers). `COUNT` defaults to
//! [`DEFAULT_COUNT`] and is capped at [`MAX_COUNT`], so one call never holds
//! Redis's main thread for long.

use lake_shared::stamp::Bound;
use lake_shared::{catalog, member, LakeError};
use redis_module::{Context, RedisString, RedisValue};

use super::{arg_str, catalog_arg, parse_count};
use crate::owner::{self, Op};
use crate::zset;

/// Entries per page when `COUNT` is not given.
pub const DEFAULT_COUNT: usize = 100;
/// Largest `COUNT` accepted.
pub const MAX_COUNT: usize = 10_000;

const USAGE: &str =
    "LAKE.HISTORY <catalog> [FROM <stamp|-|(stamp>] [TO <stamp|+|(stamp>] [COUNT <n>] [REV] [SNAPSHOTS]";

pub fn history(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() < 2 {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let cat = catalog_arg(&args, 1)?;
    let (mut lo, mut hi, mut count) = (Bound::LOWEST, Bound::HIGHEST, DEFAULT_COUNT);
    let (mut rev, mut snaps) = (false, false);
    let mut i = 2;
    while i < args.len() {
        let opt = arg_str(&args[i], "option")?.to_ascii_uppercase();
        let value = || -> Result<&str, LakeError> {
            let v = args.get(i + 1).ok_or_else(|| {
                LakeError::invalid(format!("syntax error: {opt} needs a value ({USAGE})"))
            })?;
            arg_str(v, &opt)
        };
        match opt.as_str() {
            "FROM" => lo = Bound::parse(value()?, "FROM")?,
            "TO" => hi = Bound::parse(value()?, "TO")?,
            "COUNT" => count = parse_count(value()?, MAX_COUNT)?,
            "REV" | "SNAPSHOTS" => {
                rev |= opt == "REV";
                snaps |= opt == "SNAPSHOTS";
                i += 1;
                continue;
            }
            _ => {
                return Err(LakeError::invalid(format!(
                    "syntax error near '{opt}': {USAGE}"
                )))
            }
        }
        i += 2;
    }
    owner::check_command(ctx, cat, Op::Read)?;

    let mut entries: Vec<(i64, u8, RedisValue)> = Vec::new();
    for e in zset::page(ctx, &catalog::index_key(cat), lo, hi, rev, count)? {
        let (field, uuid) = member::decode(&e.member)?;
        entries.push((e.score, 0, entry(e.score, "delta", uuid, Some(field))));
    }
    if snaps {
        for e in zset::page(ctx, &catalog::snap_key(cat), lo, hi, rev, count)? {
            let uuid = member::decode_snap(&e.member)?;
            entries.push((e.score, 1, entry(e.score, "snapshot", uuid, None)));
        }
        // Stamp order; a snapshot after the delta it covers.
        entries.sort_by_key(|(stamp, kind, _)| (*stamp, *kind));
        if rev {
            entries.reverse();
        }
        entries.truncate(count);
    }
    Ok(RedisValue::Array(
        entries.into_iter().map(|(_, _, v)| v).collect(),
    ))
}

fn entry(stamp: i64, kind: &str, uuid: &str, field: Option<&str>) -> RedisValue {
    RedisValue::Array(vec![
        RedisValue::Integer(stamp),
        RedisValue::SimpleString(kind.to_string()),
        RedisValue::BulkString(uuid.to_string()),
        field.map_or(RedisValue::Null, |f| RedisValue::BulkString(f.to_string())),
    ])
}
