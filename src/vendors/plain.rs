//! The plain `http` adapter: no auth, Basic or Bearer; pagination through `Link: rel="next"`.
use base64::Engine as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::body::encode_body;
use super::connection::{ConnectionParts, ItemCount};
use super::http::{execute, Outgoing};
use super::link::link_next;
use super::{
    ConnectionSettings, Credentials, PreparedRequest, Request, Response, VendorError, VendorKind,
};
use crate::secrets::Secrets;

const VENDOR: VendorKind = VendorKind::Http;

/// The Authorization header of a plain connection, if any.
pub(super) struct Auth {
    header: Option<String>,
    placeholder: Option<&'static str>,
}

impl Auth {
    pub(super) fn new(
        settings: &ConnectionSettings,
        secrets: &Secrets,
    ) -> Result<Self, VendorError> {
        match &settings.credentials {
            Credentials::None => Ok(Auth {
                header: None,
                placeholder: None,
            }),
            Credentials::Basic { username, password } => {
                let header = basic_header(username, password, secrets);
                Ok(Auth {
                    header: Some(header),
                    placeholder: Some("Basic <credentials>"),
                })
            }
            Credentials::Bearer { token } => {
                secrets.add(token);
                let header = format!("Bearer {token}");
                secrets.add(&header);
                Ok(Auth {
                    header: Some(header),
                    placeholder: Some("Bearer <token>"),
                })
            }
            other => Err(VendorError::Config {
                vendor: VENDOR,
                message: format!(
                    "connection '{}': http connections take no, basic or bearer credentials, not {other:?}",
                    settings.name
                ),
            }),
        }
    }

    /// No credentials: a request to an origin the connection's credentials may not go to.
    pub(super) fn anonymous() -> Self {
        Auth {
            header: None,
            placeholder: None,
        }
    }

    pub(super) fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }
}

/// `Basic base64(user:password)`, with the encoded form and the header registered as secrets.
pub(super) fn basic_header(username: &str, password: &str, secrets: &Secrets) -> String {
    secrets.add(password);
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    secrets.add(&encoded);
    let header = format!("Basic {encoded}");
    secrets.add(&header);
    header
}

fn outgoing(
    ctx: &ConnectionParts<'_>,
    req: &Request,
    auth: Option<&str>,
) -> Result<Outgoing, VendorError> {
    let mut out = Outgoing::new(
        req.method.clone(),
        req.url.clone(),
        ctx.settings.request_timeout,
    );
    out.extra_headers = req.headers.clone();
    out.body = encode_body(VENDOR, &req.body)?;
    if let Some(a) = auth {
        out.set_header("Authorization", a);
    }
    Ok(out)
}

pub(super) async fn send(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    req: &Request,
    cancel: &CancellationToken,
) -> Result<Response, VendorError> {
    let out = outgoing(ctx, req, auth.header.as_deref())?;
    let raw = execute(ctx.client, VENDOR, &out, ctx.secrets, cancel).await?;
    if !raw.is_success() {
        return Err(raw.http_error(VENDOR));
    }
    let body = raw.parse_declared(VENDOR)?;
    Ok(Response {
        status: raw.status,
        request_id: raw.header("x-request-id").map(str::to_string),
        headers: raw.headers,
        body,
    })
}

pub(super) fn prepare(
    ctx: &ConnectionParts<'_>,
    auth: &Auth,
    req: &Request,
) -> Result<PreparedRequest, VendorError> {
    Ok(outgoing(ctx, req, auth.placeholder)?.to_prepared())
}

/// Follows `Link: <...>; rel="next"`.
pub(super) fn next_page(req: &Request, resp: &Response) -> Option<Request> {
    let link = resp.headers.get("link")?;
    let url = link_next(link, &req.url)?;
    let mut next = req.clone();
    next.url = url;
    Some(next)
}

/// Array bodies are concatenated; otherwise the body is the array of the page bodies.
pub(super) fn aggregate(pages: Vec<Response>) -> Response {
    let all_arrays = pages.iter().all(|p| p.body.is_array());
    let mut items = Vec::new();
    let mut last: Option<Response> = None;
    for p in pages {
        if all_arrays {
            if let Value::Array(a) = &p.body {
                items.extend(a.iter().cloned());
            }
        } else {
            items.push(p.body.clone());
        }
        last = Some(p);
    }
    let last = last.unwrap_or(Response {
        status: 200,
        headers: Default::default(),
        body: Value::Null,
        request_id: None,
    });
    Response {
        body: Value::Array(items),
        ..last
    }
}

/// Takes what [`aggregate`] concatenates out of one page, leaving `[]`: an array body's
/// items (true), or the body itself (false: the merged answer is the array of page bodies).
pub(super) fn take_page_items(page: &mut Response) -> (bool, Vec<Value>) {
    match std::mem::replace(&mut page.body, Value::Array(Vec::new())) {
        Value::Array(items) => (true, items),
        other => (false, vec![other]),
    }
}

/// Items of a JSON array body, 0 for no body, else 1; no total is known.
pub(super) fn count(resp: &Response) -> ItemCount {
    ItemCount {
        items: records(resp).len() as u64,
        reported_total: None,
    }
}

/// The records of an answer: a JSON array's items (every page merged), else the body itself.
pub(super) fn records(resp: &Response) -> Vec<&Value> {
    match &resp.body {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}
