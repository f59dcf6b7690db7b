//! Seeing a catalog's history without touching Lake's internal keys:
//! `LAKE.HISTORY` pages, `LAKE.INFO` per catalog, `INFO lake` for the
//! module.

use std::collections::HashMap;

use lake_tests::{err_text, read, redis, write, Lake};

type Entry = (i64, String, String, Option<String>);

fn history(c: &mut redis::Connection, args: &[&str]) -> Result<Vec<Entry>, String> {
    redis::cmd("LAKE.HISTORY")
        .arg(args)
        .query(c)
        .map_err(err_text)
}

#[test]
fn history_pages_forward_and_back_with_snapshots_interleaved() {
    let lake = Lake::start();
    let mut c = lake.con();
    assert!(history(&mut c, &["h"]).unwrap().is_empty());
    let mut written = Vec::new();
    for i in 0..25 {
        let (uuid, stamp) = write(&mut c, "h", &format!("f{i}"), "1").unwrap();
        written.push((stamp, uuid, format!("f{i}")));
    }
    // Forward, 10 at a time, each page starting after the last one's stamp.
    let mut seen = Vec::new();
    let mut from = "-".to_string();
    loop {
        let page = history(&mut c, &["h", "FROM", &from, "COUNT", "10"]).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        from = format!("({}", page.last().unwrap().0);
        seen.extend(page);
    }
    let want: Vec<Entry> = written
        .iter()
        .map(|(s, u, f)| (*s, "delta".into(), u.clone(), Some(f.clone())))
        .collect();
    assert_eq!(seen, want);
    // Backwards from a stamp, inclusive and exclusive bounds.
    let mid = written[12].0.to_string();
    let back = history(&mut c, &["h", "TO", &mid, "REV", "COUNT", "3"]).unwrap();
    let stamps: Vec<i64> = back.iter().map(|e| e.0).collect();
    assert_eq!(stamps, vec![written[12].0, written[11].0, written[10].0]);
    let excl = history(&mut c, &["h", "FROM", &format!("({mid}"), "TO", "+"]).unwrap();
    assert_eq!(excl.len(), 12);
    // A snapshot is listed after the delta it covers.
    read(&mut c, "h", &["SNAP"]).unwrap();
    let last = written[24].0.to_string();
    let tail = history(&mut c, &["h", "FROM", &last, "SNAPSHOTS"]).unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!((tail[0].0, tail[0].1.as_str()), (written[24].0, "delta"));
    assert_eq!(
        (tail[1].0, tail[1].1.as_str(), &tail[1].3),
        (written[24].0, "snapshot", &None)
    );
    let rev = history(&mut c, &["h", "REV", "SNAPSHOTS", "COUNT", "1"]).unwrap();
    assert_eq!(rev[0].1, "snapshot");
    for (args, want) in [
        (vec!["h", "COUNT", "0"], "ERR COUNT needs"),
        (vec!["h", "COUNT", "10001"], "ERR COUNT needs"),
        (vec!["h", "FROM", "soon"], "ERR FROM needs"),
        (vec!["h", "TO"], "ERR syntax error"),
        (vec!["h", "SIDEWAYS"], "ERR syntax error"),
        (vec!["bad name"], "ERR invalid catalog"),
    ] {
        let e = history(&mut c, &args).unwrap_err();
        assert!(e.starts_with(want), "{args:?}: {e}");
    }
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("LAKE.HISTORY")
        .arg("tenantA/h")
        .arg("COUNT")
        .arg("5")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["tenantA/h"]);
}

fn info_map(c: &mut redis::Connection, cat: &str) -> HashMap<String, redis::Value> {
    let flat: Vec<redis::Value> = redis::cmd("LAKE.INFO").arg(cat).query(c).unwrap();
    flat.chunks(2)
        .map(|kv| match &kv[0] {
            redis::Value::BulkString(k) => (String::from_utf8_lossy(k).into_owned(), kv[1].clone()),
            redis::Value::SimpleString(k) => (k.clone(), kv[1].clone()),
            other => panic!("key {other:?}"),
        })
        .collect()
}

