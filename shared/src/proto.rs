//! The module<->sidecar wire protocol: length-prefixed, versioned frames over
//! a Unix socket, each carrying a request id so many requests are in flight
//! on one connection and complete in any order.
//!
//! Frame: `u32 len (BE) | u8 version | u64 id (BE) | payload`, where `len`
//! counts everything after itself and the payload is one JSON-encoded message
//! ([`Request`] from the module, [`Response`] from the sidecar). JSON values
//! ride inside as raw JSON text, never re-encoded.
//!
//! A connection opens with [`Hello`] / [`HelloOk`]; a peer that sends
//! anything else first is dropped. Id 0 is reserved for messages the sidecar
//! sends on its own ([`SnapshotStored`] after a background snapshot).
//!
//! The decoder never trusts a length: frames above the limit or below the
//! header size are rejected before any allocation, and bodies are read
//! incrementally.

use std::io::{self, Read as _};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::LakeError;

/// Protocol version carried in every frame and in the handshake.
pub const VERSION: u8 = 7;
/// Magic string of the handshake.
pub const MAGIC: &str = "lake";
/// Bytes after the length prefix that every frame has (version + id).
pub const HEADER_BYTES: usize = 1 + 8;
/// Largest frame accepted by default (a value of the maximum size, plus room).
pub const MAX_FRAME_BYTES: usize = 512 * 1024 * 1024;
/// The request id of unsolicited sidecar messages.
pub const UNSOLICITED_ID: u64 = 0;

/// First message on every connection, from the module.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub magic: String,
    pub version: u8,
}

/// Store one delta body. The module proposes a (version 4) uuid, so a
/// retried upload of a one-object delta overwrites the same object instead of
/// creating a second one; a store that batches writes into segments answers
/// with the (version 8) uuid that locates the record instead ([`Stored`]).
///
/// The value travels as the frame's tail, after the JSON message, exactly
/// as the client sent it: the module copies it into the frame and nothing
/// more (no parse on Redis's main thread); the sidecar checks that it is
/// UTF-8 JSON before storing anything.
#[derive(Debug, Serialize, Deserialize)]
pub struct Put {
    pub catalog: String,
    pub uuid: String,
    pub field: String,
    pub mode: String,
    /// The value's bytes (the frame's tail; see [`encode_with_tail`]).
    #[serde(skip)]
    pub value: Vec<u8>,
}

/// A snapshot as named in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapRef {
    pub uuid: String,
    pub covers: i64,
}

/// A delta as named in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRef {
    pub uuid: String,
    pub field: String,
    pub stamp: i64,
}

/// Whether the sidecar should build a snapshot from this read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotPolicy {
    /// Build none.
    Never,
    /// Build and store one before answering; the answer names it.
    Now,
    /// Answer first, then build and store one and announce it with
    /// [`SnapshotStored`].
    Background,
}

/// Merge a snapshot (or `{}`) with the deltas after it, in the given order.
/// Everything was read from the index in one command execution.
#[derive(Debug, Serialize, Deserialize)]
pub struct Read {
    pub catalog: String,
    pub path: Option<String>,
    pub base: Option<SnapRef>,
    pub deltas: Vec<DeltaRef>,
    pub snapshot: SnapshotPolicy,
    /// The catalog's removal fence when the index was read; a snapshot built
    /// from this read is committed only if the fence is unchanged.
    pub fence: i64,
}

/// Delete objects that no index entry references and that are older than
/// the grace period (orphans of failed or timed-out writes, dropped
/// catalogs, removed deltas, unused snapshots).
#[derive(Debug, Serialize, Deserialize)]
pub struct Gc {
    /// Object keys the index references, read in one command execution.
    pub referenced: Vec<String>,
    pub grace_secs: u64,
    pub dry_run: bool,
    /// In Redis Cluster, the hash slots (inclusive ranges) this node serves
    /// as a primary and is not moving: only objects of catalogs in these
    /// slots are considered, since every shard shares the store. `None`
    /// outside a cluster: every catalog is this node's.
    #[serde(default)]
    pub slots: Option<Vec<(u16, u16)>>,
    /// The GC session whose [`GcRefs`] chunks hold the referenced set (with
    /// `referenced` empty): the module streams a large index in bounded
    /// frames. Objects written after the session began are young by
    /// construction: the grace is counted from the session's start.
    #[serde(default)]
    pub session: Option<u64>,
    /// When the module's walk began, in Unix ms on the node's clock (the
    /// clock of journal stream ids): GC compares the index with the shipped
    /// backup as of then.
    #[serde(default)]
    pub began_ms: Option<u64>,
}

