//! Garbage collection: deletes Lake objects that no index entry references
//! and that are older than the grace period (orphans of failed or timed-out
//! writes, dropped catalogs, removed deltas, unused snapshots, whole
//! segments no record of which is referenced).
//!
//! Invariants:
//! - Only keys of Lake's own shapes are considered; in Redis Cluster only
//!   those of catalogs in the slots the asking node serves (every shard
//!   shares the store, and a node's index says nothing about another
//!   shard's catalogs).
//! - Ages are read on the store's clock (a probe object listed with the
//!   rest), and the grace is counted from the start of the module's walk
//!   (its session), so neither a fast sidecar clock nor a long walk can age
//!   a young object into deletion.
//! - A segment goes only as a whole, and in a cluster only when its trailer
//!   says every record is of a catalog this node serves; a segment whose
//!   trailer cannot be read is kept.
//! - Nothing a restorable point within the backup retention references is
//!   deleted ([`backup::protected`]), and an index missing half or more of
//!   what the shipped backup held throughout the walk (Redis lost its data)
//!   makes GC refuse outright ([`backup::missing_from`]).
//! - Sessions are bounded: at most [`MAX_GC_SESSIONS`] open, one idle for
//!   [`GC_SESSION_IDLE`] dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use lake_shared::cluster::{self, SlotSet};
use lake_shared::proto::{Gc, GcRefs, GcReport};
use lake_shared::segment::{self, Locator};
use lake_shared::{catalog, LakeError};

use crate::backup;
use crate::metrics::Metrics;
use crate::store::{ObjectInfo, Store};

/// Deletes at once at most.
const DELETE_CONCURRENCY: usize = 32;
/// Bytes read from a segment's end to find its trailer, first try.
const TAIL_GUESS: u64 = 64 << 10;
/// Segments whose catalogs GC remembers (a segment never changes).
const TRAILER_CACHE: usize = 100_000;

/// A GC session's referenced set so far, and when it began (the grace is
/// counted from there: an object written during a long walk is young).
struct GcSession {
    referenced: Vec<String>,
    began: std::time::Instant,
    touched: std::time::Instant,
}

/// Sessions open at once at most; one idle this long is dropped (its
/// module went away mid-walk).
const MAX_GC_SESSIONS: usize = 8;
const GC_SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Where GC's clock probes live (a folder no catalog can name: it starts
/// with `.`); a probe is deleted right after the listing that reads it.
const GC_PROBE_FOLDER: &str = ".lake-gc";

/// The default backup retention: a day, as Litestream keeps by default.
pub const DEFAULT_BACKUP_RETENTION_SECS: u64 = 86_400;

/// Garbage collection for one sidecar: its sessions and what it learned
/// of segments.
pub struct Collector {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// The catalogs of segments GC has read the trailer of.
    trailers: Mutex<HashMap<u64, Arc<Vec<String>>>>,
    /// Sessions whose referenced set is arriving in chunks.
    sessions: Mutex<HashMap<u64, GcSession>>,
    /// How far back a restore may go: objects that left an index less than
    /// this long ago are kept ([`backup::protected`]).
    backup_retention_secs: AtomicU64,
}

impl Collector {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Collector {
        Collector {
            store,
            metrics,
            trailers: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            backup_retention_secs: AtomicU64::new(DEFAULT_BACKUP_RETENTION_SECS),
        }
    }

    /// Sets how far back a restore may go (`--backup-retention-secs`).
    pub fn set_backup_retention(&self, secs: u64) {
        self.backup_retention_secs.store(secs, Ordering::Relaxed);
    }

