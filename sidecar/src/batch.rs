//! Write batching: the delta records waiting at one moment go to the store
//! as one segment object (`lake_shared::segment`), one PUT for many writes.
//!
//! Invariants:
//! - A put is answered with its record's uuid only after the PUT of the
//!   segment holding it returned; a failed segment PUT fails every put in it
//!   with that error, and nothing of it is ever indexed (the module indexes
//!   only what was answered `Stored`). A failed segment is at most an orphan.
//! - No put waits to fill a batch: when a PUT slot is free the queue is sent
//!   at once, even a single record, unless a window is configured (then the
//!   first record waits at most that long). Batches form because PUTs take
//!   time: while `inflight` segment PUTs are running, new records queue.
//! - A segment holds at most `max_segment_bytes` of records; records above
//!   `max_record_bytes` are never given to the batcher (the service stores
//!   them as their own object).
//! - Segment ids are 60 random bits: every sidecar writes into one bucket,
//!   and a collision is as likely as a version-4 uuid's.

use std::sync::Arc;
use std::time::Duration;

use lake_shared::segment::{self, Builder};
use lake_shared::LakeError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::Metrics;
use crate::store::{self, Store};

/// How segments are formed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Segment PUTs in flight at once.
    pub inflight: usize,
    /// How long the first queued record may wait for others (zero: not at all).
    pub window: Duration,
    /// Records per segment stop here (bytes).
    pub max_segment_bytes: usize,
    /// Larger records go to their own object.
    pub max_record_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            inflight: 1,
            window: Duration::ZERO,
            max_segment_bytes: 8 << 20,
            max_record_bytes: 1 << 20,
        }
    }
}

/// One record waiting for its segment.
struct Pending {
    catalog: String,
    record: Vec<u8>,
    done: oneshot::Sender<Result<String, LakeError>>,
}

/// The handle the service stores writes through.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
    max_record_bytes: usize,
}

impl Batcher {
    /// Starts the task that forms and stores segments. Must be called within
    /// a tokio runtime; the task ends when the batcher is dropped.
    pub fn start(store: Arc<dyn Store>, settings: Settings, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let max_record_bytes = settings
            .max_record_bytes
            .min(settings.max_segment_bytes)
            .max(1);
        tokio::spawn(drive(store, settings, metrics, rx));
        Batcher {
            tx,
            max_record_bytes,
        }
    }

    /// Whether a record of `len` bytes goes into a segment.
    pub fn accepts(&self, len: usize) -> bool {
        len > 0 && len <= self.max_record_bytes
    }

    /// Stores `record` (a delta envelope of `catalog`) in the next segment;
    /// answers the uuid that locates it, once the segment is stored.
    pub async fn put(&self, catalog: &str, record: Vec<u8>) -> Result<String, LakeError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending {
                catalog: catalog.to_string(),
                record,
                done,
            })
            .map_err(|_| LakeError::unavailable("the sidecar is shutting down"))?;
        wait.await
            .map_err(|_| LakeError::internal("the segment writer stopped"))?
    }
}

