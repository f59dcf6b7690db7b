//! liblake.so: the Lake Redis module. A thin shell: argument parsing, command
//! registration and handlers; the logic lives in `lake-shared` and the
//! sidecar.
//!
//! Commands declare the catalog argument as their key (first=last=1, step 1),
//! so Redis Cluster routes them to the slot of `catalog:{<name>}` and ACL key
//! patterns apply to catalog names. Nothing panics across the FFI boundary:
//! every function Redis calls is in [`entry`], behind one guard.

mod blocked;
mod client;
mod commands;
mod compactor;
mod config;
mod entry;
#[cfg(feature = "fault-injection")]
mod fault;
mod gate;
mod journal;
mod notify;
mod owner;
mod reply;
mod reply_cache;
mod stats;
mod zset;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{redis_module, Context, RedisString, Status};

use crate::reply::{notice, warning};

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

/// Loads the module; a panic here fails the load instead of aborting Redis.
fn init(ctx: &Context, args: &[RedisString]) -> Status {
    entry::guard("init", || Status::Err, || load(ctx, args))
}

fn load(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    let socket = match config::check_args(&args).and_then(|()| config::socket()) {
        Ok(s) => s,
        Err(e) => {
            warning(ctx, &format!("lake: {}", e.message));
            return Status::Err;
        }
    };
    let client = match client::Client::start(socket.clone().into(), commands::on_unsolicited) {
        Ok(c) => c,
        Err(e) => {
            warning(ctx, &format!("lake: cannot start channel threads: {e}"));
            return Status::Err;
        }
    };
    if let Err(e) = entry::register(ctx).and_then(|()| gate::init(ctx)) {
        warning(ctx, &format!("lake: {}", e.message));
        return Status::Err;
    }
    owner::init(ctx);
    notice(
        ctx,
        &format!(
            "lake: sidecar socket {socket}, timeout {} ms, snapshot-every {}",
            config::timeout().as_millis(),
            config::snapshot_every()
        ),
    );
    let _ = state::CLIENT.set(client);
    compactor::start(ctx);
    journal::start(ctx);
    Status::Ok
}

redis_module! {
    name: "lake",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
    configurations: [
        i64: [
            ["timeout-ms", &config::TIMEOUT_MS, 5000, 1, 3_600_000, ConfigurationFlags::DEFAULT, None],
            ["snapshot-every", &config::SNAPSHOT_EVERY, 64, 0, 1_000_000_000, ConfigurationFlags::DEFAULT, None],
            ["max-value-bytes", &config::MAX_VALUE_BYTES, lake_shared::DEFAULT_MAX_VALUE_BYTES as i64, 1, 500 << 20, ConfigurationFlags::DEFAULT, None],
            ["max-inflight", &config::MAX_INFLIGHT, 10_000, 1, 10_000_000, ConfigurationFlags::DEFAULT, None],
            ["gc-grace-secs", &config::GC_GRACE_SECS, 3600, 0, 315_360_000, ConfigurationFlags::DEFAULT, None],
            ["retention-secs", &config::RETENTION_SECS, 0, 0, commands::compact::MAX_RETENTION_SECS as i64, ConfigurationFlags::DEFAULT, None],
            ["compact-interval-ms", &config::COMPACT_INTERVAL_MS, 1000, 0, 3_600_000, ConfigurationFlags::DEFAULT, None],
            ["ship-interval-ms", &config::SHIP_INTERVAL_MS, 1000, 0, 3_600_000, ConfigurationFlags::DEFAULT, None],
            ["reply-cache-mb", &config::REPLY_CACHE_MB, 64, 0, 1 << 20, ConfigurationFlags::DEFAULT, None],
        ],
        string: [
            ["socket", &config::SOCKET, "", ConfigurationFlags::IMMUTABLE, None],
        ],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
