//! `lake-sidecar restore`: rebuilds the index of every catalog from the
//! journal shipped to the store ([`crate::backup`]) into an empty Redis or
//! Redis Cluster, to the newest point or to a point in time.
//!
//! Invariants:
//! - Restored stamps are the original stamps; snapshots, floors and
//!   retentions come back with them, so reads (`AT` too) answer as before.
//! - Every object the restored index would reference is checked against
//!   the store's listing first; one missing refuses the whole restore
//!   (nothing is written), naming it.
//! - A catalog that already has index keys in the target refuses the
//!   restore unless `--force`; `--dry-run` reads and checks, writes nothing.
//! - A restore to an earlier point ships the restored state again as new
//!   journal entries (a `drop`, then the state), after every entry the
//!   journal already holds for the catalog, and moves the catalog's stream
//!   past them: a later restore to the newest point starts from this one
//!   instead of replaying what came after the chosen point.

use std::collections::HashSet;
use std::time::Instant;

use lake_shared::journal::{self, CatalogState, Change, Entry, State};
use lake_shared::segment::{self, Locator};
use lake_shared::{catalog, member, LakeError};

use crate::backup;
use crate::store::Store;

/// Members per `ZADD` a restore sends.
const ZADD_CHUNK: usize = 1000;

/// What a restore will write (or would, on a dry run).
pub struct Plan {
    pub state: State,
    pub batches: usize,
    pub entries: usize,
    /// The checkpoint the fold started from.
    pub checkpoint: Option<String>,
    /// The point restored to (stream-id milliseconds), `None` for newest.
    pub at_ms: Option<u64>,
    /// Per catalog, the newest entry id in the whole journal (a restore to
    /// an earlier point ships after it).
    pub newest_ids: Vec<(String, (u64, u64))>,
}

/// Reads the journal and folds it to `at_ms`; checks that every object the
/// result references is in the store.
pub async fn plan(store: &dyn Store, at_ms: Option<u64>) -> Result<Plan, LakeError> {
    let (listed, loaded) = backup::load_fresh(store, store.list().await?, at_ms).await?;
    let newest_ids = if at_ms.is_some() {
        let (_, all) = backup::load_fresh(store, listed.clone(), None).await?;
        all.state
            .catalogs
            .into_iter()
            .map(|(c, s)| (c, s.last_id))
            .collect()
    } else {
        Vec::new()
    };
    let (state, entries, batches) = (loaded.state, loaded.entries, loaded.batches);
    let checkpoint = loaded.checkpoint;
    let present: HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    let mut missing = Vec::new();
    for (cat, cs) in state.live() {
        for key in cs.objects(cat) {
            if !exists(&present, &key) {
                missing.push(key);
            }
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(10);
        return Err(LakeError::data(format!(
            "{n} objects the restored index would reference are not in {} (first: {}); nothing was restored",
            store.describe(),
            missing.join(", ")
        )));
    }
    Ok(Plan {
        state,
        batches,
        entries,
        checkpoint,
        at_ms,
        newest_ids,
    })
}

/// Whether the object `key` names is in the listing: its own object, or the
/// segment a version-8 uuid locates.
fn exists(present: &HashSet<&str>, key: &str) -> bool {
    let stem = key
        .rsplit_once('/')
        .and_then(|(_, n)| n.strip_suffix(".json"))
        .unwrap_or_default();
    if !stem.ends_with(".snap") {
        if let Ok(Some(loc)) = Locator::from_uuid(stem) {
            return present.contains(segment::segment_key(loc.segment).as_str());
        }
    }
    present.contains(key)
}

/// What a restore wrote.
#[derive(Debug, Default)]
pub struct Report {
    pub catalogs: usize,
    pub deltas: usize,
    pub snapshots: usize,
    pub reshipped: usize,
}

/// A connection to the target: a Redis, or every node of a Redis Cluster.
pub struct Target {
    con: Box<dyn redis::ConnectionLike>,
}

impl Target {
    /// Connects to the Redis (or Redis Cluster) at `url`.
    pub fn connect(url: &str) -> Result<Target, LakeError> {
        Ok(Target { con: connect(url)? })
    }

    /// Refuses, naming them, when catalogs of the plan already have an
    /// index in the target (unless `force`).
    pub fn check_empty(&mut self, plan: &Plan, force: bool) -> Result<(), LakeError> {
        let mut busy = Vec::new();
        for (cat, _) in plan.state.live() {
            let n: i64 = redis::cmd("EXISTS")
                .arg(catalog::index_key(cat))
                .arg(catalog::snap_key(cat))
                .query(self.con.as_mut())
                .map_err(redis_err)?;
            if n > 0 {
                busy.push(cat.as_str());
            }
        }
        if busy.is_empty() || force {
            return Ok(());
        }
        let n = busy.len();
        busy.truncate(10);
        Err(LakeError::invalid(format!(
            "{n} catalogs already have an index in the target (first: {}); restore into an empty Redis, or pass --force to replace those catalogs' index; nothing was restored",
            busy.join(", ")
        )))
    }

    /// Writes the plan's index; `reshipped` (from [`reship`], already
    /// stored) moves each catalog's stream past its entries.
    pub fn write(&mut self, plan: &Plan, reshipped: &[Entry]) -> Result<Report, LakeError> {
        let con = self.con.as_mut();
        let mut report = Report::default();
        for (cat, cs) in plan.state.live() {
            report.catalogs += 1;
            report.deltas += cs.deltas.len();
            report.snapshots += cs.snaps.len();
            write_catalog(con, cat, cs)?;
        }
        let mut last: Vec<(&str, &str)> = Vec::new();
        for e in reshipped {
            match last.last_mut() {
                Some(l) if l.0 == e.catalog => l.1 = &e.id,
                _ => last.push((&e.catalog, &e.id)),
            }
        }
        for (cat, id) in last {
            // An entry added and deleted at once: the stream's last id goes
            // past the shipped ones, so the catalog's next change sorts after.
            let Some((ms, seq)) = journal::parse_id(id) else {
                continue;
            };
            let key = catalog::journal_key(cat);
            let id = format!("{ms}-{}", seq + 1);
            redis::cmd("XADD")
                .arg(&key)
                .arg(&id)
                .arg(journal::FIELD)
                .arg("{}")
                .query::<String>(con)
                .map_err(redis_err)?;
            redis::cmd("XDEL")
                .arg(&key)
                .arg(&id)
                .query::<()>(con)
                .map_err(redis_err)?;
        }
        report.reshipped = reshipped.len();
        Ok(report)
    }
}

fn write_catalog(
    con: &mut dyn redis::ConnectionLike,
    cat: &str,
    cs: &CatalogState,
) -> Result<(), LakeError> {
    let idx = catalog::index_key(cat);
    let snap = catalog::snap_key(cat);
    redis::cmd("DEL")
        .arg(&idx)
        .arg(&snap)
        .arg(catalog::floor_key(cat))
        .arg(catalog::retention_key(cat))
        .query::<()>(con)
        .map_err(redis_err)?;
    let deltas: Vec<(i64, &String)> = cs.deltas.iter().map(|(m, s)| (*s, m)).collect();
    for chunk in deltas.chunks(ZADD_CHUNK) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&idx);
        for (s, m) in chunk {
            cmd.arg(*s).arg(m.as_str());
        }
        cmd.query::<()>(con).map_err(redis_err)?;
    }
    let snaps: Vec<(i64, String)> = cs
        .snaps
        .iter()
        .map(|(u, c)| (*c, member::encode_snap(u)))
        .collect();
    for chunk in snaps.chunks(ZADD_CHUNK) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&snap);
        for (c, m) in chunk {
            cmd.arg(*c).arg(m.as_str());
        }
        cmd.query::<()>(con).map_err(redis_err)?;
    }
    if let Some(f) = cs.floor {
        redis::cmd("SET")
            .arg(catalog::floor_key(cat))
            .arg(f)
            .query::<()>(con)
            .map_err(redis_err)?;
    }
    if let Some(r) = cs.retention {
        redis::cmd("SET")
            .arg(catalog::retention_key(cat))
            .arg(r)
            .query::<()>(con)
            .map_err(redis_err)?;
    }
    Ok(())
}

