//! Test support for the end-to-end suite: starts a real `redis-server` with
//! `liblake.so` loaded and a real `lake-sidecar`, each on its own ports and
//! directory, and kills them when dropped (also when a test panics).
//!
//! Binaries come from the workspace's release build (`make test` builds them
//! first); `LAKE_TARGET_DIR` overrides where to look.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use lake_shared::segment::Locator;
pub use redis;

pub mod cluster;

/// Where the release binaries are.
pub fn target_dir() -> PathBuf {
    std::env::var_os("LAKE_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("release")
}

fn binary(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release` (or `make test`) first",
        p.display()
    );
    p
}

/// A free TCP port on loopback, never handed out twice in this process
/// (tests run in parallel threads), between 2000 and 11999: below the
/// kernel's ephemeral range, so no client connection's local port can take
/// it between this check and the server's bind (a port from `bind(0)`
/// could be, and was: "Address already in use" in CI), and below the
/// cluster tests' range ([`cluster::cluster_port`]).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Mutex;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let start = (std::process::id() % 100) as u16 * 100;
    for _ in 0..10_000 {
        let p = 2000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000;
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok() {
            taken.push(p);
            return p;
        }
    }
    panic!("no free port between 2000 and 11999 on loopback")
}

/// Polls `cond` until it holds or `within` passes; panics with `what` then.
pub fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `lake-s3-test-server` serving bucket [`BUCKET`] from `root` on `port`.
pub fn s3_test_server(root: &Path, port: u16) -> Command {
    let mut cmd = Command::new(binary("lake-s3-test-server"));
    cmd.arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
            "--bucket",
            BUCKET,
        ])
        .arg(root);
    cmd
}

/// `lake-sidecar` on `socket` and `store`; with `s3_port`, pointed at the
/// test S3 server there with its credentials.
pub fn sidecar(socket: &Path, store: &str, s3_port: Option<u16>) -> Command {
    match s3_port {
        Some(port) => sidecar_at(socket, store, &format!("http://127.0.0.1:{port}")),
        None => {
            let mut cmd = Command::new(binary("lake-sidecar"));
            cmd.arg("--socket").arg(socket).arg("--store").arg(store);
            backup_retention(&mut cmd);
            cmd
        }
    }
}

/// `lake-sidecar` on `socket` and `store`, pointed at the test S3 server
/// at `endpoint` (path style unless told otherwise) with its credentials.
pub fn sidecar_at(socket: &Path, store: &str, endpoint: &str) -> Command {
    let mut cmd = Command::new(binary("lake-sidecar"));
    cmd.args(["--s3-provider", "minio", "--s3-endpoint", endpoint])
        .args(["--s3-timeout-ms", "1500"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.arg("--socket").arg(socket).arg("--store").arg(store);
    backup_retention(&mut cmd);
    cmd
}

/// Tests not about backups want GC to delete what left the index at once:
/// no backup retention unless a test passes `--backup-retention-secs`
/// (a flag beats the environment).
fn backup_retention(cmd: &mut Command) {
    cmd.env("LAKE_BACKUP_RETENTION_SECS", "0");
}

/// Runs `lake-sidecar restore --store <store> --redis <redis_url> <extra>`,
/// against the test S3 server on `s3_port` when given; its output.
pub fn restore(
    store: &str,
    s3_port: Option<u16>,
    redis_url: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(binary("lake-sidecar"));
    cmd.arg("restore");
    if let Some(port) = s3_port {
        cmd.args(["--s3-provider", "minio", "--s3-endpoint"])
            .arg(format!("http://127.0.0.1:{port}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true");
    }
    cmd.arg("--store")
        .arg(store)
        .arg("--redis")
        .arg(redis_url)
        .args(extra)
        .output()
        .expect("run lake-sidecar restore")
}

/// A redis-server without the module (a restore target), on a port of its
/// own, in `dir`; killed on drop.
pub fn plain_redis(dir: &Path) -> (Reaped, String) {
    let port = free_port();
    std::fs::create_dir_all(dir).expect("redis dir");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(log_to(&dir.join("redis.log")))
        .stderr(log_to(&dir.join("redis.log")))
        .spawn()
        .expect("spawn redis-server");
    let child = Reaped(child);
    let url = format!("redis://127.0.0.1:{port}/");
    wait_for(
        "redis-server to answer PING",
        Duration::from_secs(20),
        || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        },
    );
    (child, url)
}

/// Waits until every journal stream on the Redis at `url` is empty.
pub fn wait_shipped(url: &str) {
    let mut c = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to redis");
    wait_for(
        "the journal to reach the store",
        Duration::from_secs(60),
        || {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("catalog:{*}:journal")
                .query(&mut c)
                .unwrap_or_default();
            // A key of that name that is no stream (a user's) never ships.
            keys.iter()
                .all(|k| match redis::cmd("XLEN").arg(k).query::<i64>(&mut c) {
                    Ok(n) => n == 0,
                    Err(e) => e.code() == Some("WRONGTYPE"),
                })
        },
    );
}

/// Which object store the sidecar uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `file://` in the test's directory.
    File,
    /// `local://` (segment log, group commit) in the test's directory.
    Local,
    /// `s3://` against `lake-s3-test-server` (s3s + s3s-fs) on loopback.
    S3,
    /// `s3://` against `moto_server` (PyPI) on loopback.
    Moto,
    /// `s3://` against `lake-s3-test-server` reached through a custom
    /// domain bound to the bucket (`localhost` -> bucket `lake`, as an OSS
    /// CNAME), the sidecar in `--s3-bucket-endpoint` mode: the request's
    /// host names the bucket and its path is only the key.
    S3Domain,
}

pub const BUCKET: &str = "lake";
pub const PREFIX: &str = "pre/fix";
pub const ACCESS_KEY: &str = "lake-test";
pub const SECRET_KEY: &str = "lake-test-secret";

/// Where `moto_server` is: `$LAKE_MOTO_SERVER`, else the venv `make test` makes.
pub fn moto_server() -> PathBuf {
    std::env::var_os("LAKE_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/moto_server")
        })
}

