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
//! - Bounded by bytes; the least recently used entries go first. Documents
//!   larger than a quarter of the bound are not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Entries kept per catalog: the newest snapshot and the one before it, so
/// reads still on the old snapshot while a new one is committed do not evict
/// each other.
const PER_CATALOG: usize = 2;

struct Entry {
    base: Option<String>,
    applied: Vec<String>,
    doc: Arc<str>,
    used: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.doc.len() + self.applied.iter().map(|u| u.len() + 24).sum::<usize>() + 128
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Vec<Entry>>,
    bytes: usize,
    tick: u64,
}

/// What a lookup found: the document after the first `applied` deltas.
#[derive(Debug, Clone)]
pub struct Hit {
    pub applied: usize,
    pub doc: Arc<str>,
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
    pub fn lookup(&self, cat: &str, base: Option<&str>, deltas: &[&str]) -> Option<Hit> {
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
        e.used = tick;
        Some(Hit {
            applied: e.applied.len(),
            doc: e.doc.clone(),
        })
    }

    /// Keeps `doc` as what `base` plus `deltas` fold to.
    pub fn store(&self, cat: &str, base: Option<&str>, deltas: Vec<String>, doc: Arc<str>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.tick += 1;
        let entry = Entry {
            base: base.map(str::to_string),
            applied: deltas,
            doc,
            used: inner.tick,
        };
        let size = entry.bytes();
        if size > self.capacity / 4 {
            return;
        }
        let entries = inner.map.entry(cat.to_string()).or_default();
        let mut freed = 0;
        if let Some(i) = entries.iter().position(|e| e.base == entry.base) {
            freed += entries.remove(i).bytes();
        }
        entries.insert(0, entry);
        while entries.len() > PER_CATALOG {
            let oldest = (0..entries.len())
                .min_by_key(|&i| entries[i].used)
                .unwrap_or(0);
            freed += entries.remove(oldest).bytes();
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
    let (cat, i, _) = inner
        .map
        .iter()
        .flat_map(|(c, es)| es.iter().enumerate().map(move |(i, e)| (c, i, e.used)))
        .min_by_key(|(_, _, used)| *used)
        .map(|(c, i, u)| (c.clone(), i, u))?;
    let entries = inner.map.get_mut(&cat)?;
    let e = entries.remove(i);
    if entries.is_empty() {
        inner.map.remove(&cat);
    }
    Some(e.bytes())
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
        c.store("c", Some("s1"), ids(&["a", "b"]), "{\"x\":2}".into());
        let h = c.lookup("c", Some("s1"), &["a", "b", "c"]).unwrap();
        assert_eq!((h.applied, &*h.doc), (2, "{\"x\":2}"));
        assert_eq!(c.lookup("c", Some("s1"), &["a", "b"]).unwrap().applied, 2);
        // Another snapshot, another catalog, a removal, a historical read.
        assert!(c.lookup("c", Some("s2"), &["a", "b"]).is_none());
        assert!(c.lookup("c", None, &["a", "b"]).is_none());
        assert!(c.lookup("d", Some("s1"), &["a", "b"]).is_none());
        assert!(c.lookup("c", Some("s1"), &["a", "c", "d"]).is_none());
        assert!(c.lookup("c", Some("s1"), &["x", "b", "c"]).is_none());
        assert!(c.lookup("c", Some("s1"), &["a"]).is_none());
    }

    #[test]
    fn the_longest_prefix_wins_and_old_snapshots_stay_usable() {
        let c = DocCache::new(1 << 20);
        c.store("c", None, ids(&["a"]), "1".into());
        c.store("c", Some("s1"), ids(&[]), "2".into());
        c.store("c", None, ids(&["a", "b"]), "3".into());
        assert_eq!(&*c.lookup("c", None, &["a", "b", "x"]).unwrap().doc, "3");
        assert_eq!(&*c.lookup("c", Some("s1"), &["y"]).unwrap().doc, "2");
        // A third base pushes out the least recent of the catalog's two.
        c.store("c", Some("s2"), ids(&[]), "4".into());
        assert!(c.lookup("c", Some("s2"), &[]).is_some());
        assert!(c.lookup("c", None, &["a", "b"]).is_none());
    }

    #[test]
    fn bytes_stay_within_the_bound_and_recent_entries_survive() {
        let doc: Arc<str> = "x".repeat(1000).into();
        let c = DocCache::new(10_000);
        for i in 0..50 {
            c.store(&format!("c{i}"), None, ids(&["a"]), doc.clone());
            assert!(c.bytes() <= 10_000);
            // Keep c0 warm.
            assert!(c.lookup("c0", None, &["a"]).is_some(), "after {i}");
        }
        assert!(c.lookup("c49", None, &["a"]).is_some());
        assert!(c.lookup("c1", None, &["a"]).is_none());
        // Too big for the bound: not kept.
        c.store("big", None, ids(&[]), "y".repeat(5000).into());
        assert!(c.lookup("big", None, &[]).is_none());
        let off = DocCache::new(0);
        off.store("c", None, ids(&[]), "1".into());
        assert!(off.lookup("c", None, &[]).is_none());
    }
}
