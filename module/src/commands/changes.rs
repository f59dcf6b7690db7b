//! `LAKE.CHANGES <catalog> SINCE <stamp|$> [COUNT <n>] [BLOCK <ms>]`: the
//! deltas committed after a stamp, oldest first, each `[stamp, field,
//! uuid]`; with `BLOCK`, waits (as `XREAD BLOCK` does) until there is one.
//!
//! Invariants:
//! - Stamps of one catalog only grow (each commit allocates one above the
//!   newest, on the main thread; replicas and a slot's new owner hold the
//!   same stamps), so a follower that resumes from the last stamp it saw,
//!   on any node that serves the catalog, misses nothing and sees nothing
//!   twice. A removed delta (`LAKE.REMOVE`) leaves the feed.
//! - A `SINCE` below the catalog's compaction floor is refused (`ERR`,
//!   naming the floor): deltas after it may be gone, and a follower must
//!   read the document (`LAKE.READ ... WITHSTAMP`) and follow from its
//!   stamp instead of silently skipping.
//! - A blocked follower waits on the index key through Redis's own
//!   blocking on keys: every `ZADD` to an index key, on a primary or
//!   replayed on a replica, signals it ([`crate::entry::on_zset_event`]);
//!   Redis handles its timeout, disconnection, failover (`UNBLOCKED`) and
//!   slot moves (`MOVED`). No polling, no thread.

use lake_shared::stamp::Bound;
use lake_shared::{catalog, member, LakeError};
use redis_module::{Context, ContextFlags, RedisString, RedisValue};

use super::{arg_str, catalog_arg, newest_stamp, parse_count, read_int};
use crate::owner::{self, Op};
use crate::zset;

/// Entries per answer when `COUNT` is not given.
pub const DEFAULT_COUNT: usize = 100;
/// Largest `COUNT` accepted: one answer never holds the main thread long.
pub const MAX_COUNT: usize = 10_000;

const USAGE: &str = "LAKE.CHANGES <catalog> SINCE <stamp|$> [COUNT <n>] [BLOCK <ms>]";

/// One follower's question, resolved (`$` is the newest stamp when asked).
#[derive(Debug, Clone)]
pub struct Query {
    pub catalog: String,
    pub since: i64,
    pub count: usize,
}

/// `LAKE.CHANGES`: the page after `SINCE`; with `BLOCK`, an empty page
/// blocks the client ([`crate::entry::block_on_changes`]) unless it cannot
/// block (MULTI, a script), where it answers at once as `XREAD` does.
pub fn changes(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() < 4 {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let cat = catalog_arg(&args, 1)?;
    let (mut since, mut count, mut block) = (None, DEFAULT_COUNT, None);
    let mut i = 2;
    while i < args.len() {
        let opt = arg_str(&args[i], "option")?.to_ascii_uppercase();
        let v = args
            .get(i + 1)
            .ok_or_else(|| {
                LakeError::invalid(format!("syntax error: {opt} needs a value ({USAGE})"))
            })
            .and_then(|v| arg_str(v, &opt))?;
        match opt.as_str() {
            "SINCE" if since.is_none() => since = Some(v),
            "COUNT" => count = parse_count(v, MAX_COUNT)?,
            "BLOCK" => {
                block = Some(v.parse::<u32>().map_err(|_| {
                    LakeError::invalid(format!(
                        "BLOCK needs milliseconds (0 waits for ever), got '{v}'"
                    ))
                })?);
            }
            _ => {
                return Err(LakeError::invalid(format!(
                    "syntax error near '{opt}': {USAGE}"
                )))
            }
        }
        i += 2;
    }
    let since = since.ok_or_else(|| LakeError::invalid(format!("SINCE is required: {USAGE}")))?;
    owner::check_command(ctx, cat, Op::Read)?;
    let since = if since == "$" {
        newest_stamp(ctx, cat)?
    } else {
        since
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                LakeError::invalid(format!(
                "SINCE needs a stamp (an integer >= 0, 0 for the whole history) or $, got '{since}'"
            ))
            })?
    };
    let q = Query {
        catalog: cat.to_string(),
        since,
        count,
    };
    let entries = page(ctx, &q)?;
    let can_block = !ctx
        .get_flags()
        .intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING);
    match block {
        Some(ms) if entries.is_empty() && can_block => {
            crate::entry::block_on_changes(ctx, q, ms)?;
            Ok(RedisValue::NoReply)
        }
        _ => Ok(RedisValue::Array(entries)),
    }
}

/// The deltas of `q.catalog` after `q.since`, at most `q.count`, oldest
/// first; refused when `since` is below the compaction floor.
pub fn page(ctx: &Context, q: &Query) -> Result<Vec<RedisValue>, LakeError> {
    let cat = &q.catalog;
    if let Some(floor) = read_int(ctx, &catalog::floor_key(cat))? {
        if q.since < floor {
            return Err(LakeError::invalid(format!(
                "catalog '{cat}': history before {floor} was compacted (SINCE {}); read the document with LAKE.READ ... WITHSTAMP and follow from its stamp",
                q.since
            )));
        }
    }
    let lo = Bound {
        score: q.since as f64,
        exclusive: true,
    };
    let mut out = Vec::new();
    for e in zset::page(
        ctx,
        &catalog::index_key(cat),
        lo,
        Bound::HIGHEST,
        false,
        q.count,
    )? {
        let (field, uuid) = member::decode(&e.member)?;
        out.push(RedisValue::Array(vec![
            RedisValue::Integer(e.score),
            RedisValue::BulkString(field.to_string()),
            RedisValue::BulkString(uuid.to_string()),
        ]));
    }
    Ok(out)
}
