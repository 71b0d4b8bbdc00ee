//! The `call` step: render a request, send it through the vendor adapter, check, paginate, save.
use std::path::PathBuf;

use serde_json::{json, Value};

use super::at_most_once::fingerprint;
use super::{call_save, render_tpl, response_value, send_with_retry, StepEnv, StepError};
use crate::events::{Artifact, ArtifactKind, Event};
use crate::secrets::Secrets;
use crate::template::{Template, Tpl, TplValue};
use crate::vendors::body::mime_of;
use crate::vendors::http::redact_url;
use crate::vendors::{
    Body, Connection, ItemCount, ItemSlot, PageItems, Pagination, Request, Response, VendorKind,
};
use crate::workflow::bytesize::ByteSize;
use crate::workflow::call_plan::{CallBody, CallPlan, Method, SaveTo, Target};
use crate::workflow::model::Paginate;
use crate::workflow::step_output::{outputs_object, StepOutput};

/// A call with every template rendered.
#[derive(Debug, Clone)]
pub struct RenderedCall {
    /// The request of the first attempt (re-signed on each attempt).
    pub request: Request,
    /// `expect.status`; empty means any 2xx.
    pub expect_status: Vec<u16>,
    /// `expect.condition`, rendered against each response.
    pub expect_condition: Option<Tpl>,
    /// `expect.message`: the user's words for a failed expectation (a template over `response`).
    pub expect_message: Option<Tpl>,
    /// `expect.content_type`: the MIME type the answer must have.
    pub expect_content_type: Option<String>,
    /// `save_to`: where the parsed body is written as pretty JSON.
    pub save_to: Option<PathBuf>,
    /// `save_to` when it reads `response`: rendered once the answer is in.
    pub save_after: Option<Tpl>,
    /// How the call pages (`paginate` as written).
    pub paginate: PageMode,
    /// `call.idempotent` as written (None: the vendor adapter decides).
    pub idempotent: Option<bool>,
    /// Largest answer held in memory, in bytes (`max_response_size`, default 64 MiB).
    pub max_response: u64,
    /// The quota the call spends from (its key rendered when the step starts).
    pub budget: Option<crate::workflow::model::BudgetSpec>,
    /// What later steps read of the result, so what a paginated call holds in memory (the
    /// engine sets it; [`Hold::Everything`] when rendered).
    pub hold: Hold,
}

/// What later steps read of a call's result, so what a paginated call holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A later template reads the step's `body` or `records` (or its outputs whole): every
    /// page is held and merged, up to `max_response_size` bytes in all.
    Everything,
    /// Later templates read only scalars (`pages`, `items`, `status`...): each page's records
    /// go to `save_to` as they arrive and are dropped; `body` and `records` stay empty.
    Counts,
}

/// Default page limit of `paginate: true` (a safety limit, not a wish to stop).
const DEFAULT_MAX_PAGES: u32 = 10_000;

/// How a call pages, as the step wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum PageMode {
    /// No `paginate`: one request; an answer announcing more pages fails the step.
    Unset,
    /// `paginate: false`: one page on purpose; pages left are recorded as truncated.
    OnePage,
    /// `paginate: true` or options: follow the vendor's pages up to `max_pages`.
    Follow {
        /// Page size and page limit (`max_pages` always set).
        pagination: Pagination,
        /// `paginate.truncate`: stopping at `max_pages` with pages left is intended.
        truncate: bool,
    },
}

impl PageMode {
    /// The mode of a `paginate` field.
    fn of(spec: Option<&Paginate>) -> Self {
        match spec {
            None => PageMode::Unset,
            Some(Paginate::Enabled(false)) => PageMode::OnePage,
            Some(Paginate::Enabled(true)) => PageMode::Follow {
                pagination: Pagination {
                    page_size: None,
                    max_pages: Some(DEFAULT_MAX_PAGES),
                },
                truncate: false,
            },
            Some(Paginate::Options(o)) => PageMode::Follow {
                pagination: Pagination {
                    page_size: o.page_size,
                    max_pages: Some(o.max_pages.unwrap_or(DEFAULT_MAX_PAGES).max(1)),
                },
                truncate: o.truncate,
            },
        }
    }
}

