//! Lake on a real Redis Cluster (3 primaries, 3 replicas, one sidecar per
//! node, one shared S3 bucket), through what operators do there: routing,
//! snapshots, manual failover, a primary killed, resharding, GC on every
//! primary. Each test ends with: no node crashed, no key in a slot its node
//! does not own, and every acknowledged write indexed with its stamp on the
//! node that serves its catalog now, with its object in the store.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lake_shared::cluster::catalog_slot;
use lake_tests::cluster::{setslot, Cluster};
use lake_tests::{delta_key, err_text, gc, plain_redis, restore, wait_for, write, zrange};
use redis::ConnectionLike;
use serde_json::json;

/// The index of `cat` (deltas, then snapshots) through any connection.
fn index_of(con: &mut impl ConnectionLike, cat: &str) -> Vec<Vec<(String, i64)>> {
    [
        format!("catalog:{{{cat}}}"),
        format!("catalog:{{{cat}}}:snap"),
    ]
    .iter()
    .map(|k| {
        redis::cmd("ZRANGE")
            .arg(k)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(con)
            .expect("ZRANGE")
    })
    .collect()
}

/// Once the journal is shipped, a restore of the shared store into an
/// empty Redis holds every write in `acks` with its stamp; with `exact`,
/// each of their catalogs' index is the cluster's, entry for entry.
fn assert_restorable(cluster: &mut Cluster, acks: &[Ack], exact: bool) {
    cluster.wait_shipped();
    let (_redis, url) = plain_redis(&cluster.dir.path().join("restored"));
    let out = restore(&cluster.store_url(), Some(cluster.s3_port), &url, &[]);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connect");
    let mut cc = cluster.cluster_con();
    let cats: HashSet<&str> = acks.iter().map(|a| a.cat.as_str()).collect();
    for cat in cats {
        let restored = index_of(&mut r, cat);
        if exact {
            assert_eq!(restored, index_of(&mut cc, cat), "{cat}");
        }
        let deltas: HashSet<&(String, i64)> = restored[0].iter().collect();
        for a in acks.iter().filter(|a| a.cat == cat) {
            assert!(
                deltas.contains(&(format!("{}:{}", a.field, a.uuid), a.stamp)),
                "{a:?} is not in the restored index"
            );
        }
    }
}

