//! Redis keyspace notifications for Lake's index changes, so existing
//! tooling (`PSUBSCRIBE __keyspace@0__:catalog:*`, client-side caching
//! helpers) sees them: a module event (class `d`; enable with
//! `notify-keyspace-events Kd` or `KA`) on the catalog's index key
//! `catalog:{<name>}`, named `lake.write`, `lake.snapshot`, `lake.remove`,
//! `lake.drop`, `lake.compact` or `lake.retention`.
//!
//! Fired on the main thread in the step that made the change (the same
//! place the change is journaled), on the node that made it; a replica
//! sees Redis's own `zadd`/`zrem`/`del` events of the replicated commands.

use std::ffi::CStr;

use lake_shared::catalog;
use lake_shared::journal::Change;
use redis_module::{raw, Context};

/// The event name of `change`.
pub fn event(change: &Change) -> &'static CStr {
    match change {
        Change::Delta { .. } => c"lake.write",
        Change::Snap { .. } => c"lake.snapshot",
        Change::Remove { .. } => c"lake.remove",
        Change::Drop => c"lake.drop",
        Change::Floor { .. } => c"lake.compact",
        Change::Retention { .. } => c"lake.retention",
    }
}

/// Fires `change`'s event on `cat`'s index key.
pub fn changed(ctx: &Context, cat: &str, change: &Change) {
    let Some(notify) = (unsafe { raw::RedisModule_NotifyKeyspaceEvent }) else {
        return;
    };
    let key = ctx.create_string(catalog::index_key(cat).as_str());
    unsafe {
        notify(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_MODULE,
            event(change).as_ptr(),
            key.inner,
        )
    };
}
