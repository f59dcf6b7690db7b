//! `LAKE.READ`: the snapshot pointer and the deltas after it, read in one
//! command execution; the merge happens in the sidecar, or here when the
//! reply cache holds the last answer and the bodies written since
//! (reply_cache.rs); a snapshot the sidecar built is committed only where
//! and when the rules allow.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lake_shared::journal::Change;
use lake_shared::native::{self, TextDelta};
use lake_shared::proto::{DeltaRef, Read, Request, Response, SnapRef, SnapshotPolicy};
use lake_shared::{catalog, member, path, LakeError};
use redis_module::{Context, ContextFlags, RedisString, RedisValue};
use serde_json::value::RawValue;

use super::{arg_str, catalog_arg, check_can_block, read_fence, read_int, unexpected, zadd};
use crate::blocked::Blocked;
use crate::owner::{self, Op};
use crate::reply_cache::{Kept, Now, Shape};
use crate::{config, journal, reply, reply_cache, state, stats, zset};

/// `LAKE.READ <catalog> [PATH <field>] [AT <stamp>] [SNAP|NOSNAP]
/// [WITHSTAMP]`: the document (or the value at the path), nil when the
/// catalog is empty; with `WITHSTAMP`, `[document, stamp]`, the stamp being
/// the one the document reflects (what `LAKE.WRITE ... IFSTAMP` compares;
/// 0 for an empty catalog).
pub fn read(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    const USAGE: &str = "LAKE.READ <catalog> [PATH <field>] [AT <stamp>] [SNAP|NOSNAP] [WITHSTAMP]";
    if args.len() < 2 {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let cat = catalog_arg(&args, 1)?;
    let (mut read_path, mut at, mut snap) = (None, None, None);
    let mut with_stamp = false;
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
            "WITHSTAMP" => {
                with_stamp = true;
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
    if at.is_none() && snap != Some(true) {
        if let Some(reply) = answer_kept(ctx, cat, read_path.as_deref(), snap, with_stamp)? {
            return Ok(reply);
        }
    }

    let plan = plan(ctx, cat, read_path, at, snap)?;
    let with_stamp = with_stamp.then_some(plan.stamp);
    let Some(req) = plan.read else {
        return Ok(stamped(RedisValue::Null, with_stamp));
    };
    let fence = req.fence;
    // Hot reads: answered here when nothing changed since the last one
    // (reads that ask for a snapshot go to the sidecar, see reply_cache.rs).
    let cache_key =
        (req.snapshot == SnapshotPolicy::Never).then(|| reply_cache::Key::of(&req, plan.shape));
    if let Some(answer) = cache_key.as_ref().and_then(reply_cache::get) {
        stats::bump(&stats::READS);
        return Ok(reply_kept(ctx, answer.as_deref(), with_stamp));
    }
    let client = state::client()?;
    client.check_room()?;
    let req = Request::Read(req);
    let cat = cat.to_string();
    let bc = Blocked::new(ctx, c"lake-read")?;
    client.submit(
        &req,
        Box::new(move |res| {
            // A plain answer is replied from here, off the main thread; a
            // snapshot to commit (SNAP) or an error goes to the main thread.
            if let (Some(key), Ok(Response::Doc(doc))) = (cache_key, &res) {
                reply_cache::put(key, doc.json.as_deref().map(|j| Arc::from(j.get())));
            }
            let out = match res {
                Ok(Response::Doc(doc)) if doc.snapshot.is_none() && with_stamp.is_none() => {
                    stats::bump(&stats::READS);
                    return bc.reply_here(doc.json.as_deref().map(RawValue::get));
                }
                Ok(Response::Doc(doc)) if doc.snapshot.is_none() => {
                    let text = doc.json.map(|j| j.get().to_string());
                    return bc.finish(Box::new(move |_| {
                        stats::bump(&stats::READS);
                        let doc = text.map_or(RedisValue::Null, RedisValue::BulkString);
                        Ok(stamped(doc, with_stamp))
                    }));
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
                    let doc = text.map_or(RedisValue::Null, RedisValue::BulkString);
                    Ok(stamped(doc, with_stamp))
                })),
                Err(e) => bc.finish(Box::new(move |_| Err(e))),
            }
        }),
    );
    Ok(RedisValue::NoReply)
}

