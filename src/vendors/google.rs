//! Google Workspace Email Audit API: Atom entries over HTTP with an OAuth 2.0 bearer token.
//!
//! The token is either given (`Credentials::Bearer`) or obtained for a service account with
//! domain-wide delegation: an RS256-signed JWT assertion exchanged at the token endpoint
//! (`urn:ietf:params:oauth:grant-type:jwt-bearer`), cached and refreshed before expiry and
//! once on a 401.
pub mod json;
pub mod recovery;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::body::encode_body;
use super::connection::{ConnectionParts, ItemCount};
use super::http::{execute, Outgoing, RawResponse};
use super::token::{request_token, TokenCache};
use super::{
    Body, ConnectionSettings, Credentials, Observer, PreparedRequest, Request, Response,
    VendorError, VendorKind,
};
use crate::secrets::Secrets;

const VENDOR: VendorKind = VendorKind::Google;

/// Token endpoint when neither the credentials nor the key file name one.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Scope of the Email Audit API, used when the connection names none.
pub const AUDIT_SCOPE: &str = "https://apps-apis.google.com/a/feeds/compliance/audit/";
/// Lifetime of the JWT assertion (Google's maximum).
const ASSERTION_LIFETIME: i64 = 3600;
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Why a service-account assertion could not be built (never quotes the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The key file's `private_key` does not read as an RSA key in PKCS#8 PEM.
    #[error("private_key is not a PKCS#8 PEM RSA private key")]
    BadPrivateKey,
    /// The claims or the signature could not be encoded.
    #[error("cannot encode the JWT")]
    Encoding,
}

/// The parts of a service-account key file that are used.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// The service account's address: the JWT's issuer.
    pub client_email: String,
    /// The RSA private key (PKCS#8 PEM) that signs the assertion.
    pub private_key_pem: String,
    /// The token endpoint the key file names (`token_uri`), if it names one.
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_pem", &"***")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

/// Parses a service-account JSON key file. Messages name the file, never its content.
pub fn parse_key_file(path: &Path, text: &str) -> Result<ServiceAccountKey, VendorError> {
    let bad = |what: String| VendorError::Config {
        vendor: VENDOR,
        message: format!("service-account key file {}: {what}", path.display()),
    };
    let v: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
        bad(format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if let Some(t) = v.get("type").and_then(Value::as_str) {
        if t != "service_account" {
            return Err(bad(format!("type is {t:?}, expected \"service_account\"")));
        }
    }
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let client_email = field("client_email").ok_or_else(|| bad("no client_email".into()))?;
    let private_key_pem = field("private_key").ok_or_else(|| bad("no private_key".into()))?;
    Ok(ServiceAccountKey {
        client_email,
        private_key_pem,
        token_uri: field("token_uri"),
    })
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The RS256 JWT assertion of the JWT bearer grant:
/// `{iss: client_email, sub: subject, scope: scopes joined by spaces, aud: token URL, iat,
/// exp: iat + 3600}`. `sub` is left out when `subject` is empty.
pub fn service_account_assertion(
    private_key_pem: &str,
    client_email: &str,
    subject: &str,
    scopes: &[String],
    audience: &str,
    iat: i64,
) -> Result<String, JwtError> {
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};

    let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_key_pem.trim())
        .map_err(|_| JwtError::BadPrivateKey)?;
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let mut claims = json!({
        "iss": client_email,
        "scope": scopes.join(" "),
        "aud": audience,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME,
    });
    if !subject.is_empty() {
        claims["sub"] = json!(subject);
    }
    let h = serde_json::to_vec(&header).map_err(|_| JwtError::Encoding)?;
    let c = serde_json::to_vec(&claims).map_err(|_| JwtError::Encoding)?;
    let signing_input = format!("{}.{}", b64url(&h), b64url(&c));
    let signer = SigningKey::<sha2::Sha256>::new(key);
    let signature = signer
        .try_sign(signing_input.as_bytes())
        .map_err(|_| JwtError::BadPrivateKey)?;
    Ok(format!("{signing_input}.{}", b64url(&signature.to_bytes())))
}