/// Why a call's result is incomplete. The engine prefixes the step.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    /// The answer announced more pages and the step does not paginate.
    #[error(
        "the {vendor} answer announces more pages ({signal}) but the call does not paginate, \
         so the result would be incomplete: add `paginate: true` to the call (at the level of \
         `path:`, not inside `json:`) to fetch every page, or `paginate: false` if the first \
         page is all you want"
    )]
    NotPaginated {
        /// The connection's vendor.
        vendor: VendorKind,
        /// How the vendor announced it, e.g. Mimecast `meta.pagination.next`.
        signal: &'static str,
    },
    /// `max_pages` pages were fetched and the vendor still announces more.
    #[error(
        "the {vendor} answer still announces more pages after paginate.max_pages = {max}: \
         raise `max_pages`, or set `paginate.truncate: true` if the first {max} pages are all \
         you want (the result is then recorded as truncated)"
    )]
    MaxPages {
        /// The connection's vendor.
        vendor: VendorKind,
        /// The limit reached.
        max: u32,
    },
    /// The next page asked for is one already fetched: the vendor's pages loop.
    #[error(
        "the {vendor} answer on page {page} points back to a page already fetched (its next-page \
         link or token repeats), so following the pages would never end and the result could \
         not be complete; run the step again later, and report it to the vendor if it persists"
    )]
    Loop {
        /// The connection's vendor.
        vendor: VendorKind,
        /// The page whose answer pointed back.
        page: u32,
    },
    /// The pages held in memory for the merge are over the limit.
    #[error(
        "the {vendor} pages held in memory reach {bytes} bytes after {pages} page(s), over the \
         limit of {limit} bytes (`max_response_size`, which bounds one answer and the pages \
         held together); {why}"
    )]
    HeldTooLarge {
        /// The connection's vendor.
        vendor: VendorKind,
        /// Pages held.
        pages: u32,
        /// Bytes of JSON held.
        bytes: u64,
        /// `max_response_size`.
        limit: u64,
        /// Why the pages are held rather than saved as they arrive.
        why: HeldFor,
    },
    /// A `Link`-paged result mixes JSON array pages with other pages: the merged answer's
    /// shape depends on all of them, so it cannot be saved page by page.
    #[error(
        "page {page} of the {vendor} answer is {this} while the pages before it were {before}; \
         a result saved page by page needs every page to be a JSON array, or none: check the \
         endpoint, or read the result in a later step (`steps.<id>.body`) to merge it in memory"
    )]
    MixedPages {
        /// The connection's vendor.
        vendor: VendorKind,
        /// The page that differs.
        page: u32,
        /// What that page is.
        this: &'static str,
        /// What the pages before it were.
        before: &'static str,
    },
    /// The records fetched are not the total the vendor reported.
    #[error(
        "{vendor} reports {reported} records in all (totalCount) but the {pages} page(s) \
         fetched hold {items}: the result is incomplete or changed while it was read; run the \
         step again"
    )]
    TotalMismatch {
        /// The connection's vendor.
        vendor: VendorKind,
        /// The vendor's total.
        reported: u64,
        /// Records in the merged result.
        items: u64,
        /// Pages fetched.
        pages: u32,
    },
}

/// Why a paginated call holds its pages in memory instead of saving them as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldFor {
    /// A later template reads the step's `body` or `records`.
    LaterSteps,
    /// `save_to` reads `response`, so the path is known only once the result is merged.
    SavePath,
    /// The vendor's pages are merged in memory (Google feeds and lists).
    Vendor,
}

impl std::fmt::Display for HeldFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeldFor::LaterSteps => {
                "they are held because a later template reads this step's `body` or `records`: \
                 have later steps read the `save_to` file instead (the pages are then saved as \
                 they arrive), or raise `max_response_size`"
            }
            HeldFor::SavePath => {
                "they are held because `save_to` reads `response`: give `save_to` a path that \
                 does not (the pages are then saved as they arrive), or raise \
                 `max_response_size`"
            }
            HeldFor::Vendor => {
                "this vendor's pages are merged in memory: narrow the request (a shorter date \
                 range, a filter) so fewer pages come back, or raise `max_response_size`"
            }
        })
    }
}

/// Renders a value to a form/atom string: strings as they are, other JSON as JSON text.
fn scalar_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Renders the planned call `spec` into a vendor-neutral request for `conn`.
pub fn render_call(
    spec: &CallPlan,
    conn: &Connection,
    ctx: &Value,
) -> Result<RenderedCall, StepError> {
    let mut url = target_url(&spec.target, conn, ctx)?;
    add_query(&mut url, &spec.query, ctx)?;
    let headers = spec
        .headers
        .iter()
        .map(|(k, v)| Ok((k.clone(), render_tpl(&format!("headers.{k}"), v, ctx)?)))
        .collect::<Result<Vec<_>, StepError>>()?;
    let method = spec
        .method
        .unwrap_or_else(|| default_method(conn.settings().kind, &spec.body));
    let (save_to, save_after) = match &spec.save_to {
        Some(SaveTo::AfterResponse(t)) => (None, Some(t.clone())),
        Some(SaveTo::Before(t)) => (Some(PathBuf::from(render_tpl("save_to", t, ctx)?)), None),
        None => (None, None),
    };
    Ok(RenderedCall {
        request: Request {
            method: http_method(method),
            url,
            headers,
            body: render_body(&spec.body, ctx)?,
        },
        expect_status: spec.expect.status.clone(),
        expect_condition: spec.expect.condition.clone(),
        expect_message: spec.expect.message.clone(),
        expect_content_type: spec.expect.content_type.clone(),
        idempotent: spec.idempotent,
        save_to,
        save_after,
        paginate: PageMode::of(spec.paginate.as_ref()),
        max_response: spec
            .max_response_size
            .map_or(crate::vendors::http::DEFAULT_MAX_RESPONSE, ByteSize::get),
        budget: spec.budget.clone(),
        hold: Hold::Everything,
    })
}

