//! Object stores: where delta and snapshot bodies live.
//!
//! Every store maps an object key (`<catalog>/<uuid>.json`,
//! `<catalog>/<uuid>.snap.json`, built by `lake_shared::catalog`) to bytes.
//!
//! Invariants every implementation keeps:
//! - `put` returns only once the object is durable; a failed `put` leaves at
//!   most an orphan, never a partial object under the key.
//! - `get` of a missing key is a `Data` error naming the key, never empty
//!   bytes.
//! - No key escapes the store's root ([`check_key`]).

pub mod file;

use async_trait::async_trait;
use lake_shared::LakeError;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `body` under `key`, durably.
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), LakeError>;
    /// Reads the object under `key`.
    async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError>;
    /// Whether the store is reachable and writable, with the reason if not.
    async fn health(&self) -> Result<(), LakeError>;
    /// The store's URL, for logs and `/healthz` (never a secret).
    fn describe(&self) -> String;
}

/// Opens a store from its URL.
pub fn open(url: &str) -> Result<Box<dyn Store>, LakeError> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(LakeError::invalid(
                "file:// store needs a directory, e.g. file:///var/lib/lake",
            ));
        }
        return Ok(Box::new(file::FileStore::open(path)?));
    }
    Err(LakeError::invalid(format!(
        "unsupported store '{url}': use file:///<dir>"
    )))
}

/// Rejects keys that could leave the store root: absolute paths, empty,
/// `.` or `..` segments, backslashes and control characters.
pub fn check_key(key: &str) -> Result<(), LakeError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.chars().any(char::is_control)
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(LakeError::invalid(format!(
            "refusing unsafe object key '{key}'"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_keys_refused() {
        for k in [
            "",
            "/etc/passwd",
            "a/../b",
            "../a",
            "a//b",
            "a/./b",
            "a\\b",
            "a\nb",
        ] {
            assert!(check_key(k).is_err(), "{k:?}");
        }
        assert!(check_key("users/0f8fad5b-d9cb-469f-a165-70867728950e.json").is_ok());
    }
}