/// A child process killed and reaped when dropped, also when a test panics
/// (a child left running keeps the test runner's output pipe open).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lake-s3-test-server` on a port of its own choosing (no race with
/// other tests for a "free" port) with `extra` arguments; returns it and
/// its port once it listens.
pub fn spawn_s3_test_server(root: &Path, extra: &[&str]) -> (Reaped, u16) {
    use std::io::BufRead;
    let mut cmd = s3_test_server(root, 0);
    let mut child = cmd
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lake-s3-test-server");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let child = Reaped(child);
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the S3 test server did not say where it listens: {line:?}"));
    (child, port)
}

/// A running S3-compatible server.
struct S3Server {
    child: Child,
    port: u16,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start a Lake.
#[derive(Clone, Debug)]
pub struct Options {
    pub store: StoreKind,
    pub timeout_ms: u64,
    pub snapshot_every: usize,
    /// Custom modes: (name, source).
    pub modes: Vec<(String, String)>,
    /// Computed views (`--views`): (name, source).
    pub views: Vec<(String, String)>,
    pub redis_args: Vec<String>,
    /// Extra module arguments (key value ...).
    pub module_args: Vec<String>,
    pub sidecar_args: Vec<String>,
    /// Extra arguments of `lake-s3-test-server`.
    pub s3_server_args: Vec<String>,
    /// The module to load (default: `LAKE_TEST_MODULE` if set, for A/B runs
    /// against another build, else the release `liblake.so`).
    pub module: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            store: StoreKind::File,
            timeout_ms: 5000,
            snapshot_every: 64,
            modes: Vec::new(),
            views: Vec::new(),
            redis_args: Vec::new(),
            module_args: Vec::new(),
            sidecar_args: Vec::new(),
            s3_server_args: Vec::new(),
            module: None,
        }
    }
}

