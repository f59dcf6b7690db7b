//! End-to-end: repair (LAKE.REMOVE with its fence, LAKE.DROP), limits and
//! backpressure, and who can reach what (ACLs, key specs, the socket).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use lake_tests::{
    delta_key, err_text, read, redis, wait_for, write, write_mode, zrange, Lake, Options,
};
use serde_json::json;

fn metric(lake: &Lake, name: &str) -> i64 {
    let (_, body) = lake.http_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}

#[test]
fn remove_repairs_a_catalog_whose_reads_fail() {
    let lake = Lake::with(Options {
        modes: vec![(
            "picky".into(),
            "function merge(c, v) { if (v < 0) throw new Error('negative'); return v; }".into(),
        )],
        ..Options::default()
    });
    let mut c = lake.con();
    write_mode(&mut c, "r", "a", "1", "picky").unwrap();
    let (bad, _) = write_mode(&mut c, "r", "a", "-1", "picky").unwrap();
    write(&mut c, "r", "b", "2").unwrap();
    let err = read(&mut c, "r", &[]).unwrap_err();
    assert!(err.contains(&bad), "{err}");
    let removed: i64 = redis::cmd("LAKE.REMOVE")
        .arg("r")
        .arg(&bad)
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(read(&mut c, "r", &[]).unwrap(), Some(json!({"a":1,"b":2})));
    let again: i64 = redis::cmd("LAKE.REMOVE")
        .arg("r")
        .arg(&bad)
        .query(&mut c)
        .unwrap();
    assert_eq!(again, 0);
    let err = redis::cmd("LAKE.REMOVE")
        .arg("r")
        .arg("../x")
        .query::<i64>(&mut c)
        .map_err(err_text)
        .unwrap_err();
    assert!(err.starts_with("ERR invalid uuid"), "{err}");
    assert_eq!(zrange(&mut c, "catalog:{r}").len(), 2);
    // The object stays for GC; the index no longer names it.
    assert!(lake.objects().contains(&delta_key("r", &bad)));
}

/// A snapshot built from a read that started before a removal must not be
/// committed after it: it may hold the removed delta.
#[test]
fn snapshot_built_before_a_removal_is_not_committed() {
    let lake = Lake::with(Options {
        modes: vec![(
            "slow".into(),
            "function merge(c, v) { const t = Date.now(); while (Date.now() - t < 400) {} return v; }".into(),
        )],
        ..Options::default()
    });
    let mut c = lake.con();
    write(&mut c, "f", "a", "1").unwrap();
    let (gone, _) = write(&mut c, "f", "secret", "42").unwrap();
    write_mode(&mut c, "f", "z", "3", "slow").unwrap();
    let mut c2 = lake.con();
    let reader = std::thread::spawn(move || read(&mut c2, "f", &["SNAP"]));
    wait_for("the merge to be in flight", Duration::from_secs(10), || {
        metric(&lake, "lake_inflight") >= 1
    });
    let removed: i64 = redis::cmd("LAKE.REMOVE")
        .arg("f")
        .arg(&gone)
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 1);
    let doc = reader.join().unwrap().unwrap().unwrap();
    assert_eq!(
        doc["secret"],
        json!(42),
        "the read itself began before the removal"
    );
    assert!(
        zrange(&mut c, "catalog:{f}:snap").is_empty(),
        "fenced snapshot was committed"
    );
    assert_eq!(
        read(&mut c, "f", &["NOSNAP"]).unwrap(),
        Some(json!({"a":1,"z":3}))
    );
    // A snapshot after the removal is committed normally.
    read(&mut c, "f", &["SNAP"]).unwrap();
    assert_eq!(zrange(&mut c, "catalog:{f}:snap").len(), 1);
}

