//! lake-shared: everything the module and the sidecar must agree on, with no
//! Redis and no async runtime in sight, so it can be unit tested directly.
//!
//! - [`catalog`]: catalog-name rules, Redis keys and object keys.
//! - [`cluster`]: hash slots and a node's own `CLUSTER NODES` line.
//! - [`path`]: field paths (dot form, RFC 6901 pointers, `$`).
//! - [`member`]: the `<field>:<uuid>` sorted-set member codec.
//! - [`stamp`]: commit-stamp allocation.
//! - [`mode`]: write modes.
//! - [`native`]: JSON text to values and back (exact numbers, key order)
//!   and the built-in modes' left fold, used by the sidecar's merges and by
//!   the module's folds of hot reads.
//! - [`envelope`]: the self-describing object bodies in the store.
//! - [`segment`]: many delta records per object, located from their uuid.
//! - [`journal`]: the index changes shipped to the store, and their fold.
//! - [`proto`]: the framed module<->sidecar wire protocol.
//! - [`error`]: the coarse error kinds and their Redis reply prefixes.

pub mod catalog;
pub mod cluster;
pub mod envelope;
pub mod error;
pub mod journal;
pub mod latency;
pub mod member;
pub mod mode;
pub mod native;
pub mod path;
pub mod proto;
pub mod segment;
pub mod stamp;

pub use error::{ErrorKind, LakeError};

/// Largest field path accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 512;
/// Largest catalog name accepted, in bytes.
pub const MAX_CATALOG_BYTES: usize = 128;
/// The depth budget: a document Lake builds nests at most this many
/// levels, counting a write's field path segments plus its value's own
/// nesting (`LAKE.WRITE c a.b '{"x":[1]}'` builds 4). A write over it is
/// refused before anything is stored; a custom mode's output over it fails
/// the merge. The same budget holds for snapshots, which are folds.
pub const MAX_DOC_DEPTH: usize = 128;
/// Deepest document a read parses: far above [`MAX_DOC_DEPTH`], so every
/// document the fold can build reads back, and so do documents an older
/// build let through (up to 512 path segments plus 128 value levels).
pub const MAX_READ_DEPTH: usize = 1024;
/// Default largest JSON value accepted by `LAKE.WRITE`, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// The shortest grace `LAKE.GC` accepts, in whole seconds: an object is
/// stored before its index entry, and the entry is written at most
/// `timeout` after the request began (a commit parked by a pause is
/// answered `TRYAGAIN` by then, never indexed later); twice that, rounded
/// up, plus one second because stores report last-modified times in whole
/// seconds (truncated), so an object may look up to a second older than it
/// is.
pub fn gc_grace_floor_secs(timeout: std::time::Duration) -> u64 {
    (timeout.as_millis() * 2).div_ceil(1000) as u64 + 1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn gc_grace_floor_rounds_up_and_covers_the_clock_resolution() {
        let floor = |ms| super::gc_grace_floor_secs(Duration::from_millis(ms));
        assert_eq!(floor(1500), 4, "3 s, not 2");
        assert_eq!(floor(5000), 11);
        assert_eq!(floor(1), 2);
        assert_eq!(floor(999), 3);
    }
}
