//! Counters for `/metrics` (Prometheus text format). Plain atomics: cheap on
//! the hot path, read only when scraped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Process-wide counters.
        #[derive(Default)]
        pub struct Metrics {
            $(pub $name: AtomicU64,)*
            /// Requests currently being served.
            pub inflight: AtomicI64,
        }

        impl Metrics {
            /// Renders all metrics in the Prometheus text format.
            pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
                let mut out = String::new();
                $(
                    out.push_str(&format!(
                        "# HELP lake_{0} {1}\n# TYPE lake_{0} counter\nlake_{0} {2}\n",
                        stringify!($name), $help, self.$name.load(Ordering::Relaxed)
                    ));
                )*
                out.push_str(&format!(
                    "# HELP lake_inflight Requests being served now.\n# TYPE lake_inflight gauge\nlake_inflight {}\n",
                    self.inflight.load(Ordering::Relaxed)
                ));
                for (name, help, v) in extra {
                    out.push_str(&format!("# HELP lake_{name} {help}\n# TYPE lake_{name} counter\nlake_{name} {v}\n"));
                }
                out
            }
        }
    };
}

counters! {
    writes_total: "Delta bodies stored for LAKE.WRITE.",
    write_errors_total: "LAKE.WRITE uploads that failed.",
    reads_total: "LAKE.READ merges served.",
    read_errors_total: "LAKE.READ merges that failed.",
    deltas_merged_total: "Deltas folded into documents.",
    snapshots_total: "Snapshots stored.",
    snapshot_errors_total: "Snapshot builds that failed.",
    snapshots_skipped_total: "Background snapshots skipped because one was already being built for the catalog.",
    store_puts_total: "Object store PUT requests.",
    journal_batches_total: "Journal batches shipped to the store (index changes of many writes each).",
    journal_entries_total: "Index changes shipped to the store.",
    checkpoints_total: "Journal checkpoints written (the shipped journal folded into one object).",
    journal_objects_deleted_total: "Journal batches and checkpoints deleted: covered by a checkpoint older than the backup retention.",
    gc_refusals_total: "LAKE.GC runs refused because the index holds much less than the shipped backup.",
    gc_chunks_total: "Chunks of LAKE.GC referenced sets received (a large index arrives in many bounded chunks).",
    segments_total: "Segment objects stored (one PUT holding many writes).",
    segment_records_total: "Writes stored as records of a segment.",
    store_gets_total: "Object store GET requests.",
    cache_hits_total: "Reads that started from a cached merged document.",
    cache_misses_total: "Reads merged from the snapshot (or the start) because nothing usable was cached.",
    views_run_total: "LAKE.VIEW values computed (a view function called).",
    views_cached_total: "LAKE.VIEW answers served from the view cache (the catalog had not changed).",
    view_errors_total: "LAKE.VIEW calls whose view threw, ran past its deadline or ran out of memory.",
    busy_total: "Requests refused with LAKEBUSY.",
    connections_total: "Module connections accepted.",
    handshake_failures_total: "Peers dropped for failing the handshake.",
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
