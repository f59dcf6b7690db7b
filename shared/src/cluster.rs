//! Redis Cluster facts Lake needs without asking Redis: which hash slot a
//! catalog lives in, and what a node's own line of `CLUSTER NODES` says it
//! serves.
//!
//! Invariants:
//! - [`key_slot`] is Redis's own function (CRC16/XMODEM of the hash tag, or of
//!   the whole key without one, modulo 16384), so a catalog's slot here is
//!   the slot Redis routes `catalog:{<name>}` and the `<name>` argument to.
//! - A node *serves* a slot only when its own line lists it and it is a
//!   primary; a slot it is migrating away or importing is listed separately
//!   and is never "stable". Garbage collection touches only stable slots, so
//!   two shards never both consider one catalog's objects.

use crate::catalog;

/// Number of hash slots in Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), as Redis's `crc16.c`.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a Redis key: the part between the first `{` and the
/// next `}` when that part is not empty, else the whole key.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The slot holding every key of catalog `name` (and the `<name>` argument
/// Redis routes `LAKE.*` by: a valid name has no braces, so both agree).
pub fn catalog_slot(name: &str) -> u16 {
    key_slot(catalog::index_key(name).as_bytes())
}

/// A set of hash slots.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet {
    bits: Vec<u64>,
}

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet {
            bits: vec![0; SLOTS / 64],
        }
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet{:?}", self.ranges())
    }
}

impl SlotSet {
    pub fn all() -> SlotSet {
        SlotSet {
            bits: vec![u64::MAX; SLOTS / 64],
        }
    }

    pub fn insert(&mut self, slot: u16) {
        if let Some(w) = self.bits.get_mut(usize::from(slot) / 64) {
            *w |= 1 << (slot % 64);
        }
    }

    pub fn remove(&mut self, slot: u16) {
        if let Some(w) = self.bits.get_mut(usize::from(slot) / 64) {
            *w &= !(1 << (slot % 64));
        }
    }

    pub fn contains(&self, slot: u16) -> bool {
        self.bits
            .get(usize::from(slot) / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Inclusive ranges, ascending: the compact form sent to the sidecar.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in 0..SLOTS as u16 {
            if !self.contains(s) {
                continue;
            }
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
        out
    }

    /// The set of `ranges` (slots past 16383 are ignored).
    pub fn from_ranges(ranges: &[(u16, u16)]) -> SlotSet {
        let mut set = SlotSet::default();
        for &(lo, hi) in ranges {
            for s in lo..=hi.min(SLOTS as u16 - 1) {
                set.insert(s);
            }
        }
        set
    }
}

/// What a node's own `CLUSTER NODES` line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Myself {
    pub primary: bool,
    /// Flagged `fail` or `fail?` in its own view.
    pub failing: bool,
    /// Slots assigned to this node (including ones it is migrating away).
    pub owned: SlotSet,
    /// Owned slots this node is moving to another (`[slot->-node]`).
    pub migrating: SlotSet,
    /// Slots another node is moving here (`[slot-<-node]`): not owned yet.
    pub importing: SlotSet,
}

impl Myself {
    /// Parses the `myself` line out of a `CLUSTER NODES` reply.
    pub fn parse(nodes: &str) -> Option<Myself> {
        let line = nodes.lines().find(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|f| f.split(',').any(|x| x == "myself"))
        })?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        let mut me = Myself {
            primary: flags.split(',').any(|f| f == "master"),
            failing: flags.split(',').any(|f| f == "fail" || f == "fail?"),
            ..Myself::default()
        };
        for item in fields.iter().skip(8) {
            if let Some(inner) = item.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                if let Some((slot, _)) = inner.split_once("->-") {
                    me.migrating.insert(slot.parse().ok()?);
                } else if let Some((slot, _)) = inner.split_once("-<-") {
                    me.importing.insert(slot.parse().ok()?);
                }
                continue;
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?),
                None => {
                    let s = item.parse::<u16>().ok()?;
                    (s, s)
                }
            };
            for s in lo..=hi.min(SLOTS as u16 - 1) {
                me.owned.insert(s);
            }
        }
        Some(me)
    }

    /// Slots this node serves as a primary and is not moving: the only ones
    /// whose catalogs it may garbage-collect or commit snapshots in.
    pub fn stable(&self) -> SlotSet {
        if !self.primary {
            return SlotSet::default();
        }
        let mut s = self.owned.clone();
        for slot in 0..SLOTS as u16 {
            if self.migrating.contains(slot) || self.importing.contains(slot) {
                s.remove(slot);
            }
        }
        s
    }
}

/// Whether a `CLUSTER INFO` reply says `cluster_state:ok`.
pub fn state_ok(info: &str) -> bool {
    info.lines().any(|l| l.trim_end() == "cluster_state:ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(catalog_slot("users"), key_slot(b"users"));
        assert_eq!(
            key_slot(catalog::snap_key("a/b").as_bytes()),
            catalog_slot("a/b")
        );
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    const NODES: &str = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-10 12 20-21 [12->-67ed] [13-<-67ed]
";

    #[test]
    fn parses_own_line() {
        let me = Myself::parse(NODES).unwrap();
        assert!(me.primary);
        assert_eq!(me.owned.ranges(), vec![(0, 10), (12, 12), (20, 21)]);
        assert_eq!(me.migrating.ranges(), vec![(12, 12)]);
        assert_eq!(me.importing.ranges(), vec![(13, 13)]);
        assert_eq!(me.stable().ranges(), vec![(0, 10), (20, 21)]);
        let replica = NODES.replace("myself,master", "myself,slave");
        assert!(Myself::parse(&replica).unwrap().stable().is_empty());
        assert!(Myself::parse("garbage").is_none());
        assert!(!me.failing);
        let failing = NODES.replace("myself,master", "myself,master,fail?");
        assert!(Myself::parse(&failing).unwrap().failing);
    }

    #[test]
    fn cluster_state() {
        assert!(state_ok(
            "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n"
        ));
        assert!(!state_ok("cluster_state:fail\r\n"));
        assert!(!state_ok(""));
    }

    #[test]
    fn ranges_round_trip() {
        let set = SlotSet::from_ranges(&[(0, 3), (7, 7), (16380, 20000)]);
        assert_eq!(set.ranges(), vec![(0, 3), (7, 7), (16380, 16383)]);
        assert_eq!(set.len(), 9);
        assert_eq!(SlotSet::all().ranges(), vec![(0, 16383)]);
    }
}
