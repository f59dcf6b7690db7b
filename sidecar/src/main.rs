//! `lake-sidecar`: stores blobs, merges documents and builds snapshots for
//! the Lake Redis module, over a Unix socket. See `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lake_sidecar::{
    backup, batch, channel, check, gc, http, merge, metrics, restore, service, store,
};

/// mimalloc instead of the system allocator: a request allocates and frees
/// many small buffers across threads (frames, envelopes, parsed values),
/// where glibc's malloc took about a sixth of the sidecar's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lake sidecar: object store, QuickJS merge engine and snapshots for the
/// Lake Redis module.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Unix socket the module connects to (created with mode 0600).
    #[arg(long, env = "LAKE_SOCKET")]
    socket: PathBuf,
    /// Group of the socket (name or gid); with it the socket is mode 0660, else 0600.
    #[arg(long, env = "LAKE_SOCKET_GROUP")]
    socket_group: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// How writes are stored: segments (many writes per object, one PUT per
    /// batch; the default on s3://) or objects (one object per write; the
    /// default on file://). local:// is a segment log of its own and takes
    /// neither.
    #[arg(long, env = "LAKE_LAYOUT")]
    layout: Option<Layout>,
    /// Segment PUTs in flight at once (segments layout).
    #[arg(long, env = "LAKE_BATCH_INFLIGHT", default_value_t = 1)]
    batch_inflight: usize,
    /// How long a write may wait for others to share its segment, in
    /// microseconds (0: never waits; batches form while PUTs are running).
    #[arg(long, env = "LAKE_BATCH_WINDOW_US", default_value_t = 0)]
    batch_window_us: u64,
    /// Largest segment, in MiB of records.
    #[arg(long, env = "LAKE_BATCH_SEGMENT_MB", default_value_t = 8)]
    batch_segment_mb: usize,
    /// Writes whose stored body is above this many KiB get their own object.
    #[arg(long, env = "LAKE_BATCH_RECORD_KB", default_value_t = 1024)]
    batch_record_kb: usize,
    /// HTTP address for /healthz and /metrics, e.g. 127.0.0.1:9740. Off when unset.
    #[arg(long, env = "LAKE_HTTP")]
    http: Option<String>,
    /// Directory of custom merge modes: each <name>.js defines function merge(current, value).
    #[arg(long, env = "LAKE_MODES")]
    modes: Option<PathBuf>,
    /// Directory of computed views (LAKE.VIEW): each <name>.js defines function view(doc).
    #[arg(long, env = "LAKE_VIEWS")]
    views: Option<PathBuf>,
    /// Merge worker threads (QuickJS runtimes); default: one per core.
    #[arg(long, env = "LAKE_JS_THREADS")]
    js_threads: Option<usize>,
    /// Memory limit of each QuickJS runtime, in MiB.
    #[arg(long, env = "LAKE_JS_MEMORY_MB", default_value_t = 512)]
    js_memory_mb: usize,
    /// Deadline for applying one delta during a merge, in milliseconds.
    #[arg(long, env = "LAKE_MERGE_TIMEOUT_MS", default_value_t = 1000)]
    merge_timeout_ms: u64,
    /// Largest document (or value at a PATH) a read returns, in MiB.
    #[arg(long, env = "LAKE_MAX_DOC_MB", default_value_t = 512)]
    max_doc_mb: usize,
    /// Memory for merged documents kept between reads, in MiB (0: no cache).
    /// A read then merges only the deltas written since the cached state.
    #[arg(long, env = "LAKE_CACHE_MB", default_value_t = 256)]
    cache_mb: usize,
    /// Requests served at once; more are refused with LAKEBUSY.
    #[arg(long, env = "LAKE_MAX_INFLIGHT", default_value_t = 4096)]
    max_inflight: usize,
    /// How far back a restore may go, in seconds: GC keeps every object an
    /// index referenced less than this long ago (see docs/operations.md, Backup and
    /// restore).
    #[arg(long, env = "LAKE_BACKUP_RETENTION_SECS", default_value_t = gc::DEFAULT_BACKUP_RETENTION_SECS)]
    backup_retention_secs: u64,
    /// How often the shipped journal is folded into a checkpoint, in
    /// seconds (0: never), so a restore reads one checkpoint and the batches
    /// after it, and batches older than the backup retention can go.
    #[arg(long, env = "LAKE_CHECKPOINT_SECS", default_value_t = 600)]
    checkpoint_secs: u64,
    /// Batches younger than this (seconds) are left for the next
    /// checkpoint: one named earlier may still be on its way to the store.
    /// Keep it above `--s3-timeout-ms`.
    #[arg(long, env = "LAKE_CHECKPOINT_SETTLE_SECS", default_value_t = 60)]
    checkpoint_settle_secs: u64,
}