/// One bounded chunk of a GC session's referenced set; the first chunk of a
/// session opens it. Answered [`Response::GcRefsOk`]; the module sends the
/// next chunk only after that answer, so chunks apply in order.
#[derive(Debug, Serialize, Deserialize)]
pub struct GcRefs {
    pub session: u64,
    pub referenced: Vec<String>,
}

/// Journal entries to store as one batch object ([`crate::journal`]);
/// answered [`Response::Shipped`] once the object is durable, after which
/// the module trims them from its streams.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ship {
    pub entries: Vec<crate::journal::Entry>,
}

/// Compute view `view` (a `--views` file) over the document `read` merges
/// (its `path` is `None`); answered [`Response::Doc`] with the view's value.
#[derive(Debug, Serialize, Deserialize)]
pub struct View {
    pub view: String,
    pub read: Read,
}

/// The stored mode and value of each delta, for a change feed that asks
/// for them (`LAKE.CHANGES ... WITHVALUES`); answered [`Response::Values`]
/// in the same order, or an error naming the first that cannot be read.
#[derive(Debug, Serialize, Deserialize)]
pub struct Values {
    pub catalog: String,
    pub deltas: Vec<DeltaRef>,
}

/// One delta's body as its envelope holds it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeltaValue {
    pub mode: String,
    pub value: Box<RawValue>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Hello(Hello),
    Put(Put),
    Read(Read),
    Gc(Gc),
    GcRefs(GcRefs),
    Ship(Ship),
    View(View),
    Values(Values),
}

/// Handshake accepted.
#[derive(Debug, Serialize, Deserialize)]
pub struct HelloOk {
    pub version: u8,
    /// The sidecar's store is `local://`: one machine's disk, locked by one
    /// sidecar, so no replica or other cluster node can ever read it.
    #[serde(default)]
    pub local_store: bool,
}

/// The delta body is durably stored, under `uuid`: the one the module
/// proposed, or the one the sidecar chose to locate a segment record. The
/// module indexes `<field>:<uuid>` with this uuid, after checking its shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    pub uuid: String,
}

/// The merged document (or the value at the read's path; `None` when the path
/// is absent), and the snapshot stored from it when one was asked for `Now`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Doc {
    /// Sent as `[]` or `[<json>]`: a plain `Option` would send a JSON
    /// `null` document as `null` and read it back as `None`.
    #[serde(with = "present")]
    pub json: Option<Box<RawValue>>,
    pub snapshot: Option<SnapRef>,
}

/// A background snapshot is stored and may be committed to the index.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotStored {
    pub catalog: String,
    pub snap: SnapRef,
    /// The fence of the read the snapshot was built from.
    pub fence: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    HelloOk(HelloOk),
    Stored(Stored),
    Doc(Doc),
    SnapshotStored(SnapshotStored),
    GcDone(GcReport),
    GcRefsOk,
    /// A [`Ship`] batch is stored under this key.
    Shipped(String),
    /// The bodies a [`Values`] asked for, in its order.
    Values(Vec<DeltaValue>),
    Error(LakeError),
}

/// What a GC pass saw and did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GcReport {
    /// Lake objects in the store.
    pub scanned: u64,
    /// Of those, referenced by the index.
    pub referenced: u64,
    /// Unreferenced but younger than the grace period: kept.
    pub young: u64,
    /// Unreferenced and old: deleted (or, on a dry run, would be).
    pub orphans: u64,
    /// Actually deleted.
    pub deleted: u64,
}

