//! Continuous shipping of the index's changes to the object store, so the
//! store alone can bring the index back ([`lake_shared::journal`]).
//!
//! Every index change appends one entry to its catalog's journal stream
//! (`XADD`, replicated, in the same main-thread step as the change, so the
//! two reach replicas and the AOF together). A timer on the main thread
//! reads the streams it knows to hold entries, sends them to the sidecar as
//! one batch, and once the sidecar answers that the batch is durable, trims
//! exactly what it shipped (`XTRIM MINID`, replicated).
//!
//! Invariants:
//! - No round trip on a write's path: recording is one in-memory `XADD`;
//!   shipping happens later, at most [`MAX_ENTRIES`] entries per batch, one
//!   batch in flight, about every `lake.ship-interval-ms`.
//! - An entry leaves its stream only after the batch holding it is stored.
//!   A batch that failed is read again from the streams and shipped again;
//!   a trim lost in a failover ships an entry twice, which a restore
//!   applies once (same catalog and stream id).
//! - Streams live under the catalog's hash tag: a new primary, a restarted
//!   node or a slot's new owner has every unshipped entry of the index it
//!   holds, and finds the streams by a walk of the keyspace that never
//!   stops (a slice of at most [`SCAN_BUDGET`] per tick), not only from
//!   what this process recorded.
//! - Runs on a primary only, never while writes are paused.
//! - The stream stays (empty) after its entries are shipped: its last id
//!   keeps the catalog's ids increasing across `DROP` and a clock step back.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lake_shared::journal::{self, Change, Entry};
use lake_shared::proto::{Request, Response, Ship};
use lake_shared::{catalog, LakeError};
use redis_module::{raw, Context, ContextFlags, RedisValue};

use crate::commands::call_replicated;
use crate::{config, entry, owner, reply, state};

/// Entries one batch carries at most (and one tick reads at most): reading
/// and encoding them is main-thread work, a few hundred microseconds per
/// thousand; a full batch sends the next at the next tick.
pub const MAX_ENTRIES: usize = 2_000;
/// How often the timer looks for work.
const TICK: Duration = Duration::from_millis(50);
/// Main-thread time one tick spends walking the keyspace for streams: a
/// pause of Redis that stays under a millisecond however many keys it
/// holds (the walk resumes where it stopped at the next tick), 1% of the
/// main thread at most.
const SCAN_BUDGET: Duration = Duration::from_micros(500);
/// Complete walks remembered (see [`shipped_since`]).
const CYCLES_KEPT: usize = 64;
/// The walk's time per tick while `LAKE.GC` waits for it.
const SCAN_BUDGET_SOON: Duration = Duration::from_millis(2);

const SENT: u8 = 1;
const DONE: u8 = 2;
const FAILED: u8 = 3;

pub static RECORDED: AtomicU64 = AtomicU64::new(0);
pub static SHIPPED: AtomicU64 = AtomicU64::new(0);
pub static BATCHES: AtomicU64 = AtomicU64::new(0);
pub static RECORD_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Complete keyspace walks for streams, and how long the last one took
/// (`INFO lake`: how soon a stream left by another process is found).
pub static WALKS: AtomicU64 = AtomicU64::new(0);
pub static LAST_WALK_MS: AtomicU64 = AtomicU64::new(0);
pub static SHIP_ERRORS: AtomicU64 = AtomicU64::new(0);

/// A batch on its way: for each catalog, the last id it carries.
struct Flight {
    shipped: Vec<(String, String)>,
    /// When its entries were read from the streams.
    collected: Instant,
    entries: u64,
    status: Arc<AtomicU8>,
    full: bool,
}

struct Shipper {
    /// Catalogs whose streams may hold entries.
    dirty: BTreeSet<String>,
    flight: Option<Flight>,
    last: Option<Instant>,
    /// Ship at the next tick, whatever the interval: a full batch left
    /// more behind.
    next: bool,
    /// `LAKE.GC` waits for the backup to catch up: ship at the next tick
    /// and read more of the keyspace per tick to find every stream.
    soon: bool,
    /// The keyspace walk under way (`None`: the next tick begins one).
    cursor: Option<ScanCursor>,
    /// The last shipping error, and one not logged yet.
    last_error: Option<String>,
    new_error: Option<String>,
    /// When the streams were last read to their ends for a batch that was
    /// then stored: everything recorded before is shipped.
    caught_up: Option<Instant>,
    /// When the walk under way began.
    cycle_began: Option<Instant>,
    /// The last complete walks: when each began and ended. Every stream
    /// that held entries when one began was found by its end.
    cycles: VecDeque<(Instant, Instant)>,
}

