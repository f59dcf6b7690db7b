//! liblake.so: the Lake Redis module. A thin shell: argument parsing, command
//! registration and handlers; the logic lives in `lake-shared` and the
//! sidecar.
//!
//! Commands declare the catalog argument as their key (first=last=1, step 1),
//! so Redis Cluster routes them to the slot of `catalog:{<name>}` and ACL key
//! patterns apply to catalog names. Handlers never panic across the FFI
//! boundary: each runs under `catch_unwind` and replies an error instead.

mod blocked;
mod client;
mod commands;
mod compactor;
mod config;
mod gate;
mod owner;
mod reply;
mod stats;
mod zset;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{redis_module, Context, InfoContext, RedisResult, RedisString, Status};

mod state {
    //! Process-wide state, set once at load.
    use std::sync::OnceLock;

    use lake_shared::LakeError;

    use crate::client::Client;

    pub static CLIENT: OnceLock<Client> = OnceLock::new();

    pub fn client() -> Result<&'static Client, LakeError> {
        CLIENT
            .get()
            .ok_or_else(|| LakeError::internal("module not initialised"))
    }
}

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    let socket = match config::check_args(&args).and_then(|()| config::socket()) {
        Ok(s) => s,
        Err(e) => {
            ctx.log_warning(&format!("lake: {}", e.message));
            return Status::Err;
        }
    };
    let client = match client::Client::start(socket.clone().into(), commands::on_unsolicited) {
        Ok(c) => c,
        Err(e) => {
            ctx.log_warning(&format!("lake: cannot start channel threads: {e}"));
            return Status::Err;
        }
    };
    if let Err(e) = gate::init(ctx) {
        ctx.log_warning(&format!("lake: {}", e.message));
        return Status::Err;
    }
    owner::init(ctx);
    if let Some(register) = unsafe { redis_module::raw::RedisModule_RegisterInfoFunc } {
        unsafe { register(ctx.ctx, Some(info)) };
    }
    ctx.log_notice(&format!(
        "lake: sidecar socket {socket}, timeout {} ms, snapshot-every {}",
        config::timeout().as_millis(),
        config::snapshot_every()
    ));
    let _ = state::CLIENT.set(client);
    compactor::start(ctx);
    Status::Ok
}

/// Runs a handler: its result becomes the reply (errors through
/// [`reply::result`]), and a panic becomes an error reply instead of
/// crossing into Redis. Every command runs in database 0 only
/// ([`commands::check_db`]).
fn guard(
    name: &str,
    f: fn(&Context, Vec<RedisString>) -> Result<redis_module::RedisValue, lake_shared::LakeError>,
    ctx: &Context,
    args: Vec<RedisString>,
) -> RedisResult {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reply::result(commands::check_db(ctx).and_then(|()| f(ctx, args)))
    }))
    .unwrap_or_else(|_| Err(reply::panicked(name)))
}

fn lake_write(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.WRITE", commands::write, ctx, args)
}

fn lake_read(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.READ", commands::read, ctx, args)
}

fn lake_remove(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.REMOVE", commands::remove, ctx, args)
}

fn lake_gc(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.GC", commands::gc, ctx, args)
}

fn lake_history(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.HISTORY", commands::history, ctx, args)
}

fn lake_info(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.INFO", commands::info, ctx, args)
}

fn lake_compact(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.COMPACT", commands::compact, ctx, args)
}

fn lake_retention(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.RETENTION", commands::set_retention, ctx, args)
}

fn lake_drop(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard("LAKE.DROP", commands::drop_catalog, ctx, args)
}

/// `INFO lake`: the module's counters ([`stats`]). Registered by hand in
/// `init` (the macro's `info:` needs a crate this build does not use).
extern "C" fn info(ctx: *mut redis_module::raw::RedisModuleInfoCtx, _for_crash_report: i32) {
    let _ = std::panic::catch_unwind(|| stats::info(&InfoContext::new(ctx)));
}

redis_module! {
    name: "lake",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
    commands: [
        ["lake.write", lake_write, "write deny-oom", 1, 1, 1, ""],
        ["lake.read", lake_read, "readonly", 1, 1, 1, ""],
        ["lake.remove", lake_remove, "write", 1, 1, 1, ""],
        ["lake.drop", lake_drop, "write", 1, 1, 1, ""],
        ["lake.gc", lake_gc, "readonly admin", 0, 0, 0, ""],
        ["lake.history", lake_history, "readonly", 1, 1, 1, ""],
        ["lake.compact", lake_compact, "write", 1, 1, 1, ""],
        ["lake.retention", lake_retention, "write", 1, 1, 1, ""],
        ["lake.info", lake_info, "readonly", 1, 1, 1, ""],
    ],
    configurations: [
        i64: [
            ["timeout-ms", &config::TIMEOUT_MS, 5000, 1, 3_600_000, ConfigurationFlags::DEFAULT, None],
            ["snapshot-every", &config::SNAPSHOT_EVERY, 64, 0, 1_000_000_000, ConfigurationFlags::DEFAULT, None],
            ["max-value-bytes", &config::MAX_VALUE_BYTES, lake_shared::DEFAULT_MAX_VALUE_BYTES as i64, 1, 500 << 20, ConfigurationFlags::DEFAULT, None],
            ["max-inflight", &config::MAX_INFLIGHT, 10_000, 1, 10_000_000, ConfigurationFlags::DEFAULT, None],
            ["gc-grace-secs", &config::GC_GRACE_SECS, 3600, 0, 315_360_000, ConfigurationFlags::DEFAULT, None],
            ["retention-secs", &config::RETENTION_SECS, 0, 0, 3_153_600_000, ConfigurationFlags::DEFAULT, None],
            ["compact-interval-ms", &config::COMPACT_INTERVAL_MS, 1000, 0, 3_600_000, ConfigurationFlags::DEFAULT, None],
        ],
        string: [
            ["socket", &config::SOCKET, "", ConfigurationFlags::IMMUTABLE, None],
        ],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
