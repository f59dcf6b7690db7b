//! The merge engine: folds a snapshot and the deltas after it into one
//! document, in QuickJS (rquickjs), on a pool of dedicated threads.
//!
//! Why threads: rquickjs `Runtime`/`Context` are not `Send`, so each worker
//! thread owns its runtime and takes jobs over a channel; callers await a
//! oneshot reply and never block the async runtime.
//!
//! Invariants:
//! - Values go in and out as JSON text; user data never becomes source code.
//! - Each runtime has a memory limit and a stack limit; each delta has a
//!   deadline (the interrupt handler checks it), restarted by the driver's
//!   `tick` before every delta, so the failing delta is always known.
//! - A runtime whose fold failed (exception, deadline, out of memory) is
//!   dropped and rebuilt before the next job: no state survives a failure.
//! - User modes are compiled once per runtime from `<dir>/<name>.js`, each
//!   defining `function merge(current, value)`.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, Context, Function, Object, Runtime};

/// The bundled driver (built-in modes, path walking, RFC 7396).
const DRIVER: &str = include_str!("js/lake.js");

/// Limits of one runtime.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    pub stack_bytes: usize,
    pub per_delta: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 512 << 20,
            stack_bytes: 4 << 20,
            per_delta: Duration::from_millis(1000),
        }
    }
}

/// A user mode: its name and JS source.
#[derive(Debug, Clone)]
pub struct UserMode {
    pub name: String,
    pub source: String,
}

/// Why a fold failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldError {
    /// Index of the delta being applied, if the failure happened inside one.
    pub delta: Option<usize>,
    pub message: String,
}

/// A fold's result: the whole document (when asked for) and the value at the
/// read's path (`None` when no path was given or the path is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldOut {
    pub doc: Option<String>,
    pub at_path: Option<String>,
}

type Reply = tokio::sync::oneshot::Sender<Result<FoldOut, FoldError>>;

struct Job {
    input: String,
    reply: Reply,
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: crossbeam_channel::Sender<Job>,
    modes: Arc<Vec<String>>,
    rebuilds: Arc<AtomicU64>,
}

impl Engine {
    /// Starts `threads` workers. Fails if the driver or a user mode does not
    /// compile, so a broken mode file stops the sidecar at start-up.
    pub fn start(threads: usize, limits: Limits, user: Vec<UserMode>) -> Result<Engine, String> {
        // Compile once here to report errors before serving anything.
        Worker::new(&limits, &user)?;
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let rebuilds = Arc::new(AtomicU64::new(0));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let limits = limits.clone();
            let user = user.clone();
            let rebuilds = rebuilds.clone();
            std::thread::Builder::new()
                .name(format!("lake-js-{i}"))
                .stack_size(limits.stack_bytes * 4)
                .spawn(move || worker_loop(rx, limits, user, rebuilds))
                .map_err(|e| format!("cannot start merge thread: {e}"))?;
        }
        let mut names: Vec<String> = lake_shared::mode::BUILTINS
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.extend(user.iter().map(|m| m.name.clone()));
        Ok(Engine {
            tx,
            modes: Arc::new(names),
            rebuilds,
        })
    }

    /// Whether a mode (built-in or loaded) exists.
    pub fn has_mode(&self, name: &str) -> bool {
        self.modes.iter().any(|m| m == name)
    }

    /// Names of all modes.
    pub fn modes(&self) -> &[String] {
        &self.modes
    }

    /// How many runtimes were rebuilt after a failure.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// Runs one fold. `input` is the driver's job text (see [`fold_input`]).
    pub async fn fold(&self, input: String) -> Result<FoldOut, FoldError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let gone = || FoldError {
            delta: None,
            message: "merge engine stopped".into(),
        };
        self.tx.send(Job { input, reply }).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// One delta as the driver takes it.
pub struct FoldDelta<'a> {
    pub path: &'a [String],
    pub mode: &'a str,
    pub value: &'a str,
}

/// Builds the driver's job text from raw JSON pieces without re-parsing them.
pub fn fold_input(
    base: Option<&str>,
    deltas: &[FoldDelta<'_>],
    path: Option<&[String]>,
    want_doc: bool,
) -> String {
    let cap =
        base.map_or(0, str::len) + deltas.iter().map(|d| d.value.len() + 64).sum::<usize>() + 64;
    let mut s = String::with_capacity(cap);
    s.push_str("{\"base\":[");
    if let Some(b) = base {
        s.push_str(b);
    }
    s.push_str("],\"deltas\":[");
    for (i, d) in deltas.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"p\":");
        s.push_str(&json_strings(d.path));
        s.push_str(",\"m\":");
        s.push_str(&serde_json::Value::from(d.mode).to_string());
        s.push_str(",\"v\":");
        s.push_str(d.value);
        s.push('}');
    }
    s.push_str("],\"path\":");
    match path {
        Some(p) => s.push_str(&json_strings(p)),
        None => s.push_str("null"),
    }
    s.push_str(if want_doc {
        ",\"doc\":true}"
    } else {
        ",\"doc\":false}"
    });
    s
}