/// For a restore to an earlier point: the restored state as new journal
/// entries after each catalog's newest (a `drop`, then the state; a catalog
/// empty at that point gets the `drop` only). Empty for the newest point.
pub fn reship(plan: &Plan) -> Vec<Entry> {
    let mut out = Vec::new();
    if plan.at_ms.is_none() {
        return out;
    }
    for (cat, last) in &plan.newest_ids {
        let ms = last.0 + 1;
        let mut changes = vec![Change::Drop];
        if let Some(cs) = plan.state.catalogs.get(cat) {
            changes.extend(cs.deltas.iter().map(|(m, s)| Change::Delta {
                member: m.clone(),
                stamp: *s,
            }));
            changes.extend(cs.snaps.iter().map(|(u, c)| Change::Snap {
                uuid: u.clone(),
                covers: *c,
            }));
            changes.extend(cs.floor.map(|floor| Change::Floor { floor }));
            if cs.retention.is_some() {
                changes.push(Change::Retention { secs: cs.retention });
            }
        }
        out.extend(changes.into_iter().enumerate().map(|(seq, change)| Entry {
            catalog: cat.clone(),
            id: format!("{ms}-{seq}"),
            change,
        }));
    }
    out
}

fn connect(url: &str) -> Result<Box<dyn redis::ConnectionLike>, LakeError> {
    let client = redis::Client::open(url).map_err(redis_err)?;
    let mut con = client.get_connection().map_err(redis_err)?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query(&mut con)
        .map_err(redis_err)?;
    if info.contains("cluster_enabled:1") {
        let cluster = redis::cluster::ClusterClient::new(vec![url]).map_err(redis_err)?;
        return Ok(Box::new(cluster.get_connection().map_err(redis_err)?));
    }
    Ok(Box::new(con))
}

fn redis_err(e: redis::RedisError) -> LakeError {
    LakeError::unavailable(format!("redis: {e}"))
}

/// A human report of a restore.
pub fn describe(plan: &Plan, report: &Report, dry_run: bool, took: Instant) -> String {
    let mut out = format!(
        "{} {} catalogs: {} deltas, {} snapshots, from {} journal entries in {} batches ({} shipped twice, {} not of Lake's shapes and ignored){}{}, in {:.2} s\n",
        if dry_run { "would restore" } else { "restored" },
        report.catalogs,
        report.deltas,
        report.snapshots,
        plan.entries,
        plan.batches,
        plan.state.duplicates,
        plan.state.malformed,
        plan.checkpoint
            .as_deref()
            .map(|c| format!(" after checkpoint {c}"))
            .unwrap_or_default(),
        plan.at_ms
            .map(|t| format!(", as of {t} ms"))
            .unwrap_or_default(),
        took.elapsed().as_secs_f64()
    );
    for (cat, cs) in plan.state.live() {
        out.push_str(&format!(
            "  {cat}: {} deltas, {} snapshots, newest stamp {}\n",
            cs.deltas.len(),
            cs.snaps.len(),
            cs.newest_stamp().map_or("-".into(), |s| s.to_string())
        ));
    }
    out
}