/// A service account acting for `subject`.
struct ServiceAccount {
    key_file: PathBuf,
    subject: String,
    scopes: Vec<String>,
    token_url: Option<String>,
}

/// Auth state of a Google connection.
pub struct Auth {
    kind: AuthKind,
}

enum AuthKind {
    Bearer(String),
    ServiceAccount {
        sa: ServiceAccount,
        cache: TokenCache,
    },
}

impl Auth {
    /// The auth of a Google connection: its bearer token, or its service-account key read
    /// and checked (a key file that cannot be used is a `Config` error naming the setting).
    pub fn new(settings: &ConnectionSettings, secrets: &Secrets) -> Result<Self, VendorError> {
        let kind = match &settings.credentials {
            Credentials::Bearer { token } => {
                secrets.add(token);
                secrets.add(format!("Bearer {token}"));
                AuthKind::Bearer(token.clone())
            }
            Credentials::GoogleServiceAccount {
                key_file,
                subject,
                scopes,
                token_url,
            } => AuthKind::ServiceAccount {
                sa: ServiceAccount {
                    key_file: key_file.clone(),
                    subject: subject.clone(),
                    scopes: if scopes.is_empty() {
                        vec![AUDIT_SCOPE.to_string()]
                    } else {
                        scopes.clone()
                    },
                    token_url: token_url.clone(),
                },
                cache: TokenCache::new(),
            },
            other => {
                return Err(VendorError::Config {
                    vendor: VENDOR,
                    message: format!(
                        "connection '{}': google connections take a bearer token or a \
                         service-account key file, not {other:?}",
                        settings.name
                    ),
                })
            }
        };
        Ok(Auth { kind })
    }
}

/// Exchanges a signed assertion of the service account for an access token; returns it
/// with its lifetime.
async fn fetch_sa_token(
    ctx: &ConnectionParts<'_>,
    sa: &ServiceAccount,
    observer: &dyn Observer,
    cancel: &CancellationToken,
) -> Result<(String, Duration), VendorError> {
    let (url, assertion) = sa_assertion(ctx, sa).await?;
    let form = vec![
        (
            "grant_type".to_string(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
        ),
        ("assertion".to_string(), assertion),
    ];
    let (token, lifetime) = request_token(
        ctx.client,
        VENDOR,
        &url,
        &form,
        ctx.settings.request_timeout,
        DEFAULT_TOKEN_LIFETIME,
        ctx.secrets,
        cancel,
    )
    .await
    .map_err(|e| match e {
        VendorError::Auth {
            vendor,
            status,
            message,
            retryable,
        } => VendorError::Auth {
            vendor,
            status,
            message: format!(
                "service account of key file {}: {message}",
                sa.key_file.display()
            ),
            retryable,
        },
        other => other,
    })?;
    observer.log(&format!(
        "google: obtained a service-account access token (valid {} s)",
        lifetime.as_secs()
    ));
    Ok((token, lifetime))
}

/// Reads the service account's key file and signs the assertion for the token endpoint
/// (the workflow's, the key file's, or Google's); both the key and the assertion become
/// secrets. Returns the endpoint and the assertion.
async fn sa_assertion(
    ctx: &ConnectionParts<'_>,
    sa: &ServiceAccount,
) -> Result<(url::Url, String), VendorError> {
    let text = tokio::fs::read_to_string(&sa.key_file)
        .await
        .map_err(|e| VendorError::Config {
            vendor: VENDOR,
            message: format!(
                "cannot read the service-account key file that credentials.service_account_file \
                 names ({}): {e}",
                sa.key_file.display()
            ),
        })?;
    let key = parse_key_file(&sa.key_file, &text)?;
    ctx.secrets.add(&key.private_key_pem);
    let token_url = sa
        .token_url
        .clone()
        .or_else(|| key.token_uri.clone())
        .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_string());
    let url = url::Url::parse(&token_url).map_err(|e| VendorError::Config {
        vendor: VENDOR,
        message: format!("invalid token URL: {e}"),
    })?;
    let assertion = service_account_assertion(
        &key.private_key_pem,
        &key.client_email,
        &sa.subject,
        &sa.scopes,
        &token_url,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| VendorError::Config {
        vendor: VENDOR,
        message: format!("service-account key file {}: {e}", sa.key_file.display()),
    })?;
    ctx.secrets.add(&assertion);
    Ok((url, assertion))
}

