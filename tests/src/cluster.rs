//! A real Redis Cluster for the end-to-end suite: N `redis-server` nodes in
//! cluster mode, each with the module and its own sidecar, all sidecars on
//! one shared `lake-s3-test-server` bucket (the supported topology). Every
//! process is killed when the `Cluster` is dropped, also when a test panics.
//!
//! Node ports stay at or below 55535 (the cluster bus listens on port +
//! 10000) and are handed out once per test process, so tests running in
//! parallel threads never share one.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use lake_shared::cluster::{catalog_slot, key_slot, Myself};

use crate::{log_to, s3_client, s3_list, s3_test_server, sidecar, target_dir, wait_for};

/// A port `p` with `p` and `p + 10000` free, never handed out twice in this
/// process. Both lie below 32768, outside the kernel's ephemeral range, so
/// no client connection's local port can take a node's bus port meanwhile.
pub fn cluster_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let start = (std::process::id() % 100) as u16 * 100;
    loop {
        let p = 12000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10000;
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.contains(&p) && free(p) && free(p + 10000) {
            taken.push(p);
            return p;
        }
    }
}

/// One Redis node with its sidecar.
pub struct Node {
    pub port: u16,
    dir: PathBuf,
    redis: Option<Child>,
    sidecar: Option<Child>,
}

