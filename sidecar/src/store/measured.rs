//! A store that times every request of the store it wraps into
//! `lake_store_request_seconds{store, op, outcome}` ([`crate::metrics`]).
//!
//! Invariants:
//! - Transparent: each call goes to the inner store once, unchanged, and
//!   its answer comes back unchanged (so every rule of `store/mod.rs` holds
//!   exactly as the inner store keeps it); only the time and the outcome
//!   are recorded.
//! - `get_range` is forwarded as a ranged read (never the trait's
//!   read-whole-and-cut default), so it is timed as what it is.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use lake_shared::LakeError;

use super::{Created, ObjectInfo, Store};
use crate::metrics::{Metrics, StoreLabels};

pub struct Measured {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// The store's scheme, the `store` label.
    scheme: &'static str,
}

impl Measured {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Measured {
        let scheme = match inner.describe().split("://").next() {
            Some("s3") => "s3",
            Some("local") => "local",
            Some("file") => "file",
            _ => "other",
        };
        Measured {
            inner,
            metrics,
            scheme,
        }
    }

    fn observe<T>(&self, op: &'static str, start: Instant, r: &Result<T, LakeError>) {
        let labels = StoreLabels {
            store: self.scheme,
            op,
            outcome: if r.is_ok() { "ok" } else { "error" },
        };
        Metrics::since(&self.metrics.store_seconds.get_or_create(&labels), start);
    }
}

#[async_trait]
impl Store for Measured {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<Created, LakeError> {
        let t = Instant::now();
        let r = self.inner.put(key, body).await;
        self.observe("put", t, &r);
        r
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", t, &r);
        r
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, LakeError> {
        let t = Instant::now();
        let r = self.inner.get_range(key, offset, len).await;
        self.observe("get_range", t, &r);
        r
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, LakeError> {
        let t = Instant::now();
        let r = self.inner.list().await;
        self.observe("list", t, &r);
        r
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        let t = Instant::now();
        let r = self.inner.delete(key).await;
        self.observe("delete", t, &r);
        r
    }

    async fn health(&self) -> Result<(), LakeError> {
        self.inner.health().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn times_each_request_by_op_and_outcome_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let inner = super::super::file::FileStore::open(root).unwrap();
        let metrics = Arc::new(Metrics::default());
        let s = Measured::new(Arc::new(inner), metrics.clone());
        assert_eq!(
            s.put("c/a.json", b"12345".to_vec()).await.unwrap(),
            Created::New
        );
        assert_eq!(
            s.put("c/a.json", b"x".to_vec()).await.unwrap(),
            Created::Exists
        );
        assert_eq!(s.get_range("c/a.json", 1, 3).await.unwrap(), b"234");
        assert!(s.get("c/missing.json").await.is_err());
        let text = metrics.render(crate::metrics::Scraped {
            cache_bytes: 0,
            view_cache_bytes: 0,
            js_runtime_rebuilds: 0,
        });
        let count = |op: &str, outcome: &str| {
            let line = format!(
                "lake_store_request_seconds_count{{store=\"file\",op=\"{op}\",outcome=\"{outcome}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&line))
                .map_or(0, |v| v.parse::<u64>().unwrap())
        };
        assert_eq!(count("put", "ok"), 2);
        assert_eq!(count("get_range", "ok"), 1);
        assert_eq!(count("get", "error"), 1);
        assert_eq!(count("get", "ok"), 0);
    }
}
