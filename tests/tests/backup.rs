//! Disaster recovery: the index journal shipped to the store brings every
//! catalog back after Redis lost its data (`FLUSHALL`, a node lost with its
//! disk), to the newest point or to a point in time; GC refuses to collect
//! from an index that lost its data.
//!
//! Each check looks at the restored index itself (members and stamps) and
//! reads through a restarted, cold sidecar.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lake_shared::catalog;
use lake_tests::{err_text, read, wait_for, write, zrange, Lake, Options, StoreKind};
use serde_json::Value;

/// An acknowledged write: catalog, member, stamp, when the ack arrived.
type Acked = (String, String, i64, Instant);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn restore_ok(lake: &Lake, url: &str, extra: &[&str]) -> String {
    let out = lake.restore(url, extra);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "restore {extra:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn flushall(lake: &Lake) {
    let _: () = redis::cmd("FLUSHALL").query(&mut lake.con()).unwrap();
}

/// Everything an index holds of `cats`: both sorted sets, floor, retention.
fn index_of(lake: &Lake, cats: &[&str]) -> BTreeMap<String, String> {
    let mut c = lake.con();
    let mut out = BTreeMap::new();
    for cat in cats {
        out.insert(
            catalog::index_key(cat),
            format!("{:?}", zrange(&mut c, &catalog::index_key(cat))),
        );
        out.insert(
            catalog::snap_key(cat),
            format!("{:?}", zrange(&mut c, &catalog::snap_key(cat))),
        );
        for key in [catalog::floor_key(cat), catalog::retention_key(cat)] {
            let v: Option<String> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
            out.insert(key, format!("{v:?}"));
        }
    }
    out
}

fn reads_of(lake: &Lake, cats: &[&str], ats: &[i64]) -> Vec<(String, Option<Value>)> {
    let mut c = lake.con();
    let mut out = Vec::new();
    for cat in cats {
        out.push((cat.to_string(), read(&mut c, cat, &[]).unwrap()));
        for at in ats {
            let at = at.to_string();
            out.push((
                format!("{cat} AT {at}"),
                read(&mut c, cat, &["AT", &at]).unwrap(),
            ));
        }
    }
    out
}

fn restart_cold(lake: &mut Lake) {
    lake.kill_sidecar();
    lake.start_sidecar();
}

