//! lake-soak as a library: the recorded history, the checker and the
//! report, each usable (and tested) without a running Lake.
//!
//! - [`history`]: operations, faults and final state of a run.
//! - [`checker`]: the list-append checker.
//! - [`report`]: the text report and the timeline picture (SVG).

pub mod checker;
pub mod history;
pub mod report;