static SHIPPER: Mutex<Shipper> = Mutex::new(Shipper {
    dirty: BTreeSet::new(),
    flight: None,
    last: None,
    next: false,
    soon: false,
    cursor: None,
    last_error: None,
    new_error: None,
    caught_up: None,
    cycle_began: None,
    cycles: VecDeque::new(),
});

pub fn enabled() -> bool {
    config::ship_interval_ms() > 0
}

/// Appends `change` to `cat`'s journal (and fires its keyspace event,
/// [`crate::notify`]: every index change passes here). Main thread, in the
/// step that made the change. A failure is logged and counted, never
/// returned: the index change it describes is already made and replicated.
pub fn record(ctx: &Context, cat: &str, change: &Change) {
    crate::notify::changed(ctx, cat, change);
    if !enabled() {
        return;
    }
    let text = match serde_json::to_string(change) {
        Ok(t) => t,
        Err(e) => return failed_record(ctx, cat, &e.to_string()),
    };
    let key = catalog::journal_key(cat);
    match call_replicated(ctx, "XADD", &[&key, "*", journal::FIELD, &text]) {
        Ok(()) => {
            RECORDED.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut s) = SHIPPER.lock() {
                s.dirty.insert(cat.to_string());
            }
        }
        Err(e) => failed_record(ctx, cat, &e.message),
    }
}

fn failed_record(ctx: &Context, cat: &str, why: &str) {
    RECORD_ERRORS.fetch_add(1, Ordering::Relaxed);
    reply::warning(
        ctx,
        &format!("lake: catalog '{cat}': an index change was not journaled ({why}); the backup misses it until the next one"),
    );
}

/// Whether every entry the streams held at `t` is shipped: a walk
/// begun after `t` has found every stream (also those another process
/// wrote: before a restart, on a former primary), and a batch read after
/// that walk ended was stored with nothing left behind.
pub fn shipped_since(t: Instant) -> bool {
    SHIPPER
        .lock()
        .map(|s| {
            let drained = s.dirty.is_empty() && s.flight.is_none();
            s.cycles.iter().any(|(began, ended)| {
                *began >= t && (drained || s.caught_up.is_some_and(|c| c >= *ended))
            })
        })
        .unwrap_or(false)
}

/// Asks for a batch at the next tick.
pub fn ship_soon() {
    if let Ok(mut s) = SHIPPER.lock() {
        s.soon = true;
    }
}

/// Catalogs waiting to ship.
pub fn pending() -> usize {
    SHIPPER.lock().map(|s| s.dirty.len()).unwrap_or(0)
}

/// Arms the next tick.
pub fn start(ctx: &Context) {
    if let Some(create) = unsafe { raw::RedisModule_CreateTimer } {
        unsafe {
            create(
                ctx.ctx,
                TICK.as_millis() as i64,
                Some(entry::journal_timer),
                std::ptr::null_mut(),
            )
        };
    }
}

