//! Every Redis reply the module builds from a Lake result is made here, so
//! error prefixes stay consistent (`ERR`, `LAKEDOWN`, `TIMEOUT`, `LAKEDATA`,
//! `LAKEBUSY`, `LAKEINTERNAL`; see `lake_shared::error`).

use lake_shared::LakeError;
use redis_module::{RedisError, RedisResult, RedisValue};

/// A Lake error as a Redis error reply.
pub fn error(e: &LakeError) -> RedisError {
    crate::stats::error(e.kind);
    RedisError::String(e.reply_text())
}

/// A Lake result as a Redis reply.
pub fn result(r: Result<RedisValue, LakeError>) -> RedisResult {
    r.map_err(|e| error(&e))
}

/// The reply for a handler that panicked.
pub fn panicked(what: &str) -> RedisError {
    error(&LakeError::internal(format!(
        "{what} panicked; the request was not applied"
    )))
}
