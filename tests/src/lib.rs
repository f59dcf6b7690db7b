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

pub use redis;

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

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

/// How to start a Lake.
#[derive(Clone, Debug)]
pub struct Options {
    pub timeout_ms: u64,
    pub snapshot_every: usize,
    /// Custom modes: (name, source).
    pub modes: Vec<(String, String)>,
    pub redis_args: Vec<String>,
    pub sidecar_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout_ms: 5000,
            snapshot_every: 64,
            modes: Vec::new(),
            redis_args: Vec::new(),
            sidecar_args: Vec::new(),
        }
    }
}

/// A running Redis + module + sidecar.
pub struct Lake {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub http_port: u16,
    pub opts: Options,
    redis: Option<Child>,
    sidecar: Option<Child>,
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
        if !opts.modes.is_empty() {
            std::fs::create_dir_all(dir.path().join("modes")).unwrap();
            for (name, src) in &opts.modes {
                std::fs::write(dir.path().join("modes").join(format!("{name}.js")), src).unwrap();
            }
        }
        let mut lake = Lake {
            dir,
            port: free_port(),
            http_port: free_port(),
            opts,
            redis: None,
            sidecar: None,
        };
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

    /// Starts the sidecar and waits until its socket accepts connections.
    pub fn start_sidecar(&mut self) {
        assert!(self.sidecar.is_none(), "sidecar already running");
        let mut cmd = Command::new(binary("lake-sidecar"));
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--store")
            .arg(format!("file://{}", self.store_dir().display()))
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(&self.opts.sidecar_args)
            .stdout(self.log("sidecar.log"))
            .stderr(self.log("sidecar.log"));
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
            .arg(binary("liblake.so"))
            .arg("socket")
            .arg(self.socket())
            .arg("timeout-ms")
            .arg(self.opts.timeout_ms.to_string())
            .arg("snapshot-every")
            .arg(self.opts.snapshot_every.to_string())
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

    /// SIGKILLs the sidecar and reaps it.
    pub fn kill_sidecar(&mut self) {
        if let Some(mut c) = self.sidecar.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// All object files in the store (relative keys), sorted.
    pub fn objects(&self) -> Vec<String> {
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

impl Drop for Lake {
    fn drop(&mut self) {
        self.kill_redis();
        self.kill_sidecar();
        if std::thread::panicking() {
            for name in ["redis.log", "sidecar.log"] {
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

/// `LAKE.WRITE`; returns `(uuid, stamp)` or the error text.
pub fn write(
    con: &mut redis::Connection,
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