/// A 3-shard cluster's catalogs restore into one Redis and into a 2-shard
/// cluster, entry for entry (snapshots, removals, drops included).
#[test]
fn a_clusters_index_restores_into_one_node_and_into_two_shards() {
    let mut cluster = Cluster::start(3, 0, 5000);
    let mut cc = cluster.cluster_con();
    let cats: Vec<String> = (0..24).map(|i| format!("shape/{i}")).collect();
    for (i, cat) in cats.iter().enumerate() {
        for n in 0..5 {
            write(&mut cc, cat, &format!("f{n}"), &n.to_string()).unwrap();
        }
        if i % 3 == 0 {
            read_on(&mut cc, cat, &["SNAP"]);
        }
    }
    let (uuid, _) = write(&mut cc, &cats[1], "gone", "1").unwrap();
    let _: i64 = redis::cmd("LAKE.REMOVE")
        .arg(&cats[1])
        .arg(&uuid)
        .query(&mut cc)
        .unwrap();
    let _: i64 = redis::cmd("LAKE.DROP")
        .arg(&cats[2])
        .query(&mut cc)
        .unwrap();
    let live: Vec<_> = cats.iter().map(|c| index_of(&mut cc, c)).collect();
    let docs: Vec<_> = cats
        .iter()
        .map(|c| {
            redis::cmd("LAKE.READ")
                .arg(c)
                .query::<Option<String>>(&mut cc)
                .unwrap()
        })
        .collect();
    assert!(!live[0][1].is_empty(), "a snapshot was committed");
    cluster.wait_shipped();

    let (_one, url) = plain_redis(&cluster.dir.path().join("one"));
    let out = restore(&cluster.store_url(), Some(cluster.s3_port), &url, &[]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.starts_with("restored 23 catalogs"), "{report}");
    let mut one = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap();
    for (cat, idx) in cats.iter().zip(&live) {
        assert_eq!(&index_of(&mut one, cat), idx, "{cat} on one node");
    }

    // `redis-cli --cluster create` wants three primaries: make three, then
    // move every slot of one to another.
    let mut two = Cluster::start(3, 0, 5000);
    let (from, to) = (two.owner(16383), two.owner(0));
    let out = Command::new("redis-cli")
        .args(["--cluster", "reshard"])
        .arg(format!("127.0.0.1:{}", two.nodes[from].port))
        .args(["--cluster-from", &two.node_id(from)])
        .args(["--cluster-to", &two.node_id(to)])
        .args(["--cluster-slots", "16384", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    two.wait_ok();
    assert!(two.myself(from).owned.is_empty(), "a shard was emptied");
    let out = restore(
        &cluster.store_url(),
        Some(cluster.s3_port),
        &two.nodes[0].url(),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tc = two.cluster_con();
    for (cat, idx) in cats.iter().zip(&live) {
        assert_eq!(&index_of(&mut tc, cat), idx, "{cat} on two shards");
    }
    two.assert_sound();
    // The documents read back the same through the original cluster's
    // sidecars once its own index is restored from the store.
    for p in cluster.primaries() {
        let _: () = redis::cmd("FLUSHALL").query(&mut cluster.con(p)).unwrap();
    }
    let out = restore(
        &cluster.store_url(),
        Some(cluster.s3_port),
        &cluster.nodes[0].url(),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (cat, doc) in cats.iter().zip(&docs) {
        let got: Option<String> = redis::cmd("LAKE.READ").arg(cat).query(&mut cc).unwrap();
        assert_eq!(&got, doc, "{cat}");
    }
    cluster.assert_sound();
}

/// One acknowledged write.
#[derive(Clone, Debug)]
struct Ack {
    cat: String,
    field: String,
    uuid: String,
    stamp: i64,
}

fn read_on(con: &mut impl ConnectionLike, cat: &str, args: &[&str]) -> serde_json::Value {
    let text: Option<String> = redis::cmd("LAKE.READ")
        .arg(cat)
        .arg(args)
        .query(con)
        .unwrap_or_else(|e| panic!("LAKE.READ {cat}: {}", err_text(e)));
    text.map_or(serde_json::Value::Null, |t| {
        serde_json::from_str(&t).expect("JSON")
    })
}

/// Errors the load saw, by their prefix.
type Errors = HashMap<String, usize>;

/// Writers (one thread each, cluster-aware connections) writing fields
/// `w<t>.n<i>` round-robin over `cats` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<(Vec<Ack>, Errors)>>,
}

impl Load {
    fn start(cluster: &Cluster, writers: usize, cats: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let threads = (0..writers)
            .map(|t| {
                let mut con = cluster.cluster_con();
                let (stop, acked, cats) = (stop.clone(), acked.clone(), cats.to_vec());
                std::thread::spawn(move || {
                    let (mut acks, mut errors) = (Vec::new(), Errors::new());
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let cat = &cats[(t + i) % cats.len()];
                        let field = format!("w{t}.n{i}");
                        match write(&mut con, cat, &field, &i.to_string()) {
                            Ok((uuid, stamp)) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                acks.push(Ack {
                                    cat: cat.clone(),
                                    field,
                                    uuid,
                                    stamp,
                                });
                            }
                            Err(e) => {
                                let kind = e.split_whitespace().next().unwrap_or("").to_string();
                                *errors.entry(kind).or_default() += 1;
                            }
                        }
                        i += 1;
                    }
                    (acks, errors)
                })
            })
            .collect();
        Load {
            stop,
            acked,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits for `n` more acknowledgements than now.
    fn wait_more(&self, n: usize) {
        let target = self.acked() + n;
        wait_for("more acknowledged writes", Duration::from_secs(60), || {
            self.acked() >= target
        });
    }

    fn finish(self) -> (Vec<Ack>, Errors) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut acks, mut errors) = (Vec::new(), Errors::new());
        for t in self.threads {
            let (a, e) = t.join().expect("writer thread");
            acks.extend(a);
            for (k, v) in e {
                *errors.entry(k).or_default() += v;
            }
        }
        (acks, errors)
    }
}

/// Every acknowledged write is in the index of the primary serving its
/// catalog now, with its stamp, and its object is in the shared store;
/// reads through a cluster connection see every field.
fn assert_all_kept(cluster: &mut Cluster, acks: &[Ack]) {
    let objects: HashSet<String> = cluster.objects().into_iter().collect();
    let mut by_cat: HashMap<&str, Vec<&Ack>> = HashMap::new();
    for a in acks {
        by_cat.entry(&a.cat).or_default().push(a);
    }
    let mut cc = cluster.cluster_con();
    for (cat, acks) in by_cat {
        let owner = cluster.owner(catalog_slot(cat));
        let index: HashSet<(String, i64)> =
            zrange(&mut cluster.con(owner), &format!("catalog:{{{cat}}}"))
                .into_iter()
                .collect();
        let doc = read_on(&mut cc, cat, &["NOSNAP"]);
        for a in acks {
            assert!(
                index.contains(&(format!("{}:{}", a.field, a.uuid), a.stamp)),
                "acknowledged write {a:?} is not indexed on the owner"
            );
            assert!(
                objects.contains(&delta_key(cat, &a.uuid)),
                "acknowledged write {a:?} has no object"
            );
            let (w, n) = a.field.split_once('.').expect("field");
            assert!(doc[w][n].is_number(), "{a:?} missing from the read");
        }
    }
}

#[test]
fn routes_every_catalog_to_its_owner_and_commits_snapshots_there() {
    let mut cluster = Cluster::start(3, 1, 5000);
    let mut cc = cluster.cluster_con();
    let cats: Vec<String> = (0..120).map(|i| format!("route/{i}")).collect();
    for c in &cats {
        for f in ["a", "b", "c"] {
            write(&mut cc, c, f, &format!("\"{c}.{f}\"")).expect("write");
        }
    }
    let mut owners = HashSet::new();
    for c in &cats {
        let doc = read_on(&mut cc, c, &["SNAP"]);
        assert_eq!(
            doc,
            json!({"a": format!("{c}.a"), "b": format!("{c}.b"), "c": format!("{c}.c")})
        );
        let owner = cluster.owner(catalog_slot(c));
        owners.insert(owner);
        let mut con = cluster.con(owner);
        assert_eq!(zrange(&mut con, &format!("catalog:{{{c}}}")).len(), 3);
        assert_eq!(
            zrange(&mut con, &format!("catalog:{{{c}}}:snap")).len(),
            1,
            "the SNAP read committed its snapshot on the owner"
        );
    }
    assert_eq!(owners.len(), 3, "the catalogs spread over every primary");
    cluster.assert_sound();
}

#[test]
fn gc_on_every_primary_deletes_only_its_own_orphans() {
    // One object per write here; segments have their own test below.
    let mut cluster = Cluster::start_with(3, 1, 500, false, &["--layout", "objects"]);
    let mut cc = cluster.cluster_con();
    let cats: Vec<String> = (0..300).map(|i| format!("gc/{i}")).collect();
    for c in &cats {
        for f in ["a", "b", "c"] {
            write(&mut cc, c, f, "1").expect("write");
        }
    }
    let dropped: Vec<&String> = cats.iter().step_by(10).collect();
    for c in &dropped {
        let n: i64 = redis::cmd("LAKE.DROP")
            .arg(c.as_str())
            .query(&mut cc)
            .unwrap();
        assert_eq!(n, 3);
    }
    assert_eq!(cluster.objects().len(), 900);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    // Objects must be older than the grace floor (2 x timeout-ms) for GC to
    // consider them at all: wait until no primary reports any as young.
    for &p in &primaries {
        let mut con = cluster.con(p);
        wait_for(
            "objects older than the grace",
            Duration::from_secs(30),
            || gc(&mut con, &["DRYRUN", "GRACE", "0"])[2] == 0,
        );
    }
    let (mut scanned, mut referenced, mut deleted) = (0, 0, 0);
    for &p in &primaries {
        let r = gc(&mut cluster.con(p), &["GRACE", "0"]);
        scanned += r[0];
        referenced += r[1];
        deleted += r[4];
    }
    assert_eq!(
        scanned, 900,
        "each object was considered by exactly one primary"
    );
    assert_eq!(referenced, 810);
    assert_eq!(deleted, 90, "only the dropped catalogs' objects");
    let objects: HashSet<String> = cluster.objects().into_iter().collect();
    assert_eq!(objects.len(), 810);
    for c in &cats {
        let kept = !dropped.contains(&c);
        let owner = cluster.owner(catalog_slot(c));
        for (m, _) in zrange(&mut cluster.con(owner), &format!("catalog:{{{c}}}")) {
            let uuid = m.rsplit_once(':').unwrap().1;
            assert!(objects.contains(&delta_key(c, uuid)), "{c} lost {m}");
        }
        assert_eq!(
            objects
                .iter()
                .filter(|o| o.starts_with(&format!("{c}/")))
                .count(),
            if kept { 3 } else { 0 },
            "{c}"
        );
    }
    // A replica refuses: its index may lag behind its primary's.
    let replica = (0..6).find(|i| !primaries.contains(i)).unwrap();
    let e = redis::cmd("LAKE.GC")
        .query::<Vec<i64>>(&mut cluster.con(replica))
        .map_err(err_text)
        .unwrap_err();
    assert!(e.starts_with("ERR LAKE.GC runs on a primary"), "{e}");
    cluster.assert_sound();
}

#[test]
fn gc_refuses_on_a_node_whose_cluster_state_is_fail() {
    // A primary cut off from the cluster may still call itself primary
    // while another was promoted in its place: its index is not the whole
    // truth, so it must not delete. Here a primary with no replica dies,
    // its slots go uncovered, and every node's state turns `fail`.
    let mut cluster = Cluster::start_with(3, 0, 500, false, &["--layout", "objects"]);
    let mut cc = cluster.cluster_con();
    for i in 0..30 {
        write(&mut cc, &format!("gf/{i}"), "a", "1").expect("write");
    }
    for i in 0..30 {
        let _: i64 = redis::cmd("LAKE.DROP")
            .arg(format!("gf/{i}"))
            .query(&mut cc)
            .unwrap();
    }
    drop(cc);
    let before = cluster.objects();
    assert_eq!(before.len(), 30);
    cluster.kill(2);
    let mut con = cluster.con(0);
    wait_for("cluster_state:fail", Duration::from_secs(30), || {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut con)
            .unwrap_or_default();
        info.contains("cluster_state:fail")
    });
    let e = redis::cmd("LAKE.GC")
        .arg("GRACE")
        .arg(0)
        .query::<Vec<i64>>(&mut con)
        .map_err(err_text)
        .unwrap_err();
    assert!(
        e.starts_with("TRYAGAIN LAKE.GC refuses while the cluster state is not ok"),
        "{e}"
    );
    assert_eq!(cluster.objects(), before, "nothing deleted");
    cluster.assert_alive(0);
    cluster.assert_alive(1);
}

