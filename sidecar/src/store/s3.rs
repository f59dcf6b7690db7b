//! `s3://bucket/prefix`: AWS S3, Aliyun OSS, MinIO and other S3-compatible
//! servers, through aws-sdk-s3.
//!
//! Invariants:
//! - Request checksum calculation and response checksum validation are
//!   always "when required": OSS rejects aws-chunked uploads, and some
//!   servers store the chunked framing as the body while reporting success.
//!   These are correctness settings, pinned by unit tests for every preset.
//! - Keys are `<prefix>/<key>`; keys were checked by [`check_key`].
//! - At most `max_concurrency` requests are in flight; the SDK's connection
//!   pool reuses connections.
//! - Retries (SDK standard mode, with backoff) cover throttling, 5xx and
//!   timeouts for GET and PUT. A retried PUT is harmless: the key contains
//!   the write's uuid, so it overwrites the same object and the index gets at
//!   most one entry (the module indexes only after `put` returns).
//! - A missing object (`NoSuchKey`) is a `Data` error naming the key, never
//!   retried. Credentials are never logged.
//! - With a bucket endpoint (a custom domain bound to the bucket), requests
//!   go to `<endpoint>/<prefix>/<key>`: the bucket is added neither to the
//!   host nor to the path, so the bucket's layout is the documented one.
//! - With server-side encryption on, every PUT (whole or multipart) asks
//!   for it: deltas, snapshots and segments alike.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use lake_shared::LakeError;
use tokio::sync::Semaphore;

use super::{check_key, Created, Store};

/// Which kind of server the settings target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// AWS S3: virtual-hosted style, endpoint resolved by the SDK.
    Aws,
    /// Aliyun OSS: virtual-hosted style, `https://s3.oss-<region>.aliyuncs.com`.
    Oss,
    /// MinIO and other local servers: path style, explicit endpoint.
    Minio,
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "aws" | "s3" => Ok(Provider::Aws),
            "oss" | "aliyun" => Ok(Provider::Oss),
            "minio" | "local" => Ok(Provider::Minio),
            other => Err(format!("unknown S3 provider '{other}' (aws, oss, minio)")),
        }
    }
}

/// Server-side encryption asked of the store for new objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// With the store's own keys (`AES256`).
    Aes256,
    /// With a KMS key: the given id, or the store's default KMS key.
    Kms(Option<String>),
}

/// Where credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The standard AWS chain: environment (STS tokens included), profile,
    /// instance role.
    Chain,
    /// An Alibaba Cloud ECS instance's RAM role, from the metadata service
    /// at `url`; the role given, or the instance's.
    EcsRamRole { url: String, role: Option<String> },
}

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bucket: String,
    pub prefix: String,
    pub provider: Provider,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Force path-style addressing (`--s3-path-style`).
    pub path_style: bool,
    /// The OSS endpoint inside Alibaba Cloud's network (`-internal`).
    pub internal: bool,
    /// The endpoint is the bucket (a custom domain bound to it).
    pub bucket_endpoint: bool,
    pub sse: Option<Sse>,
    pub credentials: CredentialSource,
    pub timeout: Duration,
    pub max_concurrency: usize,
    /// Values above this many bytes are uploaded in parts.
    pub multipart_threshold: usize,
    pub part_size: usize,
}

impl Settings {
    /// Parses `s3://bucket[/prefix]` and fills defaults.
    pub fn from_url(url: &str) -> Result<Settings, LakeError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| LakeError::invalid(format!("not an s3:// URL: '{url}'")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LakeError::invalid(
                "s3:// store needs a bucket: s3://<bucket>/<prefix>",
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            check_key(&prefix)?;
        }
        Ok(Settings {
            bucket: bucket.to_string(),
            prefix,
            provider: Provider::Aws,
            endpoint: None,
            region: None,
            path_style: false,
            internal: false,
            bucket_endpoint: false,
            sse: None,
            credentials: CredentialSource::Chain,
            timeout: Duration::from_secs(4),
            max_concurrency: 256,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
        })
    }
}

