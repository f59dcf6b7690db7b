//! The change feed: `LAKE.CHANGES <cat> SINCE <stamp|$> [COUNT n] [BLOCK
//! ms] [WITHVALUES]` pages the deltas after a stamp (with their stored mode
//! and value when asked) and blocks until one lands; Lake's keyspace events; a follower through a sidecar kill, a failover and a
//! slot migration sees every acknowledged write exactly once, in stamp
//! order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lake_shared::cluster::catalog_slot;
use lake_tests::cluster::Cluster;
use lake_tests::{err_text, redis, wait_for, write, Lake, Options, StoreKind};

/// One feed entry: (stamp, field, uuid).
type Entry = (i64, String, String);

fn changes(
    con: &mut impl redis::ConnectionLike,
    cat: &str,
    args: &[&str],
) -> Result<Vec<Entry>, String> {
    redis::cmd("LAKE.CHANGES")
        .arg(cat)
        .arg(args)
        .query(con)
        .map_err(err_text)
}

/// One feed entry with its body: (stamp, field, uuid, mode, value).
type Valued = (i64, String, String, String, String);

fn changes_values(
    con: &mut impl redis::ConnectionLike,
    cat: &str,
    args: &[&str],
) -> Result<Vec<Valued>, String> {
    redis::cmd("LAKE.CHANGES")
        .arg(cat)
        .arg(args)
        .arg("WITHVALUES")
        .query(con)
        .map_err(err_text)
}

/// Waits until `n` clients are blocked on `con`'s Redis.
fn wait_blocked(con: &mut redis::Connection, n: usize) {
    wait_for("the follower to block", Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("clients").query(con).unwrap();
        info.contains(&format!("blocked_clients:{n}\r"))
    });
}

#[test]
fn pages_the_deltas_after_a_stamp() {
    let lake = Lake::start();
    let mut con = lake.con();
    assert_eq!(changes(&mut con, "feed", &["SINCE", "0"]), Ok(vec![]));
    let mut wrote = Vec::new();
    for i in 0..5 {
        let (uuid, stamp) = write(&mut con, "feed", &format!("f{i}"), "1").expect("write");
        wrote.push((stamp, format!("f{i}"), uuid));
    }
    assert_eq!(changes(&mut con, "feed", &["SINCE", "0"]).unwrap(), wrote);
    // Pages of two, each resuming from the last stamp seen.
    let mut seen = Vec::new();
    let mut since = 0;
    loop {
        let page = changes(
            &mut con,
            "feed",
            &["SINCE", &since.to_string(), "COUNT", "2"],
        )
        .unwrap();
        let Some(last) = page.last() else { break };
        since = last.0;
        seen.extend(page);
    }
    assert_eq!(seen, wrote);
    // `$` is the newest stamp: nothing after it yet; without BLOCK no wait.
    assert_eq!(changes(&mut con, "feed", &["SINCE", "$"]), Ok(vec![]));
    // A removed delta leaves the feed.
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg("feed")
        .arg(&wrote[1].2)
        .query(&mut con)
        .expect("REMOVE");
    let after: Vec<Entry> = changes(&mut con, "feed", &["SINCE", "0"]).unwrap();
    assert_eq!(after.len(), 4);
    assert!(!after.contains(&wrote[1]));
    for (args, what) in [
        (vec![], "wrong number of arguments"),
        (vec!["SINCE"], "wrong number of arguments"),
        (vec!["SINCE", "-1"], "SINCE needs a stamp"),
        (vec!["SINCE", "x"], "SINCE needs a stamp"),
        (vec!["SINCE", "0", "COUNT", "0"], "COUNT needs"),
        (vec!["SINCE", "0", "COUNT", "10001"], "COUNT needs"),
        (vec!["SINCE", "0", "BLOCK", "-5"], "BLOCK needs"),
        (vec!["SINCE", "0", "BLOCK"], "needs a value"),
        (vec!["SINCE", "0", "SINCE", "1"], "syntax error"),
        (vec!["COUNT", "1", "BLOCK", "1"], "SINCE is required"),
    ] {
        let e = changes(&mut con, "feed", &args).expect_err("bad CHANGES");
        assert!(e.starts_with("ERR") && e.contains(what), "{args:?}: {e}");
    }
    lake.assert_no_crash();
}