/// Forms segments from the queue: waits for a record, then for a PUT slot,
/// then takes whatever else is queued (up to the size bound) and stores it
/// in the background.
async fn drive(
    store: Arc<dyn Store>,
    s: Settings,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(s.inflight.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let filling = std::time::Instant::now();
        if !s.window.is_zero() {
            tokio::time::sleep(s.window).await;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first_id = segment_id();
        let mut builder = Builder::new(first_id);
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(p) = next.take() {
            if !builder.is_empty() && builder.len() + p.record.len() > s.max_segment_bytes {
                carry = Some(p);
                break;
            }
            match builder.push(&p.catalog, &p.record) {
                Some(loc) => batch.push((p.done, loc)),
                None => {
                    let _ = p.done.send(Err(LakeError::internal(format!(
                        "a record of {} bytes does not fit in a segment",
                        p.record.len()
                    ))));
                }
            }
            next = rx.try_recv().ok();
        }
        if batch.is_empty() {
            continue;
        }
        Metrics::since(&metrics.segment_fill_seconds, filling);
        metrics.segment_records.observe(batch.len() as f64);
        let store = store.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let n = batch.len() as u64;
            let body = builder.finish();
            // A segment id already taken (60 random bits: rare, never
            // impossible across a cluster's lifetime) leaves that segment
            // as it was: the same bytes go under a fresh id, and every
            // record's uuid names the new segment.
            let mut id = first_id;
            let fresh = || {
                let key = segment::segment_key(id);
                id = segment_id();
                key
            };
            Metrics::inc(&metrics.store_puts_total);
            let res = store::create(&*store, fresh, body).await;
            drop(slot);
            match res.and_then(|key| {
                segment::parse_segment_key(&key)
                    .ok_or_else(|| LakeError::internal(format!("bad segment key '{key}'")))
            }) {
                Ok(stored) => {
                    Metrics::inc(&metrics.segments_total);
                    metrics.segment_records_total.inc_by(n);
                    for (done, loc) in batch {
                        let _ = done.send(Ok(loc.in_segment(stored).to_uuid()));
                    }
                }
                Err(e) => {
                    for (done, _) in batch {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// 60 random bits (the random part of a version-4 uuid).
fn segment_id() -> u64 {
    let b = uuid::Uuid::new_v4().as_u128();
    (b as u64) ^ ((b >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::FileStore;
    use lake_shared::segment::{self, Locator};

    fn batcher(dir: &std::path::Path, s: Settings) -> (Batcher, Arc<dyn Store>, Arc<Metrics>) {
        let store: Arc<dyn Store> = Arc::new(FileStore::open(dir.to_str().unwrap()).unwrap());
        let metrics = Arc::new(Metrics::default());
        (
            Batcher::start(store.clone(), s, metrics.clone()),
            store,
            metrics,
        )
    }

    #[tokio::test]
    async fn records_are_found_from_their_uuid_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (b, store, _) = batcher(dir.path(), Settings::default());
        let mut want = Vec::new();
        for i in 0..20 {
            let rec = format!("{{\"n\":{i}}}").into_bytes();
            let uuid = b.put(&format!("c{}", i % 3), rec.clone()).await.unwrap();
            want.push((uuid, rec));
        }
        for (uuid, rec) in want {
            let loc = Locator::from_uuid(&uuid)
                .unwrap()
                .expect("a version-8 uuid");
            let got = store
                .get_range(&loc.key(), loc.offset as u64, loc.len as u64)
                .await
                .unwrap();
            assert_eq!(got, rec);
        }
    }

    #[tokio::test]
    async fn concurrent_puts_share_segments_and_segments_name_their_catalogs() {
        let dir = tempfile::tempdir().unwrap();
        let (b, store, metrics) = batcher(
            dir.path(),
            Settings {
                inflight: 1,
                ..Settings::default()
            },
        );
        let b = Arc::new(b);
        let puts = (0..200).map(|i| {
            let b = b.clone();
            async move { b.put(&format!("cat{}", i % 5), b"[1]".to_vec()).await }
        });
        let uuids: Vec<String> = futures::future::try_join_all(puts).await.unwrap();
        let segments = metrics.segments_total.get();
        assert!(
            segments < 200,
            "{segments} segments for 200 concurrent puts"
        );
        assert_eq!(metrics.segment_records_total.get(), 200);
        let first = Locator::from_uuid(&uuids[0]).unwrap().unwrap();
        let bytes = store.get(&first.key()).await.unwrap();
        let t = segment::decode_trailer(&bytes, "k").unwrap();
        assert!(t.catalogs.contains(&"cat0".to_string()), "{t:?}");
    }

    #[tokio::test]
    async fn segments_stop_at_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _, _) = batcher(
            dir.path(),
            Settings {
                inflight: 1,
                max_segment_bytes: 100,
                max_record_bytes: 60,
                ..Settings::default()
            },
        );
        assert!(b.accepts(60) && !b.accepts(61) && !b.accepts(0));
        let b = Arc::new(b);
        let puts = (0..10).map(|_| {
            let b = b.clone();
            async move { b.put("c", vec![b'1'; 60]).await }
        });
        for uuid in futures::future::try_join_all(puts).await.unwrap() {
            let loc = Locator::from_uuid(&uuid).unwrap().unwrap();
            assert_eq!(loc.offset, 0, "one 60-byte record per 100-byte segment");
        }
    }

    #[tokio::test]
    async fn a_failed_segment_put_fails_every_record_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let (b, _, _) = batcher(&root, Settings::default());
        // The folder segments go to cannot be created: every PUT fails.
        std::fs::write(root.join(segment::FOLDER), b"a file, not a folder").unwrap();
        let err = b.put("c", b"1".to_vec()).await.unwrap_err();
        assert_eq!(err.kind, lake_shared::ErrorKind::Unavailable, "{err:?}");
    }

    /// A store on which the first object created under any key already
    /// exists (as when another sidecar drew the same 60-bit segment id):
    /// the colliding key gets the bytes "theirs" beforehand.
    struct Collides {
        inner: Arc<dyn Store>,
        hit: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Store for Collides {
        async fn put(&self, key: &str, body: Vec<u8>) -> Result<store::Created, LakeError> {
            let first = self.hit.lock().unwrap().is_empty();
            if first {
                self.hit.lock().unwrap().push(key.to_string());
                self.inner.put(key, b"theirs".to_vec()).await?;
            }
            self.inner.put(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError> {
            self.inner.get(key).await
        }
        async fn list(&self) -> Result<Vec<crate::store::ObjectInfo>, LakeError> {
            self.inner.list().await
        }
        async fn delete(&self, key: &str) -> Result<(), LakeError> {
            self.inner.delete(key).await
        }
        async fn health(&self) -> Result<(), LakeError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "collides".into()
        }
    }

    #[tokio::test]
    async fn a_segment_id_taken_already_moves_the_batch_to_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(FileStore::open(dir.path().to_str().unwrap()).unwrap());
        let store = Arc::new(Collides {
            inner: inner.clone(),
            hit: std::sync::Mutex::new(Vec::new()),
        });
        let b = Batcher::start(
            store.clone(),
            Settings::default(),
            Arc::new(Metrics::default()),
        );
        let uuid = b.put("c", b"[1]".to_vec()).await.unwrap();
        let taken = store.hit.lock().unwrap()[0].clone();
        // The other writer's segment is untouched ...
        assert_eq!(inner.get(&taken).await.unwrap(), b"theirs");
        // ... and the record names the segment it really is in.
        let loc = Locator::from_uuid(&uuid).unwrap().unwrap();
        assert_ne!(loc.key(), taken);
        let bytes = inner
            .get_range(&loc.key(), u64::from(loc.offset), u64::from(loc.len))
            .await
            .unwrap();
        assert_eq!(bytes, b"[1]");
        assert_eq!(inner.list().await.unwrap().len(), 2);
    }
}