/// The Authorization header value (`Bearer ...`), fetching or refreshing the token as needed;
/// `stale` is a token that just got a 401.
pub(super) async fn authorization(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    stale: Option<&str>,
    cancel: &CancellationToken,
) -> Result<String, VendorError> {
    authorization_observed(ctx, auth, stale, &super::NoObserver, cancel).await
}

async fn authorization_observed(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    stale: Option<&str>,
    observer: &dyn Observer,
    cancel: &CancellationToken,
) -> Result<String, VendorError> {
    match &auth.kind {
        AuthKind::Bearer(token) => Ok(format!("Bearer {token}")),
        AuthKind::ServiceAccount { sa, cache } => {
            let stale_token = stale.and_then(|s| s.strip_prefix("Bearer "));
            let token = cache
                .get(stale_token, || fetch_sa_token(ctx, sa, observer, cancel))
                .await?;
            Ok(format!("Bearer {token}"))
        }
    }
}

fn outgoing(
    ctx: &ConnectionParts<'_>,
    req: &Request,
    authorization: &str,
) -> Result<Outgoing, VendorError> {
    let mut out = Outgoing::new(
        req.method.clone(),
        req.url.clone(),
        ctx.settings.request_timeout,
    );
    out.extra_headers = req.headers.clone();
    out.body = match &req.body {
        Body::Json(v) if json::is_json_api(&req.url) => {
            encode_body(VENDOR, &Body::Json(json::prune_empty(v)))?
        }
        other => encode_body(VENDOR, other)?,
    };
    if matches!(req.body, Body::Atom(_)) {
        out.set_header("Content-Type", "application/atom+xml");
    }
    out.set_header("Authorization", authorization);
    Ok(out)
}

pub(super) fn prepare(
    ctx: &ConnectionParts<'_>,
    _auth: &Auth,
    req: &Request,
) -> Result<PreparedRequest, VendorError> {
    Ok(outgoing(ctx, req, "Bearer <token>")?.to_prepared())
}

pub(super) async fn send(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    req: &Request,
    observer: &dyn Observer,
    cancel: &CancellationToken,
) -> Result<Response, VendorError> {
    let authz = authorization_observed(ctx, auth, None, observer, cancel).await?;
    let mut raw = execute(
        ctx.client,
        VENDOR,
        &outgoing(ctx, req, &authz)?,
        ctx.secrets,
        cancel,
    )
    .await?;
    if raw.status == 401 && matches!(auth.kind, AuthKind::ServiceAccount { .. }) {
        observer.log("google: access token rejected (401), fetching a new one");
        let fresh = authorization_observed(ctx, auth, Some(&authz), observer, cancel).await?;
        raw = execute(
            ctx.client,
            VENDOR,
            &outgoing(ctx, req, &fresh)?,
            ctx.secrets,
            cancel,
        )
        .await?;
    }
    if json::is_json_api(&req.url) {
        json::finish(raw, &req.method)
    } else {
        finish(raw, &req.method)
    }
}

/// The namespace of `apps:property`, declared by every Email Audit API entry and feed.
const APPS_NS: &str = "http://schemas.google.com/apps/2006";

/// What a 2xx answer must be.
const ATOM_EXPECTED: &str =
    "a Google Atom entry or feed (XML content type, declaring the apps namespace)";