#[test]
fn drop_removes_the_index_and_keeps_objects_for_gc() {
    let lake = Lake::start();
    let mut c = lake.con();
    for i in 0..3 {
        write(&mut c, "d", &format!("k{i}"), "1").unwrap();
    }
    read(&mut c, "d", &["SNAP"]).unwrap();
    let n: i64 = redis::cmd("LAKE.DROP").arg("d").query(&mut c).unwrap();
    assert_eq!(n, 3);
    assert_eq!(read(&mut c, "d", &[]).unwrap(), None);
    let exists: i64 = redis::cmd("EXISTS")
        .arg("catalog:{d}")
        .arg("catalog:{d}:snap")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0);
    assert_eq!(lake.objects().len(), 4);
    write(&mut c, "d", "fresh", "1").unwrap();
    assert_eq!(read(&mut c, "d", &[]).unwrap(), Some(json!({"fresh":1})));
}

#[test]
fn too_many_waiting_requests_get_lakebusy() {
    let lake = Lake::with(Options {
        timeout_ms: 3000,
        module_args: vec!["max-inflight".into(), "2".into()],
        ..Options::default()
    });
    let mut c = lake.con();
    write(&mut c, "b", "a", "1").unwrap();
    lake.signal_sidecar("STOP");
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let mut c = lake.con();
            std::thread::spawn(move || write(&mut c, "b", "x", "1"))
        })
        .collect();
    wait_for("two blocked clients", Duration::from_secs(5), || {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut c).unwrap();
        info.contains("blocked_clients:2")
    });
    let t = Instant::now();
    let err = write(&mut c, "b", "y", "1").unwrap_err();
    assert!(err.starts_with("LAKEBUSY"), "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "LAKEBUSY is immediate"
    );
    lake.signal_sidecar("CONT");
    for b in blocked {
        assert!(
            b.join().unwrap().is_ok(),
            "blocked writes complete once the sidecar resumes"
        );
    }
    write(&mut c, "b", "z", "1").unwrap();
}

#[test]
fn oversized_read_result_is_refused_with_a_hint() {
    let lake = Lake::with(Options {
        sidecar_args: vec!["--max-doc-mb".into(), "1".into()],
        ..Options::default()
    });
    let mut c = lake.con();
    write(
        &mut c,
        "big",
        "blob",
        &format!("\"{}\"", "x".repeat(2 << 20)),
    )
    .unwrap();
    write(&mut c, "big", "small", "1").unwrap();
    let err = read(&mut c, "big", &[]).unwrap_err();
    assert!(
        err.starts_with("ERR catalog 'big': the result is") && err.contains("PATH"),
        "{err}"
    );
    assert_eq!(
        read(&mut c, "big", &["PATH", "small"]).unwrap(),
        Some(json!(1))
    );
}

#[test]
fn commands_declare_the_catalog_as_their_key_with_flags() {
    let lake = Lake::start();
    let mut c = lake.con();
    for (args, flag) in [
        (vec!["LAKE.WRITE", "tenantA/users", "f", "1"], "write"),
        (vec!["LAKE.READ", "tenantA/users", "PATH", "f"], "readonly"),
        (
            vec![
                "LAKE.REMOVE",
                "tenantA/users",
                "0f8fad5b-d9cb-469f-a165-70867728950e",
            ],
            "write",
        ),
        (vec!["LAKE.DROP", "tenantA/users"], "write"),
    ] {
        let keys: Vec<String> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(&args)
            .query(&mut c)
            .unwrap();
        assert_eq!(keys, vec!["tenantA/users".to_string()], "{args:?}");
        let info: redis::Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(args[0])
            .query(&mut c)
            .unwrap();
        let text = format!("{info:?}");
        assert!(text.contains(flag), "{} lacks {flag}: {text}", args[0]);
        if args[0] == "LAKE.WRITE" {
            assert!(text.contains("denyoom"), "{text}");
        }
    }
}

#[test]
fn acl_key_patterns_on_catalog_names_allow_and_refuse() {
    let lake = Lake::start();
    let mut admin = lake.con();
    redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "tenant-a",
            "on",
            ">secret",
            "~tenantA/*",
            "+@all",
        ])
        .query::<String>(&mut admin)
        .unwrap();
    let mut c = lake.con();
    redis::cmd("AUTH")
        .arg("tenant-a")
        .arg("secret")
        .query::<String>(&mut c)
        .unwrap();
    write(&mut c, "tenantA/users", "f", "1").unwrap();
    assert_eq!(
        read(&mut c, "tenantA/users", &[]).unwrap(),
        Some(json!({"f":1}))
    );
    for err in [
        write(&mut c, "tenantB/users", "f", "1").unwrap_err(),
        read(&mut c, "tenantB/users", &[]).unwrap_err(),
    ] {
        assert!(err.starts_with("NOPERM"), "{err}");
    }
    assert!(zrange(&mut admin, "catalog:{tenantB/users}").is_empty());
}

