//! The sidecar's work: store a delta, merge a read, build snapshots.
//!
//! Invariants:
//! - A `Put` answers `Stored` only after the store's durable put returned:
//!   the delta's own object (under the module's uuid), or the segment holding
//!   its record (under the uuid that locates it, see `batch.rs`).
//! - A read fetches one-object deltas by key and segment records by ranged
//!   GET, one GET for records of a segment that lie close together.
//! - A read fails as a whole, naming the catalog and the delta, when any body
//!   is missing or unreadable or any merge step throws; nothing is skipped and
//!   no snapshot is built from a failed merge.
//! - A snapshot covers exactly the deltas merged into it and carries the stamp
//!   of the last one; the module commits it with that stamp.
//! - At most one background snapshot per catalog is built at a time; others
//!   are skipped (counted), never queued.
//! - A read starts from the merged-document cache only where the cache's
//!   rules allow (`cache.rs`); the answer is the same as a full merge.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use lake_shared::envelope;
use lake_shared::proto::{
    DeltaRef, DeltaValue, Doc, Put, Read, SnapRef, SnapshotPolicy, SnapshotStored, Stored, Values,
    View,
};
use lake_shared::segment::Locator;
use lake_shared::{catalog, path, LakeError};
use serde_json::value::RawValue;

use crate::batch::{self, Batcher};
use crate::cache::DocCache;
use crate::gc::Collector;
use crate::merge::{Delta as FoldDelta, Engine, Fold};
use crate::metrics::Metrics;
use crate::native;
use crate::store::measured::Measured;
use crate::store::{self, Store};
use crate::views::{Version, ViewCache};

/// Bytes of computed view values kept ([`crate::views`]).
const VIEW_CACHE_BYTES: usize = 64 << 20;

/// How many object reads one merge keeps in flight.
const FETCH_CONCURRENCY: usize = 32;
/// Records of one segment at most this far apart are read in one ranged GET
/// (the bytes between are read and dropped: cheaper than a request).
const COALESCE_GAP: u64 = 64 << 10;
/// Largest ranged GET one coalesced read makes.
const MAX_SPAN: u64 = 8 << 20;

pub struct Service {
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    /// Set when writes go to segments; `None`: one object per write.
    batcher: Option<Batcher>,
    /// Garbage collection ([`crate::gc`]).
    pub gc: Collector,
    /// Largest document (or value at a path) a read may return.
    pub max_doc_bytes: usize,
    pub cache: DocCache,
    pub views: ViewCache,
    building: Mutex<HashSet<String>>,
}

/// What a read produced besides its answer: a snapshot to build after
/// answering.
pub struct Deferred {
    pub catalog: String,
    pub covers: i64,
    pub fence: i64,
    pub doc: Arc<str>,
    _guard: BuildGuard,
}

/// Marks a catalog as having a snapshot build in progress until dropped.
struct BuildGuard {
    service: Arc<Service>,
    catalog: String,
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        if let Ok(mut b) = self.service.building.lock() {
            b.remove(&self.catalog);
        }
    }
}

impl Service {
    /// A service over `store`; with `segments`, writes are batched into
    /// segment objects (this starts a task: call within a tokio runtime).
    pub fn new(
        store: Box<dyn Store>,
        engine: Engine,
        max_doc_bytes: usize,
        cache_bytes: usize,
        segments: Option<batch::Settings>,
    ) -> Arc<Service> {
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = Arc::new(Measured::new(Arc::from(store), metrics.clone()));
        let batcher = segments.map(|s| Batcher::start(store.clone(), s, metrics.clone()));
        let gc = Collector::new(store.clone(), metrics.clone());
        Arc::new(Service {
            store,
            engine,
            max_doc_bytes,
            cache: DocCache::new(cache_bytes),
            views: ViewCache::new(VIEW_CACHE_BYTES),
            metrics,
            batcher,
            gc,
            building: Mutex::new(HashSet::new()),
        })
    }

