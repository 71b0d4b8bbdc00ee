//! A ready connection: one HTTP client, cached tokens, and dispatch to the vendor adapter.
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{
    google, mailstore, mimecast, plain, ConnectionSettings, Credentials, Lookup, Observer,
    PreparedRequest, Recovery, Request, Response, VendorError, VendorKind,
};
use crate::secrets::Secrets;

/// Time limit of one HTTP attempt when the workflow sets none.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// MailStore's `millisecondsTimeout` for each `get-status` long poll.
const STATUS_POLL_TIMEOUT: Duration = Duration::from_secs(5);

impl ConnectionSettings {
    /// Settings with no base URL, no credentials, verified TLS and the default timeouts;
    /// set the fields a workflow gives with struct update syntax.
    pub fn new(name: impl Into<String>, kind: VendorKind) -> Self {
        ConnectionSettings {
            name: name.into(),
            kind,
            base_url: None,
            credentials: Credentials::None,
            ca_file: None,
            tls_pins: Vec::new(),
            insecure_tls: false,
            credential_origins: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            status_poll_timeout: STATUS_POLL_TIMEOUT,
            loopback_only: false,
            base_url_vars: Vec::new(),
        }
    }

    /// The connection of steps that name none: plain HTTP to absolute URLs.
    pub fn plain() -> Self {
        Self::new("url", VendorKind::Http)
    }

    /// Whether a request to `url` may carry this connection's credentials: only when `url`
    /// has the scheme, host and port of `base_url` or of one of `credential_origins`.
    pub fn sends_credentials_to(&self, url: &url::Url) -> bool {
        let origin = url.origin();
        origin.is_tuple()
            && (self.base_url.as_ref().is_some_and(|b| b.origin() == origin)
                || self.credential_origins.contains(&origin))
    }

    /// True when the connection has credentials and `url` may not receive them.
    pub fn withholds_credentials_from(&self, url: &url::Url) -> bool {
        !matches!(self.credentials, Credentials::None) && !self.sends_credentials_to(url)
    }
}

impl VendorKind {
    /// How this vendor's answers announce another page, for messages.
    pub fn next_page_signal(self) -> &'static str {
        match self {
            VendorKind::Mimecast => "Mimecast `meta.pagination.next`",
            VendorKind::Google => "Google Atom `<link rel='next'>`",
            VendorKind::Http => "HTTP `Link: <...>; rel=\"next\"`",
            VendorKind::MailStore => "none",
        }
    }
}

/// How to page through results (`call.paginate`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pagination {
    /// Page size to ask for (Mimecast `meta.pagination.pageSize`), vendor default when None.
    pub page_size: Option<u32>,
    /// Stop after this many pages (None: follow until the vendor says there is no next page).
    pub max_pages: Option<u32>,
}

/// How many records a (merged) response holds, counted the vendor's way, and the total the
/// vendor reports for the whole result, when it reports one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemCount {
    /// Records in the body (Mimecast `data` items, Google feed entries, JSON array items).
    pub items: u64,
    /// Mimecast `meta.pagination.totalCount`; None when the vendor gives no total.
    pub reported_total: Option<u64>,
}

/// Where [`Connection::aggregate`] puts the concatenated items of all pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemSlot {
    /// The merged body is the array of items (`Link`-paged JSON).
    Root,
    /// A top-level field of the merged body holds them (Mimecast `data`).
    Field(&'static str),
}

/// The items one page contributes to the merged answer ([`Connection::take_page_items`]).
#[derive(Debug)]
pub struct PageItems {
    /// Where the merged body holds them.
    pub slot: ItemSlot,
    /// The page body itself is the one item (a non-array `Link`-paged body): every page of
    /// a result must agree, as the merge rule is chosen over all of them.
    pub whole_page: bool,
    /// The items, in order.
    pub items: Vec<serde_json::Value>,
}

/// A connection built from rendered settings. Cheap to clone; clones share token caches.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ConnectionSettings,
    secrets: Secrets,
    client: reqwest::Client,
    adapter: Adapter,
}

/// What a vendor adapter gets from its connection: settings, secrets and the HTTP client.
pub(super) struct ConnectionParts<'a> {
    pub settings: &'a ConnectionSettings,
    pub secrets: &'a Secrets,
    pub client: &'a reqwest::Client,
}

/// Per-vendor auth state.
enum Adapter {
    Http(plain::Auth),
    Mimecast(mimecast::Auth),
    MailStore(mailstore::Auth),
    Google(google::Auth),
}

