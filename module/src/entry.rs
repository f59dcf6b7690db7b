//! Every function Redis calls into: the `LAKE.*` command handlers, the
//! blocked-client reply and free callbacks (sidecar waits and
//! `LAKE.CHANGES` followers), the zset keyspace-event hook, the
//! before-sleep hook and its wake-up, the compaction and `LAKE.GC` timers
//! and the `INFO lake` callback. Each runs behind [`guard`].
//!
//! Why one place: since Rust 1.81 a panic that unwinds out of an
//! `extern "C"` function aborts the process, and here the process is
//! redis-server. So every entry catches, logs the panic with the entry's
//! name, and turns it into an error reply (a command, a blocked client's
//! answer) or a no-op (hooks, timers, info); a timer is re-armed whatever
//! its step did.
//!
//! Invariants:
//! - A command's reply is built whole as a value first, then written by
//!   [`reply::send`], which cannot panic; a panic before the first byte is
//!   written becomes one error reply, so the client always gets exactly one
//!   answer.
//! - Commands are registered here, by the module API itself, not by the
//!   `redis-module` macro, whose wrapper replies outside any guard.
//! - With the `fault-injection` feature (tests only), `LAKE.FAULT <entry>`
//!   arms one panic at the start of the named entry's guarded body; the
//!   build shipped to users has neither the command nor the hook.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use lake_shared::LakeError;
use redis_module::{raw, Context, InfoContext, RedisString, RedisValue};

use crate::reply::{self, Level};
use crate::{blocked, commands, compactor, gate, journal, stats};

/// A command handler: validates, reads the index, and either replies a
/// value or blocks its client (and returns `NoReply`).
pub type Handler = fn(&Context, Vec<RedisString>) -> Result<RedisValue, LakeError>;

/// Runs `body` for the entry `name`; a panic is logged and `fallback` runs
/// instead.
pub fn guard<T>(name: &str, fallback: impl FnOnce() -> T, body: impl FnOnce() -> T) -> T {
    let out = catch_unwind(AssertUnwindSafe(|| {
        #[cfg(feature = "fault-injection")]
        crate::fault::hit(name);
        body()
    }));
    match out {
        Ok(v) => v,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            reply::log(
                std::ptr::null_mut(),
                Level::Warning,
                &format!("lake: panic in {name} caught: {why}"),
            );
            fallback()
        }
    }
}

/// Replies a result (counting errors by kind) behind its own guard, so a
/// panic before the first byte is written still answers the client.
fn answer(ctx: *mut raw::RedisModuleCtx, out: Result<RedisValue, LakeError>) {
    if let Err(e) = &out {
        stats::error(e.kind);
    }
    guard(
        "reply",
        || {
            reply::error(
                ctx,
                &LakeError::internal("building the reply panicked; see the Redis log"),
            )
        },
        || reply::send(ctx, out),
    );
}

fn command(
    name: &'static str,
    handler: Handler,
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    let out = guard(
        name,
        || {
            Err(LakeError::internal(format!(
                "{name} panicked; the request was not applied (see the Redis log)"
            )))
        },
        || {
            let context = Context::new(ctx);
            let args = redis_module::decode_args(ctx, argv, argc);
            commands::check_db(&context).and_then(|()| handler(&context, args))
        },
    );
    answer(ctx, out);
    raw::REDISMODULE_OK as c_int
}

/// Declares one `extern "C"` function per command and the table
/// [`register`] walks: name, handler, flags, and the key positions (the
/// catalog argument is the key: first=last=1, step 1; 0 for none).
macro_rules! commands {
    ($([$fn_name:ident, $name:literal, $handler:path, $flags:literal, $first:literal, $last:literal, $step:literal]),* $(,)?) => {
        $(
            extern "C" fn $fn_name(
                ctx: *mut raw::RedisModuleCtx,
                argv: *mut *mut raw::RedisModuleString,
                argc: c_int,
            ) -> c_int {
                command($name, $handler, ctx, argv, argc)
            }
        )*
        type CmdFn = extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;
        const COMMANDS: &[(&str, CmdFn, &str, c_int, c_int, c_int)] = &[
            $(($name, $fn_name, $flags, $first, $last, $step)),*
        ];
    };
}

