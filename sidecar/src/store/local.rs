//! `local:///dir`: the embedded default store. Objects live in append-only
//! segment files, and concurrent puts share one `fdatasync` (group commit),
//! so throughput is not capped by the disk's file-creation rate.
//!
//! Layout: `<dir>/LOCK` (held for the store's lifetime, so two sidecars never
//! append to one log) and `<dir>/seg-<n>.log`, written in order. A record is
//! `magic u32 | crc32 u32 | kind u8 | key_len u16 | body_len u32 |
//! modified_ms u64 | key | body`, little endian; the CRC covers everything
//! after itself. A delete appends a tombstone (kind 2, no body).
//!
//! Invariants:
//! - One writer thread owns the active segment. It takes every put waiting
//!   in its queue (never waiting for more to arrive), appends them in one
//!   write, calls `fdatasync` once, and only then publishes them to the index
//!   and acknowledges them: an acknowledged put is durable, and no read sees
//!   an object before it is durable.
//! - A failed batch is cut off again (`set_len`) and every put in it fails;
//!   the next batch is written where the failed one began.
//! - Opening replays the segments: a torn record at the end of the newest
//!   segment (a crash mid-batch, never acknowledged) is cut off; a bad record
//!   anywhere else is corruption, and the store refuses to open, naming it.
//! - Every read checks the record's CRC; a segment deleted under the store
//!   fails writes with `Unavailable` instead of acknowledging into a file
//!   that no longer has a name.
//! - Space comes back: a closed segment whose live records fill at most half
//!   of it is rewritten by the writer thread, at most one per
//!   [`RECLAIM_EVERY`]: its live records are appended (byte for byte, with
//!   their original time) to the active segment and made durable, then the
//!   index points at the copies, then the old file is unlinked. A crash
//!   before the unlink leaves both copies, and replay keeps the newer (same
//!   bytes); a torn copy is cut off like any torn batch. Unless the segment
//!   is the oldest, its tombstones are appended too, so a delete recorded
//!   there can never be undone by a put in an older segment ("nothing
//!   deleted comes back").

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lake_shared::LakeError;

use super::{check_key, Created, ObjectInfo, Store};

const MAGIC: u32 = 0x4c41_4b45; // "LAKE"
const HEADER: usize = 4 + 4 + 1 + 2 + 4 + 8;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// A segment is closed once it holds this much; the next batch starts a new one.
const SEGMENT_BYTES: u64 = 64 << 20;
/// At most this many bytes go into one batch, so one flush stays short.
const BATCH_BYTES: usize = 8 << 20;
/// Objects up to this size; bigger bodies belong in an object store.
const MAX_BODY: usize = u32::MAX as usize;
/// How often the writer looks for a segment worth rewriting.
pub const RECLAIM_EVERY: Duration = Duration::from_secs(1);

/// Where one live object's record sits.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
    modified_ms: u64,
}

struct Index {
    objects: HashMap<String, Loc>,
    segments: HashMap<u64, Arc<File>>,
    /// Bytes of live put records per segment.
    live: HashMap<u64, u64>,
}

impl Index {
    /// Records that `key` now lives at `loc` (or nowhere), keeping `live`.
    fn set(&mut self, key: &str, loc: Option<Loc>) {
        let old = match loc {
            Some(l) => self.objects.insert(key.to_string(), l),
            None => self.objects.remove(key),
        };
        if let Some(o) = old {
            if let Some(b) = self.live.get_mut(&o.seg) {
                *b = b.saturating_sub(u64::from(o.len));
            }
        }
        if let Some(l) = loc {
            *self.live.entry(l.seg).or_default() += u64::from(l.len);
        }
    }
}

enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    /// Rewrite one segment worth it now (tests, and operators via the same
    /// path the timer takes); with a crash point, stop the writer there.
    Reclaim(Option<Crash>),
}

/// Where a simulated crash stops a rewrite (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Half of the copies written, nothing synced or published.
    TornCopies,
    /// Copies durable and published, the old segment not yet unlinked.
    BeforeUnlink,
}

type Done = tokio::sync::oneshot::Sender<Result<Created, LakeError>>;

pub struct LocalStore {
    root: PathBuf,
    index: Arc<RwLock<Index>>,
    queue: crossbeam_channel::Sender<(Op, Done)>,
    _lock: File,
}

