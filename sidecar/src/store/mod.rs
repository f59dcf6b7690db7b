//! Object stores: where delta and snapshot bodies live.
//!
//! Every store maps an object key (`<catalog>/<uuid>.json`,
//! `<catalog>/<uuid>.snap.json`, built by `lake_shared::catalog`) to bytes.
//!
//! Invariants every implementation keeps:
//! - `put` returns only once the object is durable; a failed `put` leaves at
//!   most an orphan, never a partial object under the key.
//! - `put` creates, never overwrites: where an object already exists under
//!   the key it is left as it was and `put` answers [`Created::Exists`]
//!   (S3 `If-None-Match: *`, Aliyun OSS `x-oss-forbid-overwrite: true`, a
//!   hard link on `file://`, the index on `local://`). Callers name objects
//!   with random ids and retry a collision under a new one ([`create`]), so
//!   no write can destroy another's bytes.
//! - `get` of a missing key is a `Data` error naming the key, never empty
//!   bytes; `get_range` answers exactly the bytes asked for or a `Data` error
//!   (a range that ends past the object is damage, not a short read).
//! - No key escapes the store's root ([`check_key`]).

pub mod ecs;
pub mod file;
pub mod local;
pub mod measured;
pub mod s3;

use async_trait::async_trait;
use lake_shared::LakeError;

/// What a create-only [`Store::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object is stored, durably.
    New,
    /// An object already existed under the key; nothing was written.
    Exists,
}

/// Attempts [`create`] makes before giving up (a collision of random
/// 60-bit or 122-bit names twice in a row means something else is wrong).
pub const CREATE_TRIES: usize = 4;

/// Stores `body` as a new object: `name()` makes a fresh key for each
/// attempt; a collision retries under another. Returns the key used.
pub async fn create(
    store: &dyn Store,
    mut name: impl FnMut() -> String,
    body: Vec<u8>,
) -> Result<String, LakeError> {
    let mut last = String::new();
    for _ in 0..CREATE_TRIES {
        let key = name();
        // A copy per attempt: the store takes the body, and a collision
        // needs it again (one memcpy, small beside the upload).
        match store.put(&key, body.clone()).await? {
            Created::New => return Ok(key),
            Created::Exists => last = key,
        }
    }
    Err(LakeError::internal(format!(
        "{CREATE_TRIES} fresh object names in a row already existed in {} (last '{last}'); nothing was overwritten",
        store.describe()
    )))
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `key` with `body`, durably; never replaces an object already
    /// there ([`Created::Exists`]).
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<Created, LakeError>;
    /// Reads the object under `key`.
    async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError>;
    /// Reads `len` bytes of the object under `key` from `offset`. Stores
    /// that cannot read a range read the object and cut it.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, LakeError> {
        let body = self.get(key).await?;
        cut(body, key, offset, len)
    }
    /// Every object below the store root, with its last-modified time.
    async fn list(&self) -> Result<Vec<ObjectInfo>, LakeError>;
    /// Deletes an object; deleting a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<(), LakeError>;
    /// Whether the store is reachable and writable, with the reason if not.
    async fn health(&self) -> Result<(), LakeError>;
    /// The store's URL, for logs and `/healthz` (never a secret).
    fn describe(&self) -> String;
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// The `len` bytes of `body` from `offset`, or a `Data` error when the
/// object is shorter than that.
pub fn cut(mut body: Vec<u8>, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, LakeError> {
    let end = offset.checked_add(len).filter(|&e| e <= body.len() as u64);
    let Some(end) = end else {
        return Err(LakeError::data(format!(
            "object '{key}' has {} bytes; bytes {offset}..{} were asked for",
            body.len(),
            offset.saturating_add(len)
        )));
    };
    body.truncate(end as usize);
    body.drain(..offset as usize);
    Ok(body)
}

/// Options for `s3://` stores (ignored by the others).
#[derive(Debug, Clone)]
pub struct S3Options {
    pub provider: s3::Provider,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub internal: bool,
    pub bucket_endpoint: bool,
    pub sse: Option<s3::Sse>,
    pub credentials: s3::CredentialSource,
    pub timeout: std::time::Duration,
    pub max_concurrency: usize,
    pub multipart_threshold: usize,
}

/// Opens a store from its URL: `local:///<dir>`, `file:///<dir>` or
/// `s3://<bucket>/<prefix>`.
pub async fn open(url: &str, s3opts: &S3Options) -> Result<Box<dyn Store>, LakeError> {
    if let Some(path) = url.strip_prefix("local://") {
        if path.is_empty() {
            return Err(LakeError::invalid(
                "local:// store needs a directory, e.g. local:///var/lib/lake",
            ));
        }
        return Ok(Box::new(local::LocalStore::open(path)?));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(LakeError::invalid(
                "file:// store needs a directory, e.g. file:///var/lib/lake",
            ));
        }
        return Ok(Box::new(file::FileStore::open(path)?));
    }
    if url.starts_with("s3://") {
        let mut s = s3::Settings::from_url(url)?;
        s.provider = s3opts.provider;
        s.endpoint = s3opts.endpoint.clone();
        s.region = s3opts.region.clone();
        s.path_style = s3opts.path_style;
        s.internal = s3opts.internal;
        s.bucket_endpoint = s3opts.bucket_endpoint;
        s.sse = s3opts.sse.clone();
        s.credentials = s3opts.credentials.clone();
        s.timeout = s3opts.timeout;
        s.max_concurrency = s3opts.max_concurrency;
        s.multipart_threshold = s3opts.multipart_threshold;
        return Ok(Box::new(s3::S3Store::open(s).await?));
    }
    Err(LakeError::invalid(format!(
        "unsupported store '{url}': use local:///<dir>, file:///<dir> or s3://<bucket>/<prefix>"
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
