//! Reads of Lake's sorted sets through Redis's native zset API.
//!
//! `ctx.call("ZRANGEBYSCORE" .. "WITHSCORES")` runs the command on a fake
//! client and formats every score as text that is then parsed back; on the
//! read and commit paths that was the largest cost on Redis's main thread.
//! The key API walks the skiplist and hands scores over as doubles.
//!
//! Invariants:
//! - Every write ([`add_replicated`]) is propagated as the same `ZADD` to
//!   replicas and the AOF (`RM_Replicate`, which also counts the change for
//!   RDB save points), signals the key as modified and emits `zadd`.
//! - Called with the Redis lock held (a command handler, or a completion
//!   holding a thread-safe context's lock).
//! - Every element string the API returns is freed, the iterator is stopped
//!   and the key closed on every path (`Range`'s `Drop`).
//! - Stamps are integers below 2^53, so the doubles are exact.

use lake_shared::stamp::{self, Bound};
use lake_shared::LakeError;
use redis_module::{raw, Context, KeyType, RedisString};

/// One sorted-set element.
pub struct Element {
    pub member: String,
    pub score: i64,
}

/// An open key with an active range iterator; dropping it stops the
/// iterator and closes the key. (Raw handles: `RedisKey::to_raw_parts` in
/// redis-module 2.0.8 closes the key it hands out.)
struct Range {
    key: *mut raw::RedisModuleKey,
}

impl Range {
    fn ptr(&self) -> *mut raw::RedisModuleKey {
        self.key
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        unsafe {
            if let Some(stop) = raw::RedisModule_ZsetRangeStop {
                stop(self.key);
            }
        }
        raw::close_key(self.key);
    }
}

/// Opens `name`; refuses a key of another type. Reading, a key that does
/// not exist is `None`; writing, it is opened empty for `RM_ZsetAdd` to fill.
fn open(
    ctx: &Context,
    keyname: &RedisString,
    name: &str,
    write: bool,
) -> Result<Option<Range>, LakeError> {
    let mode = if write {
        raw::KeyMode::READ | raw::KeyMode::WRITE
    } else {
        raw::KeyMode::READ
    };
    let key = raw::open_key(ctx.ctx, keyname.inner, mode);
    if key.is_null() {
        return Ok(None);
    }
    let r = Range { key };
    let kind = unsafe { raw::RedisModule_KeyType.map(|f| f(key)) };
    match kind.map(KeyType::from) {
        Some(KeyType::ZSet) => Ok(Some(r)),
        Some(KeyType::Empty) if write => Ok(Some(r)),
        Some(KeyType::Empty) => Ok(None),
        _ => Err(LakeError::data(format!(
            "key '{name}' holds something other than a sorted set"
        ))),
    }
}

fn element(ctx: &Context, k: *mut raw::RedisModuleKey) -> Result<Option<Element>, LakeError> {
    let (Some(current), Some(ptr_len), Some(free)) = (
        unsafe { raw::RedisModule_ZsetRangeCurrentElement },
        unsafe { raw::RedisModule_StringPtrLen },
        unsafe { raw::RedisModule_FreeString },
    ) else {
        return Err(LakeError::internal("the zset API is missing"));
    };
    let mut score = 0f64;
    let s = unsafe { current(k, &mut score) };
    if s.is_null() {
        return Ok(None);
    }
    let mut len = 0usize;
    let bytes = unsafe {
        let p = ptr_len(s, &mut len);
        std::slice::from_raw_parts(p.cast::<u8>(), len)
    };
    let member = String::from_utf8(bytes.to_vec());
    unsafe { free(ctx.ctx, s) };
    let member = member.map_err(|_| LakeError::data("an index member is not UTF-8"))?;
    let score = stamp::from_score(score)
        .ok_or_else(|| LakeError::data(format!("index holds a non-integer score {score}")))?;
    Ok(Some(Element { member, score }))
}

/// Starts a range between `lo` and `hi`, from the lowest score, or from the
/// highest with `reverse`.
fn range(
    ctx: &Context,
    name: &str,
    lo: Bound,
    hi: Bound,
    reverse: bool,
) -> Result<Option<Range>, LakeError> {
    let Some(r) = open(ctx, &ctx.create_string(name), name, false)? else {
        return Ok(None);
    };
    let start = unsafe {
        if reverse {
            raw::RedisModule_ZsetLastInScoreRange
        } else {
            raw::RedisModule_ZsetFirstInScoreRange
        }
    }
    .ok_or_else(|| LakeError::internal("the zset API is missing"))?;
    let ex = |b: Bound| i32::from(b.exclusive);
    if unsafe { start(r.ptr(), lo.score, hi.score, ex(lo), ex(hi)) } != raw::REDISMODULE_OK as i32 {
        return Err(LakeError::internal(format!("cannot iterate '{name}'")));
    }
    Ok(Some(r))
}