commands! {
    [cmd_write, "LAKE.WRITE", commands::write, "write deny-oom", 1, 1, 1],
    [cmd_read, "LAKE.READ", commands::read, "readonly", 1, 1, 1],
    [cmd_remove, "LAKE.REMOVE", commands::remove, "write", 1, 1, 1],
    [cmd_drop, "LAKE.DROP", commands::drop_catalog, "write", 1, 1, 1],
    [cmd_gc, "LAKE.GC", commands::gc, "readonly admin", 0, 0, 0],
    [cmd_history, "LAKE.HISTORY", commands::history, "readonly", 1, 1, 1],
    [cmd_compact, "LAKE.COMPACT", commands::compact, "write", 1, 1, 1],
    [cmd_retention, "LAKE.RETENTION", commands::set_retention, "write", 1, 1, 1],
    [cmd_info, "LAKE.INFO", commands::info, "readonly", 1, 1, 1],
    [cmd_changes, "LAKE.CHANGES", commands::changes, "readonly", 1, 1, 1],
    [cmd_view, "LAKE.VIEW", commands::view, "readonly", 1, 1, 1],
}

/// `LAKE.MREAD`: its keys are the catalogs, not a trailing `PATH <field>`,
/// so Redis asks for them through the getkeys API (cluster routing,
/// `CROSSSLOT`, ACL key patterns) by calling here with a flag set.
extern "C" fn cmd_mread(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    let asks_keys =
        unsafe { raw::RedisModule_IsKeysPositionRequest }.is_some_and(|f| unsafe { f(ctx) } != 0);
    if !asks_keys {
        return command("LAKE.MREAD", commands::mread, ctx, argv, argc);
    }
    guard(
        "LAKE.MREAD keys",
        || (),
        || {
            let args = redis_module::decode_args(ctx, argv, argc);
            if let Some(at) = unsafe { raw::RedisModule_KeyAtPos } {
                for pos in commands::mread_keys(&args) {
                    unsafe { at(ctx, pos as c_int) };
                }
            }
        },
    );
    raw::REDISMODULE_OK as c_int
}

#[cfg(feature = "fault-injection")]
extern "C" fn cmd_fault(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    command("LAKE.FAULT", crate::fault::command, ctx, argv, argc)
}

/// Blocks a `LAKE.CHANGES` follower on its catalog's index key until a
/// delta lands there ([`changes_ready`]) or `ms` pass ([`changes_timeout`];
/// 0 waits for ever).
pub fn block_on_changes(ctx: &Context, f: commands::Follower, ms: u32) -> Result<(), LakeError> {
    let block = unsafe { raw::RedisModule_BlockClientOnKeys }
        .ok_or_else(|| LakeError::internal("RedisModule_BlockClientOnKeys is missing"))?;
    let key = ctx.create_string(lake_shared::catalog::index_key(&f.query.catalog).as_str());
    let mut keys = [key.inner];
    let follower = Box::into_raw(Box::new(f));
    let bc = unsafe {
        block(
            ctx.ctx,
            Some(changes_ready),
            Some(changes_timeout),
            Some(changes_free),
            i64::from(ms),
            keys.as_mut_ptr(),
            1,
            follower.cast::<c_void>(),
        )
    };
    if bc.is_null() {
        changes_free(ctx.ctx, follower.cast::<c_void>());
        return Err(LakeError::internal("Redis refused to block the client"));
    }
    // Redis frees the follower only after this command returns.
    unsafe { (*follower).blocked(bc) };
    Ok(())
}

/// The follower a blocked `LAKE.CHANGES` client carries; set when blocking
/// and freed only after the client is done.
fn follower<'a>(ctx: *mut raw::RedisModuleCtx) -> Option<&'a commands::Follower> {
    let p = unsafe { raw::RedisModule_GetBlockedClientPrivateData.map(|f| f(ctx)) }
        .unwrap_or(std::ptr::null_mut())
        .cast::<commands::Follower>();
    unsafe { p.as_ref() }
}

