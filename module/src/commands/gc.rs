//! `LAKE.GC`: the referenced set, walked in bounded steps on Redis's main
//! thread and streamed to the sidecar in bounded chunks; the sidecar then
//! deletes old unreferenced objects of the catalogs this node serves.
//!
//! Why a walk: an index of millions of entries read in one command
//! execution held Redis's main thread for as long as it took, and went out
//! as one frame past the channel's frame limit (the sidecar then dropped the
//! connection, failing every request in flight).
//!
//! Invariants:
//! - One step (a timer tick) reads at most [`STEP_ENTRIES`] index entries
//!   (and one `SCAN` page of [`SCAN_KEYS`] keys), so no step holds the main
//!   thread for long; a big catalog is paged through across steps.
//! - At most one chunk is in flight: the next step runs only after the
//!   sidecar acknowledged the last, so chunks apply in order, and the final
//!   `Gc` goes only after every chunk.
//! - Nothing indexed during the walk can lose its object: the sidecar counts
//!   the grace from the session's start, and the grace is never below
//!   [`lake_shared::gc_grace_floor_secs`], so an object stored after the walk
//!   began is young, and one stored before was indexed (if ever) before the
//!   walk read its catalog.
//! - In a cluster, only slots this node served and was not moving both at
//!   the start and at the end count, and the cluster state must be `ok` at
//!   both ends ([`owner::gc_slots`]).
//! - Before the final request, the walk waits until every index change
//!   recorded so far is shipped ([`journal::shipped_since`]): the sidecar
//!   refuses to collect when the index holds much less than the backup,
//!   and a removal not yet shipped would look like a loss.
//! - One walk at a time per node; a second `LAKE.GC` gets `LAKEBUSY`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lake_shared::cluster::{self, SlotSet};
use lake_shared::proto::{Gc, GcRefs, Request, Response};
use lake_shared::stamp::Bound;
use lake_shared::{catalog, member, LakeError};
use redis_module::{raw, Context, RedisString, RedisValue};

use super::{arg_str, check_can_block, unexpected, value_string};
use crate::blocked::Blocked;
use crate::{config, entry, journal, owner, state, zset};

/// Index entries one step reads at most.
pub const STEP_ENTRIES: usize = 10_000;
/// Keys one `SCAN` page asks for.
const SCAN_KEYS: &str = "100";
/// How long a finished walk waits for the journal to reach the store.
const JOURNAL_WAIT: Duration = Duration::from_secs(30);
/// How often a walk takes a step.
const TICK: Duration = Duration::from_millis(1);

/// No chunk in flight.
const IDLE: u8 = 0;
/// A chunk is waiting for the sidecar's answer.
const SENT: u8 = 1;
/// The sidecar refused a chunk: the walk fails.
const FAILED: u8 = 2;

/// The catalog key being paged through.
struct Current {
    key: String,
    cat: String,
    snap: bool,
    /// The last score read; the next page starts after it.
    after: Option<i64>,
}

struct Walk {
    session: u64,
    /// When the walk began, in Unix ms on this node's clock (the clock of
    /// the journal's stream ids).
    began_ms: u64,
    bc: Blocked,
    grace: u64,
    dry_run: bool,
    slots: Option<SlotSet>,
    /// `SCAN` cursor; `None` once the scan is complete.
    cursor: Option<String>,
    keys: Vec<String>,
    current: Option<Current>,
    chunk: Arc<AtomicU8>,
    error: Arc<Mutex<Option<LakeError>>>,
    opened: bool,
    /// When the walk was done and began waiting for the journal to reach
    /// the store (GC compares the index with the shipped backup).
    caught_up_from: Option<Instant>,
}

static WALK: Mutex<Option<Walk>> = Mutex::new(None);

/// `LAKE.GC [DRYRUN] [GRACE <seconds>]`: deletes objects that no index entry
/// references and that are older than the grace period, and replies
/// `[scanned, referenced, young, orphans, deleted]`. Runs on primaries
/// only; in Redis Cluster it considers only catalogs whose slot this node
/// serves and is not moving ([`owner::gc_slots`]): the store is shared by
/// every shard.
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
    let grace = grace.max(lake_shared::gc_grace_floor_secs(config::timeout()));
    check_can_block(ctx, "LAKE.GC")?;
    state::client()?.check_room()?;
    let slots = owner::gc_slots(ctx)?;
    let mut walk = WALK
        .lock()
        .map_err(|_| LakeError::internal("GC state poisoned"))?;
    if walk.is_some() {
        return Err(LakeError::busy(
            "a LAKE.GC is already running on this node; wait for its answer",
        ));
    }
    *walk = Some(Walk {
        session: uuid::Uuid::new_v4().as_u64_pair().0,
        began_ms: (lake_shared::stamp::now_us() / 1000).max(0) as u64,
        bc: Blocked::new(ctx, c"lake-gc")?,
        grace,
        dry_run,
        slots,
        cursor: Some("0".into()),
        keys: Vec::new(),
        current: None,
        chunk: Arc::new(AtomicU8::new(IDLE)),
        error: Arc::new(Mutex::new(None)),
        opened: false,
        caught_up_from: None,
    });
    drop(walk);
    step(ctx);
    Ok(RedisValue::NoReply)
}

