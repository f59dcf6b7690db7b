//! The merge engine: folds a snapshot and the deltas after it into one
//! document on a pool of dedicated threads. Built-in modes run natively
//! ([`crate::native`]); QuickJS (rquickjs) runs custom modes only.
//!
//! Why threads: a fold is CPU work that must not stall the async runtime,
//! and rquickjs `Runtime`/`Context` are not `Send`, so each worker thread
//! owns its runtime (made the first time a custom mode is met) and takes
//! jobs over a channel; callers await a oneshot reply. A small fold of
//! built-in modes only (at most [`INLINE_FOLD_BYTES`] of text) runs on the
//! caller's thread instead: it takes less time than the two hand-offs.
//!
//! Invariants:
//! - Values go into JS as JSON text and come back as JSON text; user data
//!   never becomes source code. Only the value at a custom delta's path
//!   passes through JS (as doubles); every other number stays exact.
//! - Each runtime has a memory limit and a stack limit; each custom step has
//!   a deadline (the interrupt handler checks it).
//! - A runtime whose step failed (exception, deadline, out of memory) is
//!   dropped and rebuilt before the next job: no state survives a failure.
//! - User modes are compiled once per runtime from `<dir>/<name>.js`, each
//!   defining `function merge(current, value)`; views likewise from
//!   `--views <dir>/<name>.js`, each defining `function view(doc)`, run
//!   with the same limits (the deadline per call).

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, Context, Function, Object, Runtime};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::native::{self, Custom};

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

/// A user mode (or view): its name and JS source.
#[derive(Debug, Clone)]
pub struct UserMode {
    pub name: String,
    pub source: String,
}

/// The user code every runtime compiles.
#[derive(Debug, Clone, Default)]
struct Code {
    modes: Vec<UserMode>,
    views: Vec<UserMode>,
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
    /// The document `doc` is the text of, as the native fold built it, for
    /// the cache (`None` from the JavaScript driver).
    pub tree: Option<Value>,
}

type Reply = tokio::sync::oneshot::Sender<Result<FoldOut, FoldError>>;
type ViewReply = tokio::sync::oneshot::Sender<Result<Option<String>, String>>;

/// One fold, owned, so it can cross to a worker thread.
pub struct Fold {
    /// The snapshot's (or a cached) document as JSON text; `None`: `{}`.
    pub base: Option<Arc<str>>,
    /// `base` already parsed (from the cache): folded onto directly, the
    /// text is not parsed again.
    pub tree: Option<Value>,
    pub deltas: Vec<Delta>,
    /// Also return the value at this path.
    pub path: Option<Vec<String>>,
}

/// One delta of a [`Fold`].
pub struct Delta {
    pub path: Vec<String>,
    pub mode: String,
    pub value: Box<RawValue>,
}

enum Job {
    Native(Fold, Reply),
    /// The JavaScript driver's own fold (built-ins in JS): the reference the
    /// differential test holds the native engine to.
    Js(String, Reply),
    /// A view over a document's JSON text.
    View(String, Arc<str>, ViewReply),
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: crossbeam_channel::Sender<Job>,
    modes: Arc<Vec<String>>,
    views: Arc<Vec<String>>,
    rebuilds: Arc<AtomicU64>,
}

impl Engine {
    /// Starts `threads` workers. Fails if the driver or a user mode does not
    /// compile, so a broken mode file stops the sidecar at start-up.
    pub fn start(threads: usize, limits: Limits, user: Vec<UserMode>) -> Result<Engine, String> {
        Engine::start_with_views(threads, limits, user, Vec::new())
    }

