//! `LAKE.CHANGES <catalog> SINCE <stamp|$> [COUNT <n>] [BLOCK <ms>]
//! [WITHVALUES]`: the deltas committed after a stamp, oldest first, each
//! `[stamp, field, uuid]` (with `WITHVALUES`, `[stamp, field, uuid, mode,
//! value]`, the bodies fetched by the sidecar); with `BLOCK`, waits (as
//! `XREAD BLOCK` does) until there is one.
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
//! - A blocked `WITHVALUES` follower stays blocked on its key while the
//!   sidecar fetches the bodies of the page it found ([`Follower`]); the
//!   answer is handed back on the main thread, which unblocks it through
//!   `RedisModule_UnblockClient` (Redis then runs the timeout callback,
//!   which replies the page). A follower that timed out, disconnected or
//!   was unblocked in the meantime is never touched again: its answer is
//!   dropped and the follower re-asks from its last stamp, missing nothing.

use std::sync::{Arc, Mutex};

use lake_shared::proto::{DeltaRef, DeltaValue, Request, Response, Values};
use lake_shared::stamp::Bound;
use lake_shared::{catalog, member, LakeError};
use redis_module::{raw, Context, ContextFlags, RedisString, RedisValue};

use super::{
    arg_str, catalog_arg, check_can_block, newest_stamp, parse_count, read_int, unexpected,
};
use crate::blocked::Blocked;
use crate::owner::{self, Op};
use crate::{state, zset};

/// Entries per answer when `COUNT` is not given.
pub const DEFAULT_COUNT: usize = 100;
/// Largest `COUNT` accepted: one answer never holds the main thread long.
pub const MAX_COUNT: usize = 10_000;
/// Largest `COUNT` with `WITHVALUES`: every entry carries its body.
pub const MAX_VALUES_COUNT: usize = 1_000;

const USAGE: &str = "LAKE.CHANGES <catalog> SINCE <stamp|$> [COUNT <n>] [BLOCK <ms>] [WITHVALUES]";

/// One follower's question, resolved (`$` is the newest stamp when asked).
#[derive(Debug, Clone)]
pub struct Query {
    pub catalog: String,
    pub since: i64,
    pub count: usize,
    /// Answer each delta's mode and value too (`WITHVALUES`).
    pub with_values: bool,
}

/// One index entry of a page.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stamp: i64,
    pub field: String,
    pub uuid: String,
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
    let (mut since, mut count, mut block) = (None, None, None);
    let mut with_values = false;
    let mut i = 2;
    while i < args.len() {
        let opt = arg_str(&args[i], "option")?.to_ascii_uppercase();
        if opt == "WITHVALUES" {
            with_values = true;
            i += 1;
            continue;
        }
        let v = args
            .get(i + 1)
            .ok_or_else(|| {
                LakeError::invalid(format!("syntax error: {opt} needs a value ({USAGE})"))
            })
            .and_then(|v| arg_str(v, &opt))?;
        match opt.as_str() {
            "SINCE" if since.is_none() => since = Some(v),
            "COUNT" => count = Some(v),
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
    let count = match count {
        Some(v) => parse_count(
            v,
            if with_values {
                MAX_VALUES_COUNT
            } else {
                MAX_COUNT
            },
        )?,
        None => DEFAULT_COUNT,
    };
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
    if with_values {
        // The bodies come from the sidecar: the client always blocks.
        check_can_block(ctx, "LAKE.CHANGES ... WITHVALUES")?;
    }
    let q = Query {
        catalog: cat.to_string(),
        since,
        count,
        with_values,
    };
    let entries = page(ctx, &q)?;
    let can_block = !ctx
        .get_flags()
        .intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING);
    match block {
        Some(ms) if entries.is_empty() && can_block => {
            crate::entry::block_on_changes(ctx, Follower::new(q), ms)?;
            Ok(RedisValue::NoReply)
        }
        _ if with_values && !entries.is_empty() => {
            let bc = Blocked::new(ctx, c"lake-changes")?;
            fetch_values(
                &q.catalog,
                entries,
                Box::new(move |out| {
                    bc.finish(Box::new(move |_| out.map(|(e, v)| reply(e, Some(v)))))
                }),
            )?;
            Ok(RedisValue::NoReply)
        }
        _ => Ok(reply(entries, None)),
    }
}

/// The deltas of `q.catalog` after `q.since`, at most `q.count`, oldest
/// first; refused when `since` is below the compaction floor.
pub fn page(ctx: &Context, q: &Query) -> Result<Vec<Entry>, LakeError> {
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
        out.push(Entry {
            stamp: e.score,
            field: field.to_string(),
            uuid: uuid.to_string(),
        });
    }
    Ok(out)
}

/// The answer: one array per entry, with its mode and value when fetched.
fn reply(entries: Vec<Entry>, values: Option<Vec<DeltaValue>>) -> RedisValue {
    let mut values = values.map(Vec::into_iter);
    RedisValue::Array(
        entries
            .into_iter()
            .map(|e| {
                let mut item = vec![
                    RedisValue::Integer(e.stamp),
                    RedisValue::BulkString(e.field),
                    RedisValue::BulkString(e.uuid),
                ];
                if let Some(v) = values.as_mut().and_then(Iterator::next) {
                    item.push(RedisValue::BulkString(v.mode));
                    item.push(RedisValue::BulkString(v.value.get().to_string()));
                }
                RedisValue::Array(item)
            })
            .collect(),
    )
}