fn json_strings(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Shared between the interrupt handler and `tick`: the deadline in
/// nanoseconds since `origin` (0 = none) and the delta being applied.
struct Watch {
    origin: Instant,
    deadline_ns: AtomicU64,
    delta: AtomicI64,
}

struct Worker {
    // Field order matters: the context must drop before the runtime.
    ctx: Context,
    _rt: Runtime,
    watch: Arc<Watch>,
    per_delta: Duration,
}

impl Worker {
    fn new(limits: &Limits, user: &[UserMode]) -> Result<Worker, String> {
        let rt = Runtime::new().map_err(|e| format!("cannot create JS runtime: {e}"))?;
        rt.set_memory_limit(limits.memory_bytes);
        rt.set_max_stack_size(limits.stack_bytes);
        let watch = Arc::new(Watch {
            origin: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            delta: AtomicI64::new(-1),
        });
        let w = watch.clone();
        rt.set_interrupt_handler(Some(Box::new(move || {
            let d = w.deadline_ns.load(Ordering::Relaxed);
            d != 0 && w.origin.elapsed().as_nanos() as u64 > d
        })));
        let ctx = Context::full(&rt).map_err(|e| format!("cannot create JS context: {e}"))?;
        let per_delta = limits.per_delta;
        ctx.with(|ctx| -> Result<(), String> {
            let factory: Function = ctx
                .eval(DRIVER)
                .catch(&ctx)
                .map_err(|e| format!("merge driver does not compile: {e}"))?;
            let w = watch.clone();
            let tick = Function::new(ctx.clone(), move |i: i64| {
                w.delta.store(i, Ordering::Relaxed);
                let d = if i < 0 {
                    0
                } else {
                    (w.origin.elapsed() + per_delta).as_nanos() as u64
                };
                w.deadline_ns.store(d, Ordering::Relaxed);
            })
            .map_err(|e| format!("cannot create tick: {e}"))?;
            let driver: Object = factory.call((tick,)).catch(&ctx).map_err(|e| format!("merge driver failed: {e}"))?;
            let add: Function = driver.get("addMode").map_err(|e| e.to_string())?;
            for m in user {
                let wrapped = format!(
                    "(function () {{\n{}\n;return typeof merge === \"function\" ? merge : undefined;\n}})()",
                    m.source
                );
                let f: rquickjs::Value = ctx
                    .eval(wrapped)
                    .catch(&ctx)
                    .map_err(|e| format!("mode '{}' does not compile: {e}", m.name))?;
                add.call::<_, ()>((m.name.as_str(), f))
                    .catch(&ctx)
                    .map_err(|e| format!("mode '{}': {e}", m.name))?;
            }
            ctx.globals().set("__lake", driver).map_err(|e| e.to_string())?;
            Ok(())
        })?;
        Ok(Worker {
            ctx,
            _rt: rt,
            watch,
            per_delta,
        })
    }

    fn fold(&self, input: &str) -> Result<FoldOut, FoldError> {
        self.watch.delta.store(-1, Ordering::Relaxed);
        let res = self.ctx.with(|ctx| {
            let run = || -> rquickjs::Result<(Option<String>, Option<String>)> {
                let driver: Object = ctx.globals().get("__lake")?;
                let fold: Function = driver.get("fold")?;
                let out: rquickjs::Array = fold.call((input,))?;
                Ok((out.get(0)?, out.get(1)?))
            };
            run().catch(&ctx).map_err(|e| e.to_string())
        });
        self.watch.deadline_ns.store(0, Ordering::Relaxed);
        let delta = usize::try_from(self.watch.delta.load(Ordering::Relaxed)).ok();
        match res {
            Ok((doc, at_path)) => Ok(FoldOut { doc, at_path }),
            Err(message) => {
                let message = if message.contains("interrupted") {
                    format!(
                        "merge ran past its deadline of {} ms",
                        self.per_delta.as_millis()
                    )
                } else {
                    message
                };
                Err(FoldError { delta, message })
            }
        }
    }
}

fn worker_loop(
    rx: crossbeam_channel::Receiver<Job>,
    limits: Limits,
    user: Vec<UserMode>,
    rebuilds: Arc<AtomicU64>,
) {
    let mut worker: Option<Worker> = None;
    while let Ok(job) = rx.recv() {
        if worker.is_none() {
            worker = Worker::new(&limits, &user).ok();
        }
        let Some(w) = worker.as_ref() else {
            let _ = job.reply.send(Err(FoldError {
                delta: None,
                message: "merge engine could not start a JS runtime".into(),
            }));
            continue;
        };
        let res = w.fold(&job.input);
        if res.is_err() {
            // Interrupted, out of memory, or a throwing mode: start clean.
            worker = None;
            rebuilds.fetch_add(1, Ordering::Relaxed);
        }
        let _ = job.reply.send(res);
    }
}

/// Loads user modes from a directory: every `<name>.js` file is a mode.
pub fn load_modes(dir: &Path) -> Result<Vec<UserMode>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read modes directory {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("js") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let parsed = lake_shared::mode::parse(&name)
            .map_err(|e| format!("{}: {}", path.display(), e.message))?;
        if lake_shared::mode::is_builtin(&parsed) {
            return Err(format!(
                "{}: '{name}' is a built-in mode and cannot be redefined",
                path.display()
            ));
        }
        let source = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        out.push(UserMode { name, source });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
