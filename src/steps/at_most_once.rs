//! At-most-once sending of calls that must not be repeated: an intent is made durable before
//! each attempt and the answer right after; when a crash, a timeout or a 5xx hides whether
//! the vendor carried a request out, it is looked up (Google: the export list) before any
//! new attempt, so one step never creates two exports.
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{response_value, send_with_retry, StepEnv, StepError, StepObserver};
use crate::state::journal::{PendingIntent, RecordedResponse};
use crate::state::{Journal, Record};
use crate::vendors::http::redact_url;
use crate::vendors::{Connection, Pagination, Recovery, Request, Response, VendorError};

/// Most pages of a lookup listing read before giving up on it.
const MAX_LOOKUP_PAGES: u32 = 200;

/// What the run's journal holds for one step, and where to record more.
#[derive(Clone)]
pub struct Ledger {
    /// The run's journal, where intents and outcomes are recorded durably.
    pub journal: Journal,
    /// What later steps read of each step's outputs (bounds what an answer keeps).
    pub(crate) referenced: std::sync::Arc<crate::state::keep::Referenced>,
    /// An intent of an earlier process with no recorded outcome.
    pub intent: Option<PendingIntent>,
    /// An answer recorded by an earlier process.
    pub response: Option<RecordedResponse>,
    /// Files this step finished in earlier processes.
    pub artifacts: Vec<crate::events::Artifact>,
    /// Files any step of the run recorded or claimed in earlier processes.
    pub earlier: std::sync::Arc<EarlierFiles>,
    /// Polls made by earlier processes (the interval policy continues from there).
    pub polls: u32,
    /// Before a first send, continue a usable request of the same parameters that the vendor
    /// already holds, from the run's listings (None with `--fresh`: create anew on purpose).
    pub adopt: Option<std::sync::Arc<Listings>>,
}

/// The files every step of the run recorded (verified artifacts) or claimed (about to be
/// written) in earlier processes. A resumed `repeat` lists a page again from its stored
/// cursor under another iteration index than the process that saved its files, so a step
/// looks its files up here, not only under its own path. Indexed: a long resumed chain
/// looks thousands of files up.
#[derive(Debug, Default)]
pub struct EarlierFiles {
    /// Download artifacts of every step, by path as recorded.
    downloads: std::collections::HashMap<String, Vec<crate::events::Artifact>>,
    /// Every recorded or claimed path, made absolute.
    written: std::collections::HashSet<std::path::PathBuf>,
}

impl EarlierFiles {
    /// What `replay` recorded, all steps together.
    pub(crate) fn of(replay: &crate::state::journal::Replay) -> Self {
        let mut out = EarlierFiles::default();
        for a in replay.artifacts.values().flatten() {
            out.written.insert(absolute(std::path::Path::new(&a.path)));
            if a.kind == crate::events::ArtifactKind::Download {
                out.downloads
                    .entry(a.path.clone())
                    .or_default()
                    .push(a.clone());
            }
        }
        out.written.extend(
            replay
                .claimed
                .values()
                .flatten()
                .map(std::path::PathBuf::from),
        );
        out
    }

    /// The downloads recorded at `path` (as recorded, not made absolute).
    pub fn downloads_at(&self, path: &str) -> &[crate::events::Artifact] {
        self.downloads.get(path).map_or(&[], Vec::as_slice)
    }

    /// Whether a step recorded or claimed `path` (absolute).
    pub fn wrote(&self, path: &std::path::Path) -> bool {
        self.written.contains(path)
    }
}

/// `path` made absolute lexically (the file may not exist), to compare paths.
pub(crate) fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Identifies a request across processes without keeping it: SHA-256 of the method, URL and
/// body with secrets masked first.
pub fn fingerprint(req: &Request, env: &StepEnv<'_>) -> String {
    let text = format!("{} {}\n{:?}", req.method, req.url, req.body);
    crate::durable::sha256_hex(env.emitter.secrets().mask(&text).as_bytes())
}