/// Where objects live and how to reach them (shared by serving and `check`).
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// Object store URL: local:///<dir> (segment log with group commit;
    /// what `make run` uses), file:///<dir> (one file per object) or s3://<bucket>/<prefix>.
    #[arg(long, env = "LAKE_STORE")]
    store: String,
    /// S3 flavour: aws (virtual-hosted, SDK endpoint), oss (Aliyun OSS:
    /// virtual-hosted, https://s3.oss-<region>.aliyuncs.com) or minio (path style).
    #[arg(long, env = "LAKE_S3_PROVIDER", default_value = "aws")]
    s3_provider: store::s3::Provider,
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 (overrides the provider's).
    #[arg(long, env = "LAKE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region (default: from the AWS config chain, else us-east-1).
    #[arg(long, env = "LAKE_S3_REGION")]
    s3_region: Option<String>,
    /// Use path-style addressing (http://host/bucket/key).
    #[arg(long, env = "LAKE_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// With --s3-provider oss: Aliyun's VPC endpoint,
    /// https://s3.oss-<region>-internal.aliyuncs.com (from ECS in the
    /// bucket's region: no traffic fee, lower latency).
    #[arg(long, env = "LAKE_S3_INTERNAL")]
    s3_internal: bool,
    /// The endpoint is the bucket: a custom domain (CNAME) bound to it.
    /// Requests go to <endpoint>/<prefix>/<key>, with no bucket in the host
    /// or the path. Any provider; needs --s3-endpoint.
    #[arg(long, env = "LAKE_S3_BUCKET_ENDPOINT")]
    s3_bucket_endpoint: bool,
    /// Server-side encryption of new objects: aes256 (the store's own keys)
    /// or kms (with --s3-sse-kms-key-id, else the store's default KMS key).
    #[arg(long, env = "LAKE_S3_SSE")]
    s3_sse: Option<SseArg>,
    /// KMS key id for --s3-sse kms.
    #[arg(long, env = "LAKE_S3_SSE_KMS_KEY_ID")]
    s3_sse_kms_key_id: Option<String>,
    /// Where S3 credentials come from: chain (AWS environment variables,
    /// STS tokens included, profile, instance role) or ecs-ram-role (an
    /// Alibaba Cloud ECS instance's RAM role, from its metadata service,
    /// refreshed before expiry).
    #[arg(long, env = "LAKE_S3_CREDENTIALS", default_value = "chain")]
    s3_credentials: CredArg,
    /// With ecs-ram-role: the role's name (default: the instance's role, as
    /// the metadata service names it).
    #[arg(long, env = "LAKE_ECS_RAM_ROLE")]
    ecs_ram_role: Option<String>,
    /// With ecs-ram-role: the metadata service.
    #[arg(long, env = "LAKE_ECS_METADATA_URL", default_value = store::ecs::DEFAULT_METADATA_URL)]
    ecs_metadata_url: String,
    /// Deadline of one S3 request including retries, in milliseconds.
    #[arg(long, env = "LAKE_S3_TIMEOUT_MS", default_value_t = 4000)]
    s3_timeout_ms: u64,
    /// S3 requests in flight at once.
    #[arg(long, env = "LAKE_S3_MAX_CONCURRENCY", default_value_t = 256)]
    s3_max_concurrency: usize,
    /// Bodies above this many MiB are uploaded in parts.
    #[arg(long, env = "LAKE_S3_MULTIPART_MB", default_value_t = 16)]
    s3_multipart_mb: usize,
}

