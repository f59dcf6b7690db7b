//! `LAKE.WRITE`: validate on the main thread, hand the value to the sidecar
//! as the request's tail, and index the delta (stamp allocated then, on the
//! main thread) once the sidecar says it is stored and the node may write.

use lake_shared::journal::Change;
use lake_shared::proto::{Put, Request, Response};
use lake_shared::{catalog, member, mode, path, stamp, LakeError};
use redis_module::{Context, ContextFlags, RedisString, RedisValue};

use super::{arg_str, catalog_arg, check_can_block, unexpected, zadd};
use crate::blocked::Blocked;
use crate::owner::{self, Op};
use crate::{config, journal, state, stats, zset};

/// `LAKE.WRITE <catalog> <field> <json> [MODE <mode>]` -> `[uuid, stamp]`.
pub fn write(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() != 4 && args.len() != 6 {
        return Err(LakeError::invalid(
            "wrong number of arguments: LAKE.WRITE <catalog> <field> <json> [MODE SET|INSERT|REPLACE|MERGE|<custom>]",
        ));
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
    let mode = if args.len() == 6 {
        if !arg_str(&args[4], "option")?.eq_ignore_ascii_case("MODE") {
            return Err(LakeError::invalid(
                "syntax error: expected MODE <mode> after the value",
            ));
        }
        mode::parse(arg_str(&args[5], "mode")?)?
    } else {
        "set".to_string()
    };
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
    let bc = Blocked::new(ctx)?;
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
                    let stamp = commit_delta(ctx, &cat, &member::encode(&field, &s.uuid))?;
                    stats::bump(&stats::WRITES);
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