/// The URL a call goes to: its `url:`, or the connection's base URL joined with `path:`.
fn target_url(target: &Target, conn: &Connection, ctx: &Value) -> Result<url::Url, StepError> {
    match target {
        Target::Url(u) => {
            let text = render_tpl("url", u, ctx)?;
            url::Url::parse(&text).map_err(|source| StepError::RenderedUrl {
                field: "url",
                value: text.clone(),
                source,
            })
        }
        Target::Connection { path, .. } => {
            let base = conn
                .settings()
                .base_url
                .clone()
                .ok_or_else(|| StepError::NoBaseUrl {
                    connection: conn.settings().name.clone(),
                })?;
            let p = match path {
                Some(p) => render_tpl("path", p, ctx)?,
                None => String::new(),
            };
            join_url(&base, &p)
        }
    }
}

/// Adds the rendered query parameters; one whose value renders empty is left out (optional
/// vendor filters).
fn add_query(url: &mut url::Url, query: &[(String, Tpl)], ctx: &Value) -> Result<(), StepError> {
    let mut pairs = Vec::new();
    for (k, v) in query {
        let value = render_tpl(&format!("query.{k}"), v, ctx)?;
        if !value.is_empty() {
            pairs.push((k, value));
        }
    }
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    Ok(())
}

/// The method of a call that gives none: POST for Mimecast and MailStore (their APIs are
/// all POST) and for a call with a body, GET otherwise.
fn default_method(kind: VendorKind, body: &CallBody) -> Method {
    match (kind, body) {
        (VendorKind::Mimecast | VendorKind::MailStore, _) => Method::Post,
        (_, CallBody::Empty) => Method::Get,
        _ => Method::Post,
    }
}

/// The `http` crate's method for a planned one.
fn http_method(m: Method) -> http::Method {
    match m {
        Method::Get => http::Method::GET,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Patch => http::Method::PATCH,
        Method::Delete => http::Method::DELETE,
        Method::Head => http::Method::HEAD,
        Method::Options => http::Method::OPTIONS,
    }
}

/// Renders the body.
fn render_body(body: &CallBody, ctx: &Value) -> Result<Body, StepError> {
    Ok(match body {
        CallBody::Empty => Body::Empty,
        CallBody::Json(j) => Body::Json(j.render(ctx).map_err(|e| StepError::template("json", e))?),
        CallBody::Form(f) => Body::Form(render_pairs("form", f, ctx)?),
        CallBody::Atom(a) => {
            // Properties that render empty are left out, as optional Atom properties are.
            let mut props = render_pairs("atom", a, ctx)?;
            props.retain(|(_, v)| !v.is_empty());
            Body::Atom(props)
        }
        CallBody::Text { text, content_type } => Body::Text {
            content_type: content_type.clone(),
            text: render_tpl("text", text, ctx)?,
        },
    })
}

/// Renders form or Atom fields to text (errors name `name.key`).
fn render_pairs(
    name: &str,
    fields: &[(String, TplValue)],
    ctx: &Value,
) -> Result<Vec<(String, String)>, StepError> {
    fields
        .iter()
        .map(|(k, v)| {
            v.render(ctx)
                .map(|r| (k.clone(), scalar_text(r)))
                .map_err(|e| StepError::template(format!("{name}.{k}"), e))
        })
        .collect()
}

/// Joins a path onto a base URL, keeping the base's own path prefix.
pub fn join_url(base: &url::Url, path: &str) -> Result<url::Url, StepError> {
    if path.is_empty() {
        return Ok(base.clone());
    }
    let mut s = base.as_str().trim_end_matches('/').to_string();
    if !path.starts_with('/') {
        s.push('/');
    }
    s.push_str(path);
    url::Url::parse(&s).map_err(|source| StepError::JoinedUrl {
        path: path.to_string(),
        source,
    })
}

/// What a finished call produced.
pub struct CallOutcome {
    /// The last response (with pagination: its body holds every page's items).
    pub response: Response,
    /// HTTP attempts made, retries and pages included.
    pub attempts: u32,
    /// Pages fetched (1 without pagination).
    pub pages: u32,
    /// Records in the result and the vendor's total.
    pub count: ItemCount,
    /// The vendor announced more pages than were fetched, on purpose
    /// (`paginate: false` or `paginate.truncate`).
    pub truncated: bool,
    /// Every record of every page as one flat list ([`Connection::records`]).
    pub records: Vec<Value>,
    /// The file name of a file answer (`Content-Disposition`), made safe.
    pub filename: Option<String>,
}

impl CallOutcome {
    /// The step's outputs: `status`, `headers`, `body`, `request_id`, `pages`, `items`,
    /// `records`, `truncated`, `filename` (the body and records moved, not copied).
    pub fn outputs(self) -> Value {
        let Response {
            status,
            headers,
            body,
            request_id,
        } = self.response;
        use StepOutput as O;
        outputs_object([
            (O::Status, json!(status)),
            (O::Headers, json!(headers)),
            (O::Body, body),
            (O::RequestId, json!(request_id)),
            (O::Pages, json!(self.pages)),
            (O::Items, json!(self.count.items)),
            (O::Records, Value::Array(self.records)),
            (O::Truncated, json!(self.truncated)),
            (O::Filename, json!(self.filename)),
        ])
    }
}

