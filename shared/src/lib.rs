//! lake-shared: everything the module and the sidecar must agree on, with no
//! Redis and no async runtime in sight, so it can be unit tested directly.
//!
//! - [`catalog`]: catalog-name rules, Redis keys and object keys.
//! - [`cluster`]: hash slots and a node's own `CLUSTER NODES` line.
//! - [`path`]: field paths (dot form, RFC 6901 pointers, `$`).
//! - [`member`]: the `<field>:<uuid>` sorted-set member codec.
//! - [`stamp`]: commit-stamp allocation.
//! - [`mode`]: write modes.
//! - [`envelope`]: the self-describing object bodies in the store.
//! - [`segment`]: many delta records per object, located from their uuid.
//! - [`proto`]: the framed module<->sidecar wire protocol.
//! - [`error`]: the coarse error kinds and their Redis reply prefixes.

pub mod catalog;
pub mod cluster;
pub mod envelope;
pub mod error;
pub mod member;
pub mod mode;
pub mod path;
pub mod proto;
pub mod segment;
pub mod stamp;

pub use error::{ErrorKind, LakeError};

/// Largest field path accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 512;
/// Largest catalog name accepted, in bytes.
pub const MAX_CATALOG_BYTES: usize = 128;
/// Default largest JSON value accepted by `LAKE.WRITE`, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;