#[test]
fn manual_failover_under_write_load_loses_nothing() {
    let mut cluster = Cluster::start(3, 1, 5000);
    let cats = Cluster::names_in_slots("fo", 8, 0, 5000);
    let old = cluster.owner(catalog_slot(&cats[0]));
    let cats: Vec<String> = cats
        .into_iter()
        .filter(|c| cluster.owner(catalog_slot(c)) == old)
        .collect();
    let replica = cluster.replica_of(old).expect("a replica of the primary");
    let load = Load::start(&cluster, 16, &cats);
    load.wait_more(300);
    cluster.fail_over_to(replica);
    load.wait_more(300);
    let (acks, errors) = load.finish();
    eprintln!(
        "manual failover: {} writes acknowledged, errors {errors:?}",
        acks.len()
    );
    cluster.assert_alive(old);
    cluster.wait_ok();
    assert_all_kept(&mut cluster, &acks);
    assert_restorable(&mut cluster, &acks, true);
    cluster.assert_sound();
}

#[test]
fn primary_killed_under_load_keeps_every_write_wait_confirmed() {
    let mut cluster = Cluster::start(3, 1, 2000);
    let cats = Cluster::names_in_slots("kill", 4, 0, 5000);
    let victim = cluster.owner(catalog_slot(&cats[0]));
    let cats: Vec<String> = cats
        .into_iter()
        .filter(|c| cluster.owner(catalog_slot(c)) == victim)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let mut con = cluster.con(victim);
            let (stop, confirmed, cats) = (stop.clone(), confirmed.clone(), cats.clone());
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let cat = &cats[(t + i) % cats.len()];
                    let field = format!("w{t}.n{i}");
                    i += 1;
                    let Ok((uuid, stamp)) = write(&mut con, cat, &field, "1") else {
                        break;
                    };
                    // Only a write a replica confirmed may be expected to
                    // survive the primary's death.
                    let Ok(n) = redis::cmd("WAIT").arg(1).arg(1000).query::<i64>(&mut con) else {
                        break;
                    };
                    if n >= 1 {
                        confirmed.fetch_add(1, Ordering::Relaxed);
                        acks.push(Ack {
                            cat: cat.clone(),
                            field,
                            uuid,
                            stamp,
                        });
                    }
                }
                acks
            })
        })
        .collect();
    wait_for("confirmed writes", Duration::from_secs(60), || {
        confirmed.load(Ordering::Relaxed) >= 300
    });
    cluster.kill(victim);
    stop.store(true, Ordering::Relaxed);
    let acks: Vec<Ack> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    wait_for("a replica to take over", Duration::from_secs(60), || {
        cluster.primaries().len() == 3
    });
    cluster.wait_ok();
    eprintln!("primary killed: {} writes confirmed by WAIT 1", acks.len());
    assert_all_kept(&mut cluster, &acks);
    // The dead primary may have shipped writes its replica never got: the
    // restore holds every confirmed one, maybe more.
    assert_restorable(&mut cluster, &acks, false);
    cluster.assert_sound();
}