impl Connection {
    /// Builds the HTTP client (TLS roots, `ca_file`, `insecure_tls`) and the auth state.
    /// Derived secrets (tokens) are registered with `secrets` as soon as they are obtained.
    pub fn new(settings: ConnectionSettings, secrets: Secrets) -> Result<Self, VendorError> {
        let adapter = match settings.kind {
            VendorKind::Http => Adapter::Http(plain::Auth::new(&settings, &secrets)?),
            VendorKind::Mimecast => Adapter::Mimecast(mimecast::Auth::new(&settings, &secrets)?),
            VendorKind::MailStore => Adapter::MailStore(mailstore::Auth::new(&settings, &secrets)?),
            VendorKind::Google => Adapter::Google(google::Auth::new(&settings, &secrets)?),
        };
        let client = super::client::build_client(&settings)?;
        Ok(Connection {
            inner: Arc::new(Inner {
                settings,
                secrets,
                client,
                adapter,
            }),
        })
    }

    /// The settings the connection was built from (name, vendor, base URL, credentials...).
    pub fn settings(&self) -> &ConnectionSettings {
        &self.inner.settings
    }

    fn ctx(&self) -> ConnectionParts<'_> {
        ConnectionParts {
            settings: &self.inner.settings,
            secrets: &self.inner.secrets,
            client: &self.inner.client,
        }
    }

    /// Sends one attempt: fresh signature/date/request id, auth (token fetched or refreshed as
    /// needed, once more on a 401), vendor encoding, response parsing, error mapping. A MailStore
    /// long-running process is followed through `get-status` until it ends (calling
    /// `CancelAsync` when `cancel` fires).
    pub async fn send(
        &self,
        req: &Request,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Response, VendorError> {
        let ctx = self.ctx();
        if cancel.is_cancelled() {
            return Err(VendorError::Cancelled {
                vendor: self.inner.settings.kind,
            });
        }
        if self.inner.settings.withholds_credentials_from(&req.url) {
            let anonymous = self.anonymous(req);
            observer.log(&withheld_note(&self.inner.settings, &req.url));
            let note = withheld_note(&self.inner.settings, &req.url);
            return plain::send(&ctx, &plain::Auth::anonymous(), &anonymous, cancel)
                .await
                .map_err(|e| mask_error(explain_denial(e, &note), &self.inner.secrets));
        }
        let result = match &self.inner.adapter {
            Adapter::Http(a) => plain::send(&ctx, a, req, cancel).await,
            Adapter::Mimecast(a) => mimecast::send(&ctx, a, req, observer, cancel).await,
            Adapter::MailStore(a) => mailstore::send(&ctx, a, req, observer, cancel).await,
            Adapter::Google(a) => google::send(&ctx, a, req, observer, cancel).await,
        };
        result.map_err(|e| {
            let e = super::wrong_server::explain_wrong_server(e, &self.inner.settings, &req.url);
            mask_error(e, &self.inner.secrets)
        })
    }

    /// The request as it would go on the wire, for `--dry-run` (no token is fetched; auth
    /// headers show a placeholder). The caller masks secrets.
    pub fn prepare(&self, req: &Request) -> Result<PreparedRequest, VendorError> {
        let ctx = self.ctx();
        if self.inner.settings.withholds_credentials_from(&req.url) {
            return plain::prepare(&ctx, &plain::Auth::anonymous(), &self.anonymous(req));
        }
        match &self.inner.adapter {
            Adapter::Http(a) => plain::prepare(&ctx, a, req),
            Adapter::Mimecast(a) => mimecast::prepare(&ctx, a, req),
            Adapter::MailStore(a) => mailstore::prepare(&ctx, a, req),
            Adapter::Google(a) => google::prepare(&ctx, a, req),
        }
    }

    /// False for requests that change something when repeated (Google: creating an export,
    /// uploading the key). Other vendors' requests count as idempotent unless the workflow
    /// says otherwise (`call.idempotent: false`).
    pub fn idempotent(&self, req: &Request) -> bool {
        match self.inner.settings.kind {
            VendorKind::Google => google::recovery::idempotent(req),
            _ => true,
        }
    }

    /// How to find out whether `req`, possibly sent at `since`, was carried out.
    pub fn recovery(&self, req: &Request, since: chrono::DateTime<chrono::Utc>) -> Recovery {
        match self.inner.settings.kind {
            VendorKind::Google => google::recovery::recovery(req, since),
            _ => Recovery::Unknown,
        }
    }

    /// Where to look for a request like `req` made by an earlier run whose state was lost
    /// (None: the vendor offers no way, or repeating it is harmless).
    pub fn adoption(&self, req: &Request) -> Option<Lookup> {
        match self.inner.settings.kind {
            VendorKind::Google => google::recovery::adoption(req, chrono::Utc::now()),
            _ => None,
        }
    }

    /// Whether a listed entry found for `original` can still be continued (not failed,
    /// expired or deleted).
    pub fn usable(&self, original: &Request, entry: &serde_json::Value) -> bool {
        match self.inner.settings.kind {
            VendorKind::Google => google::recovery::usable(original, entry),
            _ => false,
        }
    }

    /// A listed entry's status and creation time, for the log and the manifest.
    pub fn describe_entry(&self, entry: &serde_json::Value) -> String {
        google::recovery::describe(entry)
    }

    /// The entries of a lookup page that are the request looked for.
    pub fn lookup_matches(&self, lookup: &Lookup, page: &Response) -> Vec<serde_json::Value> {
        match self.inner.settings.kind {
            VendorKind::Google => google::recovery::matches(&lookup.original, page, lookup.since),
            _ => vec![],
        }
    }

    /// The first page's request (Mimecast: adds `meta.pagination.pageSize`).
    pub fn first_page(&self, req: &Request, p: &Pagination) -> Request {
        match self.inner.settings.kind {
            VendorKind::Mimecast => mimecast::first_page(req, p),
            _ => req.clone(),
        }
    }

    /// The next page's request after `resp`, or None when this was the last page
    /// (Mimecast `meta.pagination.next`, Google `<link rel='next'>`, http `Link: rel="next"`).
    ///
    /// `p.max_pages` is not applied here (this function does not know how many pages were
    /// fetched); the caller stops after that many pages.
    pub fn next_page(&self, req: &Request, resp: &Response, p: &Pagination) -> Option<Request> {
        let _ = p;
        match self.inner.settings.kind {
            VendorKind::Mimecast => mimecast::next_page(req, resp),
            VendorKind::Google => google::next_page(req, resp),
            VendorKind::Http => plain::next_page(req, resp),
            VendorKind::MailStore => None,
        }
    }

    /// Merges all pages into one response (Mimecast: `data` items concatenated; Google: feed
    /// entries concatenated); the last page's status and headers are kept.
    pub fn aggregate(&self, pages: Vec<Response>) -> Response {
        match self.inner.settings.kind {
            VendorKind::Mimecast => mimecast::aggregate(pages),
            VendorKind::Google => google::aggregate(pages),
            VendorKind::Http | VendorKind::MailStore => plain::aggregate(pages),
        }
    }

    /// Takes out of one page the items [`Connection::aggregate`] concatenates, so the pages
    /// of a long result can be saved as they arrive instead of held. None: this vendor's
    /// pages are merged in memory (Google, MailStore).
    pub fn take_page_items(&self, page: &mut Response) -> Option<PageItems> {
        match self.inner.settings.kind {
            VendorKind::Mimecast => Some(PageItems {
                slot: ItemSlot::Field("data"),
                whole_page: false,
                items: mimecast::take_page_items(page),
            }),
            VendorKind::Http => {
                let (array, items) = plain::take_page_items(page);
                Some(PageItems {
                    slot: ItemSlot::Root,
                    whole_page: !array,
                    items,
                })
            }
            VendorKind::Google | VendorKind::MailStore => None,
        }
    }

    /// For a response showing a vendor's terminal state (a Google export ended `ERROR`): what
    /// commonly causes it and what to do, when the adapter knows.
    pub fn terminal_explanation(&self, resp: &Response) -> Option<&'static str> {
        if self.inner.settings.kind == VendorKind::Google {
            google::terminal_explanation(resp)
        } else {
            None
        }
    }

    /// The records of a response (one page, or all pages after [`Connection::aggregate`]) and
    /// the total the vendor reports, for the completeness check and the manifest.
    pub fn count(&self, resp: &Response) -> ItemCount {
        match self.inner.settings.kind {
            VendorKind::Mimecast => mimecast::count(resp),
            VendorKind::Google => google::count(resp),
            VendorKind::Http | VendorKind::MailStore => plain::count(resp),
        }
    }

    /// The records of a response as one flat list (Mimecast `data` items, through wrappers
    /// such as `{"messages": [...]}`; Google feed entries; JSON array items): what
    /// [`Connection::count`] counts, offered to workflows as a call's `records` output.
    pub fn records<'r>(&self, resp: &'r Response) -> Vec<&'r serde_json::Value> {
        match self.inner.settings.kind {
            VendorKind::Mimecast => mimecast::records(resp),
            VendorKind::Google => google::records(resp),
            VendorKind::Http | VendorKind::MailStore => plain::records(resp),
        }
    }

    /// `req` as it goes to an origin that may not receive the credentials: the workflow's
    /// headers without those that carry credentials (auth and cookie headers, any value
    /// holding a secret).
    fn anonymous(&self, req: &Request) -> Request {
        let mut anonymous = req.clone();
        anonymous.headers.retain(|(name, value)| {
            let n = name.to_ascii_lowercase();
            !matches!(
                n.as_str(),
                "authorization" | "proxy-authorization" | "cookie"
            ) && !n.starts_with("x-mc-")
                && !self.inner.secrets.contains_secret(value)
        });
        anonymous
    }

    /// Headers that authorize a plain GET of `url` (Google bearer token), fetching or
    /// refreshing the token as needed; none when `url` is not on an origin the credentials
    /// may go to (see [`ConnectionSettings::sends_credentials_to`]).
    pub async fn download_headers(
        &self,
        url: &url::Url,
    ) -> Result<reqwest::header::HeaderMap, VendorError> {
        if self.inner.settings.withholds_credentials_from(url) {
            return Ok(reqwest::header::HeaderMap::new());
        }
        let ctx = self.ctx();
        let cancel = CancellationToken::new();
        let value = match &self.inner.adapter {
            Adapter::Http(a) => a.header().map(str::to_string),
            Adapter::MailStore(a) => Some(a.header().to_string()),
            Adapter::Mimecast(a) => mimecast::download_authorization(&ctx, a, &cancel).await?,
            Adapter::Google(a) => Some(google::authorization(&ctx, a, None, &cancel).await?),
        };
        let mut map = reqwest::header::HeaderMap::new();
        if let Some(v) = value {
            let mut hv =
                reqwest::header::HeaderValue::from_str(&v).map_err(|_| VendorError::Config {
                    vendor: self.inner.settings.kind,
                    message: "the credentials do not fit in an Authorization header".into(),
                })?;
            hv.set_sensitive(true);
            map.insert(reqwest::header::AUTHORIZATION, hv);
        }
        Ok(map)
    }

    /// The HTTP client of this connection (for downloads).
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }
}

