//! May this node touch a catalog's keys now? The rules that keep an index
//! write out of a slot this node does not serve, and out of a pause.
//!
//! Redis routes `LAKE.*` by the catalog argument `<name>`, which hashes to
//! the slot of `catalog:{<name>}` but is never itself a key. So while a slot
//! migrates, Redis's own check on the source always finds "the key" missing
//! and sends the command to the target with `ASK`, whether or not the
//! catalog's real keys have moved yet; and a completion that arrives after
//! the routing decision runs outside any routing at all. These checks apply
//! Redis's rules to the real keys:
//!
//! - At command time ([`check_command`]), on a cluster primary: a probe
//!   without the client's `ASKING` flag tells a slot this node serves from
//!   one it is importing. An `ASKING` command is served only when the
//!   catalog's index key has already arrived (else `TRYAGAIN`: the source
//!   still holds it), and never for `LAKE.REMOVE`/`LAKE.DROP` (their fence and
//!   snapshot keys may still be on the source).
//! - At commit time ([`check_delta_commit`]), on Redis's main thread or under
//!   the Redis lock: writes not paused, this node a primary, and in a
//!   cluster Redis's own routing (`RM_Call` of `EXISTS` on the index key,
//!   which fails for a slot served elsewhere or a migrating slot whose key
//!   has left) or, for an `ASKING` write, a slot still importing here with
//!   the key present. Otherwise `TRYAGAIN` (or `READONLY` on a standalone
//!   replica) and nothing is indexed.
//! - Snapshots ([`may_commit_snapshot`]) are optional, so they are committed
//!   only in a slot this primary serves and is not moving.
//! - `LAKE.GC` ([`gc_slots`]) runs on primaries only and, in a cluster,
//!   only while the cluster state is `ok` and this node is not flagged
//!   failing, and considers only the slots the node serves and is not moving.

use std::sync::atomic::{AtomicPtr, Ordering};

use lake_shared::cluster::{self, Myself, SlotSet};
use lake_shared::{catalog, LakeError};
use redis_module::{raw, Context, ContextFlags, RedisValue};

use crate::zset;

/// How a command reached this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Standalone, a replica, or a slot this primary serves.
    Served,
    /// An `ASKING` command for a slot this primary is importing.
    Asking,
}

/// What a command is about to do with the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    /// REMOVE and DROP: touch the fence and snapshot keys too.
    Repair,
}

/// A detached context whose client carries no `ASKING`/`READONLY` flag:
/// `RM_Call` through it applies Redis's routing as a plain client would see
/// it. Made at load; used on the main thread only.
static PLAIN: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Creates the probe context. Called once from the module's init.
pub fn init(ctx: &Context) {
    if let Some(get) = unsafe { raw::RedisModule_GetDetachedThreadSafeContext } {
        PLAIN.store(unsafe { get(ctx.ctx) }, Ordering::Release);
    }
}

/// Whether Redis has paused writes (`FAILOVER`, `CLUSTER FAILOVER`,
/// `CLIENT PAUSE`): nothing may be written or propagated then (Redis 7.0
/// asserts). Also ends a pause whose time is up. Main thread or lock.
pub fn paused() -> bool {
    unsafe { raw::RedisModule_AvoidReplicaTraffic.is_some_and(|f| f() != 0) }
}

fn in_cluster(ctx: &Context) -> bool {
    ctx.get_flags().contains(ContextFlags::CLUSTER)
}

fn is_primary(ctx: &Context) -> bool {
    let f = ctx.get_flags();
    f.contains(ContextFlags::MASTER) && !f.contains(ContextFlags::SLAVE)
}

/// Redis's routing for a plain access to `key` from `ctx`'s client: true
/// when this node would serve it (the key's slot is ours, or it is
/// migrating and the key is still here).
fn routed_here(ctx: &Context, key: &str) -> bool {
    matches!(ctx.call("EXISTS", &[key]), Ok(RedisValue::Integer(_)))
}