#[test]
fn reshard_under_write_load_loses_nothing() {
    let mut cluster = Cluster::start(3, 1, 5000);
    let from = cluster.owner(0);
    let to = cluster
        .primaries()
        .into_iter()
        .find(|&p| p != from)
        .unwrap();
    let lo = cluster.myself(from).owned.ranges()[0].0;
    let cats = Cluster::names_in_slots("move", 12, lo, lo + 299);
    let load = Load::start(&cluster, 3, &cats);
    load.wait_more(200);
    let out = Command::new("redis-cli")
        .args(["--cluster", "reshard"])
        .arg(format!("127.0.0.1:{}", cluster.nodes[from].port))
        .args(["--cluster-from", &cluster.node_id(from)])
        .args(["--cluster-to", &cluster.node_id(to)])
        .args(["--cluster-slots", "300", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli --cluster reshard");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !text.contains("BUSYKEY") && !text.contains("[ERR]"),
        "reshard failed: {text}"
    );
    load.wait_more(200);
    let (acks, errors) = load.finish();
    eprintln!(
        "reshard of 300 slots: {} writes acknowledged, errors {errors:?}",
        acks.len()
    );
    for c in &cats {
        assert_eq!(cluster.owner(catalog_slot(c)), to, "{c} moved");
    }
    cluster.wait_ok();
    assert_all_kept(&mut cluster, &acks);
    assert_restorable(&mut cluster, &acks, true);
    cluster.assert_sound();
}

/// The steps of a slot migration one by one: a write in flight on the
/// source when its key leaves is refused, not committed there; `ASKING`
/// commands on the target wait for the catalog's keys; nothing lands twice.
#[test]
fn migration_steps_keep_index_writes_with_their_keys() {
    let mut cluster = Cluster::start(3, 0, 5000);
    let cat = "steps";
    let slot = catalog_slot(cat);
    let src = cluster.owner(slot);
    let dst = (0..3).find(|&i| i != src).unwrap();
    let (src_id, dst_id) = (cluster.node_id(src), cluster.node_id(dst));
    let mut a = cluster.con(src);
    let mut b = cluster.con(dst);
    let mut acked = Vec::new();
    for f in ["x", "y"] {
        acked.push(write(&mut a, cat, f, "1").unwrap());
    }
    read_on(&mut a, cat, &["SNAP"]);

    // A write in flight on the source while the slot starts to move.
    cluster.signal_sidecar(src, "STOP");
    let mut a2 = cluster.con(src);
    let in_flight = std::thread::spawn(move || write(&mut a2, cat, "late", "1"));
    wait_for("the write to block", Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut a).unwrap();
        info.contains("blocked_clients:1")
    });
    setslot(&mut b, slot, "IMPORTING", &src_id);
    setslot(&mut a, slot, "MIGRATING", &dst_id);

    // Redis sends the catalog to the target; its keys are still on the
    // source, so the target asks the client to retry.
    let e = write(&mut a, cat, "z", "1").unwrap_err();
    assert!(e.starts_with("ASK"), "{e}");
    redis::cmd("ASKING").query::<String>(&mut b).unwrap();
    let e = write(&mut b, cat, "z", "1").unwrap_err();
    assert!(e.starts_with("TRYAGAIN"), "{e}");
    redis::cmd("ASKING").query::<String>(&mut b).unwrap();
    let e = redis::cmd("LAKE.READ")
        .arg(cat)
        .query::<Option<String>>(&mut b)
        .map_err(err_text)
        .unwrap_err();
    assert!(e.starts_with("TRYAGAIN"), "{e}");

    // Move the keys, as redis-cli does: no BUSYKEY, nothing left behind.
    let keys = cluster.migrate_keys(slot, src, dst);
    assert_eq!(keys.len(), 3, "index, snapshot and journal keys: {keys:?}");

    // The in-flight write completes now, on a node its key has left.
    cluster.signal_sidecar(src, "CONT");
    let e = in_flight.join().unwrap().unwrap_err();
    assert!(e.starts_with("TRYAGAIN"), "{e}");
    let left: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut a)
        .unwrap();
    assert_eq!(left, 0, "the late write recreated the index on the source");

    // With the keys on the target, ASKING commands work there; repairs wait.
    redis::cmd("ASKING").query::<String>(&mut b).unwrap();
    acked.push(write(&mut b, cat, "z", "1").expect("ASKING write"));
    redis::cmd("ASKING").query::<String>(&mut b).unwrap();
    assert_eq!(read_on(&mut b, cat, &[]), json!({"x":1,"y":1,"z":1}));
    redis::cmd("ASKING").query::<String>(&mut b).unwrap();
    let e = redis::cmd("LAKE.REMOVE")
        .arg(cat)
        .arg(&acked[0].0)
        .query::<i64>(&mut b)
        .map_err(err_text)
        .unwrap_err();
    assert!(e.starts_with("TRYAGAIN"), "{e}");

    for i in 0..3 {
        setslot(&mut cluster.con(i), slot, "NODE", &dst_id);
    }
    cluster.wait_ok();
    let mut cc = cluster.cluster_con();
    assert_eq!(read_on(&mut cc, cat, &[]), json!({"x":1,"y":1,"z":1}));
    let index = zrange(&mut b, &format!("catalog:{{{cat}}}"));
    assert_eq!(index.len(), 3);
    for (uuid, stamp) in &acked {
        assert!(index
            .iter()
            .any(|(m, s)| m.ends_with(uuid.as_str()) && s == stamp));
    }
    cluster.assert_sound();
}

