//! `lake-s3-test-server`: an S3-compatible server for the end-to-end suite,
//! built on `s3s` + `s3s-fs` (objects are plain files under `<root>/<bucket>`).
//!
//! Why not the stock `s3s-fs` binary: it leaves Nagle on and stalls about
//! 40 ms per GET; this one sets TCP_NODELAY on every accepted socket. It
//! prints `listening on <addr>` once ready, so a test can bind port 0 and read
//! the address back.
//!
//! What the end-to-end suite needs to simulate a real provider honestly:
//! - `--bind-domain <host>=<bucket>`: a custom domain bound to a bucket, as
//!   OSS does for a CNAME: a request whose Host is that domain addresses
//!   the bucket, and its path is only the key. `--domain <base>` serves
//!   virtual-hosted requests `<bucket>.<base>`. Requests to an IP address
//!   are path style.
//! - `--read-only-access-key`/`--read-only-secret-key`: a second key that
//!   may read and list but gets `AccessDenied` for every write or delete.
//! - Create-only writes: a PUT or a multipart completion that sends
//!   `If-None-Match` (Lake sends `*`) for a key that already exists is
//!   refused `412 PreconditionFailed`, as S3 does (s3s-fs alone would
//!   overwrite). Each refusal is logged with `--log-puts` as
//!   `<key>\texists\t-`.
//! - `--log-puts <file>`: one line per object upload (PUT or multipart
//!   start) with its key and the server-side encryption it asked for:
//!   `<key>\t<sse or ->\t<kms key id or ->`.

use std::path::PathBuf;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::dto::{CompleteMultipartUploadInput, CreateMultipartUploadInput, PutObjectInput};
use s3s::host::{S3Host, VirtualHost};
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Request, S3Result};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Opt {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Access key; with --secret-key, requests must be signed with them.
    #[arg(long)]
    access_key: Option<String>,
    /// Secret key.
    #[arg(long)]
    secret_key: Option<String>,
    /// Buckets to create at start-up (folders under the root).
    #[arg(long)]
    bucket: Vec<String>,
    /// Base domain for virtual-hosted requests (`<bucket>.<base>`).
    #[arg(long)]
    domain: Option<String>,
    /// `<host>=<bucket>`: a custom domain bound to a bucket.
    #[arg(long)]
    bind_domain: Vec<String>,
    /// A key that may only read and list.
    #[arg(long)]
    read_only_access_key: Option<String>,
    /// Its secret.
    #[arg(long)]
    read_only_secret_key: Option<String>,
    /// Appends one line per upload: key, SSE mode, KMS key id.
    #[arg(long)]
    log_puts: Option<PathBuf>,
    /// Root directory of stored data.
    root: PathBuf,
}

/// Which bucket a Host header names.
struct Hosts {
    base: Option<String>,
    bound: Vec<(String, String)>,
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = host.split(':').next().unwrap_or(host);
        if let Some((_, bucket)) = self.bound.iter().find(|(h, _)| h == name) {
            return Ok(VirtualHost::new(name).with_bucket(bucket.as_str()));
        }
        if let Some(base) = &self.base {
            if let Some(bucket) = name
                .strip_suffix(base.as_str())
                .and_then(|h| h.strip_suffix('.'))
            {
                return Ok(VirtualHost::new(base.as_str()).with_bucket(bucket));
            }
        }
        Ok(VirtualHost::new(name))
    }
}

/// Signed requests only; a bucket must exist (s3s-fs would create its
/// folder on the first PUT; S3 answers `NoSuchBucket`); the read-only key
/// may not write; uploads logged.
struct Access {
    root: PathBuf,
    read_only: Option<String>,
    log: Option<std::sync::Mutex<PathBuf>>,
}