fn restore_after_flushall(kind: StoreKind) {
    let mut lake = Lake::with(Options {
        store: kind,
        snapshot_every: 4,
        ..Options::default()
    });
    let mut c = lake.con();
    let mut stamps = Vec::new();
    for i in 0..12 {
        let (_, s) = write(&mut c, "users", &format!("u{i}"), &i.to_string()).unwrap();
        stamps.push(s);
        if i % 5 == 4 {
            // Reads past snapshot-every commit snapshots (with SNAP now).
            read(&mut c, "users", &["SNAP"]).unwrap();
        }
    }
    let (gone_uuid, _) = write(&mut c, "users", "oops", "1").unwrap();
    let removed: i64 = redis::cmd("LAKE.REMOVE")
        .arg("users")
        .arg(&gone_uuid)
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 1);
    for i in 0..3 {
        write(&mut c, "orders/eu", &format!("o{i}"), r#"{"n":1}"#).unwrap();
    }
    let _: () = redis::cmd("LAKE.RETENTION")
        .arg("orders/eu")
        .arg(3600)
        .query(&mut c)
        .unwrap();
    write(&mut c, "dropped", "x", "1").unwrap();
    let _: i64 = redis::cmd("LAKE.DROP")
        .arg("dropped")
        .query(&mut c)
        .unwrap();
    let cats = ["users", "orders/eu", "dropped"];
    let ats = [stamps[2], stamps[7], stamps[11]];
    let index_before = index_of(&lake, &cats);
    let reads_before = reads_of(&lake, &cats, &ats);
    assert!(
        !zrange(&mut c, &catalog::snap_key("users")).is_empty(),
        "no snapshot was committed"
    );
    lake.wait_shipped();

    flushall(&lake);
    let objects = lake.objects();
    let err = redis::cmd("LAKE.GC")
        .arg("GRACE")
        .arg(0)
        .query::<Vec<i64>>(&mut c)
        .map_err(err_text)
        .unwrap_err();
    assert!(err.contains("GC refused"), "{err}");
    assert_eq!(lake.objects(), objects, "GC deleted after a FLUSHALL");

    let dry = restore_ok(&lake, &lake.url(), &["--dry-run"]);
    assert!(dry.starts_with("would restore 2 catalogs"), "{dry}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "a dry run wrote {keys:?}");

    let report = restore_ok(&lake, &lake.url(), &[]);
    assert!(report.starts_with("restored 2 catalogs"), "{report}");
    assert!(report.contains("users: 12 deltas"), "{report}");
    assert_eq!(index_of(&lake, &cats), index_before);
    restart_cold(&mut lake);
    assert_eq!(reads_of(&lake, &cats, &ats), reads_before);

    // A second restore would overwrite what is there now: refused.
    let out = lake.restore(&lake.url(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already have an index"), "{err}");

    // Writing goes on above every restored stamp.
    let (_, s) = write(&mut lake.con(), "users", "after", "1").unwrap();
    assert!(s > stamps[11], "{s} <= {}", stamps[11]);
    assert_eq!(lake.objects().len(), objects.len() + 1);
    lake.assert_no_crash();
}

#[test]
fn flushall_then_restore_brings_the_index_back_s3() {
    restore_after_flushall(StoreKind::S3);
}

#[test]
fn flushall_then_restore_brings_the_index_back_moto() {
    restore_after_flushall(StoreKind::Moto);
}

/// Runs `writers` clients writing to 10 catalogs until `stop`; the acks.
fn load(
    lake: &Lake,
    writers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Acked>>> {
    (0..writers)
        .map(|w| {
            let url = lake.url();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection())
                else {
                    return acked;
                };
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let cat = format!("load/c{}", (w + n) % 10);
                    let field = format!("w{w}.n{n}");
                    n += 1;
                    match write(&mut c, &cat, &field, &n.to_string()) {
                        Ok((uuid, stamp)) => {
                            acked.push((cat, format!("{field}:{uuid}"), stamp, Instant::now()))
                        }
                        // A write refused or cut off is not acknowledged.
                        Err(_) => {
                            if let Ok(fresh) =
                                redis::Client::open(url.as_str()).and_then(|c| c.get_connection())
                            {
                                c = fresh;
                            }
                        }
                    }
                }
                acked
            })
        })
        .collect()
}

/// The acked writes whose member is not in the index with its stamp.
fn missing(lake: &Lake, acked: &[Acked]) -> Vec<Acked> {
    let mut c = lake.con();
    acked
        .iter()
        .filter(|(cat, m, s, _)| {
            let got: Option<i64> = redis::cmd("ZSCORE")
                .arg(catalog::index_key(cat))
                .arg(m)
                .query(&mut c)
                .unwrap();
            got != Some(*s)
        })
        .cloned()
        .collect()
}

#[test]
fn flushall_under_50_writers_loses_only_the_last_second() {
    let mut lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&lake, 50, &stop);
    let began = Instant::now();
    wait_for("load to run 4 s", Duration::from_secs(10), || {
        began.elapsed() > Duration::from_secs(4)
    });
    let flushed_at = Instant::now();
    flushall(&lake);
    let after = Instant::now();
    wait_for("load to run on 0.5 s", Duration::from_secs(5), || {
        after.elapsed() > Duration::from_millis(500)
    });
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    lake.wait_shipped();
    // The writes made after the flush are shipped too; empty Redis again
    // (not journaled) and bring everything back.
    flushall(&lake);
    let report = restore_ok(&lake, &lake.url(), &[]);
    let lost = missing(&lake, &acked);
    let window = lost
        .iter()
        .map(|(_, _, _, t)| flushed_at.saturating_duration_since(*t))
        .max()
        .unwrap_or_default();
    println!(
        "acked writes: {}; acked writes missing after restore: {} (all acked at most {} ms before the FLUSHALL; bound 2,000 ms); {report}",
        acked.len(),
        lost.len(),
        window.as_millis()
    );
    assert!(acked.len() > 500, "the load made {} writes", acked.len());
    assert!(
        lost.iter()
            .all(|(_, _, _, t)| *t + Duration::from_secs(2) > flushed_at),
        "lost writes acked long before the flush: {:?}",
        &lost[..lost.len().min(5)]
    );
    restart_cold(&mut lake);
    let mut c = lake.con();
    for i in 0..10 {
        read(&mut c, &format!("load/c{i}"), &[]).expect("every restored object reads");
    }
    lake.assert_no_crash();
}