/// A response as recorded (see [`response_value`]) read back.
fn response_from(v: &Value) -> Response {
    let headers = v["headers"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Response {
        status: v["status"].as_u64().unwrap_or(200) as u16,
        headers,
        body: v["body"].clone(),
        request_id: v["request_id"].as_str().map(str::to_string),
    }
}

async fn record_response(
    ledger: &Ledger,
    env: &StepEnv<'_>,
    fp: &str,
    resp: &Response,
    adopted: Option<crate::events::Adoption>,
) -> Result<(), StepError> {
    ledger
        .journal
        .append_durable(&Record::Response {
            step: env.step.to_string(),
            at: Utc::now(),
            fingerprint: fp.to_string(),
            response: ledger.referenced.keep_response(
                env.step,
                &response_value(resp),
                env.emitter.secrets(),
            ),
            adopted,
        })
        .await
        .map_err(StepError::from)
}

/// Sends `req` at most once for this step (see the module docs). Returns the answer and
/// the attempts made (0 when an earlier process's answer was used).
pub async fn send(
    conn: &Connection,
    req: &Request,
    env: &StepEnv<'_>,
    ledger: &Ledger,
) -> Result<(Response, u32), StepError> {
    let fp = fingerprint(req, env);
    if let Some(earlier) = earlier_answer(conn, req, env, ledger, &fp).await? {
        return Ok((earlier, 0));
    }
    send_with_intents(conn, req, env, ledger, &fp).await
}

/// The answer an earlier process recorded, or found at the vendor when it stopped after
/// recording its intent; a request that changed since is refused.
async fn earlier_answer(
    conn: &Connection,
    req: &Request,
    env: &StepEnv<'_>,
    ledger: &Ledger,
    fp: &str,
) -> Result<Option<Response>, StepError> {
    let vendor = conn.settings().kind;
    if let Some(r) = &ledger.response {
        if r.fingerprint != fp {
            return Err(changed(env, r.at));
        }
        env.emitter.log(
            env.step,
            format!(
                "using the answer recorded at {} by an earlier process; not sending again",
                r.at.to_rfc3339()
            ),
        );
        return Ok(Some(response_from(&r.response)));
    }
    let Some(i) = &ledger.intent else {
        return Ok(None);
    };
    if i.fingerprint != fp {
        return Err(changed(env, i.at));
    }
    env.emitter.warn(format!(
        "step `{}`: an earlier process stopped after sending (or about to send) this {vendor} request at {} without recording the answer; looking it up before sending again",
        env.step,
        i.at.to_rfc3339()
    ));
    find(conn, req, i.at, env, ledger, fp).await
}

/// Attempts with the step's retry policy, each made durable as an intent before it is sent;
/// after an answer that leaves it unsure whether the vendor acted, the request is looked up
/// before it is sent again.
async fn send_with_intents(
    conn: &Connection,
    req: &Request,
    env: &StepEnv<'_>,
    ledger: &Ledger,
    fp: &str,
) -> Result<(Response, u32), StepError> {
    let observer = StepObserver {
        step: env.step,
        emitter: env.emitter,
    };
    let start = Instant::now();
    let mut backoff = env.retry.backoff();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if env.cancel.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let at = Utc::now();
        ledger
            .journal
            .append_durable(&Record::Intent {
                step: env.step.to_string(),
                at,
                attempt,
                method: req.method.to_string(),
                url: env.emitter.secrets().mask(&redact_url(&req.url)),
                fingerprint: fp.to_string(),
            })
            .await
            .map_err(StepError::from)?;
        crate::failpoint::hit("once-after-intent");
        let sent = conn.send(req, &observer, env.cancel).await;
        super::count_answer(conn, env, &sent);
        let err = match sent {
            Ok(resp) => {
                crate::failpoint::hit("once-before-response");
                record_response(ledger, env, fp, &resp, None).await?;
                return Ok((resp, attempt));
            }
            // The intent stays open: the next run looks the request up.
            Err(VendorError::Cancelled { .. }) => return Err(StepError::Cancelled),
            Err(e) => e,
        };
        // A 5xx or a lost connection may come after the vendor acted; a 4xx means it did not.
        let unsure =
            matches!(err, VendorError::Transport { .. }) || err.status().is_some_and(|s| s >= 500);
        if !unsure {
            ledger.journal.append(&Record::Rejected {
                step: env.step.to_string(),
                at: Utc::now(),
                status: err.status(),
            });
        }
        if !super::pause_before_retry(&err, attempt, &mut backoff, start, env).await? {
            return Err(StepError::Vendor {
                source: Box::new(err),
                attempts: attempt,
            });
        }
        if unsure {
            if let Some(found) = find(conn, req, at, env, ledger, fp).await? {
                return Ok((found, attempt));
            }
        }
    }
}

