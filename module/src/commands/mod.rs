//! The LAKE.* command handlers: validate on the main thread, read the index
//! in the same command execution, hand the rest to the channel client, and
//! commit (ZADD) plus reply under the Redis lock when the sidecar answers.
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

use lake_shared::proto::{DeltaRef, Gc, Put, Read, Request, Response, SnapRef, SnapshotPolicy};
use lake_shared::{catalog, cluster, member, mode, path, stamp, LakeError};
use redis_module::{
    raw, CallOptionsBuilder, CallResult, Context, ContextFlags, RedisString, RedisValue,
};
use serde_json::value::RawValue;

use crate::blocked::Blocked;
use crate::owner::{self, Op};
use crate::{config, state, stats, zset};

pub(crate) mod compact;
mod history;
mod info;

pub use compact::{compact, set_retention};
pub use history::history;
pub use info::info;

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

fn check_can_block(ctx: &Context, cmd: &str) -> Result<(), LakeError> {
    let flags = ctx.get_flags();
    if flags.intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING) {
        return Err(LakeError::invalid(format!(
            "{cmd} cannot run inside MULTI/EXEC or a script: it waits for the sidecar"
        )));
    }
    Ok(())
}

/// `LAKE.WRITE <catalog> <field> <json> [MODE <mode>]` -> `[uuid, stamp]`.
pub fn write(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() != 4 && args.len() != 6 {
        return Err(LakeError::invalid(
            "wrong number of arguments: LAKE.WRITE <catalog> <field> <json> [MODE SET|INSERT|REPLACE|MERGE|<custom>]",
        ));
    }
    let cat = catalog_arg(&args, 1)?;
    let field = arg_str(&args[2], "field")?;
    path::parse(field)?;
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

    let uuid = uuid::Uuid::new_v4().to_string();
    let req = Request::Put(Put {
        catalog: cat.to_string(),
        uuid: uuid.clone(),
        field: field.to_string(),
        mode,
        value: Vec::new(),
    });
    let (cat, member) = (cat.to_string(), member::encode(field, &uuid));
    let bc = Blocked::new(ctx)?;
    // The value goes as the frame's tail: one copy, no parse here (the
    // sidecar checks it is JSON and answers ERR if not).
    client.submit_with_tail(
        &req,
        args[3].as_slice(),
        Box::new(move |res| match res {
            Ok(Response::Stored(_)) => bc.commit(Box::new(move |ctx| {
                check_shared_store(ctx)?;
                owner::check_delta_commit(ctx, &cat, access)?;
                let stamp = commit_delta(ctx, &cat, &member)?;
                stats::bump(&stats::WRITES);
                Ok(RedisValue::Array(vec![
                    RedisValue::BulkString(uuid),
                    RedisValue::Integer(stamp),
                ]))
            })),
            Ok(Response::Error(e)) | Err(e) => bc.finish(Box::new(move |_| Err(e))),
            Ok(other) => bc.finish(Box::new(move |_| Err(unexpected(&other)))),
        }),
    );
    Ok(RedisValue::NoReply)
}

