//! `file:///dir`: one file per object, easy to inspect.
//!
//! A put writes a temp file with a name unique to that write, fsyncs it,
//! hard-links it to the key (atomic, and only where no object has the name
//! yet: a put never overwrites), unlinks the temp name and fsyncs the
//! directory, so a crash leaves either the whole object or none (at most a
//! temp file, which GC removes), and concurrent writers never share a temp
//! file. Throughput is capped by the disk's file-creation rate.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use lake_shared::LakeError;

use super::{check_key, Created, Store};

pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn open(root: &str) -> Result<FileStore, LakeError> {
        let root = PathBuf::from(root);
        std::fs::create_dir_all(&root).map_err(|e| {
            LakeError::unavailable(format!(
                "cannot create store directory {}: {e}",
                root.display()
            ))
        })?;
        Ok(FileStore { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, LakeError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Creates the folders of `key` below `root`, one level at a time, never
/// `root` itself: a store root that vanished (an unmounted disk) must fail
/// writes, not be silently recreated somewhere else.
fn create_folders(root: &Path, key: &str) -> std::io::Result<()> {
    let mut dir = root.to_path_buf();
    let mut parts: Vec<&str> = key.split('/').collect();
    parts.pop();
    for part in parts {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let msg = format!("store root {} is missing", root.display());
                return Err(std::io::Error::new(e.kind(), msg));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_durably(root: &Path, key: &str, path: &Path, body: &[u8]) -> std::io::Result<Created> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("object key has no folder"))?;
    create_folders(root, key)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        // A hard link creates the name only if it is free (a rename would
        // replace an object already there).
        let created = match std::fs::hard_link(&tmp, path) {
            Ok(()) => Created::New,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Created::Exists,
            Err(e) => return Err(e),
        };
        std::fs::remove_file(&tmp)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(created)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[async_trait]
impl Store for FileStore {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<Created, LakeError> {
        let path = self.path(key)?;
        let key = key.to_string();
        let root = self.root.clone();
        let k = key.clone();
        tokio::task::spawn_blocking(move || write_durably(&root, &k, &path, &body))
            .await
            .map_err(|e| LakeError::internal(format!("store task failed: {e}")))?
            .map_err(|e| LakeError::unavailable(format!("cannot store object '{key}': {e}")))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LakeError::data(format!(
                "object '{key}' is missing from the store"
            ))),
            Err(e) => Err(LakeError::unavailable(format!(
                "cannot read object '{key}': {e}"
            ))),
        }
    }

    async fn list(&self) -> Result<Vec<super::ObjectInfo>, LakeError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir)? {
                    let e = e?;
                    let meta = e.metadata()?;
                    if meta.is_dir() {
                        stack.push(e.path());
                    } else if let Ok(rel) = e.path().strip_prefix(&root) {
                        out.push(super::ObjectInfo {
                            key: rel.to_string_lossy().into_owned(),
                            size: meta.len(),
                            modified: meta.modified()?,
                        });
                    }
                }
            }
            Ok::<_, std::io::Error>(out)
        })
        .await
        .map_err(|e| LakeError::internal(format!("store task failed: {e}")))?
        .map_err(|e| LakeError::unavailable(format!("cannot list {}: {e}", self.describe())))
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LakeError::unavailable(format!(
                "cannot delete object '{key}': {e}"
            ))),
        }
    }

    async fn health(&self) -> Result<(), LakeError> {
        let probe = self.root.join(format!(".health-{}", uuid::Uuid::new_v4()));
        let res = tokio::fs::write(&probe, b"ok").await;
        let _ = tokio::fs::remove_file(&probe).await;
        res.map_err(|e| {
            LakeError::unavailable(format!("store {} is not writable: {e}", self.describe()))
        })
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(
            s.put("a/x.json", b"first".to_vec()).await.unwrap(),
            Created::New
        );
        assert_eq!(
            s.put("a/x.json", b"second".to_vec()).await.unwrap(),
            Created::Exists
        );
        assert_eq!(s.get("a/x.json").await.unwrap(), b"first");
        // No temp file is left behind either way.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.json"]);
    }

    #[tokio::test]
    async fn put_get_round_trip_and_missing_is_data_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path().to_str().unwrap()).unwrap();
        s.put("a/b/x.json", b"{\"v\":1}".to_vec()).await.unwrap();
        assert_eq!(s.get("a/b/x.json").await.unwrap(), b"{\"v\":1}");
        let e = s.get("a/b/y.json").await.unwrap_err();
        assert_eq!(e.kind, lake_shared::ErrorKind::Data);
        assert!(e.message.contains("a/b/y.json"));
        assert!(s.put("../escape.json", vec![]).await.is_err());
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[tokio::test]
    async fn a_vanished_root_fails_writes_instead_of_being_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let s = FileStore::open(root.to_str().unwrap()).unwrap();
        std::fs::remove_dir(&root).unwrap();
        let e = s.put("a/b/x.json", b"{}".to_vec()).await.unwrap_err();
        assert_eq!(e.kind, lake_shared::ErrorKind::Unavailable);
        assert!(e.message.contains("missing"), "{}", e.message);
        assert!(!root.exists());
    }

    #[tokio::test]
    async fn concurrent_puts_of_one_key_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(FileStore::open(dir.path().to_str().unwrap()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.put("c/k.json", vec![i; 4096]).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let body = s.get("c/k.json").await.unwrap();
        assert_eq!(body.len(), 4096);
        assert!(body.iter().all(|&b| b == body[0]));
    }
}
