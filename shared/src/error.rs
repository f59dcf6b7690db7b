//! Coarse, prescriptive error kinds shared by the module and the sidecar.
//!
//! Each kind maps to exactly one Redis error prefix, so a client can act on the
//! prefix alone: `ERR` fix your input, `LAKEDOWN` retry later, `TIMEOUT` the
//! outcome is unknown, `LAKEDATA` the stored data is damaged, `LAKEBUSY` back
//! off, `TRYAGAIN` retry (the node is paused or its slot is moving: nothing
//! was applied; cluster clients do this by themselves), `READONLY` send
//! writes to the primary, `LAKEINTERNAL` report a bug. Redis error replies are built only by
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

    /// The full text of the Redis error reply: prefix, space, message, on one
    /// line (RESP error strings cannot hold CR or LF).
    pub fn reply_text(&self) -> String {
        let msg: String = self
            .message
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        format!("{} {}", self.kind.prefix(), msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_has_prefix_and_one_line() {
        let e = LakeError::data("catalog 'a': delta x\nmissing");
        assert_eq!(e.reply_text(), "LAKEDATA catalog 'a': delta x missing");
        assert_eq!(LakeError::invalid("bad").reply_text(), "ERR bad");
        assert_eq!(LakeError::timeout("t").reply_text(), "TIMEOUT t");
        assert_eq!(LakeError::unavailable("d").reply_text(), "LAKEDOWN d");
        assert_eq!(LakeError::retry("r").reply_text(), "TRYAGAIN r");
        assert_eq!(LakeError::read_only("o").reply_text(), "READONLY o");
    }
}
