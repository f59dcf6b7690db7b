//! The Unix-socket channel the module talks to.
//!
//! One task reads frames from a connection and spawns one task per request;
//! one task writes responses back in completion order, flushing when it runs
//! out of queued frames. Request ids let many requests share a connection.
//!
//! Invariants:
//! - The socket file is created with mode 0600: only the sidecar's user (and
//!   root) can connect.
//! - The first frame must be a matching `Hello`; anything else drops the peer.
//! - At most `max_inflight` requests are served at once across all
//!   connections; one more is answered `LAKEBUSY` at once instead of queueing
//!   without bound.
//! - A malformed frame closes the connection; its in-flight requests still
//!   finish, but their answers are dropped (the module times them out).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lake_shared::proto::{self, Doc, HelloOk, Request, Response, UNSOLICITED_ID};
use lake_shared::LakeError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};

use crate::metrics::Metrics;
use crate::service::{Deferred, Service};

/// Binds the socket, replacing a stale socket file left by a dead sidecar.
/// With `group` (a name from /etc/group or a numeric gid), the socket gets
/// that group and mode 0660, so a Redis running as another user of the group
/// can connect; without it, mode 0600.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another process is already serving {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    let mode = match group {
        Some(g) => {
            let gid = resolve_group(g)?;
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| format!("cannot give {} to group {g}: {e}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set permissions on {}: {e}", path.display()))?;
    Ok(listener)
}

/// A group name (looked up in /etc/group) or a numeric gid.
fn resolve_group(g: &str) -> Result<u32, String> {
    if let Ok(gid) = g.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group: {e}"))?;
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(g))
                .then(|| f.nth(1).and_then(|gid| gid.parse().ok()))
                .flatten()
        })
        .ok_or_else(|| format!("unknown group '{g}'"))
}

/// Removes the socket file when dropped (explicit shutdown).
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Accepts connections until the listener fails.
pub async fn serve(listener: UnixListener, service: Arc<Service>, max_inflight: usize) {
    let limit = Arc::new(Semaphore::new(max_inflight));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                Metrics::inc(&service.metrics.connections_total);
                tokio::spawn(connection(stream, service.clone(), limit.clone()));
            }
            Err(e) => {
                eprintln!("lake-sidecar: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(u64, Vec<u8>)>, LakeError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(LakeError::unavailable(e.to_string())),
    }
    let body = proto::check_len(u32::from_be_bytes(len), proto::MAX_FRAME_BYTES)?;
    let mut header = [0u8; proto::HEADER_BYTES];
    r.read_exact(&mut header)
        .await
        .map_err(|e| LakeError::unavailable(e.to_string()))?;
    let id = proto::parse_header(&header)?;
    let mut payload = Vec::new();
    (&mut *r)
        .take(body as u64)
        .read_to_end(&mut payload)
        .await
        .map_err(|e| LakeError::unavailable(e.to_string()))?;
    if payload.len() != body {
        return Err(LakeError::unavailable("truncated frame"));
    }
    Ok(Some((id, payload)))
}

async fn connection(stream: UnixStream, service: Arc<Service>, limit: Arc<Semaphore>) {
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();

    // Handshake.
    let hello = match read_frame(&mut rd).await {
        Ok(Some((id, payload))) => match proto::decode::<Request>(&payload) {
            Ok(Request::Hello(h)) if h.magic == proto::MAGIC && h.version == proto::VERSION => {
                Some(id)
            }
            _ => None,
        },
        _ => None,
    };
    let Some(hello_id) = hello else {
        Metrics::inc(&service.metrics.handshake_failures_total);
        return;
    };
    let _ = tx.send(proto::encode(
        hello_id,
        &Response::HelloOk(HelloOk {
            version: proto::VERSION,
            local_store: service.store.describe().starts_with("local://"),
        }),
    ));

    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(64 * 1024, wr);
        while let Some(frame) = rx.recv().await {
            if w.write_all(&frame).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if w.write_all(&more).await.is_err() {
                    return;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });

    loop {
        let (id, payload) = match read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                eprintln!("lake-sidecar: dropping connection: {}", e.message);
                break;
            }
        };
        let req = match proto::decode_request(&payload) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(proto::encode(id, &Response::Error(e)));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            Metrics::inc(&service.metrics.busy_total);
            let e = LakeError::busy("sidecar has too many requests in flight; retry later");
            let _ = tx.send(proto::encode(id, &Response::Error(e)));
            continue;
        };
        let service = service.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            service.metrics.inflight.inc();
            handle(&service, id, req, &tx).await;
            service.metrics.inflight.dec();
        });
    }
    drop(tx);
    let _ = writer.await;
}

async fn handle(
    service: &Arc<Service>,
    id: u64,
    req: Request,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) {
    let start = Instant::now();
    let (name, resp) = match req {
        Request::Hello(_) => (
            "hello",
            Response::Error(LakeError::invalid("handshake already done")),
        ),
        Request::Put(p) => ("write", answer(service.put(p).await, Response::Stored)),
        Request::Gc(g) => ("gc", answer(service.gc.run(g).await, Response::GcDone)),
        Request::Ship(s) => {
            let n = s.entries.len() as u64;
            let res = crate::backup::ship(&*service.store, s.entries).await;
            if res.is_ok() {
                Metrics::inc(&service.metrics.store_puts_total);
                Metrics::inc(&service.metrics.journal_batches_total);
                service.metrics.journal_entries_total.inc_by(n);
            }
            ("ship", answer(res, Response::Shipped))
        }
        Request::GcRefs(r) => ("gc", answer(service.gc.refs(r), |()| Response::GcRefsOk)),
        Request::Values(v) => ("values", answer(service.values(v).await, Response::Values)),
        Request::Read(r) => {
            let res = service.read(r).await;
            return answer_read(service, id, ("read", start), res, tx).await;
        }
        Request::View(v) => {
            let res = service.view(v).await;
            return answer_read(service, id, ("view", start), res, tx).await;
        }
    };
    service.metrics.request(name, start, error_kind(&resp));
    let _ = tx.send(proto::encode(id, &resp));
}

/// The response of a request's result.
fn answer<T>(res: Result<T, LakeError>, ok: impl FnOnce(T) -> Response) -> Response {
    res.map_or_else(Response::Error, ok)
}

fn error_kind(resp: &Response) -> Option<lake_shared::ErrorKind> {
    match resp {
        Response::Error(e) => Some(e.kind),
        _ => None,
    }
}

/// Answers a read (or a view), then builds the background snapshot it
/// deferred and announces it.
/// `timed` names the request and when it began: its time is recorded
/// when the answer goes out, before any snapshot is built.
async fn answer_read(
    service: &Arc<Service>,
    id: u64,
    timed: (&'static str, Instant),
    res: Result<(Doc, Option<Deferred>), LakeError>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) {
    let (name, start) = timed;
    let (doc, deferred) = match res {
        Ok(r) => r,
        Err(e) => {
            service.metrics.request(name, start, Some(e.kind));
            let _ = tx.send(proto::encode(id, &Response::Error(e)));
            return;
        }
    };
    service.metrics.request(name, start, None);
    let _ = tx.send(proto::encode(id, &Response::Doc(doc)));
    if let Some(d) = deferred {
        match service.finish(d).await {
            Ok(stored) => {
                let _ = tx.send(proto::encode(
                    UNSOLICITED_ID,
                    &Response::SnapshotStored(stored),
                ));
            }
            Err(e) => eprintln!("lake-sidecar: background snapshot failed: {}", e.message),
        }
    }
}
