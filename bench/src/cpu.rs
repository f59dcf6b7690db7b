//! Where the machine's CPU goes during one measured cell, per operation.
//!
//! Reads each thread's user + system time from `/proc/<pid>/task/*/stat`
//! before and after the cell, for the processes the bench started and for
//! itself (the load generator), and the whole machine's busy time from
//! `/proc/stat`. Throughput on a 2-core VM moves by 25-50 % from run to
//! run; CPU time per operation moves far less, so a change that saves work
//! shows here when writes/s cannot tell it from the noise.
//!
//! Threads are grouped by their name (`comm`): Redis's main thread, the
//! module's threads (`lake-*`), the sidecar's tokio workers and its local
//! store's writer. Linux counts in clock ticks (10 ms): a cell of a few
//! seconds at tens of thousands of operations gives a few percent of
//! resolution.

use std::collections::BTreeMap;

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// Ticks per (process label, thread group) at one moment, and the machine's
/// busy and total ticks.
pub struct Sample {
    threads: BTreeMap<(String, String), u64>,
    busy: u64,
    total: u64,
}

/// Samples `procs` (label, pid) and this process (`load generator`).
pub fn sample(procs: &[(&str, u32)]) -> Sample {
    let mut threads = BTreeMap::new();
    let own = ("load generator", std::process::id());
    for (label, pid) in procs.iter().copied().chain([own]) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            if let Some((comm, ticks)) = parse_stat(&stat) {
                let group = if label == own.0 {
                    "all threads".to_string()
                } else {
                    group(&comm)
                };
                *threads.entry((label.to_string(), group)).or_insert(0) += ticks;
            }
        }
    }
    let (busy, total) = machine().unwrap_or((0, 0));
    Sample {
        threads,
        busy,
        total,
    }
}

/// A thread's name and user + system ticks from its `stat` line. The name
/// is in parentheses and may hold spaces or parentheses itself.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // After the name: state is field 3, utime field 14, stime field 15.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Groups thread names: tokio's workers share one name; a main thread is
/// named after its binary.
fn group(comm: &str) -> String {
    match comm {
        "redis-server" | "lake-sidecar" => "main thread".into(),
        c if c.starts_with("lake-local") => "local store writer".into(),
        c if c.starts_with("tokio-") => "tokio workers".into(),
        c if c.starts_with("lake-") => "module threads (lake-*)".into(),
        _ => "other threads".into(),
    }
}

/// The machine's busy and total ticks, all CPUs (`/proc/stat`'s `cpu` line).
fn machine() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait are fields 4 and 5.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Prints CPU microseconds per operation per thread group between `a` and
/// `b`, and how busy the machine was.
pub fn report(what: &str, a: &Sample, b: &Sample, ops: u64) {
    let per_op = |ticks: u64| ticks as f64 / TICKS_PER_SEC * 1e6 / ops.max(1) as f64;
    let mut rows = Vec::new();
    let mut sum = 0.0;
    for (k, after) in &b.threads {
        let used = after.saturating_sub(a.threads.get(k).copied().unwrap_or(0));
        if used == 0 {
            continue;
        }
        sum += per_op(used);
        rows.push(format!("  {} / {}: {:.1} us", k.0, k.1, per_op(used)));
    }
    let total = b.total.saturating_sub(a.total).max(1);
    let busy = b.busy.saturating_sub(a.busy);
    eprintln!(
        "CPU per {what} ({ops} ops; the machine {:.0} % busy): {sum:.1} us in all\n{}",
        100.0 * busy as f64 / total as f64,
        rows.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_parses() {
        let line = "42 (lake (x) y) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 1";
        assert_eq!(parse_stat(line), Some(("lake (x) y".to_string(), 150)));
        assert_eq!(parse_stat("42 (short) S 1"), None);
    }

    #[test]
    fn threads_are_grouped_by_name() {
        assert_eq!(group("redis-server"), "main thread");
        assert_eq!(group("lake-local-writ"), "local store writer");
        assert_eq!(group("lake-reader"), "module threads (lake-*)");
        assert_eq!(group("tokio-rt-worker"), "tokio workers");
        assert_eq!(group("lake-sidecar"), "main thread");
        assert_eq!(group("bio_aof"), "other threads");
    }
}
