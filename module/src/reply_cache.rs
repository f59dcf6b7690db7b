//! The hot-read reply cache: `LAKE.READ` (and `LAKE.VIEW`) of a catalog
//! that has not changed since the last one is answered on Redis's main
//! thread, with no sidecar round trip; a catalog that only gained deltas
//! written through this node since is folded here too, from the last answer
//! and the bodies this node indexed.
//!
//! Why it can never answer what a fresh merge would not: an answer is kept
//! under exactly what the read was planned from in one command execution
//! (catalog, path text, snapshot uuid, number of deltas after it, the last
//! one's uuid, removal fence); a document is a function of its snapshot and
//! its deltas, which are immutable objects named by random uuids, and the
//! index only appends otherwise, so an equal key is an equal answer. A
//! write, `LAKE.REMOVE`, `LAKE.DROP` or compaction changes the key. The
//! same argument makes a cached answer a prefix of a later plan when the
//! snapshot and fence are equal and the plan's delta at the answer's count
//! is the answer's last: nothing before it can have gone without the count
//! changing, nothing can be inserted before the newest. A body is kept
//! under the uuid it was indexed with, after its `ZADD`: a uuid names one
//! immutable write, so a body can never be stale either. The cache is
//! emptied whenever the module (re)connects to a sidecar, whose custom
//! modes may have changed.
//!
//! Bounded by `lake.reply-cache-mb` (0: off), answers and bodies together,
//! and evicted least recently used; its memory is Redis's (the module
//! allocates through Redis), so it shows in `used_memory`. Reads that ask
//! for a snapshot (`SNAP`, or the `snapshot-every` rule) always go to the
//! sidecar, so catalogs keep compacting.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lake_shared::mode;
use lake_shared::proto::Read;

use crate::config;

/// The whole index when a read was planned: how many entries it held and
/// its newest stamp (0 when empty). With the snapshot and the fence, it
/// tells an unchanged index, or one that only gained deltas, without
/// reading its entries (see [`relate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Shape {
    pub total: usize,
    pub newest: i64,
}

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
    shape: Shape,
}

impl Key {
    /// The key of `LAKE.VIEW <catalog> <view>` planned as `r`.
    pub fn of_view(r: &Read, shape: Shape, view: &str) -> Key {
        Key {
            view: Some(view.to_string()),
            ..Key::of(r, shape)
        }
    }

    pub fn of(r: &Read, shape: Shape) -> Key {
        Key {
            catalog: r.catalog.clone(),
            view: None,
            path: r.path.clone(),
            base: r.base.as_ref().map(|b| b.uuid.clone()),
            deltas: r.deltas.len(),
            last: r.deltas.last().map(|d| d.uuid.clone()),
            fence: r.fence,
            shape,
        }
    }

    /// The same index state read at another path.
    pub fn at_path(&self, path: Option<String>) -> Key {
        Key {
            path,
            ..self.clone()
        }
    }

    /// The key after `news` (uuids) were appended to the index, which now
    /// has `shape`.
    pub fn grown(&self, news: &[String], shape: Shape) -> Key {
        Key {
            deltas: self.deltas + news.len(),
            last: news.last().cloned().or_else(|| self.last.clone()),
            shape,
            ..self.clone()
        }
    }

    /// Deltas after the snapshot.
    pub fn deltas(&self) -> usize {
        self.deltas
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    fn bytes(&self) -> usize {
        // The strings, plus the map's and the order's bookkeeping.
        self.catalog.len()
            + self.view.as_ref().map_or(0, String::len)
            + self.path.as_ref().map_or(0, String::len)
            + self.base.as_ref().map_or(0, String::len)
            + self.last.as_ref().map_or(0, String::len)
            + 176
    }
}

/// What the index says now, read without its entries: the snapshot a read
/// would start from, the fence, the shape, and the newest entry's uuid and
/// whether it is after the snapshot.
pub struct Now<'a> {
    pub catalog: &'a str,
    pub base: Option<&'a str>,
    pub fence: i64,
    pub shape: Shape,
    pub newest: Option<&'a str>,
}

/// How the index now stands to the catalog's newest whole-document answer
/// (the key it is kept under, shared with the cache: no strings copied).
pub enum Kept {
    /// Nothing changed since `0` was answered.
    Same(Arc<Key>),
    /// Entries were added after `0`'s newest, nothing else changed (as
    /// far as the snapshot, the fence and the newest stamp tell: the caller
    /// reads the new entries and checks they account for the whole growth).
    Grew(Arc<Key>),
}

