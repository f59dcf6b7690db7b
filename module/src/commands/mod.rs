//! The LAKE.* command handlers, one file per family (`write`, `read`,
//! `repair`: REMOVE and DROP, `gc`, `history`, `info`, `compact`: COMPACT and
//! RETENTION), and here the helpers they share. Each validates on the main
//! thread, reads the index in the same command execution, hands the rest to
//! the channel client, and commits plus replies on the main thread when the
//! sidecar answers.
//!
//! Invariants (see DESIGN.md):
//! - Bad input is refused before anything is sent: nothing stored, nothing
//!   indexed. The one exception is the value's JSON, which the sidecar
//!   checks (parsing a large value here would stall Redis): an invalid value
//!   is refused there with `ERR`, before anything is stored.
//! - A delta is indexed only after the sidecar reported it stored; its stamp
//!   is allocated then, under the lock, above the newest delta and snapshot.
//! - Every ZADD is issued with replication, so replicas and the AOF see the
//!   exact score.
//! - A read takes the snapshot pointer and the deltas after it in one
//!   execution.
//! - Snapshots are never committed on a replica.

use lake_shared::proto::Response;
use lake_shared::{catalog, LakeError};
use redis_module::{
    raw, CallOptionsBuilder, CallResult, Context, ContextFlags, KeyType, RedisString, RedisValue,
};

use crate::zset;

mod changes;
pub(crate) mod compact;
pub(crate) mod gc;
mod history;
mod info;
mod mread;
mod read;
mod repair;
mod view;
mod write;

pub use changes::{changes, Fetch as ChangesFetch, Follower};
pub use compact::{compact, set_retention};
pub use gc::gc;
pub use history::history;
pub use info::info;
pub use mread::{key_positions as mread_keys, mread};
pub use read::{on_unsolicited, read};
pub use repair::{drop_catalog, remove};
pub use view::view;
pub use write::write;

pub(crate) fn arg_str<'a>(a: &'a RedisString, what: &str) -> Result<&'a str, LakeError> {
    a.try_as_str()
        .map_err(|_| LakeError::invalid(format!("{what} must be valid UTF-8")))
}

/// Lake keeps its index in database 0: background snapshots are committed
/// there, `LAKE.GC` counts references there, and Redis Cluster has no other.
/// A command from a client that `SELECT`ed another database is refused
/// rather than splitting a catalog across databases.
pub fn check_db(ctx: &Context) -> Result<(), LakeError> {
    let db = unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) };
    if db != 0 {
        return Err(LakeError::invalid(format!(
            "Lake keeps its index in database 0; this client selected database {db} (SELECT 0)"
        )));
    }
    Ok(())
}

/// The catalog name at `args[i]`, validated.
pub(crate) fn catalog_arg(args: &[RedisString], i: usize) -> Result<&str, LakeError> {
    let cat = arg_str(&args[i], "catalog")?;
    catalog::validate(cat)?;
    Ok(cat)
}

/// The stamp a catalog's document is at: its newest delta's, or its newest
/// snapshot's when compaction left no delta after it; 0 when empty. What
/// `LAKE.READ ... WITHSTAMP` answers and `LAKE.WRITE ... IFSTAMP` compares
/// (a snapshot commit covers an existing stamp, so it changes nothing).
pub(crate) fn newest_stamp(ctx: &Context, cat: &str) -> Result<i64, LakeError> {
    let delta = zset::last_score(ctx, &catalog::index_key(cat))?;
    let snap = zset::last_score(ctx, &catalog::snap_key(cat))?;
    Ok(delta.max(snap).unwrap_or(0))
}

/// A `COUNT` value: a whole number from 1 to `max` (a page is bounded so
/// one command never holds the main thread long).
pub(crate) fn parse_count(v: &str, max: usize) -> Result<usize, LakeError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            LakeError::invalid(format!(
                "COUNT needs a whole number from 1 to {max}, got '{v}'"
            ))
        })
}

pub(crate) fn check_can_block(ctx: &Context, cmd: &str) -> Result<(), LakeError> {
    let flags = ctx.get_flags();
    if flags.intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING) {
        return Err(LakeError::invalid(format!(
            "{cmd} cannot run inside MULTI/EXEC or a script: it waits for the sidecar"
        )));
    }
    Ok(())
}

pub(crate) fn unexpected(r: &Response) -> LakeError {
    LakeError::internal(format!("unexpected answer from the sidecar: {r:?}"))
}

pub(crate) fn zadd(ctx: &Context, key: &str, score: i64, member: &str) -> Result<(), LakeError> {
    zset::add_replicated(ctx, key, score, member)
}

pub(crate) fn read_fence(ctx: &Context, cat: &str) -> Result<i64, LakeError> {
    Ok(read_int(ctx, &catalog::fence_key(cat))?.unwrap_or(0))
}

/// An integer string key of a catalog (fence, floor, retention); `None`
/// when it does not exist. Read through the key API, not a `GET` through
/// `RM_Call` (a fake client per call: several microseconds of the main
/// thread on every read). `RM_StringDMA` turns an integer-encoded value
/// into plain text in place the first time; its bytes stay the same.
pub(crate) fn read_int(ctx: &Context, key: &str) -> Result<Option<i64>, LakeError> {
    let k = ctx.open_key(&ctx.create_string(key));
    match k.key_type() {
        KeyType::Empty => return Ok(None),
        KeyType::String => {}
        _ => {
            return Err(LakeError::data(format!(
                "key '{key}' holds something other than a string"
            )))
        }
    }
    let bytes = k
        .read()
        .map_err(|e| LakeError::invalid(format!("cannot read '{key}': {e}")))?
        .unwrap_or_default();
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| LakeError::data(format!("key '{key}' holds a non-integer")))
}

/// Runs a write command from the main thread with replication.
pub(crate) fn call_replicated(ctx: &Context, cmd: &str, args: &[&str]) -> Result<(), LakeError> {
    let opts = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let res: CallResult = ctx.call_ext(cmd, &opts, args);
    res.map(|_| ()).map_err(|e| {
        LakeError::internal(format!(
            "{cmd} failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ))
    })
}

pub(crate) fn value_string(v: RedisValue) -> Result<String, LakeError> {
    match v {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Ok(s),
        RedisValue::SimpleStringStatic(s) => Ok(s.to_string()),
        RedisValue::BulkRedisString(s) => Ok(s.to_string_lossy()),
        RedisValue::StringBuffer(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        RedisValue::Integer(i) => Ok(i.to_string()),
        RedisValue::Float(f) => Ok(f.to_string()),
        other => Err(LakeError::internal(format!(
            "unexpected reply item {other:?}"
        ))),
    }
}
