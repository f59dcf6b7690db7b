//! End-to-end: the segments layout on `s3://` (s3s and moto). Many writes go
//! out in one PUT; each index entry finds its record from its uuid alone,
//! through a cold sidecar too; records of one segment come back in one
//! ranged GET; both layouts live in one catalog; a forged uuid is `LAKEDATA`.

use std::time::Duration;

use lake_shared::segment::Locator;
use lake_tests::{delta_key, gc, read, redis, wait_for, write, zrange, Lake, Options, StoreKind};
use serde_json::{json, Value};

/// A sidecar that waits up to 200 ms for a batch to fill (so pipelined
/// writes share a segment deterministically) and keeps bodies above 4 KiB
/// in their own object.
fn batching(kind: StoreKind) -> Options {
    Options {
        store: kind,
        snapshot_every: 1000,
        sidecar_args: ["--batch-window-us", "200000", "--batch-record-kb", "4"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    }
}

/// Writes sent at once, one connection each (Redis runs one blocked command
/// per connection at a time), so a sidecar with a batch window puts them in
/// one segment; returns their uuids in order.
fn concurrent(lake: &Lake, writes: &[(&str, String, String)]) -> Vec<String> {
    let start = std::sync::Arc::new(std::sync::Barrier::new(writes.len()));
    let threads: Vec<_> = writes
        .iter()
        .cloned()
        .map(|(cat, field, value)| {
            let (cat, mut c, start) = (cat.to_string(), lake.con(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                write(&mut c, &cat, &field, &value).expect("write").0
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn writes_share_segments_and_read_back_cold(kind: StoreKind) {
    let mut lake = Lake::with(batching(kind));
    let mut c = lake.con();
    let writes: Vec<(String, String)> = (0..100)
        .map(|i| (format!("f.n{i}"), format!(r#"{{"i":{i},"s":"é✓"}}"#)))
        .collect();
    let batch: Vec<_> = writes
        .iter()
        .map(|(f, v)| ("seg", f.clone(), v.clone()))
        .collect();
    let uuids = concurrent(&lake, &batch);
    let big = format!("\"{}\"", "x".repeat(10 << 10));
    let (big_uuid, _) = write(&mut c, "seg", "big", &big).unwrap();

    // Batched: far fewer PUTs than writes; the big body has its own object.
    let puts = lake.metric("store_puts_total");
    assert!(puts <= 10, "{puts} PUTs for 101 writes");
    assert_eq!(lake.metric("segment_records_total"), 100);
    assert_eq!(Locator::from_uuid(&big_uuid).unwrap(), None);
    assert_eq!(delta_key("seg", &big_uuid), format!("seg/{big_uuid}.json"));
    // Every record holds exactly the envelope written, read from the store.
    for ((field, value), uuid) in writes.iter().zip(&uuids) {
        assert!(Locator::from_uuid(uuid).unwrap().is_some(), "{uuid}");
        let want =
            format!(r#"{{"v":1,"catalog":"seg","field":"{field}","mode":"set","value":{value}}}"#);
        assert_eq!(lake.delta_bytes("seg", uuid), want.as_bytes(), "{field}");
    }
    let members: Vec<String> = zrange(&mut c, "catalog:{seg}")
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(members.len(), 101);
    lake.assert_indexed_bodies_stored("seg", &members);

    let mut want = json!({"f": {}, "big": "x".repeat(10 << 10)});
    for i in 0..100 {
        want["f"][format!("n{i}")] = json!({"i": i, "s": "é✓"});
    }
    assert_eq!(
        read(&mut c, "seg", &["NOSNAP"]).unwrap(),
        Some(want.clone())
    );

    // A cold sidecar (empty cache) reads the same, with one ranged GET per
    // segment (records of one segment lie together) plus the big object.
    lake.kill_sidecar();
    lake.start_sidecar();
    let segments: std::collections::HashSet<String> =
        uuids.iter().map(|u| delta_key("seg", u)).collect();
    let mut c = lake.con();
    wait_for("the module to reconnect", Duration::from_secs(10), || {
        write(&mut c, "probe", "a", "1").is_ok()
    });
    let gets = lake.metric("store_gets_total");
    assert_eq!(
        read(&mut c, "seg", &["NOSNAP"]).unwrap(),
        Some(want.clone())
    );
    assert_eq!(
        lake.metric("store_gets_total") - gets,
        segments.len() as u64 + 1
    );
    assert_eq!(
        read(&mut c, "seg", &["PATH", "f.n42.i"]).unwrap(),
        Some(json!(42))
    );
}

#[test]
fn writes_share_segments_and_read_back_cold_on_s3s() {
    writes_share_segments_and_read_back_cold(StoreKind::S3);
}

#[test]
fn writes_share_segments_and_read_back_cold_on_moto() {
    writes_share_segments_and_read_back_cold(StoreKind::Moto);
}

/// A catalog written first with one object per write, then in segments:
/// one read merges both, in stamp order, and GC keeps both kinds.
#[test]
fn both_layouts_in_one_catalog() {
    let mut lake = Lake::with(Options {
        store: StoreKind::S3,
        timeout_ms: 500,
        sidecar_args: ["--layout", "objects"].map(String::from).to_vec(),
        ..Options::default()
    });
    let mut c = lake.con();
    let (a, _) = write(&mut c, "mix", "a", "1").unwrap();
    let (b, _) = write(&mut c, "mix", "x", r#"{"from":"object"}"#).unwrap();
    lake.kill_sidecar();
    lake.opts.sidecar_args.clear();
    lake.start_sidecar();
    wait_for("the module to reconnect", Duration::from_secs(10), || {
        write(&mut c, "mix", "c", "3").is_ok()
    });
    let (d, _) = write(&mut c, "mix", "x", r#"{"from":"segment"}"#).unwrap();
    for u in [&a, &b] {
        assert_eq!(Locator::from_uuid(u).unwrap(), None, "{u}: one object");
        assert!(lake.objects().contains(&format!("mix/{u}.json")));
    }
    assert!(Locator::from_uuid(&d).unwrap().is_some(), "{d}: a record");
    let want = json!({"a":1,"x":{"from":"segment"},"c":3});
    assert_eq!(
        read(&mut c, "mix", &["NOSNAP"]).unwrap(),
        Some(want.clone())
    );
    assert_eq!(read(&mut c, "mix", &["SNAP"]).unwrap(), Some(want.clone()));
    wait_for(
        "objects older than the grace",
        Duration::from_secs(30),
        || gc(&mut c, &["DRYRUN", "GRACE", "0"])[2] == 0,
    );
    let before = lake.objects();
    let r = gc(&mut c, &["GRACE", "0"]);
    assert_eq!(r[4], 0, "nothing unreferenced: {r:?}");
    assert_eq!(lake.objects(), before);
    lake.kill_sidecar();
    lake.start_sidecar();
    wait_for("the module to reconnect", Duration::from_secs(10), || {
        read(&mut c, "mix", &["NOSNAP"]).is_ok()
    });
    assert_eq!(read(&mut c, "mix", &["NOSNAP"]).unwrap(), Some(want));
}

/// Index entries whose version-8 uuid cannot locate a record (past the
/// segment's end, in a segment that does not exist, inside another record,
/// empty, the wrong variant) fail the read with LAKEDATA naming the uuid;
/// Redis stays up and the catalog reads again once the entry is removed.
#[test]
fn forged_record_uuids_are_lakedata() {
    let lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let mut c = lake.con();
    let (good, _) = write(&mut c, "f", "a", r#"{"k":"v"}"#).unwrap();
    let loc = Locator::from_uuid(&good).unwrap().expect("a record");
    let past_end = Locator {
        offset: loc.offset + 4096,
        ..loc
    };
    let other_segment = Locator {
        segment: loc.segment ^ 1,
        ..loc
    };
    let inside = Locator {
        offset: loc.offset + 1,
        len: loc.len - 1,
        ..loc
    };
    let forged = [
        past_end.to_uuid(),
        other_segment.to_uuid(),
        inside.to_uuid(),
        format!("{}00000000", &good[..28]),         // length 0
        format!("{}0{}", &good[..19], &good[20..]), // variant 0b00
    ];
    for uuid in &forged {
        let member = format!("a:{uuid}");
        let _: i64 = redis::cmd("ZADD")
            .arg("catalog:{f}")
            .arg(i64::MAX >> 12)
            .arg(&member)
            .query(&mut c)
            .unwrap();
        let err = read(&mut c, "f", &["NOSNAP"]).unwrap_err();
        assert!(err.starts_with("LAKEDATA catalog 'f'"), "{uuid}: {err}");
        assert!(err.contains(uuid.as_str()), "{uuid}: {err}");
        let _: i64 = redis::cmd("ZREM")
            .arg("catalog:{f}")
            .arg(&member)
            .query(&mut c)
            .unwrap();
    }
    assert_eq!(
        read(&mut c, "f", &["NOSNAP"]).unwrap(),
        Some(json!({"a":{"k":"v"}}))
    );
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    assert!(!std::fs::read_to_string(lake.dir.path().join("redis.log"))
        .unwrap_or_default()
        .contains("BUG REPORT"));
}

/// GC deletes a segment only when none of its records is referenced: one
/// shared by a live and a dropped catalog stays, one holding only dropped
/// and removed records goes, and the live catalog reads the same.
#[test]
fn gc_deletes_a_segment_once_all_its_records_are_dead() {
    let mut opts = batching(StoreKind::S3);
    opts.timeout_ms = 500;
    let lake = Lake::with(opts);
    let mut c = lake.con();
    let w = |cat: &'static str, field: &str| (cat, field.to_string(), "1".to_string());
    let shared = concurrent(&lake, &[w("live", "a"), w("gone", "a")]);
    let dead = concurrent(&lake, &[w("live", "bad"), w("gone", "b")]);
    let seg_shared = delta_key("live", &shared[0]);
    let seg_dead = delta_key("live", &dead[0]);
    assert_eq!(seg_shared, delta_key("gone", &shared[1]));
    assert_eq!(seg_dead, delta_key("gone", &dead[1]));
    assert_ne!(seg_shared, seg_dead);
    let n: i64 = redis::cmd("LAKE.DROP").arg("gone").query(&mut c).unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("LAKE.REMOVE")
        .arg("live")
        .arg(&dead[0])
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    wait_for(
        "segments older than the grace",
        Duration::from_secs(30),
        || gc(&mut c, &["DRYRUN", "GRACE", "0"])[2] == 0,
    );
    // [scanned, referenced, young, orphans, deleted]
    assert_eq!(gc(&mut c, &["GRACE", "0"]), vec![2, 1, 0, 1, 1]);
    let objects = lake.objects();
    assert!(objects.contains(&seg_shared), "{objects:?}");
    assert!(!objects.contains(&seg_dead), "{objects:?}");
    assert_eq!(
        read(&mut c, "live", &["NOSNAP"]).unwrap(),
        Some(json!({"a":1}))
    );
    assert_eq!(read(&mut c, "gone", &[]).unwrap(), None::<Value>);
}

/// `local://` is a segment log already: asking it for segments is refused
/// at start, with the reason.
#[test]
fn segments_on_local_store_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = lake_tests::sidecar(
        &dir.path().join("s.sock"),
        &format!("local://{}", dir.path().join("o").display()),
        None,
    )
    .args(["--layout", "segments"])
    .output()
    .expect("run lake-sidecar");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already a segment log"), "{err}");
}

/// The store itself, as the sidecar opens it, against the test's server.
fn s3_store(lake: &Lake) -> lake_sidecar::store::s3::S3Store {
    use lake_sidecar::store::s3::{Provider, S3Store, Settings};
    std::env::set_var("AWS_ACCESS_KEY_ID", lake_tests::ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", lake_tests::SECRET_KEY);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let mut s = Settings::from_url(&format!(
        "s3://{}/{}",
        lake_tests::BUCKET,
        lake_tests::PREFIX
    ))
    .expect("url");
    s.provider = Provider::Minio;
    s.endpoint = Some(format!("http://127.0.0.1:{}", lake.s3_port()));
    s.path_style = true;
    s.multipart_threshold = 5 << 20;
    lake.rt().block_on(S3Store::open(s)).expect("open S3 store")
}

/// Objects are created, never overwritten (`If-None-Match: *`): a second
/// put of a key, small or multipart, leaves the first bytes and says so.
fn create_only_scenario(kind: StoreKind) {
    use lake_sidecar::store::{Created, Store};
    let lake = Lake::with(Options {
        store: kind,
        ..Options::default()
    });
    let store = s3_store(&lake);
    let rt = lake.rt();
    let big = |b: u8| vec![b; 6 << 20];
    for (key, first, second) in [
        ("c/small.json", b"first".to_vec(), b"second".to_vec()),
        ("c/big.json", big(1), big(2)),
    ] {
        assert_eq!(
            rt.block_on(store.put(key, first.clone())).unwrap(),
            Created::New,
            "{key}"
        );
        assert_eq!(
            rt.block_on(store.put(key, second)).unwrap(),
            Created::Exists,
            "{key}"
        );
        assert!(lake.object(key) == first, "{key} was overwritten");
    }
}

#[test]
fn objects_are_created_never_overwritten_on_s3s() {
    create_only_scenario(StoreKind::S3);
}

#[test]
fn objects_are_created_never_overwritten_on_moto() {
    create_only_scenario(StoreKind::Moto);
}
