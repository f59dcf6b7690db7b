//! The list-append checker (after Elle): each catalog holds one array,
//! every write appends a value no other write uses, so the final array
//! says which writes took effect and in what order, and every read must be
//! a prefix of it.
//!
//! What it holds Lake to, per catalog (the truth is the final array read
//! through a cold sidecar):
//! - an acknowledged write is in it (one a replica confirmed with `WAIT`,
//!   always; one that was not, unless a fault that may lose it ran);
//! - a write with a definite error is not;
//! - no value is there (or in any read) that no write appended, or twice;
//! - acknowledged writes sit in the order of their stamps;
//! - every read is a prefix of it, and holds every write acknowledged
//!   before the read began (reads are compared by length and a hash of
//!   their values, see [`crate::history::Seen`]);
//! - a read `AT` a stamp is the prefix holding exactly the acknowledged
//!   writes at or below that stamp;
//! - a warm and a cold sidecar read the same; no node crashed.

use std::collections::{BTreeMap, HashMap};

use crate::history::{prefix_hashes, History, Kind, Op, Outcome};

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Anomaly {
    /// An acknowledged write a replica confirmed is not in the final state.
    LostConfirmed,
    /// An acknowledged write is missing and no fault of the run may lose it.
    LostAcked,
    /// A write answered with a definite error is visible.
    FailedVisible,
    /// A read or the final state holds a value no write appended.
    Phantom,
    /// A read or the final state holds a value twice.
    Duplicate,
    /// Acknowledged writes are not in the order of their stamps (or two
    /// share a stamp).
    StampOrder,
    /// A read is not a prefix of the final state.
    NotPrefix,
    /// A read misses a write acknowledged before it began.
    Stale,
    /// A read `AT` a stamp differs from the final state's prefix there.
    AtMismatch,
    /// The final state read through a cold sidecar differs from a warm one.
    ColdDiffers,
    /// A node's log holds a crash report.
    Crash,
}

impl Anomaly {
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::LostConfirmed => "lost-confirmed",
            Anomaly::LostAcked => "lost-acked",
            Anomaly::FailedVisible => "failed-visible",
            Anomaly::Phantom => "phantom",
            Anomaly::Duplicate => "duplicate",
            Anomaly::StampOrder => "stamp-order",
            Anomaly::NotPrefix => "not-prefix",
            Anomaly::Stale => "stale-read",
            Anomaly::AtMismatch => "at-mismatch",
            Anomaly::ColdDiffers => "cold-differs",
            Anomaly::Crash => "crash",
        }
    }
}

/// One anomaly found, with where and an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: Anomaly,
    pub catalog: String,
    pub detail: String,
}

/// The checker's verdict.
#[derive(Debug, Default)]
pub struct Verdict {
    pub anomalies: Vec<Found>,
    /// Acknowledged, unconfirmed writes lost to a fault that may lose them.
    pub allowed_losses: usize,
    /// Reads that were no prefix of the final state, completed just before
    /// a primary was killed: they may have seen writes that died with it.
    pub excused_reads: usize,
}

/// How long before a primary is killed a read may have seen writes its
/// replica never got. Replication is asynchronous but prompt (the write is
/// propagated in the event-loop turn that committed it); two seconds is
/// generous on a loaded machine and still checks every other read.
pub const LOSS_WINDOW_MS: u64 = 2000;

/// The fault that kills a primary (its unconfirmed writes may be lost).
pub const PRIMARY_KILL: &str = "primary-kill";

impl Verdict {
    pub fn by_kind(&self) -> BTreeMap<Anomaly, Vec<&Found>> {
        let mut out: BTreeMap<Anomaly, Vec<&Found>> = BTreeMap::new();
        for f in &self.anomalies {
            out.entry(f.kind).or_default().push(f);
        }
        out
    }
}

pub fn check(h: &History) -> Verdict {
    let mut v = Verdict::default();
    for node in &h.crashed {
        v.anomalies.push(Found {
            kind: Anomaly::Crash,
            catalog: String::new(),
            detail: node.clone(),
        });
    }
    let mut by_cat: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &h.ops {
        by_cat.entry(&op.catalog).or_default().push(op);
    }
    for (cat, fin) in &h.finals {
        let ops = by_cat.remove(cat.as_str()).unwrap_or_default();
        check_catalog(h, cat, &ops, &fin.cold, &mut v);
        if fin.warm != fin.cold {
            v.anomalies.push(Found {
                kind: Anomaly::ColdDiffers,
                catalog: cat.clone(),
                detail: format!(
                    "warm read has {} values, cold {}; first difference at {}",
                    fin.warm.len(),
                    fin.cold.len(),
                    fin.warm
                        .iter()
                        .zip(&fin.cold)
                        .position(|(a, b)| a != b)
                        .unwrap_or(fin.warm.len().min(fin.cold.len()))
                ),
            });
        }
    }
    v
}