/// One tick ([`crate::entry::journal_timer`] re-arms it).
pub fn tick(ctx: &Context) {
    if !enabled() {
        return;
    }
    let flags = ctx.get_flags();
    if owner::paused()
        || !flags.contains(ContextFlags::MASTER)
        || flags.contains(ContextFlags::SLAVE)
    {
        return;
    }
    let Ok(mut s) = SHIPPER.lock() else {
        return;
    };
    if let Some(f) = s.flight.as_ref() {
        match f.status.load(Ordering::Acquire) {
            SENT => return,
            DONE => {
                if let Some(f) = s.flight.take() {
                    trim(ctx, &mut s, f);
                }
            }
            _ => {
                s.flight = None;
                SHIP_ERRORS.fetch_add(1, Ordering::Relaxed);
                // Logged once per distinct error, not once per retry.
                if let Some(e) = s.new_error.take() {
                    reply::warning(
                        ctx,
                        &format!("lake: shipping the index journal failed (retrying): {e}"),
                    );
                }
            }
        }
    }
    // Asked to hurry (`LAKE.GC` waits): more of the keyspace per tick.
    let budget = if s.soon {
        SCAN_BUDGET_SOON
    } else {
        SCAN_BUDGET
    };
    discover(ctx, &mut s, budget);
    let due = s.soon
        || s.next
        || s.last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(config::ship_interval_ms()));
    if !due || s.dirty.is_empty() {
        return;
    }
    s.soon = false;
    s.next = false;
    s.last = Some(Instant::now());
    let (entries, shipped) = collect(ctx, &mut s);
    if entries.is_empty() {
        return;
    }
    let Ok(client) = state::client() else {
        return;
    };
    let status = Arc::new(AtomicU8::new(SENT));
    let done = status.clone();
    let n = entries.len();
    s.flight = Some(Flight {
        shipped,
        collected: Instant::now(),
        entries: n as u64,
        status,
        full: n >= MAX_ENTRIES,
    });
    drop(s);
    client.submit(
        &Request::Ship(Ship { entries }),
        Box::new(move |res| {
            let outcome = match res {
                Ok(Response::Shipped(_)) => DONE,
                Ok(Response::Error(e)) | Err(e) => {
                    note_error(e);
                    FAILED
                }
                Ok(other) => {
                    note_error(LakeError::internal(format!("unexpected answer: {other:?}")));
                    FAILED
                }
            };
            done.store(outcome, Ordering::Release);
        }),
    );
}

fn note_error(e: LakeError) {
    if let Ok(mut s) = SHIPPER.lock() {
        if s.last_error.as_deref() != Some(e.message.as_str()) {
            s.new_error = Some(e.message.clone());
        }
        s.last_error = Some(e.message);
    }
}

/// Reads up to [`MAX_ENTRIES`] entries from the dirty streams, through the
/// stream iterator (no command call: no reply to build and parse again).
fn collect(ctx: &Context, s: &mut Shipper) -> (Vec<Entry>, Vec<(String, String)>) {
    let mut entries = Vec::new();
    let mut shipped = Vec::new();
    let mut clean = Vec::new();
    for cat in &s.dirty {
        let want = MAX_ENTRIES - entries.len();
        if want == 0 {
            break;
        }
        let key = catalog::journal_key(cat);
        let stream = ctx.open_key(&ctx.create_string(key.as_str()));
        // Fails on a missing (or non-stream) key: nothing to ship there.
        let Ok(records) = stream.get_stream_iterator(false) else {
            clean.push(cat.clone());
            continue;
        };
        let mut last = None;
        for record in records.take(want) {
            let id = format!("{}-{}", record.id.ms, record.id.seq);
            let text = record
                .fields
                .iter()
                .find(|(f, _)| f.as_slice() == journal::FIELD.as_bytes())
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default();
            match Change::parse(text) {
                Ok(change) => entries.push(Entry {
                    catalog: cat.clone(),
                    id: id.clone(),
                    change,
                }),
                Err(e) => reply::warning(
                    ctx,
                    &format!(
                        "lake: {key} entry {id} is not a journal entry ({e}); skipped and trimmed"
                    ),
                ),
            }
            last = Some(id);
        }
        match last {
            Some(id) => shipped.push((cat.clone(), id)),
            None => clean.push(cat.clone()),
        }
    }
    for c in clean {
        s.dirty.remove(&c);
    }
    (entries, shipped)
}

/// Removes what a stored batch carried from the streams.
fn trim(ctx: &Context, s: &mut Shipper, f: Flight) {
    BATCHES.fetch_add(1, Ordering::Relaxed);
    SHIPPED.fetch_add(f.entries, Ordering::Relaxed);
    s.last_error = None;
    for (cat, id) in f.shipped {
        let Some((ms, seq)) = journal::parse_id(&id) else {
            continue;
        };
        let key = catalog::journal_key(&cat);
        let min = format!("{ms}-{}", seq.saturating_add(1));
        if let Err(e) = call_replicated(ctx, "XTRIM", &[&key, "MINID", &min]) {
            reply::warning(ctx, &format!("lake: cannot trim {key}: {}", e.message));
            continue;
        }
        if matches!(
            ctx.call("XLEN", &[key.as_str()]),
            Ok(RedisValue::Integer(0))
        ) {
            s.dirty.remove(&cat);
        }
    }
    if f.full {
        s.next = true;
    } else {
        s.caught_up = Some(f.collected);
    }
}