/// A page with each entry's body, as the sidecar sent them.
type Fetched = Result<(Vec<Entry>, Vec<DeltaValue>), LakeError>;

/// Where a fetched page goes (any thread).
type Done = Box<dyn FnOnce(Fetched) + Send>;

/// Asks the sidecar for the bodies of `entries`; `done` gets the finished
/// answer (or the error). An error before anything was sent is returned.
fn fetch_values(cat: &str, entries: Vec<Entry>, done: Done) -> Result<(), LakeError> {
    let client = state::client()?;
    client.check_room()?;
    let req = Request::Values(Values {
        catalog: cat.to_string(),
        deltas: entries
            .iter()
            .map(|e| DeltaRef {
                uuid: e.uuid.clone(),
                field: e.field.clone(),
                stamp: e.stamp,
            })
            .collect(),
    });
    client.submit(
        &req,
        Box::new(move |res| {
            done(match res {
                Ok(Response::Values(v)) if v.len() == entries.len() => Ok((entries, v)),
                Ok(Response::Values(v)) => Err(LakeError::internal(format!(
                    "the sidecar answered {} values for {} deltas",
                    v.len(),
                    entries.len()
                ))),
                Ok(Response::Error(e)) => Err(e),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e),
            })
        }),
    );
    Ok(())
}

/// A blocked follower: its query, and what became of the bodies it asked
/// the sidecar for. Redis owns it (the blocked client's private data) and
/// frees it once the client is done; the sidecar's answer holds the shared
/// part only.
pub struct Follower {
    pub query: Query,
    fetch: Arc<Mutex<Fetch>>,
}

/// A `WITHVALUES` follower's fetch. Only the main thread reads `client` or
/// sets `gone`, so the handle is used only while Redis keeps it.
pub struct Fetch {
    state: FetchState,
    /// The blocked client's handle; set right after blocking.
    client: *mut raw::RedisModuleBlockedClient,
    /// Redis freed the follower (answered, timed out, disconnected).
    gone: bool,
}

// The handle is only dereferenced by Redis, on the main thread.
unsafe impl Send for Fetch {}

enum FetchState {
    Idle,
    Waiting,
    Done(Fetched),
}

impl Follower {
    pub fn new(query: Query) -> Follower {
        Follower {
            query,
            fetch: Arc::new(Mutex::new(Fetch {
                state: FetchState::Idle,
                client: std::ptr::null_mut(),
                gone: false,
            })),
        }
    }

    /// Records the blocked client's handle. Main thread.
    pub fn blocked(&self, client: *mut raw::RedisModuleBlockedClient) {
        if let Ok(mut f) = self.fetch.lock() {
            f.client = client;
        }
    }

    /// Redis signalled the key: the answer, or `None` to keep waiting (no
    /// new delta yet, or their bodies are on the way). Main thread.
    pub fn ready(&self, ctx: &Context) -> Option<Result<RedisValue, LakeError>> {
        let mut f = self.fetch.lock().ok()?;
        match std::mem::replace(&mut f.state, FetchState::Idle) {
            FetchState::Done(out) => return Some(out.map(|(e, v)| reply(e, Some(v)))),
            FetchState::Waiting => {
                f.state = FetchState::Waiting;
                return None;
            }
            FetchState::Idle => {}
        }
        let entries = match page(ctx, &self.query) {
            Ok(e) if e.is_empty() => return None,
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        if !self.query.with_values {
            return Some(Ok(reply(entries, None)));
        }
        f.state = FetchState::Waiting;
        drop(f);
        let shared = self.fetch.clone();
        let sent = fetch_values(
            &self.query.catalog,
            entries,
            Box::new(move |out| {
                if let Ok(mut f) = shared.lock() {
                    f.state = FetchState::Done(out);
                }
                crate::entry::hand_back(shared);
            }),
        );
        sent.err().map(Err)
    }

    /// The blocking ended without a key signal: the fetched answer when
    /// [`Fetch::deliver`] unblocked it, else an empty page (timeout or
    /// `CLIENT UNBLOCK`). Main thread.
    pub fn timed_out(&self) -> Result<RedisValue, LakeError> {
        match self.fetch.lock() {
            Ok(mut f) => match std::mem::replace(&mut f.state, FetchState::Idle) {
                FetchState::Done(out) => out.map(|(e, v)| reply(e, Some(v))),
                _ => Ok(RedisValue::Array(Vec::new())),
            },
            Err(_) => Ok(RedisValue::Array(Vec::new())),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Ok(mut f) = self.fetch.lock() {
            f.gone = true;
            f.client = std::ptr::null_mut();
        }
    }
}

impl Fetch {
    /// The sidecar answered: the blocked client to unblock, if Redis still
    /// keeps it (it then runs the timeout callback, [`Follower::timed_out`],
    /// which replies the answer). Main thread.
    pub fn deliver(fetch: &Mutex<Fetch>) -> Option<*mut raw::RedisModuleBlockedClient> {
        let f = fetch.lock().ok()?;
        (!f.gone && !f.client.is_null() && matches!(f.state, FetchState::Done(_)))
            .then_some(f.client)
    }
}