/// A replica of a [`Lake`] (module loaded, same sidecar); killed on drop.
pub struct Replica {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends to the file at `path`.
pub(crate) fn log_to(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// A running Redis + module + sidecar.
pub struct Lake {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub http_port: u16,
    pub opts: Options,
    redis: Option<Child>,
    sidecar: Option<Child>,
    s3: Option<S3Server>,
    s3_port: u16,
    rt: tokio::runtime::Runtime,
    s3_client: Option<aws_sdk_s3::Client>,
}

impl Lake {
    pub fn start() -> Lake {
        Lake::with(Options::default())
    }

    pub fn with(opts: Options) -> Lake {
        let dir = tempfile::Builder::new()
            .prefix("lake-e2e-")
            .tempdir()
            .expect("tempdir");
        for (sub, files) in [("views", &opts.views), ("modes", &opts.modes)] {
            if !files.is_empty() {
                std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            }
            for (name, src) in files {
                std::fs::write(dir.path().join(sub).join(format!("{name}.js")), src).unwrap();
            }
        }
        let mut lake = Lake {
            dir,
            port: free_port(),
            http_port: free_port(),
            opts,
            redis: None,
            sidecar: None,
            s3: None,
            s3_port: free_port(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            s3_client: None,
        };
        if !matches!(lake.opts.store, StoreKind::File | StoreKind::Local) {
            lake.start_store();
            let client = s3_client(lake.s3_port);
            if lake.opts.store == StoreKind::Moto {
                lake.rt
                    .block_on(client.create_bucket().bucket(BUCKET).send())
                    .expect("create bucket on moto");
            }
            lake.s3_client = Some(client);
        }
        lake.start_sidecar();
        lake.start_redis();
        lake
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("lake.sock")
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .expect("log file")
    }

    /// Starts the S3 server (again, on the same port and data after a stop).
    pub fn start_store(&mut self) {
        assert!(self.s3.is_none(), "store already running");
        let port = self.s3_port;
        let child = match self.opts.store {
            StoreKind::File | StoreKind::Local => return,
            StoreKind::S3 | StoreKind::S3Domain => {
                s3_test_server(&self.dir.path().join("s3root"), port)
                    .args(&self.opts.s3_server_args)
                    .args(
                        (self.opts.store == StoreKind::S3Domain)
                            .then_some(["--bind-domain", "localhost=lake"])
                            .into_iter()
                            .flatten(),
                    )
                    .stdout(self.log("s3.log"))
                    .stderr(self.log("s3.log"))
                    .spawn()
                    .expect("spawn lake-s3-test-server")
            }
            StoreKind::Moto => {
                let bin = moto_server();
                assert!(
                    bin.exists(),
                    "{} is missing: `make test` installs moto[server]",
                    bin.display()
                );
                Command::new(bin)
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(self.log("s3.log"))
                    .stderr(self.log("s3.log"))
                    .spawn()
                    .expect("spawn moto_server")
            }
        };
        self.s3 = Some(S3Server { child, port });
        wait_for("the S3 server to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Runs `lake-sidecar restore` against this Lake's store into
    /// `redis_url` with `extra` arguments; its output.
    pub fn restore(&self, redis_url: &str, extra: &[&str]) -> std::process::Output {
        restore(
            &self.store_url(),
            self.s3.as_ref().map(|s| s.port),
            redis_url,
            extra,
        )
    }

    /// Waits until every journal stream of this Redis is empty: each index
    /// change so far is in the store.
    pub fn wait_shipped(&self) {
        wait_shipped(&self.url());
    }

    /// Kills the S3 server (its data stays for `start_store`).
    pub fn stop_store(&mut self) {
        self.s3 = None;
    }

    fn store_url(&self) -> String {
        match self.opts.store {
            StoreKind::File => format!("file://{}", self.store_dir().display()),
            StoreKind::Local => format!("local://{}", self.store_dir().display()),
            _ => format!("s3://{BUCKET}/{PREFIX}"),
        }
    }

    /// Starts the sidecar and waits until its socket accepts connections.
    pub fn start_sidecar(&mut self) {
        assert!(self.sidecar.is_none(), "sidecar already running");
        let mut cmd = match (&self.s3, self.opts.store) {
            (Some(s3), StoreKind::S3Domain) => {
                let mut c = sidecar_at(
                    &self.socket(),
                    &self.store_url(),
                    &format!("http://localhost:{}", s3.port),
                );
                c.arg("--s3-bucket-endpoint");
                c
            }
            (s3, _) => sidecar(
                &self.socket(),
                &self.store_url(),
                s3.as_ref().map(|s| s.port),
            ),
        };
        cmd.arg("--http")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(&self.opts.sidecar_args)
            .stdout(self.log("sidecar.log"))
            .stderr(self.log("sidecar.log"));
        if !self.opts.views.is_empty() {
            cmd.arg("--views").arg(self.dir.path().join("views"));
        }
        if !self.opts.modes.is_empty() {
            cmd.arg("--modes").arg(self.dir.path().join("modes"));
        }
        self.sidecar = Some(cmd.spawn().expect("spawn lake-sidecar"));
        let sock = self.socket();
        wait_for("the sidecar socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    fn start_redis(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .args(&self.opts.redis_args)
            .arg("--loadmodule")
            .arg(
                self.opts
                    .module
                    .clone()
                    .or_else(|| std::env::var_os("LAKE_TEST_MODULE").map(PathBuf::from))
                    .unwrap_or_else(|| binary("liblake.so")),
            )
            .arg("socket")
            .arg(self.socket())
            .arg("timeout-ms")
            .arg(self.opts.timeout_ms.to_string())
            .arg("snapshot-every")
            .arg(self.opts.snapshot_every.to_string())
            .args(&self.opts.module_args)
            .stdout(self.log("redis.log"))
            .stderr(self.log("redis.log"))
            .spawn()
            .expect("spawn redis-server (is it installed? `make test` installs it)");
        self.redis = Some(child);
        let url = self.url();
        wait_for(
            "redis-server to answer PING",
            Duration::from_secs(20),
            || {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        );
    }

    /// Kills redis-server and starts it again on the same port and directory.
    pub fn restart_redis(&mut self) {
        self.kill_redis();
        self.start_redis();
    }

    pub fn kill_redis(&mut self) {
        if let Some(mut c) = self.redis.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn con(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).expect("client");
        let con = c.get_connection().expect("connect to redis");
        con.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        con
    }

    /// What redis-server has logged so far.
    pub fn redis_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Panics if Redis's log holds a crash report (an assertion, a panic
    /// that aborted it, a signal).
    pub fn assert_no_crash(&self) {
        assert_no_crash(&self.redis_log(), "redis-server");
    }

    pub fn redis_pid(&self) -> u32 {
        self.redis.as_ref().expect("redis running").id()
    }

    /// The runtime the test's own S3 calls run on.
    pub fn rt(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// The S3 server's port (`s3://` stores only).
    pub fn s3_port(&self) -> u16 {
        self.s3_port
    }

    pub fn sidecar_pid(&self) -> u32 {
        self.sidecar.as_ref().expect("sidecar running").id()
    }

    /// Sends a signal (e.g. "STOP", "CONT") to the sidecar.
    pub fn signal_sidecar(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.sidecar_pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// The S3 server's process id (`s3://` stores only).
    pub fn s3_pid(&self) -> u32 {
        self.s3.as_ref().expect("S3 server running").child.id()
    }

    /// Sends a signal (e.g. "STOP", "CONT") to the S3 server.
    pub fn signal_store(&self, sig: &str) {
        let pid = self.s3_pid();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGKILLs the sidecar and reaps it.
    pub fn kill_sidecar(&mut self) {
        if let Some(mut c) = self.sidecar.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// All object keys in the store (below the store root), sorted, but the
    /// index journal's batches ([`Lake::journal_batches`]).
    pub fn objects(&self) -> Vec<String> {
        self.all_objects()
            .into_iter()
            .filter(|k| !lake_shared::journal::is_batch(k))
            .collect()
    }

    /// The index journal's batches in the store, sorted.
    pub fn journal_batches(&self) -> Vec<String> {
        self.all_objects()
            .into_iter()
            .filter(|k| lake_shared::journal::is_batch(k))
            .collect()
    }

    fn all_objects(&self) -> Vec<String> {
        if let Some(client) = &self.s3_client {
            return s3_list(&self.rt, client);
        }
        if self.opts.store == StoreKind::Local {
            return self.local_objects().into_iter().map(|(k, _)| k).collect();
        }
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else if let Ok(rel) = p.strip_prefix(root) {
                    let rel = rel.to_string_lossy().into_owned();
                    if !rel.contains("/.") && !rel.starts_with('.') {
                        out.push(rel);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.store_dir(), &self.store_dir(), &mut out);
        out.sort();
        out
    }

    fn local_objects(&self) -> Vec<(String, Vec<u8>)> {
        if !self.store_dir().exists() {
            return Vec::new();
        }
        lake_sidecar::store::local::read_all(&self.store_dir())
            .unwrap_or_else(|e| panic!("read the local store: {}", e.message))
    }

    /// The bytes of one object, read straight from the store.
    pub fn object(&self, key: &str) -> Vec<u8> {
        match &self.s3_client {
            Some(client) => self
                .rt
                .block_on(async {
                    let o = client
                        .get_object()
                        .bucket(BUCKET)
                        .key(format!("{PREFIX}/{key}"))
                        .send()
                        .await?;
                    Ok::<_, Box<dyn std::error::Error>>(
                        o.body.collect().await?.into_bytes().to_vec(),
                    )
                })
                .unwrap_or_else(|e| panic!("get {key}: {e}")),
            None if self.opts.store == StoreKind::Local => self
                .local_objects()
                .into_iter()
                .find_map(|(k, b)| (k == key).then_some(b))
                .unwrap_or_else(|| panic!("object {key} is not in the local store")),
            None => std::fs::read(self.store_dir().join(key))
                .unwrap_or_else(|e| panic!("read {key}: {e}")),
        }
    }

    /// The stored bytes of one delta, read from the store itself: its own
    /// object, or its record cut out of the segment its uuid names.
    pub fn delta_bytes(&self, cat: &str, uuid: &str) -> Vec<u8> {
        let body = self.object(&delta_key(cat, uuid));
        match Locator::from_uuid(uuid) {
            Ok(Some(loc)) => body
                .get(loc.offset as usize..loc.end() as usize)
                .unwrap_or_else(|| {
                    panic!(
                        "segment {} has {} bytes; record {uuid} ends at {}",
                        loc.key(),
                        body.len(),
                        loc.end()
                    )
                })
                .to_vec(),
            _ => body,
        }
    }

    /// Asserts that every index entry of `cat` (members `<field>:<uuid>`)
    /// has its body in the store, read from the store itself: an envelope of
    /// that catalog and field. Each object is read once.
    pub fn assert_indexed_bodies_stored(&self, cat: &str, members: &[String]) {
        let mut objects: std::collections::HashMap<String, Vec<u8>> = Default::default();
        for m in members {
            let (field, uuid) = m.rsplit_once(':').expect("member shape");
            let key = delta_key(cat, uuid);
            let body = objects
                .entry(key.clone())
                .or_insert_with(|| self.object(&key));
            let record = match Locator::from_uuid(uuid) {
                Ok(Some(loc)) => body.get(loc.offset as usize..loc.end() as usize),
                _ => Some(&body[..]),
            };
            let record = record.unwrap_or_else(|| panic!("index entry {m}: {key} is too short"));
            let env: serde_json::Value = serde_json::from_slice(record)
                .unwrap_or_else(|e| panic!("index entry {m}: body in {key} is not JSON: {e}"));
            assert_eq!(
                (env["catalog"].as_str(), env["field"].as_str()),
                (Some(cat), Some(field)),
                "index entry {m}: the body in {key} is another delta's"
            );
        }
    }

    /// Replaces one object's bytes behind Lake's back (not on `local://`,
    /// whose log only the sidecar writes).
    pub fn put_object(&self, key: &str, body: &[u8]) {
        assert!(
            self.opts.store != StoreKind::Local,
            "put_object on local://"
        );
        match &self.s3_client {
            Some(client) => {
                self.rt
                    .block_on(
                        client
                            .put_object()
                            .bucket(BUCKET)
                            .key(format!("{PREFIX}/{key}"))
                            .body(body.to_vec().into())
                            .send(),
                    )
                    .expect("put object");
            }
            None => {
                let path = self.store_dir().join(key);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("create folders");
                }
                std::fs::write(path, body).expect("write object")
            }
        }
    }

    /// Deletes one object behind Lake's back (not on `local://`).
    pub fn delete_object(&self, key: &str) {
        assert!(
            self.opts.store != StoreKind::Local,
            "delete_object on local://"
        );
        match &self.s3_client {
            Some(client) => {
                self.rt
                    .block_on(
                        client
                            .delete_object()
                            .bucket(BUCKET)
                            .key(format!("{PREFIX}/{key}"))
                            .send(),
                    )
                    .expect("delete object");
            }
            None => std::fs::remove_file(self.store_dir().join(key)).expect("remove object"),
        }
    }

    /// A counter from the sidecar's `/metrics` (`lake_<name>`), 0 if absent.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("lake_{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// GETs a path from the sidecar's HTTP server; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.http_port)).expect("connect http");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

/// Starts a replica of `lake` with the module loaded (same sidecar) and
/// returns it with a connection once it is in sync.
impl Lake {
    pub fn start_replica(&self) -> (Replica, redis::Connection) {
        let lake = self;
        let port = free_port();
        let dir = lake.dir.path().join("replica");
        std::fs::create_dir_all(&dir).unwrap();
        let so = target_dir().join("liblake.so");
        let replica = Replica {
            port,
            dir: dir.clone(),
            child: Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(&dir)
                .args([
                    "--replicaof",
                    "127.0.0.1",
                    &lake.port.to_string(),
                    "--repl-diskless-sync-delay",
                    "0",
                ])
                .arg("--loadmodule")
                .arg(&so)
                .arg("socket")
                .arg(lake.socket())
                .arg("timeout-ms")
                .arg(lake.opts.timeout_ms.to_string())
                .stdout(log_to(&dir.join("redis.log")))
                .stderr(log_to(&dir.join("redis.log")))
                .spawn()
                .expect("spawn replica"),
        };
        let url = format!("redis://127.0.0.1:{port}/");
        let mut r = None;
        wait_for("the replica to sync", Duration::from_secs(20), || {
            let Ok(mut con) = redis::Client::open(url.as_str()).and_then(|cl| cl.get_connection())
            else {
                return false;
            };
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .unwrap_or_default();
            let up = info.contains("master_link_status:up");
            if up {
                r = Some(con);
            }
            up
        });
        (replica, r.unwrap())
    }
}

impl Drop for Lake {
    fn drop(&mut self) {
        self.kill_redis();
        self.kill_sidecar();
        self.stop_store();
        if std::thread::panicking() {
            for name in ["redis.log", "sidecar.log", "s3.log"] {
                if let Ok(log) = std::fs::read_to_string(self.dir.path().join(name)) {
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    eprintln!("--- last lines of {name} ---");
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// `LAKE.WRITE`; returns `(uuid, stamp)` or the error text. Any connection
/// (a cluster connection routes by the catalog).
pub fn write(
    con: &mut impl redis::ConnectionLike,
    cat: &str,
    field: &str,
    json: &str,
) -> Result<(String, i64), String> {
    redis::cmd("LAKE.WRITE")
        .arg(cat)
        .arg(field)
        .arg(json)
        .query::<(String, i64)>(con)
        .map_err(err_text)
}

/// `LAKE.GC <args...>` -> `[scanned, referenced, young, orphans, deleted]`.
pub fn gc(con: &mut impl redis::ConnectionLike, args: &[&str]) -> Vec<i64> {
    redis::cmd("LAKE.GC")
        .arg(args)
        .query(con)
        .unwrap_or_else(|e| panic!("LAKE.GC {args:?}: {}", err_text(e)))
}

/// `LAKE.WRITE ... MODE m`.
pub fn write_mode(
    con: &mut redis::Connection,
    cat: &str,
    field: &str,
    json: &str,
    mode: &str,
) -> Result<(String, i64), String> {
    redis::cmd("LAKE.WRITE")
        .arg(cat)
        .arg(field)
        .arg(json)
        .arg("MODE")
        .arg(mode)
        .query::<(String, i64)>(con)
        .map_err(err_text)
}

/// `LAKE.READ <cat> [args...]`, parsed as JSON; `None` for nil.
pub fn read(
    con: &mut redis::Connection,
    cat: &str,
    args: &[&str],
) -> Result<Option<serde_json::Value>, String> {
    let text: Option<String> = redis::cmd("LAKE.READ")
        .arg(cat)
        .arg(args)
        .query(con)
        .map_err(err_text)?;
    Ok(text.map(|t| {
        serde_json::from_str(&t)
            .unwrap_or_else(|e| panic!("LAKE.READ returned invalid JSON {t}: {e}"))
    }))
}

/// Panics if `log` (a redis-server log) holds a crash report.
pub fn assert_no_crash(log: &str, who: &str) {
    for mark in [
        "ASSERTION FAILED",
        "BUG REPORT",
        "crashed by signal",
        "cannot unwind",
    ] {
        assert!(!log.contains(mark), "{who} crashed ({mark}):\n{log}");
    }
}

/// The fault-injection build of the module (`make test` builds it with
/// `--features fault-injection` into `target/faults`).
pub fn fault_module() -> PathBuf {
    let p = target_dir()
        .join("../faults/release/liblake.so")
        .canonicalize()
        .unwrap_or_default();
    assert!(
        p.exists(),
        "the fault-injection module is missing: run `make test` (or `cargo build --release -p lake-module --features fault-injection --target-dir target/faults`)"
    );
    p
}

/// The full error text as Redis sent it (code + message).
pub fn err_text(e: redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// Members and scores of a sorted set.
pub fn zrange(con: &mut redis::Connection, key: &str) -> Vec<(String, i64)> {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(con)
        .expect("ZRANGE")
}

/// Every object key below [`PREFIX`] in the test bucket, sorted.
pub fn s3_list(rt: &tokio::runtime::Runtime, client: &aws_sdk_s3::Client) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = rt
            .block_on(
                client
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix(format!("{PREFIX}/"))
                    .set_continuation_token(token.take())
                    .send(),
            )
            .expect("list objects");
        for o in page.contents() {
            if let Some(k) = o.key().and_then(|k| k.strip_prefix(&format!("{PREFIX}/"))) {
                out.push(k.to_string());
            }
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    out.sort();
    out
}

/// The object holding a delta: its own `<catalog>/<uuid>.json`, or the
/// segment a version-8 uuid names.
pub fn delta_key(cat: &str, uuid: &str) -> String {
    match Locator::from_uuid(uuid) {
        Ok(Some(loc)) => loc.key(),
        _ => lake_shared::catalog::delta_object(cat, uuid),
    }
}

/// A plain aws-sdk-s3 client for the test S3 server on `port`.
pub fn s3_client(port: u16) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{
        Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    };
    let cfg = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "lake-tests",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(cfg)
}
