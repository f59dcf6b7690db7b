//! Segments: many delta records in one object, each found from its uuid.
//!
//! On `s3://` the sidecar stores the writes waiting at one moment as one
//! segment object (one PUT) and names each record with a version-8 uuid that
//! locates it: the segment id, the record's offset and its length. Any
//! sidecar turns an index member into one ranged GET with no lookup table.
//!
//! Layout of the uuid (128 bits, big-endian, RFC 9562 version 8):
//!
//! | bits    | content                          |
//! |---------|----------------------------------|
//! | 0..48   | segment id, high 48 bits          |
//! | 48..52  | version `8`                        |
//! | 52..64  | segment id, low 12 bits           |
//! | 64..66  | variant `0b10`                    |
//! | 66..96  | record offset (30 bits)           |
//! | 96..128 | record length (32 bits)           |
//!
//! Layout of the object `.segments/<15 hex digits>.seg` (the folder starts
//! with `.`, which no catalog name can, so no catalog's objects share it):
//!
//! ```text
//! record 0 | record 1 | ... | trailer JSON | u32 BE trailer length | "LAKESEG1"
//! ```
//!
//! Each record is exactly the delta envelope a one-object delta holds
//! (`envelope::Delta`), so a record read through a wrong or forged uuid fails
//! the envelope's own checks (catalog and field against the index). The
//! trailer names what the segment holds — `{"v":1,"catalogs":[..],
//! "records":[[catalog index, offset, length], ..]}` — so garbage collection
//! can tell whose records a segment carries from its tail alone.
//!
//! Invariants:
//! - Decoding never panics and never trusts a length: a version-8 uuid whose
//!   record is empty or ends beyond [`MAX_SEGMENT_BYTES`] is a `Data` error,
//!   as is a trailer that is truncated, oversized or not JSON.
//! - A uuid of any other version names a one-object delta
//!   (`<catalog>/<uuid>.json`): both layouts coexist in one bucket.

use serde::{Deserialize, Serialize};

use crate::{catalog, LakeError};

/// Folder (below the store prefix) holding segment objects.
pub const FOLDER: &str = ".segments";
/// Last bytes of every segment.
pub const MAGIC: &[u8; 8] = b"LAKESEG1";
/// Bytes of the fixed footer: trailer length and magic.
pub const FOOTER_BYTES: usize = 4 + MAGIC.len();
/// A record must end within the first 2^30 bytes of its segment (the offset
/// has 30 bits).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Largest trailer a reader accepts.
pub const MAX_TRAILER_BYTES: usize = 64 << 20;
/// Segment ids have 60 bits.
const ID_MASK: u64 = (1 << 60) - 1;

/// Where a record lives: the segment, the offset of its first byte, its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Locator {
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
}

impl Locator {
    /// The same record in segment `id` (the bytes of a segment do not name
    /// its id, so a segment stored under another id moves its records).
    pub fn in_segment(self, id: u64) -> Locator {
        Locator {
            segment: id & ID_MASK,
            ..self
        }
    }

