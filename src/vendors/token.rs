//! A cached OAuth access token shared by the clones of a connection and concurrent tasks.
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::body::{form_encode, Encoded};
use super::errors::error_message;
use super::http::{execute, redact_url, Outgoing};
use super::{VendorError, VendorKind};
use crate::secrets::Secrets;

/// Refresh this long before the token expires (at most half its lifetime).
pub(super) const REFRESH_MARGIN: Duration = Duration::from_secs(60);

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// One token behind an async mutex: the first task that needs a (new) token fetches it while
/// the others wait, then all of them use it.
#[derive(Default)]
pub(super) struct TokenCache {
    slot: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenCache {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// The cached token, or a fresh one from `fetch` (token, lifetime) when there is none, it
    /// is about to expire, or it is `stale` (the token a request just got a 401 with; when
    /// another task already replaced it, the replacement is returned without fetching).
    pub(super) async fn get<F, Fut>(
        &self,
        stale: Option<&str>,
        fetch: F,
    ) -> Result<String, VendorError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), VendorError>>,
    {
        let mut guard = self.slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if Instant::now() < c.refresh_at && stale != Some(c.token.as_str()) {
                return Ok(c.token.clone());
            }
        }
        *guard = None;
        let (token, lifetime) = fetch().await?;
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }
}

/// Reads `expires_in` (a number or a numeric string) from a token answer.
pub(super) fn expires_in(body: &serde_json::Value, default: Duration) -> Duration {
    let v = body.get("expires_in");
    let secs = v.and_then(serde_json::Value::as_f64).or_else(|| {
        v.and_then(|s| s.as_str())
            .and_then(|s| s.trim().parse().ok())
    });
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => {
            Duration::from_secs_f64(s.min(365.0 * 24.0 * 3600.0))
        }
        _ => default,
    }
}

/// Posts a form to an OAuth token endpoint and reads `access_token` / `expires_in`.
///
/// The token and its `Bearer` header are registered as secrets at once. Failures are
/// [`VendorError::Auth`] carrying the status and the server's error description; transport
/// failures, 429 and 5xx are retryable, other statuses are not. Nothing of the form (client
/// secret, assertion) ever appears in a message.
#[allow(
    clippy::too_many_arguments,
    reason = "the inputs of one token request, shared by two auth schemes that hold them differently"
)]
pub(super) async fn request_token(
    client: &reqwest::Client,
    vendor: VendorKind,
    url: &url::Url,
    form: &[(String, String)],
    timeout: Duration,
    default_lifetime: Duration,
    secrets: &Secrets,
    cancel: &CancellationToken,
) -> Result<(String, Duration), VendorError> {
    let mut out = Outgoing::new(::http::Method::POST, url.clone(), timeout);
    out.body = Some(Encoded {
        content_type: Some("application/x-www-form-urlencoded".into()),
        bytes: form_encode(form).into_bytes(),
    });
    out.set_header("Accept", "application/json");
    let raw = match execute(client, vendor, &out, secrets, cancel).await {
        Ok(raw) => raw,
        Err(VendorError::Transport { message, .. }) => {
            return Err(VendorError::Auth {
                vendor,
                status: None,
                message: format!("token request failed: {message}"),
                retryable: true,
            })
        }
        Err(e) => return Err(e),
    };
    if !raw.is_success() {
        let body = raw.parse_lenient();
        return Err(VendorError::Auth {
            vendor,
            status: Some(raw.status),
            message: format!(
                "token endpoint {} answered HTTP {}: {}",
                redact_url(url),
                raw.status,
                error_message(&body, &raw.text(), raw.content_type(), secrets)
            ),
            retryable: crate::retry::is_retryable_status(raw.status),
        });
    }
    let body = raw.parse().map_err(|e| VendorError::Auth {
        vendor,
        status: Some(raw.status),
        message: format!("token endpoint {}: {e}", redact_url(url)),
        retryable: false,
    })?;
    let token = body
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| VendorError::Auth {
            vendor,
            status: Some(raw.status),
            message: format!(
                "token endpoint {} answered without an access_token",
                redact_url(url)
            ),
            retryable: false,
        })?
        .to_string();
    secrets.add(&token);
    secrets.add(format!("Bearer {token}"));
    Ok((token, expires_in(&body, default_lifetime)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn fetches_once_and_refreshes_when_stale() {
        let cache = Arc::new(TokenCache::new());
        let n = Arc::new(AtomicU32::new(0));
        let fetch = |n: Arc<AtomicU32>| async move {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Ok((format!("t{i}"), Duration::from_secs(1800)))
        };
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let n = n.clone();
            tasks.push(tokio::spawn(async move {
                cache.get(None, || fetch(n)).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "t0");
        }
        assert_eq!(n.load(Ordering::SeqCst), 1);
        // A 401 with t0 refreshes; a late 401 with t0 reuses t1.
        assert_eq!(
            cache.get(Some("t0"), || fetch(n.clone())).await.unwrap(),
            "t1"
        );
        assert_eq!(
            cache.get(Some("t0"), || fetch(n.clone())).await.unwrap(),
            "t1"
        );
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_lived_tokens_are_refetched() {
        let cache = TokenCache::new();
        let n = AtomicU32::new(0);
        for _ in 0..2 {
            cache
                .get(None, || async {
                    n.fetch_add(1, Ordering::SeqCst);
                    Ok(("t".to_string(), Duration::ZERO))
                })
                .await
                .unwrap();
        }
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn expires_in_forms() {
        let d = Duration::from_secs(7);
        assert_eq!(
            expires_in(&serde_json::json!({"expires_in": 1800}), d),
            Duration::from_secs(1800)
        );
        assert_eq!(
            expires_in(&serde_json::json!({"expires_in": "60"}), d),
            Duration::from_secs(60)
        );
        assert_eq!(expires_in(&serde_json::json!({}), d), d);
        assert_eq!(expires_in(&serde_json::json!({"expires_in": -5}), d), d);
    }
}
