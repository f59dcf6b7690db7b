//! `LAKE.WRITE`: validate on the main thread, hand the value to the sidecar
//! as the request's tail, and index the delta (stamp allocated then, on the
//! main thread) once the sidecar says it is stored and the node may write.

use lake_shared::journal::Change;
use lake_shared::proto::{Put, Request, Response};
use lake_shared::{catalog, member, mode, path, stamp, LakeError};
use redis_module::{Context, ContextFlags, RedisString, RedisValue};

use super::{arg_str, catalog_arg, check_can_block, newest_stamp, unexpected, zadd};
use crate::blocked::Blocked;
use crate::owner::{self, Op};
use crate::{config, journal, reply_cache, state, stats, zset};

const USAGE: &str =
    "LAKE.WRITE <catalog> <field> <json> [MODE SET|INSERT|REPLACE|MERGE|<custom>] [IFSTAMP <stamp>]";

/// `LAKE.WRITE <catalog> <field> <json> [MODE <mode>] [IFSTAMP <stamp>]`
/// -> `[uuid, stamp]`. With `IFSTAMP`, the delta is indexed only if the
/// catalog's newest stamp ([`newest_stamp`]) is still `<stamp>` when it
/// commits (checked in the same main-thread step as the `ZADD`, so of two
/// racing writers naming one stamp at most one wins); else `CONFLICT`.
pub fn write(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() < 4 || !args.len().is_multiple_of(2) {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let cat = catalog_arg(&args, 1)?;
    let field = arg_str(&args[2], "field")?;
    path::check_write_depth(path::parse(field)?.len(), 0)?;
    let value_len = args[3].as_slice().len();
    let max_value = config::max_value_bytes();
    if value_len > max_value {
        return Err(LakeError::invalid(format!(
            "value of {value_len} bytes exceeds max-value-bytes ({})",
            max_value
        )));
    }
    let (mut mode, mut if_stamp) = (None, None);
    for pair in args[4..].chunks(2) {
        let opt = arg_str(&pair[0], "option")?.to_ascii_uppercase();
        match opt.as_str() {
            "MODE" if mode.is_none() => mode = Some(mode::parse(arg_str(&pair[1], "mode")?)?),
            "IFSTAMP" if if_stamp.is_none() => {
                let s = arg_str(&pair[1], "IFSTAMP")?;
                if_stamp = Some(s.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
                    LakeError::invalid(format!(
                        "IFSTAMP needs a stamp (an integer >= 0; 0 for an empty catalog), got '{s}'"
                    ))
                })?);
            }
            _ => {
                return Err(LakeError::invalid(format!(
                    "syntax error near '{opt}' (each option at most once): {USAGE}"
                )))
            }
        }
    }
    let mode = mode.unwrap_or_else(|| "set".to_string());
    // Kept for reads folded on the main thread (reply_cache.rs), once indexed.
    let body = reply_cache::Body::of(cat, args[3].as_slice(), &mode);
    if let Some(expected) = if_stamp {
        // Fail fast: no object stored for a write that cannot win.
        check_stamp(ctx, cat, expected)?;
    }
    check_can_block(ctx, "LAKE.WRITE")?;
    let access = owner::check_command(ctx, cat, Op::Write)?;
    let client = state::client()?;
    client.check_room()?;

    let req = Request::Put(Put {
        catalog: cat.to_string(),
        uuid: uuid::Uuid::new_v4().to_string(),
        field: field.to_string(),
        mode,
        value: Vec::new(),
    });
    let (cat, field) = (cat.to_string(), field.to_string());
    let bc = Blocked::new(ctx, c"lake-write")?;
    // The value goes as the frame's tail: one copy, no parse here (the
    // sidecar checks it is JSON and answers ERR if not).
    client.submit_with_tail(
        &req,
        args[3].as_slice(),
        Box::new(move |res| match res {
            // The sidecar says which uuid the body is stored under (its own
            // when it batched the write into a segment): that one is indexed.
            Ok(Response::Stored(s)) => match catalog::validate_uuid(&s.uuid) {
                Ok(()) => bc.commit(Box::new(move |ctx| {
                    check_shared_store(ctx)?;
                    owner::check_delta_commit(ctx, &cat, access)?;
                    if let Some(expected) = if_stamp {
                        check_stamp(ctx, &cat, expected)?;
                    }
                    let stamp = commit_delta(ctx, &cat, &member::encode(&field, &s.uuid))?;
                    stats::bump(&stats::WRITES);
                    if let Some(mut body) = body {
                        body.uuid.clone_from(&s.uuid);
                        reply_cache::put_body(&cat, body);
                    }
                    Ok(RedisValue::Array(vec![
                        RedisValue::BulkString(s.uuid),
                        RedisValue::Integer(stamp),
                    ]))
                })),
                Err(_) => bc.finish(Box::new(move |_| {
                    Err(LakeError::internal(format!(
                        "the sidecar stored the write under '{}', which is not a uuid; nothing was indexed",
                        s.uuid
                    )))
                })),
            },
            Ok(Response::Error(e)) | Err(e) => bc.finish(Box::new(move |_| Err(e))),
            Ok(other) => bc.finish(Box::new(move |_| Err(unexpected(&other)))),
        }),
    );
    Ok(RedisValue::NoReply)
}

/// `CONFLICT` unless `cat`'s newest stamp is `expected`. Lock held.
fn check_stamp(ctx: &Context, cat: &str, expected: i64) -> Result<(), LakeError> {
    let current = newest_stamp(ctx, cat)?;
    if current != expected {
        return Err(LakeError::conflict(cat, current, expected));
    }
    Ok(())
}

/// In a cluster every node must read what any other wrote: a sidecar on
/// `local://` (one machine's disk) is refused loudly, at commit time, when
/// the handshake has told what the store is.
fn check_shared_store(ctx: &Context) -> Result<(), LakeError> {
    if state::client()?.local_store() && ctx.get_flags().contains(ContextFlags::CLUSTER) {
        return Err(LakeError::invalid(
            "this node is in a Redis Cluster but its sidecar stores objects in local:// (one machine's disk, which no other node can read): run every sidecar on s3:// or on a file:// directory they all share; the write was not indexed",
        ));
    }
    Ok(())
}

/// Allocates the stamp and indexes the delta. Caller holds the Redis lock.
fn commit_delta(ctx: &Context, cat: &str, member: &str) -> Result<i64, LakeError> {
    let idx = catalog::index_key(cat);
    let newest_delta = zset::last_score(ctx, &idx)?;
    let newest_snap = zset::last_score(ctx, &catalog::snap_key(cat))?;
    let stamp = stamp::next(stamp::now_us(), newest_delta, newest_snap);
    if stamp > stamp::MAX_EXACT {
        return Err(LakeError::internal(format!(
            "catalog '{cat}': stamp {stamp} is beyond 2^53"
        )));
    }
    zadd(ctx, &idx, stamp, member)?;
    journal::record(
        ctx,
        cat,
        &Change::Delta {
            member: member.to_string(),
            stamp,
        },
    );
    Ok(stamp)
}