    /// The uuid text naming this record.
    pub fn to_uuid(&self) -> String {
        let id = self.segment & ID_MASK;
        let v: u128 = ((id >> 12) as u128) << 80
            | 8u128 << 76
            | ((id & 0xfff) as u128) << 64
            | 0b10u128 << 62
            | ((self.offset as u128) & ((1 << 30) - 1)) << 32
            | self.len as u128;
        let h = format!("{v:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// Decodes a delta's uuid. `Ok(None)`: not version 8, a one-object
    /// delta. A version-8 uuid that cannot be a record is a `Data` error: it
    /// came from the index, so the index (or whoever wrote it) is damaged.
    pub fn from_uuid(uuid: &str) -> Result<Option<Locator>, LakeError> {
        catalog::validate_uuid(uuid)?;
        let hex: String = uuid.chars().filter(|c| *c != '-').collect();
        let v = u128::from_str_radix(&hex, 16)
            .map_err(|_| LakeError::invalid(format!("invalid uuid '{uuid}'")))?;
        if (v >> 76) & 0xf != 8 {
            return Ok(None);
        }
        if (v >> 62) & 0b11 != 0b10 {
            return Err(LakeError::data(format!(
                "uuid {uuid} is version 8 but not RFC 9562's variant: not a segment record"
            )));
        }
        let segment = (((v >> 80) as u64) << 12) | ((v >> 64) as u64 & 0xfff);
        let offset = ((v >> 32) as u32) & ((1 << 30) - 1);
        let len = v as u32;
        let loc = Locator {
            segment,
            offset,
            len,
        };
        if len == 0 || loc.end() > MAX_SEGMENT_BYTES {
            return Err(LakeError::data(format!(
                "uuid {uuid} names a record of {len} bytes at offset {offset}, which no segment holds"
            )));
        }
        Ok(Some(loc))
    }

    /// One past the record's last byte.
    pub fn end(&self) -> u64 {
        self.offset as u64 + self.len as u64
    }

    /// The object key of the record's segment.
    pub fn key(&self) -> String {
        segment_key(self.segment)
    }
}

/// Object key (below the store prefix) of a segment.
pub fn segment_key(id: u64) -> String {
    format!("{FOLDER}/{:015x}.seg", id & ID_MASK)
}

/// The segment id of a segment's object key, `None` for any other key.
pub fn parse_segment_key(key: &str) -> Option<u64> {
    let hex = key
        .strip_prefix(FOLDER)?
        .strip_prefix('/')?
        .strip_suffix(".seg")?;
    if hex.len() != 15 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What a segment holds, from its trailer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub v: u32,
    /// The catalogs with a record in the segment.
    pub catalogs: Vec<String>,
    /// `[catalog index, offset, length]` per record, in offset order.
    pub records: Vec<(u32, u32, u32)>,
}

/// Builds one segment in memory.
pub struct Builder {
    id: u64,
    body: Vec<u8>,
    trailer: Trailer,
}

impl Builder {
    /// An empty segment with id `id` (60 bits are kept).
    pub fn new(id: u64) -> Builder {
        Builder {
            id: id & ID_MASK,
            body: Vec::new(),
            trailer: Trailer {
                v: 1,
                catalogs: Vec::new(),
                records: Vec::new(),
            },
        }
    }

    /// Bytes of records so far.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Whether a record of `len` bytes still fits.
    pub fn fits(&self, len: usize) -> bool {
        len > 0 && len <= u32::MAX as usize && (self.body.len() + len) as u64 <= MAX_SEGMENT_BYTES
    }

    /// Appends a record of `catalog`; returns its locator, or `None` when it
    /// does not fit ([`Builder::fits`]).
    pub fn push(&mut self, catalog: &str, record: &[u8]) -> Option<Locator> {
        if !self.fits(record.len()) {
            return None;
        }
        let idx = match self.trailer.catalogs.iter().position(|c| c == catalog) {
            Some(i) => i,
            None => {
                self.trailer.catalogs.push(catalog.to_string());
                self.trailer.catalogs.len() - 1
            }
        };
        let loc = Locator {
            segment: self.id,
            offset: self.body.len() as u32,
            len: record.len() as u32,
        };
        self.body.extend_from_slice(record);
        self.trailer.records.push((idx as u32, loc.offset, loc.len));
        Some(loc)
    }

    /// The object key this segment goes to.
    pub fn key(&self) -> String {
        segment_key(self.id)
    }

    /// The object's bytes: records, trailer, footer.
    pub fn finish(self) -> Vec<u8> {
        let mut out = self.body;
        let before = out.len();
        // Serialising strings and integers cannot fail.
        let _ = serde_json::to_writer(&mut out, &self.trailer);
        let tlen = (out.len() - before) as u32;
        out.extend_from_slice(&tlen.to_be_bytes());
        out.extend_from_slice(MAGIC);
        out
    }
}

/// The trailer's length, from a segment's last [`FOOTER_BYTES`] bytes.
pub fn trailer_len(footer: &[u8], key: &str) -> Result<usize, LakeError> {
    if footer.len() < FOOTER_BYTES || &footer[footer.len() - MAGIC.len()..] != MAGIC {
        return Err(LakeError::data(format!(
            "segment '{key}' does not end with Lake's segment footer"
        )));
    }
    let n = footer.len() - FOOTER_BYTES;
    let mut len = [0u8; 4];
    len.copy_from_slice(&footer[n..n + 4]);
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_TRAILER_BYTES {
        return Err(LakeError::data(format!(
            "segment '{key}' claims a trailer of {len} bytes"
        )));
    }
    Ok(len)
}

/// Decodes the trailer from the segment's last bytes (at least the trailer
/// and the footer; anything before them is ignored).
pub fn decode_trailer(tail: &[u8], key: &str) -> Result<Trailer, LakeError> {
    let len = trailer_len(tail, key)?;
    let end = tail.len() - FOOTER_BYTES;
    if len > end {
        return Err(LakeError::data(format!(
            "segment '{key}': trailer of {len} bytes does not fit in the {end} bytes read"
        )));
    }
    let t: Trailer = serde_json::from_slice(&tail[end - len..end])
        .map_err(|e| LakeError::data(format!("segment '{key}': unreadable trailer: {e}")))?;
    if t.v != 1 {
        return Err(LakeError::data(format!(
            "segment '{key}': trailer version {} is not supported",
            t.v
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn locator_round_trips_through_a_v8_uuid() {
        let loc = Locator {
            segment: 0x0abc_def0_1234_5678,
            offset: (1 << 30) - 10,
            len: 10,
        };
        let u = loc.to_uuid();
        assert!(catalog::validate_uuid(&u).is_ok(), "{u}");
        assert_eq!(&u[14..15], "8", "version nibble: {u}");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "variant: {u}");
        assert_eq!(Locator::from_uuid(&u).unwrap(), Some(loc));
        assert_eq!(loc.key(), ".segments/abcdef012345678.seg");
        assert_eq!(parse_segment_key(&loc.key()), Some(loc.segment));
    }

    #[test]
    fn other_versions_are_one_object_deltas() {
        assert_eq!(
            Locator::from_uuid("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap(),
            None
        );
        assert_eq!(
            Locator::from_uuid("0f8fad5b-d9cb-169f-a165-70867728950e").unwrap(),
            None
        );
        assert_eq!(
            Locator::from_uuid("nope").unwrap_err().kind,
            ErrorKind::Invalid
        );
    }

    #[test]
    fn impossible_records_are_data_errors() {
        for u in [
            "00000000-0000-8000-8000-000000000000", // empty record
            "00000000-0000-8000-bfff-ffffffffffff", // ends past 2^30
            "00000000-0000-8000-0000-000000000010", // wrong variant
        ] {
            assert_eq!(
                Locator::from_uuid(u).unwrap_err().kind,
                ErrorKind::Data,
                "{u}"
            );
        }
    }

    #[test]
    fn segment_keys_are_exact() {
        for k in [
            ".segments/abc.seg",
            ".segments/abcdef012345678.json",
            "segments/abcdef012345678.seg",
            ".segments/ABCDEF012345678.seg",
            ".segments/abcdef01234567g.seg",
        ] {
            assert_eq!(parse_segment_key(k), None, "{k}");
        }
    }

    #[test]
    fn built_segment_holds_its_records_and_names_them() {
        let mut b = Builder::new(7);
        let a = b.push("users", b"{\"a\":1}").unwrap();
        let c = b.push("orders", b"[2]").unwrap();
        let d = b.push("users", b"3").unwrap();
        assert!(b.push("users", b"").is_none());
        let key = b.key();
        let bytes = b.finish();
        for (loc, want) in [(a, &b"{\"a\":1}"[..]), (c, b"[2]"), (d, b"3")] {
            assert_eq!(&bytes[loc.offset as usize..loc.end() as usize], want);
        }
        let t = decode_trailer(&bytes, &key).unwrap();
        assert_eq!(t.catalogs, vec!["users", "orders"]);
        assert_eq!(t.records, vec![(0, 0, 7), (1, 7, 3), (0, 10, 1)]);
        // A tail that starts inside the records still decodes.
        assert_eq!(decode_trailer(&bytes[5..], &key).unwrap(), t);
    }

    #[test]
    fn damaged_trailers_are_data_errors() {
        let mut b = Builder::new(1);
        b.push("c", b"1").unwrap();
        let bytes = b.finish();
        let n = bytes.len();
        let mut bad_magic = bytes.clone();
        bad_magic[n - 1] ^= 1;
        let mut huge = bytes.clone();
        huge[n - 12..n - 8].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut not_json = bytes.clone();
        not_json[2] = b'!';
        for tail in [
            &bytes[..3],
            &bytes[n - 13..],
            &bad_magic[..],
            &huge[..],
            &not_json[..],
        ] {
            assert_eq!(decode_trailer(tail, "k").unwrap_err().kind, ErrorKind::Data);
        }
    }
}
