//! Conditional writes: `LAKE.READ ... WITHSTAMP` gives the stamp a document
//! reflects, `LAKE.WRITE ... IFSTAMP <stamp>` commits only while the
//! catalog is still there, else `CONFLICT <current stamp> ...` and nothing
//! is indexed. Racing read-modify-write loops lose no update, on one Redis
//! and on a 3+3 cluster.

use std::sync::{Arc, Barrier};

use lake_tests::cluster::Cluster;
use lake_tests::{err_text, redis, zrange, Lake};

/// `LAKE.READ <cat> PATH n WITHSTAMP` -> (the counter, its stamp).
fn read_counter(con: &mut impl redis::ConnectionLike, cat: &str) -> (i64, i64) {
    let (text, stamp): (Option<String>, i64) = redis::cmd("LAKE.READ")
        .arg(cat)
        .arg("PATH")
        .arg("n")
        .arg("WITHSTAMP")
        .query(con)
        .unwrap_or_else(|e| panic!("LAKE.READ WITHSTAMP: {}", err_text(e)));
    let n = text.map_or(0, |t| t.parse().expect("a counter"));
    (n, stamp)
}

/// `LAKE.WRITE <cat> n <value> IFSTAMP <stamp>`.
fn write_if(
    con: &mut impl redis::ConnectionLike,
    cat: &str,
    value: i64,
    stamp: i64,
) -> Result<i64, String> {
    redis::cmd("LAKE.WRITE")
        .arg(cat)
        .arg("n")
        .arg(value.to_string())
        .arg("IFSTAMP")
        .arg(stamp)
        .query::<(String, i64)>(con)
        .map(|(_, s)| s)
        .map_err(err_text)
}

/// The current stamp a `CONFLICT` reply carries.
fn conflict_stamp(err: &str) -> i64 {
    let mut words = err.split_whitespace();
    assert_eq!(words.next(), Some("CONFLICT"), "{err}");
    words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no stamp in {err}"))
}

/// `threads` clients each add `per` to the counter of `cat` by
/// read-modify-write through `IFSTAMP`, retrying after `CONFLICT`; returns
/// how many conflicts they saw. Each conflict names a stamp newer than the
/// one the loser read.
fn race<C: redis::ConnectionLike + Send + 'static>(cons: Vec<C>, cat: &str, per: usize) -> usize {
    let start = Arc::new(Barrier::new(cons.len()));
    let threads: Vec<_> = cons
        .into_iter()
        .map(|mut con| {
            let (cat, start) = (cat.to_string(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut conflicts = 0;
                for _ in 0..per {
                    loop {
                        let (n, stamp) = read_counter(&mut con, &cat);
                        match write_if(&mut con, &cat, n + 1, stamp) {
                            Ok(new) => {
                                assert!(new > stamp, "stamp {new} after {stamp}");
                                break;
                            }
                            Err(e) => {
                                assert!(conflict_stamp(&e) > stamp, "{e} after stamp {stamp}");
                                conflicts += 1;
                            }
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("client")).sum()
}

#[test]
fn racing_increments_through_ifstamp_lose_no_update() {
    let lake = Lake::start();
    let cons = (0..16).map(|_| lake.con()).collect();
    let conflicts = race(cons, "counter", 10);
    let mut con = lake.con();
    assert_eq!(read_counter(&mut con, "counter").0, 160);
    // Exactly one delta per successful increment: no loser was indexed.
    assert_eq!(zrange(&mut con, "catalog:{counter}").len(), 160);
    assert!(conflicts > 0, "16 racing clients never conflicted");
    eprintln!("16 clients x 10 increments: {conflicts} conflicts");
    lake.assert_no_crash();
}

#[test]
fn ifstamp_rules() {
    let lake = Lake::start();
    let mut con = lake.con();
    // An empty catalog is at stamp 0: IFSTAMP 0 creates it once.
    assert_eq!(read_counter(&mut con, "c"), (0, 0));
    let first = write_if(&mut con, "c", 1, 0).expect("create");
    let e = write_if(&mut con, "c", 2, 0).expect_err("second create");
    assert_eq!(conflict_stamp(&e), first);
    assert!(e.contains("nothing was indexed"), "{e}");
    assert_eq!(read_counter(&mut con, "c"), (1, first));
    // A stamp from the future conflicts too; so does an older one.
    assert!(write_if(&mut con, "c", 9, first + 1).is_err());
    let second = write_if(&mut con, "c", 2, first).expect("in turn");
    assert!(write_if(&mut con, "c", 9, first).is_err());
    // A snapshot commit covers an existing stamp: nothing changes.
    let _: Option<String> = redis::cmd("LAKE.READ")
        .arg("c")
        .arg("SNAP")
        .query(&mut con)
        .expect("SNAP read");
    assert_eq!(read_counter(&mut con, "c"), (2, second));
    write_if(&mut con, "c", 3, second).expect("after a snapshot");
    // A read AT an older stamp says that stamp.
    let (text, at): (Option<String>, i64) = redis::cmd("LAKE.READ")
        .arg("c")
        .arg("PATH")
        .arg("n")
        .arg("AT")
        .arg(first)
        .arg("WITHSTAMP")
        .query(&mut con)
        .expect("AT WITHSTAMP");
    assert_eq!((text.as_deref(), at), (Some("1"), first));
    // Bad input is refused before anything is stored.
    for (args, what) in [
        (vec!["IFSTAMP", "-1"], "IFSTAMP needs a stamp"),
        (vec!["IFSTAMP", "x"], "IFSTAMP needs a stamp"),
        (vec!["IFSTAMP", "1", "IFSTAMP", "1"], "at most once"),
        (vec!["IFSTAMP"], "wrong number of arguments"),
        (vec!["IFSTAMQ", "1"], "syntax error"),
    ] {
        let e = redis::cmd("LAKE.WRITE")
            .arg("c")
            .arg("n")
            .arg("5")
            .arg(&args)
            .query::<redis::Value>(&mut con)
            .map_err(err_text)
            .expect_err("bad IFSTAMP");
        assert!(e.starts_with("ERR") && e.contains(what), "{args:?}: {e}");
    }
    let info: String = redis::cmd("INFO").arg("lake").query(&mut con).unwrap();
    assert!(info.contains("errors_conflict:3"), "{info}");
    assert_eq!(read_counter(&mut con, "c").0, 3);
    lake.assert_no_crash();
}

#[test]
fn racing_increments_on_a_cluster_lose_no_update() {
    let mut cluster = Cluster::start(3, 1, 5000);
    let cons = (0..16).map(|_| cluster.cluster_con()).collect();
    let cats = ["ctr-a", "ctr-b"];
    let conflicts = race(cons, cats[0], 8);
    let cons = (0..16).map(|_| cluster.cluster_con()).collect();
    let conflicts = conflicts + race(cons, cats[1], 8);
    let mut cc = cluster.cluster_con();
    for cat in cats {
        assert_eq!(read_counter(&mut cc, cat).0, 128, "{cat}");
    }
    assert!(conflicts > 0, "16 racing clients never conflicted");
    cluster.assert_sound();
}
