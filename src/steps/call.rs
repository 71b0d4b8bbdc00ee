//! The `call` step: render a request, send it through the vendor adapter, check, paginate, save.
use std::path::PathBuf;

use serde_json::{json, Value};

use super::{render_str, response_value, send_with_retry, StepEnv, StepError};
use crate::events::{Artifact, ArtifactKind, Event};
use crate::template::{render_deep, Template};
use crate::vendors::http::redact_url;
use crate::vendors::{Body, Connection, Pagination, Request, Response, VendorKind};
use crate::workflow::bytesize::ByteSize;
use crate::workflow::model::{CallSpec, Paginate};

/// A call with every template rendered.
#[derive(Debug, Clone)]
pub struct RenderedCall {
    /// The request of the first attempt (re-signed on each attempt).
    pub request: Request,
    /// `expect.status`; empty means any 2xx.
    pub expect_status: Vec<u16>,
    /// `expect.condition`, rendered against each response.
    pub expect_condition: Option<String>,
    /// `save_to`: where the parsed body is written as pretty JSON.
    pub save_to: Option<PathBuf>,
    /// Page size and limit when `paginate` is on.
    pub paginate: Option<Pagination>,
    /// `call.idempotent` as written (None: the vendor adapter decides).
    pub idempotent: Option<bool>,
    /// Largest answer held in memory, in bytes (`max_response_size`, default 64 MiB).
    pub max_response: u64,
}

