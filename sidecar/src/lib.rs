//! lake-sidecar as a library: everything but argument parsing, so each part
//! is unit tested directly.
//!
//! - [`store`]: object stores (`file://`).
//! - [`cache`]: merged documents, so reads merge only new deltas.
//! - [`merge`]: the QuickJS merge engine.
//! - [`service`]: put, read/merge, snapshots.
//! - [`channel`]: the Unix-socket server the module talks to.
//! - [`http`]: `/healthz` and `/metrics`.

pub mod cache;
pub mod channel;
pub mod http;
pub mod merge;
pub mod metrics;
pub mod service;
pub mod store;
