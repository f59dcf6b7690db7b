//! Coarse, prescriptive error kinds shared by the module and the sidecar.
//!
//! Each kind maps to exactly one Redis error prefix, so a client can act on the
//! prefix alone: `ERR` fix your input, `LAKEDOWN` retry later, `TIMEOUT` the
//! outcome is unknown, `LAKEDATA` the stored data is damaged, `LAKEBUSY` back
//! off, `TRYAGAIN` retry (the node is paused or its slot is moving: nothing
//! was applied; cluster clients do this by themselves), `READONLY` send
//! writes to the primary, `CONFLICT` the catalog changed since the stamp a
//! conditional write named (read again, recompute, retry), `LAKEINTERNAL` report a bug. Redis error replies are built only by
//! [`LakeError::reply_text`].

use serde::{Deserialize, Serialize};

/// What went wrong, in terms of what the caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request is malformed; repeating it will fail the same way.
    Invalid,
    /// A dependency (sidecar, object store) is unreachable; retry later.
    Unavailable,
    /// No answer within the deadline; the write may or may not have happened.
    Timeout,
    /// Stored data is missing, unreadable, or a merge over it failed.
    Data,
    /// Too much work in flight; back off and retry.
    Busy,
    /// This node cannot apply the request right now (writes paused, its slot
    /// moving or moved, a failover); nothing was applied. Redis's own
    /// `TRYAGAIN`, which cluster clients retry by themselves.
    Retry,
    /// This node is a replica (standalone, after a failover); nothing was
    /// applied. Redis's own `READONLY`.
    ReadOnly,
    /// A conditional write (`IFSTAMP`) found the catalog at another stamp;
    /// nothing was applied. The message starts with the current stamp.
    Conflict,
    /// A bug: an invariant of Lake itself was broken.
    Internal,
}

impl ErrorKind {
    /// The Redis error-reply prefix for this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "ERR",
            ErrorKind::Unavailable => "LAKEDOWN",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::Data => "LAKEDATA",
            ErrorKind::Busy => "LAKEBUSY",
            ErrorKind::Retry => "TRYAGAIN",
            ErrorKind::ReadOnly => "READONLY",
            ErrorKind::Conflict => "CONFLICT",
            ErrorKind::Internal => "LAKEINTERNAL",
        }
    }
}

/// An error with its kind and a message that names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{} {message}", kind.prefix())]
pub struct LakeError {
    pub kind: ErrorKind,
    pub message: String,
}

impl LakeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        LakeError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, message)
    }
    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retry, message)
    }
    pub fn read_only(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ReadOnly, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// `CONFLICT <current> ...`: the catalog is at stamp `current`, not the
    /// `expected` a conditional write named.
    pub fn conflict(catalog: &str, current: i64, expected: i64) -> Self {
        Self::new(
            ErrorKind::Conflict,
            format!(
                "{current} catalog '{catalog}' is at stamp {current}, not {expected}; nothing was indexed"
            ),
        )
    }

    /// The full text of the Redis error reply: prefix, space, message, on one
    /// line, with no byte a RESP error string cannot carry ([`escape`]).
    pub fn reply_text(&self) -> String {
        format!("{} {}", self.kind.prefix(), escape(&self.message))
    }
}

/// Makes text safe for a RESP simple string or error reply and for a C
/// string, without ever failing: UTF-8 is kept as it is (a Chinese field
/// name reads as the client wrote it), while NUL, CR, LF, the other control
/// characters and DEL become visible escapes (`\0`, `\r`, `\n`, `\xNN`).
/// A backslash stays a backslash (the text is for people, not for parsing
/// back).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for bytes that may not be UTF-8 (a client's argument, a store's
/// answer): valid UTF-8 runs are kept ([`escape`]d), each invalid byte
/// becomes `\xNN`, so nothing is lost and nothing breaks a reply.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_has_prefix_and_one_line() {
        let e = LakeError::data("catalog 'a': delta x\nmissing");
        assert_eq!(e.reply_text(), "LAKEDATA catalog 'a': delta x\\nmissing");
        assert_eq!(LakeError::invalid("bad").reply_text(), "ERR bad");
        assert_eq!(LakeError::timeout("t").reply_text(), "TIMEOUT t");
        assert_eq!(LakeError::unavailable("d").reply_text(), "LAKEDOWN d");
        assert_eq!(LakeError::retry("r").reply_text(), "TRYAGAIN r");
        assert_eq!(LakeError::read_only("o").reply_text(), "READONLY o");
    }

    #[test]
    fn reply_text_keeps_utf8_and_escapes_what_resp_cannot_carry() {
        let e = LakeError::invalid("AT needs an integer stamp, got 'Ā一\u{3000}😀'");
        assert_eq!(
            e.reply_text(),
            "ERR AT needs an integer stamp, got 'Ā一\u{3000}😀'"
        );
        let e = LakeError::invalid("a\0b\rc\nd\x07e\u{7f}f\u{85}g");
        assert_eq!(e.reply_text(), "ERR a\\0b\\rc\\nd\\x07e\\x7ff\\x85g");
    }

    #[test]
    fn invalid_utf8_bytes_are_escaped_not_lost() {
        assert_eq!(
            escape_bytes(b"ok \xff\xfe \xe4\xb8\x80"),
            "ok \\xff\\xfe 一"
        );
        assert_eq!(escape_bytes(b"\0\r\n"), "\\0\\r\\n");
        assert_eq!(escape_bytes(&[0xe4, 0xb8]), "\\xe4\\xb8");
    }
}
