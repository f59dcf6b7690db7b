//! The merged-document cache: per catalog, the document a snapshot plus a
//! run of deltas folds to, so a read merges only the deltas written since.
//!
//! Invariants:
//! - An entry is named by content: the snapshot's uuid and the exact,
//!   ordered list of delta uuids folded into it. Objects are immutable, so an
//!   entry is never stale; it is only ever unused.
//! - A read may start from an entry only when its own delta list begins with
//!   exactly the entry's list (same uuids, same order). A removal
//!   (`LAKE.REMOVE`) or a historical read (`AT`) breaks the prefix and falls
//!   back to a full merge, so the cache can never resurrect a removed delta.
//! - Bounded by bytes; the least recently used entries go first (found in
//!   O(log n) through the use order, however many catalogs are cached).
//!   Documents larger than a quarter of the bound are not kept.
//! - An entry may also hold its document parsed (the tree the fold built),
//!   so the next read folds new deltas onto it without parsing the text
//!   again; it is counted as [`TREE_FACTOR`] times the text. A read that
//!   folds takes the tree out (a concurrent read of the same entry parses
//!   the text instead) and stores the tree it built; the text always stays.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Entries kept per catalog: the newest snapshot and the one before it, so
/// reads still on the old snapshot while a new one is committed do not evict
/// each other.
const PER_CATALOG: usize = 2;

/// Bytes a parsed tree is counted as, per byte of its text: `serde_json`
/// values with `preserve_order` and `arbitrary_precision` hold every map,
/// key, string and number on the heap (an estimate, on the safe side for
/// documents of small fields).
pub const TREE_FACTOR: usize = 4;

struct Entry {
    base: Option<String>,
    applied: Vec<String>,
    doc: Arc<str>,
    tree: Option<Value>,
    used: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.doc.len()
            + self.tree_bytes()
            + self.applied.iter().map(|u| u.len() + 24).sum::<usize>()
            + 128
    }

    fn tree_bytes(&self) -> usize {
        self.tree
            .as_ref()
            .map_or(0, |_| self.doc.len() * TREE_FACTOR)
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Vec<Entry>>,
    /// Every entry's last use (its `used` tick, unique) -> its catalog.
    order: BTreeMap<u64, String>,
    bytes: usize,
    tick: u64,
}

impl Inner {
    /// Removes entry `i` of `cat` (which must exist); returns its size.
    fn remove(&mut self, cat: &str, i: usize) -> usize {
        let Some(entries) = self.map.get_mut(cat) else {
            return 0;
        };
        let e = entries.remove(i);
        self.order.remove(&e.used);
        if entries.is_empty() {
            self.map.remove(cat);
        }
        e.bytes()
    }
}

/// What a lookup found: the document after the first `applied` deltas,
/// and its tree when the read will fold it and the entry still had it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub applied: usize,
    pub doc: Arc<str>,
    pub tree: Option<Value>,
}