    /// Adds one chunk to a GC session, opening it with the first.
    pub fn refs(&self, r: GcRefs) -> Result<(), LakeError> {
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| LakeError::internal("GC sessions lock poisoned"))?;
        let now = std::time::Instant::now();
        sessions.retain(|_, s| now.duration_since(s.touched) < GC_SESSION_IDLE);
        if !sessions.contains_key(&r.session) && sessions.len() >= MAX_GC_SESSIONS {
            return Err(LakeError::busy(format!(
                "{MAX_GC_SESSIONS} garbage collections are already running on this sidecar"
            )));
        }
        Metrics::inc(&self.metrics.gc_chunks_total);
        let s = sessions.entry(r.session).or_insert_with(|| GcSession {
            referenced: Vec::new(),
            began: now,
            touched: now,
        });
        s.touched = now;
        s.referenced.extend(r.referenced);
        Ok(())
    }

    /// Deletes Lake objects that the index does not reference and that are
    /// older than the grace period. Only keys of Lake's own shapes are
    /// considered, and in Redis Cluster only those of catalogs in the slots
    /// the asking node serves (`g.slots`): every shard shares the store, and
    /// a node's index says nothing about another shard's catalogs. A failed
    /// delete stops the pass with an error.
    ///
    /// Ages are measured on the store's clock, not the sidecar's: a probe
    /// object written just before the listing carries the store's "now" in
    /// its own last-modified time (same clock and same resolution as every
    /// object it is compared with), so a sidecar whose clock runs ahead
    /// cannot age young objects into deletion.
    ///
    /// A segment goes only as a whole: when no record of it is referenced,
    /// and, in a cluster, when its trailer says every record belongs to a
    /// catalog this node serves (a record of another shard's catalog, or one
    /// whose slot is moving, counts as referenced). A segment whose trailer
    /// cannot be read is kept.
    pub async fn run(&self, mut g: Gc) -> Result<GcReport, LakeError> {
        let mut since_began = std::time::Duration::ZERO;
        if let Some(id) = g.session {
            let session = self
                .sessions
                .lock()
                .map_err(|_| LakeError::internal("GC sessions lock poisoned"))?
                .remove(&id)
                .ok_or_else(|| {
                    LakeError::unavailable(format!(
                        "GC session {id} is unknown to the sidecar (restarted, or idle too long); run LAKE.GC again"
                    ))
                })?;
            since_began = session.began.elapsed();
            g.referenced.extend(session.referenced);
        }
        let served = g.slots.as_deref().map(SlotSet::from_ranges);
        let (listed, store_now) = self.list_with_store_time().await?;

        let (listed, loaded) = backup::load_fresh(&*self.store, listed, None).await?;
        let state = loaded.state;
        let retention = Duration::from_secs(self.backup_retention_secs.load(Ordering::Relaxed));
        let now = backup::now_ms();
        let keep = backup::protected(&state, served.as_ref(), retention, now);
        // Compared with the backup both as of the walk's start (on the
        // node's clock, which stamps the journal's ids; else this one's)
        // and now: see `backup::missing_from`. With a retention shorter
        // than the walk, the start may be gone: then only now is the
        // measure.
        let began = g
            .began_ms
            .unwrap_or_else(|| now.saturating_sub(since_began.as_millis() as u64));
        let then = match backup::load_fresh(&*self.store, listed.clone(), Some(began)).await {
            Ok((_, then)) => Some(then.state),
            Err(_) => None,
        };
        let live: HashSet<&String> = g.referenced.iter().collect();
        let (missing, throughout) = backup::missing_from(
            &live,
            then.as_ref().unwrap_or(&state),
            &state,
            served.as_ref(),
        );
        if missing > 0 && missing.saturating_mul(2) >= throughout {
            Metrics::inc(&self.metrics.gc_refusals_total);
            return Err(LakeError::invalid(format!(
                "GC refused: {missing} of the {throughout} objects the shipped backup says this node's catalogs reference are not in the index; Redis may have lost its data (FLUSHALL, a lost primary and replica, a bad restore). Restore it (lake-sidecar restore --redis ...) before collecting; nothing was deleted"
            )));
        }
        g.referenced.extend(keep.keys);
        let mut live_segments = HashSet::new();
        for key in &g.referenced {
            let stem = key
                .rsplit_once('/')
                .and_then(|(_, name)| name.strip_suffix(".json"));
            if let Some(Ok(Some(loc))) = stem.map(Locator::from_uuid) {
                live_segments.insert(loc.segment);
            }
        }
        let referenced: HashSet<String> = g.referenced.into_iter().collect();
        let cutoff = store_now - std::time::Duration::from_secs(g.grace_secs) - since_began;
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        if let Ok(mut t) = self.trailers.lock() {
            let present: HashSet<u64> = listed
                .iter()
                .filter_map(|o| segment::parse_segment_key(&o.key))
                .collect();
            t.retain(|id, _| present.contains(id));
        }
        for o in listed {
            if let Some(id) = segment::parse_segment_key(&o.key) {
                report.scanned += 1;
                if live_segments.contains(&id) {
                    report.referenced += 1;
                } else if o.modified > cutoff {
                    report.young += 1;
                } else if self.segment_is_ours(id, &o, served.as_ref()).await {
                    report.orphans += 1;
                    doomed.push(o.key);
                } else {
                    report.referenced += 1;
                }
                continue;
            }
            if !catalog::is_lake_object(&o.key) {
                continue;
            }
            if let (Some(served), Some((cat, _))) = (&served, o.key.rsplit_once('/')) {
                if !served.contains(cluster::catalog_slot(cat)) {
                    continue;
                }
            }
            report.scanned += 1;
            if referenced.contains(&o.key) {
                report.referenced += 1;
            } else if o.modified > cutoff {
                report.young += 1;
            } else {
                report.orphans += 1;
                doomed.push(o.key);
            }
        }
        if !g.dry_run {
            let deleted: Vec<()> = futures::stream::iter(doomed)
                .map(|k| async move { self.store.delete(&k).await })
                .buffer_unordered(DELETE_CONCURRENCY)
                .try_collect()
                .await?;
            report.deleted = deleted.len() as u64;
        }
        Ok(report)
    }

    /// Lists the store, and tells the store's time as of just before the
    /// listing (see [`Collector::run`]).
    async fn list_with_store_time(
        &self,
    ) -> Result<(Vec<ObjectInfo>, std::time::SystemTime), LakeError> {
        let probe = format!("{GC_PROBE_FOLDER}/{}", uuid::Uuid::new_v4());
        self.store
            .put(&probe, b"lake gc clock probe".to_vec())
            .await?;
        let listed = self.store.list().await;
        let _ = self.store.delete(&probe).await;
        let mut listed = listed?;
        let now = listed
            .iter()
            .find(|o| o.key == probe)
            .map(|o| o.modified)
            .ok_or_else(|| {
                LakeError::unavailable(format!(
                    "{} did not list the object just written ({probe}); garbage collection needs a listing that shows every object",
                    self.store.describe()
                ))
            })?;
        listed.retain(|o| !o.key.starts_with(GC_PROBE_FOLDER));
        Ok((listed, now))
    }

    /// Whether every record of a segment belongs to a catalog this node
    /// serves (always, outside a cluster). Unknown counts as no.
    async fn segment_is_ours(&self, id: u64, o: &ObjectInfo, served: Option<&SlotSet>) -> bool {
        let Some(served) = served else {
            return true;
        };
        match self.segment_catalogs(id, o).await {
            Ok(cats) => cats
                .iter()
                .all(|c| served.contains(cluster::catalog_slot(c))),
            Err(e) => {
                eprintln!("lake-sidecar: gc keeps segment '{}': {}", o.key, e.message);
                false
            }
        }
    }

    /// The catalogs a segment holds records of, from its trailer (cached:
    /// a segment never changes).
    async fn segment_catalogs(
        &self,
        id: u64,
        o: &ObjectInfo,
    ) -> Result<Arc<Vec<String>>, LakeError> {
        if let Some(c) = self.trailers.lock().ok().and_then(|t| t.get(&id).cloned()) {
            return Ok(c);
        }
        let tail = TAIL_GUESS.min(o.size);
        Metrics::inc(&self.metrics.store_gets_total);
        let mut bytes = self.store.get_range(&o.key, o.size - tail, tail).await?;
        let need = (segment::trailer_len(&bytes, &o.key)? + segment::FOOTER_BYTES) as u64;
        if need > tail && need <= o.size {
            Metrics::inc(&self.metrics.store_gets_total);
            bytes = self.store.get_range(&o.key, o.size - need, need).await?;
        }
        let cats = Arc::new(segment::decode_trailer(&bytes, &o.key)?.catalogs);
        if let Ok(mut t) = self.trailers.lock() {
            if t.len() >= TRAILER_CACHE {
                t.clear();
            }
            t.insert(id, cats.clone());
        }
        Ok(cats)
    }
}