impl LocalStore {
    /// Opens (or creates) the store in `root`, replaying its segments.
    pub fn open(root: &str) -> Result<LocalStore, LakeError> {
        Self::open_with(root, SEGMENT_BYTES)
    }

    /// Like [`LocalStore::open`] with segments closed at `segment_bytes`
    /// (small ones in tests).
    pub fn open_with(root: &str, segment_bytes: u64) -> Result<LocalStore, LakeError> {
        let root = PathBuf::from(root);
        let io = |what: &str, e: std::io::Error| {
            LakeError::unavailable(format!("local store {}: {what}: {e}", root.display()))
        };
        std::fs::create_dir_all(&root).map_err(|e| io("cannot create the directory", e))?;
        let lock = File::create(root.join("LOCK")).map_err(|e| io("cannot create LOCK", e))?;
        lock.try_lock().map_err(|_| {
            LakeError::unavailable(format!(
                "local store {} is in use by another process (LOCK is held)",
                root.display()
            ))
        })?;
        let mut numbers = Vec::new();
        for e in std::fs::read_dir(&root).map_err(|e| io("cannot list", e))? {
            let name = e.map_err(|e| io("cannot list", e))?.file_name();
            if let Some(n) = segment_number(&name.to_string_lossy()) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut index = Index {
            objects: HashMap::new(),
            segments: HashMap::new(),
            live: HashMap::new(),
        };
        let last = numbers.last().copied();
        for &n in &numbers {
            let path = segment_path(&root, n);
            let end = replay(&path, n, &mut index)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io("cannot open a segment", e))?;
            let len = file.metadata().map_err(|e| io("cannot stat", e))?.len();
            if end < len {
                if Some(n) != last {
                    return Err(LakeError::data(format!(
                        "local store {}: segment {} is damaged at byte {end}; \
                         restore it or move it away (its objects are lost)",
                        root.display(),
                        path.display()
                    )));
                }
                // A batch torn by a crash was never acknowledged: cut it off.
                file.set_len(end)
                    .map_err(|e| io("cannot cut a torn tail", e))?;
                file.sync_all().map_err(|e| io("cannot sync", e))?;
            }
            index.segments.insert(n, Arc::new(file));
        }
        let active = match last {
            Some(n) => n,
            None => {
                new_segment(&root, 1, &mut index).map_err(|e| io("cannot create a segment", e))?;
                1
            }
        };
        let len = index
            .segments
            .get(&active)
            .map(|f| f.metadata().map(|m| m.len()))
            .transpose()
            .map_err(|e| io("cannot stat", e))?
            .unwrap_or(0);
        let index = Arc::new(RwLock::new(index));
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer {
            root: root.clone(),
            index: index.clone(),
            active,
            len,
            segment_bytes,
            last_reclaim: std::time::Instant::now(),
        };
        std::thread::Builder::new()
            .name("lake-local-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io("cannot start the writer", e))?;
        Ok(LocalStore {
            root,
            index,
            queue: tx,
            _lock: lock,
        })
    }

    /// Rewrites one segment worth it, if any, now (the writer also does it
    /// by itself every [`RECLAIM_EVERY`]).
    pub async fn reclaim_now(&self) -> Result<(), LakeError> {
        self.submit(Op::Reclaim(None)).await.map(drop)
    }

    /// Bytes of the segment files, for tests and inspection.
    pub fn disk_bytes(&self) -> u64 {
        self.index.read().map_or(0, |i| {
            i.segments
                .values()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
    }

    /// Starts a rewrite and stops the writer at `crash`, as a crash would.
    #[cfg(test)]
    async fn crash_during_reclaim(&self, crash: Crash) {
        let _ = self.submit(Op::Reclaim(Some(crash))).await;
    }

    async fn submit(&self, op: Op) -> Result<Created, LakeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue
            .send((op, tx))
            .map_err(|_| LakeError::internal("local store writer stopped"))?;
        rx.await
            .map_err(|_| LakeError::internal("local store writer stopped"))?
    }
}

/// Every live object of the store in `root`, read without taking its lock
/// or changing anything: for tests and inspection while a sidecar runs. A
/// torn tail is skipped, as opening would cut it off.
pub fn read_all(root: &Path) -> Result<Vec<(String, Vec<u8>)>, LakeError> {
    let io = |e: std::io::Error| {
        LakeError::unavailable(format!("cannot read local store {}: {e}", root.display()))
    };
    let mut numbers = Vec::new();
    for e in std::fs::read_dir(root).map_err(io)? {
        if let Some(n) = segment_number(&e.map_err(io)?.file_name().to_string_lossy()) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    let mut index = Index {
        objects: HashMap::new(),
        segments: HashMap::new(),
        live: HashMap::new(),
    };
    for &n in &numbers {
        replay(&segment_path(root, n), n, &mut index)?;
    }
    let mut files = HashMap::new();
    let mut out = Vec::with_capacity(index.objects.len());
    for (key, loc) in index.objects {
        let f = match files.entry(loc.seg) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(File::open(segment_path(root, loc.seg)).map_err(io)?)
            }
        };
        let mut rec = vec![0u8; loc.len as usize];
        f.read_exact_at(&mut rec, loc.offset).map_err(io)?;
        rec.drain(..HEADER + key.len());
        out.push((key, rec));
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn segment_path(root: &Path, n: u64) -> PathBuf {
    root.join(format!("seg-{n:010}.log"))
}

fn new_segment(root: &Path, n: u64, index: &mut Index) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(root, n))?;
    File::open(root)?.sync_all()?;
    index.segments.insert(n, Arc::new(file));
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends one record to `buf`.
fn encode(buf: &mut Vec<u8>, kind: u8, key: &str, body: &[u8], modified_ms: u64) {
    let start = buf.len();
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&modified_ms.to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(body);
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded record header.
struct Header {
    crc: u32,
    kind: u8,
    key_len: usize,
    body_len: usize,
    modified_ms: u64,
}

fn parse_header(h: &[u8; HEADER]) -> Option<Header> {
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if u32_at(0) != MAGIC {
        return None;
    }
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&h[15..23]);
    Some(Header {
        crc: u32_at(4),
        kind: h[8],
        key_len: u16::from_le_bytes([h[9], h[10]]) as usize,
        body_len: u32_at(11) as usize,
        modified_ms: u64::from_le_bytes(ms),
    })
}

/// Replays one segment into `index`; returns the offset after its last
/// whole record.
fn replay(path: &Path, seg: u64, index: &mut Index) -> Result<u64, LakeError> {
    let io = |e: std::io::Error| {
        LakeError::unavailable(format!("cannot read segment {}: {e}", path.display()))
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut rd = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut rest = Vec::new();
    loop {
        let mut h = [0u8; HEADER];
        if size - offset < HEADER as u64 || rd.read_exact(&mut h).is_err() {
            return Ok(offset);
        }
        let Some(hd) = parse_header(&h) else {
            return Ok(offset);
        };
        let len = HEADER as u64 + hd.key_len as u64 + hd.body_len as u64;
        if size - offset < len {
            return Ok(offset);
        }
        rest.resize(hd.key_len + hd.body_len, 0);
        rd.read_exact(&mut rest).map_err(io)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[8..]);
        crc.update(&rest);
        if crc.finalize() != hd.crc {
            return Ok(offset);
        }
        let Ok(key) = std::str::from_utf8(&rest[..hd.key_len]) else {
            return Ok(offset);
        };
        match hd.kind {
            KIND_PUT => {
                let loc = Loc {
                    seg,
                    offset,
                    len: len as u32,
                    modified_ms: hd.modified_ms,
                };
                index.set(key, Some(loc));
            }
            KIND_DELETE => index.set(key, None),
            _ => return Ok(offset),
        }
        offset += len;
    }
}

/// The single appender: owns the active segment and its length.
struct Writer {
    root: PathBuf,
    index: Arc<RwLock<Index>>,
    active: u64,
    len: u64,
    segment_bytes: u64,
    last_reclaim: std::time::Instant,
}

impl Writer {
    fn run(mut self, rx: crossbeam_channel::Receiver<(Op, Done)>) {
        let mut buf = Vec::with_capacity(BATCH_BYTES);
        loop {
            if self.last_reclaim.elapsed() >= RECLAIM_EVERY {
                self.last_reclaim = std::time::Instant::now();
                if let Err(e) = self.reclaim(None) {
                    eprintln!("lake-sidecar: local store: a segment rewrite failed: {e}");
                }
            }
            let first = match rx.recv_timeout(RECLAIM_EVERY) {
                Ok((Op::Reclaim(crash), done)) => {
                    let res = self.reclaim(crash).map(|_| Created::New).map_err(|e| {
                        LakeError::unavailable(format!("local store: rewrite failed: {e}"))
                    });
                    let _ = done.send(res);
                    if crash.is_some() {
                        return;
                    }
                    continue;
                }
                Ok(first) => first,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            let mut bytes = op_size(&batch[0].0);
            while bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok((Op::Reclaim(_), done)) => {
                        // Not in the middle of a batch: ask again later.
                        let _ = done.send(Err(LakeError::busy("local store is writing; retry")));
                    }
                    Ok(more) => {
                        bytes += op_size(&more.0);
                        batch.push(more);
                    }
                    Err(_) => break,
                }
            }
            let batch = self.refuse_existing(batch);
            if batch.is_empty() {
                continue;
            }
            let modified_ms = now_ms();
            buf.clear();
            for (op, _) in &batch {
                match op {
                    Op::Put(k, b) => encode(&mut buf, KIND_PUT, k, b, modified_ms),
                    Op::Delete(k) => encode(&mut buf, KIND_DELETE, k, &[], modified_ms),
                    Op::Reclaim(_) => {}
                }
            }
            let res = self.append(&buf).map_err(|e| {
                LakeError::unavailable(format!(
                    "local store {}: write failed: {e}",
                    self.root.display()
                ))
            });
            match res {
                Ok(start) => {
                    self.publish(&batch, start, modified_ms);
                    for (_, done) in batch {
                        let _ = done.send(Ok(Created::New));
                    }
                }
                Err(e) => {
                    for (_, done) in batch {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Writes `buf` at the end of the active segment and makes it durable;
    /// returns where it starts. On failure the segment is cut back.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<u64> {
        if self.len > 0 && self.len + buf.len() as u64 > self.segment_bytes {
            let next = self.active + 1;
            let mut index = self
                .index
                .write()
                .map_err(|_| std::io::Error::other("index lock poisoned"))?;
            new_segment(&self.root, next, &mut index)?;
            self.active = next;
            self.len = 0;
        }
        let file = self
            .index
            .read()
            .ok()
            .and_then(|i| i.segments.get(&self.active).cloned())
            .ok_or_else(|| std::io::Error::other("active segment is not open"))?;
        let start = self.len;
        let res = (|| {
            file.write_all_at(buf, start)?;
            file.sync_data()?;
            if file.metadata()?.nlink() == 0 {
                return Err(std::io::Error::other(format!(
                    "segment {} was deleted",
                    segment_path(&self.root, self.active).display()
                )));
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(start)
            }
            Err(e) => {
                let _ = file.set_len(start);
                Err(e)
            }
        }
    }

    /// Answers [`Created::Exists`] for every put whose key is live already
    /// (or taken by an earlier put of the same batch) and keeps the rest:
    /// a put never replaces an object.
    fn refuse_existing(&self, batch: Vec<(Op, Done)>) -> Vec<(Op, Done)> {
        let Ok(index) = self.index.read() else {
            return batch;
        };
        let mut taken = std::collections::HashSet::new();
        let mut deleted = std::collections::HashSet::new();
        let mut keep = Vec::with_capacity(batch.len());
        for (op, done) in batch {
            match &op {
                Op::Put(k, _) => {
                    let live = index.objects.contains_key(k) && !deleted.contains(k);
                    if live || taken.contains(k) {
                        let _ = done.send(Ok(Created::Exists));
                        continue;
                    }
                    taken.insert(k.clone());
                }
                Op::Delete(k) => {
                    taken.remove(k);
                    deleted.insert(k.clone());
                }
                Op::Reclaim(_) => {}
            }
            keep.push((op, done));
        }
        keep
    }

    /// Makes a durable batch visible to readers.
    fn publish(&self, batch: &[(Op, Done)], start: u64, modified_ms: u64) {
        let Ok(mut index) = self.index.write() else {
            return;
        };
        let mut offset = start;
        for (op, _) in batch {
            let len = op_size(op) as u64;
            match op {
                Op::Put(k, _) => {
                    let loc = Loc {
                        seg: self.active,
                        offset,
                        len: len as u32,
                        modified_ms,
                    };
                    index.set(k, Some(loc));
                }
                Op::Delete(k) => index.set(k, None),
                Op::Reclaim(_) => {}
            }
            offset += len;
        }
    }

    /// Rewrites the oldest closed segment whose live records fill at most
    /// half of it (see the module header); returns its number, or `None`
    /// when no segment is worth it.
    fn reclaim(&mut self, crash: Option<Crash>) -> std::io::Result<Option<u64>> {
        let lock_err = || std::io::Error::other("index lock poisoned");
        let (seg, file, oldest, live) = {
            let index = self.index.read().map_err(|_| lock_err())?;
            let mut candidates: Vec<(u64, Arc<File>)> = Vec::new();
            for (&n, f) in &index.segments {
                let size = f.metadata()?.len();
                let live = index.live.get(&n).copied().unwrap_or(0);
                if n != self.active && size > 0 && live * 2 <= size {
                    candidates.push((n, f.clone()));
                }
            }
            let Some((seg, file)) = candidates.into_iter().min_by_key(|(n, _)| *n) else {
                return Ok(None);
            };
            let oldest = index.segments.keys().min().copied() == Some(seg);
            let live: Vec<(String, Loc)> = index
                .objects
                .iter()
                .filter(|(_, l)| l.seg == seg)
                .map(|(k, l)| (k.clone(), *l))
                .collect();
            (seg, file, oldest, live)
        };
        // The records to carry, byte for byte: live puts, and tombstones
        // unless this is the oldest segment.
        let mut records: Vec<Carried> = Vec::new();
        for (key, loc) in live {
            let mut rec = vec![0u8; loc.len as usize];
            file.read_exact_at(&mut rec, loc.offset)?;
            records.push((Some((key, loc)), rec));
        }
        if !oldest {
            for rec in tombstones(&file)? {
                records.push((None, rec));
            }
        }
        let mut chunks: Vec<Vec<Carried>> = vec![Vec::new()];
        let mut size = 0;
        for r in records {
            if size + r.1.len() > BATCH_BYTES && size > 0 {
                chunks.push(Vec::new());
                size = 0;
            }
            size += r.1.len();
            if let Some(c) = chunks.last_mut() {
                c.push(r);
            }
        }
        for chunk in chunks.into_iter().filter(|c| !c.is_empty()) {
            let buf: Vec<u8> = chunk.iter().flat_map(|(_, r)| r.iter().copied()).collect();
            if crash == Some(Crash::TornCopies) {
                let active = self
                    .index
                    .read()
                    .ok()
                    .and_then(|i| i.segments.get(&self.active).cloned());
                if let Some(f) = active {
                    f.write_all_at(&buf[..buf.len() / 2], self.len)?;
                }
                return Ok(None);
            }
            let start = self.append(&buf)?;
            let mut index = self.index.write().map_err(|_| lock_err())?;
            let mut offset = start;
            for (put, rec) in &chunk {
                if let Some((key, old)) = put {
                    let copy = Loc {
                        seg: self.active,
                        offset,
                        len: old.len,
                        modified_ms: old.modified_ms,
                    };
                    index.set(key, Some(copy));
                }
                offset += rec.len() as u64;
            }
        }
        if crash == Some(Crash::BeforeUnlink) {
            return Ok(None);
        }
        {
            let mut index = self.index.write().map_err(|_| lock_err())?;
            index.segments.remove(&seg);
            index.live.remove(&seg);
        }
        std::fs::remove_file(segment_path(&self.root, seg))?;
        File::open(&self.root)?.sync_all()?;
        Ok(Some(seg))
    }
}

/// A record a rewrite carries over: the live object it holds (`None` for a
/// tombstone) and its bytes.
type Carried = (Option<(String, Loc)>, Vec<u8>);

/// The raw bytes of every tombstone record in a (closed, whole) segment.
fn tombstones(file: &File) -> std::io::Result<Vec<Vec<u8>>> {
    let size = file.metadata()?.len();
    let mut out = Vec::new();
    let mut offset = 0u64;
    while offset + HEADER as u64 <= size {
        let mut h = [0u8; HEADER];
        file.read_exact_at(&mut h, offset)?;
        let Some(hd) = parse_header(&h) else { break };
        let len = (HEADER + hd.key_len + hd.body_len) as u64;
        if hd.kind == KIND_DELETE {
            let mut rec = vec![0u8; len as usize];
            file.read_exact_at(&mut rec, offset)?;
            out.push(rec);
        }
        offset += len;
    }
    Ok(out)
}

fn op_size(op: &Op) -> usize {
    match op {
        Op::Put(k, b) => HEADER + k.len() + b.len(),
        Op::Delete(k) => HEADER + k.len(),
        Op::Reclaim(_) => 0,
    }
}

fn check_local_key(key: &str) -> Result<(), LakeError> {
    check_key(key)?;
    if key.len() > u16::MAX as usize {
        return Err(LakeError::invalid("object key is too long"));
    }
    Ok(())
}

#[async_trait]
impl Store for LocalStore {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<Created, LakeError> {
        check_local_key(key)?;
        if body.len() > MAX_BODY {
            return Err(LakeError::invalid(format!(
                "object '{key}' of {} bytes is too large for the local store",
                body.len()
            )));
        }
        self.submit(Op::Put(key.to_string(), body)).await
    }

    /// Reads from the page cache in the calling task: objects are small and
    /// recent segments are hot, so a blocking-pool hop would cost more than
    /// the read.
    async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError> {
        check_local_key(key)?;
        let found = self
            .index
            .read()
            .map_err(|_| LakeError::internal("local store index lock poisoned"))
            .map(|i| {
                i.objects
                    .get(key)
                    .and_then(|loc| i.segments.get(&loc.seg).map(|f| (*loc, f.clone())))
            })?;
        let Some((loc, file)) = found else {
            return Err(LakeError::data(format!(
                "object '{key}' is missing from the store"
            )));
        };
        let mut rec = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut rec, loc.offset)
            .map_err(|e| LakeError::unavailable(format!("cannot read object '{key}': {e}")))?;
        let damaged = || LakeError::data(format!("object '{key}' is damaged in the local store"));
        let h: &[u8; HEADER] = rec[..HEADER].try_into().map_err(|_| damaged())?;
        let hd = parse_header(h).ok_or_else(damaged)?;
        if crc32fast::hash(&rec[8..]) != hd.crc
            || &rec[HEADER..HEADER + hd.key_len] != key.as_bytes()
        {
            return Err(damaged());
        }
        rec.drain(..HEADER + hd.key_len);
        Ok(rec)
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, LakeError> {
        let index = self
            .index
            .read()
            .map_err(|_| LakeError::internal("local store index lock poisoned"))?;
        Ok(index
            .objects
            .iter()
            .map(|(k, loc)| ObjectInfo {
                key: k.clone(),
                size: (loc.len as usize).saturating_sub(HEADER + k.len()) as u64,
                modified: UNIX_EPOCH + Duration::from_millis(loc.modified_ms),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        check_local_key(key)?;
        let present = self
            .index
            .read()
            .map_or(true, |i| i.objects.contains_key(key));
        if !present {
            return Ok(());
        }
        self.submit(Op::Delete(key.to_string())).await.map(drop)
    }

    async fn health(&self) -> Result<(), LakeError> {
        let meta = std::fs::metadata(&self.root).map_err(|e| {
            LakeError::unavailable(format!("store {} is missing: {e}", self.describe()))
        })?;
        if !meta.is_dir() {
            return Err(LakeError::unavailable(format!(
                "store {} is not a directory",
                self.describe()
            )));
        }
        let active = self.index.read().ok().and_then(|i| {
            i.segments
                .keys()
                .max()
                .and_then(|n| i.segments.get(n).cloned())
        });
        match active.map(|f| f.metadata().map(|m| m.nlink())) {
            Some(Ok(n)) if n > 0 => Ok(()),
            _ => Err(LakeError::unavailable(format!(
                "store {}: its active segment was deleted; restart the sidecar",
                self.describe()
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("local://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_shared::ErrorKind;

    fn open(dir: &Path) -> LocalStore {
        LocalStore::open(dir.to_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn put_never_overwrites_even_within_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open(dir.path()));
        assert_eq!(
            s.put("a/x.json", b"first".to_vec()).await.unwrap(),
            Created::New
        );
        assert_eq!(
            s.put("a/x.json", b"second".to_vec()).await.unwrap(),
            Created::Exists
        );
        assert_eq!(s.get("a/x.json").await.unwrap(), b"first");
        // Many puts of one new key at once: exactly one is created.
        let puts = (0..20u8).map(|i| {
            let s = s.clone();
            async move { s.put("a/y.json", vec![i]).await.unwrap() }
        });
        let created = futures::future::join_all(puts).await;
        assert_eq!(created.iter().filter(|c| **c == Created::New).count(), 1);
        // Deleted, the name is free again (and the old bytes stay gone).
        s.delete("a/x.json").await.unwrap();
        assert_eq!(
            s.put("a/x.json", b"third".to_vec()).await.unwrap(),
            Created::New
        );
        drop(s);
        let s = open(dir.path());
        assert_eq!(s.get("a/x.json").await.unwrap(), b"third");
    }

    #[tokio::test]
    async fn round_trip_missing_delete_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.put("a/x.json", b"{\"v\":1}".to_vec()).await.unwrap();
        s.put("a/y.json", b"[]".to_vec()).await.unwrap();
        assert_eq!(s.get("a/x.json").await.unwrap(), b"{\"v\":1}");
        let e = s.get("a/z.json").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Data);
        assert!(e.message.contains("a/z.json"));
        s.delete("a/x.json").await.unwrap();
        s.delete("a/never.json").await.unwrap();
        assert_eq!(s.get("a/x.json").await.unwrap_err().kind, ErrorKind::Data);
        let keys: Vec<String> = s.list().await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["a/y.json".to_string()]);
        assert!(s.put("../escape.json", vec![]).await.is_err());
    }

    #[tokio::test]
    async fn reopen_replays_puts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            for i in 0..100u32 {
                s.put(&format!("c/{i}.json"), i.to_string().into_bytes())
                    .await
                    .unwrap();
            }
            s.delete("c/7.json").await.unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.get("c/99.json").await.unwrap(), b"99");
        assert_eq!(s.get("c/7.json").await.unwrap_err().kind, ErrorKind::Data);
        assert_eq!(s.list().await.unwrap().len(), 99);
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let _s = open(dir.path());
        let e = LocalStore::open(dir.path().to_str().unwrap())
            .err()
            .unwrap();
        assert!(e.message.contains("in use"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_and_earlier_objects_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.put("c/a.json", b"{\"a\":1}".to_vec()).await.unwrap();
            s.put("c/b.json", vec![b'7'; 1000]).await.unwrap();
        }
        let seg = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        // A crash mid-write: the last record lost its end.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let s = open(dir.path());
        assert_eq!(s.get("c/a.json").await.unwrap(), b"{\"a\":1}");
        assert_eq!(s.get("c/b.json").await.unwrap_err().kind, ErrorKind::Data);
        // New writes go after the cut, and survive another reopen.
        s.put("c/c.json", b"3".to_vec()).await.unwrap();
        drop(s);
        let s = open(dir.path());
        assert_eq!(s.get("c/c.json").await.unwrap(), b"3");
    }

    #[tokio::test]
    async fn flipped_bits_are_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.put("c/a.json", vec![b'x'; 100]).await.unwrap();
        let seg = segment_path(dir.path(), 1);
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"y", (HEADER + 8 + 50) as u64).unwrap();
        let e = s.get("c/a.json").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Data);
        assert!(e.message.contains("damaged"), "{}", e.message);
    }

    #[tokio::test]
    async fn damage_inside_a_closed_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.put("c/a.json", vec![b'x'; 100]).await.unwrap();
        }
        // A second segment makes the first one closed.
        std::fs::File::create(segment_path(dir.path(), 2)).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 1))
            .unwrap();
        f.write_all_at(b"y", (HEADER + 20) as u64).unwrap();
        let e = LocalStore::open(dir.path().to_str().unwrap())
            .err()
            .unwrap();
        assert_eq!(e.kind, ErrorKind::Data);
        assert!(e.message.contains("damaged"), "{}", e.message);
    }

    #[tokio::test]
    async fn concurrent_puts_share_flushes_and_all_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open(dir.path()));
        let mut tasks = Vec::new();
        for t in 0..32u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u32 {
                    s.put(&format!("c/{t}-{i}.json"), vec![t as u8; 1024 + i as usize])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for t in 0..32u32 {
            for i in 0..50u32 {
                let b = s.get(&format!("c/{t}-{i}.json")).await.unwrap();
                assert_eq!(b.len(), 1024 + i as usize);
                assert!(b.iter().all(|&x| x == t as u8));
            }
        }
    }

    #[tokio::test]
    async fn a_deleted_segment_fails_writes_and_health() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let s = open(&root);
        s.put("c/a.json", b"1".to_vec()).await.unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let e = s.put("c/b.json", b"2".to_vec()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("deleted"), "{}", e.message);
        assert_eq!(s.health().await.unwrap_err().kind, ErrorKind::Unavailable);
    }
    fn sized(dir: &Path) -> LocalStore {
        LocalStore::open_with(dir.to_str().unwrap(), 4096).unwrap()
    }

    /// About 290 bytes with its record header: 14 fill a 4096-byte segment.
    fn body(i: usize) -> Vec<u8> {
        format!("{{\"v\":\"{i:03}{}\"}}", "x".repeat(250)).into_bytes()
    }

    /// Rewrites until nothing is worth it; returns the rewrites done.
    async fn reclaim_all(s: &LocalStore) -> usize {
        let mut n = 0;
        loop {
            let before = s.disk_bytes();
            s.reclaim_now().await.unwrap();
            if s.disk_bytes() == before {
                return n;
            }
            n += 1;
        }
    }

    async fn check(s: &LocalStore, live: &[usize], dead: &[usize]) {
        for &i in live {
            assert_eq!(s.get(&format!("c/{i}.json")).await.unwrap(), body(i), "{i}");
        }
        for &i in dead {
            let e = s.get(&format!("c/{i}.json")).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Data, "{i} came back");
        }
        let mut listed: Vec<String> = s.list().await.unwrap().into_iter().map(|o| o.key).collect();
        listed.sort();
        let mut want: Vec<String> = live.iter().map(|i| format!("c/{i}.json")).collect();
        want.sort();
        assert_eq!(listed, want);
    }

    #[tokio::test]
    async fn the_space_of_deleted_objects_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = sized(dir.path());
        for i in 0..120 {
            s.put(&format!("c/{i}.json"), body(i)).await.unwrap();
        }
        let (live, dead): (Vec<usize>, Vec<usize>) = (0..120).partition(|i| i % 4 == 0);
        for &i in &dead {
            s.delete(&format!("c/{i}.json")).await.unwrap();
        }
        let before = s.disk_bytes();
        let t0 = s.list().await.unwrap();
        assert!(reclaim_all(&s).await > 0);
        assert!(
            s.disk_bytes() * 2 < before,
            "{} -> {}",
            before,
            s.disk_bytes()
        );
        check(&s, &live, &dead).await;
        // Rewritten objects keep their time (GC's grace depends on it).
        let t1 = s.list().await.unwrap();
        for o in &t0 {
            if let Some(n) = t1.iter().find(|n| n.key == o.key) {
                assert_eq!(n.modified, o.modified, "{}", o.key);
            }
        }
        drop(s);
        let s = sized(dir.path());
        check(&s, &live, &dead).await;
    }