#[test]
fn restore_to_a_point_before_a_drop_brings_the_catalog_back() {
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let mut c = lake.con();
    for i in 0..5 {
        write(&mut c, "keep", &format!("k{i}"), &i.to_string()).unwrap();
    }
    let kept = read(&mut c, "keep", &[]).unwrap();
    lake.wait_shipped();
    let point = now_ms();
    wait_for(
        "the clock to pass the point",
        Duration::from_secs(2),
        || now_ms() > point + 1,
    );
    let _: i64 = redis::cmd("LAKE.DROP").arg("keep").query(&mut c).unwrap();
    write(&mut c, "later", "x", "1").unwrap();
    lake.wait_shipped();
    flushall(&lake);

    let report = restore_ok(&lake, &lake.url(), &["--at", &point.to_string()]);
    assert!(report.starts_with("restored 1 catalogs"), "{report}");
    assert_eq!(read(&mut c, "keep", &[]).unwrap(), kept);
    assert_eq!(read(&mut c, "later", &[]).unwrap(), None);

    // The restore shipped its state: a later restore to the newest point
    // starts from it instead of replaying the DROP.
    flushall(&lake);
    restore_ok(&lake, &lake.url(), &[]);
    assert_eq!(read(&mut c, "keep", &[]).unwrap(), kept);
    assert_eq!(read(&mut c, "later", &[]).unwrap(), None);
    lake.assert_no_crash();
}

#[test]
fn primary_and_replica_lost_with_their_disks_mid_load_restore_and_writes_resume_above() {
    let mut lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let (replica, _) = lake.start_replica();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&lake, 8, &stop);
    let began = Instant::now();
    wait_for("load to run 5 s", Duration::from_secs(15), || {
        began.elapsed() > Duration::from_secs(5)
    });
    // No RDB, no AOF: a killed Redis comes back empty, as one whose disk
    // was lost; its replica goes with it.
    lake.kill_redis();
    drop(replica);
    let killed_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    lake.restart_redis();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut lake.con()).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    restore_ok(&lake, &lake.url(), &[]);
    let lost = missing(&lake, &acked);
    println!(
        "acked writes: {}; missing after restore: {}",
        acked.len(),
        lost.len()
    );
    assert!(
        lost.iter()
            .all(|(_, _, _, t)| *t + Duration::from_secs(2) > killed_at),
        "{:?}",
        &lost[..lost.len().min(5)]
    );
    let mut c = lake.con();
    for i in 0..10 {
        let (_, s) = write(&mut c, &format!("load/c{i}"), "resumed", "1").unwrap();
        let restored = zrange(&mut c, &catalog::index_key(&format!("load/c{i}")));
        let top = restored.iter().map(|(_, s)| *s).filter(|x| *x != s).max();
        assert!(top.is_none_or(|t| s > t), "stamp {s} not above {top:?}");
    }
    lake.assert_no_crash();
}