/// Checks `expect`: statuses (default: any 2xx) and the condition over `response`.
/// A failure says what was expected (the user's `message` first, when given) and shows the
/// values the condition read, like a test runner's expected/actual.
/// The values shown are excerpts with `secrets` masked before they are cut.
pub fn check_expect(
    rc: &RenderedCall,
    resp: &Response,
    ctx: &Value,
    secrets: &Secrets,
) -> Result<(), StepError> {
    let ok_status = if rc.expect_status.is_empty() {
        (200..300).contains(&resp.status)
    } else {
        rc.expect_status.contains(&resp.status)
    };
    let full = || with_response(ctx, resp);
    if !ok_status {
        let expected = if rc.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            let list: Vec<String> = rc.expect_status.iter().map(u16::to_string).collect();
            list.join(", ")
        };
        let base = format!(
            "HTTP {} is not an expected status ({expected})",
            resp.status
        );
        return Err(StepError::Expect {
            message: with_user_message(rc, &full(), base),
        });
    }
    check_content_type(rc, resp)?;
    if let Some(t) = &rc.expect_condition {
        let ctx = full();
        let holds = t
            .render_bool(&ctx)
            .map_err(|e| StepError::template("expect.condition", e))?;
        if !holds {
            let base = format!(
                "expectation `{}` does not hold (HTTP {}{})",
                t.source().trim(),
                resp.status,
                observed_status(&resp.body)
                    .map(|s| format!(", status {s}"))
                    .unwrap_or_default()
            );
            let mut message = with_user_message(rc, &ctx, base);
            for (path, value) in compared_values(t.template(), &ctx, secrets) {
                message.push_str(&format!("\n  {path} = {value}"));
            }
            for line in super::expect_records::matched_records(t.source(), &ctx, secrets) {
                message.push_str(&format!("\n  {line}"));
            }
            return Err(StepError::Expect { message });
        }
    }
    Ok(())
}

/// `message: base`, or `base` alone without `expect.message` (or when it cannot be rendered:
/// the failure is reported either way).
fn with_user_message(rc: &RenderedCall, ctx: &Value, base: String) -> String {
    let rendered = rc
        .expect_message
        .as_ref()
        .and_then(|m| m.render_string(ctx).ok())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    match rendered {
        Some(m) => format!("{m}: {base}"),
        None => base,
    }
}

/// Each distinct value a condition reads, as `path = JSON` (long values cut, as vendor error
/// excerpts are; a path the answer lacks shows `undefined`).
fn compared_values(t: &Template, ctx: &Value, secrets: &Secrets) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for var in t.variables() {
        let path = var.path.join(".");
        if !seen.insert(path.clone()) {
            continue;
        }
        let value = var
            .path
            .iter()
            .try_fold(ctx, |v, seg| match v {
                Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => v.get(seg),
            })
            .map_or_else(|| "undefined".to_string(), Value::to_string);
        out.push((path, crate::vendors::errors::excerpt(&value, secrets)));
    }
    out
}

/// Checks `expect.content_type` against the answer's `Content-Type` (parameters ignored).
fn check_content_type(rc: &RenderedCall, resp: &Response) -> Result<(), StepError> {
    let Some(want) = &rc.expect_content_type else {
        return Ok(());
    };
    let got = resp.headers.get("content-type").map(String::as_str);
    if mime_of(got) == mime_of(Some(want)) {
        return Ok(());
    }
    Err(StepError::Expect {
        message: format!(
            "HTTP {} answer has content type {}, not the expected {want} (expect.content_type)",
            resp.status,
            got.unwrap_or("none")
        ),
    })
}

/// The render context plus `response`.
pub fn with_response(ctx: &Value, resp: &Response) -> Value {
    let mut c = ctx.clone();
    if let Some(o) = c.as_object_mut() {
        o.insert("response".into(), response_value(resp));
    }
    c
}

