//! The index journal: every change Lake makes to a catalog's index, in the
//! catalog's own order, so the object store alone can bring the index back.
//!
//! Where it lives:
//! - In Redis, `catalog:{<name>}:journal` is a stream the module appends to
//!   (`XADD`, replicated) in the same main-thread step as the index change
//!   itself. It shares the catalog's hash tag, so it replicates, persists
//!   and migrates with the index it describes: a new primary or a slot's
//!   new owner finds exactly the changes its index holds, still unshipped.
//! - In the store, under [`FOLDER`] (a folder no catalog can name: it starts
//!   with `.`), each object is one [`Batch`] of entries of many catalogs,
//!   shipped about once a second; once stored, the module trims what it
//!   shipped from the streams.
//!
//! Rules that make a restore exact:
//! - An entry is identified by its catalog and stream id (`<ms>-<seq>`,
//!   strictly increasing per stream, carried across failover and
//!   migration). The same entry shipped twice (a trim lost in a failover)
//!   is applied once; entries apply in id order per catalog ([`fold`]).
//! - Adds are keyed by member (uuids are never reused), so replaying an
//!   add or a removal again changes nothing; a `drop` clears what came
//!   before it in the catalog's order.
//! - A point in time is a stream id's milliseconds: `fold(.., Some(t))`
//!   keeps the entries at or before `t`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{catalog, member};

/// The store folder of shipped batches.
pub const FOLDER: &str = ".lake-journal";
/// The stream field an entry's change is stored under.
pub const FIELD: &str = "c";
/// Batch format version.
pub const BATCH_VERSION: u8 = 1;

/// One change to a catalog's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum Change {
    /// A delta was indexed: `member` (`<field>:<uuid>`) at `stamp`.
    Delta { member: String, stamp: i64 },
    /// A snapshot was indexed, covering deltas up to `covers`.
    Snap { uuid: String, covers: i64 },
    /// `LAKE.REMOVE` took a delta out of the index.
    Remove { member: String },
    /// `LAKE.DROP`: the catalog's index is gone.
    Drop,
    /// Compaction moved the floor: deltas at or below it and snapshots
    /// below it left the index.
    Floor { floor: i64 },
    /// The catalog's own retention (`None`: back to the module default).
    Retention { secs: Option<u64> },
}

impl Change {
    /// Parses a change as the module's shipper reads it from a stream, on
    /// Redis's main thread: the entries Lake writes go through one flat
    /// struct (the derived parser of a tagged enum buffers every field
    /// first, about three times slower); anything else falls back to the
    /// derived parser, so exactly what it accepts is accepted.
    pub fn parse(text: &[u8]) -> Result<Change, serde_json::Error> {
        /// Every variant's fields side by side: when this parses and names
        /// a known kind with its fields, the tagged enum reads the same.
        #[derive(Deserialize)]
        struct Flat {
            k: String,
            member: Option<String>,
            stamp: Option<i64>,
            uuid: Option<String>,
            covers: Option<i64>,
            floor: Option<i64>,
            secs: Option<u64>,
        }
        let fast = serde_json::from_slice::<Flat>(text).ok().and_then(|f| {
            Some(match f.k.as_str() {
                "delta" => Change::Delta {
                    member: f.member?,
                    stamp: f.stamp?,
                },
                "snap" => Change::Snap {
                    uuid: f.uuid?,
                    covers: f.covers?,
                },
                "remove" => Change::Remove { member: f.member? },
                "drop" => Change::Drop,
                "floor" => Change::Floor { floor: f.floor? },
                "retention" => Change::Retention { secs: f.secs },
                _ => return None,
            })
        });
        match fast {
            Some(c) => Ok(c),
            None => serde_json::from_slice(text),
        }
    }
}

/// One shipped entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub catalog: String,
    /// The stream id, `<ms>-<seq>`.
    pub id: String,
    pub change: Change,
}

/// One shipped object.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub v: u8,
    pub entries: Vec<Entry>,
}

/// The key of a batch shipped at `now_ms` (sorts by time; `tag` makes it
/// unique among shippers).
pub fn object_key(now_ms: u64, tag: &str) -> String {
    format!("{FOLDER}/{now_ms:013}-{tag}.json")
}

/// Whether `key` is a shipped batch.
pub fn is_batch(key: &str) -> bool {
    key.strip_prefix(FOLDER)
        .and_then(|k| k.strip_prefix('/'))
        .is_some_and(|k| k.ends_with(".json") && !k.contains('/'))
}

