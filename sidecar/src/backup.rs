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
//! - A checkpoint ([`checkpoint`]) folds only settled batches (named long
//!   enough ago that none named before can still be on its way), so "every
//!   batch up to its `upto`" is exact; batches and checkpoints are deleted
//!   only when a checkpoint at least the retention old covers them, so
//!   every point within the retention stays restorable.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use lake_shared::cluster::{self, SlotSet};
use lake_shared::journal::{self, Batch, Checkpoint, Entry, State};
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

/// Every shipped entry of the batches among `listed` that `want` accepts.
async fn read_batches(
    store: &dyn Store,
    listed: &[ObjectInfo],
    want: impl Fn(&str) -> bool,
) -> Result<(usize, Vec<Entry>), LakeError> {
    let mut keys: Vec<String> = listed
        .iter()
        .filter(|o| journal::is_batch(&o.key) && want(&o.key))
        .map(|o| o.key.clone())
        .collect();
    keys.sort();
    let batches = keys.len();
    let bodies: Vec<Vec<Entry>> = futures::stream::iter(keys)
        .map(|k| read_batch(store, k))
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    Ok((batches, bodies.into_iter().flatten().collect()))
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

/// The shipped index, folded.
pub struct Loaded {
    pub state: State,
    /// The checkpoint it started from.
    pub checkpoint: Option<String>,
    /// The newest batch folded in.
    pub upto: Option<String>,
    /// Batches read (after the checkpoint).
    pub batches: usize,
    pub entries: usize,
}

/// Folds the backup as of `at_ms` (the newest point when `None`): the
/// newest checkpoint named at or before it, then every batch after that
/// checkpoint. A point older than every checkpoint, when the batches
/// before the oldest are gone, is refused.
pub async fn load(
    store: &dyn Store,
    listed: &[ObjectInfo],
    at_ms: Option<u64>,
) -> Result<Loaded, LakeError> {
    let mut checkpoints: Vec<&str> = listed
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| journal::is_checkpoint(k))
        .collect();
    checkpoints.sort();
    let usable = checkpoints
        .iter()
        .rev()
        .find(|k| at_ms.is_none_or(|t| journal::key_ms(k).is_some_and(|m| m <= t)));
    let (base, upto) = match usable {
        Some(key) => {
            let cp = read_checkpoint(store, key).await?;
            let upto = cp.upto.clone();
            (cp.into_state(), Some(upto))
        }
        None => {
            if let (Some(t), Some(oldest)) = (at_ms, checkpoints.first()) {
                let batches_before = listed.iter().any(|o| {
                    journal::is_batch(&o.key) && o.key.as_str() <= oldest_upto(oldest).as_str()
                });
                if !batches_before {
                    return Err(LakeError::invalid(format!(
                        "the backup reaches back to {} ms (its oldest checkpoint); {t} is older than that",
                        journal::key_ms(oldest).unwrap_or(0)
                    )));
                }
            }
            (State::default(), None)
        }
    };
    let after = upto.clone();
    let (batches, entries) =
        read_batches(store, listed, |k| after.as_deref().is_none_or(|u| k > u)).await?;
    let newest = listed
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| journal::is_batch(k) && after.as_deref().is_none_or(|u| *k > u))
        .max()
        .map(String::from)
        .or(upto);
    let n = entries.len();
    Ok(Loaded {
        state: journal::fold_onto(base, entries, at_ms),
        checkpoint: usable.map(|k| k.to_string()),
        upto: newest,
        batches,
        entries: n,
    })
}

/// [`load`] from `listed`, listed again and retried when a checkpoint
/// elsewhere deleted journal objects while they were being read (it only
/// deletes what a newer checkpoint covers, so a fresh listing has it).
pub async fn load_fresh(
    store: &dyn Store,
    mut listed: Vec<ObjectInfo>,
    at_ms: Option<u64>,
) -> Result<(Vec<ObjectInfo>, Loaded), LakeError> {
    const TRIES: usize = 5;
    let journal_keys = |l: &[ObjectInfo]| -> Vec<String> {
        l.iter()
            .filter(|o| journal::is_batch(&o.key) || journal::is_checkpoint(&o.key))
            .map(|o| o.key.clone())
            .collect()
    };
    for _ in 1..TRIES {
        match load(store, &listed, at_ms).await {
            Ok(l) => return Ok((listed, l)),
            Err(e) => {
                let fresh = store.list().await?;
                let now: HashSet<String> = journal_keys(&fresh).into_iter().collect();
                if journal_keys(&listed).iter().all(|k| now.contains(k)) {
                    return Err(e);
                }
                listed = fresh;
            }
        }
    }
    let l = load(store, &listed, at_ms).await?;
    Ok((listed, l))
}

/// The batch key a checkpoint key was named after.
fn oldest_upto(checkpoint: &str) -> String {
    let name = checkpoint.rsplit_once('/').map_or(checkpoint, |(_, n)| n);
    let stem = name.split('.').next().unwrap_or(name);
    format!("{}/{stem}.json", journal::FOLDER)
}