/// A vendor status found in a body, for messages: Google `properties.status`, MailStore
/// `statusCode`, or a top-level `status`/`state`.
pub fn observed_status(body: &Value) -> Option<String> {
    let candidates = [
        body.pointer("/properties/status"),
        body.pointer("/statusCode"),
        body.pointer("/status"),
        body.pointer("/state"),
        body.pointer("/data/0/status"),
    ];
    candidates.into_iter().flatten().find_map(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Runs a rendered call: one request (or every page), expectations, `save_to`. Every answer
/// is read up to the call's `max_response_size`.
pub async fn execute(
    conn: &Connection,
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<CallOutcome, StepError> {
    crate::vendors::http::with_max_response(rc.max_response, execute_limited(conn, rc, env, ctx))
        .await
}

async fn execute_limited(
    conn: &Connection,
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<CallOutcome, StepError> {
    if env.dry_run {
        let mut req = rc.request.clone();
        if let PageMode::Follow { pagination, .. } = &rc.paginate {
            req = conn.first_page(&req, pagination);
        }
        let prepared = conn.prepare(&req).map_err(|e| StepError::Vendor {
            source: Box::new(e),
            attempts: 0,
        })?;
        env.emitter.emit(Event::DryRun {
            step: env.step.to_string(),
            method: prepared.method,
            url: crate::template::placeholder::readable_url(&prepared.url),
            headers: prepared.headers,
            body: prepared.body,
        });
        return Ok(CallOutcome {
            response: Response::empty(0),
            attempts: 0,
            pages: 0,
            count: ItemCount::default(),
            truncated: false,
            records: Vec::new(),
            filename: None,
        });
    }
    // Before the request: a call whose answer cannot be saved is not sent, nor one over
    // its quota.
    super::overwrite::check(env, rc.save_to.as_deref()).await?;
    let fetched =
        match super::at_most_once::adopt_existing(conn, &rc.request, rc.idempotent, env).await? {
            // Found at the vendor: nothing is sent, no quota is spent.
            Some(response) => Fetched {
                response,
                attempts: 0,
                pages: 1,
                truncated: false,
                streamed: None,
            },
            None => send_within_quota(conn, rc, env, ctx).await?,
        };
    let Fetched {
        response,
        attempts,
        pages,
        truncated,
        streamed,
    } = fetched;
    if let Some(streamed) = streamed {
        let done = streamed.finish(conn, rc, env, pages, truncated).await?;
        return Ok(CallOutcome { attempts, ..done });
    }
    let count = checked_count(conn, &response, pages, truncated)?;
    emit_paged(env, pages, count, truncated);
    // The answer is saved before its check: a failed `expect` keeps its evidence.
    let checked = check_expect(rc, &response, ctx, env.emitter.secrets());
    let filename = attachment_name(&response)?;
    let mut response = response;
    save_answer(rc, &mut response, filename.as_deref(), ctx, env).await?;
    checked?;
    let records = conn.records(&response).into_iter().cloned().collect();
    Ok(CallOutcome {
        response,
        attempts,
        pages,
        count,
        truncated,
        records,
        filename,
    })
}

/// Saves the answer where `save_to` says (a file answer as it came, its body then dropped
/// from the outputs; JSON otherwise), reports the artifact and makes it the run's own.
pub(super) async fn save_answer(
    rc: &RenderedCall,
    response: &mut Response,
    filename: Option<&str>,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<(), StepError> {
    let Some(path) = save_path(rc, response, filename, ctx, env).await? else {
        return Ok(());
    };
    let saved = match (&filename, &response.body) {
        // A file answer is saved as it came, and not kept in the outputs (or the journal).
        (Some(_), Value::String(text)) => {
            let saved = save_bytes(&path, text.as_bytes())?;
            response.body = Value::Null;
            saved
        }
        _ => call_save::save_json(&path, &response.body)?,
    };
    record_saved(rc, env, &path, saved, response).await;
    Ok(())
}

/// Announces the pages and records of a result (the manifest's figures).
fn emit_paged(env: &StepEnv<'_>, pages: u32, count: ItemCount, truncated: bool) {
    env.emitter.emit(Event::Paged {
        step: env.step.to_string(),
        pages,
        items: count.items,
        reported_total: count.reported_total,
        truncated,
    });
}

/// Records a saved file (bytes, SHA-256) as the step's artifact and flushes the journal:
/// the file is the run's own from here, so a resumed run does not refuse to replace it.
async fn record_saved(
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    path: &std::path::Path,
    (bytes, sha256): (u64, crate::durable::Sha256Digest),
    response: &Response,
) {
    env.emitter.emit(Event::Artifact {
        step: env.step.to_string(),
        artifact: Artifact {
            kind: ArtifactKind::Saved,
            path: path.display().to_string(),
            bytes,
            sha256,
            source: Some(redact_url(&rc.request.url)),
            source_sha256: None,
            md5: None,
            request_id: response.request_id.clone(),
            finished_at: chrono::Utc::now(),
        },
    });
    if let Some(l) = env.ledger {
        if let Err(e) = l.journal.flush().await {
            env.emitter.warn(format!("step `{}`: {e}", env.step));
        }
    }
}

/// Where the answer is saved: `save_to` as rendered before the request, or rendered now
/// over `response` (then checked against the overwrite guard here). Empty: not saved.
async fn save_path(
    rc: &RenderedCall,
    response: &Response,
    filename: Option<&str>,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<Option<PathBuf>, StepError> {
    if let Some(p) = &rc.save_to {
        return Ok(Some(p.clone()));
    }
    let Some(t) = &rc.save_after else {
        return Ok(None);
    };
    let mut full = with_response(ctx, response);
    if let Some(r) = full.get_mut("response").and_then(Value::as_object_mut) {
        r.insert(StepOutput::Filename.as_str().into(), json!(filename));
    }
    let text = render_tpl("save_to", t, &full)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(text.trim());
    super::overwrite::check(env, Some(path.as_path())).await?;
    Ok(Some(path))
}

/// The file name of a file answer (`Content-Disposition: attachment; filename="..."`, or
/// `filename*=UTF-8''...`): its last path part, checked to be one plain file name.
pub fn attachment_name(response: &Response) -> Result<Option<String>, StepError> {
    let Some(cd) = response.headers.get("content-disposition") else {
        return Ok(None);
    };
    let Some(raw) = disposition_filename(cd) else {
        return Ok(None);
    };
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    super::download::safe_join(std::path::Path::new(""), last)?;
    Ok(Some(last.to_string()))
}

/// The `filename*` (RFC 5987, UTF-8) or `filename` parameter of a `Content-Disposition`.
fn disposition_filename(value: &str) -> Option<String> {
    let params: Vec<(String, &str)> = value
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    let extended = params
        .iter()
        .find(|(k, _)| k == "filename*")
        .and_then(|(_, v)| {
            let (charset, rest) = v.split_once('\'')?;
            let (_, encoded) = rest.split_once('\'')?;
            charset
                .eq_ignore_ascii_case("utf-8")
                .then(|| {
                    percent_encoding::percent_decode_str(encoded)
                        .decode_utf8()
                        .ok()
                })?
                .map(std::borrow::Cow::into_owned)
        });
    extended.or_else(|| {
        params
            .iter()
            .find(|(k, _)| k == "filename")
            .map(|(_, v)| v.trim_matches('"').to_string())
    })
}

/// Spends the call's quota unit (if it has a `budget`), then sends it (every page).
async fn send_within_quota(
    conn: &Connection,
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<Fetched, StepError> {
    let quota = match &rc.budget {
        Some(b) => Some(super::quota::render(b, ctx, env)?),
        None => None,
    };
    if let Some(q) = &quota {
        super::quota::take(env, q).await?;
    }
    let fetched = match &rc.paginate {
        PageMode::Follow {
            pagination,
            truncate,
        } => fetch_pages(conn, rc, env, ctx, pagination, *truncate).await,
        mode => fetch_one(conn, rc, env, mode).await,
    };
    match fetched {
        Ok(f) => Ok(f),
        Err(e) => {
            let spent = rc.budget.as_ref().map_or(&[][..], |b| &b.spent_status[..]);
            Err(super::quota::vendor_answer(env, quota.as_ref(), spent, e).await)
        }
    }
}

/// The answer(s) of a call before `expect` and `save_to`.
struct Fetched {
    /// The response (every page merged).
    response: Response,
    /// HTTP attempts, retries and pages included.
    attempts: u32,
    /// Pages fetched.
    pages: u32,
    /// The vendor announced more pages than were fetched, on purpose.
    truncated: bool,
    /// The pages were saved and counted as they arrived (`response` is then empty).
    streamed: Option<Box<StreamedPages>>,
}

/// One request (at most once when it is not idempotent). An answer announcing more pages
/// fails the step unless `paginate: false` said one page is wanted.
async fn fetch_one(
    conn: &Connection,
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    mode: &PageMode,
) -> Result<Fetched, StepError> {
    let once = !rc
        .idempotent
        .unwrap_or_else(|| conn.idempotent(&rc.request));
    let (response, attempts) = match (once, env.ledger) {
        (true, Some(ledger)) => super::at_most_once::send(conn, &rc.request, env, ledger).await?,
        _ => send_with_retry(conn, &rc.request, env).await?,
    };
    let more = conn
        .next_page(&rc.request, &response, &Pagination::default())
        .is_some();
    if more && *mode == PageMode::Unset {
        let vendor = conn.settings().kind;
        return Err(PagingError::NotPaginated {
            vendor,
            signal: vendor.next_page_signal(),
        }
        .into());
    }
    if more {
        env.emitter.warn(format!(
            "step `{}`: one page saved on purpose (paginate: false); the vendor announces more, \
             the result is recorded as truncated",
            env.step
        ));
    }
    Ok(Fetched {
        response,
        attempts,
        pages: 1,
        truncated: more,
        streamed: None,
    })
}

/// Every page up to `p.max_pages`, merged in memory or saved as they arrive ([`Collect`]).
/// Reaching the limit with pages left fails the step unless `truncate` (then it warns and the
/// result is recorded as truncated).
async fn fetch_pages(
    conn: &Connection,
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    ctx: &Value,
    p: &Pagination,
    truncate: bool,
) -> Result<Fetched, StepError> {
    let max = p.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
    let mut req = conn.first_page(&rc.request, p);
    let mut collected = Collect::start(rc);
    let mut pages = 0u32;
    let mut attempts = 0;
    let mut truncated = false;
    let mut asked = std::collections::HashSet::from([fingerprint(&req, env)]);
    loop {
        let (r, a) = send_with_retry(conn, &req, env).await?;
        attempts += a;
        check_expect(rc, &r, ctx, env.emitter.secrets())?;
        let next = conn.next_page(&req, &r, p);
        pages += 1;
        collected.add(conn, r, rc.max_response, pages)?;
        let Some(n) = next else { break };
        if !asked.insert(fingerprint(&n, env)) {
            return Err(PagingError::Loop {
                vendor: conn.settings().kind,
                page: pages,
            }
            .into());
        }
        if pages >= max {
            if !truncate {
                return Err(PagingError::MaxPages {
                    vendor: conn.settings().kind,
                    max,
                }
                .into());
            }
            env.emitter.warn(format!(
                "step `{}`: stopped after {max} pages (paginate.max_pages, truncate: true); \
                 the vendor announces more, the result is recorded as truncated",
                env.step
            ));
            truncated = true;
            break;
        }
        env.emitter
            .log(env.step, format!("page {pages} done, fetching the next"));
        req = n;
    }
    let (response, streamed) = match collected {
        Collect::Held { pages, .. } => (conn.aggregate(pages), None),
        Collect::Streamed(s) => (Response::empty(200), Some(s)),
    };
    Ok(Fetched {
        response,
        attempts,
        pages,
        truncated,
        streamed,
    })
}

/// What a paginated call keeps of its pages while they arrive.
enum Collect {
    /// Every page, merged once the last is in; at most `max_response_size` bytes of JSON.
    Held {
        pages: Vec<Response>,
        bytes: u64,
        why: HeldFor,
    },
    /// Each page's records saved to `save_to` (when set) and counted, then dropped.
    Streamed(Box<StreamedPages>),
}

impl Collect {
    /// Held when a later step reads the result or `save_to` reads `response`; else streamed
    /// (held after all when the vendor's pages are merged in memory, see [`Collect::add`]).
    fn start(rc: &RenderedCall) -> Collect {
        let why = if rc.hold == Hold::Everything {
            Some(HeldFor::LaterSteps)
        } else if rc.save_after.is_some() {
            Some(HeldFor::SavePath)
        } else {
            None
        };
        match why {
            Some(why) => Collect::Held {
                pages: Vec::new(),
                bytes: 0,
                why,
            },
            None => Collect::Streamed(Box::new(StreamedPages {
                save_to: rc.save_to.clone(),
                file: None,
                items: 0,
                whole_page: None,
                last: None,
            })),
        }
    }

    /// Takes page number `number`: held (failing over `limit` bytes held), or saved and counted.
    fn add(
        &mut self,
        conn: &Connection,
        mut page: Response,
        limit: u64,
        number: u32,
    ) -> Result<(), StepError> {
        match self {
            Collect::Held { pages, bytes, why } => {
                *bytes += call_save::json_len(&page.body);
                pages.push(page);
                if *bytes > limit {
                    return Err(PagingError::HeldTooLarge {
                        vendor: conn.settings().kind,
                        pages: number,
                        bytes: *bytes,
                        limit,
                        why: *why,
                    }
                    .into());
                }
                Ok(())
            }
            Collect::Streamed(s) => match conn.take_page_items(&mut page) {
                Some(items) => s.add(conn, page, items, number),
                None => {
                    *self = Collect::Held {
                        pages: Vec::new(),
                        bytes: 0,
                        why: HeldFor::Vendor,
                    };
                    self.add(conn, page, limit, number)
                }
            },
        }
    }
}

/// A paginated result saved and counted page by page: only the last page's envelope (the
/// page without its records) is held.
struct StreamedPages {
    /// `save_to`, when the call has one.
    save_to: Option<PathBuf>,
    /// The file being written (opened with the first page).
    file: Option<call_save::PagedFile>,
    /// Records so far.
    items: u64,
    /// Whether the pages are each one record (`Link`-paged non-array bodies).
    whole_page: Option<bool>,
    /// The last page without its records.
    last: Option<Response>,
}

impl StreamedPages {
    /// Counts page `number`'s records and appends them to the file.
    fn add(
        &mut self,
        conn: &Connection,
        page: Response,
        items: PageItems,
        number: u32,
    ) -> Result<(), StepError> {
        let shape = |whole: bool| {
            if whole {
                "not a JSON array"
            } else {
                "JSON arrays"
            }
        };
        match self.whole_page {
            Some(before) if before != items.whole_page => {
                return Err(PagingError::MixedPages {
                    vendor: conn.settings().kind,
                    page: number,
                    this: shape(items.whole_page),
                    before: shape(before),
                }
                .into())
            }
            _ => self.whole_page = Some(items.whole_page),
        }
        let (count, records) = count_records(conn, items.slot, items.items);
        self.items += count;
        if let Some(path) = &self.save_to {
            if self.file.is_none() {
                self.file = Some(call_save::PagedFile::create(path)?);
            }
            if let Some(f) = &mut self.file {
                f.append(items.slot, &records)?;
            }
        }
        self.last = Some(page);
        Ok(())
    }

    /// Checks the count against the vendor's total, records the pages and the saved file;
    /// the outcome's `body` and `records` are empty (no later template reads them).
    async fn finish(
        self,
        conn: &Connection,
        rc: &RenderedCall,
        env: &StepEnv<'_>,
        pages: u32,
        truncated: bool,
    ) -> Result<CallOutcome, StepError> {
        let envelope = conn.aggregate(self.last.into_iter().collect());
        let count = ItemCount {
            items: self.items,
            reported_total: conn.count(&envelope).reported_total,
        };
        check_total(conn, count, pages, truncated)?;
        emit_paged(env, pages, count, truncated);
        let filename = attachment_name(&envelope)?;
        if let (Some(path), Some(file)) = (&self.save_to, self.file) {
            let saved = file.finish(envelope.body.clone())?;
            record_saved(rc, env, path, saved, &envelope).await;
        }
        Ok(CallOutcome {
            response: Response {
                body: Value::Null,
                ..envelope
            },
            attempts: 0,
            pages,
            count,
            truncated,
            records: Vec::new(),
            filename,
        })
    }
}

/// The records among one page's merged items ([`Connection::records`] over them in their
/// slot), and the items back.
fn count_records(conn: &Connection, slot: ItemSlot, items: Vec<Value>) -> (u64, Vec<Value>) {
    let body = match slot {
        ItemSlot::Root => Value::Array(items),
        ItemSlot::Field(f) => json!({ f: items }),
    };
    let mut probe = Response::empty(200);
    probe.body = body;
    let count = conn.records(&probe).len() as u64;
    let items = match slot {
        ItemSlot::Root => probe.body,
        ItemSlot::Field(f) => probe.body.get_mut(f).map(Value::take).unwrap_or_default(),
    };
    match items {
        Value::Array(a) => (count, a),
        _ => (count, Vec::new()),
    }
}

/// The records of a complete result, checked against the total the vendor reports.
fn checked_count(
    conn: &Connection,
    response: &Response,
    pages: u32,
    truncated: bool,
) -> Result<ItemCount, StepError> {
    check_total(conn, conn.count(response), pages, truncated)
}

/// `count` when it is the vendor's reported total (or the result is truncated on purpose).
fn check_total(
    conn: &Connection,
    count: ItemCount,
    pages: u32,
    truncated: bool,
) -> Result<ItemCount, StepError> {
    match count.reported_total {
        Some(reported) if !truncated && reported != count.items => {
            Err(PagingError::TotalMismatch {
                vendor: conn.settings().kind,
                reported,
                items: count.items,
                pages,
            }
            .into())
        }
        _ => Ok(count),
    }
}

/// Writes `bytes` to `path` durably (temp file, fsync, rename); returns their size and SHA-256.
fn save_bytes(
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<(u64, crate::durable::Sha256Digest), StepError> {
    crate::durable::write_private(path, bytes)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::durable::sync_dir(dir);
    }
    Ok((bytes.len() as u64, crate::durable::Sha256Digest::of(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `response` holds exactly the fields validation lets a template read.
    #[test]
    fn response_value_holds_the_response_fields() {
        let r = crate::vendors::Response {
            status: 200,
            headers: Default::default(),
            body: Value::Null,
            request_id: None,
        };
        let v = super::super::response_value(&r);
        let keys: Vec<&str> = v
            .as_object()
            .map_or(vec![], |o| o.keys().map(String::as_str).collect());
        let fields: Vec<&str> = crate::workflow::step_output::RESPONSE_FIELDS
            .iter()
            .map(|f| f.as_str())
            .collect();
        assert_eq!(keys, fields);
    }

    #[test]
    fn join_keeps_base_path() {
        let b = url::Url::parse("http://h:1/a/feeds/").unwrap();
        assert_eq!(
            join_url(&b, "/x/y").unwrap().as_str(),
            "http://h:1/a/feeds/x/y"
        );
        assert_eq!(join_url(&b, "x").unwrap().as_str(), "http://h:1/a/feeds/x");
        let b = url::Url::parse("http://h:1").unwrap();
        assert_eq!(join_url(&b, "/api/x").unwrap().as_str(), "http://h:1/api/x");
    }

    #[test]
    fn file_names_come_from_content_disposition_and_stay_plain() {
        let answer = |cd: &str| {
            let mut r = Response::empty(200);
            r.headers.insert("content-disposition".into(), cd.into());
            attachment_name(&r)
        };
        let name = |cd: &str| answer(cd).unwrap();
        assert_eq!(
            name(r#"attachment; filename="20240101-MTA.json""#).as_deref(),
            Some("20240101-MTA.json")
        );
        assert_eq!(
            name("attachment; filename*=UTF-8''caf%C3%A9.json; filename=\"cafe.json\"").as_deref(),
            Some("café.json")
        );
        assert_eq!(
            name(r#"attachment; filename="../../etc/passwd""#).as_deref(),
            Some("passwd")
        );
        assert_eq!(name("inline").as_deref(), None);
        assert!(answer(r#"attachment; filename="..""#).is_err());
        assert!(answer("attachment; filename=\"a\u{7}b\"").is_err());
        assert_eq!(attachment_name(&Response::empty(200)).unwrap(), None);
    }

    #[test]
    fn observed_status_finds_vendor_states() {
        assert_eq!(
            observed_status(&json!({"properties": {"status": "PENDING"}})),
            Some("PENDING".into())
        );
        assert_eq!(
            observed_status(&json!({"statusCode": "running"})),
            Some("running".into())
        );
        assert_eq!(observed_status(&json!({"x": 1})), None);
    }
}