fn arm(ctx: &Context) {
    if let Some(create) = unsafe { raw::RedisModule_CreateTimer } {
        unsafe {
            create(
                ctx.ctx,
                TICK.as_millis() as i64,
                Some(entry::gc_timer),
                std::ptr::null_mut(),
            )
        };
    }
}

/// One step of the walk ([`crate::entry::gc_timer`]). Main thread.
pub fn step(ctx: &Context) {
    let Ok(mut guard) = WALK.lock() else {
        return;
    };
    let Some(w) = guard.as_mut() else {
        return;
    };
    match w.chunk.load(Ordering::Acquire) {
        SENT => return arm(ctx),
        FAILED => {
            let e = w
                .error
                .lock()
                .ok()
                .and_then(|mut e| e.take())
                .unwrap_or_else(|| LakeError::internal("a GC chunk failed"));
            if let Some(w) = guard.take() {
                w.bc.finish(Box::new(move |_| Err(e)));
            }
            return;
        }
        _ => {}
    }
    if !w.opened {
        // An empty first chunk opens the session before any catalog is
        // read: the sidecar counts the grace from here.
        w.opened = true;
        send_chunk(w, Vec::new());
        return arm(ctx);
    }
    match collect(ctx, w) {
        Ok(refs) if !refs.is_empty() => {
            send_chunk(w, refs);
            arm(ctx);
        }
        Ok(_) if w.cursor.is_some() || w.current.is_some() || !w.keys.is_empty() => arm(ctx),
        Ok(_) => {
            if journal::enabled() {
                let since = *w.caught_up_from.get_or_insert_with(Instant::now);
                if !journal::shipped_since(since) {
                    if since.elapsed() < JOURNAL_WAIT {
                        journal::ship_soon();
                        return arm(ctx);
                    }
                    if let Some(w) = guard.take() {
                        w.bc.finish(Box::new(|_| {
                            Err(LakeError::unavailable(format!(
                                "LAKE.GC waits for the index journal to reach the store before it compares the index with the backup, and it has not in {} s (INFO lake: journal_ship_errors; is the store reachable?); nothing was deleted",
                                JOURNAL_WAIT.as_secs()
                            )))
                        }));
                    }
                    return;
                }
            }
            if let Some(w) = guard.take() {
                finish(ctx, w);
            }
        }
        Err(e) => {
            if let Some(w) = guard.take() {
                w.bc.finish(Box::new(move |_| Err(e)));
            }
        }
    }
}

/// Ends a walk whose step panicked, answering its client.
pub fn abort() {
    if let Some(w) = WALK.lock().ok().and_then(|mut g| g.take()) {
        w.bc.finish(Box::new(|_| {
            Err(LakeError::internal(
                "LAKE.GC stopped: a step panicked (see the Redis log); nothing more was deleted",
            ))
        }));
    }
}

/// Reads up to [`STEP_ENTRIES`] referenced object keys and at most one
/// `SCAN` page, moving the walk on.
fn collect(ctx: &Context, w: &mut Walk) -> Result<Vec<String>, LakeError> {
    let mut refs = Vec::new();
    let mut scanned = false;
    while refs.len() < STEP_ENTRIES {
        if let Some(cur) = w.current.as_mut() {
            let lo = cur.after.map_or(Bound::LOWEST, |s| Bound {
                score: s as f64,
                exclusive: true,
            });
            let want = STEP_ENTRIES - refs.len();
            let page = zset::page(ctx, &cur.key, lo, Bound::HIGHEST, false, want)?;
            for e in &page {
                if cur.snap {
                    if let Ok(u) = member::decode_snap(&e.member) {
                        refs.push(catalog::snapshot_object(&cur.cat, u));
                    }
                } else if let Ok((_, u)) = member::decode(&e.member) {
                    refs.push(catalog::delta_object(&cur.cat, u));
                }
            }
            cur.after = page.last().map(|e| e.score).or(cur.after);
            if page.len() < want {
                w.current = None;
            }
            continue;
        }
        if let Some(key) = w.keys.pop() {
            w.current = catalog_of(&key, w.slots.as_ref());
            continue;
        }
        match w.cursor.take() {
            Some(c) if !scanned => {
                scanned = true;
                let (next, keys) = scan(ctx, &c)?;
                w.keys = keys;
                w.cursor = (next != "0").then_some(next);
            }
            Some(c) => {
                w.cursor = Some(c);
                break;
            }
            None => break,
        }
    }
    Ok(refs)
}

