//! `LAKE.VIEW <catalog> <name>`: a computed view of the catalog's document
//! (the sidecar's `--views <dir>/<name>.js`, `function view(doc)`, run in
//! the custom modes' sandbox with their limits), nil for an empty catalog.
//!
//! The module plans the read exactly as `LAKE.READ` does (one command
//! execution) and answers an unchanged catalog from its reply cache
//! (`reply_cache.rs`); the sidecar computes the view at most once per
//! catalog version and answers from its own cache otherwise
//! (`sidecar/src/views.rs`).

use std::sync::Arc;

use lake_shared::proto::{Request, Response, SnapshotPolicy, View};
use lake_shared::{mode, LakeError};
use redis_module::{Context, RedisString, RedisValue};
use serde_json::value::RawValue;

use super::read::plan;
use super::{arg_str, catalog_arg, check_can_block, unexpected};
use crate::blocked::Blocked;
use crate::owner::{self, Op};
use crate::{reply_cache, state, stats};

pub fn view(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    if args.len() != 3 {
        return Err(LakeError::invalid(
            "wrong number of arguments: LAKE.VIEW <catalog> <name>",
        ));
    }
    let cat = catalog_arg(&args, 1)?;
    let name = arg_str(&args[2], "view name")?;
    let name = mode::parse(name).map_err(|_| {
        LakeError::invalid(format!(
            "invalid view name '{name}': [A-Za-z0-9_-], at most {} bytes",
            mode::MAX_MODE_BYTES
        ))
    })?;
    check_can_block(ctx, "LAKE.VIEW")?;
    owner::check_command(ctx, cat, Op::Read)?;
    let plan = plan(ctx, cat, None, None, None)?;
    let Some(read) = plan.read else {
        return Ok(RedisValue::Null);
    };
    // Unchanged since the last call: answered here (see reply_cache.rs).
    let cache_key = (read.snapshot == SnapshotPolicy::Never)
        .then(|| reply_cache::Key::of_view(&read, plan.shape, &name));
    if let Some(answer) = cache_key.as_ref().and_then(reply_cache::get) {
        stats::bump(&stats::READS);
        return Ok(answer.map_or(RedisValue::Null, |t| RedisValue::BulkString(t.to_string())));
    }
    let client = state::client()?;
    client.check_room()?;
    let bc = Blocked::new(ctx, c"lake-view")?;
    client.submit(
        &Request::View(View { view: name, read }),
        Box::new(move |res| match res {
            Ok(Response::Doc(doc)) => {
                if let Some(key) = cache_key {
                    reply_cache::put(key, doc.json.as_deref().map(|j| Arc::from(j.get())));
                }
                stats::bump(&stats::READS);
                bc.reply_here(doc.json.as_deref().map(RawValue::get));
            }
            Ok(Response::Error(e)) | Err(e) => bc.finish(Box::new(move |_| Err(e))),
            Ok(other) => bc.finish(Box::new(move |_| Err(unexpected(&other)))),
        }),
    );
    Ok(RedisValue::NoReply)
}
