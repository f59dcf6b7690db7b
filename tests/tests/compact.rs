//! Retention and compaction: history older than the retention and covered
//! by a snapshot leaves the index; every read answers as before, `AT` below
//! the floor is refused, replicas and the AOF follow, GC frees the objects.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lake_tests::{err_text, gc, read, redis, wait_for, write, write_mode, zrange, Lake, Options};

fn compact(c: &mut redis::Connection, cat: &str) -> (i64, i64, Option<i64>, i64) {
    redis::cmd("LAKE.COMPACT")
        .arg(cat)
        .query(c)
        .expect("LAKE.COMPACT")
}

fn read_at(c: &mut redis::Connection, cat: &str, at: i64) -> Result<Option<String>, String> {
    redis::cmd("LAKE.READ")
        .arg(cat)
        .arg("AT")
        .arg(at)
        .arg("NOSNAP")
        .query(c)
        .map_err(err_text)
}

#[test]
fn compaction_keeps_every_answer_and_refuses_at_below_the_floor() {
    let mut lake = Lake::with(Options {
        timeout_ms: 1000,
        redis_args: ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let (_replica, mut r) = lake.start_replica();
    let mut c = lake.con();
    let ok: String = redis::cmd("LAKE.RETENTION")
        .arg("c")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    let mut stamps = Vec::new();
    for i in 0..18 {
        let mode = if i % 3 == 0 { "MERGE" } else { "SET" };
        let (_, s) = write_mode(
            &mut c,
            "c",
            &format!("k{}", i % 5),
            &format!("{{\"n\":{i}}}"),
            mode,
        )
        .unwrap();
        stamps.push(s);
        if i == 9 || i == 14 {
            read(&mut c, "c", &["SNAP"]).unwrap();
        }
    }
    let doc = read(&mut c, "c", &["NOSNAP"]).unwrap();
    let at14 = read_at(&mut c, "c", stamps[14]).unwrap();
    let at16 = read_at(&mut c, "c", stamps[16]).unwrap();
    // Compact until the newer snapshot (covering the 15th delta) is the floor:
    // that needs it to be older than the retention of 1 s.
    let (mut deltas, mut snaps) = (0, 0);
    wait_for(
        "history older than the retention",
        Duration::from_secs(30),
        || {
            let (d, s, floor, _) = compact(&mut c, "c");
            deltas += d;
            snaps += s;
            floor == Some(stamps[14])
        },
    );
    assert_eq!(
        (deltas, snaps),
        (15, 1),
        "15 covered deltas and the older snapshot"
    );
    assert_eq!(
        read(&mut c, "c", &["NOSNAP"]).unwrap(),
        doc,
        "same document"
    );
    assert_eq!(read_at(&mut c, "c", stamps[14]).unwrap(), at14);
    assert_eq!(read_at(&mut c, "c", stamps[16]).unwrap(), at16);
    let e = read_at(&mut c, "c", stamps[12]).unwrap_err();
    assert!(
        e.starts_with(&format!(
            "ERR catalog 'c': history before {} was compacted",
            stamps[14]
        )),
        "{e}"
    );
    let index = zrange(&mut c, "catalog:{c}");
    assert_eq!(
        index.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        stamps[15..].to_vec()
    );
    assert_eq!(zrange(&mut c, "catalog:{c}:snap").len(), 1);
    // Nothing more to do; a new write keeps a stamp above the floor.
    assert_eq!(compact(&mut c, "c").0, 0);
    // The replica and the AOF follow.
    let snap = zrange(&mut c, "catalog:{c}:snap");
    wait_for("the replica to follow", Duration::from_secs(20), || {
        zrange(&mut r, "catalog:{c}") == index && zrange(&mut r, "catalog:{c}:snap") == snap
    });
    lake.restart_redis();
    let mut c = lake.con();
    assert_eq!(zrange(&mut c, "catalog:{c}"), index);
    assert_eq!(zrange(&mut c, "catalog:{c}:snap"), snap);
    assert!(
        read_at(&mut c, "c", stamps[12]).is_err(),
        "the floor survived the restart"
    );
    // GC frees the compacted objects; a cold sidecar reads the same.
    wait_for(
        "compacted objects older than the grace",
        Duration::from_secs(30),
        || gc(&mut c, &["DRYRUN", "GRACE", "0"])[3] == 16,
    );
    let r = gc(&mut c, &["GRACE", "0"]);
    assert_eq!(r[4], 16);
    let objects: HashSet<String> = lake.objects().into_iter().collect();
    assert_eq!(objects.len(), 3 + 1, "3 deltas and the snapshot remain");
    lake.kill_sidecar();
    lake.start_sidecar();
    assert_eq!(read(&mut c, "c", &["NOSNAP"]).unwrap(), doc);
    let (_, later) = write(&mut c, "c", "after", "1").unwrap();
    assert!(later > stamps[17]);
}

#[test]
fn without_retention_nothing_is_removed() {
    let lake = Lake::with(Options {
        module_args: ["retention-secs", "3600"].map(String::from).to_vec(),
        ..Options::default()
    });
    let mut c = lake.con();
    for i in 0..5 {
        write(&mut c, "k", &format!("f{i}"), "1").unwrap();
    }
    read(&mut c, "k", &["SNAP"]).unwrap();
    let secs: i64 = redis::cmd("LAKE.RETENTION").arg("k").query(&mut c).unwrap();
    assert_eq!(secs, 3600, "the module default");
    assert_eq!(
        compact(&mut c, "k"),
        (0, 0, None, 0),
        "nothing is an hour old"
    );
    let _: String = redis::cmd("LAKE.RETENTION")
        .arg("k")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(compact(&mut c, "k"), (0, 0, None, 0), "0 keeps everything");
    let _: String = redis::cmd("LAKE.RETENTION")
        .arg("k")
        .arg("DEFAULT")
        .query(&mut c)
        .unwrap();
    let secs: i64 = redis::cmd("LAKE.RETENTION").arg("k").query(&mut c).unwrap();
    assert_eq!(secs, 3600);
    assert_eq!(zrange(&mut c, "catalog:{k}").len(), 5);
    let e = redis::cmd("LAKE.RETENTION")
        .arg("k")
        .arg("soon")
        .query::<String>(&mut c)
        .map_err(err_text)
        .unwrap_err();
    assert!(e.starts_with("ERR retention needs"), "{e}");
}

/// Reads running while compaction removes history all answer the full
/// replay: no read ever sees a floor without the deltas after it.
#[test]
fn reads_racing_compaction_answer_the_full_replay() {
    let lake = Lake::with(Options {
        timeout_ms: 5000,
        ..Options::default()
    });
    let mut c = lake.con();
    let _: String = redis::cmd("LAKE.RETENTION")
        .arg("race")
        .arg(1)
        .query(&mut c)
        .unwrap();
    for i in 0..300 {
        let mode = ["SET", "MERGE", "INSERT"][i % 3];
        write_mode(
            &mut c,
            "race",
            &format!("f{}", i % 17),
            &format!("{{\"v\":{i}}}"),
            mode,
        )
        .unwrap();
        if i % 40 == 39 {
            read(&mut c, "race", &["SNAP"]).unwrap();
        }
    }
    let full = read(&mut c, "race", &["NOSNAP"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mut c = lake.con();
            let (stop, full) = (stop.clone(), full.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(read(&mut c, "race", &["NOSNAP"]).unwrap(), full);
                    n += 1;
                }
                n
            })
        })
        .collect();
    wait_for(
        "compaction to reach the newest snapshot",
        Duration::from_secs(30),
        || {
            compact(&mut c, "race");
            zrange(&mut c, "catalog:{race}:snap").len() == 1
                && zrange(&mut c, "catalog:{race}").len() == 20
        },
    );
    stop.store(true, Ordering::Relaxed);
    let reads: i32 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(reads > 0);
    assert_eq!(read(&mut c, "race", &[]).unwrap(), full);
}

