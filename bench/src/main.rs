//! `lake-bench store`: PUT then GET throughput against one S3 endpoint, at a
//! given concurrency, for Lake's own S3 store (`lake_sidecar::store::s3`) and
//! for a plain aws-sdk-s3 loop with the same client settings, in one run.
//! Prints one markdown row per (client, operation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use lake_sidecar::store::s3::{self, Provider, S3Store, Settings};
use lake_sidecar::store::Store;

#[derive(Parser, Debug)]
struct Args {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 (path style).
    #[arg(long)]
    endpoint: String,
    #[arg(long, default_value = "lake")]
    bucket: String,
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
}

fn settings(a: &Args, prefix: &str) -> Settings {
    let mut s = Settings::from_url(&format!("s3://{}/{prefix}", a.bucket)).expect("url");
    s.provider = Provider::Minio;
    s.endpoint = Some(a.endpoint.clone());
    s.timeout = Duration::from_secs(30);
    s.max_concurrency = a.concurrency.max(1);
    s
}

async fn run<F, Fut>(n: usize, conc: usize, f: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(&f)
        .buffer_unordered(conc)
        .for_each(|_| async {})
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let body = vec![b'x'; a.size];

    let lake = Arc::new(
        S3Store::open(settings(&a, "bench-lake"))
            .await
            .expect("open store"),
    );
    let lake_put = run(a.requests, a.concurrency, |i| {
        let (lake, body) = (lake.clone(), body.clone());
        async move {
            lake.put(&format!("b/{i}.json"), body)
                .await
                .expect("lake put")
        }
    })
    .await;
    let lake_get = run(a.requests, a.concurrency, |i| {
        let lake = lake.clone();
        async move {
            lake.get(&format!("b/{i}.json")).await.expect("lake get");
        }
    })
    .await;

    let raw = s3::client(
        &s3::resolve(&settings(&a, "")).expect("resolve"),
        Duration::from_secs(30),
    )
    .await;
    let bucket = a.bucket.clone();
    let raw_put = run(a.requests, a.concurrency, |i| {
        let (raw, body, bucket) = (raw.clone(), body.clone(), bucket.clone());
        async move {
            raw.put_object()
                .bucket(bucket)
                .key(format!("bench-raw/b/{i}.json"))
                .body(body.into())
                .send()
                .await
                .expect("raw put");
        }
    })
    .await;
    let raw_get = run(a.requests, a.concurrency, |i| {
        let (raw, bucket) = (raw.clone(), bucket.clone());
        async move {
            let o = raw
                .get_object()
                .bucket(bucket)
                .key(format!("bench-raw/b/{i}.json"))
                .send()
                .await
                .expect("raw get");
            o.body.collect().await.expect("raw body");
        }
    })
    .await;

    println!(
        "| S3 client ({} B, {} in flight, {} requests) | PUT/s | GET/s |",
        a.size, a.concurrency, a.requests
    );
    println!("|---|---:|---:|");
    println!("| raw aws-sdk-s3 loop | {raw_put:.0} | {raw_get:.0} |");
    println!(
        "| Lake S3 store | {lake_put:.0} ({:.2} x raw) | {lake_get:.0} ({:.2} x raw) |",
        lake_put / raw_put,
        lake_get / raw_get
    );
}