fn upto(max: f64) -> Bound {
    Bound {
        score: max,
        exclusive: false,
    }
}

/// The element with the highest score at or below `max`.
pub fn last_at_or_below(ctx: &Context, name: &str, max: f64) -> Result<Option<Element>, LakeError> {
    match range(ctx, name, Bound::LOWEST, upto(max), true)? {
        Some(r) => element(ctx, r.ptr()),
        None => Ok(None),
    }
}

/// The element with the highest score and how many there are, from one
/// opening of the key (a hot read asks both of the index).
pub fn last_and_len(ctx: &Context, name: &str) -> Result<(Option<Element>, usize), LakeError> {
    let Some(r) = range(ctx, name, Bound::LOWEST, upto(f64::INFINITY), true)? else {
        return Ok((None, 0));
    };
    let n = unsafe { raw::RedisModule_ValueLength.map_or(0, |f| f(r.ptr())) };
    Ok((element(ctx, r.ptr())?, n))
}

/// The highest score in `name`.
pub fn last_score(ctx: &Context, name: &str) -> Result<Option<i64>, LakeError> {
    Ok(last_at_or_below(ctx, name, f64::INFINITY)?.map(|e| e.score))
}

/// Every element with a score in `(after, max]` (or `[-inf, max]`), in
/// score order.
pub fn after(
    ctx: &Context,
    name: &str,
    after: Option<i64>,
    max: f64,
) -> Result<Vec<Element>, LakeError> {
    let lo = after.map_or(Bound::LOWEST, |s| Bound {
        score: s as f64,
        exclusive: true,
    });
    page(ctx, name, lo, upto(max), false, usize::MAX)
}

/// At most `count` elements between `lo` and `hi`, in score order (highest
/// first with `reverse`). Costs O(log n + count) on the main thread.
pub fn page(
    ctx: &Context,
    name: &str,
    lo: Bound,
    hi: Bound,
    reverse: bool,
    count: usize,
) -> Result<Vec<Element>, LakeError> {
    let Some(r) = range(ctx, name, lo, hi, reverse)? else {
        return Ok(Vec::new());
    };
    let fns = unsafe {
        (
            if reverse {
                raw::RedisModule_ZsetRangePrev
            } else {
                raw::RedisModule_ZsetRangeNext
            },
            raw::RedisModule_ZsetRangeEndReached,
        )
    };
    let (Some(next), Some(end)) = fns else {
        return Err(LakeError::internal("the zset API is missing"));
    };
    let mut out = Vec::new();
    while out.len() < count && unsafe { end(r.ptr()) } == 0 {
        match element(ctx, r.ptr())? {
            Some(e) => out.push(e),
            None => break,
        }
        if unsafe { next(r.ptr()) } == 0 {
            break;
        }
    }
    Ok(out)
}

/// The number of elements of `name` (0 when it does not exist).
pub fn len(ctx: &Context, name: &str) -> Result<usize, LakeError> {
    let Some(r) = open(ctx, &ctx.create_string(name), name, false)? else {
        return Ok(0);
    };
    let n = unsafe { raw::RedisModule_ValueLength.map_or(0, |f| f(r.ptr())) };
    Ok(n)
}

/// `ZADD name score member`, natively, then the same `ZADD` replicated.
/// Caller holds the lock.
pub fn add_replicated(
    ctx: &Context,
    name: &str,
    score: i64,
    member: &str,
) -> Result<(), LakeError> {
    let keyname = ctx.create_string(name);
    let r = open(ctx, &keyname, name, true)?
        .ok_or_else(|| LakeError::internal(format!("cannot open '{name}' for writing")))?;
    let add = unsafe { raw::RedisModule_ZsetAdd }
        .ok_or_else(|| LakeError::internal("the zset API is missing"))?;
    let m = ctx.create_string(member);
    let mut flags = 0;
    if unsafe { add(r.ptr(), score as f64, m.inner, &mut flags) } != raw::REDISMODULE_OK as i32 {
        return Err(LakeError::internal(format!("ZADD {name} failed")));
    }
    drop(r);
    let score = score.to_string();
    ctx.replicate("ZADD", &[name, score.as_str(), member][..]);
    ctx.notify_keyspace_event(raw::NotifyEvent::ZSET, "zadd", &keyname);
    Ok(())
}

/// Whether `name` exists here as a sorted set (an open key of another type
/// counts too: it is in the way either way).
pub fn exists(ctx: &Context, name: &str) -> bool {
    let keyname = ctx.create_string(name);
    let key = raw::open_key(ctx.ctx, keyname.inner, raw::KeyMode::READ);
    if key.is_null() {
        return false;
    }
    let kind = unsafe { raw::RedisModule_KeyType.map(|f| f(key)) };
    raw::close_key(key);
    !matches!(kind.map(KeyType::from), Some(KeyType::Empty) | None)
}
