//! Credentials of an Alibaba Cloud ECS instance's RAM role, from the
//! instance metadata service, for the `oss` provider.
//!
//! The metadata service answers `GET <base>/latest/meta-data/ram/security-credentials/`
//! with the role's name and `GET .../security-credentials/<role>` with
//! `{"Code":"Success","AccessKeyId":..,"AccessKeySecret":..,"SecurityToken":..,
//! "Expiration":"2026-11-26T12:00:00Z",..}`: temporary STS credentials that
//! the instance rotates before they expire.
//!
//! Invariants:
//! - Credentials are fetched again once they are within [`REFRESH_BEFORE`]
//!   of their expiry (or when the SDK asks after they expired), never used
//!   past their expiry.
//! - A failed refresh keeps the credentials held while they are still valid
//!   (the metadata service can blink) and says why on stderr; with nothing
//!   valid held it is an error naming the URL and the reason.
//! - An answer that is not the documented JSON, lacks a field, or carries
//!   an unparsable or past expiry is refused, never half-used.
//! - Secrets are never logged; `Debug` shows the key id's first characters.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{self, error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The metadata service of every ECS instance.
pub const DEFAULT_METADATA_URL: &str = "http://100.100.100.200";
/// Fetch new credentials this long before the held ones expire.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);
/// Deadline of one metadata request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const PATH: &str = "/latest/meta-data/ram/security-credentials/";

/// Temporary credentials of an ECS RAM role.
pub struct RamRoleProvider {
    /// `host:port` of the metadata service.
    host: String,
    /// The role, when given; else found from the metadata service.
    role: Option<String>,
    held: Mutex<Option<Credentials>>,
}

impl std::fmt::Debug for RamRoleProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamRoleProvider")
            .field("host", &self.host)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl RamRoleProvider {
    /// A provider asking the metadata service at `base_url` (plain
    /// `http://host[:port]`) for `role`'s credentials (or the instance's
    /// role when `None`).
    pub fn new(base_url: &str, role: Option<String>) -> Result<RamRoleProvider, String> {
        let host = base_url
            .strip_prefix("http://")
            .ok_or_else(|| format!("metadata URL '{base_url}' must start with http://"))?
            .trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "metadata URL '{base_url}' must be http://host[:port]"
            ));
        }
        let host = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(RamRoleProvider {
            host,
            role: role.filter(|r| !r.is_empty()),
            held: Mutex::new(None),
        })
    }

    /// Credentials valid for at least [`REFRESH_BEFORE`], fetched if needed.
    pub async fn credentials(&self) -> Result<Credentials, String> {
        let now = SystemTime::now();
        let held = self.held.lock().ok().and_then(|h| h.clone());
        if let Some(c) = &held {
            if c.expiry().is_some_and(|e| e > now + REFRESH_BEFORE) {
                return Ok(c.clone());
            }
        }
        match self.fetch().await {
            Ok(c) => {
                if let Ok(mut h) = self.held.lock() {
                    *h = Some(c.clone());
                }
                Ok(c)
            }
            Err(why) => match held {
                Some(c) if c.expiry().is_some_and(|e| e > now) => {
                    eprintln!(
                        "lake-sidecar: warning: cannot refresh the RAM role's credentials ({why}); the current ones stay in use until they expire"
                    );
                    Ok(c)
                }
                _ => Err(why),
            },
        }
    }

    async fn fetch(&self) -> Result<Credentials, String> {
        let role = match &self.role {
            Some(r) => r.clone(),
            None => {
                let body = self.get(PATH).await?;
                let role = body.lines().next().unwrap_or("").trim().to_string();
                if role.is_empty() || role.contains('/') || role.contains(' ') {
                    return Err(format!(
                        "the metadata service at http://{}{PATH} names no RAM role (is one attached to this instance?)",
                        self.host
                    ));
                }
                role
            }
        };
        let body = self.get(&format!("{PATH}{role}")).await?;
        parse(&body, SystemTime::now()).map_err(|e| {
            format!(
                "RAM role '{role}': unusable answer from http://{}{PATH}{role}: {e}",
                self.host
            )
        })
    }

    /// One plain HTTP/1.1 GET; the body of a 200 answer.
    async fn get(&self, path: &str) -> Result<String, String> {
        let url = format!("http://{}{path}", self.host);
        let raw = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut s = tokio::net::TcpStream::connect(&self.host)
                .await
                .map_err(|e| format!("cannot reach {url}: {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.host
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("cannot send to {url}: {e}"))?;
            let mut raw = Vec::new();
            s.take(1 << 20)
                .read_to_end(&mut raw)
                .await
                .map_err(|e| format!("cannot read from {url}: {e}"))?;
            Ok::<_, String>(raw)
        })
        .await
        .map_err(|_| format!("no answer from {url} within {REQUEST_TIMEOUT:?}"))??;
        let (status, body) = split_response(&raw).map_err(|e| format!("{url}: {e}"))?;
        if status != 200 {
            return Err(format!("{url} answered HTTP {status}"));
        }
        Ok(body)
    }
}

/// The status code and the (de-chunked) body of an HTTP/1.1 response.
fn split_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok((status, out));
        }
        let chunk = after.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        rest = after.get(size..).unwrap_or("").trim_start_matches("\r\n");
    }
}

