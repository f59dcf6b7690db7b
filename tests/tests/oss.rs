//! End-to-end: what a real deployment on Aliyun OSS (or any S3) needs,
//! simulated on loopback. Server-side encryption asked on every upload;
//! `lake-sidecar check` against a healthy store, a missing bucket, a
//! read-only key and a server that is down; `/healthz` giving the same
//! reasons; credentials from a (fake) ECS metadata service's RAM role.

use std::io::{Read, Write};
use std::time::Duration;

use lake_tests::{
    free_port, read, sidecar, spawn_s3_test_server, wait_for, write, Lake, Options, Reaped,
    StoreKind, BUCKET, PREFIX,
};
use serde_json::json;

/// The uploads the test server logged: (key below the prefix, SSE, KMS id).
fn uploads(log: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let key = f.next()?.strip_prefix(&format!("{PREFIX}/"))?.to_string();
            Some((key, f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// Every upload — a segment, a delta of its own (multipart above 16 MiB),
/// a snapshot — asks for the configured encryption; none does when off.
#[test]
fn server_side_encryption_is_asked_on_every_upload() {
    for (flags, want_sse, want_kms) in [
        (vec!["--s3-sse", "aes256"], "AES256", "-"),
        (
            vec!["--s3-sse", "kms", "--s3-sse-kms-key-id", "key-1234"],
            "aws:kms",
            "key-1234",
        ),
        (vec![], "-", "-"),
    ] {
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("puts.log");
        let lake = Lake::with(Options {
            store: StoreKind::S3,
            sidecar_args: flags.iter().map(|s| s.to_string()).collect(),
            s3_server_args: vec!["--log-puts".into(), log.display().to_string()],
            ..Options::default()
        });
        let mut c = lake.con();
        write(&mut c, "enc", "a", "1").unwrap();
        let big = format!("\"{}\"", "0123456789abcdef".repeat(17 << 16)); // 17 MiB: multipart
        write(&mut c, "enc", "big", &big).unwrap();
        read(&mut c, "enc", &["SNAP"]).unwrap();
        let ups = uploads(&log);
        assert!(
            ups.iter().any(|(k, _, _)| k.starts_with(".segments/")),
            "{flags:?}: a segment: {ups:?}"
        );
        assert!(
            ups.iter()
                .any(|(k, _, _)| k.starts_with("enc/") && k.ends_with(".snap.json")),
            "{flags:?}: a snapshot: {ups:?}"
        );
        assert!(
            ups.iter()
                .any(|(k, _, _)| k.starts_with("enc/") && !k.ends_with(".snap.json")),
            "{flags:?}: a delta of its own: {ups:?}"
        );
        for (k, sse, kms) in &ups {
            assert_eq!(
                (sse.as_str(), kms.as_str()),
                (want_sse, want_kms),
                "{flags:?}: {k}"
            );
        }
        assert_eq!(
            read(&mut c, "enc", &["PATH", "a"]).unwrap(),
            Some(json!(1)),
            "{flags:?}"
        );
    }
}

/// Runs `lake-sidecar check` with `args`; (exit code, stdout).
fn check(args: &[String], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(lake_tests::target_dir().join("lake-sidecar"));
    cmd.arg("check")
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run lake-sidecar check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn s3_args(port: u16, bucket: &str) -> Vec<String> {
    [
        "--store",
        &format!("s3://{bucket}/{PREFIX}"),
        "--s3-provider",
        "minio",
        "--s3-endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--s3-timeout-ms",
        "1500",
    ]
    .map(String::from)
    .to_vec()
}

/// `check` names the step that fails and the likely cause.
#[test]
fn check_names_the_failing_step_and_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = spawn_s3_test_server(
        &dir.path().join("root"),
        &[
            "--read-only-access-key",
            "reader",
            "--read-only-secret-key",
            "reader-secret",
        ],
    );
    let keys = [
        ("AWS_ACCESS_KEY_ID", lake_tests::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", lake_tests::SECRET_KEY),
    ];

    let (code, out) = check(&s3_args(port, BUCKET), &keys);
    assert_eq!(code, 0, "{out}");
    for step in ["put", "get", "range", "list", "delete"] {
        assert!(out.contains(&format!("{step:<7} ok")), "{step}: {out}");
    }
    assert!(out.contains("the store is ready"), "{out}");
    // Temporary (STS) keys from the environment sign as well.
    let sts = [keys[0], keys[1], ("AWS_SESSION_TOKEN", "sts-session-token")];
    let (code, out) = check(&s3_args(port, BUCKET), &sts);
    assert_eq!(code, 0, "{out}");

    let (code, out) = check(&s3_args(port, "no-such-bucket"), &keys);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("put     FAILED: ") && out.contains("NoSuchBucket"),
        "{out}"
    );
    assert!(out.contains("hint: the bucket is not there"), "{out}");

    let reader = [
        ("AWS_ACCESS_KEY_ID", "reader"),
        ("AWS_SECRET_ACCESS_KEY", "reader-secret"),
    ];
    let (code, out) = check(&s3_args(port, BUCKET), &reader);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("put     FAILED: ") && out.contains("AccessDenied"),
        "{out}"
    );
    assert!(out.contains("hint: the key may not do this here"), "{out}");

    let wrong = [
        ("AWS_ACCESS_KEY_ID", lake_tests::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
    ];
    let (code, out) = check(&s3_args(port, BUCKET), &wrong);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("hint: the credentials are wrong"), "{out}");

    drop(server);
    let (code, out) = check(&s3_args(port, BUCKET), &keys);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("put     FAILED: "), "{out}");
    assert!(
        out.contains("hint: the endpoint cannot be reached"),
        "{out}"
    );
    assert!(!out.contains(lake_tests::SECRET_KEY), "no secret printed");
}

/// `/healthz` says why the store is unavailable, with the same hint.
#[test]
fn healthz_gives_the_reason_and_a_hint() {
    let mut lake = Lake::with(Options {
        store: StoreKind::S3,
        ..Options::default()
    });
    let (status, body) = lake.http_get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"layout\":\"segments\""), "{body}");
    lake.stop_store();
    let (status, body) = lake.http_get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("hint: the endpoint cannot be reached"),
        "{body}"
    );
}

