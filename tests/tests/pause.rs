//! Writes while Redis has paused writes: a planned `FAILOVER` with writes in
//! flight, and `CLIENT PAUSE WRITE` with completions arriving during the
//! pause. Redis 7.0 aborts if a module propagates during a pause; Lake must
//! hold such completions until the pause ends (or answer `TRYAGAIN` past
//! the timeout), lose nothing acknowledged, and never crash a node.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lake_tests::{
    assert_no_crash, delta_key, err_text, redis, wait_for, write, zrange, Lake, Options,
};

fn role(con: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(con)
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn failover_with_writes_in_flight_keeps_the_primary_and_every_acknowledged_write() {
    let lake = Lake::with(Options {
        timeout_ms: 3000,
        ..Options::default()
    });
    let (replica, mut r) = lake.start_replica();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..16)
        .map(|t| {
            let mut c = lake.con();
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let (mut acks, mut errors) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let field = format!("w{t}.n{i}");
                    let r = redis::cmd("LAKE.WRITE")
                        .arg("fo")
                        .arg(&field)
                        .arg("1")
                        .query::<(String, i64)>(&mut c);
                    match r {
                        Ok(r) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            acks.push((field, r));
                        }
                        // Redis closes a client it force-unblocked
                        // (UNBLOCKED) when the primary turned replica.
                        Err(e) if e.is_io_error() => break,
                        Err(e) => errors.push(err_text(e)),
                    }
                    i += 1;
                }
                (acks, errors)
            })
        })
        .collect();
    wait_for("writes in flight", Duration::from_secs(30), || {
        acked.load(Ordering::Relaxed) >= 300
    });
    let mut c = lake.con();
    let ok: String = redis::cmd("FAILOVER").query(&mut c).expect("FAILOVER");
    assert_eq!(ok, "OK");
    wait_for("the failover to finish", Duration::from_secs(30), || {
        role(&mut r) == "master" && role(&mut lake.con()) == "slave"
    });
    // The writers keep going against the demoted node until they have all
    // been refused at least once more.
    let seen = acked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    for w in writers {
        let (a, e) = w.join().expect("writer");
        acks.extend(a);
        errors.extend(e);
    }
    assert!(acks.len() >= seen);
    for e in &errors {
        assert!(
            e.starts_with("READONLY") || e.starts_with("TRYAGAIN") || e.starts_with("UNBLOCKED"),
            "unexpected error {e}"
        );
    }
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for e in &errors {
        *kinds
            .entry(e.split_whitespace().next().unwrap_or(""))
            .or_default() += 1;
    }
    eprintln!("FAILOVER: {} acknowledged, errors {kinds:?}", acks.len());
    assert_no_crash(&lake.redis_log(), "the old primary");
    assert_no_crash(&replica.log(), "the new primary");
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    let index: HashSet<(String, i64)> = zrange(&mut r, "catalog:{fo}").into_iter().collect();
    let objects: HashSet<String> = lake.objects().into_iter().collect();
    for (field, (uuid, stamp)) in &acks {
        assert!(
            index.contains(&(format!("{field}:{uuid}"), *stamp)),
            "acknowledged {field} {uuid} is not on the new primary"
        );
        assert!(objects.contains(&delta_key("fo", uuid)));
    }
    assert_eq!(
        index.len(),
        acks.len(),
        "only acknowledged writes are indexed"
    );
    // The new primary takes writes with stamps above everything before.
    let newest = index.iter().map(|(_, s)| *s).max().unwrap();
    let (_, stamp) = write(&mut r, "fo", "after", "1").expect("write on the new primary");
    assert!(stamp > newest);
}

type WriteResult = Result<(String, i64), String>;

/// Starts `n` writes while the sidecar is frozen, so their answers arrive
/// whenever it is resumed; returns the writer threads.
fn writes_in_flight(lake: &Lake, n: usize) -> Vec<std::thread::JoinHandle<(String, WriteResult)>> {
    lake.signal_sidecar("STOP");
    let threads = (0..n)
        .map(|i| {
            let mut c = lake.con();
            std::thread::spawn(move || {
                let f = format!("f{i}");
                let r = write(&mut c, "paused", &f, "1");
                (f, r)
            })
        })
        .collect();
    let mut c = lake.con();
    wait_for("the writes to block", Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut c).unwrap();
        info.contains(&format!("blocked_clients:{n}"))
    });
    threads
}

#[test]
fn completions_during_client_pause_wait_for_unpause() {
    let lake = Lake::with(Options {
        timeout_ms: 10_000,
        ..Options::default()
    });
    // Three event-loop turns' worth of releases (the module releases 8
    // parked commits per turn).
    let n = 24;
    let threads = writes_in_flight(&lake, n);
    let mut c = lake.con();
    let _: String = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(20_000)
        .arg("WRITE")
        .query(&mut c)
        .unwrap();
    lake.signal_sidecar("CONT");
    wait_for("the objects to be stored", Duration::from_secs(10), || {
        lake.objects().len() == n
    });
    // The answers are back; while writes are paused nothing is indexed.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        assert!(
            zrange(&mut c, "catalog:{paused}").is_empty(),
            "indexed during the pause"
        );
    }
    let _: String = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut c).unwrap();
    let mut acks = Vec::new();
    for t in threads {
        let (f, r) = t.join().unwrap();
        acks.push((f, r.expect("the write completes after the pause")));
    }
    let index = zrange(&mut c, "catalog:{paused}");
    assert_eq!(index.len(), n);
    for (f, (uuid, stamp)) in acks {
        assert!(index.contains(&(format!("{f}:{uuid}"), stamp)));
    }
    assert_no_crash(&lake.redis_log(), "redis");
}

#[test]
fn a_pause_longer_than_the_timeout_answers_tryagain_and_indexes_nothing() {
    let lake = Lake::with(Options {
        timeout_ms: 1000,
        ..Options::default()
    });
    let threads = writes_in_flight(&lake, 4);
    let mut c = lake.con();
    let _: String = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("WRITE")
        .query(&mut c)
        .unwrap();
    let started = Instant::now();
    lake.signal_sidecar("CONT");
    for t in threads {
        let (_, r) = t.join().unwrap();
        let e = r.unwrap_err();
        assert!(e.starts_with("TRYAGAIN") || e.starts_with("TIMEOUT"), "{e}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the timeout, not at the end of the pause"
    );
    let _: String = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut c).unwrap();
    assert!(zrange(&mut c, "catalog:{paused}").is_empty());
    assert_no_crash(&lake.redis_log(), "redis");
}