    /// A segment holding tombstones of objects whose puts sit in an older
    /// segment is rewritten with a crash at each point: after reopening,
    /// nothing acknowledged is lost and nothing deleted comes back.
    #[tokio::test]
    async fn a_crash_during_a_rewrite_loses_nothing_and_revives_nothing() {
        for crash in [Crash::TornCopies, Crash::BeforeUnlink] {
            let dir = tempfile::tempdir().unwrap();
            let s = sized(dir.path());
            // Segment 1: objects 0..14, mostly kept.
            for i in 0..14 {
                s.put(&format!("c/{i}.json"), body(i)).await.unwrap();
            }
            // Later segments: deletes of 0..4, and objects 100..129, all
            // deleted again, so they hold tombstones and little else.
            for i in 0..4 {
                s.delete(&format!("c/{i}.json")).await.unwrap();
            }
            for i in 100..130 {
                s.put(&format!("c/{i}.json"), body(i)).await.unwrap();
            }
            for i in 100..129 {
                s.delete(&format!("c/{i}.json")).await.unwrap();
            }
            let live: Vec<usize> = (4..14).chain([129]).collect();
            let dead: Vec<usize> = (0..4).chain(100..129).collect();
            check(&s, &live, &dead).await;
            // The puts of 0..4 are in segment 1, their tombstones in 2.
            assert_eq!(s.index.read().unwrap().objects["c/4.json"].seg, 1);
            s.crash_during_reclaim(crash).await;
            drop(s);
            let s = sized(dir.path());
            check(&s, &live, &dead).await;
            assert!(reclaim_all(&s).await > 0, "{crash:?}");
            check(&s, &live, &dead).await;
            drop(s);
            let s = sized(dir.path());
            check(&s, &live, &dead).await;
        }
    }
}
