//! The module's hot-read reply cache: a read of an unchanged catalog, or of
//! one that only gained writes through this node since, is answered by
//! Redis alone (even with the sidecar frozen), and the cache never answers
//! what a fresh merge would not: a differential run against a Lake with
//! the cache off, through writes in every mode, REMOVE, DROP, compaction
//! and reads on a replica.

use lake_tests::{err_text, redis, wait_for, write, Lake, Options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn info(con: &mut redis::Connection, field: &str) -> i64 {
    let text: String = redis::cmd("INFO").arg("lake").query(con).expect("INFO");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("lake_{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO lake"))
}

fn read(con: &mut redis::Connection, cat: &str, args: &[&str]) -> Result<Option<String>, String> {
    redis::cmd("LAKE.READ")
        .arg(cat)
        .arg(args)
        .query(con)
        .map_err(err_text)
}

#[test]
fn an_unchanged_catalog_is_answered_without_the_sidecar() {
    let mut lake = Lake::start();
    let mut con = lake.con();
    write(&mut con, "hot", "a", r#"{"x":1}"#).unwrap();
    let first = read(&mut con, "hot", &[]).unwrap();
    let merges = lake.metric("reads_total");
    assert_eq!(info(&mut con, "reply_cache_misses"), 1);
    // The sidecar frozen: a hot read still answers, from Redis alone.
    lake.signal_sidecar("STOP");
    for _ in 0..3 {
        assert_eq!(read(&mut con, "hot", &[]).unwrap(), first);
    }
    assert_eq!(info(&mut con, "reply_cache_hits"), 3);
    // Thawed, a write changes what the read is planned from; its body is
    // kept, so the next read is folded here, again with the sidecar frozen.
    lake.signal_sidecar("CONT");
    write(&mut con, "hot", "b", "2").expect("write after thawing");
    write(&mut con, "hot", "c.d", r#"{"e":[1,2.50]}"#).expect("write");
    assert_eq!(info(&mut con, "reply_cache_bodies"), 2);
    lake.signal_sidecar("STOP");
    let folded = read(&mut con, "hot", &[]).unwrap().expect("a document");
    assert_eq!(folded, r#"{"a":{"x":1},"b":2,"c":{"d":{"e":[1,2.50]}}}"#);
    assert_eq!(info(&mut con, "reply_cache_folds"), 1);
    assert_eq!(info(&mut con, "reply_cache_bodies"), 0);
    lake.signal_sidecar("CONT");
    assert_eq!(lake.metric("reads_total"), merges);
    // A value too large to keep: merged by the sidecar.
    let big = format!("\"{}\"", "v".repeat(40 << 10));
    write(&mut con, "hot", "big", &big).expect("large write");
    let doc = read(&mut con, "hot", &[]).unwrap().expect("a document");
    assert!(
        doc.ends_with(&format!(r#""big":{big}}}"#)),
        "{}",
        &doc[..80]
    );
    assert!(lake.metric("reads_total") > merges);
    assert_eq!(info(&mut con, "reply_cache_folds"), 1);
    assert!(info(&mut con, "reply_cache_bytes") > 0);
    // A reconnected sidecar (its modes may differ) starts the cache over.
    lake.kill_sidecar();
    lake.start_sidecar();
    wait_for(
        "the module to reconnect",
        std::time::Duration::from_secs(20),
        || info(&mut con, "sidecar_connected") == 1,
    );
    assert_eq!(info(&mut con, "reply_cache_entries"), 0);
    // What was folded here is what the store holds: read back through a
    // sidecar that has never merged this catalog.
    let cold = read(&mut con, "hot", &[]).unwrap().expect("a document");
    assert!(cold.starts_with(r#"{"a":{"x":1},"b":2,"c":{"d":{"e":[1,2.50]}},"big":"#));
    assert_eq!(cold, doc);
    lake.assert_no_crash();
}

#[test]
fn the_cache_answers_what_a_cache_off_lake_answers() {
    let on = Lake::with(Options {
        snapshot_every: 4,
        ..Options::default()
    });
    let off = Lake::with(Options {
        snapshot_every: 4,
        module_args: ["reply-cache-mb", "0"].map(String::from).to_vec(),
        ..Options::default()
    });
    let (_replica, mut rep) = on.start_replica();
    let (mut a, mut b) = (on.con(), off.con());
    let seed: u64 = rand::rng().random();
    eprintln!("reply cache differential: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let cats = ["d/a", "d/b"];
    for cat in cats {
        for c in [&mut a, &mut b] {
            let _: String = redis::cmd("LAKE.RETENTION")
                .arg(cat)
                .arg(1)
                .query(c)
                .unwrap();
        }
    }
    let fields = ["x", "y.z", "arr", "/w", "$"];
    let modes = ["SET", "MERGE", "INSERT", "REPLACE"];
    // Each Lake's uuids of the same writes, for REMOVE.
    let mut written: Vec<(usize, String, String)> = Vec::new();
    for step in 0..400 {
        let ci = rng.random_range(0..cats.len());
        let cat = cats[ci];
        match rng.random_range(0..100) {
            0..=54 => {
                let field = fields[rng.random_range(0..fields.len())];
                let mode = modes[rng.random_range(0..modes.len())];
                let value = match rng.random_range(0..4) {
                    0 => format!("{}", rng.random_range(0..100)),
                    1 => format!(
                        "{{\"k{}\":{}}}",
                        rng.random_range(0..3),
                        rng.random_range(0..9)
                    ),
                    2 => "[1,2]".to_string(),
                    _ => "null".to_string(),
                };
                let ua = redis::cmd("LAKE.WRITE")
                    .arg(cat)
                    .arg(field)
                    .arg(&value)
                    .arg("MODE")
                    .arg(mode)
                    .query::<(String, i64)>(&mut a);
                let ub = redis::cmd("LAKE.WRITE")
                    .arg(cat)
                    .arg(field)
                    .arg(&value)
                    .arg("MODE")
                    .arg(mode)
                    .query::<(String, i64)>(&mut b);
                if let (Ok((ua, _)), Ok((ub, _))) = (ua, ub) {
                    written.push((ci, ua, ub));
                }
            }
            55..=62 if !written.is_empty() => {
                let (wc, ua, ub) = written.remove(rng.random_range(0..written.len()));
                let _: redis::Value = redis::cmd("LAKE.REMOVE")
                    .arg(cats[wc])
                    .arg(&ua)
                    .query(&mut a)
                    .unwrap();
                let _: redis::Value = redis::cmd("LAKE.REMOVE")
                    .arg(cats[wc])
                    .arg(&ub)
                    .query(&mut b)
                    .unwrap();
            }
            63..=64 => {
                for c in [&mut a, &mut b] {
                    let _: i64 = redis::cmd("LAKE.DROP").arg(cat).query(c).unwrap();
                    let _: String = redis::cmd("LAKE.RETENTION")
                        .arg(cat)
                        .arg(1)
                        .query(c)
                        .unwrap();
                }
                written.retain(|(wc, _, _)| *wc != ci);
            }
            65..=69 => {
                for c in [&mut a, &mut b] {
                    let _: Option<String> = read(c, cat, &["SNAP"]).unwrap();
                    let _: redis::Value = redis::cmd("LAKE.COMPACT").arg(cat).query(c).unwrap();
                }
            }
            _ => {}
        }
        // Every read shape, twice on the cached Lake (a miss, then a hit).
        for args in [
            vec![],
            vec!["NOSNAP"],
            vec!["PATH", "x"],
            vec!["PATH", "y"],
            vec!["WITHSTAMP"],
        ] {
            let want = if args == ["WITHSTAMP"] {
                read(&mut b, cat, &[])
            } else {
                read(&mut b, cat, &args)
            };
            for _ in 0..2 {
                let got = if args == ["WITHSTAMP"] {
                    redis::cmd("LAKE.READ")
                        .arg(cat)
                        .arg("WITHSTAMP")
                        .query::<(Option<String>, i64)>(&mut a)
                        .map(|(d, _)| d)
                        .map_err(err_text)
                } else {
                    read(&mut a, cat, &args)
                };
                assert_eq!(got, want, "seed {seed}, step {step}, {cat} {args:?}");
            }
        }
        if step % 50 == 49 {
            let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut a).unwrap();
            for cat in cats {
                assert_eq!(
                    read(&mut rep, cat, &[]),
                    read(&mut b, cat, &[]),
                    "replica, seed {seed}, step {step}"
                );
                assert_eq!(
                    read(&mut rep, cat, &[]),
                    read(&mut b, cat, &[]),
                    "replica hit, seed {seed}, step {step}"
                );
            }
        }
    }
    assert!(info(&mut a, "reply_cache_hits") > 0);
    assert!(info(&mut a, "reply_cache_folds") > 0);
    assert_eq!(info(&mut b, "reply_cache_hits"), 0);
    on.assert_no_crash();
    off.assert_no_crash();
}

/// Answers and kept bodies share `lake.reply-cache-mb`: past it the least
/// recently used answers go (their catalogs' bodies with them; an answer
/// hit since it was kept included), every read still answers the
/// document, and what is kept is accounted to the byte budget.
#[test]
fn answers_and_bodies_stay_within_the_budget() {
    let lake = Lake::with(Options {
        module_args: ["reply-cache-mb", "1"].map(String::from).to_vec(),
        ..Options::default()
    });
    let mut con = lake.con();
    let value = |i: usize| {
        format!(
            "\"{}\"",
            char::from(b'a' + (i % 26) as u8)
                .to_string()
                .repeat(4 << 10)
        )
    };
    let mut want = Vec::new();
    for c in 0..80 {
        let cat = format!("b/{c}");
        for f in 0..3 {
            write(&mut con, &cat, &format!("f{f}"), &value(c + f)).unwrap();
        }
        read(&mut con, &cat, &["NOSNAP"]).unwrap();
        // A hit moves the answer to the young end: it must stay evictable.
        read(&mut con, &cat, &["NOSNAP"]).unwrap();
        for f in 3..6 {
            write(&mut con, &cat, &format!("f{f}"), &value(c + f)).unwrap();
        }
        let doc = (0..6)
            .map(|f| format!("\"f{f}\":{}", value(c + f)))
            .collect::<Vec<_>>()
            .join(",");
        want.push((cat, format!("{{{doc}}}")));
        let bytes = info(&mut con, "reply_cache_bytes");
        assert!(bytes <= 1 << 20, "{bytes} bytes kept, budget 1 MiB");
    }
    // The newest catalogs' answers and bodies are still there (folded
    // here), the oldest were evicted (merged by the sidecar).
    for (cat, doc) in want.iter().rev() {
        assert_eq!(
            read(&mut con, cat, &["NOSNAP"]).unwrap().as_deref(),
            Some(doc.as_str())
        );
    }
    assert!(info(&mut con, "reply_cache_folds") > 0);
    assert!(info(&mut con, "reply_cache_hits") >= 80);
    assert!(info(&mut con, "reply_cache_entries") < 80);
    let bytes = info(&mut con, "reply_cache_bytes");
    assert!(bytes > 0 && bytes <= 1 << 20, "{bytes}");
    lake.assert_no_crash();
}

/// What Redis no longer holds is never answered from memory: after
/// `FLUSHALL`, the same catalog written again to as many deltas as before
/// reads only what was written since, folded or not.
#[test]
fn a_flushed_catalog_is_not_answered_from_before() {
    let lake = Lake::start();
    let mut con = lake.con();
    write(&mut con, "fl", "a", "1").unwrap();
    read(&mut con, "fl", &[]).unwrap();
    write(&mut con, "fl", "b", "2").unwrap();
    assert_eq!(
        read(&mut con, "fl", &[]).unwrap().as_deref(),
        Some(r#"{"a":1,"b":2}"#)
    );
    assert_eq!(info(&mut con, "reply_cache_folds"), 1);
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    assert_eq!(read(&mut con, "fl", &[]).unwrap(), None);
    write(&mut con, "fl", "c", "3").unwrap();
    write(&mut con, "fl", "d", "4").unwrap();
    assert_eq!(
        read(&mut con, "fl", &[]).unwrap().as_deref(),
        Some(r#"{"c":3,"d":4}"#)
    );
    write(&mut con, "fl", "e", "5").unwrap();
    assert_eq!(
        read(&mut con, "fl", &[]).unwrap().as_deref(),
        Some(r#"{"c":3,"d":4,"e":5}"#)
    );
    assert_eq!(info(&mut con, "reply_cache_folds"), 2);
    lake.assert_no_crash();
}
