//! The channel client: sends requests to the sidecar and completes each one
//! exactly once, from a background thread, never from Redis's main thread.
//!
//! Threads:
//! - writer: owns the connection; (re)connects and handshakes on demand,
//!   writes queued frames, flushing when the queue is empty;
//! - reader (one per connection): reads responses and completes the matching
//!   pending requests: every answer that already arrived is completed in one
//!   batch, under one acquisition of the Redis lock (never waiting for more
//!   answers to fill a batch);
//! - sweeper: completes every request whose deadline passed with `TIMEOUT`.
//!
//! Invariants:
//! - A request is registered with its deadline before it is queued, so it is
//!   answered within the timeout whatever the writer or the sidecar does.
//! - Removal from the pending map is the single point of completion: exactly
//!   one of response, connection loss, or deadline wins; a late response for
//!   a timed-out request finds nothing and is dropped (no index entry is ever
//!   made for a write the client was told failed).
//! - The pending map's lock is never held while taking the Redis lock, and
//!   never while decoding an answer (the main thread takes it on every
//!   command).
//! - What waits for the writer is bounded: at most [`MAX_QUEUED_BYTES`] of
//!   frames (beyond that a request is answered `LAKEBUSY` at once), and a
//!   connect gives up after [`CONNECT_TIMEOUT`] at most, so a frozen sidecar
//!   cannot make Redis buffer without bound or wait for ever.
//! - Completions run without the Redis lock: they hand their client's answer
//!   to Redis's main thread (`blocked.rs`), which commits and replies there.
//!   Only messages the sidecar sends on its own (background snapshots, which
//!   have no client) are committed under the lock, batched.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lake_shared::proto::{self, Hello, Request, Response, UNSOLICITED_ID};
use lake_shared::LakeError;

use crate::config;
use redis_module::{Context, ContextFlags, ThreadSafeContext};

/// Most bytes of frames queued for the writer; past it requests get
/// `LAKEBUSY` instead of piling up in Redis's memory.
pub const MAX_QUEUED_BYTES: usize = 256 << 20;
/// Longest a connect to the sidecar's socket may take (a frozen sidecar's
/// full backlog would otherwise block the writer for ever).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Completes one request with the sidecar's answer or an error, on a
/// background thread, without the Redis lock.
pub type Completion = Box<dyn FnOnce(Result<Response, LakeError>) + Send>;
/// Handles a message the sidecar sent on its own, with the Redis lock held.
pub type Unsolicited = fn(&Context, Response);

struct Pending {
    deadline: Instant,
    /// Connection generation the request was written on (0: not yet).
    conn: u64,
    done: Completion,
}

struct Shared {
    socket: std::path::PathBuf,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    /// Generation of the newest connection the reader saw fail.
    broken: AtomicU64,
    /// Bytes of frames queued for the writer and not yet taken.
    queued: AtomicUsize,
    /// The connected sidecar said its store is `local://` (one machine's
    /// disk): wrong under replication or in a cluster.
    local_store: AtomicBool,
    /// Generation of the handshaken connection that is open (0: none).
    /// Whoever sees a connection fail clears it only if it still names that
    /// connection, so a late reader cannot mark a newer one down.
    connected: AtomicU64,
    unsolicited: Unsolicited,
}

pub struct Client {
    shared: Arc<Shared>,
    tx: crossbeam_channel::Sender<(u64, Vec<u8>)>,
}