/// With a deployment retention, a timer compacts in the background, in
/// bounded steps, without anyone calling `LAKE.COMPACT`.
#[test]
fn background_compaction_follows_the_deployment_retention() {
    let lake = Lake::with(Options {
        module_args: ["retention-secs", "1", "compact-interval-ms", "50"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let mut c = lake.con();
    let (_replica, mut r) = lake.start_replica();
    for i in 0..10 {
        write(&mut c, "bg", &format!("f{i}"), &i.to_string()).unwrap();
    }
    read(&mut c, "bg", &["SNAP"]).unwrap();
    write(&mut c, "bg", "late", "1").unwrap();
    let doc = read(&mut c, "bg", &["NOSNAP"]).unwrap();
    wait_for("the background compaction", Duration::from_secs(30), || {
        zrange(&mut c, "catalog:{bg}").len() == 1
    });
    assert_eq!(read(&mut c, "bg", &["NOSNAP"]).unwrap(), doc);
    let info: String = redis::cmd("INFO").arg("lake").query(&mut c).unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("lake_compactions:") && l != "lake_compactions:0"),
        "{info}"
    );
    wait_for("the replica to follow", Duration::from_secs(20), || {
        zrange(&mut r, "catalog:{bg}") == zrange(&mut c, "catalog:{bg}")
    });
}

/// A replica never compacts on its own, whatever its settings say: its
/// index changes only by what the primary sends.
#[test]
fn a_replica_never_compacts_by_itself() {
    let lake = Lake::start();
    let mut c = lake.con();
    let (_replica, mut r) = lake.start_replica();
    for (name, value) in [
        ("lake.retention-secs", "1"),
        ("lake.compact-interval-ms", "20"),
    ] {
        let _: String = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut r)
            .unwrap();
    }
    for i in 0..6 {
        write(&mut c, "rep", &format!("f{i}"), "1").unwrap();
    }
    read(&mut c, "rep", &["SNAP"]).unwrap();
    write(&mut c, "rep", "g", "1").unwrap();
    let index = zrange(&mut c, "catalog:{rep}");
    wait_for("the replica to follow", Duration::from_secs(20), || {
        zrange(&mut r, "catalog:{rep}") == index
    });
    // Long after the snapshot is older than the replica's retention, its
    // timer has run dozens of times and the index is still whole.
    let snap = zrange(&mut c, "catalog:{rep}:snap")[0].1;
    wait_for(
        "the snapshot to age past 1.5 s",
        Duration::from_secs(10),
        || lake_shared::stamp::now_us() - snap > 1_500_000,
    );
    assert_eq!(zrange(&mut r, "catalog:{rep}"), index);
    assert_eq!(
        zrange(&mut c, "catalog:{rep}"),
        index,
        "the primary keeps all (no retention)"
    );
}

/// Background compaction reaches every catalog, however many: none is
/// skipped for good by the walk over the keyspace.
#[test]
fn background_compaction_reaches_every_catalog() {
    let lake = Lake::with(Options {
        module_args: ["retention-secs", "1", "compact-interval-ms", "20"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let mut c = lake.con();
    let cats: Vec<String> = (0..150).map(|i| format!("many/{i}")).collect();
    for cat in &cats {
        for f in ["a", "b", "c"] {
            write(&mut c, cat, f, "1").unwrap();
        }
        read(&mut c, cat, &["SNAP"]).unwrap();
        write(&mut c, cat, "d", "1").unwrap();
    }
    wait_for("every catalog compacted", Duration::from_secs(60), || {
        cats.iter()
            .all(|cat| zrange(&mut c, &format!("catalog:{{{cat}}}")).len() == 1)
    });
}