/// A stream id as `(ms, seq)`.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One catalog's index as the journal says it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogState {
    /// Delta members and their stamps.
    pub deltas: BTreeMap<String, i64>,
    /// Snapshot uuids and the stamps they cover.
    pub snaps: BTreeMap<String, i64>,
    #[serde(default)]
    pub floor: Option<i64>,
    #[serde(default)]
    pub retention: Option<u64>,
    /// The newest entry applied, `(ms, seq)`.
    pub last_id: (u64, u64),
}

impl CatalogState {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.snaps.is_empty()
    }

    /// The newest delta stamp.
    pub fn newest_stamp(&self) -> Option<i64> {
        self.deltas.values().copied().max()
    }

    /// The object keys this state references (deltas, then snapshots).
    pub fn objects(&self, cat: &str) -> Vec<String> {
        let deltas = self
            .deltas
            .keys()
            .filter_map(|m| member::decode(m).ok())
            .map(|(_, u)| catalog::delta_object(cat, u));
        let snaps = self.snaps.keys().map(|u| catalog::snapshot_object(cat, u));
        deltas.chain(snaps).collect()
    }

    fn apply(&mut self, change: &Change, at_ms: u64, left: &mut dyn FnMut(String, u64)) {
        match change {
            Change::Delta { member, stamp } => {
                self.deltas.insert(member.clone(), *stamp);
            }
            Change::Snap { uuid, covers } => {
                self.snaps.insert(uuid.clone(), *covers);
            }
            Change::Remove { member } => {
                if self.deltas.remove(member).is_some() {
                    left(member.clone(), at_ms);
                }
            }
            Change::Drop => {
                for m in std::mem::take(&mut self.deltas).into_keys() {
                    left(m, at_ms);
                }
                for u in std::mem::take(&mut self.snaps).into_keys() {
                    left(format!("snap:{u}"), at_ms);
                }
                self.floor = None;
                self.retention = None;
            }
            Change::Floor { floor } => {
                let floor = self.floor.map_or(*floor, |f| f.max(*floor));
                self.floor = Some(floor);
                let gone: Vec<String> = self
                    .deltas
                    .iter()
                    .filter(|(_, s)| **s <= floor)
                    .map(|(m, _)| m.clone())
                    .collect();
                for m in gone {
                    self.deltas.remove(&m);
                    left(m, at_ms);
                }
                let gone: Vec<String> = self
                    .snaps
                    .iter()
                    .filter(|(_, c)| **c < floor)
                    .map(|(u, _)| u.clone())
                    .collect();
                for u in gone {
                    self.snaps.remove(&u);
                    left(format!("snap:{u}"), at_ms);
                }
            }
            Change::Retention { secs } => self.retention = *secs,
        }
    }
}

/// Every catalog's index at one point, and what left it on the way.
#[derive(Debug, Default)]
pub struct State {
    pub catalogs: BTreeMap<String, CatalogState>,
    /// Object keys that left an index (removed, dropped, compacted), with
    /// the latest time (ms) one did: a restore to a point before that time
    /// references them.
    pub left: HashMap<String, u64>,
    /// Entries applied (duplicates not counted).
    pub applied: u64,
    /// Entries seen more than once (shipped again after a failover).
    pub duplicates: u64,
    /// Entries ignored: not of Lake's shapes (see [`fold_onto`]).
    pub malformed: u64,
}

impl State {
    /// Catalogs whose index is not empty.
    pub fn live(&self) -> impl Iterator<Item = (&String, &CatalogState)> {
        self.catalogs.iter().filter(|(_, s)| !s.is_empty())
    }
}

/// Applies `entries` (any order, duplicates allowed) per catalog in stream
/// id order, up to and including `at_ms` when given. Entries whose id does
/// not parse are ignored (they cannot be placed in order).
pub fn fold(entries: impl IntoIterator<Item = Entry>, at_ms: Option<u64>) -> State {
    fold_onto(State::default(), entries, at_ms)
}