/// `LAKE.READ <catalog> [PATH <field>] [AT <stamp>] [SNAP|NOSNAP]`.
pub fn read(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    const USAGE: &str = "LAKE.READ <catalog> [PATH <field>] [AT <stamp>] [SNAP|NOSNAP]";
    if args.len() < 2 {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let cat = catalog_arg(&args, 1)?;
    let (mut read_path, mut at, mut snap) = (None, None, None);
    let mut i = 2;
    while i < args.len() {
        let opt = arg_str(&args[i], "option")?.to_ascii_uppercase();
        let next = || {
            args.get(i + 1).ok_or_else(|| {
                LakeError::invalid(format!("syntax error: {opt} needs a value ({USAGE})"))
            })
        };
        match opt.as_str() {
            "PATH" => {
                let f = arg_str(next()?, "PATH")?;
                path::parse(f)?;
                read_path = Some(f.to_string());
                i += 2;
            }
            "AT" => {
                let s = arg_str(next()?, "AT")?;
                at = Some(s.parse::<i64>().map_err(|_| {
                    LakeError::invalid(format!("AT needs an integer stamp, got '{s}'"))
                })?);
                i += 2;
            }
            "SNAP" | "NOSNAP" => {
                snap = Some(opt == "SNAP");
                i += 1;
            }
            _ => {
                return Err(LakeError::invalid(format!(
                    "syntax error near '{opt}': {USAGE}"
                )))
            }
        }
    }
    check_can_block(ctx, "LAKE.READ")?;
    owner::check_command(ctx, cat, Op::Read)?;

    // One execution: newest snapshot at or below AT, then the deltas after it.
    if let (Some(at), Some(floor)) = (at, read_int(ctx, &catalog::floor_key(cat))?) {
        if at < floor {
            return Err(LakeError::invalid(format!(
                "catalog '{cat}': history before {floor} was compacted (AT {at})"
            )));
        }
    }
    let max = at.map_or(f64::INFINITY, |s| s as f64);
    let base = match zset::last_at_or_below(ctx, &catalog::snap_key(cat), max)? {
        Some(e) => Some(SnapRef {
            uuid: member::decode_snap(&e.member)?.to_string(),
            covers: e.score,
        }),
        None => None,
    };
    let rows = zset::after(
        ctx,
        &catalog::index_key(cat),
        base.as_ref().map(|b| b.covers),
        max,
    )?;
    let mut deltas = Vec::with_capacity(rows.len());
    for e in &rows {
        let (field, uuid) = member::decode(&e.member)?;
        deltas.push(DeltaRef {
            uuid: uuid.to_string(),
            field: field.to_string(),
            stamp: e.score,
        });
    }
    if base.is_none() && deltas.is_empty() {
        return Ok(RedisValue::Null);
    }

    let fence = read_fence(ctx, cat)?;
    let every = config::snapshot_every();
    let on_replica = ctx.get_flags().contains(ContextFlags::SLAVE);
    let policy = match snap {
        _ if on_replica => SnapshotPolicy::Never,
        Some(true) => SnapshotPolicy::Now,
        Some(false) => SnapshotPolicy::Never,
        None if every > 0 && deltas.len() >= every => SnapshotPolicy::Background,
        None => SnapshotPolicy::Never,
    };
    let client = state::client()?;
    client.check_room()?;
    let req = Request::Read(Read {
        catalog: cat.to_string(),
        path: read_path,
        base,
        deltas,
        snapshot: policy,
        fence,
    });
    let cat = cat.to_string();
    let bc = Blocked::new(ctx)?;
    client.submit(
        &req,
        Box::new(move |res| {
            // A plain answer is replied from here, off the main thread; a
            // snapshot to commit (SNAP) or an error goes to the main thread.
            let out = match res {
                Ok(Response::Doc(doc)) if doc.snapshot.is_none() => {
                    stats::bump(&stats::READS);
                    return bc.reply_here(doc.json.as_deref().map(RawValue::get));
                }
                Ok(Response::Doc(doc)) => Ok((doc.snapshot, doc.json.map(|j| j.get().to_string()))),
                Ok(Response::Error(e)) => Err(e),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e),
            };
            match out {
                Ok((snapshot, text)) => bc.commit(Box::new(move |ctx| {
                    if let Some(s) = &snapshot {
                        commit_snapshot(ctx, &cat, s, fence)?;
                    }
                    stats::bump(&stats::READS);
                    Ok(text.map_or(RedisValue::Null, RedisValue::BulkString))
                })),
                Err(e) => bc.finish(Box::new(move |_| Err(e))),
            }
        }),
    );
    Ok(RedisValue::NoReply)
}

