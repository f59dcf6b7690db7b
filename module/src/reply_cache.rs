//! The hot-read reply cache: `LAKE.READ` (and `LAKE.VIEW`) of a catalog
//! that has not changed since the last one is answered on Redis's main
//! thread, with no sidecar round trip.
//!
//! Why it can never answer what a fresh merge would not: an answer is kept
//! under exactly what the read was planned from in one command execution
//! (catalog, path text, snapshot uuid, number of deltas after it, the last
//! one's uuid, removal fence); a document is a function of its snapshot and
//! its deltas, which are immutable objects named by random uuids, and the
//! index only appends otherwise, so an equal key is an equal answer. A
//! write, `LAKE.REMOVE`, `LAKE.DROP` or compaction changes the key. The
//! cache is emptied whenever the module (re)connects to a sidecar, whose
//! custom modes may have changed.
//!
//! Bounded by `lake.reply-cache-mb` (0: off) and evicted least recently
//! used; its memory is Redis's (the module allocates through Redis), so it
//! shows in `used_memory`. Reads that ask for a snapshot (`SNAP`, or the
//! `snapshot-every` rule) always go to the sidecar, so catalogs keep
//! compacting.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lake_shared::proto::Read;

use crate::config;

/// What one read was planned from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    catalog: String,
    /// `LAKE.VIEW`'s view name; `None` for `LAKE.READ`.
    view: Option<String>,
    path: Option<String>,
    base: Option<String>,
    deltas: usize,
    last: Option<String>,
    fence: i64,
}

impl Key {
    /// The key of `LAKE.VIEW <catalog> <view>` planned as `r`.
    pub fn of_view(r: &Read, view: &str) -> Key {
        Key {
            view: Some(view.to_string()),
            ..Key::of(r)
        }
    }

    pub fn of(r: &Read) -> Key {
        Key {
            catalog: r.catalog.clone(),
            view: None,
            path: r.path.clone(),
            base: r.base.as_ref().map(|b| b.uuid.clone()),
            deltas: r.deltas.len(),
            last: r.deltas.last().map(|d| d.uuid.clone()),
            fence: r.fence,
        }
    }

    fn bytes(&self) -> usize {
        // The strings, plus the map's and the order's bookkeeping.
        self.catalog.len()
            + self.view.as_ref().map_or(0, String::len)
            + self.path.as_ref().map_or(0, String::len)
            + self.base.as_ref().map_or(0, String::len)
            + self.last.as_ref().map_or(0, String::len)
            + 160
    }
}

/// A cached answer: the reply text, or `None` for nil.
pub type Answer = Option<Arc<str>>;

struct Entry {
    answer: Answer,
    used: u64,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Last use -> key, oldest first.
    order: BTreeMap<u64, Key>,
    bytes: usize,
    clock: u64,
}

static CACHE: Mutex<Option<Inner>> = Mutex::new(None);
pub static HITS: AtomicU64 = AtomicU64::new(0);
pub static MISSES: AtomicU64 = AtomicU64::new(0);

fn with<T>(f: impl FnOnce(&mut Inner) -> T) -> T {
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Inner::default))
}

/// The answer kept under `key`, counted as a hit or a miss.
pub fn get(key: &Key) -> Option<Answer> {
    if config::reply_cache_bytes() == 0 {
        return None;
    }
    let found = with(|c| {
        c.clock += 1;
        let now = c.clock;
        let e = c.map.get_mut(key)?;
        c.order.remove(&e.used);
        e.used = now;
        c.order.insert(now, key.clone());
        Some(e.answer.clone())
    });
    let counter = if found.is_some() { &HITS } else { &MISSES };
    counter.fetch_add(1, Ordering::Relaxed);
    found
}

/// Keeps `answer` under `key`, evicting the least recently used past the
/// budget (an answer larger than the whole budget is not kept).
pub fn put(key: Key, answer: Answer) {
    let budget = config::reply_cache_bytes();
    let bytes = key.bytes() + answer.as_ref().map_or(0, |a| a.len());
    if bytes > budget {
        return;
    }
    with(|c| {
        c.clock += 1;
        let now = c.clock;
        if let Some(old) = c.map.remove(&key) {
            c.order.remove(&old.used);
            c.bytes -= old.bytes;
        }
        while c.bytes + bytes > budget {
            let Some((_, oldest)) = c.order.pop_first() else {
                break;
            };
            if let Some(e) = c.map.remove(&oldest) {
                c.bytes -= e.bytes;
            }
        }
        c.order.insert(now, key.clone());
        c.map.insert(
            key,
            Entry {
                answer,
                used: now,
                bytes,
            },
        );
        c.bytes += bytes;
    });
}

/// Forgets everything (a sidecar (re)connected).
pub fn clear() {
    with(|c| *c = Inner::default());
}

/// `(entries, bytes)` kept now.
pub fn size() -> (usize, usize) {
    with(|c| (c.map.len(), c.bytes))
}