/// A keyspace walk (`RM_Scan`'s cursor), kept between ticks. Only the
/// journal timer, on the main thread, uses it.
struct ScanCursor(*mut raw::RedisModuleScanCursor);

// Created, used and destroyed on the main thread only (under `SHIPPER`).
unsafe impl Send for ScanCursor {}

impl Drop for ScanCursor {
    fn drop(&mut self) {
        if let Some(destroy) = unsafe { raw::RedisModule_ScanCursorDestroy } {
            unsafe { destroy(self.0) };
        }
    }
}

/// Walks the keyspace for journal streams that hold entries (written by
/// another process too: before a restart, on a former primary, before a
/// slot moved here) for at most `budget`, resuming the walk under way;
/// marks their catalogs dirty. `RM_Scan` walks one hash bucket per call,
/// so the slice ends on time whatever the keyspace holds; a `SCAN` page
/// of 1,000 keys held the main thread 1.2-1.4 ms on a Redis of 300,000
/// keys (20 pages a tick while `LAKE.GC` waited), which showed in every
/// client's p99. A key costs about what it costs `SCAN`. Like `SCAN`, a
/// complete walk returns every key that existed for all of it.
fn discover(ctx: &Context, s: &mut Shipper, budget: Duration) {
    let fns = unsafe { (raw::RedisModule_ScanCursorCreate, raw::RedisModule_Scan) };
    let (Some(create), Some(scan)) = fns else {
        return;
    };
    if s.cursor.is_none() {
        let c = unsafe { create() };
        if c.is_null() {
            return;
        }
        s.cursor = Some(ScanCursor(c));
        s.cycle_began = Some(Instant::now());
    }
    let Some(cursor) = s.cursor.as_ref().map(|c| c.0) else {
        return;
    };
    let began = Instant::now();
    let mut found: Vec<String> = Vec::new();
    let mut calls = 0u32;
    let ended = loop {
        let more = unsafe {
            scan(
                ctx.ctx,
                cursor,
                Some(entry::journal_key),
                (&mut found as *mut Vec<String>).cast(),
            )
        };
        if more == 0 {
            break true;
        }
        calls += 1;
        if calls.is_multiple_of(64) && began.elapsed() >= budget {
            break false;
        }
    };
    if ended {
        s.cursor = None;
        if let Some(began) = s.cycle_began.take() {
            if s.cycles.len() == CYCLES_KEPT {
                s.cycles.pop_front();
            }
            s.cycles.push_back((began, Instant::now()));
            WALKS.fetch_add(1, Ordering::Relaxed);
            let ms = began.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
            LAST_WALK_MS.store(ms, Ordering::Relaxed);
        }
    }
    for cat in found {
        if catalog::validate(&cat).is_ok() {
            s.dirty.insert(cat);
        }
    }
}

/// One key of the walk ([`crate::entry::journal_key`]): a stream named
/// `catalog:{<name>}:journal` that holds entries adds `<name>` to `found`.
pub fn scanned(
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    found: &mut Vec<String>,
) {
    let fns = unsafe {
        (
            raw::RedisModule_StringPtrLen,
            raw::RedisModule_KeyType,
            raw::RedisModule_ValueLength,
        )
    };
    let (Some(ptr_len), Some(kind), Some(len)) = fns else {
        return;
    };
    let mut n = 0usize;
    let name = unsafe {
        let p = ptr_len(keyname, &mut n);
        if p.is_null() {
            return;
        }
        std::slice::from_raw_parts(p.cast::<u8>(), n)
    };
    let Some(cat) = name
        .strip_prefix(b"catalog:{")
        .and_then(|r| r.strip_suffix(b"}:journal"))
    else {
        return;
    };
    if key.is_null() || unsafe { kind(key) } != raw::REDISMODULE_KEYTYPE_STREAM as i32 {
        return;
    }
    if unsafe { len(key) } == 0 {
        return;
    }
    if let Ok(cat) = std::str::from_utf8(cat) {
        found.push(cat.to_string());
    }
}