/// Renders a value to a form/atom string: strings as they are, other JSON as JSON text.
fn scalar_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Renders `spec` into a vendor-neutral request for `conn`.
pub fn render_call(
    spec: &CallSpec,
    conn: &Connection,
    ctx: &Value,
) -> Result<RenderedCall, StepError> {
    let kind = conn.settings().kind;
    let url = match (&spec.url, &spec.path) {
        (Some(u), _) => {
            let text = render_str("url", u, ctx)?;
            url::Url::parse(&text).map_err(|source| StepError::RenderedUrl {
                field: "url",
                value: text.clone(),
                source,
            })?
        }
        (None, path) => {
            let base = conn
                .settings()
                .base_url
                .clone()
                .ok_or_else(|| StepError::NoBaseUrl {
                    connection: conn.settings().name.clone(),
                })?;
            let p = match path {
                Some(p) => render_str("path", p, ctx)?,
                None => String::new(),
            };
            join_url(&base, &p)?
        }
    };
    let mut url = url;
    // A parameter whose value renders empty is left out (optional vendor filters).
    let mut query = Vec::new();
    for (k, v) in &spec.query {
        let value = render_str(&format!("query.{k}"), v, ctx)?;
        if !value.is_empty() {
            query.push((k, value));
        }
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let method = match &spec.method {
        Some(m) => m.to_ascii_uppercase(),
        None if matches!(kind, VendorKind::Mimecast | VendorKind::MailStore) => "POST".into(),
        None if spec.json.is_some()
            || spec.form.is_some()
            || spec.atom.is_some()
            || spec.text.is_some() =>
        {
            "POST".into()
        }
        None => "GET".into(),
    };
    let method =
        http::Method::from_bytes(method.as_bytes()).map_err(|_| StepError::UnknownMethod {
            method: method.clone(),
        })?;
    let mut headers = Vec::new();
    for (k, v) in &spec.headers {
        headers.push((k.clone(), render_str(&format!("headers.{k}"), v, ctx)?));
    }
    let pairs = |name: &str,
                 m: &std::collections::BTreeMap<String, Value>|
     -> Result<Vec<(String, String)>, StepError> {
        m.iter()
            .map(|(k, v)| {
                render_deep(v, ctx)
                    .map(|r| (k.clone(), scalar_text(r)))
                    .map_err(|e| StepError::template(format!("{name}.{k}"), e))
            })
            .collect()
    };
    let body = if let Some(j) = &spec.json {
        Body::Json(render_deep(j, ctx).map_err(|e| StepError::template("json", e))?)
    } else if let Some(f) = &spec.form {
        Body::Form(pairs("form", f)?)
    } else if let Some(a) = &spec.atom {
        // Properties that render empty are left out, as optional Atom properties are.
        let mut props = pairs("atom", a)?;
        props.retain(|(_, v)| !v.is_empty());
        Body::Atom(props)
    } else if let Some(t) = &spec.text {
        Body::Text {
            content_type: spec
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".into()),
            text: render_str("text", t, ctx)?,
        }
    } else {
        Body::Empty
    };
    let save_to = match &spec.save_to {
        Some(s) => Some(PathBuf::from(render_str("save_to", s, ctx)?)),
        None => None,
    };
    let paginate = match &spec.paginate {
        None | Some(Paginate::Enabled(false)) => None,
        Some(Paginate::Enabled(true)) => Some(Pagination {
            page_size: None,
            max_pages: Some(10_000),
        }),
        Some(Paginate::Options(o)) => Some(Pagination {
            page_size: o.page_size,
            max_pages: Some(o.max_pages.unwrap_or(10_000)),
        }),
    };
    let expect = spec.expect.clone().unwrap_or_default();
    Ok(RenderedCall {
        request: Request {
            method,
            url,
            headers,
            body,
        },
        expect_status: expect.status,
        expect_condition: expect.condition,
        idempotent: spec.idempotent,
        save_to,
        paginate,
        max_response: spec
            .max_response_size
            .map_or(crate::vendors::http::DEFAULT_MAX_RESPONSE, ByteSize::get),
    })
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
}

impl CallOutcome {
    /// The step's outputs: `status`, `headers`, `body`, `pages`, `request_id`.
    pub fn outputs(&self) -> Value {
        let mut v = response_value(&self.response);
        if let Some(o) = v.as_object_mut() {
            o.insert("pages".into(), json!(self.pages));
        }
        v
    }
}

/// Checks `expect`: statuses (default: any 2xx) and the condition over `response`.
pub fn check_expect(rc: &RenderedCall, resp: &Response, ctx: &Value) -> Result<(), StepError> {
    let ok_status = if rc.expect_status.is_empty() {
        (200..300).contains(&resp.status)
    } else {
        rc.expect_status.contains(&resp.status)
    };
    if !ok_status {
        return Err(StepError::Expect {
            message: format!(
                "HTTP {} is not an expected status ({})",
                resp.status,
                if rc.expect_status.is_empty() {
                    "2xx".to_string()
                } else {
                    rc.expect_status
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        });
    }
    if let Some(cond) = &rc.expect_condition {
        let holds = Template::compile(cond)
            .and_then(|t| t.render_bool(&with_response(ctx, resp)))
            .map_err(|e| StepError::template("expect.condition", e))?;
        if !holds {
            return Err(StepError::Expect {
                message: format!(
                    "expectation `{}` does not hold (HTTP {}{})",
                    cond.trim(),
                    resp.status,
                    observed_status(&resp.body)
                        .map(|s| format!(", status {s}"))
                        .unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
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
        if let Some(p) = &rc.paginate {
            req = conn.first_page(&req, p);
        }
        let prepared = conn.prepare(&req).map_err(|e| StepError::Vendor {
            source: Box::new(e),
            attempts: 0,
        })?;
        env.emitter.emit(Event::DryRun {
            step: env.step.to_string(),
            method: prepared.method,
            url: prepared.url,
            headers: prepared.headers,
            body: prepared.body,
        });
        return Ok(CallOutcome {
            response: Response::empty(0),
            attempts: 0,
            pages: 0,
        });
    }
    let (response, attempts, pages) = match &rc.paginate {
        None => {
            let once = !rc
                .idempotent
                .unwrap_or_else(|| conn.idempotent(&rc.request));
            let (r, a) = match (once, env.ledger) {
                (true, Some(ledger)) => {
                    super::at_most_once::send(conn, &rc.request, env, ledger).await?
                }
                _ => send_with_retry(conn, &rc.request, env).await?,
            };
            (r, a, 1)
        }
        Some(p) => {
            let mut req = conn.first_page(&rc.request, p);
            let mut all = Vec::new();
            let mut attempts = 0;
            loop {
                let (r, a) = send_with_retry(conn, &req, env).await?;
                attempts += a;
                check_expect(rc, &r, ctx)?;
                let next = conn.next_page(&req, &r, p);
                all.push(r);
                if let Some(max) = p.max_pages {
                    if all.len() as u32 >= max {
                        env.emitter.warn(format!(
                            "step `{}`: stopped after {max} pages (paginate.max_pages)",
                            env.step
                        ));
                        break;
                    }
                }
                match next {
                    Some(n) => {
                        env.emitter.log(
                            env.step,
                            format!("page {} done, fetching the next", all.len()),
                        );
                        req = n;
                    }
                    None => break,
                }
            }
            let pages = all.len() as u32;
            (conn.aggregate(all), attempts, pages)
        }
    };
    check_expect(rc, &response, ctx)?;
    if let Some(path) = &rc.save_to {
        let (bytes, sha256) = save_json(path, &response.body)?;
        env.emitter.emit(Event::Artifact {
            step: env.step.to_string(),
            artifact: Artifact {
                kind: ArtifactKind::Saved,
                path: path.display().to_string(),
                bytes,
                sha256,
                source: Some(redact_url(&rc.request.url)),
                source_sha256: None,
                request_id: response.request_id.clone(),
                finished_at: chrono::Utc::now().to_rfc3339(),
            },
        });
    }
    Ok(CallOutcome {
        response,
        attempts,
        pages,
    })
}

/// Writes `body` as pretty JSON to `path`, streamed through a private temporary file beside
/// it (fsync'd, then renamed): no second in-memory copy of a large answer. Returns the bytes
/// written and their SHA-256.
fn save_json(path: &std::path::Path, body: &Value) -> Result<(u64, String), StepError> {
    let io = |source: std::io::Error| StepError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let tmp = crate::durable::private_temp_file(&dir, ".auditflow-", ".tmp").map_err(io)?;
    let mut w = HashingWriter::new(std::io::BufWriter::new(tmp));
    serde_json::to_writer_pretty(&mut w, body).map_err(|source| StepError::Serialize {
        what: "response",
        source,
    })?;
    let (bytes, sha256, buffered) = w.finish();
    let tmp = buffered.into_inner().map_err(|e| io(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    crate::durable::sync_dir(&dir);
    Ok((bytes, sha256))
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    bytes: u64,
    hash: sha2::Sha256,
}

impl<W: std::io::Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        use sha2::Digest;
        HashingWriter {
            inner,
            bytes: 0,
            hash: sha2::Sha256::new(),
        }
    }

    /// Bytes written, their SHA-256 (hex) and the inner writer.
    fn finish(self) -> (u64, String, W) {
        use sha2::Digest;
        let digest = crate::durable::to_hex(&self.hash.finalize());
        (self.bytes, digest, self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