/// Redis signalled a follower's index key: answers the new deltas, or
/// returns `REDISMODULE_ERR` (keep waiting) when there are none yet or
/// their values are still being fetched.
extern "C" fn changes_ready(
    ctx: *mut raw::RedisModuleCtx,
    _: *mut *mut raw::RedisModuleString,
    _: c_int,
) -> c_int {
    let out = guard(
        "LAKE.CHANGES ready",
        || {
            Some(Err(LakeError::internal(
                "serving LAKE.CHANGES panicked; see the Redis log",
            )))
        },
        || match follower(ctx) {
            Some(f) => f.ready(&Context::new(ctx)),
            None => Some(Err(LakeError::internal("a follower lost its query"))),
        },
    );
    match out {
        None => raw::REDISMODULE_ERR as c_int,
        Some(r) => {
            answer(ctx, r);
            raw::REDISMODULE_OK as c_int
        }
    }
}

/// A follower's `BLOCK` ran out (or `CLIENT UNBLOCK`): no changes. Also
/// how a `WITHVALUES` follower is answered once its values came
/// ([`values_arrived`] unblocks it).
extern "C" fn changes_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _: *mut *mut raw::RedisModuleString,
    _: c_int,
) -> c_int {
    let out = guard(
        "LAKE.CHANGES timeout",
        || {
            Err(LakeError::internal(
                "serving LAKE.CHANGES panicked; see the Redis log",
            ))
        },
        || follower(ctx).map_or(Ok(RedisValue::Array(Vec::new())), |f| f.timed_out()),
    );
    answer(ctx, out);
    raw::REDISMODULE_OK as c_int
}

/// Frees a follower.
extern "C" fn changes_free(_: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    guard(
        "LAKE.CHANGES free",
        || (),
        || {
            if !privdata.is_null() {
                drop(unsafe { Box::from_raw(privdata.cast::<commands::Follower>()) });
            }
        },
    );
}

/// A `WITHVALUES` follower's values came back (any thread): the main
/// thread unblocks it ([`values_arrived`]).
pub fn hand_back(fetch: Arc<Mutex<commands::ChangesFetch>>) {
    let Some(add) = (unsafe { raw::RedisModule_EventLoopAddOneShot }) else {
        // Without it the follower times out and re-asks: nothing is missed.
        return;
    };
    let p = Arc::into_raw(fetch).cast_mut().cast::<c_void>();
    unsafe { add(Some(values_arrived), p) };
}

/// On the main thread: unblocks the follower whose values came, if Redis
/// still keeps it; Redis then runs [`changes_timeout`], which replies them.
extern "C" fn values_arrived(p: *mut c_void) {
    guard(
        "LAKE.CHANGES values",
        || (),
        || {
            if p.is_null() {
                return;
            }
            let fetch =
                unsafe { Arc::from_raw(p.cast_const().cast::<Mutex<commands::ChangesFetch>>()) };
            if let (Some(bc), Some(unblock)) = (commands::ChangesFetch::deliver(&fetch), unsafe {
                raw::RedisModule_UnblockClient
            }) {
                unsafe { unblock(bc, std::ptr::null_mut()) };
            }
        },
    );
}

/// Every zset event: a `ZADD` to a catalog's index key (a commit here, or
/// one replayed from the primary on a replica) signals the followers
/// blocked on it. Cheap: Redis returns at once when nobody waits there.
pub extern "C" fn on_zset_event(
    ctx: *mut raw::RedisModuleCtx,
    _: c_int,
    event: *const std::os::raw::c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard(
        "zset-event",
        || (),
        || {
            if event.is_null() || key.is_null() {
                return;
            }
            let event = unsafe { std::ffi::CStr::from_ptr(event) }.to_bytes();
            let name = RedisString::string_as_slice(key);
            if event == b"zadd" && lake_shared::catalog::is_index_key(name) {
                if let Some(signal) = unsafe { raw::RedisModule_SignalKeyAsReady } {
                    unsafe { signal(ctx, key) };
                }
            }
        },
    );
    raw::REDISMODULE_OK as c_int
}

