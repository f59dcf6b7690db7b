//! Input a hostile (or just international) client sends, one case at a
//! time, each with its exact answer: non-ASCII text in every error that
//! quotes it (Redis 7.0 was aborted by `LAKE.READ users AT Ā`), paths deep
//! enough to make a catalog unreadable for good, a catalog an older build
//! left too deep, and settings that must stay readable. After each, Redis
//! is up with no crash report.

use lake_tests::{err_text, read, redis, write, Lake, Options};
use serde_json::json;

/// `LAKE.READ` as the text Redis sent: these documents are deeper than
/// `serde_json` parses by default (127 levels), so tests compare text.
fn raw(con: &mut redis::Connection, cat: &str, args: &[&str]) -> Option<String> {
    redis::cmd("LAKE.READ")
        .arg(cat)
        .arg(args)
        .query(con)
        .unwrap_or_else(|e| panic!("LAKE.READ {cat} {args:?}: {}", err_text(e)))
}

fn query(con: &mut redis::Connection, args: &[&[u8]]) -> Result<redis::Value, String> {
    let mut c = redis::cmd(&String::from_utf8_lossy(args[0]));
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).map_err(err_text)
}

#[test]
fn non_ascii_arguments_get_clean_errors_with_the_text_as_written() {
    let lake = Lake::start();
    let mut con = lake.con();
    write(&mut con, "users", "profile.name", r#"{"first":"John"}"#).expect("write");
    let cases: [(&[&[u8]], &str); 8] = [
        (
            &[b"LAKE.READ", b"users", b"AT", "Ā".as_bytes()],
            "ERR AT needs an integer stamp, got 'Ā'",
        ),
        (
            &[
                b"LAKE.WRITE",
                b"users",
                b"x",
                b"1",
                b"MODE",
                "一".as_bytes(),
            ],
            "ERR invalid mode '一': use SET",
        ),
        (
            &[b"LAKE.HISTORY", b"users", b"FROM", "\u{3000}Ѐ".as_bytes()],
            "ERR FROM needs a stamp, '-', '+' or '(<stamp>', got '\u{3000}Ѐ'",
        ),
        (
            &[b"LAKE.READ", b"users", "选项".as_bytes()],
            "ERR syntax error near '选项'",
        ),
        (
            &[b"LAKE.WRITE", b"users", b"a..b", b"1"],
            "ERR invalid field 'a..b': empty segment",
        ),
        // NUL, CR and LF are escaped, never sent raw.
        (
            &[b"LAKE.READ", b"users", b"AT", b"1\r\n-ERR x\0"],
            "ERR AT needs an integer stamp, got '1\\r\\n-ERR x\\0'",
        ),
        // Invalid UTF-8 is refused, not quoted.
        (
            &[b"LAKE.READ", b"users", b"AT", b"\xff\xfe"],
            "ERR AT must be valid UTF-8",
        ),
        // A printf directive is text, in the reply and in the log.
        (
            &[b"LAKE.WRITE", b"users", b"x", b"1", b"MODE", b"%s%n"],
            "ERR invalid mode '%s%n'",
        ),
    ];
    for (args, want) in cases {
        let e = query(&mut con, args).expect_err("refused");
        assert!(e.starts_with(want), "{args:?}: got {e:?}, want {want:?}");
    }
    // A Chinese field name is ordinary input.
    write(&mut con, "users", "资料.名字", r#""约翰""#).expect("write");
    assert_eq!(
        read(&mut con, "users", &[]).unwrap(),
        Some(json!({"profile": {"name": {"first": "John"}}, "资料": {"名字": "约翰"}}))
    );
    assert_eq!(
        read(&mut con, "users", &["PATH", "资料.名字"]).unwrap(),
        Some(json!("约翰"))
    );
    lake.assert_no_crash();
}

#[test]
fn a_path_past_the_depth_budget_is_refused_and_no_catalog_can_be_bricked() {
    let mut lake = Lake::start();
    let mut con = lake.con();
    let path = |n: usize| vec!["a"; n].join(".");
    // The issue's repro: a 130-level path is refused on Redis's main thread.
    let e = write(&mut con, "deep", &path(130), "1").expect_err("refused");
    assert!(e.starts_with("ERR field path of 130 segments"), "{e}");
    // Path plus value over the budget: refused by the sidecar, nothing stored.
    let e = write(&mut con, "deep", &path(127), "[[1]]").expect_err("refused");
    assert!(e.contains("depth budget of 128 levels"), "{e}");
    let e = write(
        &mut con,
        "deep",
        "/",
        &format!("{}1{}", "[".repeat(128), "]".repeat(128)),
    )
    .expect_err("refused");
    assert!(e.contains("depth budget"), "{e}");
    assert_eq!(
        read(&mut con, "deep", &[]).unwrap(),
        None,
        "nothing indexed"
    );
    assert!(
        lake.objects().is_empty(),
        "nothing stored: {:?}",
        lake.objects()
    );

    // At the budget exactly: written, and every later read parses it.
    write(&mut con, "deep", &path(127), "[1]").expect("127 + 1 levels");
    write(&mut con, "deep", "x", "2").expect("write");
    let nested = format!("{}[1]{}", r#"{"a":"#.repeat(127), "}".repeat(126));
    assert_eq!(
        raw(&mut con, "deep", &[]),
        Some(format!(r#"{nested},"x":2}}"#))
    );
    write(&mut con, "deep", "y", "3").expect("write");
    let want = Some(format!(r#"{nested},"x":2,"y":3}}"#));
    assert_eq!(
        raw(&mut con, "deep", &[]),
        want,
        "read again, from the cache"
    );
    assert_eq!(raw(&mut con, "deep", &["SNAP"]), want);
    assert_eq!(
        read(&mut con, "deep", &["PATH", "y"]).unwrap(),
        Some(json!(3))
    );
    // Through a cold sidecar, from the snapshot just committed.
    lake.kill_sidecar();
    lake.start_sidecar();
    assert_eq!(raw(&mut con, "deep", &[]), want);
    lake.assert_no_crash();
}

#[test]
fn a_catalog_an_older_build_made_too_deep_reads_again() {
    let lake = Lake::start();
    let mut con = lake.con();
    // An older build let a 512-byte pointer path build 512 levels, plus the
    // value's own: its snapshot is planted as such a build left it.
    let deep = format!("{}1{}", "[".repeat(600), "]".repeat(600));
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let body = format!(r#"{{"v":1,"catalog":"old","covers":1000,"doc":{{"d":{deep}}}}}"#);
    lake.put_object(&format!("old/{uuid}.snap.json"), body.as_bytes());
    let _: () = redis::cmd("ZADD")
        .arg("catalog:{old}:snap")
        .arg(1000)
        .arg(format!("snap:{uuid}"))
        .query(&mut con)
        .expect("zadd");
    write(&mut con, "old", "x", "1").expect("a new write on top");
    assert_eq!(
        raw(&mut con, "old", &[]),
        Some(format!(r#"{{"d":{deep},"x":1}}"#))
    );
    assert_eq!(raw(&mut con, "old", &["PATH", "d"]), Some(deep.clone()));
    // Cached now: the next read re-parses the cached document.
    write(&mut con, "old", "y", "2").expect("write");
    assert_eq!(
        raw(&mut con, "old", &["SNAP"]),
        Some(format!(r#"{{"d":{deep},"x":1,"y":2}}"#))
    );
    lake.assert_no_crash();
}

#[test]
fn settings_out_of_range_are_refused_and_leave_the_catalog_readable() {
    // Found by the fuzzer: a retention of 2^63 seconds was stored, and
    // every later LAKE.INFO and LAKE.RETENTION of the catalog failed with
    // LAKEDATA (the key no longer parsed as an integer).
    let lake = Lake::with(Options::default());
    let mut con = lake.con();
    write(&mut con, "r", "a", "1").expect("write");
    for bad in ["9223372036854775808", "3153600001", "-1", "1.5", "一"] {
        let e = redis::cmd("LAKE.RETENTION")
            .arg("r")
            .arg(bad)
            .query::<String>(&mut con)
            .map_err(err_text)
            .expect_err(bad);
        assert!(
            e.starts_with("ERR retention needs whole seconds from 0 to 3153600000"),
            "{e}"
        );
    }
    let _: String = redis::cmd("LAKE.RETENTION")
        .arg("r")
        .arg("3153600000")
        .query(&mut con)
        .expect("the largest retention");
    let secs: i64 = redis::cmd("LAKE.RETENTION")
        .arg("r")
        .query(&mut con)
        .expect("get");
    assert_eq!(secs, 3_153_600_000);
    let _: redis::Value = redis::cmd("LAKE.INFO")
        .arg("r")
        .query(&mut con)
        .expect("INFO");
    lake.assert_no_crash();
}