    /// Like [`Engine::start`], with views (`function view(doc)` each).
    pub fn start_with_views(
        threads: usize,
        limits: Limits,
        user: Vec<UserMode>,
        views: Vec<UserMode>,
    ) -> Result<Engine, String> {
        let view_names = views.iter().map(|v| v.name.clone()).collect();
        let user = Code { modes: user, views };
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
        names.extend(user.modes.iter().map(|m| m.name.clone()));
        Ok(Engine {
            tx,
            modes: Arc::new(names),
            views: Arc::new(view_names),
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

    /// Names of the loaded views.
    pub fn views(&self) -> &[String] {
        &self.views
    }

    /// Runs view `name` over `doc` (JSON text): its value as JSON text,
    /// `None` when it returned `undefined`; the error says why it failed.
    pub async fn view(&self, name: &str, doc: Arc<str>) -> Result<Option<String>, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::View(name.to_string(), doc, reply))
            .map_err(|_| "merge engine stopped".to_string())?;
        rx.await.map_err(|_| "merge engine stopped".to_string())?
    }

    /// How many runtimes were rebuilt after a failure.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// Runs one fold natively (custom modes in JS) and returns the whole
    /// document and the value at the fold's path.
    ///
    /// A small fold of built-in modes only runs right here, on the caller's
    /// thread: it takes microseconds, less than the two thread hand-offs
    /// (to a merge thread and back) it would otherwise wait for, which on a
    /// busy machine cost a read most of its time.
    pub async fn fold(&self, fold: Fold) -> Result<FoldOut, FoldError> {
        if inline(&fold) {
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fold_native(fold, &mut BuiltinsOnly)
            }))
            .unwrap_or_else(|_| {
                Err(FoldError {
                    delta: None,
                    message: "the merge panicked".into(),
                })
            });
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Native(fold, reply), rx).await
    }

    /// Runs one fold entirely in the JavaScript driver, built-in modes
    /// included. `input` is the driver's job text (see [`fold_input`]). For
    /// the differential test only: numbers become doubles there.
    pub async fn fold_js(&self, input: String) -> Result<FoldOut, FoldError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Js(input, reply), rx).await
    }

    async fn send(
        &self,
        job: Job,
        rx: tokio::sync::oneshot::Receiver<Result<FoldOut, FoldError>>,
    ) -> Result<FoldOut, FoldError> {
        let gone = || FoldError {
            delta: None,
            message: "merge engine stopped".into(),
        };
        self.tx.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Most bytes of JSON text (the base document and the delta values) a fold
/// may carry to run on the caller's thread: folding and serialising that
/// much takes tens of microseconds, short enough not to stall the async
/// runtime.
pub const INLINE_FOLD_BYTES: usize = 64 << 10;

/// Whether `fold` runs on the caller's thread: built-in modes only (no JS
/// runtime there) and at most [`INLINE_FOLD_BYTES`] of text.
fn inline(fold: &Fold) -> bool {
    let bytes = fold.base.as_ref().map_or(0, |b| b.len())
        + fold
            .deltas
            .iter()
            .map(|d| d.value.get().len())
            .sum::<usize>();
    bytes <= INLINE_FOLD_BYTES
        && fold
            .deltas
            .iter()
            .all(|d| !matches!(native::Mode::of(&d.mode), native::Mode::Custom(_)))
}

/// The custom-mode hook of a fold that [`inline`] admitted: it has none.
struct BuiltinsOnly;

impl Custom for BuiltinsOnly {
    fn apply(&mut self, mode: &str, _: Option<Value>, _: Value) -> Result<Option<Value>, String> {
        Err(format!("mode '{mode}' needs a merge thread"))
    }
}

/// Runs a native fold on this thread; `js` is the thread's runtime, made
/// when the first custom mode is met.
fn run_native(
    fold: Fold,
    js: &mut Option<Worker>,
    limits: &Limits,
    user: &Code,
    rebuilds: &AtomicU64,
) -> Result<FoldOut, FoldError> {
    let mut hook = JsHook {
        js,
        limits,
        user,
        rebuilds,
    };
    fold_native(fold, &mut hook)
}

/// Folds natively; custom modes go to `custom`.
fn fold_native(fold: Fold, custom: &mut dyn Custom) -> Result<FoldOut, FoldError> {
    let base = match (fold.tree, &fold.base) {
        (Some(tree), _) => Some(tree),
        (None, Some(text)) => Some(native::parse(text).map_err(|e| FoldError {
            delta: None,
            message: format!("the snapshot is not valid JSON: {e}"),
        })?),
        (None, None) => None,
    };
    let mut deltas = Vec::with_capacity(fold.deltas.len());
    for (i, d) in fold.deltas.iter().enumerate() {
        let value = native::parse(d.value.get()).map_err(|e| FoldError {
            delta: Some(i),
            message: format!("the value is not valid JSON: {e}"),
        })?;
        deltas.push(native::Delta {
            path: &d.path,
            mode: native::Mode::of(&d.mode),
            value,
        });
    }
    let doc = native::fold(base, deltas, custom).map_err(|f| FoldError {
        delta: Some(f.delta),
        message: f.message,
    })?;
    let at_path = fold
        .path
        .as_deref()
        .and_then(|p| native::get(&doc, p))
        .map(native::to_text);
    // About the base's text and the values folded onto it.
    let size = fold.base.as_ref().map_or(0, |b| b.len())
        + fold
            .deltas
            .iter()
            .map(|d| d.value.get().len())
            .sum::<usize>()
        + 64;
    Ok(FoldOut {
        doc: Some(native::to_text_sized(&doc, size)),
        at_path,
        tree: Some(doc),
    })
}

/// Custom modes through the thread's QuickJS runtime.
struct JsHook<'a> {
    js: &'a mut Option<Worker>,
    limits: &'a Limits,
    user: &'a Code,
    rebuilds: &'a AtomicU64,
}