#[test]
fn a_blocked_follower_wakes_on_commit_and_times_out_empty() {
    let lake = Lake::start();
    let mut con = lake.con();
    // Nothing comes: an empty answer after the BLOCK.
    assert_eq!(
        changes(&mut con, "b", &["SINCE", "0", "BLOCK", "100"]),
        Ok(vec![])
    );
    // A follower waits on a catalog that does not exist yet, then on one
    // that does; each wakes with the write that lands.
    for round in 0..2 {
        let mut follower = lake.con();
        let since = changes(&mut con, "b", &["SINCE", "0"])
            .unwrap()
            .last()
            .map_or(0, |e| e.0);
        let waiting = std::thread::spawn(move || {
            changes(
                &mut follower,
                "b",
                &["SINCE", &since.to_string(), "BLOCK", "0"],
            )
        });
        wait_for("the follower to block", Duration::from_secs(10), || {
            let info: String = redis::cmd("INFO").arg("clients").query(&mut con).unwrap();
            info.contains("blocked_clients:1")
        });
        let (uuid, stamp) = write(&mut con, "b", &format!("r{round}"), "1").expect("write");
        let got = waiting.join().expect("follower").expect("CHANGES BLOCK");
        assert_eq!(got, vec![(stamp, format!("r{round}"), uuid)]);
    }
    // Inside MULTI a follower cannot block: it answers at once.
    let got: Vec<redis::Value> = redis::pipe()
        .atomic()
        .cmd("LAKE.CHANGES")
        .arg("b")
        .arg("SINCE")
        .arg("$")
        .arg("BLOCK")
        .arg(0)
        .query(&mut con)
        .expect("MULTI");
    assert_eq!(got, vec![redis::Value::Array(vec![])]);
    lake.assert_no_crash();
}

#[test]
fn a_follower_on_a_replica_wakes_on_replicated_writes() {
    let lake = Lake::start();
    let (replica, mut rcon) = lake.start_replica();
    let mut con = lake.con();
    write(&mut con, "r", "a", "1").expect("write");
    wait_for("the replica to have it", Duration::from_secs(10), || {
        changes(&mut rcon, "r", &["SINCE", "0"]).is_ok_and(|e| e.len() == 1)
    });
    let since = changes(&mut rcon, "r", &["SINCE", "0"]).expect("feed")[0].0;
    let url = replica.url();
    let waiting = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        changes(&mut c, "r", &["SINCE", &since.to_string(), "BLOCK", "0"])
    });
    wait_for("the follower to block", Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut rcon).unwrap();
        info.contains("blocked_clients:1")
    });
    let (uuid, stamp) = write(&mut con, "r", "b", "2").expect("write");
    let got = waiting
        .join()
        .expect("follower")
        .expect("CHANGES on the replica");
    assert_eq!(got, vec![(stamp, "b".to_string(), uuid)]);
    lake.assert_no_crash();
}

#[test]
fn compaction_says_where_history_starts() {
    let lake = Lake::start();
    let mut con = lake.con();
    let (_, first) = write(&mut con, "k", "a", "1").expect("write");
    for i in 0..3 {
        write(&mut con, "k", &format!("f{i}"), "1").expect("write");
    }
    let _: Option<String> = redis::cmd("LAKE.READ")
        .arg("k")
        .arg("SNAP")
        .query(&mut con)
        .unwrap();
    let _: redis::Value = redis::cmd("LAKE.RETENTION")
        .arg("k")
        .arg(1)
        .query(&mut con)
        .unwrap();
    // The snapshot becomes the floor once it is older than the 1 s retention.
    let mut floor = 0;
    wait_for(
        "the snapshot to become the floor",
        Duration::from_secs(30),
        || {
            let out: Vec<redis::Value> =
                redis::cmd("LAKE.COMPACT").arg("k").query(&mut con).unwrap();
            if let Some(redis::Value::Int(f)) = out.get(2) {
                floor = *f;
            }
            floor > 0
        },
    );
    let e = changes(&mut con, "k", &["SINCE", &first.to_string()]).expect_err("below the floor");
    assert!(
        e.starts_with("ERR")
            && e.contains(&format!("history before {floor} was compacted"))
            && e.contains("WITHSTAMP"),
        "{e}"
    );
    // From the document's stamp the feed goes on.
    let (_, at): (Option<String>, i64) = redis::cmd("LAKE.READ")
        .arg("k")
        .arg("WITHSTAMP")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        changes(&mut con, "k", &["SINCE", &at.to_string()]),
        Ok(vec![])
    );
    let (uuid, stamp) = write(&mut con, "k", "z", "1").expect("write");
    assert_eq!(
        changes(&mut con, "k", &["SINCE", &at.to_string()]),
        Ok(vec![(stamp, "z".into(), uuid)])
    );
    lake.assert_no_crash();
}

