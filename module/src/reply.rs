//! Every reply and log line the module hands to Redis is made here, by
//! functions that cannot panic on any input, so error prefixes stay
//! consistent (`ERR`, `LAKEDOWN`, `TIMEOUT`, `LAKEDATA`, `LAKEBUSY`,
//! `TRYAGAIN`, `READONLY`, `LAKEINTERNAL`; see `lake_shared::error`).
//!
//! Why not the `redis-module` crate's reply and log helpers: its error and
//! simple-string replies map each `char` with `as u8` and
//! `CString::new(..).unwrap()` (a code point that is a multiple of 256,
//! such as `Ā` or `一`, panics), and its log passes the message as a
//! `printf` format (a `%` in a field name would be read as a directive).
//! Here, text goes through [`lake_shared::error::escape`] (UTF-8 kept; NUL,
//! CR, LF and control characters escaped), then to the module API directly;
//! logs go through a fixed `"%s"` format.
//!
//! Invariants:
//! - Nothing here panics or allocates a C string that could fail; a reply
//!   is written whole or, if Redis lacks an API, as an error.
//! - This file imports nothing of the module above it (stats, gate,
//!   blocked, commands), so anything may reply through it.

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long};

use lake_shared::error::escape;
use lake_shared::LakeError;
use redis_module::redisvalue::RedisValueKey;
use redis_module::{raw, Context, RedisValue};

/// `text` as a C string that Redis may copy into a reply or a log line.
fn c_text(text: &str) -> CString {
    // `escape` leaves no NUL, so this cannot fail; an empty string if it did.
    CString::new(escape(text)).unwrap_or_default()
}

/// Replies a Lake result: the value, or the error with its prefix.
pub fn send(ctx: *mut raw::RedisModuleCtx, r: Result<RedisValue, LakeError>) {
    match r {
        Ok(v) => value(ctx, v),
        Err(e) => error(ctx, &e),
    }
}

/// Replies `e` as a Redis error: `<PREFIX> <message>`.
pub fn error(ctx: *mut raw::RedisModuleCtx, e: &LakeError) {
    error_text(ctx, &e.reply_text());
}

fn error_text(ctx: *mut raw::RedisModuleCtx, text: &str) {
    if let Some(f) = unsafe { raw::RedisModule_ReplyWithError } {
        let c = c_text(text);
        unsafe { f(ctx, c.as_ptr()) };
    }
}

/// Writes one reply value, nested values included.
pub fn value(ctx: *mut raw::RedisModuleCtx, v: RedisValue) {
    match v {
        RedisValue::NoReply => {}
        RedisValue::Null => call0(ctx, unsafe { raw::RedisModule_ReplyWithNull }),
        RedisValue::Integer(i) => {
            if let Some(f) = unsafe { raw::RedisModule_ReplyWithLongLong } {
                unsafe { f(ctx, i) };
            }
        }
        RedisValue::Bool(b) => {
            if let Some(f) = unsafe { raw::RedisModule_ReplyWithBool } {
                unsafe { f(ctx, c_int::from(b)) };
            }
        }
        RedisValue::Float(d) => {
            if let Some(f) = unsafe { raw::RedisModule_ReplyWithDouble } {
                unsafe { f(ctx, d) };
            }
        }
        RedisValue::SimpleStringStatic(s) => simple(ctx, s),
        RedisValue::SimpleString(s) => simple(ctx, &s),
        RedisValue::StaticError(s) => error_text(ctx, s),
        RedisValue::BulkString(s) | RedisValue::BigNumber(s) => bulk(ctx, s.as_bytes()),
        RedisValue::StringBuffer(b) | RedisValue::VerbatimString((_, b)) => bulk(ctx, &b),
        RedisValue::BulkRedisString(s) => bulk(ctx, s.as_slice()),
        RedisValue::Array(items) => {
            aggregate(ctx, unsafe { raw::RedisModule_ReplyWithArray }, items.len());
            for item in items {
                value(ctx, item);
            }
        }
        RedisValue::Map(m) => {
            aggregate(ctx, unsafe { raw::RedisModule_ReplyWithMap }, m.len());
            for (k, v) in m {
                key(ctx, k);
                value(ctx, v);
            }
        }
        RedisValue::OrderedMap(m) => {
            aggregate(ctx, unsafe { raw::RedisModule_ReplyWithMap }, m.len());
            for (k, v) in m {
                key(ctx, k);
                value(ctx, v);
            }
        }
        RedisValue::Set(s) => {
            aggregate(ctx, unsafe { raw::RedisModule_ReplyWithSet }, s.len());
            s.into_iter().for_each(|k| key(ctx, k));
        }
        RedisValue::OrderedSet(s) => {
            aggregate(ctx, unsafe { raw::RedisModule_ReplyWithSet }, s.len());
            s.into_iter().for_each(|k| key(ctx, k));
        }
    }
}

fn key(ctx: *mut raw::RedisModuleCtx, k: RedisValueKey) {
    match k {
        RedisValueKey::Integer(i) => value(ctx, RedisValue::Integer(i)),
        RedisValueKey::Bool(b) => value(ctx, RedisValue::Bool(b)),
        RedisValueKey::String(s) => bulk(ctx, s.as_bytes()),
        RedisValueKey::BulkString(b) => bulk(ctx, &b),
        RedisValueKey::BulkRedisString(s) => bulk(ctx, s.as_slice()),
    }
}

/// Any bytes, as a bulk string (binary-safe: nothing to escape).
pub fn bulk(ctx: *mut raw::RedisModuleCtx, b: &[u8]) {
    if let Some(f) = unsafe { raw::RedisModule_ReplyWithStringBuffer } {
        unsafe { f(ctx, b.as_ptr().cast::<c_char>(), b.len()) };
    }
}

fn simple(ctx: *mut raw::RedisModuleCtx, s: &str) {
    if let Some(f) = unsafe { raw::RedisModule_ReplyWithSimpleString } {
        let c = c_text(s);
        unsafe { f(ctx, c.as_ptr()) };
    }
}

fn call0(
    ctx: *mut raw::RedisModuleCtx,
    f: Option<unsafe extern "C" fn(*mut raw::RedisModuleCtx) -> c_int>,
) {
    if let Some(f) = f {
        unsafe { f(ctx) };
    }
}

fn aggregate(
    ctx: *mut raw::RedisModuleCtx,
    f: Option<unsafe extern "C" fn(*mut raw::RedisModuleCtx, c_long) -> c_int>,
    len: usize,
) {
    if let Some(f) = f {
        unsafe { f(ctx, c_long::try_from(len).unwrap_or(c_long::MAX)) };
    }
}

/// Log levels Redis knows.
#[derive(Clone, Copy)]
pub enum Level {
    Notice,
    Warning,
}

/// Writes one line to Redis's log, whatever `text` holds. `ctx` may be
/// null (no module name then).
pub fn log(ctx: *mut raw::RedisModuleCtx, level: Level, text: &str) {
    let level = match level {
        Level::Notice => c"notice",
        Level::Warning => c"warning",
    };
    if let Some(f) = unsafe { raw::RedisModule_Log } {
        let c = c_text(text);
        unsafe { f(ctx, level.as_ptr(), c"%s".as_ptr(), c.as_ptr()) };
    }
}

/// A warning in Redis's log ([`log`]).
pub fn warning(ctx: &Context, text: &str) {
    log(ctx.ctx, Level::Warning, text);
}

/// A notice in Redis's log ([`log`]).
pub fn notice(ctx: &Context, text: &str) {
    log(ctx.ctx, Level::Notice, text);
}
