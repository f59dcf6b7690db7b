//! Catalog names, the Redis keys that hold a catalog's index, and the object
//! keys of its bodies.
//!
//! Invariants:
//! - A valid name is ASCII segments `[A-Za-z0-9_][A-Za-z0-9_.-]*` joined by
//!   `/`, at most [`MAX_CATALOG_BYTES`]: no `:`, braces, spaces, empty
//!   segments, leading dot (so no `..`), or leading/trailing `/`. Such a name
//!   can never escape the store prefix.
//! - Redis keys wrap the name in literal braces (the Cluster hash tag), so a
//!   catalog's keys share one slot.
//! - An object's catalog is its key's folder and its kind is its suffix
//!   (`.json` delta, `.snap.json` snapshot): no kind lives in a subfolder that
//!   another catalog could name.

use crate::{LakeError, MAX_CATALOG_BYTES};

/// Checks a catalog name against the rules in the module docs.
pub fn validate(name: &str) -> Result<(), LakeError> {
    let bad = |why: &str| Err(LakeError::invalid(format!("invalid catalog name: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_CATALOG_BYTES {
        return bad(&format!("longer than {MAX_CATALOG_BYTES} bytes"));
    }
    for seg in name.split('/') {
        let mut bytes = seg.bytes();
        match bytes.next() {
            None => return bad("empty segment (leading, trailing or double '/')"),
            Some(b) if b.is_ascii_alphanumeric() || b == b'_' => {}
            Some(_) => return bad("each '/'-separated segment must start with [A-Za-z0-9_]"),
        }
        if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            return bad("only [A-Za-z0-9_.-] and '/' are allowed");
        }
    }
    Ok(())
}

/// The sorted set of a catalog's deltas: `catalog:{<name>}`.
pub fn index_key(name: &str) -> String {
    format!("catalog:{{{name}}}")
}

/// Whether `key` is some catalog's delta index (`catalog:{<name>}`, not one
/// of its other keys).
pub fn is_index_key(key: &[u8]) -> bool {
    key.strip_prefix(b"catalog:{")
        .and_then(|rest| rest.strip_suffix(b"}"))
        .is_some_and(|name| !name.is_empty() && !name.contains(&b'}'))
}

/// The sorted set of a catalog's snapshots: `catalog:{<name>}:snap`.
pub fn snap_key(name: &str) -> String {
    format!("catalog:{{{name}}}:snap")
}

/// The removal fence of a catalog: a counter bumped by LAKE.REMOVE and
/// LAKE.DROP, so a snapshot built before a removal is never committed.
pub fn fence_key(name: &str) -> String {
    format!("catalog:{{{name}}}:fence")
}

/// The compaction floor of a catalog: the stamp its history starts at.
/// Deltas at or below it, and snapshots below it, have left the index; a
/// read `AT` an earlier stamp is refused, and no snapshot below it is
/// committed.
pub fn floor_key(name: &str) -> String {
    format!("catalog:{{{name}}}:floor")
}

/// A catalog's own retention, in seconds (overrides the module's
/// `retention-secs`), under the catalog's hash tag so it replicates and
/// migrates with it.
pub fn retention_key(name: &str) -> String {
    format!("catalog:{{{name}}}:retention")
}

/// A catalog's journal: the stream of its index changes not yet shipped to
/// the store ([`crate::journal`]).
pub fn journal_key(name: &str) -> String {
    format!("catalog:{{{name}}}:journal")
}

/// Object key (below the store prefix) of a delta body.
pub fn delta_object(name: &str, uuid: &str) -> String {
    format!("{name}/{uuid}.json")
}

/// Object key (below the store prefix) of a snapshot body.
pub fn snapshot_object(name: &str, uuid: &str) -> String {
    format!("{name}/{uuid}.snap.json")
}

/// Whether an object key has the shape Lake writes (`<catalog>/<uuid>.json`,
/// `<catalog>/<uuid>.snap.json`) or is a file store's temp file; GC never
/// touches anything else.
pub fn is_lake_object(key: &str) -> bool {
    let Some((cat, name)) = key.rsplit_once('/') else {
        return false;
    };
    if validate(cat).is_err() {
        return false;
    }
    if name.starts_with(".tmp-") {
        return true;
    }
    let stem = name
        .strip_suffix(".snap.json")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or_default();
    validate_uuid(stem).is_ok()
}

/// Checks that a uuid is the lowercase hyphenated form Lake generates, so it
/// is safe inside an object key and contains no `:`.
pub fn validate_uuid(uuid: &str) -> Result<(), LakeError> {
    let b = uuid.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        });
    if ok {
        Ok(())
    } else {
        Err(LakeError::invalid(format!("invalid uuid '{uuid}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_names() {
        let long = "a".repeat(128);
        for n in [
            "users",
            "tenantA/users",
            "v3.0.0-alpha.1",
            "_x",
            long.as_str(),
            "a/b/c_1",
        ] {
            assert!(validate(n).is_ok(), "{n} should be accepted");
        }
    }

    #[test]
    fn rejected_names() {
        let long = "a".repeat(129);
        for n in [
            "",
            "a:b",
            "a{b}",
            "a b",
            "/x",
            "x/",
            "x//y",
            ".x",
            "x/../y",
            "x/./y",
            "usérs",
            long.as_str(),
            "a\nb",
            "-x",
            "a}",
            "..",
        ] {
            assert!(validate(n).is_err(), "{n:?} should be rejected");
        }
    }

    #[test]
    fn keys_use_hash_tags_and_suffixes() {
        assert_eq!(index_key("tenantA/users"), "catalog:{tenantA/users}");
        assert_eq!(snap_key("users"), "catalog:{users}:snap");
        assert_eq!(delta_object("a/b", "u"), "a/b/u.json");
        assert_eq!(snapshot_object("a/b", "u"), "a/b/u.snap.json");
    }

    #[test]
    fn lake_object_shapes() {
        let u = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(is_lake_object(&format!("a/b/{u}.json")));
        assert!(is_lake_object(&format!("a/{u}.snap.json")));
        assert!(is_lake_object("a/.tmp-x"));
        assert!(!is_lake_object(&format!("{u}.json")));
        assert!(!is_lake_object("a/readme.json"));
        assert!(!is_lake_object("a/.health-x"));
    }

    #[test]
    fn uuid_shape() {
        assert!(validate_uuid("0f8fad5b-d9cb-469f-a165-70867728950e").is_ok());
        assert!(validate_uuid("0F8FAD5B-d9cb-469f-a165-70867728950e").is_err());
        assert!(validate_uuid("../../etc/passwd-0000-0000-0000000000").is_err());
        assert!(validate_uuid("").is_err());
    }

    #[test]
    fn index_keys_are_told_from_a_catalogs_other_keys() {
        assert!(is_index_key(index_key("users/eu-1").as_bytes()));
        for other in [
            snap_key("users").as_bytes(),
            b"catalog:{}",
            b"catalog:{a}}",
            b"catalog:{a",
            b"users",
            b"catalog:{users}:journal",
        ] {
            assert!(!is_index_key(other), "{}", String::from_utf8_lossy(other));
        }
    }
}