#[test]
fn keyspace_events_name_lakes_changes() {
    let lake = Lake::start();
    let mut con = lake.con();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Kd")
        .query(&mut con)
        .unwrap();
    let sub = redis::Client::open(lake.url())
        .unwrap()
        .get_connection()
        .unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sub = sub;
    let mut ps = sub.as_pubsub();
    ps.subscribe("__keyspace@0__:catalog:{ev}").unwrap();
    let (uuid, _) = write(&mut con, "ev", "a", "1").expect("write");
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg("ev")
        .arg(&uuid)
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("LAKE.DROP").arg("ev").query(&mut con).unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        let m = ps.get_message().expect("a keyspace event");
        events.push(m.get_payload::<String>().unwrap());
    }
    assert_eq!(events, ["lake.write", "lake.remove", "lake.drop"]);
    lake.assert_no_crash();
}

/// A follower (cluster connection, resuming from its last stamp after any
/// error) while writers write and the catalog's node loses its sidecar,
/// fails over to its replica and then moves the slot to another primary.
#[test]
fn a_follower_sees_every_acknowledged_write_once_through_faults() {
    let mut cluster = Cluster::start(3, 1, 2000);
    let cat = "follow";
    let slot = catalog_slot(cat);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut cc = cluster.cluster_con();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if let Ok((uuid, stamp)) = write(&mut cc, cat, &format!("w{i}"), "1") {
                    acked.push((stamp, format!("w{i}"), uuid));
                }
            }
            acked
        })
    };
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let mut cc = cluster.cluster_con();
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut seen, mut errors, mut since) = (Vec::<Entry>::new(), 0, 0);
            loop {
                let finished = done.load(Ordering::Relaxed);
                match changes(
                    &mut cc,
                    cat,
                    &["SINCE", &since.to_string(), "COUNT", "500", "BLOCK", "200"],
                ) {
                    Ok(page) if page.is_empty() && finished => return (seen, errors),
                    Ok(page) => {
                        if let Some(last) = page.last() {
                            since = last.0;
                        }
                        seen.extend(page);
                    }
                    Err(_) => {
                        errors += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
    };
    // The index through a cluster connection (follows MOVED while the
    // nodes' views of the slot settle).
    let mut cc = cluster.cluster_con();
    let mut index = move || -> Vec<(String, i64)> {
        redis::cmd("ZRANGE")
            .arg(format!("catalog:{{{cat}}}"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut cc)
            .expect("ZRANGE")
    };
    let mut progress = || {
        let n = index().len();
        wait_for("more writes", Duration::from_secs(60), || {
            index().len() >= n + 100
        });
    };
    progress();
    let owner = cluster.owner(slot);
    cluster.kill_sidecar(owner);
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_sidecar(owner);
    progress();
    let replica = cluster.replica_of(owner).expect("a replica");
    cluster.fail_over_to(replica);
    cluster.wait_ok();
    progress();
    let to = cluster
        .primaries()
        .into_iter()
        .find(|&p| p != replica)
        .expect("another primary");
    cluster.move_slot(slot, replica, to);
    progress();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    done.store(true, Ordering::Relaxed);
    let (seen, errors) = follower.join().expect("follower");
    // The feed is the index: every entry once, in stamp order.
    let mut cc = cluster.cluster_con();
    let index: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(format!("catalog:{{{cat}}}"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut cc)
        .expect("ZRANGE");
    let fed: Vec<(String, i64)> = seen
        .iter()
        .map(|(s, f, u)| (format!("{f}:{u}"), *s))
        .collect();
    assert_eq!(fed, index, "the feed differs from the index");
    let seen: HashSet<&Entry> = seen.iter().collect();
    for a in &acked {
        assert!(seen.contains(a), "acknowledged {a:?} never fed");
    }
    eprintln!(
        "follower: {} entries, {} acknowledged writes, {errors} errors on the way",
        seen.len(),
        acked.len()
    );
    cluster.assert_sound();
}

/// `WITHVALUES` answers each delta's mode and value exactly as stored (the
/// value's bytes as the client sent them), on one-object deltas and on
/// segment records read by range, paged and blocking alike.
#[test]
fn withvalues_carries_each_deltas_mode_and_value() {
    let batched = Options {
        store: StoreKind::S3,
        sidecar_args: ["--batch-window-us", "2000"].map(String::from).to_vec(),
        ..Options::default()
    };
    for opts in [Options::default(), batched] {
        let lake = Lake::with(opts);
        let mut con = lake.con();
        let big = format!("\"{}\"", "x".repeat(5_000));
        let writes = [
            ("a", r#"{"b": [1, 2]}"#, "SET"),
            ("a.c", r#""caf\u00e9 é""#, "INSERT"),
            ("a", r#"{"z" : null}"#, "MERGE"),
            ("big", big.as_str(), "REPLACE"),
        ];
        let mut wrote = Vec::new();
        for (field, json, mode) in writes {
            let (uuid, stamp): (String, i64) = redis::cmd("LAKE.WRITE")
                .arg("v")
                .arg(field)
                .arg(json)
                .arg("MODE")
                .arg(mode)
                .query(&mut con)
                .expect("write");
            wrote.push((
                stamp,
                field.to_string(),
                uuid,
                mode.to_ascii_lowercase(),
                json.to_string(),
            ));
        }
        assert_eq!(
            changes_values(&mut con, "v", &["SINCE", "0"]).unwrap(),
            wrote
        );
        // Pages, each resuming from the last stamp seen.
        let page = changes_values(
            &mut con,
            "v",
            &["SINCE", &wrote[0].0.to_string(), "COUNT", "2"],
        );
        assert_eq!(page.unwrap(), wrote[1..3].to_vec());
        // Nothing after the newest: an empty page, no sidecar trip needed.
        assert_eq!(changes_values(&mut con, "v", &["SINCE", "$"]), Ok(vec![]));
        // A blocked follower wakes with the body of the write that lands.
        let url = lake.url();
        let since = wrote[3].0.to_string();
        let waiting = std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            changes_values(&mut c, "v", &["SINCE", &since, "BLOCK", "0"])
        });
        wait_blocked(&mut con, 1);
        let (uuid, stamp) = write(&mut con, "v", "n", "[1,2,3]").expect("write");
        let got = waiting
            .join()
            .expect("follower")
            .expect("CHANGES WITHVALUES BLOCK");
        assert_eq!(
            got,
            vec![(stamp, "n".into(), uuid, "set".into(), "[1,2,3]".into())]
        );
        // Nothing comes: empty after the BLOCK.
        assert_eq!(
            changes_values(&mut con, "v", &["SINCE", "$", "BLOCK", "50"]),
            Ok(vec![])
        );
        // The bodies make the answer large: COUNT is bounded lower.
        assert!(changes_values(&mut con, "v", &["SINCE", "0", "COUNT", "1000"]).is_ok());
        let e = changes_values(&mut con, "v", &["SINCE", "0", "COUNT", "1001"]).unwrap_err();
        assert!(e.starts_with("ERR") && e.contains("COUNT needs"), "{e}");
        // Values come from the sidecar: inside MULTI that cannot wait.
        let e = redis::pipe()
            .atomic()
            .cmd("LAKE.CHANGES")
            .arg("v")
            .arg("SINCE")
            .arg("0")
            .arg("WITHVALUES")
            .query::<Vec<redis::Value>>(&mut con)
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(err_text);
        assert!(e.contains("ERR") && e.contains("MULTI"), "{e}");
        lake.assert_no_crash();
    }
}

/// An index entry whose body is gone is `LAKEDATA` naming it, paged or
/// blocked; a blocked follower whose values come after its `BLOCK` ran out
/// gets the empty page and nothing more (the late answer is dropped, the
/// connection stays in step); a down sidecar is `LAKEDOWN`.
#[test]
fn withvalues_fails_clearly_and_never_answers_twice() {
    let mut lake = Lake::start();
    let mut con = lake.con();
    let (uuid, stamp) = write(&mut con, "w", "a", "1").expect("write");
    // A member the index holds whose object never existed (what a lost
    // object looks like), added behind Lake's back.
    let lost = "00000000-0000-4000-8000-000000000001";
    let e = changes_values(&mut con, "w", &["SINCE", "0"]);
    assert_eq!(e.unwrap().len(), 1);
    // A follower blocked with WITHVALUES wakes on the ZADD and is told.
    let url = lake.url();
    let since = stamp.to_string();
    let waiting = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        changes_values(&mut c, "w", &["SINCE", &since, "BLOCK", "0"])
    });
    wait_blocked(&mut con, 1);
    let _: i64 = redis::cmd("ZADD")
        .arg("catalog:{w}")
        .arg(stamp + 1)
        .arg(format!("b:{lost}"))
        .query(&mut con)
        .expect("ZADD");
    let e = waiting.join().expect("follower").expect_err("a lost body");
    assert!(e.starts_with("LAKEDATA") && e.contains(lost), "{e}");
    let e = changes_values(&mut con, "w", &["SINCE", "0"]).unwrap_err();
    assert!(e.starts_with("LAKEDATA") && e.contains(lost), "{e}");
    // Without values the feed still names every entry.
    assert_eq!(
        changes(&mut con, "w", &["SINCE", "0"]).unwrap(),
        vec![
            (stamp, "a".into(), uuid),
            (stamp + 1, "b".into(), lost.into())
        ]
    );

    // The sidecar freezes while a follower's values are on the way: its
    // BLOCK runs out first and it gets the empty page; once the sidecar
    // thaws, the late answer goes nowhere and the next reply on that
    // connection is the next command's.
    let (uuid2, stamp2) = write(&mut con, "w", "c", "2").expect("write");
    let _: i64 = redis::cmd("ZREM")
        .arg("catalog:{w}")
        .arg(format!("c:{uuid2}"))
        .query(&mut con)
        .expect("ZREM");
    let mut follower = lake.con();
    let since = (stamp + 1).to_string();
    let url = lake.url();
    let waiting = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let first = changes_values(&mut c, "w", &["SINCE", &since, "BLOCK", "300"]);
        (first, c)
    });
    wait_blocked(&mut con, 1);
    lake.signal_sidecar("STOP");
    let _: i64 = redis::cmd("ZADD")
        .arg("catalog:{w}")
        .arg(stamp2)
        .arg(format!("c:{uuid2}"))
        .query(&mut con)
        .expect("ZADD");
    let (first, mut c) = waiting.join().expect("follower");
    assert_eq!(first, Ok(vec![]), "the BLOCK ran out first");
    lake.signal_sidecar("CONT");
    // The late answer arrives and must be dropped.
    wait_for(
        "the sidecar to answer again",
        Duration::from_secs(10),
        || changes_values(&mut follower, "w", &["SINCE", &(stamp + 1).to_string()]).is_ok(),
    );
    let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
    assert_eq!(pong, "PONG");
    let got = changes(&mut c, "w", &["SINCE", &(stamp + 1).to_string()]).unwrap();
    assert_eq!(got, vec![(stamp2, "c".into(), uuid2)]);

    lake.kill_sidecar();
    let e = changes_values(&mut con, "w", &["SINCE", "0"]).unwrap_err();
    assert!(e.starts_with("LAKEDOWN"), "{e}");
    lake.assert_no_crash();
}