/// Relates `now` to the newest whole-document answer kept for its catalog.
/// Why this is exact: entries are only appended after the newest (stamps
/// only grow) and only removed by `LAKE.REMOVE`/`LAKE.DROP` (which move
/// the fence) or by trimming (which shrinks the count); so the same
/// snapshot, fence, count and newest entry mean the same entries, and a
/// count grown by exactly the entries after the old newest means those
/// were appended and nothing else changed.
pub fn relate(now: &Now) -> Option<Kept> {
    if config::reply_cache_bytes() == 0 {
        return None;
    }
    with(|c| {
        let k = &c.latest.get(now.catalog)?.key;
        if k.base.as_deref() != now.base || k.fence != now.fence {
            return None;
        }
        if k.shape == now.shape {
            // The newest entry is the answer's last delta, or none of the
            // index is after the snapshot (then neither is it now).
            let same = match &k.last {
                Some(last) => now.newest == Some(last.as_str()),
                None => k.deltas == 0,
            };
            return same.then(|| Kept::Same(k.clone()));
        }
        (now.shape.newest > k.shape.newest && now.shape.total > k.shape.total)
            .then(|| Kept::Grew(k.clone()))
    })
}

/// A cached answer: the reply text, or `None` for nil.
pub type Answer = Option<Arc<str>>;

struct Entry {
    answer: Answer,
    used: u64,
    bytes: usize,
}

/// A write this node indexed, as the read fold needs it.
#[derive(Debug)]
pub struct Body {
    pub uuid: String,
    /// A built-in mode's name.
    pub mode: &'static str,
    pub value: String,
}

impl Body {
    /// The body of a write of `value` in `mode` (normalised) to `cat`, when
    /// it is worth keeping for the read fold: the catalog has an answer to
    /// fold it onto (else nothing is copied: a write-only catalog costs the
    /// main thread nothing here), the value is small and UTF-8, the mode
    /// built in. Its uuid is filled in once indexed.
    pub fn of(cat: &str, value: &[u8], mode: &str) -> Option<Body> {
        if value.len() > FOLD_BYTES || config::reply_cache_bytes() == 0 {
            return None;
        }
        let mode = mode::BUILTINS.into_iter().find(|m| *m == mode)?;
        if !with(|c| c.latest.contains_key(cat)) {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?.to_string();
        Some(Body {
            uuid: String::new(),
            mode,
            value,
        })
    }

    fn bytes(&self) -> usize {
        self.uuid.len() + self.value.len() + 64
    }
}

/// A catalog's newest whole-document `LAKE.READ` answer, and the bodies of
/// the writes this node indexed in it since (commit order, which is stamp
/// order), at most [`FOLD_BYTES`] of them.
struct Latest {
    key: Arc<Key>,
    pending: Vec<Arc<Body>>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    /// Keys are shared with `order` and `latest`: a hit copies no string.
    answers: HashMap<Arc<Key>, Entry>,
    /// Catalog -> its [`Latest`]; its key is always in `answers`.
    latest: HashMap<String, Latest>,
    /// Last use -> key, oldest first.
    order: BTreeMap<u64, Arc<Key>>,
    bytes: usize,
    clock: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Marks the answer under `key` used now; its answer.
    fn touch(&mut self, key: &Key) -> Option<Answer> {
        let now = self.tick();
        let e = self.answers.get_mut(key)?;
        let used = std::mem::replace(&mut e.used, now);
        let answer = e.answer.clone();
        if let Some(k) = self.order.remove(&used) {
            self.order.insert(now, k);
        }
        Some(answer)
    }

    /// Forgets the answer under `key` (and the catalog's pending bodies
    /// if it was the catalog's newest).
    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.answers.remove(key) {
            self.order.remove(&e.used);
            self.bytes -= e.bytes;
        }
        if self
            .latest
            .get(&key.catalog)
            .is_some_and(|l| *l.key == *key)
        {
            if let Some(l) = self.latest.remove(&key.catalog) {
                self.bytes -= l.bytes;
            }
        }
    }

    /// Evicts the least recently used until `bytes` more fit in `budget`.
    fn make_room(&mut self, bytes: usize, budget: usize) {
        while self.bytes + bytes > budget {
            let Some((_, oldest)) = self.order.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.remove(&oldest);
        }
    }

    fn insert(&mut self, key: Key, answer: Answer, budget: usize) {
        let bytes = key.bytes() + answer.as_ref().map_or(0, |a| a.len());
        if bytes > budget {
            return;
        }
        let now = self.tick();
        if let Some(old) = self.answers.remove(&key) {
            self.order.remove(&old.used);
            self.bytes -= old.bytes;
        }
        self.make_room(bytes, budget);
        let key = Arc::new(key);
        if key.view.is_none() && key.path.is_none() && answer.is_some() {
            match self.latest.get_mut(&key.catalog) {
                Some(l) => l.key = key.clone(),
                None => {
                    let l = Latest {
                        key: key.clone(),
                        pending: Vec::new(),
                        bytes: 0,
                    };
                    self.latest.insert(key.catalog.clone(), l);
                }
            }
        }
        self.order.insert(now, key.clone());
        self.answers.insert(
            key,
            Entry {
                answer,
                used: now,
                bytes,
            },
        );
        self.bytes += bytes;
    }
}

