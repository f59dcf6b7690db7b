//! The computed-view cache (`LAKE.VIEW <catalog> <name>`, after upstream's
//! Sampler): a view's value per catalog, computed at most once per catalog
//! version.
//!
//! Why it can never be stale:
//! - A value is kept with the exact version it was computed from: the
//!   snapshot the read started at, how many deltas followed, the last one's
//!   uuid (random, never reused) and the catalog's fence (moved by every
//!   `LAKE.REMOVE` and `LAKE.DROP`); the index only appends otherwise, so
//!   equal versions are equal documents. Any write, removal, drop or
//!   compaction changes the version, and the next call recomputes.
//! - View code is loaded once at start and the cache lives in this
//!   process: new code means a restarted sidecar and an empty cache.
//!
//! One computation per (catalog, view) at a time: callers of one version
//! wait for the first and share its value. Bounded: past `budget` bytes of
//! values the whole cache is dropped (values are recomputed on demand).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a value was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub base: Option<String>,
    pub deltas: usize,
    pub last: Option<String>,
    pub fence: i64,
}

/// One (catalog, view)'s slot: the version and value last computed.
pub type Slot = Arc<tokio::sync::Mutex<Option<(Version, Option<Arc<str>>)>>>;

pub struct ViewCache {
    slots: Mutex<HashMap<(String, String), Slot>>,
    bytes: Mutex<usize>,
    budget: usize,
}

impl ViewCache {
    pub fn new(budget: usize) -> ViewCache {
        ViewCache {
            slots: Mutex::new(HashMap::new()),
            bytes: Mutex::new(0),
            budget,
        }
    }

    /// The slot of `view` over `catalog`; lock it, check its version, and
    /// compute and [`ViewCache::filled`] it when it differs.
    pub fn slot(&self, catalog: &str, view: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry((catalog.to_string(), view.to_string()))
            .or_default()
            .clone()
    }

    /// Accounts a value of `len` bytes stored in a slot (replacing one of
    /// `old` bytes); drops everything past the budget.
    pub fn filled(&self, len: usize, old: usize) {
        let mut total = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *total = total.saturating_sub(old) + len;
        if *total > self.budget {
            self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
            *total = 0;
        }
    }

    /// Bytes of values held (about).
    pub fn bytes(&self) -> usize {
        *self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(deltas: usize, fence: i64) -> Version {
        Version {
            base: None,
            deltas,
            last: Some(format!("u{deltas}")),
            fence,
        }
    }

    #[tokio::test]
    async fn a_slot_keeps_its_version_and_value_until_replaced() {
        let c = ViewCache::new(1 << 20);
        let s = c.slot("cat", "count");
        *s.lock().await = Some((v(3, 0), Some(Arc::from("3"))));
        let again = c.slot("cat", "count");
        assert_eq!(
            again.lock().await.as_ref().map(|(v, _)| v.clone()),
            Some(v(3, 0))
        );
        // Another view or catalog is another slot.
        assert!(c.slot("cat", "sum").lock().await.is_none());
        assert!(c.slot("other", "count").lock().await.is_none());
        // A removal moves the fence: a different version.
        assert_ne!(v(3, 0), v(3, 1));
    }

    #[tokio::test]
    async fn past_the_budget_everything_is_dropped() {
        let c = ViewCache::new(10);
        let s = c.slot("cat", "count");
        *s.lock().await = Some((v(1, 0), Some(Arc::from("12345678"))));
        c.filled(8, 0);
        assert_eq!(c.bytes(), 8);
        c.filled(8, 0);
        assert_eq!(c.bytes(), 0);
        assert!(c.slot("cat", "count").lock().await.is_none());
    }
}
