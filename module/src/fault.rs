//! Fault injection for tests (built only with the `fault-injection`
//! feature): `LAKE.FAULT <entry>` arms one panic at the start of the named
//! entry's guarded body ([`crate::entry::guard`]), so a test can prove that
//! a panic in any function Redis calls is caught and Redis stays up.
//! `LAKE.FAULT` alone lists what is armed.

use std::sync::Mutex;

use lake_shared::LakeError;
use redis_module::{Context, RedisString, RedisValue};

static ARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Panics once if `entry` was armed.
pub fn hit(entry: &str) {
    let armed = ARMED
        .lock()
        .map(|mut a| match a.iter().position(|e| e == entry) {
            Some(i) => {
                a.remove(i);
                true
            }
            None => false,
        });
    if armed.unwrap_or(false) {
        panic!("fault injected at {entry}");
    }
}

/// `LAKE.FAULT [<entry>]`.
pub fn command(_: &Context, args: Vec<RedisString>) -> Result<RedisValue, LakeError> {
    let mut armed = ARMED
        .lock()
        .map_err(|_| LakeError::internal("fault table poisoned"))?;
    if let Some(a) = args.get(1) {
        armed.push(a.to_string_lossy());
    }
    Ok(RedisValue::Array(
        armed.iter().cloned().map(RedisValue::BulkString).collect(),
    ))
}