/// The client configuration a preset resolves to; pinned by unit tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Requests go to the endpoint itself, with no bucket in host or path.
    pub bucket_endpoint: bool,
    pub request_checksum: RequestChecksumCalculation,
    pub response_checksum: ResponseChecksumValidation,
}

/// Resolves a preset plus explicit flags (flags win).
pub fn resolve(s: &Settings) -> Result<Resolved, LakeError> {
    if s.internal && s.provider != Provider::Oss {
        return Err(LakeError::invalid(
            "--s3-internal picks Aliyun OSS's VPC endpoint: use it with --s3-provider oss",
        ));
    }
    if s.internal && s.endpoint.is_some() {
        return Err(LakeError::invalid(
            "--s3-internal derives the endpoint from --s3-region: drop --s3-endpoint, or --s3-internal",
        ));
    }
    if s.bucket_endpoint && s.endpoint.is_none() {
        return Err(LakeError::invalid(
            "--s3-bucket-endpoint needs --s3-endpoint: the URL of the custom domain bound to the bucket, e.g. https://data.example.com",
        ));
    }
    if s.bucket_endpoint && s.path_style {
        return Err(LakeError::invalid(
            "--s3-bucket-endpoint and --s3-path-style exclude each other: a bucket endpoint carries no bucket in the path",
        ));
    }
    let (endpoint, path_style) = match s.provider {
        Provider::Aws => (s.endpoint.clone(), s.path_style),
        Provider::Oss => {
            let internal = if s.internal { "-internal" } else { "" };
            let endpoint =
                match (&s.endpoint, &s.region) {
                    (Some(e), _) => e.clone(),
                    (None, Some(r)) => format!("https://s3.oss-{r}{internal}.aliyuncs.com"),
                    (None, None) => return Err(LakeError::invalid(
                        "--s3-provider oss needs --s3-region (e.g. cn-hangzhou) or --s3-endpoint",
                    )),
                };
            (Some(endpoint), s.path_style)
        }
        Provider::Minio => {
            let e = s.endpoint.clone().ok_or_else(|| {
                LakeError::invalid(
                    "--s3-provider minio needs --s3-endpoint (e.g. http://127.0.0.1:9000)",
                )
            })?;
            (Some(e), !s.bucket_endpoint)
        }
    };
    let region = s.region.clone().or_else(|| match s.provider {
        Provider::Minio => Some("us-east-1".to_string()),
        _ => None,
    });
    Ok(Resolved {
        endpoint,
        region,
        path_style,
        bucket_endpoint: s.bucket_endpoint,
        request_checksum: RequestChecksumCalculation::WhenRequired,
        response_checksum: ResponseChecksumValidation::WhenRequired,
    })
}

/// Builds the SDK client for resolved settings, credentials from `creds`.
pub async fn client(
    r: &Resolved,
    timeout: Duration,
    creds: &CredentialSource,
) -> Result<aws_sdk_s3::Client, LakeError> {
    Ok(aws_sdk_s3::Client::from_conf(
        client_config(r, timeout, creds).await?,
    ))
}

async fn client_config(
    r: &Resolved,
    timeout: Duration,
    creds: &CredentialSource,
) -> Result<aws_sdk_s3::Config, LakeError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &r.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let CredentialSource::EcsRamRole { url, role } = creds {
        let p = super::ecs::RamRoleProvider::new(url, role.clone()).map_err(LakeError::invalid)?;
        loader = loader.credentials_provider(p);
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(r.path_style)
        .request_checksum_calculation(r.request_checksum)
        .response_checksum_validation(r.response_checksum)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2).min(timeout))
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        );
    if shared.region().is_none() {
        b = b.region(Region::new("us-east-1"));
    }
    match &r.endpoint {
        Some(e) if r.bucket_endpoint => {
            let region = r
                .region
                .clone()
                .or_else(|| shared.region().map(|r| r.to_string()));
            b = b.endpoint_resolver(BucketEndpoint {
                url: e.trim_end_matches('/').to_string(),
                region: region.unwrap_or_else(|| "us-east-1".to_string()),
            });
        }
        Some(e) => b = b.endpoint_url(e),
        None => {}
    }
    Ok(b.build())
}

