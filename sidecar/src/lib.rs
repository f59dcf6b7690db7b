//! lake-sidecar as a library: everything but argument parsing, so each part
//! is unit tested directly.
//!
//! - [`store`]: object stores (`local://`, `file://`, `s3://`).
//! - [`batch`]: many writes per PUT, as segment objects.
//! - [`cache`]: merged documents, so reads merge only new deltas.
//! - [`views`]: computed views, once per catalog version.
//! - [`native`]: re-exported from lake-shared (the module folds hot reads
//!   with it too): the built-in modes and the left fold, in Rust.
//! - [`merge`]: the merge engine's threads; QuickJS for custom modes.
//! - [`service`]: put, read/merge, snapshots.
//! - [`gc`]: garbage collection of unreferenced objects.
//! - [`backup`]: the index journal in the store: ship, read, what GC keeps.
//! - [`channel`]: the Unix-socket server the module talks to.
//! - [`http`]: `/healthz` and `/metrics`.
//! - [`restore`]: `lake-sidecar restore`, the index back from the journal.
//! - [`check`]: `lake-sidecar check`, and the hints `/healthz` gives.

pub mod backup;
pub mod batch;
pub mod cache;
pub mod channel;
pub mod check;
pub mod gc;
pub mod http;
pub mod merge;
pub mod metrics;
pub use lake_shared::native;
pub mod restore;
pub mod service;
pub mod store;
pub mod views;