/// Commits a background snapshot the sidecar announced. Lock held.
pub fn on_unsolicited(ctx: &Context, resp: Response) {
    if let Response::SnapshotStored(s) = resp {
        if let Err(e) = commit_snapshot(ctx, &s.catalog, &s.snap, s.fence) {
            ctx.log_warning(&format!("lake: snapshot commit failed: {}", e.message));
        }
    }
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

fn unexpected(r: &Response) -> LakeError {
    LakeError::internal(format!("unexpected answer from the sidecar: {r:?}"))
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
    Ok(stamp)
}

/// Indexes a stored snapshot, except where [`owner::may_commit_snapshot`]
/// says no (a pause, a replica, a slot not served or moving) or when a
/// removal happened since the read it was built from (the fence moved): such
/// a snapshot may hold a removed delta and is left to GC. Caller holds the
/// lock.
fn commit_snapshot(ctx: &Context, cat: &str, snap: &SnapRef, fence: i64) -> Result<(), LakeError> {
    if !owner::may_commit_snapshot(ctx, cat) {
        return Ok(());
    }
    if read_int(ctx, &catalog::floor_key(cat))?.is_some_and(|f| snap.covers < f) {
        ctx.log_notice(&format!(
            "lake: catalog '{cat}': snapshot {} not committed: it is older than the compacted history",
            snap.uuid
        ));
        return Ok(());
    }
    if read_fence(ctx, cat)? != fence {
        ctx.log_notice(&format!(
            "lake: catalog '{cat}': snapshot {} not committed: a delta was removed since it was built",
            snap.uuid
        ));
        return Ok(());
    }
    zadd(
        ctx,
        &catalog::snap_key(cat),
        snap.covers,
        &member::encode_snap(&snap.uuid),
    )?;
    stats::bump(&stats::SNAPSHOT_COMMITS);
    Ok(())
}

fn zadd(ctx: &Context, key: &str, score: i64, member: &str) -> Result<(), LakeError> {
    zset::add_replicated(ctx, key, score, member)
}

pub(crate) fn read_fence(ctx: &Context, cat: &str) -> Result<i64, LakeError> {
    Ok(read_int(ctx, &catalog::fence_key(cat))?.unwrap_or(0))
}

/// An integer string key of a catalog (fence, floor, retention); `None`
/// when it does not exist.
pub(crate) fn read_int(ctx: &Context, key: &str) -> Result<Option<i64>, LakeError> {
    match ctx.call("GET", &[key]) {
        Ok(RedisValue::Null) => Ok(None),
        Ok(v) => value_string(v)?
            .parse()
            .map(Some)
            .map_err(|_| LakeError::data(format!("key '{key}' holds a non-integer"))),
        Err(e) => Err(LakeError::invalid(format!("cannot read '{key}': {e}"))),
    }
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

/// `LAKE.GC [DRYRUN] [GRACE <seconds>]`: deletes objects that no index entry
/// references and that are older than the grace period, and replies
/// `[scanned, referenced, young, orphans, deleted]`.
///
/// The referenced set is read from every `catalog:{*}` key in this command
/// execution (a SCAN on the main thread: an admin command whose cost grows
/// with the index). The grace period is never below twice `timeout-ms`, so a
/// write still waiting for its commit cannot lose its object. Runs on
/// primaries only; in Redis Cluster it considers only catalogs whose slot
/// this node serves and is not migrating ([`owner::gc_slots`]): the store
/// is shared by every shard.
pub fn gc(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    const USAGE: &str = "LAKE.GC [DRYRUN] [GRACE <seconds>]";
    let (mut dry_run, mut grace) = (false, config::gc_grace_secs());
    let mut i = 1;
    while i < args.len() {
        match arg_str(&args[i], "option")?.to_ascii_uppercase().as_str() {
            "DRYRUN" => {
                dry_run = true;
                i += 1;
            }
            "GRACE" => {
                let v = args.get(i + 1).ok_or_else(|| {
                    LakeError::invalid(format!("syntax error: GRACE needs seconds ({USAGE})"))
                })?;
                let v = arg_str(v, "GRACE")?;
                grace = v.parse().map_err(|_| {
                    LakeError::invalid(format!("GRACE needs whole seconds, got '{v}'"))
                })?;
                i += 2;
            }
            other => {
                return Err(LakeError::invalid(format!(
                    "syntax error near '{other}': {USAGE}"
                )))
            }
        }
    }
    let floor = (config::timeout().as_secs() * 2).max(1);
    let grace = grace.max(floor);
    check_can_block(ctx, "LAKE.GC")?;
    let client = state::client()?;
    client.check_room()?;

    let slots = owner::gc_slots(ctx)?;
    let mut referenced = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let v = ctx
            .call(
                "SCAN",
                &[
                    cursor.as_str(),
                    "MATCH",
                    "catalog:{*",
                    "COUNT",
                    "1000",
                    "TYPE",
                    "zset",
                ],
            )
            .map_err(|e| LakeError::internal(format!("SCAN failed: {e}")))?;
        let RedisValue::Array(mut parts) = v else {
            return Err(LakeError::internal("SCAN returned no array"));
        };
        let keys = parts.pop().unwrap_or(RedisValue::Null);
        cursor = value_string(parts.pop().unwrap_or(RedisValue::Null))?;
        if let RedisValue::Array(keys) = keys {
            for k in keys {
                let key = value_string(k)?;
                let Some(inner) = key.strip_prefix("catalog:{") else {
                    continue;
                };
                let (cat, snap) = match inner.strip_suffix("}:snap") {
                    Some(c) => (c, true),
                    None => match inner.strip_suffix('}') {
                        Some(c) => (c, false),
                        None => continue,
                    },
                };
                if catalog::validate(cat).is_err() {
                    continue;
                }
                // A key left in a slot this node does not serve (or is
                // moving) belongs to no catalog it may collect.
                if slots
                    .as_ref()
                    .is_some_and(|s| !s.contains(cluster::catalog_slot(cat)))
                {
                    continue;
                }
                for e in zset::after(ctx, &key, None, f64::INFINITY)? {
                    if snap {
                        if let Ok(u) = member::decode_snap(&e.member) {
                            referenced.push(catalog::snapshot_object(cat, u));
                        }
                    } else if let Ok((_, u)) = member::decode(&e.member) {
                        referenced.push(catalog::delta_object(cat, u));
                    }
                }
            }
        }
        if cursor == "0" {
            break;
        }
    }

    let req = Request::Gc(Gc {
        referenced,
        grace_secs: grace,
        dry_run,
        slots: slots.map(|s| s.ranges()),
    });
    let bc = Blocked::new(ctx)?;
    client.submit(
        &req,
        Box::new(move |res| {
            bc.finish(Box::new(move |_| match res? {
                Response::GcDone(r) => Ok(RedisValue::Array(
                    [r.scanned, r.referenced, r.young, r.orphans, r.deleted]
                        .into_iter()
                        .map(|n| RedisValue::Integer(n as i64))
                        .collect(),
                )),
                Response::Error(e) => Err(e),
                other => Err(unexpected(&other)),
            }))
        }),
    );
    Ok(RedisValue::NoReply)
}

fn value_string(v: RedisValue) -> Result<String, LakeError> {
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