/// Resolves every request to the endpoint itself: a custom domain that is
/// bound to the bucket, so the bucket goes neither into the host nor into
/// the path. Signed like any S3 request (SigV4, `s3`, the region).
#[derive(Debug)]
struct BucketEndpoint {
    url: String,
    region: String,
}

impl aws_sdk_s3::config::endpoint::ResolveEndpoint for BucketEndpoint {
    fn resolve_endpoint<'a>(
        &'a self,
        _params: &'a aws_sdk_s3::config::endpoint::Params,
    ) -> aws_sdk_s3::config::endpoint::EndpointFuture<'a> {
        use aws_smithy_types::endpoint::{Endpoint, EndpointAuthScheme};
        aws_sdk_s3::config::endpoint::EndpointFuture::ready(Ok(Endpoint::builder()
            .url(self.url.clone())
            .auth_scheme(
                EndpointAuthScheme::with_capacity("sigv4", 3)
                    .put("disableDoubleEncoding", true)
                    .put("signingName", "s3".to_string())
                    .put("signingRegion", self.region.clone()),
            )
            .build()))
    }
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    settings: Settings,
    endpoint: Option<String>,
    limit: Arc<Semaphore>,
}

impl S3Store {
    /// A slot under the concurrency bound, held for one S3 operation.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, LakeError> {
        self.limit
            .acquire()
            .await
            .map_err(|_| LakeError::internal("store closed"))
    }

    pub async fn open(settings: Settings) -> Result<S3Store, LakeError> {
        let r = resolve(&settings)?;
        let client = client(&r, settings.timeout, &settings.credentials).await?;
        Ok(S3Store {
            client,
            endpoint: r.endpoint,
            limit: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
            settings,
        })
    }

    /// The `x-amz-server-side-encryption` value asked for, if any. Aliyun
    /// OSS names KMS `KMS`; AWS and MinIO name it `aws:kms`.
    fn sse_mode(&self) -> Option<ServerSideEncryption> {
        match &self.settings.sse {
            None => None,
            Some(Sse::Aes256) => Some(ServerSideEncryption::Aes256),
            Some(Sse::Kms(_)) if self.settings.provider == Provider::Oss => {
                Some(ServerSideEncryption::from("KMS"))
            }
            Some(Sse::Kms(_)) => Some(ServerSideEncryption::AwsKms),
        }
    }

    fn sse_key(&self) -> Option<String> {
        match &self.settings.sse {
            Some(Sse::Kms(id)) => id.clone(),
            _ => None,
        }
    }

    fn full_key(&self, key: &str) -> Result<String, LakeError> {
        check_key(key)?;
        Ok(if self.settings.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.settings.prefix)
        })
    }

    async fn put_multipart(&self, key: &str, body: Vec<u8>) -> Result<Created, String> {
        let s = &self.settings;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(key)
            .content_type("application/json")
            .set_server_side_encryption(self.sse_mode())
            .set_ssekms_key_id(self.sse_key())
            .send()
            .await
            .map_err(reason)?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let res = async {
            let mut parts = Vec::new();
            for (i, chunk) in body.chunks(s.part_size.max(5 << 20)).enumerate() {
                let n = i as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&s.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(reason)?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag)
                        .build(),
                );
            }
            let oss = s.provider == Provider::Oss;
            self.client
                .complete_multipart_upload()
                .bucket(&s.bucket)
                .key(key)
                .upload_id(&upload_id)
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .customize()
                .mutate_request(move |r| forbid_overwrite(r, oss))
                .send()
                .await
                .map(|_| Created::New)
                .or_else(created_or_reason)
        }
        .await;
        if res != Ok(Created::New) {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&s.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        res
    }
}