/// The catalog key `key` names, if it is one this walk collects for.
fn catalog_of(key: &str, slots: Option<&SlotSet>) -> Option<Current> {
    let inner = key.strip_prefix("catalog:{")?;
    let (cat, snap) = match inner.strip_suffix("}:snap") {
        Some(c) => (c, true),
        None => (inner.strip_suffix('}')?, false),
    };
    catalog::validate(cat).ok()?;
    // A key left in a slot this node does not serve (or is moving) belongs
    // to no catalog it may collect.
    if slots.is_some_and(|s| !s.contains(cluster::catalog_slot(cat))) {
        return None;
    }
    Some(Current {
        key: key.to_string(),
        cat: cat.to_string(),
        snap,
        after: None,
    })
}

fn scan(ctx: &Context, cursor: &str) -> Result<(String, Vec<String>), LakeError> {
    let v = ctx
        .call(
            "SCAN",
            &[
                cursor,
                "MATCH",
                "catalog:{*",
                "COUNT",
                SCAN_KEYS,
                "TYPE",
                "zset",
            ],
        )
        .map_err(|e| LakeError::internal(format!("SCAN failed: {e}")))?;
    let RedisValue::Array(mut parts) = v else {
        return Err(LakeError::internal("SCAN returned no array"));
    };
    let keys = parts.pop().unwrap_or(RedisValue::Null);
    let next = value_string(parts.pop().unwrap_or(RedisValue::Null))?;
    let mut out = Vec::new();
    if let RedisValue::Array(keys) = keys {
        for k in keys {
            out.push(value_string(k)?);
        }
    }
    Ok((next, out))
}

fn send_chunk(w: &Walk, refs: Vec<String>) {
    let Ok(client) = state::client() else {
        w.chunk.store(FAILED, Ordering::Release);
        return;
    };
    w.chunk.store(SENT, Ordering::Release);
    let (chunk, error) = (w.chunk.clone(), w.error.clone());
    client.submit(
        &Request::GcRefs(GcRefs {
            session: w.session,
            referenced: refs,
        }),
        Box::new(move |res| {
            let failed = match res {
                Ok(Response::GcRefsOk) => None,
                Ok(Response::Error(e)) | Err(e) => Some(e),
                Ok(other) => Some(unexpected(&other)),
            };
            match failed {
                Some(e) => {
                    if let Ok(mut slot) = error.lock() {
                        *slot = Some(e);
                    }
                    chunk.store(FAILED, Ordering::Release);
                }
                None => chunk.store(IDLE, Ordering::Release),
            }
        }),
    );
}

/// Every chunk is in: checks the node may still collect, then asks the
/// sidecar to delete, and answers the client with its report.
fn finish(ctx: &Context, w: Walk) {
    let Walk {
        session,
        began_ms,
        bc,
        grace,
        dry_run,
        slots,
        ..
    } = w;
    // Slots served and stable both when the walk began and now.
    let slots = match (slots, owner::gc_slots(ctx)) {
        (_, Err(e)) => return bc.finish(Box::new(move |_| Err(e))),
        (Some(before), Ok(Some(now))) => Some(
            before
                .ranges()
                .into_iter()
                .flat_map(|(lo, hi)| lo..=hi)
                .filter(|s| now.contains(*s))
                .fold(SlotSet::default(), |mut set, s| {
                    set.insert(s);
                    set
                }),
        ),
        (Some(_), Ok(None)) | (None, Ok(Some(_))) => {
            return bc.finish(Box::new(|_| {
                Err(LakeError::retry(
                    "the node's cluster mode changed during LAKE.GC; nothing was deleted",
                ))
            }))
        }
        (None, Ok(None)) => None,
    };
    let client = match state::client() {
        Ok(c) => c,
        Err(e) => return bc.finish(Box::new(move |_| Err(e))),
    };
    client.submit(
        &Request::Gc(Gc {
            referenced: Vec::new(),
            grace_secs: grace,
            dry_run,
            slots: slots.map(|s| s.ranges()),
            session: Some(session),
            began_ms: Some(began_ms),
        }),
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
}
