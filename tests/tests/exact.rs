//! Exact documents end to end: numbers keep the text they were written with
//! through writes, merges, snapshots, `AT` reads and a cold sidecar; a JSON
//! `null` document reads as `null`, never as nil; the value's JSON is
//! checked by the sidecar, so Redis's main thread only copies it.

use lake_tests::{redis, write, write_mode, zrange, Lake, Options, StoreKind};

/// `LAKE.READ` as the raw bulk string (no JSON parsing on the way).
fn read_raw(c: &mut redis::Connection, cat: &str, args: &[&str]) -> Option<String> {
    redis::cmd("LAKE.READ")
        .arg(cat)
        .arg(args)
        .query(c)
        .expect("LAKE.READ")
}

#[test]
fn numbers_keep_their_text_through_merges_snapshots_and_a_cold_sidecar() {
    let mut lake = Lake::with(Options {
        store: StoreKind::Local,
        ..Options::default()
    });
    let mut c = lake.con();
    let doc = r#"{"id":12345678901234567,"amount":0.10,"e":1E+2,"tiny":5e-324,"neg":-0}"#;
    let (_, first) = write(&mut c, "n", "$", doc).unwrap();
    write_mode(
        &mut c,
        "n",
        "more",
        r#"{"x":123456789012345678901234567890}"#,
        "MERGE",
    )
    .unwrap();
    let want = r#"{"id":12345678901234567,"amount":0.10,"e":1E+2,"tiny":5e-324,"neg":-0,"more":{"x":123456789012345678901234567890}}"#;
    assert_eq!(read_raw(&mut c, "n", &[]).as_deref(), Some(want));
    assert_eq!(read_raw(&mut c, "n", &["SNAP"]).as_deref(), Some(want));
    assert_eq!(zrange(&mut c, "catalog:{n}:snap").len(), 1);
    write(&mut c, "n", "big", "18446744073709551617").unwrap();
    let want2 = want.replace("}}", "},\"big\":18446744073709551617}");
    assert_eq!(read_raw(&mut c, "n", &[]).as_deref(), Some(want2.as_str()));
    assert_eq!(
        read_raw(&mut c, "n", &["PATH", "id"]).as_deref(),
        Some("12345678901234567")
    );
    assert_eq!(
        read_raw(&mut c, "n", &["AT", &first.to_string()]).as_deref(),
        Some(doc)
    );
    // A cold sidecar reads the snapshot and the deltas from the store.
    lake.kill_sidecar();
    lake.start_sidecar();
    assert_eq!(
        read_raw(&mut c, "n", &["NOSNAP"]).as_deref(),
        Some(want2.as_str())
    );
}

#[test]
fn a_null_document_reads_as_null_and_nothing_reads_as_nil() {
    let mut lake = Lake::start();
    let mut c = lake.con();
    assert_eq!(read_raw(&mut c, "z", &[]), None, "never written: nil");
    let (_, first) = write(&mut c, "z", "$", r#"{"a":"foo","n":null}"#).unwrap();
    assert_eq!(
        read_raw(&mut c, "z", &["PATH", "n"]).as_deref(),
        Some("null")
    );
    assert_eq!(read_raw(&mut c, "z", &["PATH", "nope"]), None);
    // RFC 7396 Appendix A, case 11: the document becomes null.
    let (_, gone) = write_mode(&mut c, "z", "$", "null", "MERGE").unwrap();
    assert_eq!(read_raw(&mut c, "z", &[]).as_deref(), Some("null"));
    assert_eq!(
        read_raw(&mut c, "z", &["AT", &gone.to_string()]).as_deref(),
        Some("null")
    );
    assert_eq!(
        read_raw(&mut c, "z", &["AT", &first.to_string()]).as_deref(),
        Some(r#"{"a":"foo","n":null}"#)
    );
    assert_eq!(
        read_raw(&mut c, "z", &["AT", &(first - 1).to_string()]),
        None
    );
    assert_eq!(read_raw(&mut c, "z", &["SNAP"]).as_deref(), Some("null"));
    lake.kill_sidecar();
    lake.start_sidecar();
    assert_eq!(read_raw(&mut c, "z", &[]).as_deref(), Some("null"));
    write(&mut c, "z", "b", "1").unwrap();
    assert_eq!(read_raw(&mut c, "z", &[]).as_deref(), Some(r#"{"b":1}"#));
}

#[test]
fn the_sidecar_refuses_what_is_not_json_and_stores_nothing() {
    let lake = Lake::start();
    let mut c = lake.con();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<Vec<u8>> = vec![
        b"{\"a\":".to_vec(),
        b"\xff\xfe".to_vec(),
        b"1 2".to_vec(),
        b"{\"a\":1}}".to_vec(),
        deep.into_bytes(),
    ];
    for value in cases {
        let err = redis::cmd("LAKE.WRITE")
            .arg("bad")
            .arg("f")
            .arg(&value)
            .query::<redis::Value>(&mut c)
            .map_err(lake_tests::err_text)
            .unwrap_err();
        assert!(
            err.starts_with("ERR value is not valid"),
            "{value:?}: {err}"
        );
    }
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert!(lake.objects().is_empty(), "{:?}", lake.objects());
    write(&mut c, "bad", "f", "[1]").expect("a good write after the bad ones");
}