impl Client {
    pub fn start(socket: std::path::PathBuf, unsolicited: Unsolicited) -> std::io::Result<Client> {
        let shared = Arc::new(Shared {
            socket,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            broken: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            local_store: AtomicBool::new(false),
            connected: AtomicU64::new(0),
            unsolicited,
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("lake-writer".into())
            .spawn(move || writer_loop(s, rx))?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("lake-sweeper".into())
            .spawn(move || sweeper_loop(s))?;
        Ok(Client { shared, tx })
    }

    /// Registers a request and queues it. `done` runs exactly once, on a
    /// background thread, within the timeout.
    /// Refuses new work with `LAKEBUSY` when `max_inflight` requests are
    /// already waiting, so a stalled sidecar cannot make Redis buffer without
    /// bound. Only the main thread adds requests, so the check cannot race
    /// another submit.
    pub fn check_room(&self) -> Result<(), LakeError> {
        let n = self.shared.pending.lock().map_or(0, |m| m.len());
        let max = config::max_inflight();
        if n >= max {
            return Err(LakeError::busy(format!(
                "{n} requests are waiting for the sidecar (max-inflight {}); retry later",
                max
            )));
        }
        Ok(())
    }

    /// Whether a handshaken connection to the sidecar is open.
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire) != 0
    }

    /// Requests waiting for the sidecar's answer.
    pub fn in_flight(&self) -> usize {
        self.shared.pending.lock().map_or(0, |m| m.len())
    }

    /// Whether the sidecar (as of its last handshake) stores objects in
    /// `local://`, which no other node can read.
    pub fn local_store(&self) -> bool {
        self.shared.local_store.load(Ordering::Acquire)
    }

    pub fn submit(&self, req: &Request, done: Completion) {
        self.submit_with_tail(req, &[], done)
    }

    /// Like [`Client::submit`], with `tail` copied after the message (a
    /// `Put`'s value).
    pub fn submit_with_tail(&self, req: &Request, tail: &[u8], done: Completion) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = proto::encode_with_tail(id, req, tail);
        let pending = Pending {
            deadline: Instant::now() + config::timeout(),
            conn: 0,
            done,
        };
        let len = frame.len();
        let queued = self.shared.queued.fetch_add(len, Ordering::AcqRel);
        if queued > 0 && queued + len > MAX_QUEUED_BYTES {
            self.shared.queued.fetch_sub(len, Ordering::AcqRel);
            return (pending.done)(Err(LakeError::busy(format!(
                "{queued} bytes are already queued for the sidecar (at most {MAX_QUEUED_BYTES}); retry later"
            ))));
        }
        if let Ok(mut map) = self.shared.pending.lock() {
            map.insert(id, pending);
        }
        if self.tx.send((id, frame)).is_err() {
            self.shared.queued.fetch_sub(len, Ordering::AcqRel);
            self.shared
                .complete(id, Err(LakeError::internal("channel writer stopped")));
        }
    }
}

impl Shared {
    /// Records that connection `generation` failed, before its requests are
    /// failed, so whoever is told `LAKEDOWN` then sees it down in `INFO`.
    fn mark_down(&self, generation: u64) {
        let _ = self
            .connected
            .compare_exchange(generation, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Completes `id` if it is still pending.
    fn complete(&self, id: u64, res: Result<Response, LakeError>) {
        let entry = self.pending.lock().ok().and_then(|mut m| m.remove(&id));
        if let Some(p) = entry {
            run_completions(vec![(p.done, res)]);
        }
    }

    /// Fails every request written on connection `conn`.
    fn fail_connection(&self, conn: u64, why: &str) {
        let failed: Vec<Pending> = match self.pending.lock() {
            Ok(mut m) => {
                let ids: Vec<u64> = m
                    .iter()
                    .filter(|(_, p)| p.conn == conn)
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter().filter_map(|id| m.remove(&id)).collect()
            }
            Err(_) => Vec::new(),
        };
        let err = LakeError::unavailable(why.to_string());
        run_completions(
            failed
                .into_iter()
                .map(|p| (p.done, Err(err.clone())))
                .collect(),
        );
    }
}

/// Runs completions (without the lock), then commits unsolicited messages
/// under one acquisition of the Redis lock. A panic inside one is contained
/// and the others still run.
fn run_completions(batch: Vec<(Completion, Result<Response, LakeError>)>) {
    run_answers(
        batch
            .into_iter()
            .map(|(done, res)| Answer::Done(done, res))
            .collect(),
        |_, _| {},
    );
}

fn run_answers(answers: Vec<Answer>, unsolicited: Unsolicited) {
    let mut own = Vec::new();
    for a in answers {
        match a {
            Answer::Done(done, res) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(res)));
            }
            Answer::Unsolicited(r) => own.push(r),
        }
    }
    if own.is_empty() {
        return;
    }
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    for r in own {
        let ctx: &Context = &ctx;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || unsolicited(ctx, r)));
    }
}