impl StoreArgs {
    fn s3_options(&self) -> Result<store::S3Options, String> {
        let sse = match (self.s3_sse, &self.s3_sse_kms_key_id) {
            (None, None) => None,
            (None, Some(_)) | (Some(SseArg::Aes256), Some(_)) => {
                return Err("--s3-sse-kms-key-id needs --s3-sse kms".into())
            }
            (Some(SseArg::Aes256), None) => Some(store::s3::Sse::Aes256),
            (Some(SseArg::Kms), id) => Some(store::s3::Sse::Kms(id.clone())),
        };
        let credentials = match self.s3_credentials {
            CredArg::Chain => store::s3::CredentialSource::Chain,
            CredArg::EcsRamRole => store::s3::CredentialSource::EcsRamRole {
                url: self.ecs_metadata_url.clone(),
                role: self.ecs_ram_role.clone(),
            },
        };
        Ok(store::S3Options {
            provider: self.s3_provider,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            internal: self.s3_internal,
            bucket_endpoint: self.s3_bucket_endpoint,
            sse,
            credentials,
            timeout: Duration::from_millis(self.s3_timeout_ms),
            max_concurrency: self.s3_max_concurrency,
            multipart_threshold: self.s3_multipart_mb << 20,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SseArg {
    Aes256,
    Kms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CredArg {
    Chain,
    EcsRamRole,
}

/// `lake-sidecar check --store <url> [store flags]`: tries what Lake needs
/// of the store (put, get, ranged get, list, delete of a probe object) and
/// prints each step with a hint for what failed; exits 1 on a failure.
#[derive(Parser, Debug)]
#[command(name = "lake-sidecar check", version)]
struct CheckArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// `lake-sidecar restore --store <url> --redis <url> [--at <time>]
/// [--dry-run] [--force]`: rebuilds every catalog's index from the journal
/// shipped to the store (docs/operations.md, Backup and restore).
#[derive(Parser, Debug)]
#[command(name = "lake-sidecar restore", version)]
struct RestoreArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The Redis (or any node of the Redis Cluster) to restore into, e.g.
    /// redis://127.0.0.1:6379.
    #[arg(long)]
    redis: String,
    /// Restore the index as it was at this point: Unix time in milliseconds
    /// (13 digits) or a Lake stamp in microseconds (16 digits). Default: the
    /// newest shipped point.
    #[arg(long)]
    at: Option<u64>,
    /// Read the journal and check the store; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace the index of catalogs that already have one in the target.
    #[arg(long)]
    force: bool,
}

/// How writes are laid out in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    Segments,
    Objects,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("check") {
        let args = CheckArgs::parse_from(std::env::args().skip(1));
        std::process::exit(check(args));
    }
    if std::env::args().nth(1).as_deref() == Some("restore") {
        let args = RestoreArgs::parse_from(std::env::args().skip(1));
        if let Err(e) = restore(args) {
            eprintln!("lake-sidecar restore: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("lake-sidecar: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let user_modes = match &args.modes {
        Some(dir) => merge::load_modes(dir)?,
        None => Vec::new(),
    };
    let threads = args
        .js_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let limits = merge::Limits {
        memory_bytes: args.js_memory_mb << 20,
        per_delta: Duration::from_millis(args.merge_timeout_ms),
        ..merge::Limits::default()
    };
    let views = match &args.views {
        Some(dir) => merge::load_views(dir)?,
        None => Vec::new(),
    };
    let engine = merge::Engine::start_with_views(threads, limits, user_modes, views)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let s3opts = args.store.s3_options()?;
    let is_local = args.store.store.starts_with("local://");
    let layout = match (args.layout, is_local) {
        (Some(Layout::Segments), true) => return Err(
            "--layout segments: a local:// store is already a segment log; use it without --layout"
                .into(),
        ),
        (Some(l), _) => l,
        (None, _) if args.store.store.starts_with("s3://") => Layout::Segments,
        (None, _) => Layout::Objects,
    };
    let segments = (layout == Layout::Segments && !is_local).then(|| batch::Settings {
        inflight: args.batch_inflight.max(1),
        window: Duration::from_micros(args.batch_window_us),
        max_segment_bytes: args.batch_segment_mb.max(1) << 20,
        max_record_bytes: args.batch_record_kb << 10,
    });
    rt.block_on(async move {
        let store = store::open(&args.store.store, &s3opts)
            .await
            .map_err(|e| e.message)?;
        let service = service::Service::new(
            store,
            engine,
            args.max_doc_mb << 20,
            args.cache_mb << 20,
            segments,
        );
        service.gc.set_backup_retention(args.backup_retention_secs);
        if args.checkpoint_secs > 0 {
            tokio::spawn(checkpoints(
                service.clone(),
                Duration::from_secs(args.checkpoint_secs),
                args.checkpoint_settle_secs * 1000,
                args.backup_retention_secs.saturating_mul(1000),
            ));
        }
        if let Err(e) = service.store.health().await {
            eprintln!("lake-sidecar: warning: {}", e.message);
        }
        let listener = channel::bind(&args.socket, args.socket_group.as_deref())?;
        let _socket_file = channel::SocketFile(args.socket.clone());
        if let Some(addr) = &args.http {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on http {addr}: {e}"))?;
            let router = http::router(service.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(tcp, router).await {
                    eprintln!("lake-sidecar: http server stopped: {e}");
                }
            });
        }
        eprintln!(
            "lake-sidecar: serving {} ({} layout) on {} (modes: {}{}){}",
            service.store.describe(),
            service.layout(),
            args.socket.display(),
            service.engine.modes().join(", "),
            if service.engine.views().is_empty() {
                String::new()
            } else {
                format!("; views: {}", service.engine.views().join(", "))
            },
            args.http
                .as_deref()
                .map(|a| format!(", http on {a}"))
                .unwrap_or_default()
        );
        tokio::select! {
            _ = channel::serve(listener, service.clone(), args.max_inflight) => {}
            _ = shutdown_signal() => eprintln!("lake-sidecar: shutting down"),
        }
        Ok::<(), String>(())
    })
}

/// Runs `lake-sidecar check`; the process's exit code.
fn check(args: CheckArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lake-sidecar check: cannot start runtime: {e}");
            return 2;
        }
    };
    rt.block_on(async {
        let opts = match args.store.s3_options() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("lake-sidecar check: {e}");
                return 2;
            }
        };
        let store = match store::open(&args.store.store, &opts).await {
            Ok(s) => s,
            Err(e) => {
                println!("open    FAILED: {}", e.message);
                if let Some(h) = check::hint(&e.message) {
                    println!("        hint: {h}");
                }
                return 1;
            }
        };
        println!("checking {}", store.describe());
        let steps = check::run(store.as_ref()).await;
        let mut failed = false;
        for s in &steps {
            match &s.result {
                Ok(what) => println!("{:<7} ok: {what}", s.name),
                Err(why) => {
                    failed = true;
                    println!("{:<7} FAILED: {why}", s.name);
                    if let Some(h) = s.hint {
                        println!("        hint: {h}");
                    }
                }
            }
        }
        if failed {
            println!("the store is not ready for Lake");
            1
        } else {
            println!("the store is ready for Lake");
            0
        }
    })
}

/// Folds the journal into a checkpoint every `every`, for as long as the
/// sidecar runs; a failure is logged and tried again next time.
async fn checkpoints(
    service: std::sync::Arc<service::Service>,
    every: Duration,
    settle_ms: u64,
    retention_ms: u64,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match backup::checkpoint(&*service.store, backup::now_ms(), settle_ms, retention_ms).await {
            Ok(r) => {
                if r.written.is_some() {
                    metrics::Metrics::inc(&service.metrics.checkpoints_total);
                }
                service
                    .metrics
                    .journal_objects_deleted_total
                    .inc_by(r.deleted as u64);
            }
            Err(e) => eprintln!(
                "lake-sidecar: journal checkpoint failed (next try in {every:?}): {}",
                e.message
            ),
        }
    }
}

