//! `LAKE.MREAD`: many catalogs in one round trip, each answer equal to the
//! single `LAKE.READ`; its keys are the catalogs (not a trailing `PATH`),
//! so a cluster routes it and refuses catalogs of different slots.

use lake_shared::cluster::catalog_slot;
use lake_tests::cluster::Cluster;
use lake_tests::{err_text, redis, write, Lake};

fn mread(
    con: &mut impl redis::ConnectionLike,
    args: &[&str],
) -> Result<Vec<Option<String>>, String> {
    redis::cmd("LAKE.MREAD")
        .arg(args)
        .query(con)
        .map_err(err_text)
}

fn read(con: &mut impl redis::ConnectionLike, cat: &str, args: &[&str]) -> Option<String> {
    redis::cmd("LAKE.READ")
        .arg(cat)
        .arg(args)
        .query(con)
        .expect("LAKE.READ")
}

#[test]
fn mread_equals_the_single_reads() {
    let lake = Lake::start();
    let mut con = lake.con();
    let cats = ["m/a", "m/b", "m/c", "PATH"];
    for (i, cat) in cats.iter().enumerate() {
        for j in 0..=i * 3 {
            write(
                &mut con,
                cat,
                &format!("f{j}"),
                &format!("{{\"x\":{j},\"i\":{i}}}"),
            )
            .expect("write");
        }
    }
    let args = ["m/a", "m/empty", "m/b", "m/c", "PATH"];
    let expect: Vec<Option<String>> = args.iter().map(|c| read(&mut con, c, &[])).collect();
    assert_eq!(expect[1], None);
    assert_eq!(mread(&mut con, &args).expect("MREAD"), expect);
    // The single reads filled the reply cache: MREAD answered the four
    // unchanged catalogs from it, and answers the same after a write.
    let info: String = redis::cmd("INFO").arg("lake").query(&mut con).unwrap();
    assert!(info.contains("lake_reply_cache_hits:4"), "{info}");
    write(&mut con, "m/b", "new", "true").expect("write");
    let expect: Vec<Option<String>> = args.iter().map(|c| read(&mut con, c, &[])).collect();
    assert_eq!(mread(&mut con, &args).expect("MREAD"), expect);
    // A trailing PATH <field> applies to every catalog.
    let got = mread(&mut con, &["m/a", "m/empty", "m/c", "PATH", "f1"]).expect("MREAD PATH");
    let expect: Vec<Option<String>> = ["m/a", "m/empty", "m/c"]
        .iter()
        .map(|c| read(&mut con, c, &["PATH", "f1"]))
        .collect();
    assert_eq!(got, expect);
    assert_eq!(expect[0], None, "m/a has no f1");
    assert!(expect[2].as_deref().is_some_and(|t| t.contains("\"x\":1")));
    // A catalog named PATH is a catalog unless it is second to last.
    assert_eq!(
        mread(&mut con, &["PATH", "m/a"]).expect("MREAD PATH m/a"),
        vec![read(&mut con, "PATH", &[]), read(&mut con, "m/a", &[])]
    );
    // Redis knows which arguments are keys.
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("LAKE.MREAD")
        .arg(&["m/a", "m/b", "PATH", "f1"])
        .query(&mut con)
        .expect("COMMAND GETKEYS");
    assert_eq!(keys, ["m/a", "m/b"]);
    lake.assert_no_crash();
}

#[test]
fn mread_refuses_bad_input() {
    let lake = Lake::start();
    let mut con = lake.con();
    write(&mut con, "ok", "f", "1").expect("write");
    let too_many: Vec<String> = (0..257).map(|i| format!("c{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    for (args, what) in [
        (vec![], "wrong number of arguments"),
        (vec!["ok", "bad name"], "invalid catalog name"),
        (vec!["ok", "PATH", "a..b"], "ERR"),
        (vec!["ok", "\u{ff}"], "invalid catalog name"),
        (too_many, "at most 256"),
    ] {
        let e = mread(&mut con, &args).expect_err("bad MREAD");
        assert!(e.starts_with("ERR") && e.contains(what), "{args:?}: {e}");
    }
    // Invalid UTF-8 and NUL bytes are refused, not a crash.
    let e = redis::cmd("LAKE.MREAD")
        .arg("ok")
        .arg(&b"\xff\x00"[..])
        .query::<redis::Value>(&mut con)
        .map_err(err_text)
        .expect_err("binary catalog");
    assert!(e.starts_with("ERR"), "{e}");
    let e = redis::cmd("MULTI")
        .query::<String>(&mut con)
        .and_then(|_| {
            redis::cmd("LAKE.MREAD")
                .arg("ok")
                .query::<redis::Value>(&mut con)
        })
        .and_then(|_| redis::cmd("EXEC").query::<redis::Value>(&mut con));
    assert!(format!("{e:?}").contains("MULTI"), "{e:?}");
    lake.assert_no_crash();
}

#[test]
fn mread_on_a_cluster_serves_one_slot_and_refuses_crossslot() {
    let mut cluster = Cluster::start(3, 0, 5000);
    let mut cc = cluster.cluster_con();
    let slot = catalog_slot("same-0");
    let same = Cluster::names_in_slots("same", 2, slot, slot);
    let other = Cluster::names_in_slots("other", 1, (slot + 8000) % 16384, (slot + 8000) % 16384);
    for cat in same.iter().chain(&other) {
        write(&mut cc, cat, "f", &format!("\"{cat}\"")).expect("write");
    }
    let args: Vec<&str> = same.iter().map(String::as_str).collect();
    let got = mread(&mut cc, &args).expect("MREAD of one slot");
    let expect: Vec<Option<String>> = same
        .iter()
        .map(|c| Some(format!("{{\"f\":\"{c}\"}}")))
        .collect();
    assert_eq!(got, expect);
    // Catalogs of two slots: Redis refuses before the command runs.
    let owner = cluster.owner(slot);
    let e = mread(&mut cluster.con(owner), &[args[0], &other[0]]).expect_err("cross-slot");
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    cluster.assert_sound();
}