/// [`fold`] starting from `base` (a [`Checkpoint`]'s state): an entry at or
/// below its catalog's last applied id is already in `base` (shipped again
/// after a failover) and is skipped.
pub fn fold_onto(
    mut state: State,
    entries: impl IntoIterator<Item = Entry>,
    at_ms: Option<u64>,
) -> State {
    type Keyed = ((u64, u64), String, Change);
    let mut by_cat: BTreeMap<String, Vec<Keyed>> = BTreeMap::new();
    for e in entries {
        let Some(id) = parse_id(&e.id) else { continue };
        if at_ms.is_some_and(|t| id.0 > t) {
            continue;
        }
        if !well_formed(&e) {
            state.malformed += 1;
            continue;
        }
        if state
            .catalogs
            .get(&e.catalog)
            .is_some_and(|c| id <= c.last_id)
        {
            state.duplicates += 1;
            continue;
        }
        // The text orders two different changes under one id (a write lost
        // in a failover, then its id reused) the same way every time, and
        // puts copies of one change next to each other.
        let text = serde_json::to_string(&e.change).unwrap_or_default();
        by_cat
            .entry(e.catalog)
            .or_default()
            .push((id, text, e.change));
    }
    for (cat, mut changes) in by_cat {
        changes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut cs = state.catalogs.remove(&cat).unwrap_or_default();
        let mut prev: Option<&Keyed> = None;
        let left = &mut state.left;
        let mut note = |m: String, ms: u64| {
            let key = match m.strip_prefix("snap:") {
                Some(u) => catalog::snapshot_object(&cat, u),
                None => match member::decode(&m) {
                    Ok((_, u)) => catalog::delta_object(&cat, u),
                    Err(_) => return,
                },
            };
            let t = left.entry(key).or_insert(ms);
            *t = (*t).max(ms);
        };
        for c in &changes {
            if prev.is_some_and(|p| p.0 == c.0 && p.1 == c.1) {
                state.duplicates += 1;
                continue;
            }
            cs.apply(&c.2, c.0 .0, &mut note);
            cs.last_id = c.0;
            state.applied += 1;
            prev = Some(c);
        }
        state.catalogs.insert(cat, cs);
    }
    state
}

/// Whether an entry names a valid catalog and, for an index entry, a
/// member or uuid of Lake's shapes. The streams are Redis keys anyone with
/// write access can add to: a restore indexes nothing a read could not
/// resolve to an object of that catalog.
fn well_formed(e: &Entry) -> bool {
    let uuid_ok = |u: &str| catalog::validate_uuid(u).is_ok();
    catalog::validate(&e.catalog).is_ok()
        && match &e.change {
            Change::Delta { member, .. } | Change::Remove { member } => {
                member::decode(member).is_ok_and(|(_, u)| uuid_ok(u))
            }
            Change::Snap { uuid, .. } => uuid_ok(uuid),
            Change::Drop | Change::Floor { .. } | Change::Retention { .. } => true,
        }
}

/// Where checkpoints live: a subfolder of [`FOLDER`] (so no batch key).
pub const CHECKPOINTS: &str = ".lake-journal/checkpoints";
/// Checkpoint format version.
pub const CHECKPOINT_VERSION: u8 = 1;

/// The folded journal up to a batch, stored so a restore (and GC) reads one
/// object and the batches after it instead of the whole history.
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u8,
    /// The newest batch folded in: every batch whose key sorts at or
    /// before it is in, none after it.
    pub upto: String,
    pub catalogs: BTreeMap<String, CatalogState>,
    /// See [`State::left`]; only what left within the backup retention.
    pub left: HashMap<String, u64>,
}

impl Checkpoint {
    pub fn into_state(self) -> State {
        State {
            catalogs: self.catalogs,
            left: self.left,
            ..State::default()
        }
    }
}

/// The key of a checkpoint that folds batches up to `upto` (a batch key).
pub fn checkpoint_key(upto: &str, tag: &str) -> String {
    let stem = upto
        .strip_prefix(FOLDER)
        .and_then(|k| k.strip_prefix('/'))
        .and_then(|k| k.strip_suffix(".json"))
        .unwrap_or(upto);
    format!("{CHECKPOINTS}/{stem}.{tag}.json")
}

/// Whether `key` is a checkpoint.
pub fn is_checkpoint(key: &str) -> bool {
    key.strip_prefix(CHECKPOINTS)
        .and_then(|k| k.strip_prefix('/'))
        .is_some_and(|k| k.ends_with(".json") && !k.contains('/'))
}

