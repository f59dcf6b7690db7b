//! The sidecar's metrics, served at `/metrics` in the OpenMetrics text
//! format through `prometheus-client` (the Prometheus project's Rust client:
//! typed counters, gauges, histograms and label families, so names, units,
//! `_total` suffixes, `# HELP` / `# TYPE` lines and escaping follow the
//! format by construction rather than by hand).
//!
//! Invariants:
//! - Every metric is `lake_<name>`: counters end in `_total` (the library
//!   adds it), durations are histograms in `_seconds`, sizes in `_bytes`;
//!   each has help text. The names are a contract: the Grafana dashboard
//!   (`deploy/grafana/lake.json`) and its test read them.
//! - Cheap on the hot path: a counter is one atomic add; a histogram
//!   observation a bucket search and two atomic adds. Encoding happens only
//!   when scraped.
//! - Values owned elsewhere (cache bytes, JS runtime rebuilds) are brought
//!   in at scrape time ([`Metrics::render`]), so they are never stale in
//!   a scrape.

use std::sync::Mutex;
use std::time::Instant;

use lake_shared::ErrorKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets: 50 µs doubling to about 52 s (21 buckets).
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 21))
}

/// Labels of `lake_store_request_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// The store's scheme (`s3`, `local`, `file`).
    pub store: &'static str,
    /// `put`, `get`, `get_range`, `list`, `delete`.
    pub op: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of `lake_request_seconds`: `write` (a `LAKE.WRITE` upload),
/// `read` (a `LAKE.READ` / `LAKE.MREAD` merge), `view`, `values`
/// (`LAKE.CHANGES ... WITHVALUES`), `gc`, `ship`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub request: &'static str,
}

/// Labels of `lake_errors_total`: the error kind, lowercase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Every metric the sidecar serves; cheap to share (`Arc`).
        pub struct Metrics {
            $(pub $name: Counter,)*
            /// Requests being served now.
            pub inflight: Gauge,
            /// Time to serve a module request, by kind.
            pub request_seconds: Family<RequestLabels, Histogram>,
            /// Object-store requests by store, operation and outcome.
            pub store_seconds: Family<StoreLabels, Histogram>,
            /// Folding deltas into a document (native modes and QuickJS).
            pub merge_seconds: Histogram,
            /// Building and storing one snapshot.
            pub snapshot_build_seconds: Histogram,
            /// Records per stored segment.
            pub segment_records: Histogram,
            /// From a segment's first record to the segment sealed.
            pub segment_fill_seconds: Histogram,
            /// Failed requests by error kind.
            pub errors: Family<ErrorLabels, Counter>,
            cache_bytes: Gauge,
            view_cache_bytes: Gauge,
            js_runtime_rebuilds: Counter,
            registry: Mutex<Registry>,
        }

        impl Default for Metrics {
            fn default() -> Self {
                let mut r = Registry::with_prefix("lake");
                $(
                    let $name = Counter::default();
                    r.register(
                        stringify!($name).trim_end_matches("_total"),
                        // The library ends help text with a period.
                        $help.trim_end_matches('.'),
                        $name.clone(),
                    );
                )*
                let m = Metrics {
                    $($name,)*
                    inflight: Gauge::default(),
                    request_seconds: Family::new_with_constructor(seconds),
                    store_seconds: Family::new_with_constructor(seconds),
                    merge_seconds: seconds(),
                    snapshot_build_seconds: seconds(),
                    segment_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
                    segment_fill_seconds: seconds(),
                    errors: Family::default(),
                    cache_bytes: Gauge::default(),
                    view_cache_bytes: Gauge::default(),
                    js_runtime_rebuilds: Counter::default(),
                    registry: Mutex::new(Registry::default()),
                };
                r.register("inflight", "Module requests being served now", m.inflight.clone());
                r.register_with_unit(
                    "request",
                    "Time the sidecar took to serve a module request, by kind (write: a LAKE.WRITE upload, durable when answered; read: a merge)",
                    Unit::Seconds,
                    m.request_seconds.clone(),
                );
                r.register_with_unit(
                    "store_request",
                    "Object-store requests by store, operation and outcome",
                    Unit::Seconds,
                    m.store_seconds.clone(),
                );
                r.register_with_unit(
                    "merge",
                    "Time to fold a read's new deltas into its document",
                    Unit::Seconds,
                    m.merge_seconds.clone(),
                );
                r.register_with_unit(
                    "snapshot_build",
                    "Time to encode and store one snapshot",
                    Unit::Seconds,
                    m.snapshot_build_seconds.clone(),
                );
                r.register(
                    "segment_records",
                    "Writes per stored segment (the group commit's batch size)",
                    m.segment_records.clone(),
                );
                r.register_with_unit(
                    "segment_fill",
                    "Time from a segment's first write to the segment sealed for its PUT",
                    Unit::Seconds,
                    m.segment_fill_seconds.clone(),
                );
                r.register("errors", "Module requests that failed, by error kind", m.errors.clone());
                r.register_with_unit(
                    "cache",
                    "Merged documents kept between reads (text and parsed trees)",
                    Unit::Bytes,
                    m.cache_bytes.clone(),
                );
                r.register_with_unit(
                    "view_cache",
                    "Computed LAKE.VIEW values kept",
                    Unit::Bytes,
                    m.view_cache_bytes.clone(),
                );
                r.register(
                    "js_runtime_rebuilds",
                    "QuickJS runtimes rebuilt after a failed merge or view",
                    m.js_runtime_rebuilds.clone(),
                );
                if let Ok(mut reg) = m.registry.lock() {
                    *reg = r;
                }
                m
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

/// What the scrape brings in from elsewhere ([`Metrics::render`]).
pub struct Scraped {
    pub cache_bytes: usize,
    pub view_cache_bytes: usize,
    pub js_runtime_rebuilds: u64,
}

impl Metrics {
    pub fn inc(c: &Counter) {
        c.inc();
    }

    /// Observes the time since `start` in `h`.
    pub fn since(h: &Histogram, start: Instant) {
        h.observe(start.elapsed().as_secs_f64());
    }

    /// Observes a module request's time, and its error kind when it failed.
    pub fn request(&self, request: &'static str, start: Instant, error: Option<ErrorKind>) {
        self.request_seconds
            .get_or_create(&RequestLabels { request })
            .observe(start.elapsed().as_secs_f64());
        if let Some(kind) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind: kind_label(kind),
                })
                .inc();
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self, s: Scraped) -> String {
        self.cache_bytes
            .set(i64::try_from(s.cache_bytes).unwrap_or(i64::MAX));
        self.view_cache_bytes
            .set(i64::try_from(s.view_cache_bytes).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            // Bring the runtime's monotonic count in under the lock, so two
            // scrapes never add the same rebuilds twice.
            let seen = self.js_runtime_rebuilds.get();
            self.js_runtime_rebuilds
                .inc_by(s.js_runtime_rebuilds.saturating_sub(seen));
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        }
        out
    }
}

