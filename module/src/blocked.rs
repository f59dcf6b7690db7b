//! A blocked client whose answer is finished on Redis's main thread.
//!
//! `LAKE.*` commands block their client with a reply callback. When the
//! sidecar answers, a background thread hands Redis a job
//! (`RedisModule_UnblockClient` with the job as private data); Redis runs the
//! callback on its main thread, in its event loop, where the job commits
//! (ZADD) and builds the reply. No background thread ever takes the Redis
//! lock for a client's answer.
//!
//! Invariants:
//! - Every `Blocked` is unblocked exactly once: by [`Blocked::finish`], or by
//!   its `Drop` with an internal error, so no client is left blocked.
//! - A job runs only if its client is still connected (Redis skips the reply
//!   callback for a client that went away); a write whose client left is
//!   never indexed, and its object is an orphan for `LAKE.GC`.
//! - A panic inside a job is caught ([`crate::entry`]) and becomes an error
//!   reply.
//! - Every answer feeds Redis's latency monitor with the time from blocking
//!   to the reply under the command's event (`lake-write`, `lake-read`,
//!   ...): `LATENCY LATEST` / `LATENCY HISTORY` show slow Lake commands
//!   once they pass `latency-monitor-threshold` (Redis does that check);
//!   and the same time feeds `INFO lake`'s percentiles ([`crate::stats`]).

use std::ffi::CStr;
use std::os::raw::c_void;
use std::time::Instant;

use lake_shared::LakeError;
use redis_module::{raw, Context, RedisValue};

use crate::{config, entry, gate, stats};

/// What runs on the main thread: commit if needed, then the reply value.
pub type Job = Box<dyn FnOnce(&Context) -> Result<RedisValue, LakeError> + Send>;

/// The private data Redis carries from `finish` to the callbacks.
type Slot = Option<Job>;

pub struct Blocked {
    inner: *mut raw::RedisModuleBlockedClient,
    /// When the client must have its answer (`timeout-ms` after blocking).
    deadline: Instant,
    started: Instant,
    /// The latency monitor's event for this command.
    event: &'static CStr,
}

// The handle is only used to unblock, which Redis allows from any thread.
unsafe impl Send for Blocked {}

impl Blocked {
    /// Blocks the client of the running command; `event` names it in
    /// Redis's latency monitor (`c"lake-write"`).
    pub fn new(ctx: &Context, event: &'static CStr) -> Result<Blocked, LakeError> {
        let block = unsafe { raw::RedisModule_BlockClient }
            .ok_or_else(|| LakeError::internal("RedisModule_BlockClient is missing"))?;
        let deadline = Instant::now() + config::timeout();
        let inner = unsafe {
            block(
                ctx.ctx,
                Some(entry::on_reply),
                None,
                Some(entry::on_free),
                0,
            )
        };
        if inner.is_null() {
            return Err(LakeError::internal("Redis refused to block the client"));
        }
        Ok(Blocked {
            inner,
            deadline,
            started: Instant::now(),
            event,
        })
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Unblocks the client; `job` runs on the main thread and replies.
    pub fn finish(mut self, job: Job) {
        self.unblock(Some(job));
    }

    /// Like [`Blocked::finish`] for a job that writes (commits to the
    /// index): it runs only while Redis has not paused writes
    /// ([`crate::gate`]).
    pub fn commit(self, job: Job) {
        gate::park(self, job);
    }

    /// Replies `text` (or nil) from this background thread through the
    /// blocked client's thread-safe context, which needs no lock: Redis's
    /// main thread then only moves the finished reply to the client. For
    /// answers with nothing to commit (plain reads).
    pub fn reply_here(mut self, text: Option<&str>) {
        let fns = unsafe {
            (
                raw::RedisModule_GetThreadSafeContext,
                raw::RedisModule_FreeThreadSafeContext,
                raw::RedisModule_ReplyWithStringBuffer,
                raw::RedisModule_ReplyWithNull,
            )
        };
        let (Some(get), Some(free), Some(string), Some(null)) = fns else {
            let text = text.map(str::to_string);
            return self.finish(Box::new(move |_| {
                Ok(text.map_or(RedisValue::Null, RedisValue::BulkString))
            }));
        };
        unsafe {
            let tsc = get(self.inner);
            match text {
                Some(t) => string(tsc, t.as_ptr().cast(), t.len()),
                None => null(tsc),
            };
            free(tsc);
        }
        self.unblock(Some(Box::new(|_| Ok(RedisValue::NoReply))));
    }

    fn unblock(&mut self, job: Slot) {
        let inner = std::mem::replace(&mut self.inner, std::ptr::null_mut());
        if inner.is_null() {
            return;
        }
        let (started, event) = (self.started, self.event);
        let job: Slot = job.map(|job| -> Job {
            Box::new(move |ctx| {
                let out = job(ctx);
                let took = started.elapsed();
                if let Some(sample) = unsafe { raw::RedisModule_LatencyAddSample } {
                    let ms = took.as_millis().min(i64::MAX as u128) as i64;
                    unsafe { sample(event.as_ptr(), ms) };
                }
                stats::latency(event.to_str().unwrap_or_default(), took);
                out
            })
        });
        let slot = Box::into_raw(Box::new(job)).cast::<c_void>();
        if let Some(unblock) = unsafe { raw::RedisModule_UnblockClient } {
            unsafe { unblock(inner, slot) };
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.unblock(Some(Box::new(|_| {
            Err(LakeError::internal(
                "the request was dropped before it was answered",
            ))
        })));
    }
}

/// Takes and runs the job Redis carried to the reply callback
/// ([`crate::entry::on_reply`], which replies its result). Main thread.
pub fn run(ctx: *mut raw::RedisModuleCtx) -> Result<RedisValue, LakeError> {
    let context = Context::new(ctx);
    let slot =
        unsafe { raw::RedisModule_GetBlockedClientPrivateData.map(|f| f(ctx).cast::<Slot>()) };
    let job = match slot {
        Some(p) if !p.is_null() => unsafe { (*p).take() },
        _ => None,
    };
    match job {
        Some(job) => job(&context),
        None => Err(LakeError::internal("the answer was lost")),
    }
}

/// Frees the private data ([`crate::entry::on_free`]), whether or not the
/// reply callback ran.
pub fn free(privdata: *mut c_void) {
    if !privdata.is_null() {
        drop(unsafe { Box::from_raw(privdata.cast::<Slot>()) });
    }
}