/// `local://` is one machine's disk: a cluster node whose sidecar uses it
/// refuses writes loudly instead of indexing what no other node can read.
#[test]
fn a_cluster_on_local_stores_refuses_writes() {
    let mut cluster = Cluster::start_with(3, 0, 5000, true, &[]);
    let mut cc = cluster.cluster_con();
    for i in 0..3 {
        let e = write(&mut cc, &format!("loc{i}"), "a", "1").unwrap_err();
        assert!(e.starts_with("ERR") && e.contains("local://"), "{e}");
    }
    for i in 0..3 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut cluster.con(i))
            .unwrap();
        assert!(keys.is_empty(), "nothing indexed: {keys:?}");
    }
    assert!(
        cluster
            .nodes
            .iter()
            .any(|n| n.log().contains("stores objects in local://")),
        "a node logged the wrong deployment"
    );
    cluster.assert_sound();
}

/// Writes sent at once to node `i`, one connection each (Redis runs one
/// blocked command per connection at a time), so a sidecar with a batch
/// window puts them in one segment; returns their uuids in order.
fn concurrent_writes(cluster: &Cluster, i: usize, writes: &[(&str, &str)]) -> Vec<String> {
    let start = Arc::new(std::sync::Barrier::new(writes.len()));
    let threads: Vec<_> = writes
        .iter()
        .map(|(cat, field)| {
            let (cat, field) = (cat.to_string(), field.to_string());
            let (mut c, start) = (cluster.con(i), start.clone());
            std::thread::spawn(move || {
                start.wait();
                write(&mut c, &cat, &field, "1").expect("write").0
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn segment_of(uuid: &str) -> String {
    lake_shared::segment::Locator::from_uuid(uuid)
        .expect("a uuid")
        .expect("a segment record")
        .key()
}

/// Segments shared by live, removed, dropped and (after resharding) another
/// shard's records: GC deletes a segment only when every record in it is
/// dead and every record's catalog is served by the node collecting.
#[test]
fn gc_deletes_a_segment_only_when_no_shard_may_need_it() {
    let mut cluster = Cluster::start_with(3, 0, 500, false, &["--batch-window-us", "300000"]);
    // Three catalogs in three different slots, all on node `a`.
    let mut names = Cluster::names_in_slots("seg", 200, 0, 16383).into_iter();
    let a = cluster.owner(catalog_slot("seg-anchor"));
    let mut pick = |taken: &[String]| -> String {
        names
            .find(|c| {
                cluster.owner(catalog_slot(c)) == a
                    && taken.iter().all(|t| catalog_slot(t) != catalog_slot(c))
            })
            .expect("a catalog on node a")
    };
    let x = pick(&[]);
    let y = pick(std::slice::from_ref(&x));
    let z = pick(&[x.clone(), y.clone()]);
    let mut ca = cluster.con(a);
    // s1 = {x (dropped later), y (moves to node b)}; s2 = {x, z live};
    // s3 = {x, z removed later}.
    let s1 = concurrent_writes(&cluster, a, &[(&x, "a"), (&y, "a")]);
    let s2 = concurrent_writes(&cluster, a, &[(&x, "b"), (&z, "a")]);
    let s3 = concurrent_writes(&cluster, a, &[(&x, "c"), (&z, "bad")]);
    for s in [&s1, &s2, &s3] {
        assert_eq!(segment_of(&s[0]), segment_of(&s[1]), "batched together");
    }
    let (seg1, seg2, seg3) = (segment_of(&s1[0]), segment_of(&s2[0]), segment_of(&s3[0]));

    let b = (0..3).find(|&i| i != a).unwrap();
    cluster.move_slot(catalog_slot(&y), a, b);
    let dropped: i64 = redis::cmd("LAKE.DROP").arg(&x).query(&mut ca).unwrap();
    assert_eq!(dropped, 3);
    let removed: i64 = redis::cmd("LAKE.REMOVE")
        .arg(&z)
        .arg(&s3[1])
        .query(&mut ca)
        .unwrap();
    assert_eq!(removed, 1);

    let primaries = cluster.primaries();
    let gc_everywhere = |cluster: &mut Cluster| {
        for &p in &primaries {
            let mut con = cluster.con(p);
            wait_for(
                "segments older than the grace",
                Duration::from_secs(30),
                || gc(&mut con, &["DRYRUN", "GRACE", "0"])[2] == 0,
            );
        }
        for &p in &primaries {
            gc(&mut cluster.con(p), &["GRACE", "0"]);
        }
        cluster.objects().into_iter().collect::<HashSet<String>>()
    };
    let objects = gc_everywhere(&mut cluster);
    assert!(!objects.contains(&seg3), "dropped + removed: deleted");
    assert!(objects.contains(&seg2), "holds a live record");
    assert!(
        objects.contains(&seg1),
        "holds a record of a catalog node {a} no longer serves"
    );
    let mut cc = cluster.cluster_con();
    assert_eq!(read_on(&mut cc, &y, &["NOSNAP"]), json!({"a":1}));
    assert_eq!(read_on(&mut cc, &z, &["NOSNAP"]), json!({"a":1}));

    // Both of seg1's records are dead now, but each node sees the other
    // shard's catalog in it: kept (the price of never deleting across shards).
    let dropped: i64 = redis::cmd("LAKE.DROP").arg(&y).query(&mut cc).unwrap();
    assert_eq!(dropped, 1);
    let objects = gc_everywhere(&mut cluster);
    assert!(objects.contains(&seg1));
    assert!(objects.contains(&seg2));
    assert_eq!(read_on(&mut cc, &z, &["NOSNAP"]), json!({"a":1}));
    cluster.assert_sound();
}