/// Parses the metadata service's credentials document; refuses anything
/// but a successful, complete, unexpired one.
pub fn parse(body: &str, now: SystemTime) -> Result<Credentials, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e})"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("no {name}"))
    };
    if let Some(code) = v.get("Code").and_then(serde_json::Value::as_str) {
        if code != "Success" {
            return Err(format!("Code is '{code}'"));
        }
    }
    let expiry = parse_utc(field("Expiration")?)
        .ok_or_else(|| "Expiration is not a UTC time like 2026-11-26T12:00:00Z".to_string())?;
    if expiry <= now {
        return Err("the credentials have already expired".to_string());
    }
    Ok(Credentials::new(
        field("AccessKeyId")?,
        field("AccessKeySecret")?,
        Some(field("SecurityToken")?.to_string()),
        Some(expiry),
        "ecs-ram-role",
    ))
}

/// `YYYY-MM-DDTHH:MM:SSZ` as a time.
fn parse_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
}

impl ProvideCredentials for RamRoleProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn doc(key: &str, expires_in: Duration) -> String {
        let exp = SystemTime::now() + expires_in;
        let secs = exp.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days (inverse of parse_utc).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            r#"{{"AccessKeyId":"{key}","AccessKeySecret":"secret-{key}","SecurityToken":"token-{key}","Expiration":"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z","Code":"Success"}}"#,
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// A fake metadata service: answers each request with the next of
    /// `answers` (the last one repeats), or closes at once for `None`.
    async fn fake(answers: Vec<Option<(u16, String)>>) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let i = h.fetch_add(1, Ordering::SeqCst);
                let answer = answers[i.min(answers.len() - 1)].clone();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let path = String::from_utf8_lossy(&buf);
                if let Some((status, body)) = answer {
                    let body = if path.starts_with(&format!("GET {PATH} ")) {
                        "lake-role\n".to_string()
                    } else {
                        body
                    };
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                }
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn finds_the_role_then_fetches_its_credentials() {
        let (url, hits) = fake(vec![Some((200, doc("k1", Duration::from_secs(3600))))]).await;
        let p = RamRoleProvider::new(&url, None).unwrap();
        let c = p.credentials().await.unwrap();
        assert_eq!(c.access_key_id(), "k1");
        assert_eq!(c.secret_access_key(), "secret-k1");
        assert_eq!(c.session_token(), Some("token-k1"));
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "role name, then credentials"
        );
        // Held while far from expiry: no new request.
        p.credentials().await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[tokio::test]
    async fn refreshes_before_expiry() {
        let (url, _) = fake(vec![
            Some((200, doc("old", REFRESH_BEFORE / 2))),
            Some((200, doc("new", Duration::from_secs(3600)))),
        ])
        .await;
        let p = RamRoleProvider::new(&url, Some("lake-role".into())).unwrap();
        assert_eq!(p.credentials().await.unwrap().access_key_id(), "old");
        assert_eq!(p.credentials().await.unwrap().access_key_id(), "new");
    }

    #[tokio::test]
    async fn metadata_down_at_start_is_a_clear_error() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let p = RamRoleProvider::new(&url, Some("r".into())).unwrap();
        let e = p.credentials().await.unwrap_err();
        assert!(e.contains("cannot reach") && e.contains(&url[7..]), "{e}");
    }

    #[tokio::test]
    async fn metadata_down_later_keeps_valid_credentials_until_they_expire() {
        let (url, _) = fake(vec![Some((200, doc("held", REFRESH_BEFORE / 2))), None]).await;
        let p = RamRoleProvider::new(&url, Some("lake-role".into())).unwrap();
        assert_eq!(p.credentials().await.unwrap().access_key_id(), "held");
        // Due for refresh, the service is gone: the held ones stay.
        assert_eq!(p.credentials().await.unwrap().access_key_id(), "held");
        // Once they have expired, nothing is handed out.
        if let Ok(mut h) = p.held.lock() {
            let c = h.clone().unwrap();
            *h = Some(Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                c.session_token().map(str::to_string),
                Some(SystemTime::now() - Duration::from_secs(1)),
                "test",
            ));
        }
        assert!(p.credentials().await.is_err());
    }

    #[tokio::test]
    async fn malformed_answers_are_refused() {
        let now = SystemTime::now();
        for body in [
            "not json",
            r#"{"AccessKeyId":"a","AccessKeySecret":"b","Expiration":"2099-01-01T00:00:00Z"}"#,
            r#"{"AccessKeyId":"a","AccessKeySecret":"b","SecurityToken":"t","Expiration":"tomorrow"}"#,
            r#"{"AccessKeyId":"a","AccessKeySecret":"b","SecurityToken":"t","Expiration":"2001-01-01T00:00:00Z"}"#,
            r#"{"Code":"Failed","AccessKeyId":"a","AccessKeySecret":"b","SecurityToken":"t","Expiration":"2099-01-01T00:00:00Z"}"#,
        ] {
            assert!(parse(body, now).is_err(), "{body}");
        }
        let (url, _) = fake(vec![Some((404, "no such role".into()))]).await;
        let p = RamRoleProvider::new(&url, Some("x".into())).unwrap();
        let e = p.credentials().await.unwrap_err();
        assert!(e.contains("HTTP 404"), "{e}");
        let (url, _) = fake(vec![Some((200, "{}".into()))]).await;
        let e = RamRoleProvider::new(&url, Some("x".into()))
            .unwrap()
            .credentials()
            .await
            .unwrap_err();
        assert!(e.contains("unusable answer"), "{e}");
    }

    #[test]
    fn utc_times_parse_exactly() {
        let t = parse_utc("2026-11-26T12:00:00Z").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_795_694_400
        );
        assert!(parse_utc("2026-13-01T00:00:00Z").is_none());
        assert!(parse_utc("2026-11-26 12:00:00").is_none());
    }
}