/// `Option<Box<RawValue>>` as a list of zero or one raw values, so that
/// `Some(null)` survives the trip.
mod present {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(v: &Option<Box<RawValue>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
        Ok(Vec::<Box<RawValue>>::deserialize(d)?.into_iter().next())
    }
}

/// Encodes one frame.
pub fn encode<T: Serialize>(id: u64, msg: &T) -> Vec<u8> {
    encode_with_tail(id, msg, &[])
}

/// Encodes one frame whose payload is `msg` followed by the raw bytes
/// `tail` (a [`Put`]'s value); [`decode_with_tail`] splits them again.
pub fn encode_with_tail<T: Serialize>(id: u64, msg: &T, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + HEADER_BYTES + 256 + tail.len());
    out.resize(4 + HEADER_BYTES, 0);
    // Serialising these types cannot fail: all keys are strings and raw values
    // were validated when they were built.
    let _ = serde_json::to_writer(&mut out, msg);
    out.extend_from_slice(tail);
    let len = (out.len() - 4) as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out[4] = VERSION;
    out[5..13].copy_from_slice(&id.to_be_bytes());
    out
}

/// Checks a frame's length prefix; returns the number of bytes that follow
/// the fixed header.
pub fn check_len(len: u32, max: usize) -> Result<usize, LakeError> {
    let len = len as usize;
    if len < HEADER_BYTES {
        return Err(LakeError::invalid(format!("frame too short ({len} bytes)")));
    }
    if len > max {
        return Err(LakeError::invalid(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    Ok(len - HEADER_BYTES)
}

/// Parses the version and id that follow the length prefix.
pub fn parse_header(h: &[u8; HEADER_BYTES]) -> Result<u64, LakeError> {
    if h[0] != VERSION {
        return Err(LakeError::invalid(format!(
            "protocol version {} is not supported (expected {VERSION})",
            h[0]
        )));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[1..9]);
    Ok(u64::from_be_bytes(id))
}

/// Decodes a payload into a message.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, LakeError> {
    serde_json::from_slice(payload)
        .map_err(|e| LakeError::invalid(format!("malformed frame payload: {e}")))
}

/// Decodes a payload into its leading message and the raw tail after it.
pub fn decode_with_tail<'a, T: Deserialize<'a>>(
    payload: &'a [u8],
) -> Result<(T, &'a [u8]), LakeError> {
    let bad = |e: String| LakeError::invalid(format!("malformed frame payload: {e}"));
    let mut stream = serde_json::Deserializer::from_slice(payload).into_iter::<T>();
    let msg = match stream.next() {
        Some(Ok(m)) => m,
        Some(Err(e)) => return Err(bad(e.to_string())),
        None => return Err(bad("empty".into())),
    };
    let tail = payload.get(stream.byte_offset()..).unwrap_or_default();
    Ok((msg, tail))
}

/// Decodes a request frame: a [`Put`] gets its value from the tail; any
/// other request must have none.
pub fn decode_request(payload: &[u8]) -> Result<Request, LakeError> {
    let (mut req, tail) = decode_with_tail::<Request>(payload)?;
    match &mut req {
        Request::Put(p) => p.value = tail.to_vec(),
        _ if tail.iter().any(|b| !b.is_ascii_whitespace()) => {
            return Err(LakeError::invalid(
                "malformed frame payload: trailing bytes after the request",
            ))
        }
        _ => {}
    }
    Ok(req)
}

/// Whether `buf` starts with a whole frame, so reading it cannot block.
/// Lets a reader drain every answer that already arrived in one pass.
pub fn frame_ready(buf: &[u8]) -> bool {
    match buf.get(..4) {
        Some(len) => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            buf.len() - 4 >= len
        }
        None => false,
    }
}

/// Reads one frame from a blocking reader: `Ok(None)` on a clean end of
/// stream before a frame starts.
pub fn read_frame<R: io::Read>(r: &mut R, max: usize) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let body = check_len(u32::from_be_bytes(len), max).map_err(to_io)?;
    let mut header = [0u8; HEADER_BYTES];
    r.read_exact(&mut header)?;
    let id = parse_header(&header).map_err(to_io)?;
    let mut payload = Vec::new();
    r.take(body as u64).read_to_end(&mut payload)?;
    if payload.len() != body {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated frame",
        ));
    }
    Ok(Some((id, payload)))
}