impl S3Store {
    /// One GET, of the whole object or of `len` bytes from `offset`. A range
    /// that starts past the end (`InvalidRange`, 416) is a `Data` error like
    /// a missing object: the uuid that led here points beyond what is stored.
    async fn get_object(&self, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, LakeError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        let mut req = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(&full);
        if let Some((offset, len)) = range {
            if len == 0 {
                return Ok(Vec::new());
            }
            req = req.range(format!("bytes={offset}-{}", offset + len - 1));
        }
        let out = req.send().await.map_err(|e| {
            let missing = e.as_service_error().is_some_and(|se| se.is_no_such_key());
            let past_end = e.raw_response().map(|r| r.status().as_u16()) == Some(416);
            if missing {
                LakeError::data(format!(
                    "object '{key}' is missing from {}",
                    self.describe()
                ))
            } else if past_end {
                LakeError::data(format!(
                    "object '{key}' in {} is shorter than the range asked for",
                    self.describe()
                ))
            } else {
                LakeError::unavailable(format!(
                    "cannot read object '{key}' from {}: {}",
                    self.describe(),
                    reason(e)
                ))
            }
        })?;
        let bytes = out.body.collect().await.map_err(|e| {
            LakeError::unavailable(format!("reading object '{key}' failed midway: {e}"))
        })?;
        Ok(bytes.into_bytes().to_vec())
    }
}

/// Aliyun OSS's own create-only switch (`x-oss-forbid-overwrite`), sent
/// beside `If-None-Match: *` on OSS, whose S3 API documents the header.
fn forbid_overwrite(r: &mut aws_sdk_s3::config::http::HttpRequest, oss: bool) {
    if oss {
        r.headers_mut().insert("x-oss-forbid-overwrite", "true");
    }
}

/// A conditional create refused because the key exists is
/// [`Created::Exists`]: S3 answers `412 PreconditionFailed` (or `409
/// ConditionalRequestConflict` while another conditional write of the key
/// is in progress), OSS `409 FileAlreadyExists`. Anything else is a failure.
fn created_or_reason<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Result<Created, String> {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or_default();
    if status == Some(412)
        || matches!(
            code,
            "PreconditionFailed" | "ConditionalRequestConflict" | "FileAlreadyExists"
        )
    {
        return Ok(Created::Exists);
    }
    Err(reason(e))
}

/// The most useful one-line reason of an SDK error: the service's code and
/// message when there is one, else the whole error chain.
fn reason<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> String {
    match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("no message")),
        None => DisplayErrorContext(&e).to_string(),
    }
}