/// `Invalid` -> `invalid`, as in `lake_errors_total{kind="invalid"}`.
fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Invalid => "invalid",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Data => "data",
        ErrorKind::Busy => "busy",
        ErrorKind::Retry => "retry",
        ErrorKind::ReadOnly => "readonly",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition parses as the format says: each family with help
    /// and type, counters ending `_total`, histograms with buckets, `# EOF`.
    #[test]
    fn renders_openmetrics_with_units_and_totals() {
        let m = Metrics::default();
        Metrics::inc(&m.writes_total);
        m.request("write", Instant::now(), None);
        m.request("read", Instant::now(), Some(ErrorKind::Data));
        m.store_seconds
            .get_or_create(&StoreLabels {
                store: "s3",
                op: "get_range",
                outcome: "ok",
            })
            .observe(0.001);
        let text = m.render(Scraped {
            cache_bytes: 42,
            view_cache_bytes: 0,
            js_runtime_rebuilds: 3,
        });
        for want in [
            "# HELP lake_writes Delta bodies stored for LAKE.WRITE.\n",
            "# TYPE lake_writes counter",
            "lake_writes_total 1",
            "# TYPE lake_request_seconds histogram",
            "# UNIT lake_request_seconds seconds",
            "lake_request_seconds_count{request=\"write\"} 1",
            "lake_errors_total{kind=\"data\"} 1",
            "lake_store_request_seconds_bucket{le=\"0.0016\",store=\"s3\",op=\"get_range\",outcome=\"ok\"} 1",
            "lake_cache_bytes 42",
            "lake_js_runtime_rebuilds_total 3",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        // A second scrape adds no rebuilds it already counted.
        let again = m.render(Scraped {
            cache_bytes: 0,
            view_cache_bytes: 0,
            js_runtime_rebuilds: 3,
        });
        assert!(
            again.contains("lake_js_runtime_rebuilds_total 3"),
            "{again}"
        );
    }
}