/// A read answered from the reply cache without reading the index's
/// entries (reply_cache.rs, [`reply_cache::relate`]): the catalog is
/// unchanged since its newest kept answer (any `PATH`), or it only gained
/// deltas this node wrote, which are folded here onto that answer (whole
/// document). `None`: plan the read in full. Not for `AT` or `SNAP`.
fn answer_kept(
    ctx: &Context,
    cat: &str,
    read_path: Option<&str>,
    snap: Option<bool>,
    with_stamp: bool,
) -> Result<Option<RedisValue>, LakeError> {
    if config::reply_cache_bytes() == 0 {
        return Ok(None);
    }
    let idx = catalog::index_key(cat);
    let base = zset::last_at_or_below(ctx, &catalog::snap_key(cat), f64::INFINITY)?;
    let base_uuid = base
        .as_ref()
        .map(|e| member::decode_snap(&e.member))
        .transpose()?;
    let covers = base.as_ref().map_or(0, |e| e.score);
    let (newest, total) = zset::last_and_len(ctx, &idx)?;
    let newest_uuid = newest
        .as_ref()
        .map(|e| member::decode(&e.member).map(|(_, u)| u))
        .transpose()?;
    let shape = Shape {
        total,
        newest: newest.as_ref().map_or(0, |e| e.score),
    };
    let now = Now {
        catalog: cat,
        base: base_uuid,
        fence: read_fence(ctx, cat)?,
        shape,
        newest: newest_uuid,
    };
    match reply_cache::relate(&now) {
        Some(Kept::Same(k)) if policy(ctx, snap, k.deltas()) == SnapshotPolicy::Never => {
            let answer = match read_path {
                None => reply_cache::hit(&k),
                Some(p) => reply_cache::hit(&k.at_path(Some(p.to_string()))),
            };
            let Some(answer) = answer else {
                return Ok(None);
            };
            stats::bump(&stats::READS);
            let stamp = if k.deltas() > 0 { shape.newest } else { covers };
            Ok(Some(reply_kept(
                ctx,
                answer.as_deref(),
                with_stamp.then_some(stamp),
            )))
        }
        Some(Kept::Grew(k)) if read_path.is_none() => {
            let rows = zset::after(ctx, &idx, Some(k.shape().newest.max(covers)), f64::INFINITY)?;
            if rows.len() != shape.total - k.shape().total
                || policy(ctx, snap, k.deltas() + rows.len()) != SnapshotPolicy::Never
            {
                return Ok(None);
            }
            let (mut fields, mut news) = (Vec::new(), Vec::new());
            for e in &rows {
                let (field, uuid) = member::decode(&e.member)?;
                fields.push(field.to_string());
                news.push(uuid.to_string());
            }
            let Some(doc) = fold_here(&k, &fields, &news, shape) else {
                return Ok(None);
            };
            stats::bump(&stats::READS);
            Ok(Some(reply_kept(
                ctx,
                Some(&doc),
                with_stamp.then_some(shape.newest),
            )))
        }
        _ => Ok(None),
    }
}

/// The document of `k`'s answer with `news` (uuids, of deltas at `fields`)
/// folded on, here on the main thread, when every one of them was indexed
/// by this node in a built-in mode and there are at most
/// [`reply_cache::FOLD_BYTES`] of text; kept in place of `k`'s answer.
/// `None`: ask the sidecar (which alone reads the store, so a body lost
/// there is reported by the first read that has to fetch it).
fn fold_here(
    k: &reply_cache::Key,
    fields: &[String],
    news: &[String],
    shape: Shape,
) -> Option<String> {
    let p = reply_cache::prefix(k, news)?;
    let bytes = p.text.len() + p.bodies.iter().map(|b| b.value.len()).sum::<usize>();
    if bytes > reply_cache::FOLD_BYTES {
        return None;
    }
    let paths = fields
        .iter()
        .map(|f| path::parse(f).ok())
        .collect::<Option<Vec<_>>>()?;
    let deltas: Vec<TextDelta> = p
        .bodies
        .iter()
        .zip(&paths)
        .map(|(b, path)| TextDelta {
            path,
            mode: b.mode,
            value: &b.value,
        })
        .collect();
    let doc = native::extend(&p.text, &deltas).ok()?;
    reply_cache::advance(&p, k.grown(news, shape), Arc::from(doc.as_str()));
    reply_cache::FOLDS.fetch_add(1, Ordering::Relaxed);
    Some(doc)
}

