//! Module arguments: `--loadmodule liblake.so socket <path> [timeout-ms <n>]
//! [snapshot-every <n>] [max-value-bytes <n>]`, as key/value pairs.

use std::path::PathBuf;
use std::time::Duration;

use lake_shared::{LakeError, DEFAULT_MAX_VALUE_BYTES};

#[derive(Debug, Clone)]
pub struct Config {
    /// The sidecar's Unix socket.
    pub socket: PathBuf,
    /// Every blocked client gets a reply within this.
    pub timeout: Duration,
    /// A read that merged at least this many deltas builds a snapshot in the
    /// background (0 = never).
    pub snapshot_every: usize,
    /// Largest value `LAKE.WRITE` accepts.
    pub max_value_bytes: usize,
    /// Requests waiting for the sidecar at most; more get `LAKEBUSY`.
    pub max_inflight: usize,
    /// LAKE.GC keeps unreferenced objects younger than this.
    pub gc_grace_secs: u64,
    /// History older than this (covered by a snapshot) may be compacted;
    /// 0 keeps everything. A catalog may override it (`LAKE.RETENTION`).
    pub retention_secs: u64,
    /// How often background compaction takes a step (0: never).
    pub compact_interval_ms: u64,
}

impl Config {
    pub fn parse(args: &[String]) -> Result<Config, LakeError> {
        let mut socket = None;
        let mut timeout_ms: u64 = 5000;
        let mut snapshot_every: usize = 64;
        let mut max_value_bytes = DEFAULT_MAX_VALUE_BYTES;
        let mut max_inflight: usize = 10_000;
        let mut gc_grace_secs: u64 = 3600;
        let mut retention_secs: u64 = 0;
        let mut compact_interval_ms: u64 = 1000;
        if !args.len().is_multiple_of(2) {
            return Err(LakeError::invalid(
                "module arguments are key/value pairs: socket <path> [timeout-ms <n>] [snapshot-every <n>] [max-value-bytes <n>] [max-inflight <n>] [gc-grace-secs <n>] [retention-secs <n>] [compact-interval-ms <n>]",
            ));
        }
        for pair in args.chunks(2) {
            let (k, v) = (pair[0].to_ascii_lowercase(), &pair[1]);
            let num = |what: &str| {
                v.parse::<u64>().map_err(|_| {
                    LakeError::invalid(format!(
                        "module argument {what} needs a whole number, got '{v}'"
                    ))
                })
            };
            match k.as_str() {
                "socket" => socket = Some(PathBuf::from(v)),
                "timeout-ms" => timeout_ms = num("timeout-ms")?.max(1),
                "snapshot-every" => snapshot_every = num("snapshot-every")? as usize,
                "max-value-bytes" => max_value_bytes = num("max-value-bytes")? as usize,
                "max-inflight" => max_inflight = num("max-inflight")?.max(1) as usize,
                "gc-grace-secs" => gc_grace_secs = num("gc-grace-secs")?,
                "retention-secs" => retention_secs = num("retention-secs")?,
                "compact-interval-ms" => compact_interval_ms = num("compact-interval-ms")?,
                other => {
                    return Err(LakeError::invalid(format!(
                        "unknown module argument '{other}'"
                    )))
                }
            }
        }
        let socket = socket
            .ok_or_else(|| LakeError::invalid("module argument 'socket <path>' is required"))?;
        Ok(Config {
            socket,
            timeout: Duration::from_millis(timeout_ms),
            snapshot_every,
            max_value_bytes,
            max_inflight,
            gc_grace_secs,
            retention_secs,
            compact_interval_ms,
        })
    }
}