impl Access {
    /// `412 PreconditionFailed` for a conditional create of a key that
    /// exists (a plain file under `<root>/<bucket>/<key>`, as s3s-fs keeps
    /// objects).
    fn refuse_overwrite(&self, bucket: &str, key: &str, conditional: bool) -> S3Result<()> {
        if conditional && self.root.join(bucket).join(key).is_file() {
            self.log(key, Some("exists"), None);
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
        Ok(())
    }

    fn log(&self, key: &str, sse: Option<&str>, kms: Option<&str>) {
        let Some(path) = self.log.as_ref().and_then(|l| l.lock().ok()) else {
            return;
        };
        let line = format!("{key}\t{}\t{}\n", sse.unwrap_or("-"), kms.unwrap_or("-"));
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signed requests only"));
        };
        if let S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } = cx.s3_path() {
            if cx.s3_op().name() != "CreateBucket" && !self.root.join(&**bucket).is_dir() {
                return Err(s3_error!(
                    NoSuchBucket,
                    "The specified bucket does not exist"
                ));
            }
        }
        let writes = matches!(
            cx.s3_op().name(),
            "PutObject"
                | "DeleteObject"
                | "DeleteObjects"
                | "CopyObject"
                | "CreateMultipartUpload"
                | "UploadPart"
                | "CompleteMultipartUpload"
        );
        if writes && self.read_only.as_deref() == Some(creds.access_key.as_str()) {
            return Err(s3_error!(
                AccessDenied,
                "Access Denied: this key may only read"
            ));
        }
        Ok(())
    }

    async fn put_object(&self, req: &mut S3Request<PutObjectInput>) -> S3Result<()> {
        let i = &req.input;
        self.refuse_overwrite(&i.bucket, &i.key, i.if_none_match.is_some())?;
        self.log(
            &i.key,
            i.server_side_encryption.as_ref().map(|s| s.as_str()),
            i.ssekms_key_id.as_deref(),
        );
        Ok(())
    }

    async fn complete_multipart_upload(
        &self,
        req: &mut S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<()> {
        let i = &req.input;
        self.refuse_overwrite(&i.bucket, &i.key, i.if_none_match.is_some())
    }

    async fn create_multipart_upload(
        &self,
        req: &mut S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<()> {
        let i = &req.input;
        self.log(
            &i.key,
            i.server_side_encryption.as_ref().map(|s| s.as_str()),
            i.ssekms_key_id.as_deref(),
        );
        Ok(())
    }
}

fn main() {
    let opt = Opt::parse();
    if let Err(e) = run(opt) {
        eprintln!("lake-s3-test-server: {e}");
        std::process::exit(1);
    }
}

#[tokio::main]
async fn run(opt: Opt) -> Result<(), Box<dyn std::error::Error>> {
    for b in &opt.bucket {
        std::fs::create_dir_all(opt.root.join(b))?;
    }
    let fs = s3s_fs::FileSystem::new(&opt.root).map_err(|e| format!("{e:?}"))?;
    let mut builder = S3ServiceBuilder::new(fs);
    if let (Some(ak), Some(sk)) = (opt.access_key, opt.secret_key) {
        let mut auth = SimpleAuth::from_single(ak, sk);
        if let (Some(ak), Some(sk)) = (&opt.read_only_access_key, opt.read_only_secret_key) {
            auth.register(ak.clone(), sk.into());
        }
        builder.set_auth(auth);
        builder.set_access(Access {
            root: opt.root.clone(),
            read_only: opt.read_only_access_key,
            log: opt.log_puts.map(std::sync::Mutex::new),
        });
    }
    let mut bound = Vec::new();
    for b in &opt.bind_domain {
        let (host, bucket) = b
            .split_once('=')
            .ok_or_else(|| format!("--bind-domain '{b}': expected <host>=<bucket>"))?;
        bound.push((host.to_string(), bucket.to_string()));
    }
    if opt.domain.is_some() || !bound.is_empty() {
        builder.set_host(Hosts {
            base: opt.domain,
            bound,
        });
    }
    let service = builder.build();

    let listener = TcpListener::bind(&opt.addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