/// A fake ECS metadata service on loopback: names the role `lake-role` and
/// hands out the test server's key as that role's STS credentials (the test
/// server checks the signature, which the token is part of). Counts hits.
fn metadata_service(
    expiration: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let body = if req.starts_with("GET /latest/meta-data/ram/security-credentials/ ") {
                "lake-role".to_string()
            } else if req.starts_with("GET /latest/meta-data/ram/security-credentials/lake-role ") {
                format!(
                    r#"{{"AccessKeyId":"{}","AccessKeySecret":"{}","SecurityToken":"sts-token","Expiration":"{expiration}","Code":"Success"}}"#,
                    lake_tests::ACCESS_KEY,
                    lake_tests::SECRET_KEY
                )
            } else {
                String::new()
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

/// The sidecar signs with the RAM role's credentials from the metadata
/// service (no key in its environment), and says why when it cannot get any.
#[test]
fn ecs_ram_role_credentials_sign_the_requests() {
    let (url, hits) = metadata_service("2099-01-01T00:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = spawn_s3_test_server(&dir.path().join("root"), &[]);
    let mut args = s3_args(port, BUCKET);
    args.extend(
        [
            "--s3-credentials",
            "ecs-ram-role",
            "--ecs-metadata-url",
            &url,
        ]
        .map(String::from),
    );
    let no_keys = [("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")];
    let (code, out) = check(&args, &no_keys);
    assert_eq!(code, 0, "{out}");
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "role, then credentials"
    );

    // A sidecar serving with them: writes and reads work.
    let socket = dir.path().join("s.sock");
    let mut side = Reaped(
        sidecar(&socket, &format!("s3://{BUCKET}/{PREFIX}"), Some(port))
            .args([
                "--s3-credentials",
                "ecs-ram-role",
                "--ecs-metadata-url",
                &url,
            ])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .arg("--http")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn lake-sidecar"),
    );
    wait_for("the sidecar socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let _ = side.0.kill();
    let mut err = String::new();
    let _ = side.0.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert!(
        !err.contains("warning"),
        "the store was healthy at start: {err}"
    );
    assert!(
        !err.contains(lake_tests::SECRET_KEY),
        "no secret logged: {err}"
    );

    // The metadata service down: a clear error naming it.
    let mut down = s3_args(port, BUCKET);
    let gone = format!("http://127.0.0.1:{}", free_port());
    down.extend(
        [
            "--s3-credentials",
            "ecs-ram-role",
            "--ecs-metadata-url",
            &gone,
        ]
        .map(String::from),
    );
    let (code, out) = check(&down, &no_keys);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot reach") && out.contains(&gone[7..]),
        "{out}"
    );

    // Expired credentials from the service are refused, not used.
    let (old, _) = metadata_service("2001-01-01T00:00:00Z");
    let mut expired = s3_args(port, BUCKET);
    expired.extend(
        [
            "--s3-credentials",
            "ecs-ram-role",
            "--ecs-metadata-url",
            &old,
        ]
        .map(String::from),
    );
    let (code, out) = check(&expired, &no_keys);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expired"), "{out}");
}