/// Checks that a 2xx answer is the Email Audit API's: an Atom `entry` or `feed` with an XML
/// content type that declares the apps namespace. An empty body is accepted only for a
/// `DELETE` or a 204 (the vendor page documents no body for the delete call).
fn check_atom(raw: &RawResponse, body: &Value, method: &::http::Method) -> Result<(), VendorError> {
    if body.is_null() {
        return if *method == ::http::Method::DELETE || raw.status == 204 {
            Ok(())
        } else {
            Err(raw.unexpected(VENDOR, ATOM_EXPECTED))
        };
    }
    let kind = body.get("kind").and_then(Value::as_str);
    let atom = super::body::is_xml_mime(&raw.mime())
        && matches!(kind, Some("entry" | "feed"))
        && raw.text().contains(APPS_NS);
    if atom {
        Ok(())
    } else {
        Err(raw.unexpected(VENDOR, ATOM_EXPECTED))
    }
}

fn finish(raw: RawResponse, method: &::http::Method) -> Result<Response, VendorError> {
    if !raw.is_success() {
        return Err(raw.http_error(VENDOR));
    }
    let body = raw.parse_declared(VENDOR)?;
    check_atom(&raw, &body, method)?;
    let request_id = body
        .pointer("/properties/requestId")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Response {
        status: raw.status,
        headers: raw.headers,
        body,
        request_id,
    })
}

/// Follows the feed's `rel='next'` link (absolute, or relative to the request URL).
pub(super) fn next_page(req: &Request, resp: &Response) -> Option<Request> {
    if json::is_json_api(&req.url) {
        return json::next_page(req, resp);
    }
    let href = resp
        .body
        .get("next")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())?;
    let url = req.url.join(href.trim()).ok()?;
    // A next link pointing at the page just read is a next page all the same: the paging
    // loop check refuses it (it is not the last page, and taking it as one would hide the
    // rest of the feed).
    let mut next = req.clone();
    next.url = url;
    Some(next)
}

/// The `status` of a mailbox export (`properties.status` of its entry), as the vendor page
/// lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportStatus {
    /// Still being processed.
    Pending,
    /// Failed; no files were made.
    Error,
    /// Done; `fileUrl0..N-1` hold the encrypted files.
    Completed,
    /// Will be deleted by Google's next cleanup job.
    MarkedDelete,
    /// Deleted through the delete call.
    Deleted,
    /// Deleted by Google after the 3-week retention.
    Expired,
}

impl ExportStatus {
    /// The status of an export entry as parsed by this adapter (None: not an export entry).
    pub fn of(body: &Value) -> Option<ExportStatus> {
        let s = body.get("properties")?.get("status")?.as_str()?;
        Some(match s.trim() {
            "PENDING" => ExportStatus::Pending,
            "ERROR" => ExportStatus::Error,
            "COMPLETED" => ExportStatus::Completed,
            "MARKED_DELETE" => ExportStatus::MarkedDelete,
            "DELETED" => ExportStatus::Deleted,
            "EXPIRED" => ExportStatus::Expired,
            _ => return None,
        })
    }

    /// For a terminal status: what commonly causes it and what to do.
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            ExportStatus::Pending | ExportStatus::Completed => None,
            ExportStatus::Error => Some(
                "Google could not make the export. Common causes: no public key was uploaded for \
                 the domain, or Google rejected the key (it must be an ASCII-armored OpenPGP RSA \
                 public key able to encrypt). Upload it with workflows/google/upload-public-key.yaml \
                 (-i domain=... -i public_key_file=...), then run the export again: a new export \
                 request is created",
            ),
            ExportStatus::Expired => Some(
                "Google deletes the encrypted files 3 weeks after the export is ready; run the \
                 export again to create a new request, and download within 3 weeks",
            ),
            ExportStatus::MarkedDelete | ExportStatus::Deleted => Some(
                "the export's files were deleted (a delete call, e.g. \
                 workflows/google/delete-export.yaml); run the export again to create a new request",
            ),
        }
    }
}

