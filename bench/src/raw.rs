//! The baselines below Lake: what the disk and the S3 server do alone, at the
//! same concurrency and body size as the Lake phases they are compared with.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{self, Stats};

/// One file per write, as `file://` does it: temp file, write, fsync,
/// rename, directory fsync. `clients` threads for `secs` seconds.
pub fn file_loop(dir: &Path, clients: usize, secs: f64, body: &[u8]) -> Stats {
    std::fs::create_dir_all(dir).expect("bench dir");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (dir, body) = (dir.to_path_buf(), body.to_vec());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let tmp = dir.join(format!(".tmp-{c}-{i}"));
                    let res = (|| {
                        let mut f = std::fs::File::create(&tmp)?;
                        f.write_all(&body)?;
                        f.sync_all()?;
                        std::fs::rename(&tmp, dir.join(format!("{c}-{i}.json")))?;
                        std::fs::File::open(&dir)?.sync_all()
                    })();
                    if res.is_ok() {
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let lat: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    Stats::from_latencies(lat, 0, None, start.elapsed().as_secs_f64())
}

/// One writer appending `body` to a file with `fdatasync` after each write:
/// the disk's durable-write latency, which bounds a closed loop of `n`
/// clients at `n / latency` whatever the store does.
pub fn fdatasync_loop(dir: &Path, secs: f64, body: &[u8]) -> Stats {
    std::fs::create_dir_all(dir).expect("bench dir");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut lat = Vec::new();
    let path = dir.join("fdatasync.log");
    if let Ok(mut f) = std::fs::File::create(&path) {
        while Instant::now() < deadline {
            let t = Instant::now();
            if f.write_all(body).and_then(|()| f.sync_data()).is_err() {
                break;
            }
            lat.push(t.elapsed().as_micros() as u32);
        }
    }
    let _ = std::fs::remove_file(&path);
    Stats::from_latencies(lat, 0, None, start.elapsed().as_secs_f64())
}

/// Objects the GET loop reads, written by [`s3_seed`].
const SEEDS: u64 = 64;

fn seed_key(i: u64) -> String {
    format!("bench-raw/seed-{}.json", i % SEEDS)
}

/// Writes the objects the GET loop reads.
pub async fn s3_seed(client: &aws_sdk_s3::Client, bucket: &str, body: &[u8]) {
    for i in 0..SEEDS {
        client
            .put_object()
            .bucket(bucket)
            .key(seed_key(i))
            .body(body.to_vec().into())
            .send()
            .await
            .expect("seed the GET loop");
    }
}

/// PUTs, or GETs (of the seeded objects), with a plain aws-sdk-s3 client.
pub async fn s3_loop(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    clients: usize,
    secs: f64,
    body: &[u8],
    get: bool,
) -> Stats {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let body: Arc<[u8]> = body.into();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, bucket, body) = (client.clone(), bucket.to_string(), body.clone());
        tasks.spawn(async move {
            let (mut lat, mut errors, mut first) = (Vec::new(), 0u64, None);
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = if get {
                    seed_key(c as u64 + i)
                } else {
                    format!("bench-raw/{c}-{i}.json")
                };
                let t = Instant::now();
                let res = if get {
                    match client.get_object().bucket(&bucket).key(&key).send().await {
                        Ok(o) => o
                            .body
                            .collect()
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(&key)
                        .body(body.to_vec().into())
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                match res {
                    Ok(()) => lat.push(t.elapsed().as_micros() as u32),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
                i += 1;
            }
            (lat, errors, first)
        });
    }
    load::gather(tasks, start).await
}
