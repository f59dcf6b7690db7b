//! `LAKE.GC`: the referenced set, read in one command execution, handed to
//! the sidecar, which deletes old unreferenced objects of the catalogs this
//! node serves.

use lake_shared::proto::{Gc, Request, Response};
use lake_shared::{catalog, cluster, member, LakeError};
use redis_module::{Context, RedisString, RedisValue};

use super::{arg_str, check_can_block, unexpected, value_string};
use crate::blocked::Blocked;
use crate::owner::{self};
use crate::{config, state, zset};

/// `LAKE.GC [DRYRUN] [GRACE <seconds>]`: deletes objects that no index entry
/// references and that are older than the grace period, and replies
/// `[scanned, referenced, young, orphans, deleted]`.
///
/// The grace floor is [`lake_shared::gc_grace_floor_secs`]; ages are measured on the
/// store's clock (the sidecar's GC).
///
/// The referenced set is read from every `catalog:{*}` key in this command
/// execution (a SCAN on the main thread: an admin command whose cost grows
/// with the index). The grace period is never below twice `timeout-ms`, so a
/// write still waiting for its commit cannot lose its object. Runs on
/// primaries only; in Redis Cluster it considers only catalogs whose slot
/// this node serves and is not migrating ([`owner::gc_slots`]): the store
/// is shared by every shard.
pub fn gc(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    const USAGE: &str = "LAKE.GC [DRYRUN] [GRACE <seconds>]";
    let (mut dry_run, mut grace) = (false, config::gc_grace_secs());
    let mut i = 1;
    while i < args.len() {
        match arg_str(&args[i], "option")?.to_ascii_uppercase().as_str() {
            "DRYRUN" => {
                dry_run = true;
                i += 1;
            }
            "GRACE" => {
                let v = args.get(i + 1).ok_or_else(|| {
                    LakeError::invalid(format!("syntax error: GRACE needs seconds ({USAGE})"))
                })?;
                let v = arg_str(v, "GRACE")?;
                grace = v.parse().map_err(|_| {
                    LakeError::invalid(format!("GRACE needs whole seconds, got '{v}'"))
                })?;
                i += 2;
            }
            other => {
                return Err(LakeError::invalid(format!(
                    "syntax error near '{other}': {USAGE}"
                )))
            }
        }
    }
    let grace = grace.max(lake_shared::gc_grace_floor_secs(config::timeout()));
    check_can_block(ctx, "LAKE.GC")?;
    let client = state::client()?;
    client.check_room()?;

    let slots = owner::gc_slots(ctx)?;
    let mut referenced = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let v = ctx
            .call(
                "SCAN",
                &[
                    cursor.as_str(),
                    "MATCH",
                    "catalog:{*",
                    "COUNT",
                    "1000",
                    "TYPE",
                    "zset",
                ],
            )
            .map_err(|e| LakeError::internal(format!("SCAN failed: {e}")))?;
        let RedisValue::Array(mut parts) = v else {
            return Err(LakeError::internal("SCAN returned no array"));
        };
        let keys = parts.pop().unwrap_or(RedisValue::Null);
        cursor = value_string(parts.pop().unwrap_or(RedisValue::Null))?;
        if let RedisValue::Array(keys) = keys {
            for k in keys {
                let key = value_string(k)?;
                let Some(inner) = key.strip_prefix("catalog:{") else {
                    continue;
                };
                let (cat, snap) = match inner.strip_suffix("}:snap") {
                    Some(c) => (c, true),
                    None => match inner.strip_suffix('}') {
                        Some(c) => (c, false),
                        None => continue,
                    },
                };
                if catalog::validate(cat).is_err() {
                    continue;
                }
                // A key left in a slot this node does not serve (or is
                // moving) belongs to no catalog it may collect.
                if slots
                    .as_ref()
                    .is_some_and(|s| !s.contains(cluster::catalog_slot(cat)))
                {
                    continue;
                }
                for e in zset::after(ctx, &key, None, f64::INFINITY)? {
                    if snap {
                        if let Ok(u) = member::decode_snap(&e.member) {
                            referenced.push(catalog::snapshot_object(cat, u));
                        }
                    } else if let Ok((_, u)) = member::decode(&e.member) {
                        referenced.push(catalog::delta_object(cat, u));
                    }
                }
            }
        }
        if cursor == "0" {
            break;
        }
    }

    let req = Request::Gc(Gc {
        referenced,
        grace_secs: grace,
        dry_run,
        slots: slots.map(|s| s.ranges()),
    });
    let bc = Blocked::new(ctx)?;
    client.submit(
        &req,
        Box::new(move |res| {
            bc.finish(Box::new(move |_| match res? {
                Response::GcDone(r) => Ok(RedisValue::Array(
                    [r.scanned, r.referenced, r.young, r.orphans, r.deleted]
                        .into_iter()
                        .map(|n| RedisValue::Integer(n as i64))
                        .collect(),
                )),
                Response::Error(e) => Err(e),
                other => Err(unexpected(&other)),
            }))
        }),
    );
    Ok(RedisValue::NoReply)
}