fn to_io(e: LakeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ready_needs_the_whole_frame() {
        let frame = encode(
            3,
            &Response::Stored(Stored {
                uuid: String::new(),
            }),
        );
        assert!(frame_ready(&frame));
        assert!(!frame_ready(&frame[..frame.len() - 1]));
        assert!(!frame_ready(&frame[..3]));
        assert!(!frame_ready(&[]));
        let mut two = frame.clone();
        two.extend_from_slice(&frame[..5]);
        assert!(frame_ready(&two));
    }

    #[test]
    fn round_trip_put_and_doc() {
        let put = Request::Put(Put {
            catalog: "users".into(),
            uuid: "u".into(),
            field: "a.b".into(),
            mode: "set".into(),
            value: Vec::new(),
        });
        // The tail is taken as it is, even when it is not JSON.
        for value in [
            &br#"{"first":"John"}"#[..],
            b"12345678901234567890",
            b"}{not json",
            b"",
        ] {
            let frame = encode_with_tail(7, &put, value);
            let (id, payload) = read_frame(&mut frame.as_slice(), MAX_FRAME_BYTES)
                .unwrap()
                .unwrap();
            assert_eq!(id, 7);
            match decode_request(&payload).unwrap() {
                Request::Put(p) => {
                    assert_eq!(p.value, value);
                    assert_eq!(p.catalog, "users");
                }
                other => panic!("{other:?}"),
            }
        }
        let gc = encode_with_tail(
            1,
            &Request::Gc(Gc {
                referenced: Vec::new(),
                grace_secs: 1,
                dry_run: true,
                slots: None,
                session: None,
                began_ms: None,
            }),
            b"x",
        );
        assert!(decode_request(&gc[4 + HEADER_BYTES..]).is_err());
        let null = Response::Doc(Doc {
            json: Some(RawValue::from_string("null".into()).unwrap()),
            snapshot: None,
        });
        match decode::<Response>(&encode(1, &null)[4 + HEADER_BYTES..]).unwrap() {
            Response::Doc(d) => assert_eq!(d.json.unwrap().get(), "null"),
            other => panic!("{other:?}"),
        }
        let doc = Response::Doc(Doc {
            json: Some(RawValue::from_string("[1,2]".into()).unwrap()),
            snapshot: None,
        });
        let frame = encode(9, &doc);
        let (_, payload) = read_frame(&mut frame.as_slice(), MAX_FRAME_BYTES)
            .unwrap()
            .unwrap();
        match decode::<Response>(&payload).unwrap() {
            Response::Doc(d) => assert_eq!(d.json.unwrap().get(), "[1,2]"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_oversize_short_and_wrong_version() {
        let mut big = (u32::MAX).to_be_bytes().to_vec();
        big.extend([VERSION; 9]);
        assert!(read_frame(&mut big.as_slice(), 1024).is_err());
        let short = 3u32.to_be_bytes();
        assert!(read_frame(&mut short.as_slice(), 1024).is_err());
        let mut frame = encode(
            1,
            &Request::Hello(Hello {
                magic: MAGIC.into(),
                version: VERSION,
            }),
        );
        frame[4] = 99;
        assert!(read_frame(&mut frame.as_slice(), 1024).is_err());
    }

    #[test]
    fn truncated_and_empty_streams() {
        assert!(read_frame(&mut [].as_slice(), 1024).unwrap().is_none());
        let frame = encode(
            1,
            &Request::Hello(Hello {
                magic: MAGIC.into(),
                version: VERSION,
            }),
        );
        assert!(read_frame(&mut &frame[..frame.len() - 2], 1024).is_err());
    }
}
