//! `lake-sidecar check --store ...`: before going live, does what Lake does
//! with a store — put, get, ranged get, list and delete of one probe object
//! under the prefix — and says for each step whether it worked, and if not,
//! the likely cause ([`hint`]). `/healthz` uses the same hints.
//!
//! Invariants:
//! - The probe is one object, `.lake-check/<uuid>` below the prefix (a
//!   folder no catalog can name), deleted at the end; a failed run leaves at
//!   most that object.
//! - The steps run in order and stop at the first failure: a later step
//!   would only fail for the same reason.
//! - Nothing printed contains a secret (store errors never carry one).

use std::time::Instant;

use lake_shared::LakeError;

use crate::store::Store;

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub result: Result<String, String>,
    pub hint: Option<&'static str>,
}

/// Runs the steps against `store`; stops at the first failure.
pub async fn run(store: &dyn Store) -> Vec<Step> {
    let key = format!(".lake-check/{}", uuid::Uuid::new_v4());
    let body: Vec<u8> = format!("lake check {key} \u{2713}").into_bytes();
    let mut steps = Vec::new();
    let mut step = |name: &'static str, r: Result<String, LakeError>| {
        let ok = r.is_ok();
        steps.push(Step {
            name,
            hint: r.as_ref().err().and_then(|e| hint(&e.message)),
            result: r.map_err(|e| e.message),
        });
        ok
    };
    let t = Instant::now();
    let put = store.put(&key, body.clone()).await;
    if !step(
        "put",
        put.and_then(|c| match c {
            crate::store::Created::New => Ok(format!("{key} ({} bytes, {:?})", body.len(), t.elapsed())),
            crate::store::Created::Exists => Err(LakeError::internal(format!(
                "'{key}' already existed: the store refused to overwrite it (as it should), but a fresh name should not exist"
            ))),
        }),
    ) {
        return steps;
    }
    let got = store.get(&key).await.and_then(|b| {
        if b == body {
            Ok("the bytes read are the bytes written".to_string())
        } else {
            Err(LakeError::data(format!(
                "read {} bytes that differ from the {} written (a proxy or server rewrote the body: check the checksum settings)",
                b.len(),
                body.len()
            )))
        }
    });
    if !step("get", got) {
        return steps;
    }
    let range = store.get_range(&key, 5, 5).await.and_then(|b| {
        if b == body[5..10] {
            Ok("bytes 5..10".to_string())
        } else {
            Err(LakeError::data(
                "a ranged GET returned other bytes (the server ignores Range)",
            ))
        }
    });
    if !step("range", range) {
        return steps;
    }
    let listed = store.list().await.and_then(|l| {
        if l.iter().any(|o| o.key == key) {
            Ok(format!("{} objects, the probe among them", l.len()))
        } else {
            Err(LakeError::data(
                "the probe is not listed under the prefix (listing returns other keys)",
            ))
        }
    });
    if !step("list", listed) {
        return steps;
    }
    let deleted = store
        .delete(&key)
        .await
        .map(|()| "probe removed".to_string());
    step("delete", deleted);
    steps
}

/// The likely cause of a store error, from its message (S3 error codes and
/// connection failures), phrased as what to change.
pub fn hint(message: &str) -> Option<&'static str> {
    let m = message;
    let has = |s: &str| m.contains(s);
    Some(if has("NoSuchBucket") || has("bucket does not exist") {
        "the bucket is not there at this endpoint: check its name and region; with a custom domain (CNAME) bound to the bucket, use --s3-bucket-endpoint so the bucket is not added to the host or the path"
    } else if has("RequestTimeTooSkewed") || has("clock skew") || has("RequestExpired") {
        "this machine's clock is off: requests are signed with the time, and the server refuses a skew above 15 minutes; sync the clock (chrony/NTP)"
    } else if has("PermanentRedirect")
        || has("AuthorizationHeaderMalformed")
        || has("IncorrectEndpoint")
        || has("301 Moved")
        || has("the region")
    {
        "wrong region or endpoint for this bucket: set --s3-region to the bucket's region (for OSS, --s3-provider oss --s3-region <region>)"
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("InvalidToken")
        || has("ExpiredToken")
    {
        "the credentials are wrong or expired: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or the RAM role"
    } else if has("AccessDenied") || has("access denied") || has("Forbidden") {
        "the key may not do this here: grant it PutObject, GetObject, ListObjects (ListBucket) and DeleteObject on the bucket and prefix (OSS: oss:PutObject, oss:GetObject, oss:ListObjects, oss:DeleteObject)"
    } else if has("dispatch failure")
        || has("Connection refused")
        || has("connection refused")
        || has("dns error")
        || has("failed to lookup")
        || has("timed out")
        || has("timeout")
    {
        "the endpoint cannot be reached: check --s3-endpoint (or the provider and region), the network path and, inside Alibaba Cloud, that --s3-internal is used only from the bucket's region"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::FileStore;

    #[tokio::test]
    async fn every_step_passes_on_a_working_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().to_str().unwrap()).unwrap();
        let steps = run(&store).await;
        let names: Vec<_> = steps.iter().map(|s| s.name).collect();
        assert_eq!(names, ["put", "get", "range", "list", "delete"]);
        assert!(steps.iter().all(|s| s.result.is_ok()), "{steps:?}");
        assert!(store.list().await.unwrap().is_empty(), "the probe is gone");
    }

    #[test]
    fn hints_name_the_cause() {
        for (msg, want) in [
            (
                "NoSuchBucket: The specified bucket does not exist",
                "--s3-bucket-endpoint",
            ),
            ("AccessDenied: Access Denied", "PutObject"),
            ("RequestTimeTooSkewed: The difference", "clock"),
            (
                "PermanentRedirect: use the specified endpoint",
                "--s3-region",
            ),
            ("SignatureDoesNotMatch: x", "credentials"),
            (
                "dispatch failure: io error: Connection refused",
                "cannot be reached",
            ),
        ] {
            assert!(hint(msg).unwrap_or("").contains(want), "{msg}");
        }
        assert_eq!(hint("something else"), None);
    }
}