fn int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(n) => Some(*n),
        redis::Value::Nil => None,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn info_describes_a_catalog_at_one_moment() {
    let lake = Lake::start();
    let mut c = lake.con();
    let empty = info_map(&mut c, "i");
    assert_eq!(int(&empty["deltas"]), Some(0));
    assert_eq!(int(&empty["first-stamp"]), None);
    assert_eq!(empty["snapshot-uuid"], redis::Value::Nil);
    let mut stamps = Vec::new();
    for i in 0..5 {
        stamps.push(write(&mut c, "i", &format!("f{i}"), "1").unwrap());
    }
    read(&mut c, "i", &["SNAP"]).unwrap();
    for i in 5..8 {
        stamps.push(write(&mut c, "i", &format!("f{i}"), "1").unwrap());
    }
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg("i")
        .arg(&stamps[7].0)
        .query(&mut c)
        .unwrap();
    let m = info_map(&mut c, "i");
    assert_eq!(int(&m["deltas"]), Some(7));
    assert_eq!(int(&m["deltas-since-snapshot"]), Some(2));
    assert_eq!(int(&m["first-stamp"]), Some(stamps[0].1));
    assert_eq!(int(&m["last-stamp"]), Some(stamps[6].1));
    assert_eq!(int(&m["snapshots"]), Some(1));
    assert_eq!(int(&m["snapshot-covers"]), Some(stamps[4].1));
    assert!(matches!(m["snapshot-uuid"], redis::Value::BulkString(_)));
    assert_eq!(int(&m["fence"]), Some(1));
    assert_eq!(
        int(&m["slot"]),
        Some(i64::from(lake_shared::cluster::catalog_slot("i")))
    );
    // RESP3: a map.
    let c3 = redis::Client::open(format!("{}?protocol=resp3", lake.url())).unwrap();
    let mut c3 = c3.get_connection().unwrap();
    let v: redis::Value = redis::cmd("LAKE.INFO").arg("i").query(&mut c3).unwrap();
    assert!(
        matches!(v, redis::Value::Map(ref m) if m.len() == 11),
        "{v:?}"
    );
}

fn info_lake(c: &mut redis::Connection) -> HashMap<String, i64> {
    let text: String = redis::cmd("INFO").arg("lake").query(c).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| Some((k.strip_prefix("lake_")?.to_string(), v.trim().parse().ok()?)))
        .collect()
}

#[test]
fn info_lake_counts_what_the_module_did() {
    let mut lake = Lake::start();
    let mut c = lake.con();
    write(&mut c, "s", "a", "1").unwrap();
    let before = info_lake(&mut c);
    assert_eq!(before.get("sidecar_connected"), Some(&1), "{before:?}");
    write(&mut c, "s", "b", "1").unwrap();
    read(&mut c, "s", &[]).unwrap();
    assert!(write(&mut c, "s", "c", "{bad").is_err());
    let after = info_lake(&mut c);
    assert_eq!(after["writes"], before["writes"] + 1);
    assert_eq!(after["reads"], before["reads"] + 1);
    assert_eq!(after["errors_err"], before["errors_err"] + 1);
    // The journal's shipping may have a batch in flight: it lands.
    lake_tests::wait_for(
        "no request in flight",
        std::time::Duration::from_secs(10),
        || info_lake(&mut c)["requests_in_flight"] == 0,
    );
    lake.kill_sidecar();
    assert!(write(&mut c, "s", "d", "1")
        .unwrap_err()
        .starts_with("LAKEDOWN"));
    let down = info_lake(&mut c);
    assert_eq!(down["sidecar_connected"], 0);
    assert_eq!(down["errors_lakedown"], after["errors_lakedown"] + 1);
}

/// A command slower than `latency-monitor-threshold` (the sidecar frozen
/// while it waits) shows in Redis's own `LATENCY LATEST` as a `lake-*`
/// event, and in `INFO lake`'s latency percentiles.
#[test]
fn slow_commands_feed_redis_latency_monitor() {
    let lake = Lake::start();
    let mut c = lake.con();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("latency-monitor-threshold")
        .arg(100)
        .query(&mut c)
        .unwrap();
    write(&mut c, "slow", "a", "1").unwrap();
    let latest = |c: &mut redis::Connection| -> String {
        let v: redis::Value = redis::cmd("LATENCY").arg("LATEST").query(c).unwrap();
        format!("{v:?}")
    };
    assert!(
        !latest(&mut c).contains("lake-write"),
        "a fast write is no event"
    );
    lake.signal_sidecar("STOP");
    let mut w = lake.con();
    let waiting = std::thread::spawn(move || write(&mut w, "slow", "b", "2"));
    // Held past the threshold: the write waits for the frozen sidecar.
    std::thread::sleep(std::time::Duration::from_millis(300));
    lake.signal_sidecar("CONT");
    waiting
        .join()
        .unwrap()
        .expect("the write completes once thawed");
    let events = latest(&mut c);
    assert!(events.contains("lake-write"), "{events}");
    // INFO lake reports the same waits as percentiles: two writes in the
    // window, the slow one at the top.
    let info: String = redis::cmd("INFO").arg("lake").query(&mut c).unwrap();
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("lake_{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {info}"))
    };
    assert_eq!(field("latency_write_samples"), 2, "{info}");
    assert!(field("latency_write_p99_us") >= 300_000, "{info}");
    let p50 = field("latency_write_p50_us");
    assert!(p50 > 0 && p50 < 300_000, "{info}");
    assert_eq!(field("latency_gc_samples"), 0);
    lake.assert_no_crash();
}