/// Before a request that must not be repeated is sent for the first time by this run: a
/// usable request with the same parameters that the vendor already holds (Email Audit: a
/// `PENDING` or `COMPLETED` export of the last three weeks; Vault: an export in progress or
/// completed, an open matter of the same name) is adopted instead of creating another. The
/// state that would have said "already sent" may be lost: an evicted CI cache, a job killed
/// before it saved it, a new runner. Not done with `--fresh` (the ledger's `adopt`), nor
/// for requests the workflow marks idempotent. No quota is spent on an adopted request.
pub async fn adopt_existing(
    conn: &Connection,
    req: &Request,
    idempotent: Option<bool>,
    env: &StepEnv<'_>,
) -> Result<Option<Response>, StepError> {
    let Some(ledger) = env.ledger else {
        return Ok(None);
    };
    let Some(listings) = ledger.adopt.as_ref() else {
        return Ok(None);
    };
    if ledger.intent.is_some() || ledger.response.is_some() {
        return Ok(None);
    }
    if idempotent.unwrap_or_else(|| conn.idempotent(req)) {
        return Ok(None);
    }
    let Some(lookup) = conn.adoption(req) else {
        return Ok(None);
    };
    let vendor = conn.settings().kind;
    let pages = listings.pages(conn, &lookup, env).await?;
    let found: Vec<Value> = pages
        .iter()
        .flat_map(|page| conn.lookup_matches(&lookup, page))
        .filter(|e| conn.usable(req, e))
        .collect();
    let Some(first) = found.first().cloned() else {
        return Ok(None);
    };
    warn_if_several(&found, env, vendor);
    let detail = conn.describe_entry(&first);
    let resp = listed_response(first);
    let id = resp.request_id.clone().unwrap_or_else(|| "?".into());
    env.emitter.log(
        env.step,
        format!(
            "{vendor} already holds this request ({id}, {detail}), made by an earlier run whose state is not here; adopting it instead of creating another (--fresh creates a new one)"
        ),
    );
    let adoption = crate::events::Adoption {
        vendor: vendor.to_string(),
        request_id: resp.request_id.clone(),
        detail,
    };
    record_response(
        ledger,
        env,
        &fingerprint(req, env),
        &resp,
        Some(adoption.clone()),
    )
    .await?;
    env.emitter
        .emit(crate::events::Event::adopted(env.step, adoption));
    Ok(Some(resp))
}

/// Every entry of `lookup`'s listing (all its pages) that is the request looked for.
async fn scan(
    conn: &Connection,
    lookup: &crate::vendors::Lookup,
    env: &StepEnv<'_>,
) -> Result<Vec<Value>, StepError> {
    let pages = list_pages(conn, &lookup.request, env).await?;
    Ok(pages
        .iter()
        .flat_map(|page| conn.lookup_matches(lookup, page))
        .collect())
}

/// Every page of the listing `first` starts.
async fn list_pages(
    conn: &Connection,
    first: &Request,
    env: &StepEnv<'_>,
) -> Result<Vec<Response>, StepError> {
    let vendor = conn.settings().kind;
    let mut page_req = first.clone();
    let mut pages = Vec::new();
    // A next page naming one already read is a loop: refused like too many pages.
    let mut asked = std::collections::HashSet::from([fingerprint(&page_req, env)]);
    loop {
        let (page, _) = send_with_retry(conn, &page_req, env).await?;
        let next = conn.next_page(&page_req, &page, &Pagination::default());
        pages.push(page);
        match next {
            Some(next)
                if pages.len() < MAX_LOOKUP_PAGES as usize
                    && asked.insert(fingerprint(&next, env)) =>
            {
                page_req = next;
            }
            Some(_) => {
                return Err(StepError::LookupTooLong {
                    vendor,
                    step: env.step.to_string(),
                    pages: u32::try_from(pages.len()).unwrap_or(u32::MAX),
                })
            }
            None => return Ok(pages),
        }
    }
}

