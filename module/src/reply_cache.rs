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

/// A write this node indexed, as the read fold needs it.
#[derive(Debug)]
pub struct Body {
    pub uuid: String,
    /// A built-in mode's name.
    pub mode: &'static str,
    pub value: String,
}

impl Body {
    /// The body of a write of `value` in `mode` (normalised), when it is
    /// worth keeping for the read fold: the cache is on, the value small
    /// and UTF-8, the mode built in. Its uuid is filled in once indexed.
    pub fn of(value: &[u8], mode: &str) -> Option<Body> {
        if value.len() > FOLD_BYTES || config::reply_cache_bytes() == 0 {
            return None;
        }
        let mode = mode::BUILTINS.into_iter().find(|m| *m == mode)?;
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
    key: Key,
    pending: Vec<Arc<Body>>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<Key, Entry>,
    /// Catalog -> its [`Latest`]; its key is always in `answers`.
    latest: HashMap<String, Latest>,
    /// Last use -> key, oldest first.
    order: BTreeMap<u64, Key>,
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
        self.order.remove(&e.used);
        e.used = now;
        self.order.insert(now, key.clone());
        Some(e.answer.clone())
    }

    /// Forgets the answer under `key` (and the catalog's pending bodies
    /// if it was the catalog's newest).
    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.answers.remove(key) {
            self.order.remove(&e.used);
            self.bytes -= e.bytes;
        }
        if self.latest.get(&key.catalog).is_some_and(|l| l.key == *key) {
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
    pub key: Key,
    pub text: Arc<str>,
    /// The bodies of the plan's deltas after the answer's, in order.
    pub bodies: Vec<Arc<Body>>,
}

/// The newest whole-document answer of `r`'s catalog when it is a prefix
/// of `r` (same snapshot and fence, fewer deltas, the last one where `r`
/// has it) and every delta after it has its body here.
pub fn prefix(r: &Read) -> Option<Prefix> {
    if config::reply_cache_bytes() == 0 || r.path.is_some() {
        return None;
    }
    with(|c| {
        let l = c.latest.get(&r.catalog)?;
        let k = &l.key;
        let covers = k.base.as_deref() == r.base.as_ref().map(|b| b.uuid.as_str())
            && k.fence == r.fence
            && k.deltas < r.deltas.len()
            && match k.deltas.checked_sub(1) {
                Some(i) => k.last.as_deref() == Some(r.deltas[i].uuid.as_str()),
                None => k.last.is_none(),
            };
        if !covers {
            return None;
        }
        let mut bodies = Vec::with_capacity(r.deltas.len() - k.deltas);
        let mut from = 0;
        for d in &r.deltas[k.deltas..] {
            let at = from + l.pending[from..].iter().position(|b| b.uuid == d.uuid)?;
            bodies.push(l.pending[at].clone());
            from = at + 1;
        }
        let key = k.clone();
        let text = c.touch(&key).flatten()?;
        Some(Prefix { key, text, bodies })
    })
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