/// Registers every command and the `INFO lake` callback. Called once from
/// the module's init.
pub fn register(ctx: &Context) -> Result<(), LakeError> {
    let create = unsafe { raw::RedisModule_CreateCommand }
        .ok_or_else(|| LakeError::internal("RedisModule_CreateCommand is missing"))?;
    let mut table: Vec<(&str, CmdFn, &str, c_int, c_int, c_int)> = COMMANDS.to_vec();
    table.push(("LAKE.MREAD", cmd_mread, "readonly getkeys-api", 1, -1, 1));
    #[cfg(feature = "fault-injection")]
    table.push(("LAKE.FAULT", cmd_fault, "admin", 0, 0, 0));
    for (name, f, flags, first, last, step) in table {
        let (Ok(cname), Ok(cflags)) =
            (CString::new(name.to_ascii_lowercase()), CString::new(flags))
        else {
            return Err(LakeError::internal(format!(
                "bad command table entry {name}"
            )));
        };
        let ok = unsafe {
            create(
                ctx.ctx,
                cname.as_ptr(),
                Some(f),
                cflags.as_ptr(),
                first,
                last,
                step,
            )
        };
        if ok != raw::REDISMODULE_OK as c_int {
            return Err(LakeError::internal(format!("cannot register {name}")));
        }
    }
    if let Some(register) = unsafe { raw::RedisModule_RegisterInfoFunc } {
        unsafe { register(ctx.ctx, Some(info)) };
    }
    let subscribe = unsafe { raw::RedisModule_SubscribeToKeyspaceEvents }
        .ok_or_else(|| LakeError::internal("RedisModule_SubscribeToKeyspaceEvents is missing"))?;
    let ok = unsafe {
        subscribe(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_ZSET as c_int,
            Some(on_zset_event),
        )
    };
    if ok != raw::REDISMODULE_OK as c_int {
        return Err(LakeError::internal("cannot subscribe to zset events"));
    }
    Ok(())
}

/// A blocked client's answer, on the main thread: runs its job (commit and
/// reply value) and replies.
pub extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _: *mut *mut raw::RedisModuleString,
    _: c_int,
) -> c_int {
    let out = guard(
        "blocked-reply",
        || {
            Err(LakeError::internal(
                "completing the request panicked; it may or may not have been applied (see the Redis log)",
            ))
        },
        || blocked::run(ctx),
    );
    answer(ctx, out);
    raw::REDISMODULE_OK as c_int
}

/// Frees a blocked client's private data, whether or not it was answered.
pub extern "C" fn on_free(_: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    guard("blocked-free", || (), || blocked::free(privdata));
}

/// Redis's event-loop hook: releases parked commits before it sleeps.
pub extern "C" fn before_sleep(
    _: *mut raw::RedisModuleCtx,
    _: raw::RedisModuleEvent,
    subevent: u64,
    _: *mut c_void,
) {
    guard("before-sleep", || (), || gate::on_event(subevent));
}

/// Wakes Redis's event loop so that the before-sleep hook runs; nothing
/// else to do.
pub extern "C" fn wake(_: *mut c_void) {
    guard("wake", || (), || ());
}

/// The background compaction timer: one bounded step, then re-armed.
pub extern "C" fn compaction_timer(ctx: *mut raw::RedisModuleCtx, _: *mut c_void) {
    let context = Context::new(ctx);
    guard("timer", || (), || compactor::tick(&context));
    guard("timer-arm", || (), || compactor::start(&context));
}

/// The journal shipper's timer: one tick, then re-armed.
pub extern "C" fn journal_timer(ctx: *mut raw::RedisModuleCtx, _: *mut c_void) {
    let context = Context::new(ctx);
    guard("journal-timer", || (), || journal::tick(&context));
    guard("journal-arm", || (), || journal::start(&context));
}

/// `RM_Scan`'s callback for the journal's keyspace walk: one key.
pub extern "C" fn journal_key(
    _: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    found: *mut c_void,
) {
    guard(
        "journal-scan",
        || (),
        || {
            if let Some(found) = unsafe { found.cast::<Vec<String>>().as_mut() } {
                journal::scanned(keyname, key, found);
            }
        },
    );
}

/// A `LAKE.GC` walk's step timer; a panic ends the walk with an error.
pub extern "C" fn gc_timer(ctx: *mut raw::RedisModuleCtx, _: *mut c_void) {
    let context = Context::new(ctx);
    guard("gc-timer", commands::gc::abort, || {
        commands::gc::step(&context)
    });
}

/// `INFO lake`.
extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    guard(
        "info",
        || (),
        || {
            let _ = stats::info(&InfoContext::new(ctx));
        },
    );
}