#[test]
fn socket_is_private_and_peers_must_handshake() {
    use std::io::{Read, Write};
    let lake = Lake::start();
    let mode = std::fs::metadata(lake.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let before = metric(&lake, "lake_handshake_failures_total");
    let mut s = std::os::unix::net::UnixStream::connect(lake.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        s.read(&mut buf).unwrap_or(0),
        0,
        "the sidecar hangs up on a bad peer"
    );
    assert_eq!(metric(&lake, "lake_handshake_failures_total"), before + 1);
    // The module's own connection is unaffected.
    let mut c = lake.con();
    write(&mut c, "ok", "a", "1").unwrap();
}

#[test]
fn socket_group_gives_mode_0660() {
    use std::os::unix::fs::MetadataExt;
    let lake = Lake::with(Options {
        sidecar_args: vec!["--socket-group".into(), "root".into()],
        ..Options::default()
    });
    let meta = std::fs::metadata(lake.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 0);
    let mut c = lake.con();
    write(&mut c, "g", "a", "1").unwrap();
}

/// The sidecar caches merged documents, and the module keeps answers and
/// the bodies written since: a removal after a cached read must still take
/// the removed delta out of the next read, through either cache.
#[test]
fn removal_after_a_cached_read_is_honoured() {
    for module_cache in [false, true] {
        let module_args = if module_cache {
            Vec::new()
        } else {
            ["reply-cache-mb", "0"].map(String::from).to_vec()
        };
        let lake = Lake::with(Options {
            store: lake_tests::StoreKind::Local,
            module_args,
            ..Options::default()
        });
        let mut c = lake.con();
        write(&mut c, "rc", "a", "1").unwrap();
        let (bad, _) = write(&mut c, "rc", "b", "2").unwrap();
        write(&mut c, "rc", "c", "3").unwrap();
        assert_eq!(
            read(&mut c, "rc", &[]).unwrap(),
            Some(json!({"a":1,"b":2,"c":3}))
        );
        assert_eq!(metric(&lake, "lake_cache_misses_total"), 1);
        write(&mut c, "rc", "d", "4").unwrap();
        assert_eq!(
            read(&mut c, "rc", &[]).unwrap(),
            Some(json!({"a":1,"b":2,"c":3,"d":4}))
        );
        // Folded by the module, or by the sidecar from its cached document.
        let sidecar_hits = if module_cache { 0 } else { 1 };
        assert_eq!(metric(&lake, "lake_cache_hits_total"), sidecar_hits);
        write(&mut c, "rc", "e", "5").unwrap();
        let removed: i64 = redis::cmd("LAKE.REMOVE")
            .arg("rc")
            .arg(&bad)
            .query(&mut c)
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(
            read(&mut c, "rc", &[]).unwrap(),
            Some(json!({"a":1,"c":3,"d":4,"e":5}))
        );
    }
}

/// A catalog key overwritten with another type gives a clear error on read
/// and write, and Redis keeps serving.
#[test]
fn a_clobbered_index_key_is_reported_not_crashed_on() {
    let lake = Lake::start();
    let mut c = lake.con();
    write(&mut c, "cl", "a", "1").unwrap();
    let _: () = redis::cmd("SET")
        .arg("catalog:{cl}")
        .arg("oops")
        .query(&mut c)
        .unwrap();
    let err = read(&mut c, "cl", &[]).unwrap_err();
    assert!(err.starts_with("LAKEDATA"), "{err}");
    assert!(err.contains("sorted set"), "{err}");
    let err = write(&mut c, "cl", "a", "2").unwrap_err();
    assert!(err.starts_with("LAKEDATA"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

/// Index writes go through Redis's key API: they must still count as
/// changes for RDB save points and invalidate WATCH like a ZADD would.
#[test]
fn index_writes_count_for_save_points_and_invalidate_watch() {
    let lake = Lake::start();
    let mut c = lake.con();
    let changes = |c: &mut redis::Connection| -> i64 {
        let info: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let before = changes(&mut c);
    for i in 0..5 {
        write(&mut c, "sv", &format!("f{i}"), "1").unwrap();
    }
    assert!(changes(&mut c) >= before + 5);
    let mut w = lake.con();
    let _: () = redis::cmd("WATCH")
        .arg("catalog:{sv}")
        .query(&mut w)
        .unwrap();
    write(&mut c, "sv", "g", "2").unwrap();
    let res: Option<Vec<String>> = redis::pipe().atomic().cmd("PING").query(&mut w).unwrap();
    assert_eq!(res, None, "EXEC must fail: the watched index changed");
}

/// The index lives in database 0 (background snapshots and LAKE.GC count on
/// it): a client in another database gets a clear error and changes nothing.
#[test]
fn other_databases_are_refused_clearly() {
    let lake = Lake::start();
    let mut c = lake.con();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let err = write(&mut c, "db", "a", "1").unwrap_err();
    assert!(
        err.starts_with("ERR") && err.contains("database 0"),
        "{err}"
    );
    let err = read(&mut c, "db", &[]).unwrap_err();
    assert!(err.contains("SELECT 0"), "{err}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    write(&mut c, "db", "a", "1").unwrap();
    assert_eq!(read(&mut c, "db", &[]).unwrap(), Some(json!({"a":1})));
}

#[test]
fn remove_in_a_long_history_is_bounded_and_exact_with_field() {
    // REMOVE used to scan the whole index on Redis's main thread. Now it
    // looks through at most 10,000 entries; past that it asks for the
    // field, with which the removal is one lookup.
    let lake = Lake::start();
    let mut c = lake.con();
    let mut pipe = redis::pipe();
    for i in 0..15_000u64 {
        let uuid = format!("00000000-0000-4000-8000-{i:012x}");
        pipe.cmd("ZADD")
            .arg("catalog:{long}")
            .arg(1_000_000 + i)
            .arg(format!("f{}:{uuid}", i % 7))
            .ignore();
    }
    pipe.query::<()>(&mut c).expect("fill the index");
    // A uuid the index does not hold: the old full scan answered 0 after
    // 15,000 entries; now the scan stops at the bound and says what to do.
    let t = Instant::now();
    let e = redis::cmd("LAKE.REMOVE")
        .arg("long")
        .arg("0f8fad5b-d9cb-469f-a165-70867728950e")
        .query::<i64>(&mut c)
        .map_err(err_text)
        .expect_err("bounded");
    let scan_took = t.elapsed();
    assert!(
        e.starts_with("ERR the uuid is not among the first 10000 entries")
            && e.contains("LAKE.REMOVE <catalog> <uuid> FIELD <field>"),
        "{e}"
    );
    let target = format!("00000000-0000-4000-8000-{:012x}", 14_999u64);
    let removed: i64 = redis::cmd("LAKE.REMOVE")
        .arg("long")
        .arg(&target)
        .arg("FIELD")
        .arg(format!("f{}", 14_999 % 7))
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 1);
    let card: i64 = redis::cmd("ZCARD")
        .arg("catalog:{long}")
        .query(&mut c)
        .unwrap();
    assert_eq!(card, 14_999);
    let fence: i64 = redis::cmd("GET")
        .arg("catalog:{long}:fence")
        .query(&mut c)
        .unwrap();
    assert_eq!(fence, 1);
    // A wrong field finds nothing and changes nothing.
    let none: i64 = redis::cmd("LAKE.REMOVE")
        .arg("long")
        .arg(format!("00000000-0000-4000-8000-{:012x}", 5u64))
        .arg("FIELD")
        .arg("nope")
        .query(&mut c)
        .unwrap();
    assert_eq!(none, 0);
    println!("bounded REMOVE scan of a 15,000-entry index took {scan_took:?}");
    lake.assert_no_crash();
}