pub struct DocCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl DocCache {
    /// A cache holding at most `capacity` bytes (0 disables it).
    pub fn new(capacity: usize) -> DocCache {
        DocCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The longest cached prefix of `deltas` on top of snapshot `base`.
    /// With `fold`, or when the hit leaves deltas to apply, the entry's
    /// tree comes out with it (the read will fold onto it).
    pub fn lookup(
        &self,
        cat: &str,
        base: Option<&str>,
        deltas: &[&str],
        fold: bool,
    ) -> Option<Hit> {
        let mut inner = self.inner.lock().ok()?;
        inner.tick += 1;
        let tick = inner.tick;
        let entries = inner.map.get_mut(cat)?;
        let e = entries
            .iter_mut()
            .filter(|e| {
                e.base.as_deref() == base
                    && e.applied.len() <= deltas.len()
                    && e.applied.iter().zip(deltas).all(|(a, b)| a == b)
            })
            .max_by_key(|e| e.applied.len())?;
        let last = std::mem::replace(&mut e.used, tick);
        let (freed, tree) = if fold || e.applied.len() < deltas.len() {
            (e.tree_bytes(), e.tree.take())
        } else {
            (0, None)
        };
        let hit = Hit {
            applied: e.applied.len(),
            doc: e.doc.clone(),
            tree,
        };
        inner.bytes -= freed;
        inner.order.remove(&last);
        inner.order.insert(tick, cat.to_string());
        Some(hit)
    }

    /// Keeps `doc` (and its `tree`, when the fold built one) as what
    /// `base` plus `deltas` fold to.
    pub fn store(
        &self,
        cat: &str,
        base: Option<&str>,
        deltas: Vec<String>,
        doc: Arc<str>,
        tree: Option<Value>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.tick += 1;
        let entry = Entry {
            base: base.map(str::to_string),
            applied: deltas,
            doc,
            tree,
            used: inner.tick,
        };
        let size = entry.bytes();
        if size > self.capacity / 4 {
            return;
        }
        let tick = entry.used;
        let mut freed = 0;
        let same_base = inner
            .map
            .get(cat)
            .and_then(|es| es.iter().position(|e| e.base == entry.base));
        if let Some(i) = same_base {
            freed += inner.remove(cat, i);
        }
        inner
            .map
            .entry(cat.to_string())
            .or_default()
            .insert(0, entry);
        inner.order.insert(tick, cat.to_string());
        while let Some(oldest) = inner
            .map
            .get(cat)
            .filter(|es| es.len() > PER_CATALOG)
            .and_then(|es| (0..es.len()).min_by_key(|&i| es[i].used))
        {
            freed += inner.remove(cat, oldest);
        }
        inner.bytes = inner.bytes + size - freed;
        while inner.bytes > self.capacity {
            let Some(freed) = evict_oldest(&mut inner) else {
                break;
            };
            inner.bytes -= freed;
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.bytes)
    }
}

/// Drops the least recently used entry; returns its size.
fn evict_oldest(inner: &mut Inner) -> Option<usize> {
    let (used, cat) = inner.order.pop_first()?;
    let i = inner.map.get(&cat)?.iter().position(|e| e.used == used)?;
    inner.order.insert(used, cat.clone());
    Some(inner.remove(&cat, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_hit_needs_the_same_base_and_an_exact_prefix() {
        let c = DocCache::new(1 << 20);
        c.store("c", Some("s1"), ids(&["a", "b"]), "{\"x\":2}".into(), None);
        let h = c.lookup("c", Some("s1"), &["a", "b", "c"], false).unwrap();
        assert_eq!((h.applied, &*h.doc), (2, "{\"x\":2}"));
        assert_eq!(
            c.lookup("c", Some("s1"), &["a", "b"], false)
                .unwrap()
                .applied,
            2
        );
        // Another snapshot, another catalog, a removal, a historical read.
        assert!(c.lookup("c", Some("s2"), &["a", "b"], false).is_none());
        assert!(c.lookup("c", None, &["a", "b"], false).is_none());
        assert!(c.lookup("d", Some("s1"), &["a", "b"], false).is_none());
        assert!(c.lookup("c", Some("s1"), &["a", "c", "d"], false).is_none());
        assert!(c.lookup("c", Some("s1"), &["x", "b", "c"], false).is_none());
        assert!(c.lookup("c", Some("s1"), &["a"], false).is_none());
    }

    #[test]
    fn the_longest_prefix_wins_and_old_snapshots_stay_usable() {
        let c = DocCache::new(1 << 20);
        c.store("c", None, ids(&["a"]), "1".into(), None);
        c.store("c", Some("s1"), ids(&[]), "2".into(), None);
        c.store("c", None, ids(&["a", "b"]), "3".into(), None);
        assert_eq!(
            &*c.lookup("c", None, &["a", "b", "x"], false).unwrap().doc,
            "3"
        );
        assert_eq!(&*c.lookup("c", Some("s1"), &["y"], false).unwrap().doc, "2");
        // A third base pushes out the least recent of the catalog's two.
        c.store("c", Some("s2"), ids(&[]), "4".into(), None);
        assert!(c.lookup("c", Some("s2"), &[], false).is_some());
        assert!(c.lookup("c", None, &["a", "b"], false).is_none());
    }

    #[test]
    fn bytes_stay_within_the_bound_and_recent_entries_survive() {
        let doc: Arc<str> = "x".repeat(1000).into();
        let c = DocCache::new(10_000);
        for i in 0..50 {
            c.store(&format!("c{i}"), None, ids(&["a"]), doc.clone(), None);
            assert!(c.bytes() <= 10_000);
            // Keep c0 warm.
            assert!(c.lookup("c0", None, &["a"], false).is_some(), "after {i}");
        }
        assert!(c.lookup("c49", None, &["a"], false).is_some());
        assert!(c.lookup("c1", None, &["a"], false).is_none());
        // Too big for the bound: not kept.
        c.store("big", None, ids(&[]), "y".repeat(5000).into(), None);
        assert!(c.lookup("big", None, &[], false).is_none());
        let off = DocCache::new(0);
        off.store("c", None, ids(&[]), "1".into(), None);
        assert!(off.lookup("c", None, &[], false).is_none());
    }

    #[test]
    fn a_folding_read_takes_the_tree_and_its_bytes_leave_the_count() {
        let c = DocCache::new(1 << 20);
        let tree = serde_json::json!({"x": 2});
        c.store(
            "c",
            None,
            ids(&["a"]),
            "{\"x\":2}".into(),
            Some(tree.clone()),
        );
        let with_tree = c.bytes();
        assert!(with_tree >= 7 * (1 + TREE_FACTOR));
        // An unchanged read without a path answers the text: no tree.
        assert!(c.lookup("c", None, &["a"], false).unwrap().tree.is_none());
        // A read with new deltas (or a path) takes it, once.
        let h = c.lookup("c", None, &["a", "b"], false).unwrap();
        assert_eq!((h.applied, h.tree), (1, Some(tree)));
        assert_eq!(c.bytes(), with_tree - 7 * TREE_FACTOR);
        let again = c.lookup("c", None, &["a"], true).unwrap();
        assert_eq!((&*again.doc, again.tree), ("{\"x\":2}", None));
    }

    /// The use order, the entries and the byte count stay in step through
    /// any mix of stores, lookups, replacements and evictions.
    #[test]
    fn the_use_order_tracks_every_entry() {
        let c = DocCache::new(40_000);
        let doc: Arc<str> = "x".repeat(900).into();
        for i in 0..2_000u64 {
            let cat = format!("c{}", i % 37);
            let base = format!("s{}", i % 3);
            let tree = (i % 2 == 0).then(|| serde_json::json!(i));
            c.store(&cat, Some(&base), ids(&["a"]), doc.clone(), tree);
            let _ = c.lookup(
                &format!("c{}", (i * 7) % 37),
                Some("s1"),
                &["a", "b"],
                false,
            );
            let inner = c.inner.lock().unwrap();
            let entries: usize = inner.map.values().map(Vec::len).sum();
            assert_eq!(inner.order.len(), entries, "after {i}");
            let bytes: usize = inner.map.values().flatten().map(Entry::bytes).sum();
            assert_eq!(inner.bytes, bytes, "after {i}");
            assert!(inner.bytes <= 40_000);
            for (used, cat) in &inner.order {
                assert!(inner.map[cat].iter().any(|e| e.used == *used));
            }
        }
    }
}
