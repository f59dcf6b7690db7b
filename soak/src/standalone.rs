//! The standalone topology: one primary (AOF, `appendfsync always`) with a
//! replica, the module, one sidecar and the S3 test server. Nothing this
//! topology does may lose an acknowledged write: failovers are coordinated
//! and Redis restarts from an AOF fsynced before every reply.

use std::time::{Duration, Instant};

use lake_tests::{redis, Lake, Options, Replica, StoreKind};
use rand::rngs::StdRng;
use rand::Rng;

use crate::client::connect;
use crate::{Topology, TIMEOUT_MS};

/// Every fault this topology can inject.
pub const FAULTS: [&str; 9] = [
    "sidecar-kill",
    "sidecar-stop",
    "store-stop",
    "store-freeze",
    "client-pause",
    "compact",
    "gc",
    "redis-restart",
    "failover",
];

pub struct Standalone {
    lake: Lake,
    replica: Replica,
}

impl Standalone {
    pub fn start() -> Standalone {
        let lake = Lake::with(Options {
            store: StoreKind::S3,
            timeout_ms: TIMEOUT_MS,
            snapshot_every: 16,
            redis_args: ["--appendonly", "yes", "--appendfsync", "always"]
                .map(String::from)
                .to_vec(),
            ..Options::default()
        });
        let (replica, _) = lake.start_replica();
        Standalone { lake, replica }
    }
}

impl Topology for Standalone {
    fn seeds(&self) -> Vec<String> {
        vec![self.lake.url()]
    }

    fn cluster(&self) -> bool {
        false
    }

    fn inject(&mut self, kind: &str, hold: Duration, cats: &[String], rng: &mut StdRng) {
        let lake = &mut self.lake;
        let mut con = lake.con();
        match kind {
            "sidecar-kill" => {
                lake.kill_sidecar();
                std::thread::sleep(hold);
                lake.start_sidecar();
            }
            "sidecar-stop" => {
                lake.signal_sidecar("STOP");
                std::thread::sleep(hold.max(Duration::from_millis(TIMEOUT_MS + 500)));
                lake.signal_sidecar("CONT");
            }
            "store-stop" => {
                lake.stop_store();
                std::thread::sleep(hold);
                lake.start_store();
            }
            "store-freeze" => {
                lake.signal_store("STOP");
                std::thread::sleep(hold);
                lake.signal_store("CONT");
            }
            "failover" => {
                // Coordinated: the primary hands over to its replica once
                // it caught up (nothing acknowledged may be lost), then back.
                drop(con);
                let replica = self.replica.url();
                failover(&lake.url(), &replica);
                std::thread::sleep(hold);
                failover(&replica, &lake.url());
            }
            "client-pause" => {
                let _ = redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(hold.as_millis() as u64)
                    .arg("WRITE")
                    .query::<redis::Value>(&mut con);
                std::thread::sleep(hold);
            }
            "compact" => {
                let cat = &cats[rng.random_range(0..cats.len())];
                crate::compact(&mut con, cat);
            }
            "gc" => crate::gc(&mut con),
            "redis-restart" => {
                drop(con);
                lake.restart_redis();
            }
            other => unreachable!("fault {other} is not one of this topology's"),
        }
    }

    fn restart_sidecars(&mut self) {
        self.lake.kill_sidecar();
        self.lake.start_sidecar();
    }

    fn crashed(&mut self) -> Vec<String> {
        [
            ("primary", self.lake.redis_log()),
            ("replica", self.replica.log()),
        ]
        .into_iter()
        .filter(|(_, log)| crate::crash_marks(log))
        .map(|(who, _)| who.to_string())
        .collect()
    }

    fn heal(&mut self) {}
}

/// `FAILOVER` from the primary at `from` to its replica at `to`, asked
/// again until `to` is a primary (a failover gives up when the replica
/// lags).
fn failover(from: &str, to: &str) {
    let role = |url: &str| -> String {
        connect(url)
            .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c).ok())
            .and_then(|v| match v.first() {
                Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let port = to.rsplit(':').next().unwrap_or("").trim_end_matches('/');
    let deadline = Instant::now() + Duration::from_secs(60);
    while role(to) != "master" {
        assert!(Instant::now() < deadline, "FAILOVER to {to} never happened");
        if let Some(mut c) = connect(from) {
            let _ = redis::cmd("FAILOVER")
                .arg("TO")
                .arg("127.0.0.1")
                .arg(port)
                .arg("TIMEOUT")
                .arg(5000)
                .query::<redis::Value>(&mut c);
        }
        let asked = Instant::now();
        while role(to) != "master" && asked.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The old primary follows the new one once it has synced.
    while role(from) != "slave" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}