impl Custom for JsHook<'_> {
    fn apply(
        &mut self,
        mode: &str,
        current: Option<Value>,
        value: Value,
    ) -> Result<Option<Value>, String> {
        if self.js.is_none() {
            *self.js = Some(Worker::new(self.limits, self.user)?);
        }
        let Some(w) = self.js.as_ref() else {
            return Err("merge engine could not start a JS runtime".into());
        };
        let cur = current.as_ref().map(Value::to_string);
        let out = w.apply(mode, cur.as_deref(), &value.to_string());
        if out.is_err() {
            // Interrupted, out of memory, or a throwing mode: start clean.
            *self.js = None;
            self.rebuilds.fetch_add(1, Ordering::Relaxed);
        }
        match out? {
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| format!("mode '{mode}' returned invalid JSON: {e}")),
            None => Ok(None),
        }
    }
}

/// One delta as the JavaScript driver takes it.
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
    fn new(limits: &Limits, user: &Code) -> Result<Worker, String> {
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
            for m in &user.modes {
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
            let add: Function = driver.get("addView").map_err(|e| e.to_string())?;
            for v in &user.views {
                let wrapped = format!(
                    "(function () {{\n{}\n;return typeof view === \"function\" ? view : undefined;\n}})()",
                    v.source
                );
                let f: rquickjs::Value = ctx
                    .eval(wrapped)
                    .catch(&ctx)
                    .map_err(|e| format!("view '{}' does not compile: {e}", v.name))?;
                add.call::<_, ()>((v.name.as_str(), f))
                    .catch(&ctx)
                    .map_err(|e| format!("view '{}': {e}", v.name))?;
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

    /// One custom-mode step: `merge(current, value)` as JSON text; `None`
    /// out deletes the path.
    fn apply(
        &self,
        mode: &str,
        current: Option<&str>,
        value: &str,
    ) -> Result<Option<String>, String> {
        let res = self.ctx.with(|ctx| {
            let run = || -> rquickjs::Result<Option<String>> {
                let driver: Object = ctx.globals().get("__lake")?;
                let apply: Function = driver.get("apply")?;
                apply.call((mode, current.is_some(), current.unwrap_or(""), value))
            };
            run().catch(&ctx).map_err(|e| e.to_string())
        });
        self.watch.deadline_ns.store(0, Ordering::Relaxed);
        res.map_err(|message| {
            if message.contains("interrupted") {
                format!(
                    "merge ran past its deadline of {} ms",
                    self.per_delta.as_millis()
                )
            } else {
                message
            }
        })
    }

    /// One view call: `view(doc)` as JSON text.
    fn view(&self, name: &str, doc: &str) -> Result<Option<String>, String> {
        let res = self.ctx.with(|ctx| {
            let run = || -> rquickjs::Result<Option<String>> {
                let driver: Object = ctx.globals().get("__lake")?;
                let view: Function = driver.get("view")?;
                view.call((name, doc))
            };
            run().catch(&ctx).map_err(|e| e.to_string())
        });
        self.watch.deadline_ns.store(0, Ordering::Relaxed);
        res.map_err(|message| {
            if message.contains("interrupted") {
                format!(
                    "view ran past its deadline of {} ms",
                    self.per_delta.as_millis()
                )
            } else {
                message
            }
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
            Ok((doc, at_path)) => Ok(FoldOut {
                doc,
                at_path,
                tree: None,
            }),
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
    user: Code,
    rebuilds: Arc<AtomicU64>,
) {
    let mut worker: Option<Worker> = None;
    while let Ok(job) = rx.recv() {
        let (res, reply) = match job {
            Job::View(name, doc, reply) => {
                if worker.is_none() {
                    worker = Worker::new(&limits, &user).ok();
                }
                let res = match worker.as_ref() {
                    Some(w) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        w.view(&name, &doc)
                    }))
                    .unwrap_or_else(|_| Err("the view panicked".into())),
                    None => Err("merge engine could not start a JS runtime".into()),
                };
                if res.is_err() {
                    // Interrupted, out of memory, or a throwing view.
                    worker = None;
                    rebuilds.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(res);
                continue;
            }
            Job::Native(fold, reply) => {
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_native(fold, &mut worker, &limits, &user, &rebuilds)
                }))
                .unwrap_or_else(|_| {
                    worker = None;
                    Err(FoldError {
                        delta: None,
                        message: "the merge panicked".into(),
                    })
                });
                (res, reply)
            }
            Job::Js(input, reply) => {
                if worker.is_none() {
                    worker = Worker::new(&limits, &user).ok();
                }
                let res = match worker.as_ref() {
                    Some(w) => w.fold(&input),
                    None => Err(FoldError {
                        delta: None,
                        message: "merge engine could not start a JS runtime".into(),
                    }),
                };
                if res.is_err() {
                    // Interrupted, out of memory, or a throwing mode.
                    worker = None;
                    rebuilds.fetch_add(1, Ordering::Relaxed);
                }
                (res, reply)
            }
        };
        let _ = reply.send(res);
    }
}

/// Loads views from a directory: every `<name>.js` file is a view (names
/// as for modes).
pub fn load_views(dir: &Path) -> Result<Vec<UserMode>, String> {
    load_js(dir, "views")
}

/// Loads user modes from a directory: every `<name>.js` file is a mode.
pub fn load_modes(dir: &Path) -> Result<Vec<UserMode>, String> {
    let modes = load_js(dir, "modes")?;
    if let Some(m) = modes
        .iter()
        .find(|m| lake_shared::mode::is_builtin(&m.name))
    {
        return Err(format!(
            "{}: '{}' is a built-in mode and cannot be redefined",
            dir.join(format!("{}.js", m.name)).display(),
            m.name
        ));
    }
    Ok(modes)
}

/// Every `<name>.js` of `dir` (a valid mode name each), sorted by name.
fn load_js(dir: &Path, what: &str) -> Result<Vec<UserMode>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {what} directory {}: {e}", dir.display()))?;
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
        let source = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        out.push(UserMode {
            name: parsed,
            source,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
