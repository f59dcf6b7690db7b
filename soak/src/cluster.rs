//! The cluster topology: a 3+3 Redis Cluster, the module and a sidecar on
//! every node, all sidecars on one shared S3 test server bucket. Clients
//! route by their own slot map and send `WAIT` to the node that took the
//! write. A killed primary may take writes its replica never got: only
//! the ones `WAIT` confirmed must survive it.

use std::time::Duration;

use lake_shared::cluster::catalog_slot;
use lake_soak::checker::PRIMARY_KILL;
use lake_tests::cluster::{Cluster, Spec};
use lake_tests::{redis, wait_for};
use rand::rngs::StdRng;
use rand::Rng;

use crate::{Topology, TIMEOUT_MS};

/// Every fault this topology can inject.
pub const FAULTS: [&str; 10] = [
    "sidecar-kill",
    "sidecar-stop",
    "store-stop",
    "store-freeze",
    "client-pause",
    "compact",
    "gc",
    "failover",
    PRIMARY_KILL,
    "migrate",
];

pub struct ClusterTopology {
    c: Cluster,
}

impl ClusterTopology {
    pub fn start() -> ClusterTopology {
        let c = Cluster::start_spec(
            3,
            1,
            Spec {
                timeout_ms: TIMEOUT_MS,
                module_args: vec!["snapshot-every".into(), "16".into()],
                ..Spec::default()
            },
        );
        ClusterTopology { c }
    }

    fn random_primary(&mut self, rng: &mut StdRng) -> usize {
        let p = self.c.primaries();
        p[rng.random_range(0..p.len())]
    }

    /// Waits until node `i` is a primary.
    fn wait_primary(&mut self, i: usize) {
        let c = &mut self.c;
        wait_for("a replica to take over", Duration::from_secs(60), || {
            c.myself(i).primary
        });
    }
}

impl Topology for ClusterTopology {
    fn seeds(&self) -> Vec<String> {
        self.c.nodes.iter().map(|n| n.url()).collect()
    }

    fn cluster(&self) -> bool {
        true
    }

    fn inject(&mut self, kind: &str, hold: Duration, cats: &[String], rng: &mut StdRng) {
        match kind {
            "sidecar-kill" => {
                let p = self.random_primary(rng);
                self.c.kill_sidecar(p);
                std::thread::sleep(hold);
                self.c.start_sidecar(p);
            }
            "sidecar-stop" => {
                let p = self.random_primary(rng);
                self.c.signal_sidecar(p, "STOP");
                std::thread::sleep(hold.max(Duration::from_millis(TIMEOUT_MS + 500)));
                self.c.signal_sidecar(p, "CONT");
            }
            "store-stop" => {
                self.c.stop_store();
                std::thread::sleep(hold);
                self.c.start_store();
            }
            "store-freeze" => {
                self.c.signal_store("STOP");
                std::thread::sleep(hold);
                self.c.signal_store("CONT");
            }
            "client-pause" => {
                let p = self.random_primary(rng);
                let _ = redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(hold.as_millis() as u64)
                    .arg("WRITE")
                    .query::<redis::Value>(&mut self.c.con(p));
                std::thread::sleep(hold);
            }
            "compact" => {
                let cat = &cats[rng.random_range(0..cats.len())];
                let owner = self.c.owner(catalog_slot(cat));
                crate::compact(&mut self.c.con(owner), cat);
            }
            "gc" => {
                for p in self.c.primaries() {
                    crate::gc(&mut self.c.con(p));
                }
            }
            "failover" => {
                // Coordinated (`CLUSTER FAILOVER` on the replica): nothing
                // acknowledged may be lost.
                let p = self.random_primary(rng);
                let r = self.c.replica_of(p).expect("every primary has a replica");
                self.c.fail_over_to(r);
                std::thread::sleep(hold);
                self.c.wait_ok();
            }
            PRIMARY_KILL => {
                // SIGKILL (Redis and sidecar); the replica is promoted by
                // failure detection; the node comes back as its replica.
                let p = self.random_primary(rng);
                let r = self.c.replica_of(p).expect("every primary has a replica");
                self.c.kill(p);
                self.wait_primary(r);
                std::thread::sleep(hold);
                self.c.start_node(p);
                let c = &mut self.c;
                wait_for(
                    "the killed primary back as a replica",
                    Duration::from_secs(120),
                    || {
                        !c.myself(p).primary
                            && redis::cmd("INFO")
                                .arg("replication")
                                .query::<String>(&mut c.con(p))
                                .is_ok_and(|i| i.contains("master_link_status:up"))
                    },
                );
                self.c.wait_ok();
            }
            "migrate" => {
                let cat = &cats[rng.random_range(0..cats.len())];
                let slot = catalog_slot(cat);
                let src = self.c.owner(slot);
                let others: Vec<usize> = self
                    .c
                    .primaries()
                    .into_iter()
                    .filter(|&p| p != src)
                    .collect();
                let dst = others[rng.random_range(0..others.len())];
                self.c.move_slot(slot, src, dst);
            }
            other => unreachable!("fault {other} is not one of this topology's"),
        }
    }

    fn heal(&mut self) {
        self.c.wait_ok();
    }

    fn restart_sidecars(&mut self) {
        for i in 0..self.c.nodes.len() {
            self.c.kill_sidecar(i);
            self.c.start_sidecar(i);
        }
    }

    fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &mut self.c.nodes {
            if crate::crash_marks(&n.log()) {
                out.push(format!("node {} (crash report in its log)", n.port));
            } else if !n.alive() {
                out.push(format!("node {} (not running)", n.port));
            }
        }
        out
    }
}
