//! `lake-s3-test-server`: an S3-compatible server for the end-to-end suite,
//! built on `s3s` + `s3s-fs` (objects are plain files under `<root>/<bucket>`).
//!
//! Why not the stock `s3s-fs` binary: it leaves Nagle on and stalls about
//! 40 ms per GET; this one sets TCP_NODELAY on every accepted socket. It
//! prints `listening on <addr>` once ready, so a test can bind port 0 and read
//! the address back.

use std::path::PathBuf;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
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
    /// Root directory of stored data.
    root: PathBuf,
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
        builder.set_auth(SimpleAuth::from_single(ak, sk));
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