/// Whether a primary was killed within [`LOSS_WINDOW_MS`] after `t`.
fn before_a_kill(h: &History, t: u64) -> bool {
    h.faults
        .iter()
        .any(|f| f.kind == PRIMARY_KILL && f.start >= t && f.start - t <= LOSS_WINDOW_MS)
}

/// An acknowledged write that made it into the final state.
struct Acked {
    pos: usize,
    stamp: i64,
    completed: u64,
}

fn check_catalog(h: &History, cat: &str, ops: &[&Op], fin: &[u64], v: &mut Verdict) {
    let mut found = |kind: Anomaly, detail: String| {
        v.anomalies.push(Found {
            kind,
            catalog: cat.to_string(),
            detail,
        })
    };
    let mut appends: HashMap<u64, &Op> = HashMap::new();
    for op in ops {
        if let Kind::Append { value, .. } = op.kind {
            appends.insert(value, op);
        }
    }
    let written = |x: u64| appends.contains_key(&x);
    let mut pos: HashMap<u64, usize> = HashMap::new();
    for (i, x) in fin.iter().enumerate() {
        if pos.contains_key(x) {
            found(Anomaly::Duplicate, format!("final state holds {x} twice"));
        } else {
            pos.insert(*x, i);
        }
        if !written(*x) {
            found(
                Anomaly::Phantom,
                format!("final state holds {x}, never written"),
            );
        }
    }
    // Writes: lost, visible after a definite error; stamps in order.
    let mut acked: Vec<Acked> = Vec::new();
    let mut lost_allowed = 0;
    for op in ops {
        let Kind::Append {
            value,
            stamp,
            confirmed,
        } = op.kind
        else {
            continue;
        };
        match (&op.outcome, pos.get(&value)) {
            (Outcome::Ok, Some(&p)) => acked.push(Acked {
                pos: p,
                stamp: stamp.unwrap_or(i64::MIN),
                completed: op.completed,
            }),
            (Outcome::Ok, None) if confirmed => found(
                Anomaly::LostConfirmed,
                format!(
                    "{value} (stamp {stamp:?}, acked at {} ms, WAIT-confirmed) is gone",
                    op.completed
                ),
            ),
            (Outcome::Ok, None) if h.may_lose_unconfirmed => lost_allowed += 1,
            (Outcome::Ok, None) => found(
                Anomaly::LostAcked,
                format!(
                    "{value} (stamp {stamp:?}, acked at {} ms) is gone",
                    op.completed
                ),
            ),
            (Outcome::Definite(e), Some(_)) => found(
                Anomaly::FailedVisible,
                format!(
                    "{value} got {e} at {} ms yet is in the final state",
                    op.completed
                ),
            ),
            _ => {}
        }
    }
    v.allowed_losses += lost_allowed;
    let mut by_stamp: Vec<&Acked> = acked.iter().collect();
    by_stamp.sort_by_key(|a| (a.stamp, a.pos));
    for w in by_stamp.windows(2) {
        if w[0].stamp == w[1].stamp || w[0].pos > w[1].pos {
            found(
                Anomaly::StampOrder,
                format!(
                    "stamp {} at position {}, stamp {} at position {}",
                    w[0].stamp, w[0].pos, w[1].stamp, w[1].pos
                ),
            );
            break;
        }
    }
    // For staleness: the furthest position of a write acknowledged by a
    // given time; for AT reads: positions by stamp.
    let mut by_time: Vec<(u64, usize)> = acked.iter().map(|a| (a.completed, a.pos)).collect();
    by_time.sort();
    let mut furthest = Vec::with_capacity(by_time.len());
    let mut m = None;
    for (_, p) in &by_time {
        m = Some(m.map_or(*p, |x: usize| x.max(*p)));
        furthest.push(m.unwrap_or(0));
    }
    let stamps: Vec<(i64, usize)> = by_stamp.iter().map(|a| (a.stamp, a.pos)).collect();
    let prefix = prefix_hashes(fin);
    let mut excused = 0;
    for op in ops {
        let (Kind::Read { at, seen }, Outcome::Ok) = (&op.kind, &op.outcome) else {
            continue;
        };
        if let Some(x) = seen.duplicate {
            found(
                Anomaly::Duplicate,
                format!("a read at {} ms holds {x} twice", op.invoked),
            );
        }
        // A read that is the final array's prefix holds nothing phantom
        // that the final array does not (and that is checked above).
        let k = seen.len;
        if prefix.get(k) != Some(&seen.hash) {
            if h.may_lose_unconfirmed && before_a_kill(h, op.completed) {
                excused += 1;
                continue;
            }
            found(
                Anomaly::NotPrefix,
                format!(
                    "a read{} at {} ms of {k} values is not the final state's first {k} (which holds {})",
                    at.map(|s| format!(" AT {s}")).unwrap_or_default(),
                    op.invoked,
                    fin.len()
                ),
            );
            continue;
        }
        match at {
            None => {
                let i = by_time.partition_point(|(t, _)| *t < op.invoked);
                if i > 0 && furthest[i - 1] >= k {
                    found(
                        Anomaly::Stale,
                        format!(
                            "a read at {} ms holds {k} values; a write acknowledged before it sits at position {}",
                            op.invoked,
                            furthest[i - 1]
                        ),
                    );
                }
            }
            Some(s) => {
                let below = stamps
                    .iter()
                    .filter(|(st, _)| st <= s)
                    .map(|(_, p)| *p)
                    .max();
                let above = stamps
                    .iter()
                    .filter(|(st, _)| st > s)
                    .map(|(_, p)| *p)
                    .min();
                if below.is_some_and(|p| p >= k) || above.is_some_and(|p| p < k) {
                    found(
                        Anomaly::AtMismatch,
                        format!(
                            "a read AT {s} at {} ms holds {k} values; acknowledged writes at or below it reach position {below:?}, above it start at {above:?}",
                            op.invoked
                        ),
                    );
                }
            }
        }
    }
    v.excused_reads += excused;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Fault, Final, Kind, Op, Outcome, Seen};

    fn append(value: u64, stamp: i64, t: (u64, u64), outcome: Outcome, confirmed: bool) -> Op {
        Op {
            client: 0,
            catalog: "c".into(),
            kind: Kind::Append {
                value,
                stamp: (outcome == Outcome::Ok).then_some(stamp),
                confirmed,
            },
            invoked: t.0,
            completed: t.1,
            outcome,
        }
    }

    fn ok(value: u64, stamp: i64, t: (u64, u64)) -> Op {
        append(value, stamp, t, Outcome::Ok, true)
    }

    fn read(values: &[u64], at: Option<i64>, t: (u64, u64)) -> Op {
        Op {
            client: 1,
            catalog: "c".into(),
            kind: Kind::Read {
                at,
                seen: Seen::of(values),
            },
            invoked: t.0,
            completed: t.1,
            outcome: Outcome::Ok,
        }
    }

    fn history(ops: Vec<Op>, fin: &[u64]) -> History {
        let mut h = History {
            ops,
            ..History::default()
        };
        h.finals.insert(
            "c".into(),
            Final {
                warm: fin.to_vec(),
                cold: fin.to_vec(),
            },
        );
        h
    }

    fn kinds(h: &History) -> Vec<Anomaly> {
        let mut k: Vec<Anomaly> = check(h).anomalies.iter().map(|f| f.kind).collect();
        k.sort();
        k.dedup();
        k
    }

    fn good() -> Vec<Op> {
        vec![
            ok(1, 10, (0, 5)),
            ok(2, 20, (6, 9)),
            read(&[1], None, (5, 7)),
            ok(3, 30, (10, 12)),
            read(&[1, 2, 3], None, (13, 14)),
            read(&[1, 2], Some(20), (15, 16)),
            append(4, 0, (17, 18), Outcome::Definite("TIMEOUT".into()), false),
            append(5, 0, (17, 18), Outcome::Unknown("io".into()), false),
        ]
    }

    #[test]
    fn a_good_history_has_no_anomaly() {
        assert_eq!(kinds(&history(good(), &[1, 2, 3, 5])), vec![]);
        assert_eq!(kinds(&history(good(), &[1, 2, 3])), vec![]);
    }

    #[test]
    fn a_lost_confirmed_write() {
        assert_eq!(
            kinds(&history(good(), &[1, 3])),
            vec![Anomaly::LostConfirmed, Anomaly::NotPrefix]
        );
    }

    #[test]
    fn a_lost_unconfirmed_write_is_allowed_only_after_a_fault_that_may_lose_it() {
        let mut ops = good();
        ops[1] = append(2, 20, (6, 9), Outcome::Ok, false);
        ops.retain(|o| !matches!(o.kind, Kind::Read { .. }));
        let mut h = history(ops, &[1, 3]);
        assert_eq!(kinds(&h), vec![Anomaly::LostAcked]);
        h.may_lose_unconfirmed = true;
        assert_eq!(kinds(&h), vec![]);
        assert_eq!(check(&h).allowed_losses, 1);
    }

    #[test]
    fn a_definite_error_made_visible() {
        assert_eq!(
            kinds(&history(good(), &[1, 2, 3, 4])),
            vec![Anomaly::FailedVisible]
        );
    }

    #[test]
    fn a_value_never_written_and_a_value_twice() {
        assert_eq!(
            kinds(&history(good(), &[1, 2, 3, 99])),
            vec![Anomaly::Phantom]
        );
        assert_eq!(
            kinds(&history(good(), &[1, 2, 3, 3])),
            vec![Anomaly::Duplicate]
        );
        let mut ops = good();
        ops.push(read(&[1, 1], None, (20, 21)));
        assert!(kinds(&history(ops, &[1, 2, 3])).contains(&Anomaly::Duplicate));
    }

    #[test]
    fn acknowledged_writes_out_of_stamp_order() {
        let ops = vec![ok(1, 20, (0, 1)), ok(2, 10, (2, 3))];
        assert_eq!(kinds(&history(ops, &[1, 2])), vec![Anomaly::StampOrder]);
        let ops = vec![ok(1, 10, (0, 1)), ok(2, 10, (2, 3))];
        assert_eq!(kinds(&history(ops, &[1, 2])), vec![Anomaly::StampOrder]);
    }

    #[test]
    fn a_read_that_is_not_a_prefix() {
        let mut ops = good();
        ops.push(read(&[2, 1], None, (20, 21)));
        assert_eq!(kinds(&history(ops, &[1, 2, 3])), vec![Anomaly::NotPrefix]);
    }

    /// A read that saw a write the killed primary never replicated is
    /// excused just before the kill, and only then.
    #[test]
    fn a_read_of_a_write_lost_with_its_primary_is_excused_only_just_before_the_kill() {
        let mut ops = good();
        ops.push(append(6, 40, (30, 31), Outcome::Ok, false));
        ops.push(read(&[1, 2, 3, 6], None, (32, 33)));
        let mut h = history(ops, &[1, 2, 3]);
        h.may_lose_unconfirmed = true;
        h.faults.push(Fault {
            kind: PRIMARY_KILL.into(),
            start: 33 + LOSS_WINDOW_MS + 1,
            end: 40_000,
        });
        assert_eq!(kinds(&h), vec![Anomaly::NotPrefix]);
        h.faults[0].start = 500;
        assert_eq!(kinds(&h), vec![]);
        assert_eq!(check(&h).excused_reads, 1);
        h.may_lose_unconfirmed = false;
        assert_eq!(kinds(&h), vec![Anomaly::LostAcked, Anomaly::NotPrefix]);
    }

    #[test]
    fn an_unreadable_answer_is_no_prefix() {
        let mut ops = good();
        let mut r = read(&[], None, (20, 21));
        r.kind = Kind::Read {
            at: None,
            seen: Seen::UNREADABLE,
        };
        ops.push(r);
        assert_eq!(kinds(&history(ops, &[1, 2, 3])), vec![Anomaly::NotPrefix]);
    }

    #[test]
    fn a_read_missing_a_write_acknowledged_before_it_began() {
        let mut ops = good();
        ops.push(read(&[1, 2], None, (20, 21)));
        assert_eq!(kinds(&history(ops, &[1, 2, 3])), vec![Anomaly::Stale]);
    }

    #[test]
    fn an_at_read_that_differs_from_the_prefix_at_its_stamp() {
        let mut ops = good();
        ops.push(read(&[1], Some(20), (20, 21)));
        ops.push(read(&[1, 2, 3], Some(25), (20, 21)));
        let h = history(ops, &[1, 2, 3]);
        assert_eq!(kinds(&h), vec![Anomaly::AtMismatch]);
        assert_eq!(check(&h).anomalies.len(), 2);
    }

    #[test]
    fn a_cold_sidecar_that_reads_otherwise() {
        let mut h = history(good(), &[1, 2, 3]);
        if let Some(f) = h.finals.get_mut("c") {
            f.warm = vec![1, 2];
        }
        assert_eq!(kinds(&h), vec![Anomaly::ColdDiffers]);
    }

    #[test]
    fn a_crashed_node() {
        let mut h = history(good(), &[1, 2, 3]);
        h.crashed.push("primary".into());
        assert_eq!(kinds(&h), vec![Anomaly::Crash]);
    }
}