/// The log line of a request sent without the connection's credentials.
pub fn withheld_note(settings: &ConnectionSettings, url: &url::Url) -> String {
    format!(
        "{} is not the origin of connection `{}`: sent without its credentials (add it to \
         `credential_origins` if the vendor documents that host)",
        super::redirect::origin_text(url),
        settings.name
    )
}

/// A 401/403 of a request sent without credentials says why they were left out.
fn explain_denial(err: VendorError, note: &str) -> VendorError {
    match err {
        VendorError::Http {
            vendor,
            status: status @ (401 | 403),
            message,
            retry_after,
            body,
        } => VendorError::Http {
            vendor,
            status,
            message: format!("{message} ({note})"),
            retry_after,
            body,
        },
        other => other,
    }
}

/// Masks every registered secret in the texts of an error (defence in depth: adapters never
/// put secrets in messages in the first place).
fn mask_error(err: VendorError, secrets: &Secrets) -> VendorError {
    match err {
        VendorError::Transport {
            vendor,
            message,
            timeout,
        } => VendorError::Transport {
            vendor,
            message: secrets.mask(&message),
            timeout,
        },
        VendorError::Http {
            vendor,
            status,
            message,
            retry_after,
            body,
        } => VendorError::Http {
            vendor,
            status,
            message: secrets.mask(&message),
            retry_after,
            body: body.map(|b| Box::new(secrets.mask_json(&b))),
        },
        VendorError::Vendor {
            vendor,
            status,
            codes,
            message,
            details,
            retryable,
            body,
        } => VendorError::Vendor {
            vendor,
            status,
            codes,
            message: secrets.mask(&message),
            details: details.map(|d| secrets.mask(&d)),
            retryable,
            body: body.map(|b| Box::new(secrets.mask_json(&b))),
        },
        VendorError::Auth {
            vendor,
            status,
            message,
            retryable,
        } => VendorError::Auth {
            vendor,
            status,
            message: secrets.mask(&message),
            retryable,
        },
        VendorError::Unexpected {
            vendor,
            status,
            content_type,
            first_line,
            expected,
        } => VendorError::Unexpected {
            vendor,
            status,
            content_type: content_type.map(|c| secrets.mask(&c)),
            first_line: secrets.mask(&first_line),
            expected,
        },
        VendorError::Parse { vendor, message } => VendorError::Parse {
            vendor,
            message: secrets.mask(&message),
        },
        VendorError::Config { vendor, message } => VendorError::Config {
            vendor,
            message: secrets.mask(&message),
        },
        e @ VendorError::Cancelled { .. } => e,
    }
}