/// What one read of a catalog asks the sidecar, taken from the index in
/// one command execution.
pub(crate) struct Plan {
    /// `None` when the catalog holds nothing at or below `AT`.
    pub read: Option<Read>,
    /// The stamp the document reflects (0 when empty).
    pub stamp: i64,
    /// The whole index's shape (the reply cache's key needs it).
    pub shape: Shape,
}

/// The newest snapshot at or below `at`, then the deltas after it, and the
/// snapshot policy (`snap`: SNAP, NOSNAP, or the `snapshot-every` rule).
pub(crate) fn plan(
    ctx: &Context,
    cat: &str,
    read_path: Option<String>,
    at: Option<i64>,
    snap: Option<bool>,
) -> Result<Plan, LakeError> {
    // The floor matters only to a read at a stamp (one key read less).
    let floor = match at {
        Some(_) => read_int(ctx, &catalog::floor_key(cat))?,
        None => None,
    };
    if let (Some(at), Some(floor)) = (at, floor) {
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
    let stamp = deltas
        .last()
        .map(|d| d.stamp)
        .or(base.as_ref().map(|b| b.covers))
        .unwrap_or(0);
    let idx = catalog::index_key(cat);
    let shape = Shape {
        total: zset::len(ctx, &idx)?,
        newest: zset::last_score(ctx, &idx)?.unwrap_or(0),
    };
    if base.is_none() && deltas.is_empty() {
        return Ok(Plan {
            read: None,
            stamp,
            shape,
        });
    }
    let fence = read_fence(ctx, cat)?;
    let policy = policy(ctx, snap, deltas.len());
    Ok(Plan {
        read: Some(Read {
            catalog: cat.to_string(),
            path: read_path,
            base,
            deltas,
            snapshot: policy,
            fence,
        }),
        stamp,
        shape,
    })
}

/// Whether a read with `deltas` after its snapshot builds one: `SNAP`
/// now, `NOSNAP` never, otherwise in the background from `snapshot-every`
/// deltas on; never on a replica.
fn policy(ctx: &Context, snap: Option<bool>, deltas: usize) -> SnapshotPolicy {
    let every = config::snapshot_every();
    match snap {
        _ if ctx.get_flags().contains(ContextFlags::SLAVE) => SnapshotPolicy::Never,
        Some(true) => SnapshotPolicy::Now,
        Some(false) => SnapshotPolicy::Never,
        None if every > 0 && deltas >= every => SnapshotPolicy::Background,
        None => SnapshotPolicy::Never,
    }
}

/// Replies a document the reply cache holds straight from its bytes (no
/// copy into a `RedisValue` first: hot reads are answered by the
/// thousand), as `doc` or `[doc, stamp]`.
fn reply_kept(ctx: &Context, doc: Option<&str>, stamp: Option<i64>) -> RedisValue {
    if let Some(s) = stamp {
        if let Some(array) = unsafe { redis_module::raw::RedisModule_ReplyWithArray } {
            unsafe { array(ctx.ctx, 2) };
        }
        reply_kept(ctx, doc, None);
        reply::value(ctx.ctx, RedisValue::Integer(s));
        return RedisValue::NoReply;
    }
    match doc {
        Some(d) => reply::bulk(ctx.ctx, d.as_bytes()),
        None => reply::value(ctx.ctx, RedisValue::Null),
    }
    RedisValue::NoReply
}

/// `doc`, or `[doc, stamp]` when the client asked `WITHSTAMP`.
fn stamped(doc: RedisValue, stamp: Option<i64>) -> RedisValue {
    match stamp {
        Some(s) => RedisValue::Array(vec![doc, RedisValue::Integer(s)]),
        None => doc,
    }
}

/// Commits a background snapshot the sidecar announced. Lock held.
pub fn on_unsolicited(ctx: &Context, resp: Response) {
    if let Response::SnapshotStored(s) = resp {
        if let Err(e) = commit_snapshot(ctx, &s.catalog, &s.snap, s.fence) {
            crate::reply::warning(ctx, &format!("lake: snapshot commit failed: {}", e.message));
        }
    }
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
        crate::reply::notice(ctx, &format!(
            "lake: catalog '{cat}': snapshot {} not committed: it is older than the compacted history",
            snap.uuid
        ));
        return Ok(());
    }
    if read_fence(ctx, cat)? != fence {
        crate::reply::notice(ctx, &format!(
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
    journal::record(
        ctx,
        cat,
        &Change::Snap {
            uuid: snap.uuid.clone(),
            covers: snap.covers,
        },
    );
    stats::bump(&stats::SNAPSHOT_COMMITS);
    Ok(())
}