/// The milliseconds a batch (or checkpoint) key is named by.
pub fn key_ms(key: &str) -> Option<u64> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    name.get(..13)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arb_change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        prop_oneof![
            (".{0,12}", any::<i64>()).prop_map(|(member, stamp)| Change::Delta { member, stamp }),
            (".{0,12}", any::<i64>()).prop_map(|(uuid, covers)| Change::Snap { uuid, covers }),
            ".{0,12}".prop_map(|member| Change::Remove { member }),
            Just(Change::Drop),
            any::<i64>().prop_map(|floor| Change::Floor { floor }),
            proptest::option::of(any::<u64>()).prop_map(|secs| Change::Retention { secs }),
        ]
    }

    /// JSON objects over the fields and kinds a change has (and a few it
    /// has not), with values of every type.
    fn arb_object() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("k"),
            Just("member"),
            Just("stamp"),
            Just("uuid"),
            Just("covers"),
            Just("floor"),
            Just("secs"),
            Just("x"),
        ];
        let value = prop_oneof![
            Just("\"delta\"".to_string()),
            Just("\"snap\"".to_string()),
            Just("\"remove\"".to_string()),
            Just("\"drop\"".to_string()),
            Just("\"floor\"".to_string()),
            Just("\"retention\"".to_string()),
            Just("\"other\"".to_string()),
            Just("null".to_string()),
            Just("-1".to_string()),
            Just("7".to_string()),
            Just("1.5".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("\"a:b\"".to_string()),
            Just("true".to_string()),
        ];
        proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest::proptest! {
        #[test]
        fn parse_reads_back_what_is_written(c in arb_change()) {
            let text = serde_json::to_string(&c).unwrap();
            proptest::prop_assert_eq!(Change::parse(text.as_bytes()).unwrap(), c);
        }

        #[test]
        fn parse_accepts_exactly_what_the_derived_parser_accepts(text in arb_object()) {
            let derived = serde_json::from_str::<Change>(&text).ok();
            proptest::prop_assert_eq!(Change::parse(text.as_bytes()).ok(), derived, "{}", text);
        }
    }

    const U1: &str = "00000000-0000-4000-8000-000000000001";
    const U2: &str = "00000000-0000-4000-8000-000000000002";
    const U3: &str = "00000000-0000-4000-8000-000000000003";

    fn e(cat: &str, id: &str, change: Change) -> Entry {
        Entry {
            catalog: cat.into(),
            id: id.into(),
            change,
        }
    }

    fn delta(u: &str, stamp: i64) -> Change {
        Change::Delta {
            member: format!("a:{u}"),
            stamp,
        }
    }

    #[test]
    fn entries_apply_in_id_order_whatever_order_they_arrive_in() {
        let s = fold(
            vec![
                e(
                    "c",
                    "10-1",
                    Change::Remove {
                        member: format!("a:{U1}"),
                    },
                ),
                e("c", "10-0", delta(U1, 100)),
                e("c", "9-5", delta(U2, 99)),
            ],
            None,
        );
        let c = &s.catalogs["c"];
        assert_eq!(c.deltas.len(), 1);
        assert_eq!(c.deltas[&format!("a:{U2}")], 99);
        assert_eq!(c.last_id, (10, 1));
        assert_eq!(s.left[&catalog::delta_object("c", U1)], 10);
    }

    #[test]
    fn an_entry_shipped_twice_applies_once() {
        let entries = vec![e("c", "1-0", delta(U1, 1)), e("c", "2-0", Change::Drop)];
        let mut twice = entries.clone();
        twice.extend(entries);
        let s = fold(twice, None);
        assert_eq!(s.applied, 2);
        assert_eq!(s.duplicates, 2);
        assert!(s.catalogs["c"].is_empty());
    }

    #[test]
    fn a_point_in_time_keeps_what_came_before_it() {
        let entries = vec![
            e("c", "1-0", delta(U1, 1)),
            e("c", "5-0", Change::Drop),
            e("c", "7-0", delta(U2, 7)),
        ];
        let before = fold(entries.clone(), Some(4));
        assert_eq!(before.catalogs["c"].deltas.len(), 1);
        assert!(before.left.is_empty());
        let after = fold(entries, None);
        assert_eq!(
            after.catalogs["c"].deltas.keys().collect::<Vec<_>>(),
            vec![&format!("a:{U2}")]
        );
        assert_eq!(after.left[&catalog::delta_object("c", U1)], 5);
    }

    #[test]
    fn a_floor_removes_what_compaction_removed() {
        let s = fold(
            vec![
                e("c", "1-0", delta(U1, 10)),
                e("c", "2-0", delta(U2, 20)),
                e(
                    "c",
                    "2-1",
                    Change::Snap {
                        uuid: U3.into(),
                        covers: 20,
                    },
                ),
                e(
                    "c",
                    "2-2",
                    Change::Snap {
                        uuid: U1.into(),
                        covers: 10,
                    },
                ),
                e("c", "3-0", Change::Floor { floor: 20 }),
                e("c", "4-0", Change::Retention { secs: Some(60) }),
            ],
            None,
        );
        let c = &s.catalogs["c"];
        assert!(c.deltas.is_empty());
        assert_eq!(c.snaps.keys().collect::<Vec<_>>(), vec![U3]);
        assert_eq!((c.floor, c.retention), (Some(20), Some(60)));
        assert!(s.left.contains_key(&catalog::snapshot_object("c", U1)));
        assert_eq!(c.objects("c"), vec![catalog::snapshot_object("c", U3)]);
    }

    #[test]
    fn catalogs_fold_apart_and_bad_ids_are_ignored() {
        let s = fold(
            vec![
                e("a", "1-0", delta(U1, 1)),
                e("b", "1-0", Change::Drop),
                e("a", "junk", Change::Drop),
            ],
            None,
        );
        assert_eq!(s.catalogs["a"].deltas.len(), 1);
        assert_eq!(s.live().count(), 1);
    }

    #[test]
    fn folding_onto_a_checkpoint_equals_folding_everything() {
        let all = vec![
            e("c", "1-0", delta(U1, 1)),
            e("c", "2-0", delta(U2, 2)),
            e("c", "3-0", Change::Drop),
            e("c", "4-0", delta(U3, 4)),
            e("d", "1-0", delta(U1, 1)),
        ];
        let whole = fold(all.clone(), None);
        let base = fold(all[..3].to_vec(), None);
        let cp = Checkpoint {
            v: CHECKPOINT_VERSION,
            upto: object_key(1, "x"),
            catalogs: base.catalogs,
            left: base.left,
        };
        let text = serde_json::to_string(&cp).unwrap();
        let cp: Checkpoint = serde_json::from_str(&text).unwrap();
        // The drop shipped again after a failover must not clear the add
        // that came after it.
        let mut later = all[1..].to_vec();
        later.push(e("c", "3-0", Change::Drop));
        let onto = fold_onto(cp.into_state(), later, None);
        assert_eq!(onto.catalogs, whole.catalogs);
        assert_eq!(onto.left, whole.left);
    }

    #[test]
    fn checkpoint_keys_are_not_batches() {
        let b = object_key(1_700_000_000_000, "abc");
        let c = checkpoint_key(&b, "t");
        assert!(is_checkpoint(&c) && !is_batch(&c) && !is_checkpoint(&b));
        assert_eq!(key_ms(&c), Some(1_700_000_000_000));
        assert_eq!(key_ms(&b), Some(1_700_000_000_000));
        assert!(!catalog::is_lake_object(&c));
    }

    #[test]
    fn entries_not_of_lakes_shapes_are_ignored() {
        let s = fold(
            vec![
                e(
                    "c",
                    "1-0",
                    Change::Delta {
                        member: "f:../../x".into(),
                        stamp: 1,
                    },
                ),
                e("../c", "1-0", delta(U1, 1)),
                e(
                    "c",
                    "1-1",
                    Change::Snap {
                        uuid: "nope".into(),
                        covers: 1,
                    },
                ),
                e("c", "2-0", delta(U2, 2)),
            ],
            None,
        );
        assert_eq!(s.malformed, 3);
        assert_eq!(s.catalogs.len(), 1);
        assert_eq!(s.catalogs["c"].deltas.len(), 1);
    }

    #[test]
    fn batch_keys_sort_by_time_and_are_recognised() {
        let a = object_key(999, "x");
        let b = object_key(1_000, "x");
        assert!(a < b);
        assert!(is_batch(&a));
        assert!(!is_batch(".lake-journal/sub/x.json"));
        assert!(!is_batch("users/x.json"));
        assert!(!catalog::is_lake_object(&a));
    }

    #[test]
    fn changes_round_trip_as_json() {
        for c in [
            delta(U1, 5),
            Change::Snap {
                uuid: U2.into(),
                covers: 3,
            },
            Change::Remove {
                member: "x:y".into(),
            },
            Change::Drop,
            Change::Floor { floor: 9 },
            Change::Retention { secs: None },
        ] {
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), c);
        }
    }
}
