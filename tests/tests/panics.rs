//! A panic in any function Redis calls into is caught: the fault-injection
//! build of the module (`--features fault-injection`) arms one panic at a
//! named entry with `LAKE.FAULT <entry>`; each test then drives Redis into
//! that entry and checks that the client got a clean error (or nothing
//! changed), the panic was logged with the entry's name, and Redis is up
//! with no crash report.

use std::time::Duration;

use lake_tests::{err_text, fault_module, read, redis, wait_for, write, Lake, Options};

fn lake() -> Lake {
    Lake::with(Options {
        module: Some(fault_module()),
        ..Options::default()
    })
}

fn arm(con: &mut redis::Connection, entry: &str) -> Result<Vec<String>, String> {
    redis::cmd("LAKE.FAULT")
        .arg(entry)
        .query(con)
        .map_err(err_text)
}

fn caught(lake: &Lake, entry: &str) -> usize {
    let line = format!("lake: panic in {entry} caught: fault injected at {entry}");
    lake.redis_log().matches(&line).count()
}

fn wait_caught(lake: &Lake, entry: &str, times: usize) {
    wait_for(
        &format!("the panic in {entry} to be logged {times} times"),
        Duration::from_secs(20),
        || caught(lake, entry) >= times,
    );
}

fn assert_up(lake: &Lake, con: &mut redis::Connection) {
    let pong: String = redis::cmd("PING").query(con).expect("PING");
    assert_eq!(pong, "PONG");
    lake.assert_no_crash();
}

#[test]
fn a_panic_in_any_command_handler_is_an_error_reply() {
    let lake = lake();
    let mut con = lake.con();
    write(&mut con, "c", "a", "1").expect("write");
    let cases: [(&str, &[&str]); 9] = [
        ("LAKE.WRITE", &["c", "a", "2"]),
        ("LAKE.READ", &["c"]),
        (
            "LAKE.REMOVE",
            &["c", "0f8fad5b-d9cb-469f-a165-70867728950e"],
        ),
        ("LAKE.DROP", &["other"]),
        ("LAKE.GC", &["DRYRUN"]),
        ("LAKE.HISTORY", &["c"]),
        ("LAKE.COMPACT", &["c"]),
        ("LAKE.RETENTION", &["c"]),
        ("LAKE.INFO", &["c"]),
    ];
    for (cmd, args) in cases {
        arm(&mut con, cmd).expect("arm");
        let e = redis::cmd(cmd)
            .arg(args)
            .query::<redis::Value>(&mut con)
            .map_err(err_text)
            .expect_err("the armed command must fail");
        assert!(
            e.starts_with(&format!("LAKEINTERNAL {cmd} panicked")),
            "{cmd}: {e}"
        );
        assert_eq!(caught(&lake, cmd), 1, "{cmd}");
        assert_up(&lake, &mut con);
        // Disarmed after one panic: the same command works again.
        redis::cmd(cmd)
            .arg(args)
            .query::<redis::Value>(&mut con)
            .unwrap_or_else(|e| panic!("{cmd} after the fault: {}", err_text(e)));
    }
    // The write that panicked was never sent: only the two real writes.
    let history: Vec<redis::Value> = redis::cmd("LAKE.HISTORY")
        .arg("c")
        .query(&mut con)
        .expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(
        read(&mut con, "c", &[]).unwrap(),
        Some(serde_json::json!({"a": 2}))
    );
}

#[test]
fn a_panic_while_replying_is_an_error_reply() {
    let lake = lake();
    let mut con = lake.con();
    // The next reply written is LAKE.FAULT's own.
    let e = arm(&mut con, "reply").expect_err("the reply step panics");
    assert!(
        e.starts_with("LAKEINTERNAL building the reply panicked"),
        "{e}"
    );
    assert_eq!(caught(&lake, "reply"), 1);
    assert_up(&lake, &mut con);
}

#[test]
fn a_panic_completing_a_blocked_client_is_an_error_and_indexes_nothing() {
    let lake = lake();
    let mut con = lake.con();
    arm(&mut con, "blocked-reply").expect("arm");
    let e = write(&mut con, "c", "a", "1").expect_err("the completion panics");
    assert!(
        e.starts_with("LAKEINTERNAL completing the request panicked"),
        "{e}"
    );
    assert_eq!(caught(&lake, "blocked-reply"), 1);
    assert_eq!(read(&mut con, "c", &[]).unwrap(), None, "nothing indexed");
    assert_up(&lake, &mut con);

    // Freeing the blocked client's data: the answer was already sent.
    arm(&mut con, "blocked-free").expect("arm");
    write(&mut con, "c", "a", "2").expect("write answered before the free");
    wait_caught(&lake, "blocked-free", 1);
    assert_eq!(
        read(&mut con, "c", &[]).unwrap(),
        Some(serde_json::json!({"a": 2}))
    );
    assert_up(&lake, &mut con);
}

