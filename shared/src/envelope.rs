//! The bodies Lake writes to the object store. Each is self-describing: an
//! object found in the bucket names its catalog, field and mode (a
//! snapshot, the stamp it covers). The envelopes do not carry the order: a
//! delta's commit stamp lives in the index. What brings an index back from
//! the store is the journal of index changes shipped beside them
//! ([`crate::journal`], `lake-sidecar restore`); the envelopes let a person
//! or a tool tell what any object is.
//!
//! - delta `<catalog>/<uuid>.json`:
//!   `{"v":1,"catalog":..,"field":..,"mode":..,"value":..}`
//! - snapshot `<catalog>/<uuid>.snap.json`:
//!   `{"v":1,"catalog":..,"covers":<stamp>,"doc":..}`
//!
//! Values and documents are carried as raw JSON text, never re-serialised.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::LakeError;

/// Envelope format version.
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Delta<'a> {
    pub v: u32,
    pub catalog: String,
    pub field: String,
    pub mode: String,
    #[serde(borrow)]
    pub value: &'a RawValue,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot<'a> {
    pub v: u32,
    pub catalog: String,
    pub covers: i64,
    #[serde(borrow)]
    pub doc: &'a RawValue,
}

fn check_version(v: u32, key: &str) -> Result<(), LakeError> {
    if v == VERSION {
        Ok(())
    } else {
        Err(LakeError::data(format!(
            "object '{key}': unknown envelope version {v}"
        )))
    }
}

impl<'a> Delta<'a> {
    pub fn encode(catalog: &str, field: &str, mode: &str, value: &RawValue) -> Vec<u8> {
        let d = Delta {
            v: VERSION,
            catalog: catalog.to_string(),
            field: field.to_string(),
            mode: mode.to_string(),
            value,
        };
        serde_json::to_vec(&d).unwrap_or_default()
    }

    /// Parses a delta body; `key` names the object in the error.
    pub fn decode(bytes: &'a [u8], key: &str) -> Result<Self, LakeError> {
        if bytes.is_empty() {
            return Err(LakeError::data(format!(
                "object '{key}' is empty (0 bytes)"
            )));
        }
        let d: Delta = serde_json::from_slice(bytes).map_err(|e| {
            LakeError::data(format!(
                "object '{key}' is not a valid delta envelope ({} bytes): {e}",
                bytes.len()
            ))
        })?;
        check_version(d.v, key)?;
        Ok(d)
    }
}

impl<'a> Snapshot<'a> {
    pub fn encode(catalog: &str, covers: i64, doc: &RawValue) -> Vec<u8> {
        let s = Snapshot {
            v: VERSION,
            catalog: catalog.to_string(),
            covers,
            doc,
        };
        serde_json::to_vec(&s).unwrap_or_default()
    }

    pub fn decode(bytes: &'a [u8], key: &str) -> Result<Self, LakeError> {
        if bytes.is_empty() {
            return Err(LakeError::data(format!(
                "object '{key}' is empty (0 bytes)"
            )));
        }
        let s: Snapshot = serde_json::from_slice(bytes).map_err(|e| {
            LakeError::data(format!(
                "object '{key}' is not a valid snapshot envelope ({} bytes): {e}",
                bytes.len()
            ))
        })?;
        check_version(s.v, key)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_round_trip_keeps_raw_value() {
        let v = RawValue::from_string(r#"{"b":1,"a":[1.50,"x"]}"#.into()).unwrap();
        let bytes = Delta::encode("users", "a.b", "set", &v);
        let d = Delta::decode(&bytes, "k").unwrap();
        assert_eq!(d.value.get(), r#"{"b":1,"a":[1.50,"x"]}"#);
        assert_eq!(
            (d.catalog.as_str(), d.field.as_str(), d.mode.as_str()),
            ("users", "a.b", "set")
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(r#"{"v":1,"catalog":"users","field":"a.b","mode":"set","value":"#));
    }

    #[test]
    fn bad_bodies_name_the_key() {
        let e = Delta::decode(b"", "users/x.json").unwrap_err();
        assert!(e.message.contains("users/x.json") && e.message.contains("empty"));
        let e = Delta::decode(b"{\"v\":1,", "users/y.json").unwrap_err();
        assert!(e.message.contains("users/y.json"));
        let e = Delta::decode(
            br#"{"v":9,"catalog":"a","field":"f","mode":"set","value":1}"#,
            "k",
        )
        .unwrap_err();
        assert!(e.message.contains("version 9"));
    }

    #[test]
    fn snapshot_round_trip() {
        let doc = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let bytes = Snapshot::encode("c", 42, &doc);
        let s = Snapshot::decode(&bytes, "k").unwrap();
        assert_eq!((s.covers, s.doc.get()), (42, r#"{"a":1}"#));
    }
}