#[async_trait]
impl Store for S3Store {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<Created, LakeError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        let res = if body.len() > self.settings.multipart_threshold {
            self.put_multipart(&full, body).await
        } else {
            let oss = self.settings.provider == Provider::Oss;
            self.client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(&full)
                .content_type("application/json")
                .if_none_match("*")
                .set_server_side_encryption(self.sse_mode())
                .set_ssekms_key_id(self.sse_key())
                .body(ByteStream::from(body))
                .customize()
                .mutate_request(move |r| forbid_overwrite(r, oss))
                .send()
                .await
                .map(|_| Created::New)
                .or_else(created_or_reason)
        };
        res.map_err(|why| {
            LakeError::unavailable(format!(
                "cannot store object '{key}' in {}: {why}",
                self.describe()
            ))
        })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError> {
        self.get_object(key, None).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, LakeError> {
        let body = self.get_object(key, Some((offset, len))).await?;
        if body.len() as u64 != len {
            return Err(LakeError::data(format!(
                "object '{key}' ends before bytes {offset}..{} (got {} of {len} bytes)",
                offset.saturating_add(len),
                body.len()
            )));
        }
        Ok(body)
    }

    async fn list(&self) -> Result<Vec<super::ObjectInfo>, LakeError> {
        let s = &self.settings;
        let prefix = if s.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", s.prefix)
        };
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&s.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    LakeError::unavailable(format!(
                        "cannot list {}: {}",
                        self.describe(),
                        reason(e)
                    ))
                })?;
            for o in page.contents() {
                let (Some(key), Some(modified)) = (o.key(), o.last_modified()) else {
                    continue;
                };
                let Some(rel) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let secs = modified.secs().max(0) as u64;
                out.push(super::ObjectInfo {
                    key: rel.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: std::time::UNIX_EPOCH + Duration::from_secs(secs),
                });
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        let full = self.full_key(key)?;
        let _permit = self.permit().await?;
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                LakeError::unavailable(format!("cannot delete object '{key}': {}", reason(e)))
            })
    }

    async fn health(&self) -> Result<(), LakeError> {
        self.client
            .head_bucket()
            .bucket(&self.settings.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let why = match e.raw_response().map(|r| r.status().as_u16()) {
                    Some(404) => "NoSuchBucket: bucket does not exist".to_string(),
                    Some(403) => "AccessDenied: access denied".to_string(),
                    Some(301) => {
                        "PermanentRedirect: 301 Moved: the bucket is in another region".to_string()
                    }
                    _ => reason(e),
                };
                let hint = crate::check::hint(&why)
                    .map(|h| format!(" (hint: {h})"))
                    .unwrap_or_default();
                LakeError::unavailable(format!(
                    "store {} is unavailable: {why}{hint}",
                    self.describe()
                ))
            })
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        let mut out = format!("s3://{}/{}", s.bucket, s.prefix);
        if let Some(e) = &self.endpoint {
            out.push_str(&format!(" at {e}"));
        }
        if s.bucket_endpoint {
            out.push_str(" (bucket endpoint)");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: Provider) -> Settings {
        let mut s = Settings::from_url("s3://bkt/some/prefix").unwrap();
        s.provider = provider;
        s
    }

    #[test]
    fn url_parsing() {
        let s = Settings::from_url("s3://bkt/a/b/").unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("bkt", "a/b"));
        let s = Settings::from_url("s3://bkt").unwrap();
        assert_eq!(s.prefix, "");
        assert!(Settings::from_url("s3:///x").is_err());
        assert!(Settings::from_url("s3://b/../x").is_err());
    }

    #[test]
    fn oss_preset_is_virtual_hosted_with_checksums_when_required() {
        let mut s = settings(Provider::Oss);
        s.region = Some("cn-hangzhou".into());
        let r = resolve(&s).unwrap();
        assert_eq!(
            r.endpoint.as_deref(),
            Some("https://s3.oss-cn-hangzhou.aliyuncs.com")
        );
        assert!(!r.path_style);
        assert_eq!(r.request_checksum, RequestChecksumCalculation::WhenRequired);
        assert_eq!(
            r.response_checksum,
            ResponseChecksumValidation::WhenRequired
        );
        assert!(
            resolve(&settings(Provider::Oss)).is_err(),
            "oss needs a region"
        );
    }

    #[test]
    fn oss_internal_endpoint_and_its_conflicts() {
        let mut s = settings(Provider::Oss);
        s.region = Some("cn-shanghai".into());
        s.internal = true;
        assert_eq!(
            resolve(&s).unwrap().endpoint.as_deref(),
            Some("https://s3.oss-cn-shanghai-internal.aliyuncs.com")
        );
        s.endpoint = Some("https://x".into());
        assert!(resolve(&s).is_err(), "internal and an explicit endpoint");
        let mut a = settings(Provider::Aws);
        a.internal = true;
        assert!(resolve(&a).is_err(), "internal is OSS's");
    }

    #[test]
    fn bucket_endpoint_needs_an_endpoint_and_drops_path_style() {
        for p in [Provider::Aws, Provider::Oss, Provider::Minio] {
            let mut s = settings(p);
            s.region = Some("cn-hangzhou".into());
            s.bucket_endpoint = true;
            assert!(resolve(&s).is_err(), "{p:?}: no endpoint");
            s.endpoint = Some("https://data.example.com".into());
            let r = resolve(&s).unwrap();
            assert!(r.bucket_endpoint && !r.path_style, "{p:?}: {r:?}");
            s.path_style = true;
            assert!(resolve(&s).is_err(), "{p:?}: with path style");
        }
    }

    /// Records the URI of the request about to be sent, then stops it.
    #[derive(Debug, Default, Clone)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Option<String>>>);

    impl aws_sdk_s3::config::Intercept for Capture {
        fn name(&self) -> &'static str {
            "capture"
        }
        fn read_before_transmit(
            &self,
            ctx: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
            _rc: &aws_sdk_s3::config::RuntimeComponents,
            _cfg: &mut aws_sdk_s3::config::ConfigBag,
        ) -> Result<(), aws_sdk_s3::error::BoxError> {
            if let Ok(mut u) = self.0.lock() {
                *u = Some(ctx.request().uri().to_string());
            }
            Err("captured; not sent".into())
        }
    }

    /// The URL each addressing mode sends a GET of key `k` to, captured
    /// before it leaves (no network, no DNS).
    #[tokio::test]
    async fn request_urls_per_addressing_mode() {
        async fn url_of(s: Settings) -> String {
            let r = resolve(&s).unwrap();
            let cfg = client_config(&r, Duration::from_secs(1), &CredentialSource::Chain)
                .await
                .unwrap();
            let capture = Capture::default();
            let cfg = cfg
                .to_builder()
                .interceptor(capture.clone())
                .credentials_provider(aws_sdk_s3::config::Credentials::new(
                    "k", "s", None, None, "test",
                ))
                .build();
            let client = aws_sdk_s3::Client::from_conf(cfg);
            let _ = client.get_object().bucket("bkt").key("pre/k").send().await;
            let uri = capture.0.lock().unwrap().clone().expect("a request");
            uri.split('?').next().unwrap_or_default().to_string()
        }
        let mut oss = settings(Provider::Oss);
        oss.region = Some("cn-hangzhou".into());
        assert_eq!(
            url_of(oss.clone()).await,
            "https://bkt.s3.oss-cn-hangzhou.aliyuncs.com/pre/k"
        );
        let mut domain = oss;
        domain.endpoint = Some("https://data.example.com/".into());
        domain.bucket_endpoint = true;
        assert_eq!(url_of(domain).await, "https://data.example.com/pre/k");
        let mut minio = settings(Provider::Minio);
        minio.endpoint = Some("http://127.0.0.1:9000".into());
        assert_eq!(url_of(minio).await, "http://127.0.0.1:9000/bkt/pre/k");
    }

    #[test]
    fn minio_preset_is_path_style_and_needs_an_endpoint() {
        let mut s = settings(Provider::Minio);
        assert!(resolve(&s).is_err());
        s.endpoint = Some("http://127.0.0.1:9000".into());
        let r = resolve(&s).unwrap();
        assert!(r.path_style);
        assert_eq!(r.region.as_deref(), Some("us-east-1"));
        assert_eq!(r.request_checksum, RequestChecksumCalculation::WhenRequired);
        assert_eq!(
            r.response_checksum,
            ResponseChecksumValidation::WhenRequired
        );
    }

    #[test]
    fn aws_preset_defaults_and_flags_win() {
        let r = resolve(&settings(Provider::Aws)).unwrap();
        assert_eq!((r.endpoint.clone(), r.path_style), (None, false));
        let mut s = settings(Provider::Aws);
        s.endpoint = Some("http://localhost:1".into());
        s.path_style = true;
        let r = resolve(&s).unwrap();
        assert_eq!(
            (r.endpoint.as_deref(), r.path_style),
            (Some("http://localhost:1"), true)
        );
        assert_eq!(r.request_checksum, RequestChecksumCalculation::WhenRequired);
    }

    #[tokio::test]
    async fn built_client_carries_the_checksum_settings() {
        for p in [Provider::Aws, Provider::Oss, Provider::Minio] {
            let mut s = settings(p);
            s.region = Some("cn-hangzhou".into());
            s.endpoint = (p == Provider::Minio).then(|| "http://127.0.0.1:9".into());
            let cfg = client_config(
                &resolve(&s).unwrap(),
                Duration::from_secs(1),
                &CredentialSource::Chain,
            )
            .await
            .unwrap();
            assert_eq!(
                cfg.request_checksum_calculation(),
                Some(&RequestChecksumCalculation::WhenRequired)
            );
            assert_eq!(
                cfg.response_checksum_validation(),
                Some(&ResponseChecksumValidation::WhenRequired)
            );
        }
    }
}
