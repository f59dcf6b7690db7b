//! `LAKE.MREAD <catalog> [<catalog> ...] [PATH <field>]`: many catalogs'
//! documents in one round trip, as `MGET` answers many keys.
//!
//! Invariants:
//! - Each catalog is planned exactly as `LAKE.READ` plans it (snapshot and
//!   deltas taken in this one command execution), so every answer equals
//!   the single read's at the moment the command ran.
//! - The catalogs are the command's keys (Redis asks [`key_positions`]
//!   through the getkeys API, since a trailing `PATH <field>` is not a
//!   key): a cluster refuses catalogs of different slots (`CROSSSLOT`, as
//!   for `MGET`) and ACL key patterns apply to each.
//! - The client is answered once, after every catalog's answer, or with the
//!   first error (its prefix kept); nothing is committed. An unchanged
//!   catalog is answered from the reply cache (`reply_cache.rs`).

use std::sync::{Arc, Mutex};

use lake_shared::proto::{Request, Response, SnapshotPolicy};
use lake_shared::LakeError;
use redis_module::{Context, RedisString, RedisValue};

use super::read::plan;
use super::{arg_str, catalog_arg, check_can_block, unexpected};
use crate::blocked::Blocked;
use crate::owner::{self, Op};
use crate::{reply_cache, state, stats};

const USAGE: &str = "LAKE.MREAD <catalog> [<catalog> ...] [PATH <field>]";

/// At most this many catalogs per command: each is one sidecar request.
pub const MAX_CATALOGS: usize = 256;

/// Positions of the catalog arguments in `args` (the command name at 0): a
/// trailing `PATH <field>` is not a key.
pub fn key_positions(args: &[RedisString]) -> std::ops::Range<usize> {
    1..args.len() - trailing_path(args).map_or(0, |_| 2)
}

/// The field of a trailing `PATH <field>` (after at least one catalog).
fn trailing_path(args: &[RedisString]) -> Option<&RedisString> {
    let n = args.len();
    (n >= 4 && args[n - 2].as_slice().eq_ignore_ascii_case(b"PATH")).then(|| &args[n - 1])
}

/// What the blocked client waits for: one answer per catalog.
struct Pending {
    bc: Option<Blocked>,
    docs: Vec<Option<Option<String>>>,
    left: usize,
}

impl Pending {
    /// Records catalog `i`'s answer; the last one (or the first error)
    /// answers the client.
    fn done(&mut self, i: usize, answer: Result<Option<String>, LakeError>) {
        let Some(bc) = self.bc.take() else { return };
        match answer {
            Err(e) => bc.finish(Box::new(move |_| Err(e))),
            Ok(doc) => {
                self.docs[i] = Some(doc);
                self.left -= 1;
                if self.left > 0 {
                    self.bc = Some(bc);
                    return;
                }
                let docs = std::mem::take(&mut self.docs);
                bc.finish(Box::new(move |_| {
                    stats::bump(&stats::READS);
                    Ok(RedisValue::Array(
                        docs.into_iter()
                            .map(|d| d.flatten().map_or(RedisValue::Null, RedisValue::BulkString))
                            .collect(),
                    ))
                }));
            }
        }
    }
}

/// `LAKE.MREAD` -> one document (or nil) per catalog, in argument order.
pub fn mread(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() < 2 {
        return Err(LakeError::invalid(format!(
            "wrong number of arguments: {USAGE}"
        )));
    }
    let read_path = match trailing_path(&args) {
        Some(f) => {
            let f = arg_str(f, "PATH")?;
            lake_shared::path::parse(f)?;
            Some(f.to_string())
        }
        None => None,
    };
    let keys = key_positions(&args);
    if keys.len() > MAX_CATALOGS {
        return Err(LakeError::invalid(format!(
            "LAKE.MREAD reads at most {MAX_CATALOGS} catalogs, got {}",
            keys.len()
        )));
    }
    let mut cats = Vec::with_capacity(keys.len());
    for i in keys {
        cats.push(catalog_arg(&args, i)?);
    }
    check_can_block(ctx, "LAKE.MREAD")?;
    let (mut reads, mut shapes) = (Vec::with_capacity(cats.len()), Vec::new());
    for cat in &cats {
        owner::check_command(ctx, cat, Op::Read)?;
        let plan = plan(ctx, cat, read_path.clone(), None, None)?;
        reads.push(plan.read);
        shapes.push(plan.shape);
    }
    // Empty catalogs are nil; unchanged ones come from the reply cache
    // (reply_cache.rs); the rest go to the sidecar.
    let mut docs: Vec<Option<Option<String>>> = Vec::with_capacity(reads.len());
    let mut keys: Vec<Option<reply_cache::Key>> = Vec::with_capacity(reads.len());
    for (r, shape) in reads.iter_mut().zip(shapes) {
        let key = r
            .as_ref()
            .filter(|r| r.snapshot == SnapshotPolicy::Never)
            .map(|r| reply_cache::Key::of(r, shape));
        match (&r, key.as_ref().and_then(reply_cache::get)) {
            (None, _) => docs.push(Some(None)),
            (Some(_), Some(hit)) => {
                docs.push(Some(hit.map(|t| t.to_string())));
                *r = None;
            }
            (Some(_), None) => docs.push(None),
        }
        keys.push(key);
    }
    let left = reads.iter().filter(|r| r.is_some()).count();
    if left == 0 {
        stats::bump(&stats::READS);
        return Ok(RedisValue::Array(
            docs.into_iter()
                .map(|d| d.flatten().map_or(RedisValue::Null, RedisValue::BulkString))
                .collect(),
        ));
    }
    let client = state::client()?;
    client.check_room()?;
    let pending = Arc::new(Mutex::new(Pending {
        bc: Some(Blocked::new(ctx, c"lake-mread")?),
        docs,
        left,
    }));
    for (i, (read, key)) in reads.into_iter().zip(keys).enumerate() {
        let Some(read) = read else { continue };
        let pending = pending.clone();
        client.submit(
            &Request::Read(read),
            Box::new(move |res| {
                if let (Some(key), Ok(Response::Doc(doc))) = (key, &res) {
                    reply_cache::put(key, doc.json.as_deref().map(|j| Arc::from(j.get())));
                }
                let answer = match res {
                    // A background snapshot is announced and committed
                    // apart (`on_unsolicited`); a reply never carries one
                    // here, since MREAD never asks SNAP.
                    Ok(Response::Doc(doc)) => Ok(doc.json.map(|j| j.get().to_string())),
                    Ok(Response::Error(e)) | Err(e) => Err(e),
                    Ok(other) => Err(unexpected(&other)),
                };
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .done(i, answer);
            }),
        );
    }
    Ok(RedisValue::NoReply)
}
