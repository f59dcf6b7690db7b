//! The sidecar's `/metrics` as an operator scrapes it: OpenMetrics text
//! from `prometheus-client`, histograms that a load run moves, and the
//! Grafana dashboard (`deploy/grafana/lake.json`) asking only for metrics
//! a live sidecar serves.

use std::collections::HashSet;

use lake_tests::{err_text, read, redis, write, Lake, Options, StoreKind};

/// One scrape: sample name with labels -> value.
struct Scrape {
    text: String,
}

impl Scrape {
    fn of(lake: &Lake) -> Scrape {
        let (status, text) = lake.http_get("/metrics");
        assert_eq!(status, 200, "{text}");
        Scrape { text }
    }

    /// The value of the sample written exactly `series` (name and labels).
    fn value(&self, series: &str) -> f64 {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Every sample name (without labels).
    fn samples(&self) -> HashSet<String> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect()
    }

    /// Every family a `# TYPE` line declares.
    fn families(&self) -> HashSet<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect()
    }
}

fn lake() -> Lake {
    // Segments on the S3 test server: every store and segment metric moves.
    Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    })
}

#[test]
fn a_load_run_moves_the_histograms() {
    let lake = lake();
    let mut c = lake.con();
    let before = Scrape::of(&lake);
    assert!(before.text.ends_with("# EOF\n"), "{}", before.text);
    for i in 0..20 {
        write(&mut c, "m", &format!("f{}", i % 4), &i.to_string()).expect("write");
    }
    read(&mut c, "m", &[]).expect("read");
    let _: Option<String> = redis::cmd("LAKE.READ")
        .arg("m")
        .arg("SNAP")
        .query(&mut c)
        .expect("SNAP");
    let e = write(&mut c, "m", "bad", "{not json").expect_err("bad JSON");
    assert!(e.starts_with("ERR"), "{e}");
    let e = redis::cmd("LAKE.CHANGES")
        .arg("m")
        .arg("SINCE")
        .arg(0)
        .arg("WITHVALUES")
        .query::<redis::Value>(&mut c)
        .map_err(err_text);
    assert!(e.is_ok(), "{e:?}");
    let after = Scrape::of(&lake);
    let moved = |series: &str| after.value(series) - before.value(series);
    // Exactly the 21 uploads (20 stored, one refused), timed.
    assert_eq!(moved("lake_request_seconds_count{request=\"write\"}"), 21.0);
    assert_eq!(moved("lake_errors_total{kind=\"invalid\"}"), 1.0);
    assert!(moved("lake_request_seconds_count{request=\"read\"}") >= 2.0);
    assert_eq!(moved("lake_request_seconds_count{request=\"values\"}"), 1.0);
    assert!(moved("lake_request_seconds_sum{request=\"write\"}") > 0.0);
    // The +Inf bucket holds every observation.
    assert_eq!(
        after.value("lake_request_seconds_bucket{le=\"+Inf\",request=\"write\"}"),
        after.value("lake_request_seconds_count{request=\"write\"}")
    );
    assert!(
        moved("lake_store_request_seconds_count{store=\"s3\",op=\"put\",outcome=\"ok\"}") >= 1.0
    );
    assert!(
        moved("lake_store_request_seconds_count{store=\"s3\",op=\"get_range\",outcome=\"ok\"}")
            >= 1.0
    );
    assert!(moved("lake_merge_seconds_count") >= 1.0);
    assert!(moved("lake_snapshot_build_seconds_count") >= 1.0);
    // 20 writes in segments; each segment's records observed once.
    assert_eq!(moved("lake_segment_records_sum"), 20.0);
    assert!(moved("lake_segment_fill_seconds_count") >= 1.0);
    assert!(after.value("lake_cache_bytes") > 0.0);
    assert_eq!(moved("lake_writes_total"), 20.0);
    lake.assert_no_crash();
}

/// Every metric a dashboard panel queries is one the sidecar serves (a
/// sample after some load, or at least a declared family; a labelled family
/// appears with its first series).
#[test]
fn the_dashboard_asks_only_for_served_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/lake.json"),
        )
        .expect("the dashboard file"),
    )
    .expect("the dashboard is JSON");
    let lake = lake();
    let mut c = lake.con();
    for i in 0..4 {
        write(&mut c, "d", &format!("f{i}"), "1").expect("write");
    }
    read(&mut c, "d", &[]).expect("read");
    // A family with no series yet is not in the exposition at all: one
    // refused write gives `lake_errors_total` its first.
    write(&mut c, "d", "bad", "{not json").expect_err("bad JSON");
    let scrape = Scrape::of(&lake);
    let (samples, families) = (scrape.samples(), scrape.families());
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                let family = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    samples.contains(&name) || families.contains(family),
                    "panel '{}' queries {name}, which the sidecar does not serve",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} metric uses found");
    // Histograms the dashboard reads percentiles from have buckets now.
    for h in [
        "lake_request_seconds_bucket",
        "lake_store_request_seconds_bucket",
    ] {
        assert!(samples.contains(h), "{h} has no samples after load");
    }
}

/// The `lake_...` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("lake_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}