async fn read_checkpoint(store: &dyn Store, key: &str) -> Result<Checkpoint, LakeError> {
    let body = store.get(key).await?;
    let cp: Checkpoint = serde_json::from_slice(&body).map_err(|e| {
        LakeError::data(format!(
            "journal checkpoint '{key}' is not readable ({e}); remove it to restore from the batches, if they are still there"
        ))
    })?;
    if cp.v != journal::CHECKPOINT_VERSION {
        return Err(LakeError::data(format!(
            "journal checkpoint '{key}' has version {} (this build reads {})",
            cp.v,
            journal::CHECKPOINT_VERSION
        )));
    }
    Ok(cp)
}

/// What one [`checkpoint`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The checkpoint written, if there were settled batches to fold.
    pub written: Option<String>,
    pub batches_folded: usize,
    /// Batches and checkpoints deleted: older than the backup retention
    /// and covered by a newer checkpoint.
    pub deleted: usize,
}

/// Folds the settled batches (named more than `settle_ms` before `now_ms`:
/// any batch named earlier is visible by then, since a PUT gives up long
/// before) into a new checkpoint, then deletes what no point within
/// `retention_ms` needs: checkpoints before the newest one at least that
/// old, and the batches it covers. Several sidecars sharing a store may
/// each do this; every object is created once and deleted only when
/// covered, so their checkpoints agree.
pub async fn checkpoint(
    store: &dyn Store,
    now_ms: u64,
    settle_ms: u64,
    retention_ms: u64,
) -> Result<CheckpointReport, LakeError> {
    let listed = store.list().await?;
    let settled = |k: &str| journal::key_ms(k).is_some_and(|m| m + settle_ms <= now_ms);
    let mut report = CheckpointReport::default();
    let newest = listed
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| journal::is_batch(k) && settled(k))
        .max()
        .map(String::from);
    let mut checkpoints: Vec<String> = listed
        .iter()
        .filter(|o| journal::is_checkpoint(&o.key))
        .map(|o| o.key.clone())
        .collect();
    if let Some(upto) = newest {
        let covered = checkpoints
            .iter()
            .max()
            .is_some_and(|c| oldest_upto(c) >= upto);
        if !covered {
            let only_settled: Vec<ObjectInfo> = listed
                .iter()
                .filter(|o| !journal::is_batch(&o.key) || o.key <= upto)
                .cloned()
                .collect();
            let loaded = load(store, &only_settled, None).await?;
            let since = now_ms.saturating_sub(retention_ms);
            let mut state = loaded.state;
            state.left.retain(|_, t| *t >= since);
            let cp = Checkpoint {
                v: journal::CHECKPOINT_VERSION,
                upto: upto.clone(),
                // Dropped catalogs too: their last id keeps a drop shipped
                // again after a failover from clearing what came later.
                catalogs: state.catalogs,
                left: state.left,
            };
            let body = serde_json::to_vec(&cp)
                .map_err(|e| LakeError::internal(format!("cannot encode a checkpoint: {e}")))?;
            let key = store::create(
                store,
                || journal::checkpoint_key(&upto, &uuid::Uuid::new_v4().simple().to_string()),
                body,
            )
            .await?;
            report.batches_folded = loaded.batches;
            checkpoints.push(key.clone());
            report.written = Some(key);
        }
    }
    // The base every point within the retention can start from.
    checkpoints.sort();
    let cutoff = now_ms.saturating_sub(retention_ms);
    let Some(base) = checkpoints
        .iter()
        .rev()
        .find(|k| journal::key_ms(k).is_some_and(|m| m <= cutoff))
        .cloned()
    else {
        return Ok(report);
    };
    let base_upto = oldest_upto(&base);
    let doomed: Vec<String> = listed
        .iter()
        .map(|o| o.key.clone())
        .filter(|k| journal::is_batch(k) && *k <= base_upto)
        .chain(checkpoints.into_iter().filter(|k| *k < base))
        .collect();
    for k in &doomed {
        store.delete(k).await?;
    }
    report.deleted = doomed.len();
    Ok(report)
}

/// Every shipped entry, read from the batches among `listed` (the whole
/// history, no checkpoint: for tests and tools that want it raw).
pub async fn read(store: &dyn Store, listed: &[ObjectInfo]) -> Result<Shipped, LakeError> {
    let (batches, entries) = read_batches(store, listed, |_| true).await?;
    Ok(Shipped { batches, entries })
}

/// What the store holds of the journal.
pub struct Shipped {
    pub batches: usize,
    pub entries: Vec<Entry>,
}

/// The objects `state`'s index references, for the catalogs in `served`
/// (every catalog when `None`).
pub fn indexed(state: &State, served: Option<&SlotSet>) -> HashSet<String> {
    let ours = |cat: &str| served.is_none_or(|s| s.contains(cluster::catalog_slot(cat)));
    state
        .live()
        .filter(|(c, _)| ours(c))
        .flat_map(|(cat, cs)| cs.objects(cat))
        .collect()
}