/// Runs `lake-sidecar restore`.
fn restore(args: RestoreArgs) -> Result<(), String> {
    let began = std::time::Instant::now();
    // A 16-digit number is a stamp (microseconds); journal points are ms.
    let at_ms = args
        .at
        .map(|t| if t >= 10_u64.pow(15) { t / 1000 } else { t });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let opts = args.store.s3_options()?;
    let store = rt
        .block_on(store::open(&args.store.store, &opts))
        .map_err(|e| e.message)?;
    let plan = rt
        .block_on(restore::plan(store.as_ref(), at_ms))
        .map_err(|e| e.message)?;
    let mut target = restore::Target::connect(&args.redis).map_err(|e| e.message)?;
    target
        .check_empty(&plan, args.force)
        .map_err(|e| e.message)?;
    let report = if args.dry_run {
        restore::Report {
            catalogs: plan.state.live().count(),
            deltas: plan.state.live().map(|(_, c)| c.deltas.len()).sum(),
            snapshots: plan.state.live().map(|(_, c)| c.snaps.len()).sum(),
            reshipped: 0,
        }
    } else {
        // Shipped before the index is written: should the writing fail, a
        // restore run again starts from this point, not the newest.
        let reshipped = restore::reship(&plan);
        if !reshipped.is_empty() {
            rt.block_on(backup::ship(store.as_ref(), reshipped.clone()))
                .map_err(|e| e.message)?;
        }
        target.write(&plan, &reshipped).map_err(|e| e.message)?
    };
    print!("{}", restore::describe(&plan, &report, args.dry_run, began));
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