#[test]
fn a_panic_in_the_event_loop_hooks_is_caught_and_commits_still_happen() {
    let lake = lake();
    let mut con = lake.con();
    arm(&mut con, "before-sleep").expect("arm");
    wait_caught(&lake, "before-sleep", 1);
    write(&mut con, "c", "a", "1").expect("a write after the hook panicked");

    // The wake-up one-shot runs when a commit is parked on an empty queue.
    arm(&mut con, "wake").expect("arm");
    write(&mut con, "c", "b", "2").expect("the write that woke the loop");
    wait_caught(&lake, "wake", 1);
    assert_eq!(
        read(&mut con, "c", &[]).unwrap(),
        Some(serde_json::json!({"a": 1, "b": 2}))
    );
    assert_up(&lake, &mut con);
}

#[test]
fn a_panic_in_the_timers_or_info_is_caught_and_the_timers_keep_running() {
    let lake = lake();
    let mut con = lake.con();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("lake.compact-interval-ms")
        .arg("10")
        .query(&mut con)
        .expect("config set");
    arm(&mut con, "timer").expect("arm");
    wait_caught(&lake, "timer", 1);
    // Re-armed after the panic: a second fault is met as well.
    arm(&mut con, "timer").expect("arm again");
    wait_caught(&lake, "timer", 2);

    // The journal's keyspace walk calls back for every key.
    write(&mut con, "walked", "f", "1").expect("write");
    arm(&mut con, "journal-scan").expect("arm");
    wait_caught(&lake, "journal-scan", 1);
    let walks = |con: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("lake").query(con).expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("lake_journal_walks:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("journal_walks")
    };
    let before = walks(&mut con);
    lake_tests::wait_for(
        "the walk to go on",
        std::time::Duration::from_secs(10),
        || walks(&mut con) > before,
    );

    arm(&mut con, "info").expect("arm");
    let _: String = redis::cmd("INFO")
        .arg("lake")
        .query(&mut con)
        .expect("INFO");
    assert_eq!(caught(&lake, "info"), 1);
    let info: String = redis::cmd("INFO")
        .arg("lake")
        .query(&mut con)
        .expect("INFO");
    assert!(info.contains("sidecar_connected"), "{info}");
    assert_up(&lake, &mut con);
}

/// A `LAKE.CHANGES` follower blocked on its key: a panic in any of its
/// entries (key signalled, values handed back, timeout, free) is caught; the
/// follower gets an error or its empty page, never a hang or a second reply.
#[test]
fn a_panic_in_a_blocked_followers_entries_is_caught() {
    let lake = lake();
    let mut con = lake.con();
    let follow = |block: &'static str| {
        let url = lake.url();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let since: i64 = redis::cmd("LAKE.READ")
                .arg("f")
                .arg("WITHSTAMP")
                .query::<(Option<String>, i64)>(&mut c)
                .expect("WITHSTAMP")
                .1;
            let out = redis::cmd("LAKE.CHANGES")
                .arg("f")
                .arg("SINCE")
                .arg(since)
                .arg("BLOCK")
                .arg(block)
                .arg("WITHVALUES")
                .query::<redis::Value>(&mut c)
                .map_err(err_text);
            let pong: String = redis::cmd("PING").query(&mut c).expect("PING after");
            assert_eq!(pong, "PONG", "one reply per command");
            out
        })
    };
    let blocked = |con: &mut redis::Connection| {
        wait_for("the follower to block", Duration::from_secs(10), || {
            let info: String = redis::cmd("INFO").arg("clients").query(con).unwrap();
            info.contains("blocked_clients:1\r")
        })
    };
    // Key signalled: the follower is told.
    arm(&mut con, "LAKE.CHANGES ready").expect("arm");
    let f = follow("0");
    blocked(&mut con);
    write(&mut con, "f", "a", "1").expect("write");
    let e = f.join().expect("follower").expect_err("ready panicked");
    assert!(e.starts_with("LAKEINTERNAL"), "{e}");
    assert_eq!(caught(&lake, "LAKE.CHANGES ready"), 1);
    // Values handed back: nobody unblocks it early; when its BLOCK runs
    // out it gets the page that arrived (or the empty page if none did).
    arm(&mut con, "LAKE.CHANGES values").expect("arm");
    let f = follow("500");
    blocked(&mut con);
    let (uuid, _) = write(&mut con, "f", "a", "2").expect("write");
    let out = f.join().expect("follower").expect("a page");
    let page = format!("{out:?}");
    assert!(
        out == redis::Value::Array(vec![]) || (page.contains(&uuid) && page.contains("set")),
        "{page}"
    );
    assert_eq!(caught(&lake, "LAKE.CHANGES values"), 1);
    // The timeout callback: an error instead of the empty page.
    arm(&mut con, "LAKE.CHANGES timeout").expect("arm");
    let e = follow("50")
        .join()
        .expect("follower")
        .expect_err("timeout panicked");
    assert!(e.starts_with("LAKEINTERNAL"), "{e}");
    assert_eq!(caught(&lake, "LAKE.CHANGES timeout"), 1);
    // Freeing the follower: its answer was already sent.
    arm(&mut con, "LAKE.CHANGES free").expect("arm");
    let f = follow("0");
    blocked(&mut con);
    let (uuid, _) = write(&mut con, "f", "a", "3").expect("write");
    let out = f.join().expect("follower").expect("answered");
    assert!(format!("{out:?}").contains(&uuid), "{out:?}");
    wait_caught(&lake, "LAKE.CHANGES free", 1);
    assert_up(&lake, &mut con);
}