#[test]
fn shipping_survives_a_sidecar_sigkill_mid_load() {
    let mut lake = Lake::with(Options {
        store: StoreKind::Moto,
        ..Options::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&lake, 16, &stop);
    let began = Instant::now();
    wait_for("load to run 1.5 s", Duration::from_secs(10), || {
        began.elapsed() > Duration::from_millis(1500)
    });
    lake.kill_sidecar();
    lake.start_sidecar();
    let back = Instant::now();
    wait_for("load to run on 1.5 s", Duration::from_secs(10), || {
        back.elapsed() > Duration::from_millis(1500)
    });
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    lake.wait_shipped();
    flushall(&lake);
    restore_ok(&lake, &lake.url(), &[]);
    let lost = missing(&lake, &acked);
    assert!(
        lost.is_empty(),
        "{} of {} acked writes missing: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    lake.assert_no_crash();
}

/// The journal is trimmed as it ships: streams stay empty at rest, and a
/// batch carries many writes (not a PUT per write).
#[test]
fn the_journal_ships_in_batches_and_is_trimmed() {
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&lake, 20, &stop);
    let began = Instant::now();
    wait_for("load to run 2 s", Duration::from_secs(10), || {
        began.elapsed() > Duration::from_secs(2)
    });
    stop.store(true, Ordering::Relaxed);
    let acked: usize = writers.into_iter().map(|h| h.join().unwrap().len()).sum();
    lake.wait_shipped();
    let batches = lake.journal_batches().len();
    let info: String = redis::cmd("INFO")
        .arg("lake")
        .query(&mut lake.con())
        .unwrap();
    println!("{acked} writes shipped in {batches} batches");
    assert!(
        batches >= 1 && batches * 20 < acked,
        "{batches} batches for {acked} writes"
    );
    assert!(info.contains("journal_catalogs_pending:0"), "{info}");
    lake.assert_no_crash();
}

/// GC keeps every object a restore within the backup retention needs (what
/// was removed or dropped a moment ago), and collects it once the retention
/// no longer covers it.
#[test]
fn gc_keeps_what_a_restore_within_the_backup_retention_needs() {
    let mut lake = Lake::with(Options {
        timeout_ms: 1000,
        sidecar_args: vec!["--backup-retention-secs".into(), "3600".into()],
        ..Options::default()
    });
    let mut c = lake.con();
    for i in 0..3 {
        write(&mut c, "r", &format!("k{i}"), &i.to_string()).unwrap();
    }
    let (uuid, _) = write(&mut c, "r", "gone", "1").unwrap();
    let whole = read(&mut c, "r", &[]).unwrap();
    write(&mut c, "d", "a", "1").unwrap();
    write(&mut c, "d", "b", "2").unwrap();
    lake.wait_shipped();
    let point = now_ms();
    wait_for(
        "the clock to pass the point",
        Duration::from_secs(2),
        || now_ms() > point + 1,
    );
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg("r")
        .arg(&uuid)
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("LAKE.DROP").arg("d").query(&mut c).unwrap();
    let objects = lake.objects();
    assert_eq!(objects.len(), 6);
    // Old enough for the grace (3 s with timeout-ms 1000), kept anyway.
    wait_for(
        "objects older than the grace",
        Duration::from_secs(30),
        || {
            lake_tests::gc(&mut c, &["DRYRUN", "GRACE", "0"])[0] == 6
                && lake_tests::gc(&mut c, &["DRYRUN", "GRACE", "0"])[2] == 0
        },
    );
    let r = lake_tests::gc(&mut c, &["GRACE", "0"]);
    assert_eq!(r[4], 0, "{r:?}");
    assert_eq!(lake.objects(), objects);

    // They are what a restore to before the removal reads.
    flushall(&lake);
    restore_ok(&lake, &lake.url(), &["--at", &point.to_string()]);
    restart_cold(&mut lake);
    let mut c = lake.con();
    assert_eq!(read(&mut c, "r", &[]).unwrap(), whole);
    assert_eq!(
        read(&mut c, "d", &[]).unwrap(),
        Some(serde_json::json!({"a":1,"b":2}))
    );

    // With no retention, what left the index is collected.
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg("r")
        .arg(&uuid)
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("LAKE.DROP").arg("d").query(&mut c).unwrap();
    lake.opts.sidecar_args.clear();
    restart_cold(&mut lake);
    let mut c = lake.con();
    wait_for("the three to be orphans", Duration::from_secs(30), || {
        lake_tests::gc(&mut c, &["DRYRUN", "GRACE", "0"])[3] == 3
    });
    let r = lake_tests::gc(&mut c, &["GRACE", "0"]);
    assert_eq!(r[4], 3, "{r:?}");
    lake.assert_no_crash();
}

/// Checkpoints fold the journal while writes go on; with no retention the
/// batches they cover are deleted; a restore reads the newest checkpoint
/// and the batches after it and finds every acknowledged write.
#[test]
fn checkpoints_bound_the_journal_and_restore_the_same() {
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        sidecar_args: [
            "--checkpoint-secs",
            "1",
            "--checkpoint-settle-secs",
            "2",
            "--backup-retention-secs",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&lake, 20, &stop);
    wait_for(
        "two checkpoints and deleted batches",
        Duration::from_secs(60),
        || {
            lake.metric("checkpoints_total") >= 2
                && lake.metric("journal_objects_deleted_total") > 0
        },
    );
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    lake.wait_shipped();
    flushall(&lake);
    let report = restore_ok(&lake, &lake.url(), &[]);
    assert!(report.contains("after checkpoint"), "{report}");
    let lost = missing(&lake, &acked);
    assert!(
        lost.is_empty(),
        "{} of {} acked writes missing: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    println!("{} acked writes; {report}", acked.len());
    lake.assert_no_crash();
}

/// Ships a first write, then ships only once an hour: what is written
/// next stays in the journal streams.
/// Writes fields `f0`..`f<n-1>` of `cat`, each acknowledged.
fn write_fields(c: &mut redis::Connection, cat: &str, n: usize) -> Vec<Acked> {
    (0..n)
        .map(|i| {
            let (uuid, stamp) = write(c, cat, &format!("f{i}"), "1").unwrap();
            (
                cat.to_string(),
                format!("f{i}:{uuid}"),
                stamp,
                Instant::now(),
            )
        })
        .collect()
}

fn ship_then_hold(lake: &Lake, c: &mut redis::Connection) {
    write(c, "warm", "x", "1").unwrap();
    lake.wait_shipped();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("lake.ship-interval-ms")
        .arg(3_600_000)
        .query(c)
        .unwrap();
}

/// Entries journaled but not shipped when Redis restarts are in its AOF;
/// the restarted module finds their streams and ships them.
#[test]
fn unshipped_changes_survive_a_redis_restart_from_aof() {
    let mut lake = Lake::with(Options {
        store: StoreKind::S3,
        redis_args: ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let mut c = lake.con();
    ship_then_hold(&lake, &mut c);
    let acked = write_fields(&mut c, "aof", 20);
    let len: i64 = redis::cmd("XLEN")
        .arg(catalog::journal_key("aof"))
        .query(&mut c)
        .unwrap();
    assert_eq!(len, 20, "nothing shipped yet");
    lake.restart_redis();
    lake.wait_shipped();
    flushall(&lake);
    restore_ok(&lake, &lake.url(), &[]);
    assert!(missing(&lake, &acked).is_empty());
    lake.assert_no_crash();
}

/// The walk that finds streams left by another process takes a bounded
/// slice of the main thread per tick and resumes where it stopped: among
/// far more keys than one tick walks, a stream written before a restart
/// is still found and shipped.
#[test]
fn unshipped_changes_are_found_among_many_keys() {
    let mut lake = Lake::with(Options {
        redis_args: ["--appendonly", "yes"].map(String::from).to_vec(),
        ..Options::default()
    });
    let mut c = lake.con();
    ship_then_hold(&lake, &mut c);
    let acked = write_fields(&mut c, "deep", 5);
    let mut pipe = redis::pipe();
    for i in 0..60_000 {
        pipe.cmd("SET").arg(format!("filler:{i}")).arg(i).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let stream = catalog::journal_key("deep");
    let len =
        |c: &mut redis::Connection| -> i64 { redis::cmd("XLEN").arg(&stream).query(c).unwrap() };
    assert_eq!(len(&mut c), 5, "nothing shipped yet");
    lake.restart_redis();
    let mut c = lake.con();
    let info = |c: &mut redis::Connection, field: &str| -> u64 {
        let text: String = redis::cmd("INFO").arg("lake").query(c).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("lake_{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO lake has no {field}"))
    };
    wait_for(
        "the stream to be shipped and a walk over every key to end",
        Duration::from_secs(60),
        || len(&mut c) == 0 && info(&mut c, "journal_walks") >= 1,
    );
    let walk = info(&mut c, "journal_last_walk_ms");
    assert!(
        walk > 50,
        "a walk over 60,000 keys took {walk} ms: more than one tick's slice"
    );
    // What was shipped is in the store: the index comes back from it alone.
    flushall(&lake);
    restore_ok(&lake, &lake.url(), &[]);
    assert!(missing(&lake, &acked).is_empty());
    lake.assert_no_crash();
}

/// `LAKE.GC` waits until the journal has reached the store; under a write
/// load that never stops the streams are never empty, and it must still
/// go ahead (it once waited for them to empty and gave up after 30 s).
#[test]
fn gc_under_a_steady_write_load_does_not_wait_for_empty_streams() {
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(&lake, 8, &stop);
    let mut c = lake.con();
    for _ in 0..3 {
        let r = redis::cmd("LAKE.GC")
            .arg("DRYRUN")
            .query::<Vec<i64>>(&mut c)
            .map_err(err_text);
        assert!(r.is_ok(), "{r:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let acked: usize = writers.into_iter().map(|h| h.join().unwrap().len()).sum();
    assert!(acked > 0);
    lake.assert_no_crash();
}

/// The journal streams are Redis keys a user can write: a key of that name
/// that is no stream, and stream entries that are not Lake's, change no
/// write, crash nothing, and a restore indexes none of them.
#[test]
fn hostile_journal_keys_and_entries_change_nothing() {
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let mut c = lake.con();
    let _: () = redis::cmd("SET")
        .arg(catalog::journal_key("h"))
        .arg("mine")
        .query(&mut c)
        .unwrap();
    write(&mut c, "h", "f", "1").expect("a write whose journal key is a string");
    let info: String = redis::cmd("INFO").arg("lake").query(&mut c).unwrap();
    assert!(info.contains("journal_record_errors:1"), "{info}");
    let j = catalog::journal_key("j");
    for (field, value) in [
        ("c", b"not json".to_vec()),
        ("zz", b"\xff\x00\r\n".to_vec()),
        (
            "c",
            br#"{"k":"delta","member":"f:../../x","stamp":1}"#.to_vec(),
        ),
        ("c", br#"{"k":"snap","uuid":"%n%s","covers":1}"#.to_vec()),
    ] {
        let _: String = redis::cmd("XADD")
            .arg(&j)
            .arg("*")
            .arg(field)
            .arg(value)
            .query(&mut c)
            .unwrap();
    }
    let (uuid, stamp) = write(&mut c, "j", "f", "2").unwrap();
    lake.wait_shipped();
    let (_redis, url) = lake_tests::plain_redis(&lake.dir.path().join("restored"));
    let report = restore_ok(&lake, &url, &[]);
    assert!(report.contains("2 not of Lake's shapes"), "{report}");
    let mut r = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap();
    assert_eq!(
        zrange(&mut r, &catalog::index_key("j")),
        vec![(format!("f:{uuid}"), stamp)]
    );
    // The write whose journal key was taken is indexed but was never
    // journaled (counted and logged): the backup does not have it.
    assert!(zrange(&mut r, &catalog::index_key("h")).is_empty());
    assert_eq!(zrange(&mut c, &catalog::index_key("h")).len(), 1);
    lake.assert_no_crash();
}
