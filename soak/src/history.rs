//! What a soak run records: every operation with its invocation and
//! completion time and outcome, the faults with their windows, and the
//! final state read after everything healed. Plain data, so the checker
//! can be fed hand-made histories.
//!
//! An operation's outcome follows Lake's error contract (docs/commands.md, Errors):
//! an error reply with a definite prefix means the write was not indexed,
//! ever; anything else (a lost connection, `LAKEINTERNAL`, an unknown
//! reply) leaves the outcome unknown, and the client never retries it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    /// An error that, by contract, means nothing was indexed.
    Definite(String),
    /// Unknown: the write may or may not be indexed.
    Unknown(String),
}

/// Error prefixes that mean a write was not indexed (docs/commands.md, Errors).
/// `LOADING`, `MOVED`, `ASK` and `CLUSTERDOWN` are Redis's own refusals
/// before a command runs (a node loading its data; a cluster node that
/// does not serve the slot, or no slot while the cluster is down).
pub const DEFINITE: [&str; 11] = [
    "ERR",
    "LAKEDOWN",
    "TIMEOUT",
    "LAKEBUSY",
    "TRYAGAIN",
    "READONLY",
    "LAKEDATA",
    "LOADING",
    "MOVED",
    "ASK",
    "CLUSTERDOWN",
];

/// The outcome of an error reply or a client error, by its text.
pub fn classify(err: &str) -> Outcome {
    let prefix = err.split_whitespace().next().unwrap_or("");
    if DEFINITE.contains(&prefix) {
        Outcome::Definite(prefix.to_string())
    } else {
        Outcome::Unknown(if prefix.is_empty() {
            "?".into()
        } else {
            prefix.to_string()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Appended `value` to the catalog's `log`; the stamp when acked, and
    /// whether a replica confirmed it (`WAIT 1`).
    Append {
        value: u64,
        stamp: Option<i64>,
        confirmed: bool,
    },
    /// Read the catalog's `log` (at a stamp when given): what it saw.
    Read { at: Option<i64>, seen: Seen },
}

/// A read's array, kept small: its length, a hash of its values in order
/// (compared with the same hash of the final array's prefix), and a value
/// it held twice, if any. A read of thousands of values then costs a few
/// bytes in a run of millions of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub len: usize,
    pub hash: u64,
    pub duplicate: Option<u64>,
}

impl Seen {
    /// An answer that was no array of values: the prefix of nothing.
    pub const UNREADABLE: Seen = Seen {
        len: usize::MAX,
        hash: 0,
        duplicate: None,
    };

    pub fn of(values: &[u64]) -> Seen {
        let mut set = std::collections::HashSet::with_capacity(values.len());
        Seen {
            len: values.len(),
            hash: values.iter().fold(HASH_SEED, |h, v| hash_step(h, *v)),
            duplicate: values.iter().copied().find(|v| !set.insert(*v)),
        }
    }
}

const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// One FNV-1a step over a value's 8 bytes.
fn hash_step(mut h: u64, v: u64) -> u64 {
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `out[k]` is the hash [`Seen::of`] gives the first `k` values.
pub fn prefix_hashes(values: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(values.len() + 1);
    let mut h = HASH_SEED;
    out.push(h);
    for v in values {
        h = hash_step(h, *v);
        out.push(h);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    pub catalog: String,
    pub kind: Kind,
    /// Milliseconds since the run began.
    pub invoked: u64,
    pub completed: u64,
    pub outcome: Outcome,
}

/// A fault's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: String,
    pub start: u64,
    pub end: u64,
}

/// A catalog's `log` after the run, read through the sidecar that served
/// the run and through a cold one (restarted, empty cache).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    pub warm: Vec<u64>,
    pub cold: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    pub finals: BTreeMap<String, Final>,
    /// Nodes whose log holds a crash report.
    pub crashed: Vec<String>,
    /// A fault ran that may lose writes no replica confirmed (a primary
    /// killed): losing those is allowed, losing a confirmed one never is.
    pub may_lose_unconfirmed: bool,
}