/// What commonly causes the terminal state of the export in `resp`, and what to do.
pub(super) fn terminal_explanation(resp: &Response) -> Option<&'static str> {
    ExportStatus::of(&resp.body)?.explanation()
}

/// Concatenates the feed entries (and warnings) of all pages; the rest is the last page's.
pub(super) fn aggregate(pages: Vec<Response>) -> Response {
    if pages
        .iter()
        .any(|p| !is_atom(&p.body) && p.body.is_object())
    {
        return json::aggregate(pages);
    }
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let mut last: Option<Response> = None;
    for p in pages {
        if let Some(e) = p.body.get("entries").and_then(Value::as_array) {
            entries.extend(e.iter().cloned());
        }
        if let Some(w) = p.body.get("warnings").and_then(Value::as_array) {
            warnings.extend(w.iter().cloned());
        }
        last = Some(p);
    }
    let last = last.unwrap_or_else(|| Response::empty(200));
    let mut body = match &last.body {
        Value::Object(_) => last.body.clone(),
        _ => json!({"kind": "feed", "id": null, "links": []}),
    };
    body["entries"] = Value::Array(entries);
    body["warnings"] = Value::Array(warnings);
    body["next"] = Value::Null;
    Response { body, ..last }
}

/// Whether a parsed body came from Atom XML (its `kind` is the root element's name; Google
/// JSON bodies have no `kind`, or one such as `storage#object`).
fn is_atom(body: &Value) -> bool {
    body.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.contains('#'))
}

/// Records of an answer (see [`records`]); the API reports no total.
pub(super) fn count(resp: &Response) -> ItemCount {
    ItemCount {
        items: records(resp).len() as u64,
        reported_total: None,
    }
}

/// The records of an answer: a feed's entries (every page merged), or the one entry; for
/// Vault and Storage JSON, the items of its list field, or the object itself.
pub(super) fn records(resp: &Response) -> Vec<&Value> {
    match resp.body.get("kind").and_then(Value::as_str) {
        _ if !is_atom(&resp.body) && resp.body.is_object() => json::records(resp),
        Some("feed") => resp
            .body
            .get("entries")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |e| e.iter().collect()),
        Some(_) => vec![&resp.body],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    fn raw(status: u16, content_type: Option<&str>, body: &str) -> RawResponse {
        RawResponse {
            status,
            headers: content_type
                .map(|c| ("content-type".to_string(), c.to_string()))
                .into_iter()
                .collect(),
            bytes: body.as_bytes().to_vec(),
            secrets: Default::default(),
        }
    }

    #[test]
    fn only_atom_with_the_apps_namespace_is_an_answer() {
        let entry = "<entry xmlns='http://www.w3.org/2005/Atom' \
                     xmlns:apps='http://schemas.google.com/apps/2006'>\
                     <apps:property name='status' value='PENDING'/></entry>";
        let atom = Some("application/atom+xml; charset=UTF-8");
        let get = ::http::Method::GET;
        let r = finish(raw(201, atom, entry), &get).unwrap();
        assert_eq!(r.body["properties"]["status"], "PENDING");
        assert_eq!(count(&r).items, 1);
        for (ct, body) in [
            (Some("text/html"), "<html><title>Sign in</title></html>"),
            (atom, "<html><title>Sign in</title></html>"),
            (atom, "<entry><id>x</id></entry>"),
            (Some("application/json"), "{}"),
            (atom, "sign in"),
            (None, ""),
        ] {
            let err = finish(raw(200, ct, body), &get).unwrap_err();
            assert!(
                matches!(err, VendorError::Unexpected { status: 200, .. }),
                "{body}: {err}"
            );
        }
        assert!(finish(raw(200, None, ""), &::http::Method::DELETE).is_ok());
        assert!(finish(raw(204, None, ""), &get).is_ok());
    }
}
