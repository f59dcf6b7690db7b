//! The sorted-set member codec: `<field>:<uuid>`.
//!
//! A uuid never contains `:`, so decoding splits at the LAST `:` and a field
//! may itself contain `:`.

use crate::LakeError;

/// Builds the member for a delta.
pub fn encode(field: &str, uuid: &str) -> String {
    format!("{field}:{uuid}")
}

/// Splits a member into `(field, uuid)` at its last `:`.
pub fn decode(member: &str) -> Result<(&str, &str), LakeError> {
    member
        .rsplit_once(':')
        .filter(|(f, u)| !f.is_empty() && !u.is_empty())
        .ok_or_else(|| LakeError::data(format!("malformed index member '{member}'")))
}

/// Splits a snapshot member `snap:<uuid>` into its uuid.
pub fn decode_snap(member: &str) -> Result<&str, LakeError> {
    member
        .strip_prefix("snap:")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| LakeError::data(format!("malformed snapshot member '{member}'")))
}

/// Builds the member for a snapshot.
pub fn encode_snap(uuid: &str) -> String {
    format!("snap:{uuid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_colons_in_field() {
        let u = "0f8fad5b-d9cb-469f-a165-70867728950e";
        for f in ["a", "a:b", "urn:x:y", "/a:b/c", "$"] {
            let m = encode(f, u);
            assert_eq!(decode(&m).unwrap(), (f, u));
        }
    }

    #[test]
    fn malformed_members() {
        for m in ["", "nouuid", ":u", "f:"] {
            assert!(decode(m).is_err(), "{m:?}");
        }
        assert_eq!(decode_snap("snap:abc").unwrap(), "abc");
        assert!(decode_snap("x:abc").is_err());
        assert_eq!(encode_snap("abc"), "snap:abc");
    }
}