/// This node's own line of `CLUSTER NODES`.
pub fn myself(ctx: &Context) -> Result<Myself, LakeError> {
    let text = match ctx.call("CLUSTER", &["NODES"]) {
        Ok(RedisValue::BulkString(s)) | Ok(RedisValue::SimpleString(s)) => s,
        Ok(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(other) => {
            return Err(LakeError::internal(format!(
                "CLUSTER NODES returned {other:?}"
            )))
        }
        Err(e) => return Err(LakeError::internal(format!("CLUSTER NODES failed: {e}"))),
    };
    Myself::parse(&text)
        .ok_or_else(|| LakeError::internal("CLUSTER NODES has no line for this node"))
}

fn moving(cat: &str) -> LakeError {
    LakeError::retry(format!(
        "catalog '{cat}': its slot {} is being migrated and its keys are not all on this node yet; retry",
        cluster::catalog_slot(cat)
    ))
}

/// At command time, on Redis's main thread: how the command reached this
/// node, or `TRYAGAIN` when it may not run here yet.
pub fn check_command(ctx: &Context, cat: &str, op: Op) -> Result<Access, LakeError> {
    if !in_cluster(ctx) || !is_primary(ctx) {
        return Ok(Access::Served);
    }
    let idx = catalog::index_key(cat);
    let plain = PLAIN.load(Ordering::Acquire);
    if plain.is_null() || routed_here(&Context::new(plain), &idx) {
        return Ok(Access::Served);
    }
    // Redis let the command in, a plain client would not be: it came with
    // ASKING to the node importing the slot.
    if op == Op::Repair || !zset::exists(ctx, &idx) {
        return Err(moving(cat));
    }
    Ok(Access::Asking)
}

/// At commit time, on Redis's main thread or under the Redis lock: whether a
/// delta of `cat` may be indexed here now.
pub fn check_delta_commit(ctx: &Context, cat: &str, access: Access) -> Result<(), LakeError> {
    if paused() {
        return Err(LakeError::retry(
            "writes are paused (failover or CLIENT PAUSE); the write was not indexed",
        ));
    }
    let cluster = in_cluster(ctx);
    if !is_primary(ctx) {
        let msg = "this node is no longer a primary (failover); the write was not indexed";
        return Err(if cluster {
            LakeError::retry(msg)
        } else {
            LakeError::read_only(msg)
        });
    }
    if !cluster {
        return Ok(());
    }
    let idx = catalog::index_key(cat);
    if routed_here(ctx, &idx) {
        return Ok(());
    }
    let slot = cluster::catalog_slot(cat);
    if access == Access::Asking && zset::exists(ctx, &idx) && myself(ctx)?.importing.contains(slot)
    {
        return Ok(());
    }
    Err(LakeError::retry(format!(
        "catalog '{cat}': slot {slot} is no longer served by this node or is moving away; the write was not indexed"
    )))
}

/// Whether a snapshot of `cat` may be committed here now: never during a
/// pause or on a replica, and in a cluster only in a slot this node serves
/// and is not moving. Snapshots are optional: a skipped one costs a replay.
pub fn may_commit_snapshot(ctx: &Context, cat: &str) -> bool {
    if paused() || !is_primary(ctx) {
        return false;
    }
    if !in_cluster(ctx) {
        return true;
    }
    myself(ctx).is_ok_and(|me| me.stable().contains(cluster::catalog_slot(cat)))
}

/// The slots `LAKE.GC` may collect on this node: `None` (all) outside a
/// cluster, the stable slots of this primary in one. Refused on replicas.
pub fn gc_slots(ctx: &Context) -> Result<Option<SlotSet>, LakeError> {
    if !is_primary(ctx) {
        return Err(LakeError::invalid(
            "LAKE.GC runs on a primary: a replica's index may lag behind",
        ));
    }
    if !in_cluster(ctx) {
        return Ok(None);
    }
    // A primary cut off from the majority still calls itself primary until
    // it learns otherwise, while a replica elsewhere may already have been
    // promoted and indexed writes this node never saw: it must not delete.
    let state = match ctx.call("CLUSTER", &["INFO"]) {
        Ok(RedisValue::BulkString(s)) | Ok(RedisValue::SimpleString(s)) => s,
        Ok(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    if !cluster::state_ok(&state) {
        return Err(LakeError::retry(
            "LAKE.GC refuses while the cluster state is not ok (this node may be cut off, and another primary may hold references it cannot see); nothing was deleted",
        ));
    }
    let me = myself(ctx)?;
    if !me.primary || me.failing {
        return Err(LakeError::invalid(
            "LAKE.GC runs on a primary that the cluster agrees is one: a replica's index may lag behind, and a failing primary may have been replaced",
        ));
    }
    Ok(Some(me.stable()))
}