/// What the vendor listed when this run first looked for requests to adopt, by listing
/// (method and URL without its query): one scan per listing and process, however many items
/// of a loop create (1,000 users of one domain read the domain's request list once, not
/// 1,000 times). Requests this run creates afterwards are in its journal, not needed here.
/// The lost-answer lookup never uses it: it must see what happened after its intent.
#[derive(Default)]
pub struct Listings {
    scans: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Scan>>>,
}

/// One listing's pages, read once.
type Scan = tokio::sync::OnceCell<std::sync::Arc<Vec<Response>>>;

impl std::fmt::Debug for Listings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Listings")
    }
}

impl Listings {
    /// The pages of `lookup`'s listing, read on first use (concurrent first uses wait for
    /// one read; a failed read is not kept).
    async fn pages(
        &self,
        conn: &Connection,
        lookup: &crate::vendors::Lookup,
        env: &StepEnv<'_>,
    ) -> Result<std::sync::Arc<Vec<Response>>, StepError> {
        let mut key = lookup.request.url.clone();
        key.set_query(None);
        let key = format!("{} {key}", lookup.request.method);
        let cell = {
            let mut scans = self
                .scans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            scans.entry(key).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            list_pages(conn, &lookup.request, env)
                .await
                .map(std::sync::Arc::new)
        })
        .await
        .cloned()
    }
}

/// The vendor's id of a listed entry: Email Audit `properties.requestId`, Vault `id`
/// (export) or `matterId`.
fn listed_id(v: &Value) -> Option<String> {
    ["/properties/requestId", "/id", "/matterId"]
        .iter()
        .find_map(|p| v.pointer(p).and_then(Value::as_str))
        .map(str::to_string)
}

/// A listed entry as the answer its create would have given.
fn listed_response(entry: Value) -> Response {
    Response {
        status: 201,
        headers: Default::default(),
        request_id: listed_id(&entry),
        body: entry,
    }
}

/// Several entries match: the first is used, the user is told which others exist.
fn warn_if_several(found: &[Value], env: &StepEnv<'_>, vendor: crate::vendors::VendorKind) {
    if found.len() > 1 {
        let ids: Vec<String> = found.iter().filter_map(listed_id).collect();
        env.emitter.warn(format!(
            "step `{}`: {} matching requests at {vendor} ({}); using the first. Check whether the others are someone else's",
            env.step,
            found.len(),
            ids.join(", ")
        ));
    }
}

fn changed(env: &StepEnv<'_>, at: DateTime<Utc>) -> StepError {
    StepError::RequestChanged {
        step: env.step.to_string(),
        at,
    }
}

/// Looks for `req` (sent at or after `since`) at the vendor. `Some`: it was carried out
/// (the answer is recorded); `None`: it was not, or repeating it is harmless.
async fn find(
    conn: &Connection,
    req: &Request,
    since: DateTime<Utc>,
    env: &StepEnv<'_>,
    ledger: &Ledger,
    fp: &str,
) -> Result<Option<Response>, StepError> {
    let vendor = conn.settings().kind;
    let lookup = match conn.recovery(req, since) {
        Recovery::Resend => return Ok(None),
        Recovery::Unknown => {
            return Err(StepError::OutcomeUnknown {
                method: req.method.clone(),
                url: env.emitter.secrets().mask(&redact_url(&req.url)),
                vendor,
                since,
            })
        }
        Recovery::Lookup(l) => l,
    };
    let found = scan(conn, &lookup, env).await?;
    let Some(first) = found.first().cloned() else {
        env.emitter.log(
            env.step,
            format!("{vendor} has no such request: it was not carried out; sending it"),
        );
        return Ok(None);
    };
    warn_if_several(&found, env, vendor);
    let resp = listed_response(first);
    env.emitter.log(
        env.step,
        format!(
            "{vendor} already carried it out (request {}); not sending again",
            resp.request_id.as_deref().unwrap_or("?")
        ),
    );
    record_response(ledger, env, fp, &resp, None).await?;
    Ok(Some(resp))
}