/// Logs, from the connecting thread under the Redis lock, that a `local://`
/// sidecar serves a replica or a cluster node.
fn local_store_warning() {
    let tsc = ThreadSafeContext::new();
    let ctx = tsc.lock();
    let flags = ctx.get_flags();
    if flags.intersects(ContextFlags::CLUSTER | ContextFlags::SLAVE) {
        crate::reply::warning(
            &ctx,
            "lake: the sidecar stores objects in local:// (one machine's disk), but this node is a replica or in a cluster: other nodes cannot read those objects. Use s3:// or a file:// directory every sidecar shares.",
        );
    }
}

struct Conn {
    generation: u64,
    out: BufWriter<UnixStream>,
}

fn connect(shared: &Arc<Shared>, generation: u64) -> Result<Conn, LakeError> {
    let down = |e: std::io::Error| {
        LakeError::unavailable(format!(
            "sidecar unreachable at {}: {e}",
            shared.socket.display()
        ))
    };
    let stream =
        connect_within(&shared.socket, CONNECT_TIMEOUT.min(config::timeout())).map_err(down)?;
    let handshake = config::timeout().min(Duration::from_secs(2));
    stream.set_read_timeout(Some(handshake)).map_err(down)?;
    stream
        .set_write_timeout(Some(config::timeout()))
        .map_err(down)?;
    let hello = Request::Hello(Hello {
        magic: proto::MAGIC.into(),
        version: proto::VERSION,
    });
    (&stream)
        .write_all(&proto::encode(UNSOLICITED_ID, &hello))
        .map_err(down)?;
    let mut rd = BufReader::with_capacity(64 * 1024, stream.try_clone().map_err(down)?);
    match proto::read_frame(&mut rd, proto::MAX_FRAME_BYTES).map_err(down)? {
        Some((_, payload)) => match proto::decode::<Response>(&payload) {
            Ok(Response::HelloOk(ok)) => {
                // Another sidecar may merge with other custom modes.
                crate::reply_cache::clear();
                shared.local_store.store(ok.local_store, Ordering::Release);
                if ok.local_store {
                    local_store_warning();
                }
            }
            _ => {
                return Err(LakeError::unavailable(
                    "sidecar refused the handshake (version mismatch?)",
                ))
            }
        },
        None => {
            return Err(LakeError::unavailable(
                "sidecar closed the connection during the handshake",
            ))
        }
    }
    rd.get_ref().set_read_timeout(None).map_err(down)?;
    shared.connected.store(generation, Ordering::Release);
    let s = shared.clone();
    std::thread::Builder::new()
        .name("lake-reader".into())
        .spawn(move || reader_loop(s, rd, generation))
        .map_err(down)?;
    Ok(Conn {
        generation,
        out: BufWriter::with_capacity(64 * 1024, stream),
    })
}

/// Connects to a Unix socket, giving up after `within`.
fn connect_within(path: &std::path::Path, within: Duration) -> std::io::Result<UnixStream> {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    sock.connect_timeout(&socket2::SockAddr::unix(path)?, within)?;
    Ok(sock.into())
}