    /// Whether writes are batched into segments.
    pub fn layout(&self) -> &'static str {
        if self.batcher.is_some() {
            "segments"
        } else {
            "objects"
        }
    }

    /// Stores one delta body.
    pub async fn put(&self, p: Put) -> Result<Stored, LakeError> {
        catalog::validate(&p.catalog)?;
        catalog::validate_uuid(&p.uuid)?;
        let segs = path::parse(&p.field)?;
        if !self.engine.has_mode(&p.mode) {
            return Err(LakeError::invalid(format!(
                "unknown mode '{}' (loaded: {})",
                p.mode,
                self.engine.modes().join(", ")
            )));
        }
        // The written value is checked here, off Redis's main thread (which
        // only copied it), by the parser reads use, so whatever is stored can
        // be read back (depth limit included).
        let text = String::from_utf8(p.value)
            .map_err(|_| LakeError::invalid("value is not valid UTF-8"))?;
        let depth = native::validate(&text)
            .map_err(|e| LakeError::invalid(format!("value is not valid JSON: {e}")))?;
        path::check_write_depth(segs.len(), depth)?;
        let value = serde_json::from_str::<&RawValue>(&text)
            .map_err(|e| LakeError::invalid(format!("value is not valid JSON: {e}")))?;
        let body = envelope::Delta::encode(&p.catalog, &p.field, &p.mode, value);
        let res = match &self.batcher {
            Some(b) if b.accepts(body.len()) => b.put(&p.catalog, body).await,
            _ => {
                // The module's uuid first; on a collision (an object already
                // there) a fresh one, which the answer carries back.
                Metrics::inc(&self.metrics.store_puts_total);
                let mut uuid = p.uuid;
                let mut first = true;
                let fresh = || {
                    if !std::mem::take(&mut first) {
                        uuid = uuid::Uuid::new_v4().to_string();
                    }
                    catalog::delta_object(&p.catalog, &uuid)
                };
                store::create(&*self.store, fresh, body)
                    .await
                    .map(|key| stem_of(&key))
            }
        };
        match &res {
            Ok(_) => Metrics::inc(&self.metrics.writes_total),
            Err(_) => Metrics::inc(&self.metrics.write_errors_total),
        }
        res.map(|uuid| Stored { uuid })
    }

    /// Merges a read. Returns the answer and, for a background snapshot, the
    /// work to do after answering.
    pub async fn read(self: &Arc<Self>, r: Read) -> Result<(Doc, Option<Deferred>), LakeError> {
        let res = self.read_inner(r).await;
        match &res {
            Ok(_) => Metrics::inc(&self.metrics.reads_total),
            Err(_) => Metrics::inc(&self.metrics.read_errors_total),
        }
        res
    }

    async fn read_inner(self: &Arc<Self>, r: Read) -> Result<(Doc, Option<Deferred>), LakeError> {
        catalog::validate(&r.catalog)?;
        let cat = r.catalog.as_str();
        let read_path = r.path.as_deref().map(path::parse).transpose()?;

        // Start from the cache where it holds a prefix of this read.
        let base_uuid = r.base.as_ref().map(|s| s.uuid.as_str());
        let ids: Vec<&str> = r.deltas.iter().map(|d| d.uuid.as_str()).collect();
        let hit = self.cache.lookup(cat, base_uuid, &ids, read_path.is_some());
        Metrics::inc(if hit.is_some() {
            &self.metrics.cache_hits_total
        } else {
            &self.metrics.cache_misses_total
        });
        let start = hit.as_ref().map_or(0, |h| h.applied);
        let new_deltas = &r.deltas[start..];

        // Fetch the snapshot (unless cached) and every new delta body at
        // once (the deltas bounded and coalesced): one round trip to the
        // store, not two.
        let base_fetch = async {
            match &r.base {
                Some(_) if hit.is_some() => Ok(None),
                Some(s) => {
                    catalog::validate_uuid(&s.uuid)?;
                    let key = catalog::snapshot_object(cat, &s.uuid);
                    let body = self
                        .fetch(&key, cat, &format!("snapshot {}", s.uuid))
                        .await?;
                    Ok(Some((key, body)))
                }
                None => Ok(None),
            }
        };
        let (base_body, bodies) =
            futures::try_join!(base_fetch, self.fetch_deltas(cat, new_deltas))?;

        // Decode envelopes and check they are what the index says they are.
        let (cached, cached_tree) = hit.map_or((None, None), |h| (Some(h.doc), h.tree));
        let base_doc: Option<Arc<str>> = match &base_body {
            _ if cached.is_some() => cached.clone(),
            Some((key, body)) => {
                let s =
                    envelope::Snapshot::decode(body, key).map_err(|e| named(cat, "snapshot", e))?;
                if s.catalog != cat {
                    return Err(LakeError::data(format!(
                        "catalog '{cat}': snapshot object '{key}' belongs to catalog '{}'",
                        s.catalog
                    )));
                }
                Some(Arc::from(s.doc.get()))
            }
            None => None,
        };
        let mut fold_deltas = Vec::with_capacity(bodies.len());
        for ((key, body), d) in bodies.iter().zip(new_deltas) {
            let e = decode_delta(cat, key, body, d)?;
            fold_deltas.push(FoldDelta {
                path: path::parse(&e.field)
                    .map_err(|e| named(cat, &format!("delta {}", d.uuid), e))?,
                mode: e.mode,
                value: e.value.to_owned(),
            });
        }

        let covers = r.deltas.last().map(|d| d.stamp);
        let snapshot = if covers.is_some() {
            r.snapshot
        } else {
            SnapshotPolicy::Never
        };
        // The whole document is always produced, to keep the cache current.
        let (doc_text, at_path): (Option<Arc<str>>, Option<String>) = match (&cached, &read_path) {
            (Some(doc), None) if fold_deltas.is_empty() => (Some(doc.clone()), None),
            _ => {
                let merged = fold_deltas.len();
                let job = Fold {
                    base: base_doc,
                    tree: cached_tree,
                    deltas: fold_deltas,
                    path: read_path.clone(),
                };
                let fold_start = std::time::Instant::now();
                let out = self.engine.fold(job).await;
                Metrics::since(&self.metrics.merge_seconds, fold_start);
                let out = out.map_err(|e| {
                    let which = e.delta.and_then(|i| new_deltas.get(i)).map_or_else(
                        || "merge".to_string(),
                        |d| format!("delta {} (stamp {}, field '{}')", d.uuid, d.stamp, d.field),
                    );
                    LakeError::data(format!("catalog '{cat}': {which}: {}", e.message))
                })?;
                self.metrics.deltas_merged_total.inc_by(merged as u64);
                let doc: Option<Arc<str>> = out.doc.map(Into::into);
                if let Some(d) = &doc {
                    let all = r.deltas.iter().map(|d| d.uuid.clone()).collect();
                    self.cache.store(cat, base_uuid, all, d.clone(), out.tree);
                }
                (doc, out.at_path)
            }
        };
        let reply_text = if r.path.is_some() {
            at_path
        } else {
            doc_text.as_deref().map(str::to_string)
        };
        if let Some(t) = &reply_text {
            if t.len() > self.max_doc_bytes {
                return Err(LakeError::invalid(format!(
                    "catalog '{cat}': the result is {} bytes, above the sidecar's --max-doc-mb ({} bytes); read a PATH instead",
                    t.len(),
                    self.max_doc_bytes
                )));
            }
        }
        let json = reply_text.map(raw).transpose()?;
        let mut answer = Doc {
            json,
            snapshot: None,
        };
        let mut deferred = None;
        if let (Some(covers), Some(doc)) = (covers, doc_text) {
            match snapshot {
                SnapshotPolicy::Never => {}
                SnapshotPolicy::Now => {
                    answer.snapshot = Some(self.store_snapshot(cat, covers, doc).await?);
                }
                SnapshotPolicy::Background => match self.try_begin_build(cat) {
                    Some(guard) => {
                        deferred = Some(Deferred {
                            catalog: cat.to_string(),
                            covers,
                            fence: r.fence,
                            doc,
                            _guard: guard,
                        })
                    }
                    None => Metrics::inc(&self.metrics.snapshots_skipped_total),
                },
            }
        }
        Ok((answer, deferred))
    }

    /// The stored mode and value of each delta of `v`, in order, fetched as
    /// a read fetches them (bounded, coalesced) and checked against the
    /// index the same way; any missing or foreign body fails the whole
    /// answer, naming it.
    pub async fn values(&self, v: Values) -> Result<Vec<DeltaValue>, LakeError> {
        catalog::validate(&v.catalog)?;
        let cat = v.catalog.as_str();
        let bodies = self.fetch_deltas(cat, &v.deltas).await?;
        bodies
            .iter()
            .zip(&v.deltas)
            .map(|((key, body), d)| {
                let e = decode_delta(cat, key, body, d)?;
                Ok(DeltaValue {
                    mode: e.mode,
                    value: e.value.to_owned(),
                })
            })
            .collect()
    }

    /// Computes view `v.view` over the document `v.read` merges, at most
    /// once per catalog version ([`crate::views`]); a failing view is
    /// `LAKEDATA` naming it, as a failing custom mode is.
    pub async fn view(self: &Arc<Self>, v: View) -> Result<(Doc, Option<Deferred>), LakeError> {
        let (name, mut r) = (v.view, v.read);
        let cat = r.catalog.clone();
        if !self.engine.views().contains(&name) {
            return Err(LakeError::invalid(format!(
                "unknown view '{name}' (loaded: {}); a view is a <name>.js file in the sidecar's --views directory",
                self.engine.views().join(", ")
            )));
        }
        let version = Version {
            base: r.base.as_ref().map(|b| b.uuid.clone()),
            deltas: r.deltas.len(),
            last: r.deltas.last().map(|d| d.uuid.clone()),
            fence: r.fence,
        };
        let slot = self.views.slot(&cat, &name);
        let mut held = slot.lock().await;
        if let Some((seen, value)) = held.as_ref() {
            if *seen == version {
                Metrics::inc(&self.metrics.views_cached_total);
                let json = value.as_deref().map(|t| raw(t.to_string())).transpose()?;
                return Ok((
                    Doc {
                        json,
                        snapshot: None,
                    },
                    None,
                ));
            }
        }
        r.path = None;
        let (doc, deferred) = self.read(r).await?;
        let text: Arc<str> = doc.json.as_deref().map_or("null", RawValue::get).into();
        let out = self.engine.view(&name, text).await.map_err(|e| {
            Metrics::inc(&self.metrics.view_errors_total);
            LakeError::data(format!("catalog '{cat}': view '{name}': {e}"))
        })?;
        Metrics::inc(&self.metrics.views_run_total);
        if let Some(t) = &out {
            if t.len() > self.max_doc_bytes {
                return Err(LakeError::invalid(format!(
                    "catalog '{cat}': view '{name}' returned {} bytes, above the sidecar's --max-doc-mb ({} bytes)",
                    t.len(),
                    self.max_doc_bytes
                )));
            }
        }
        let value: Option<Arc<str>> = out.map(Into::into);
        let old = held
            .as_ref()
            .and_then(|(_, v)| v.as_ref())
            .map_or(0, |v| v.len());
        *held = Some((version, value.clone()));
        drop(held);
        self.views
            .filled(value.as_ref().map_or(0, |v| v.len()), old);
        let json = value.as_deref().map(|t| raw(t.to_string())).transpose()?;
        Ok((
            Doc {
                json,
                snapshot: None,
            },
            deferred,
        ))
    }

    /// Builds the snapshot a read deferred; the caller announces it.
    pub async fn finish(&self, d: Deferred) -> Result<SnapshotStored, LakeError> {
        let snap = self.store_snapshot(&d.catalog, d.covers, d.doc).await?;
        Ok(SnapshotStored {
            catalog: d.catalog.clone(),
            snap,
            fence: d.fence,
        })
    }

    /// Stores `doc` as a snapshot covering up to `covers`, and seeds the
    /// cache with it: reads after the commit start from it.
    async fn store_snapshot(
        &self,
        cat: &str,
        covers: i64,
        doc: Arc<str>,
    ) -> Result<SnapRef, LakeError> {
        let start = std::time::Instant::now();
        let raw_doc = raw(doc.to_string())?;
        let body = envelope::Snapshot::encode(cat, covers, &raw_doc);
        Metrics::inc(&self.metrics.store_puts_total);
        let mut uuid = String::new();
        let fresh = || {
            uuid = uuid::Uuid::new_v4().to_string();
            catalog::snapshot_object(cat, &uuid)
        };
        match store::create(&*self.store, fresh, body).await {
            Ok(_) => {
                Metrics::since(&self.metrics.snapshot_build_seconds, start);
                Metrics::inc(&self.metrics.snapshots_total);
                self.cache.store(cat, Some(&uuid), Vec::new(), doc, None);
                Ok(SnapRef { uuid, covers })
            }
            Err(e) => {
                Metrics::inc(&self.metrics.snapshot_errors_total);
                Err(named(cat, "snapshot", e))
            }
        }
    }

    fn try_begin_build(self: &Arc<Self>, cat: &str) -> Option<BuildGuard> {
        let mut b = self.building.lock().ok()?;
        if !b.insert(cat.to_string()) {
            return None;
        }
        Some(BuildGuard {
            service: self.clone(),
            catalog: cat.to_string(),
        })
    }

    async fn fetch(&self, key: &str, cat: &str, what: &str) -> Result<Vec<u8>, LakeError> {
        Metrics::inc(&self.metrics.store_gets_total);
        self.store.get(key).await.map_err(|e| named(cat, what, e))
    }

    /// The bodies of `deltas`, in order, each with a name for error messages
    /// (its object key, or its segment and byte range). Records of one
    /// segment that lie close together come in one ranged GET.
    async fn fetch_deltas(
        &self,
        cat: &str,
        deltas: &[DeltaRef],
    ) -> Result<Vec<(String, Vec<u8>)>, LakeError> {
        let mut jobs = Vec::new();
        let mut records: HashMap<u64, Vec<(usize, Locator)>> = HashMap::new();
        for (i, d) in deltas.iter().enumerate() {
            let what = || format!("delta {}", d.uuid);
            match Locator::from_uuid(&d.uuid).map_err(|e| named(cat, &what(), e))? {
                None => jobs.push(Fetch::Object {
                    at: i,
                    key: catalog::delta_object(cat, &d.uuid),
                }),
                Some(loc) => records.entry(loc.segment).or_default().push((i, loc)),
            }
        }
        for (_, mut recs) in records {
            recs.sort_by_key(|(_, l)| l.offset);
            let mut span: Option<Fetch> = None;
            for (i, loc) in recs {
                if let Some(Fetch::Span {
                    start, end, parts, ..
                }) = &mut span
                {
                    let joined = loc.end().max(*end) - *start;
                    if (loc.offset as u64) <= *end + COALESCE_GAP && joined <= MAX_SPAN {
                        *end = loc.end().max(*end);
                        parts.push((i, loc));
                        continue;
                    }
                }
                jobs.extend(span.take());
                span = Some(Fetch::Span {
                    key: loc.key(),
                    start: loc.offset as u64,
                    end: loc.end(),
                    parts: vec![(i, loc)],
                });
            }
            jobs.extend(span);
        }
        let got: Vec<Vec<(usize, String, Vec<u8>)>> = futures::stream::iter(jobs)
            .map(|job| self.run_fetch(cat, deltas, job))
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        let mut out: Vec<Option<(String, Vec<u8>)>> = vec![None; deltas.len()];
        for (i, name, body) in got.into_iter().flatten() {
            out[i] = Some((name, body));
        }
        out.into_iter()
            .zip(deltas)
            .map(|(b, d)| {
                b.ok_or_else(|| {
                    LakeError::internal(format!(
                        "catalog '{cat}': delta {} was not fetched",
                        d.uuid
                    ))
                })
            })
            .collect()
    }

    async fn run_fetch(
        &self,
        cat: &str,
        deltas: &[DeltaRef],
        job: Fetch,
    ) -> Result<Vec<(usize, String, Vec<u8>)>, LakeError> {
        Metrics::inc(&self.metrics.store_gets_total);
        match job {
            Fetch::Object { at, key } => {
                let what = format!("delta {}", deltas[at].uuid);
                let body = self
                    .store
                    .get(&key)
                    .await
                    .map_err(|e| named(cat, &what, e))?;
                Ok(vec![(at, key, body)])
            }
            Fetch::Span {
                key,
                start,
                end,
                parts,
            } => {
                let bytes = match self.store.get_range(&key, start, end - start).await {
                    Ok(b) => b,
                    Err(e) => {
                        // Name the delta that failed: with several records
                        // in the span, read each alone to find it.
                        if parts.len() > 1 {
                            for (at, loc) in &parts {
                                Metrics::inc(&self.metrics.store_gets_total);
                                let one =
                                    self.store
                                        .get_range(&key, loc.offset as u64, loc.len as u64);
                                if let Err(e) = one.await {
                                    let what = format!("delta {}", deltas[*at].uuid);
                                    return Err(named(cat, &what, e));
                                }
                            }
                        }
                        let first = parts
                            .first()
                            .map_or("", |(at, _)| deltas[*at].uuid.as_str());
                        return Err(named(cat, &format!("delta {first}"), e));
                    }
                };
                parts
                    .into_iter()
                    .map(|(at, loc)| {
                        let from = (loc.offset as u64 - start) as usize;
                        let body = bytes.get(from..from + loc.len as usize).ok_or_else(|| {
                            LakeError::internal(format!(
                                "catalog '{cat}': ranged read of '{key}' returned {} bytes",
                                bytes.len()
                            ))
                        })?;
                        Ok((
                            at,
                            format!("{key}[{}..{}]", loc.offset, loc.end()),
                            body.to_vec(),
                        ))
                    })
                    .collect()
            }
        }
    }
}