static CACHE: Mutex<Option<Inner>> = Mutex::new(None);
pub static HITS: AtomicU64 = AtomicU64::new(0);
pub static MISSES: AtomicU64 = AtomicU64::new(0);
/// Misses answered by folding this node's writes onto the last answer.
pub static FOLDS: AtomicU64 = AtomicU64::new(0);

fn with<T>(f: impl FnOnce(&mut Inner) -> T) -> T {
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Inner::default))
}

/// The answer kept under `key`, counted as a hit or a miss.
pub fn get(key: &Key) -> Option<Answer> {
    if config::reply_cache_bytes() == 0 {
        return None;
    }
    let found = with(|c| c.touch(key));
    let counter = if found.is_some() { &HITS } else { &MISSES };
    counter.fetch_add(1, Ordering::Relaxed);
    found
}

/// Keeps `answer` under `key`, evicting the least recently used past the
/// budget (an answer larger than the whole budget is not kept).
pub fn put(key: Key, answer: Answer) {
    let budget = config::reply_cache_bytes();
    with(|c| c.insert(key, answer, budget));
}

/// Most bytes of JSON text (the last answer and the values folded onto it)
/// a read folds on Redis's main thread: tens of microseconds, about what
/// replying a `GET` of that size costs.
pub const FOLD_BYTES: usize = 32 << 10;

/// Keeps the body of a write just indexed in `cat` under `body.uuid`, if
/// the catalog has an answer to fold it onto. Lock held (main thread).
pub fn put_body(cat: &str, body: Body) {
    let budget = config::reply_cache_bytes();
    let bytes = body.bytes();
    with(|c| {
        if !c.latest.contains_key(cat) {
            return;
        }
        c.make_room(bytes, budget);
        // Room may have been made by evicting this very catalog's answer.
        let Some(l) = c.latest.get_mut(cat) else {
            return;
        };
        if l.bytes + bytes > FOLD_BYTES {
            // Too much to fold here: the next read goes to the sidecar.
            c.bytes -= l.bytes;
            l.pending.clear();
            l.bytes = 0;
        }
        l.pending.push(Arc::new(body));
        l.bytes += bytes;
        c.bytes += bytes;
    });
}

/// What a read can be folded from: the newest answer of its catalog, a
/// prefix of it, and the bodies of the rest.
pub struct Prefix {
    /// Where the answer is kept.
    pub key: Arc<Key>,
    pub text: Arc<str>,
    /// The bodies of the plan's deltas after the answer's, in order.
    pub bodies: Vec<Arc<Body>>,
}

/// The answer kept under `key` (still its catalog's newest) and the
/// bodies of `news`, the uuids appended since, all of them or `None`.
pub fn prefix(key: &Key, news: &[String]) -> Option<Prefix> {
    with(|c| {
        let l = c.latest.get(&key.catalog).filter(|l| *l.key == *key)?;
        let mut bodies = Vec::with_capacity(news.len());
        let mut from = 0;
        for uuid in news {
            let at = from + l.pending[from..].iter().position(|b| b.uuid == *uuid)?;
            bodies.push(l.pending[at].clone());
            from = at + 1;
        }
        let key = l.key.clone();
        let text = c.touch(&key).flatten()?;
        Some(Prefix { key, text, bodies })
    })
}

/// The answer under `key`, counted as a hit when there is one (a miss here
/// is counted by the full plan that follows).
pub fn hit(key: &Key) -> Option<Answer> {
    let found = with(|c| c.touch(key));
    if found.is_some() {
        HITS.fetch_add(1, Ordering::Relaxed);
    }
    found
}

/// A read folded from `p` answered `text` under `key`: keeps it in place of
/// `p`'s answer, which no later plan can match, and forgets the bodies
/// folded in (and any before them).
pub fn advance(p: &Prefix, key: Key, text: Arc<str>) {
    let budget = config::reply_cache_bytes();
    with(|c| {
        if let Some(e) = c.answers.remove(&p.key) {
            c.order.remove(&e.used);
            c.bytes -= e.bytes;
        }
        if let (Some(l), Some(last)) = (c.latest.get_mut(&key.catalog), p.bodies.last()) {
            if let Some(at) = l.pending.iter().position(|b| Arc::ptr_eq(b, last)) {
                let gone: usize = l.pending.drain(..=at).map(|b| b.bytes()).sum();
                l.bytes -= gone;
                c.bytes -= gone;
            }
        }
        c.insert(key, Some(text), budget);
    });
}

/// Forgets everything (a sidecar (re)connected).
pub fn clear() {
    with(|c| *c = Inner::default());
}

/// `(answers, bodies, bytes)` kept now.
pub fn size() -> (usize, usize, usize) {
    with(|c| {
        let bodies = c.latest.values().map(|l| l.pending.len()).sum();
        (c.answers.len(), bodies, c.bytes)
    })
}