/// How every node of a cluster is started (kept to restart one).
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The module's `timeout-ms`.
    pub timeout_ms: u64,
    /// Each sidecar on its own `local://` directory (a wrong deployment)
    /// instead of the shared bucket.
    pub local: bool,
    pub sidecar_args: Vec<String>,
    /// More module arguments (`snapshot-every 16`).
    pub module_args: Vec<String>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.redis
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A running cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    s3: Option<Child>,
    pub s3_port: u16,
    spec: Spec,
    rt: tokio::runtime::Runtime,
    s3_client: aws_sdk_s3::Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        self.stop_store();
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("--- last lines of node {} ---", n.port);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Cluster {
    /// `primaries` primaries with `replicas` replicas each, formed with
    /// `redis-cli --cluster create`, every node answering `cluster_state:ok`.
    pub fn start(primaries: usize, replicas: usize, timeout_ms: u64) -> Cluster {
        Cluster::start_with(primaries, replicas, timeout_ms, false, &[])
    }

    /// Like [`Cluster::start`], every sidecar with `sidecar_args`; with
    /// `local`, each sidecar on its own `local://` directory instead (a wrong
    /// deployment).
    pub fn start_with(
        primaries: usize,
        replicas: usize,
        timeout_ms: u64,
        local: bool,
        sidecar_args: &[&str],
    ) -> Cluster {
        Cluster::start_spec(
            primaries,
            replicas,
            Spec {
                timeout_ms,
                local,
                sidecar_args: sidecar_args.iter().map(|a| a.to_string()).collect(),
                module_args: Vec::new(),
            },
        )
    }

    /// `primaries` primaries with `replicas` replicas each, every node
    /// started as `spec` says.
    pub fn start_spec(primaries: usize, replicas: usize, spec: Spec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("lake-cluster-")
            .tempdir()
            .expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let s3_port = crate::free_port();
        let mut c = Cluster {
            nodes: Vec::new(),
            s3: None,
            s3_port,
            spec,
            rt,
            s3_client: s3_client(s3_port),
            dir,
        };
        c.start_store();
        for i in 0..primaries * (1 + replicas) {
            let port = cluster_port();
            let ndir = c.dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&ndir).expect("node dir");
            c.nodes.push(Node {
                port,
                dir: ndir,
                redis: None,
                sidecar: None,
            });
            c.start_node(i);
        }
        let addrs: Vec<String> = c
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok();
        c
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on
    /// who serves every slot.
    pub fn wait_ok(&mut self) {
        let urls: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.alive().then(|| n.url()))
            .collect();
        wait_for(
            "cluster_state:ok everywhere",
            Duration::from_secs(60),
            || {
                urls.iter().all(|u| {
                    let Ok(mut con) =
                        redis::Client::open(u.as_str()).and_then(|cl| cl.get_connection())
                    else {
                        return false;
                    };
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut con)
                        .unwrap_or_default();
                    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query(&mut con)
                        .unwrap_or_default();
                    info.contains("cluster_state:ok") && slots.len() >= 3.min(urls.len())
                })
            },
        );
    }

    /// Starts the shared S3 server (again, on its port and data after a
    /// stop).
    pub fn start_store(&mut self) {
        assert!(self.s3.is_none(), "store already running");
        let log = self.dir.path().join("s3.log");
        self.s3 = Some(
            s3_test_server(&self.dir.path().join("s3root"), self.s3_port)
                .stdout(log_to(&log))
                .stderr(log_to(&log))
                .spawn()
                .expect("spawn lake-s3-test-server"),
        );
        let port = self.s3_port;
        wait_for("the S3 server", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills the shared S3 server.
    pub fn stop_store(&mut self) {
        if let Some(mut c) = self.s3.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to the shared S3 server.
    pub fn signal_store(&self, sig: &str) {
        let pid = self.s3.as_ref().expect("store running").id();
        signal(pid, sig);
    }

    /// Starts node `i`'s sidecar and waits until its socket answers.
    pub fn start_sidecar(&mut self, i: usize) {
        let n = &self.nodes[i];
        assert!(n.sidecar.is_none(), "sidecar {i} already running");
        let socket = n.dir.join("lake.sock");
        let store = if self.spec.local {
            format!("local://{}", n.dir.join("objects").display())
        } else {
            self.store_url()
        };
        let log = n.dir.join("sidecar.log");
        let side = sidecar(&socket, &store, Some(self.s3_port))
            .args(&self.spec.sidecar_args)
            .stdout(log_to(&log))
            .stderr(log_to(&log))
            .spawn()
            .expect("spawn lake-sidecar");
        self.nodes[i].sidecar = Some(side);
        wait_for("a sidecar socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    /// SIGKILLs node `i`'s sidecar.
    pub fn kill_sidecar(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].sidecar.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` (its sidecar, then Redis with the module; a node
    /// started again keeps its `nodes.conf`, so it rejoins the cluster) and
    /// waits until it answers `PING`.
    pub fn start_node(&mut self, i: usize) {
        if self.nodes[i].sidecar.is_none() {
            self.start_sidecar(i);
        }
        let n = &mut self.nodes[i];
        assert!(n.redis.is_none(), "node {i} already running");
        let log = n.dir.join("redis.log");
        let redis = Command::new("redis-server")
            .args(["--port", &n.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "3000"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&n.dir)
            .arg("--loadmodule")
            .arg(target_dir().join("liblake.so"))
            .arg("socket")
            .arg(n.dir.join("lake.sock"))
            .args(["timeout-ms", &self.spec.timeout_ms.to_string()])
            .args(&self.spec.module_args)
            .stdout(log_to(&log))
            .stderr(log_to(&log))
            .spawn()
            .expect("spawn redis-server");
        n.redis = Some(redis);
        let url = n.url();
        wait_for("a node to answer PING", Duration::from_secs(20), || {
            redis::Client::open(url.as_str())
                .and_then(|cl| cl.get_connection())
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con))
                .is_ok()
        });
    }

    pub fn con(&self, i: usize) -> redis::Connection {
        let con = redis::Client::open(self.nodes[i].url())
            .and_then(|c| c.get_connection())
            .expect("connect to a node");
        con.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        con
    }

    /// A cluster-aware connection (routes by the first argument, follows
    /// MOVED/ASK, retries TRYAGAIN).
    pub fn cluster_con(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(Node::url).collect();
        redis::cluster::ClusterClientBuilder::new(urls)
            .retries(30)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .response_timeout(Duration::from_secs(30))
            .build()
            .and_then(|c| c.get_connection())
            .expect("cluster connection")
    }

    /// MIGRATEs every key of `slot` from `src` to `dst` (as `redis-cli
    /// --cluster reshard` does); returns the keys moved.
    pub fn migrate_keys(&self, slot: u16, src: usize, dst: usize) -> Vec<String> {
        let mut a = self.con(src);
        let mut moved = Vec::new();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut a)
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                return moved;
            }
            let ok: String = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[dst].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut a)
                .expect("MIGRATE");
            assert_eq!(ok, "OK");
            moved.extend(keys);
        }
    }

    /// Moves one slot from `src` to `dst` the way `redis-cli --cluster
    /// reshard` does: IMPORTING, MIGRATING, MIGRATE of its keys, NODE on
    /// every primary (replicas refuse SETSLOT and learn it by gossip).
    pub fn move_slot(&mut self, slot: u16, src: usize, dst: usize) {
        let (src_id, dst_id) = (self.node_id(src), self.node_id(dst));
        setslot(&mut self.con(dst), slot, "IMPORTING", &src_id);
        setslot(&mut self.con(src), slot, "MIGRATING", &dst_id);
        self.migrate_keys(slot, src, dst);
        for i in self.primaries() {
            setslot(&mut self.con(i), slot, "NODE", &dst_id);
        }
        self.wait_ok();
    }

    /// SIGKILLs node `i`'s Redis and sidecar.
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        for c in [n.redis.take(), n.sidecar.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// This node's own `CLUSTER NODES` line.
    pub fn myself(&self, i: usize) -> Myself {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.con(i))
            .expect("CLUSTER NODES");
        Myself::parse(&text).expect("own line")
    }

    pub fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.con(i))
            .expect("CLUSTER MYID")
    }

    /// Indexes of the live nodes that are primaries now.
    pub fn primaries(&mut self) -> Vec<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive())
            .collect();
        live.into_iter()
            .filter(|&i| self.myself(i).primary)
            .collect()
    }

    /// A live node replicating primary `p`.
    pub fn replica_of(&mut self, p: usize) -> Option<usize> {
        let id = self.node_id(p);
        (0..self.nodes.len()).find(|&i| {
            i != p
                && self.nodes[i].alive()
                && redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut self.con(i))
                    .is_ok_and(|text| {
                        text.lines().any(|l| {
                            let f: Vec<&str> = l.split(' ').collect();
                            f.len() > 3 && f[2].contains("myself") && f[3] == id
                        })
                    })
        })
    }

    /// `CLUSTER FAILOVER` on replica `r` until it is a primary (a manual
    /// failover gives up when the replica cannot catch up in time, as on a
    /// loaded machine; asked again then, not sooner, since asking restarts
    /// it). Nothing acknowledged is lost.
    pub fn fail_over_to(&mut self, r: usize) {
        let mut asked = std::time::Instant::now() - Duration::from_secs(60);
        wait_for("CLUSTER FAILOVER", Duration::from_secs(120), || {
            if self.myself(r).primary {
                return true;
            }
            if asked.elapsed() > Duration::from_secs(10) {
                let _ = redis::cmd("CLUSTER")
                    .arg("FAILOVER")
                    .query::<redis::Value>(&mut self.con(r));
                asked = std::time::Instant::now();
            }
            false
        });
    }

    /// Sends a signal (`STOP`, `CONT`) to node `i`'s sidecar.
    pub fn signal_sidecar(&self, i: usize, sig: &str) {
        let pid = self.nodes[i]
            .sidecar
            .as_ref()
            .expect("sidecar running")
            .id();
        signal(pid, sig);
    }

    /// The live primary serving `slot`.
    pub fn owner(&mut self, slot: u16) -> usize {
        self.primaries()
            .into_iter()
            .find(|&i| self.myself(i).owned.contains(slot))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The shared store's URL.
    pub fn store_url(&self) -> String {
        format!("s3://{}/{}", crate::BUCKET, crate::PREFIX)
    }

    /// Waits until every primary's journal streams are empty.
    pub fn wait_shipped(&mut self) {
        for p in self.primaries() {
            crate::wait_shipped(&self.nodes[p].url());
        }
    }

    /// Every object key in the shared store but the journal's batches.
    pub fn objects(&self) -> Vec<String> {
        s3_list(&self.rt, &self.s3_client)
            .into_iter()
            .filter(|k| !lake_shared::journal::is_batch(k))
            .collect()
    }

    /// `n` catalog names `<prefix>-<i>` whose slots are in `lo..=hi`.
    pub fn names_in_slots(prefix: &str, n: usize, lo: u16, hi: u16) -> Vec<String> {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .filter(|c| (lo..=hi).contains(&catalog_slot(c)))
            .take(n)
            .collect()
    }

    /// The checks every cluster test ends with: no live node logged an
    /// assertion or a crash report, and on every live primary each key
    /// lives in a slot that primary owns.
    pub fn assert_sound(&mut self) {
        for n in &mut self.nodes {
            let log = n.log();
            assert!(
                !log.contains("ASSERTION FAILED") && !log.contains("BUG REPORT"),
                "node {} crashed:\n{log}",
                n.port
            );
        }
        for i in self.primaries() {
            let me = self.myself(i);
            let keys: HashSet<String> = redis::cmd("KEYS")
                .arg("*")
                .query(&mut self.con(i))
                .expect("KEYS");
            for k in keys {
                let slot = key_slot(k.as_bytes());
                assert!(
                    me.owned.contains(slot),
                    "node {} holds {k} in slot {slot}, which it does not own",
                    self.nodes[i].port
                );
            }
        }
    }

    /// Node `i`'s log has no crash and its process is alive.
    pub fn assert_alive(&mut self, i: usize) {
        let log = self.nodes[i].log();
        assert!(
            !log.contains("ASSERTION FAILED") && !log.contains("BUG REPORT"),
            "node {} crashed:\n{log}",
            self.nodes[i].port
        );
        assert!(self.nodes[i].alive(), "node {} died", self.nodes[i].port);
    }
}

/// `kill -<sig> <pid>`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} failed");
}

/// `CLUSTER SETSLOT <slot> <how> <id>` on `con`.
pub fn setslot(con: &mut redis::Connection, slot: u16, how: &str, id: &str) {
    let _: String = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(how)
        .arg(id)
        .query(con)
        .expect("SETSLOT");
}