/// One read from the store for a merge.
#[derive(Debug)]
enum Fetch {
    /// A one-object delta, the `at`-th of the read.
    Object { at: usize, key: String },
    /// Bytes `start..end` of a segment, holding the records in `parts`.
    Span {
        key: String,
        start: u64,
        end: u64,
        parts: Vec<(usize, Locator)>,
    },
}

/// Prefixes an error with the catalog and the object it concerns.
fn named(cat: &str, what: &str, e: LakeError) -> LakeError {
    LakeError::new(e.kind, format!("catalog '{cat}': {what}: {}", e.message))
}

/// Decodes delta `d`'s body (read from `key`) and checks it is what the
/// index says: this catalog's, this field's.
fn decode_delta<'a>(
    cat: &str,
    key: &str,
    body: &'a [u8],
    d: &DeltaRef,
) -> Result<envelope::Delta<'a>, LakeError> {
    let e = envelope::Delta::decode(body, key)
        .map_err(|e| named(cat, &format!("delta {}", d.uuid), e))?;
    if e.catalog != cat || e.field != d.field {
        return Err(LakeError::data(format!(
            "catalog '{cat}': delta {} object '{key}' holds catalog '{}' field '{}', the index says field '{}'",
            d.uuid, e.catalog, e.field, d.field
        )));
    }
    Ok(e)
}

fn raw(text: String) -> Result<Box<RawValue>, LakeError> {
    RawValue::from_string(text)
        .map_err(|e| LakeError::internal(format!("merge produced invalid JSON: {e}")))
}

/// The uuid of a delta object key (`<catalog>/<uuid>.json`).
fn stem_of(key: &str) -> String {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    name.strip_suffix(".json").unwrap_or(name).to_string()
}