/// Of the objects the shipped index referenced both when a GC walk began
/// (`then`) and now, those the live index (`live`) does not: an index
/// that lost them lost data (a legitimate removal is shipped by now, and
/// what was indexed during the walk is not in `then`). Counts: missing,
/// and referenced throughout.
pub fn missing_from(
    live: &HashSet<&String>,
    then: &State,
    now: &State,
    served: Option<&SlotSet>,
) -> (usize, usize) {
    let now = indexed(now, served);
    let throughout: Vec<String> = indexed(then, served)
        .into_iter()
        .filter(|k| now.contains(k))
        .collect();
    let missing = throughout.iter().filter(|k| !live.contains(k)).count();
    (missing, throughout.len())
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
    let mut keys = indexed(state, served);
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
    fn missing_counts_only_what_the_backup_held_throughout() {
        let then = journal::fold(entries()[..2].to_vec(), None);
        let now = journal::fold(entries(), None);
        let k2 = catalog::delta_object("c", U2);
        // U1 was removed during the walk (shipped since): not a loss.
        let live: HashSet<&String> = [&k2].into_iter().collect();
        assert_eq!(missing_from(&live, &then, &now, None), (0, 1));
        // An empty index (FLUSHALL) misses everything held throughout.
        assert_eq!(missing_from(&HashSet::new(), &then, &now, None), (1, 1));
        // What was indexed during the walk is no loss either.
        let empty = State::default();
        assert_eq!(missing_from(&HashSet::new(), &empty, &now, None), (0, 0));
    }

    #[test]
    fn protection_is_limited_to_the_served_slots() {
        let state = journal::fold(entries(), None);
        let mut other = SlotSet::default();
        other.insert(cluster::catalog_slot("c").wrapping_add(1) % 16384);
        let p = protected(&state, Some(&other), Duration::from_secs(10), 14_000);
        assert!(p.keys.is_empty());
    }

    fn entry(cat: &str, id: &str, change: Change) -> Entry {
        Entry {
            catalog: cat.into(),
            id: id.into(),
            change,
        }
    }

    async fn all(store: &dyn Store) -> Loaded {
        let listed = store.list().await.unwrap();
        load(store, &listed, None).await.unwrap()
    }

    #[tokio::test]
    async fn a_checkpoint_folds_settled_batches_and_restores_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::file::FileStore::open(dir.path().to_str().unwrap()).unwrap();
        ship(&store, entries()).await.unwrap();
        ship(&store, vec![entry("d", "3000-0", Change::Drop)])
            .await
            .unwrap();
        let before = all(&store).await.state;

        // Nothing is settled yet: no checkpoint.
        let r = checkpoint(&store, now_ms(), 60_000, 3_600_000)
            .await
            .unwrap();
        assert_eq!(r, CheckpointReport::default());

        let later = now_ms() + 120_000;
        let r = checkpoint(&store, later, 60_000, 3_600_000).await.unwrap();
        assert!(r.written.is_some());
        assert_eq!((r.batches_folded, r.deleted), (2, 0));
        let loaded = all(&store).await;
        assert_eq!(loaded.checkpoint, r.written);
        assert_eq!(loaded.batches, 0);
        assert_eq!(loaded.state.catalogs, before.catalogs);
        // What left an index 5 s after the epoch is older than any
        // retention: the checkpoint keeps no note of it.
        assert_eq!(before.left.len(), 1);
        assert!(loaded.state.left.is_empty());
        // Again: nothing new to fold.
        let again = checkpoint(&store, later, 60_000, 3_600_000).await.unwrap();
        assert_eq!(again.written, None);

        // A batch after the checkpoint is read on top of it.
        ship(&store, vec![entry("c", "6000-0", Change::Drop)])
            .await
            .unwrap();
        let loaded = all(&store).await;
        assert_eq!(loaded.batches, 1);
        assert!(loaded.state.catalogs["c"].is_empty());

        // With no retention, the covered batches and older checkpoints go;
        // what remains restores the same.
        let r = checkpoint(&store, now_ms() + 240_000, 60_000, 0)
            .await
            .unwrap();
        assert!(r.written.is_some());
        assert_eq!(r.deleted, 4, "3 batches and the first checkpoint");
        let listed = store.list().await.unwrap();
        assert_eq!(
            listed
                .iter()
                .filter(|o| journal::is_checkpoint(&o.key))
                .count(),
            1
        );
        assert_eq!(
            listed.iter().filter(|o| journal::is_batch(&o.key)).count(),
            0
        );
        let loaded = all(&store).await;
        assert!(loaded.state.catalogs["c"].is_empty());
        assert_eq!(loaded.state.catalogs["d"].last_id, (3000, 0));
        // A point before the oldest checkpoint is gone, and says so.
        let err = load(&store, &listed, Some(1)).await.err().unwrap();
        assert!(err.message.contains("reaches back"), "{}", err.message);
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
