//! The index's backup in the object store: shipped journal batches
//! ([`lake_shared::journal`]), read back for a restore and for GC.
//!
//! Invariants:
//! - A batch is created, never overwritten (a fresh random name on every
//!   attempt), and answered only once durable: the module trims its
//!   streams only after that answer, so an entry is always in Redis, in
//!   the store, or both.
//! - Reading the backup fails as a whole when any batch cannot be read or
//!   parsed: a restore or a GC working from part of the history could
//!   drop a catalog or delete what it references.
//! - [`protected`] is everything a restorable point within the backup
//!   retention references: the shipped index as of now, plus every object
//!   that left an index less than the retention ago. GC keeps all of it.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use lake_shared::cluster::{self, SlotSet};
use lake_shared::journal::{self, Batch, Entry, State};
use lake_shared::LakeError;

use crate::store::{self, ObjectInfo, Store};

/// Batches read at once.
const READ_CONCURRENCY: usize = 32;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stores `entries` as one batch; answers its key.
pub async fn ship(store: &dyn Store, entries: Vec<Entry>) -> Result<String, LakeError> {
    let body = serde_json::to_vec(&Batch {
        v: journal::BATCH_VERSION,
        entries,
    })
    .map_err(|e| LakeError::internal(format!("cannot encode a journal batch: {e}")))?;
    store::create(
        store,
        || journal::object_key(now_ms(), &uuid::Uuid::new_v4().simple().to_string()),
        body,
    )
    .await
}

/// Every shipped entry, read from the batches among `listed`.
pub async fn read(store: &dyn Store, listed: &[ObjectInfo]) -> Result<Shipped, LakeError> {
    let keys: Vec<String> = listed
        .iter()
        .filter(|o| journal::is_batch(&o.key))
        .map(|o| o.key.clone())
        .collect();
    let batches = keys.len();
    let bodies: Vec<Vec<Entry>> = futures::stream::iter(keys)
        .map(|k| read_batch(store, k))
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(Shipped {
        batches,
        entries: bodies.into_iter().flatten().collect(),
    })
}

async fn read_batch(store: &dyn Store, key: String) -> Result<Vec<Entry>, LakeError> {
    let body = store.get(&key).await?;
    let b: Batch = serde_json::from_slice(&body).map_err(|e| {
        LakeError::data(format!(
            "journal batch '{key}' is not readable ({e}); the backup cannot be trusted until it is fixed or removed"
        ))
    })?;
    if b.v != journal::BATCH_VERSION {
        return Err(LakeError::data(format!(
            "journal batch '{key}' has version {} (this build reads {})",
            b.v,
            journal::BATCH_VERSION
        )));
    }
    Ok(b.entries)
}

/// What the store holds of the journal.
pub struct Shipped {
    pub batches: usize,
    pub entries: Vec<Entry>,
}

/// What GC must keep for the backup's sake, for the catalogs in `served`
/// (every catalog when `None`).
pub struct Protected {
    /// Object keys a restorable point within the retention references.
    pub keys: HashSet<String>,
    /// Of those, the ones the shipped index references as of now.
    pub shipped_now: usize,
}

/// See the module header.
pub fn protected(
    state: &State,
    served: Option<&SlotSet>,
    retention: Duration,
    now_ms: u64,
) -> Protected {
    let ours = |cat: &str| served.is_none_or(|s| s.contains(cluster::catalog_slot(cat)));
    let mut keys = HashSet::new();
    for (cat, cs) in state.live().filter(|(c, _)| ours(c)) {
        keys.extend(cs.objects(cat));
    }
    let shipped_now = keys.len();
    let since = now_ms.saturating_sub(retention.as_millis() as u64);
    for (key, left) in &state.left {
        let cat = key.rsplit_once('/').map_or("", |(c, _)| c);
        if *left >= since && ours(cat) {
            keys.insert(key.clone());
        }
    }
    Protected { keys, shipped_now }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_shared::catalog;
    use lake_shared::journal::Change;

    const U1: &str = "00000000-0000-4000-8000-000000000001";
    const U2: &str = "00000000-0000-4000-8000-000000000002";

    fn entries() -> Vec<Entry> {
        let e = |id: &str, change| Entry {
            catalog: "c".into(),
            id: id.into(),
            change,
        };
        vec![
            e(
                "1000-0",
                Change::Delta {
                    member: format!("a:{U1}"),
                    stamp: 1,
                },
            ),
            e(
                "2000-0",
                Change::Delta {
                    member: format!("a:{U2}"),
                    stamp: 2,
                },
            ),
            e(
                "5000-0",
                Change::Remove {
                    member: format!("a:{U1}"),
                },
            ),
        ]
    }

    #[test]
    fn protection_covers_the_index_and_what_left_it_within_the_retention() {
        let state = journal::fold(entries(), None);
        let p = protected(&state, None, Duration::from_secs(10), 14_000);
        assert_eq!(p.shipped_now, 1);
        assert!(p.keys.contains(&catalog::delta_object("c", U2)));
        assert!(p.keys.contains(&catalog::delta_object("c", U1)));
        let p = protected(&state, None, Duration::from_secs(10), 16_000);
        assert!(!p.keys.contains(&catalog::delta_object("c", U1)));
    }

    #[test]
    fn protection_is_limited_to_the_served_slots() {
        let state = journal::fold(entries(), None);
        let mut other = SlotSet::default();
        other.insert(cluster::catalog_slot("c").wrapping_add(1) % 16384);
        let p = protected(&state, Some(&other), Duration::from_secs(10), 14_000);
        assert!(p.keys.is_empty());
    }

    #[tokio::test]
    async fn shipped_batches_read_back_and_a_broken_one_fails_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::file::FileStore::open(dir.path().to_str().unwrap()).unwrap();
        let k1 = ship(&store, entries()).await.unwrap();
        let k2 = ship(&store, entries()).await.unwrap();
        assert_ne!(k1, k2);
        let listed = store.list().await.unwrap();
        let got = read(&store, &listed).await.unwrap();
        assert_eq!((got.batches, got.entries.len()), (2, 6));
        let state = journal::fold(got.entries, None);
        assert_eq!(state.duplicates, 3);
        store
            .put(&journal::object_key(1, "broken"), b"{not json".to_vec())
            .await
            .unwrap();
        let listed = store.list().await.unwrap();
        let err = read(&store, &listed).await.err().unwrap();
        assert!(err.message.contains("broken"), "{}", err.message);
    }
}
