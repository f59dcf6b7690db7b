//! Settings the Redis way: every module argument is also a module config,
//! read with `CONFIG GET lake.*` and changed at run time with `CONFIG SET`.

use std::time::{Duration, Instant};

use lake_tests::{err_text, read, redis, wait_for, write, zrange, Lake, Options};

fn config_get(c: &mut redis::Connection, name: &str) -> String {
    let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap();
    assert_eq!(v.len(), 2, "{name}: {v:?}");
    v[1].clone()
}

fn config_set(c: &mut redis::Connection, name: &str, value: &str) -> Result<(), String> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query::<String>(c)
        .map(drop)
        .map_err(err_text)
}

#[test]
fn every_setting_is_a_module_config() {
    let lake = Lake::with(Options {
        timeout_ms: 2000,
        module_args: ["gc-grace-secs", "7200"].map(String::from).to_vec(),
        ..Options::default()
    });
    let mut c = lake.con();
    // Load arguments are the configs' values.
    assert_eq!(config_get(&mut c, "lake.timeout-ms"), "2000");
    assert_eq!(config_get(&mut c, "lake.gc-grace-secs"), "7200");
    assert_eq!(config_get(&mut c, "lake.retention-secs"), "0");
    assert_eq!(
        config_get(&mut c, "lake.socket"),
        lake.socket().display().to_string()
    );
    // Immutable, and range-checked.
    assert!(config_set(&mut c, "lake.socket", "/elsewhere").is_err());
    assert!(config_set(&mut c, "lake.timeout-ms", "0").is_err());
    assert!(config_set(&mut c, "lake.max-value-bytes", "abc").is_err());

    // max-value-bytes
    config_set(&mut c, "lake.max-value-bytes", "10").unwrap();
    let e = write(&mut c, "cfg", "a", "\"0123456789\"").unwrap_err();
    assert!(
        e.starts_with("ERR value of 12 bytes exceeds max-value-bytes (10)"),
        "{e}"
    );
    config_set(&mut c, "lake.max-value-bytes", "1000").unwrap();
    write(&mut c, "cfg", "a", "\"0123456789\"").unwrap();

    // snapshot-every: a read past it builds a snapshot in the background.
    config_set(&mut c, "lake.snapshot-every", "2").unwrap();
    write(&mut c, "cfg", "b", "1").unwrap();
    read(&mut c, "cfg", &[]).unwrap();
    wait_for("a background snapshot", Duration::from_secs(10), || {
        zrange(&mut c, "catalog:{cfg}:snap").len() == 1
    });

    // retention-secs: the default LAKE.RETENTION reports.
    config_set(&mut c, "lake.retention-secs", "30").unwrap();
    let secs: i64 = redis::cmd("LAKE.RETENTION")
        .arg("cfg")
        .query(&mut c)
        .unwrap();
    assert_eq!(secs, 30);
    config_set(&mut c, "lake.compact-interval-ms", "0").unwrap();
    assert_eq!(config_get(&mut c, "lake.compact-interval-ms"), "0");

    config_set(&mut c, "lake.gc-grace-secs", "60").unwrap();
    assert_eq!(config_get(&mut c, "lake.gc-grace-secs"), "60");

    // timeout-ms: a frozen sidecar answers within the new timeout.
    config_set(&mut c, "lake.timeout-ms", "300").unwrap();
    lake.signal_sidecar("STOP");
    let t = Instant::now();
    let e = write(&mut c, "cfg", "c", "1").unwrap_err();
    lake.signal_sidecar("CONT");
    assert!(
        e.starts_with("TIMEOUT no answer from the sidecar within 300 ms"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // max-inflight
    config_set(&mut c, "lake.max-inflight", "1").unwrap();
    assert_eq!(config_get(&mut c, "lake.max-inflight"), "1");
}

#[test]
fn an_unknown_load_argument_stops_the_module_loading() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("redis-server")
        .args(["--port", &lake_tests::free_port().to_string(), "--save", ""])
        .arg("--dir")
        .arg(dir.path())
        .arg("--loadmodule")
        .arg(lake_tests::target_dir().join("liblake.so"))
        .args(["socket", "/nowhere.sock", "timeout-msec", "10"])
        .output()
        .expect("run redis-server");
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("unknown module argument 'timeout-msec'"),
        "{log}"
    );
}
