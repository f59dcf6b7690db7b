//! End-to-end: LAKE.GC deletes unreferenced Lake objects older than the grace
//! period, never a referenced one, never a foreign file, on both stores.

use std::time::Duration;

use lake_tests::{err_text, gc, read, redis, wait_for, write, Lake, Options, StoreKind};
use serde_json::json;

const STRAY: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const YOUNG: &str = "1f8fad5b-d9cb-469f-a165-70867728950e";

fn gc_removes_only_old_orphans(kind: StoreKind) {
    let lake = Lake::with(Options {
        store: kind,
        timeout_ms: 1000,
        ..Options::default()
    });
    let mut c = lake.con();
    for i in 0..3 {
        write(&mut c, "keep", &format!("k{i}"), &i.to_string()).unwrap();
    }
    read(&mut c, "keep", &["SNAP"]).unwrap();
    let (removed, _) = write(&mut c, "keep", "bad", "1").unwrap();
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg("keep")
        .arg(&removed)
        .query(&mut c)
        .unwrap();
    write(&mut c, "gone", "a", "1").unwrap();
    write(&mut c, "gone", "b", "1").unwrap();
    let _: i64 = redis::cmd("LAKE.DROP").arg("gone").query(&mut c).unwrap();
    lake.put_object(&format!("stray/{STRAY}.json"), b"{}");
    lake.put_object("keep/README.txt", b"not Lake's");
    let referenced = 3 + 1; // deltas + snapshot of "keep"
    let orphans = 1 + 2 + 1; // removed delta, dropped catalog, stray

    // Everything is younger than the grace period: nothing to delete yet.
    assert_eq!(
        gc(&mut c, &["DRYRUN", "GRACE", "0"]),
        vec![8, referenced, orphans, 0, 0]
    );
    wait_for(
        "the orphans to age past the grace period",
        Duration::from_secs(30),
        || gc(&mut c, &["DRYRUN", "GRACE", "0"])[3] == orphans,
    );
    let before = lake.objects();
    lake.put_object(&format!("stray/{YOUNG}.json"), b"{}");
    assert_eq!(
        gc(&mut c, &["GRACE", "0"]),
        vec![9, referenced, 1, orphans, orphans]
    );
    let after = lake.objects();
    assert_eq!(
        after.len(),
        before.len() + 1 - orphans as usize,
        "{after:?}"
    );
    assert!(after.contains(&"keep/README.txt".to_string()));
    assert!(after.contains(&format!("stray/{YOUNG}.json")));
    assert!(!after
        .iter()
        .any(|k| k.starts_with("gone/") || k.contains(&removed) || k.contains(STRAY)));
    assert_eq!(
        read(&mut c, "keep", &[]).unwrap(),
        Some(json!({"k0":0,"k1":1,"k2":2}))
    );
    assert_eq!(
        read(&mut c, "keep", &["NOSNAP"]).unwrap(),
        Some(json!({"k0":0,"k1":1,"k2":2}))
    );
    // The default grace (an hour) keeps everything that is left.
    assert_eq!(gc(&mut c, &[])[4], 0);
    let err = redis::cmd("LAKE.GC")
        .arg("GRACE")
        .arg("soon")
        .query::<redis::Value>(&mut c)
        .map_err(err_text);
    assert!(err
        .unwrap_err()
        .starts_with("ERR GRACE needs whole seconds"));
}

#[test]
fn gc_on_file_store() {
    gc_removes_only_old_orphans(StoreKind::File);
}

#[test]
fn gc_on_s3_store() {
    gc_removes_only_old_orphans(StoreKind::S3);
}

#[test]
fn the_grace_floor_rounds_up_and_allows_for_whole_second_times() {
    // timeout-ms 1500: a write may be indexed up to 1.5 s after its object
    // was stored, twice that is 3 s, and stores give last-modified times in
    // whole seconds: the floor is 4 s. (It was 2 s: 1500 ms truncated to
    // 1 s, doubled, which let GC delete an object 2.5 s old whose index
    // entry could still be on its way.)
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        timeout_ms: 1500,
        ..Options::default()
    });
    let mut c = lake.con();
    let key = format!("stray/{STRAY}.json");
    lake.put_object(&key, b"{}");
    let stored = std::time::Instant::now();
    wait_for(
        "the orphan to be 2.5 s old",
        Duration::from_secs(10),
        || stored.elapsed() >= Duration::from_millis(2500),
    );
    let r = gc(&mut c, &["GRACE", "0"]);
    assert_eq!((r[2], r[4]), (1, 0), "young, kept: {r:?}");
    assert!(lake.objects().contains(&key));
    // Past the floor, it goes.
    wait_for(
        "the orphan to be collected",
        Duration::from_secs(20),
        || gc(&mut c, &["GRACE", "0"])[4] == 1,
    );
    assert!(!lake.objects().contains(&key));
    // The clock probe GC writes to read the store's time is never left
    // behind.
    assert!(
        lake.objects().iter().all(|o| !o.starts_with(".lake-gc")),
        "{:?}",
        lake.objects()
    );
}

#[test]
fn gc_walks_a_large_index_in_bounded_chunks() {
    // 60,000 index entries: read 10,000 per step on Redis's main thread and
    // sent in as many chunks (one frame of everything, past a few million
    // entries, went over the frame limit and dropped the connection).
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        timeout_ms: 1000,
        ..Options::default()
    });
    let mut c = lake.con();
    let (kept, _) = write(&mut c, "real", "a", "1").unwrap();
    let mut pipe = redis::pipe();
    for i in 0..60_000u64 {
        pipe.cmd("ZADD")
            .arg(format!("catalog:{{big{}}}", i % 3))
            .arg(1_000_000 + i)
            .arg(format!("f:00000000-0000-4000-8000-{i:012x}"))
            .ignore();
    }
    pipe.query::<()>(&mut c).expect("fill the index");
    lake.put_object(&format!("stray/{STRAY}.json"), b"{}");
    let chunks_before = lake.metric("gc_chunks_total");
    wait_for(
        "the orphan to pass the grace floor",
        Duration::from_secs(30),
        || gc(&mut c, &["DRYRUN", "GRACE", "0"])[2] == 0,
    );
    let r = gc(&mut c, &["GRACE", "0"]);
    assert_eq!(
        r,
        vec![2, 1, 0, 1, 1],
        "[scanned, referenced, young, orphans, deleted]"
    );
    let chunks = lake.metric("gc_chunks_total") - chunks_before;
    assert!(
        chunks >= 2 * 7,
        "two walks of at least 7 chunks each, got {chunks}"
    );
    let objects = lake.objects();
    assert!(
        objects
            .iter()
            .any(|o| o.contains(&kept) || o.starts_with(".segments/")),
        "{objects:?}"
    );
    assert!(!objects.contains(&format!("stray/{STRAY}.json")));
    assert_eq!(read(&mut c, "real", &[]).unwrap(), Some(json!({"a": 1})));
    lake.assert_no_crash();
}