fn writer_loop(shared: Arc<Shared>, rx: crossbeam_channel::Receiver<(u64, Vec<u8>)>) {
    let mut conn: Option<Conn> = None;
    let mut generation = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        let taken: usize = batch.iter().map(|(_, f)| f.len()).sum();
        shared.queued.fetch_sub(taken, Ordering::AcqRel);
        if conn
            .as_ref()
            .is_some_and(|c| shared.broken.load(Ordering::Acquire) >= c.generation)
        {
            conn = None;
        }
        if conn.is_none() {
            generation += 1;
            match connect(&shared, generation) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    for (id, _) in batch {
                        shared.complete(id, Err(e.clone()));
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut ok = true;
        for (id, frame) in &batch {
            let live = match shared.pending.lock() {
                Ok(mut m) => m.get_mut(id).map(|p| p.conn = c.generation).is_some(),
                Err(_) => false,
            };
            if live && c.out.write_all(frame).is_err() {
                ok = false;
                break;
            }
        }
        if ok && c.out.flush().is_err() {
            ok = false;
        }
        if !ok {
            let g = c.generation;
            shared.mark_down(g);
            let _ = c.out.get_ref().shutdown(std::net::Shutdown::Both);
            conn = None;
            shared.fail_connection(g, "connection to the sidecar failed while sending");
            // Requests of this batch not yet marked are still pending: fail them too.
            for (id, _) in batch {
                shared.complete(
                    id,
                    Err(LakeError::unavailable(
                        "connection to the sidecar failed while sending",
                    )),
                );
            }
        }
    }
}

/// Largest number of answers taken from the socket in one pass (one
/// pending-map lock; background snapshot commits share one Redis lock).
const MAX_BATCH: usize = 64;

enum Answer {
    Done(Completion, Result<Response, LakeError>),
    Unsolicited(Response),
}

fn reader_loop(shared: Arc<Shared>, mut rd: BufReader<UnixStream>, generation: u64) {
    let mut open = true;
    while open {
        let mut frames = Vec::new();
        match proto::read_frame(&mut rd, proto::MAX_FRAME_BYTES) {
            Ok(Some(f)) => frames.push(f),
            _ => break,
        }
        // Whatever else already arrived, without waiting for more.
        while frames.len() < MAX_BATCH && proto::frame_ready(rd.buffer()) {
            match proto::read_frame(&mut rd, proto::MAX_FRAME_BYTES) {
                Ok(Some(f)) => frames.push(f),
                _ => {
                    open = false;
                    break;
                }
            }
        }
        // Decoded before the pending map is locked: the main thread takes
        // that lock on every command.
        let decoded: Vec<(u64, Result<Response, LakeError>)> = frames
            .into_iter()
            .map(|(id, payload)| (id, proto::decode::<Response>(&payload)))
            .collect();
        let mut answers = Vec::with_capacity(decoded.len());
        if let Ok(mut m) = shared.pending.lock() {
            for (id, res) in decoded {
                if id == UNSOLICITED_ID {
                    if let Ok(r) = res {
                        answers.push(Answer::Unsolicited(r));
                    }
                } else if let Some(p) = m.remove(&id) {
                    answers.push(Answer::Done(p.done, res));
                }
            }
        }
        run_answers(answers, shared.unsolicited);
    }
    shared.mark_down(generation);
    shared.broken.fetch_max(generation, Ordering::AcqRel);
    let _ = rd.get_ref().shutdown(std::net::Shutdown::Both);
    shared.fail_connection(generation, "lost the connection to the sidecar");
}

fn sweeper_loop(shared: Arc<Shared>) {
    let tick = Duration::from_millis(5)
        .min(config::timeout() / 4)
        .max(Duration::from_millis(1));
    loop {
        std::thread::sleep(tick);
        let now = Instant::now();
        let expired: Vec<Pending> = match shared.pending.lock() {
            Ok(mut m) => {
                let ids: Vec<u64> = m
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter().filter_map(|id| m.remove(&id)).collect()
            }
            Err(_) => Vec::new(),
        };
        let ms = config::timeout().as_millis();
        let err = LakeError::timeout(format!("no answer from the sidecar within {ms} ms"));
        run_completions(
            expired
                .into_iter()
                .map(|p| (p.done, Err(err.clone())))
                .collect(),
        );
    }
}
