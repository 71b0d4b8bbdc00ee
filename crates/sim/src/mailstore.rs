//! Simulated MailStore Server Administration API (Basic auth, long-running processes).
//!
//! Follows MailStore's "Administration API - Using the API" page and its Python wrapper:
//! `POST /api/invoke/<Function>` with form-urlencoded arguments, `POST /api/get-status` to long
//! poll a running process, `POST /api/cancel-async` to cancel one, `POST /api/get-metadata`
//! for the function list (a bare JSON array; the wrapper extends a list with it). Every JSON
//! answer starts with a UTF-8 BOM. A function that fails answers HTTP 200 with
//! `statusCode: "failed"` and `error: {message, details}`.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{bump, Faults, Injected, SimConfig};

mod directory;
#[cfg(test)]
mod tests;

/// Largest request body read.
const BODY_LIMIT: usize = 1 << 20;
/// Longest a get-status call waits, whatever `millisecondsTimeout` asks.
const MAX_POLL_WAIT: Duration = Duration::from_secs(600);
/// The status version of a first answer that completes at once (as on the page).
const SYNC_STATUS_VERSION: i64 = 2;
/// The status version of a long-running process's first answer (as on the page).
const FIRST_ASYNC_STATUS_VERSION: i64 = 3;
const SERVER_VERSION: &str = "13.2.1.20465";
const MACHINE_NAME: &str = "MAILSTORE-SIM";

/// The simulated MailStore service.
pub struct MailStoreSim {
    username: String,
    password: String,
    stores: Vec<i64>,
    failing_stores: Vec<i64>,
    steps: u32,
    step_interval: Duration,
    faults: Arc<Faults>,
    processes: Mutex<HashMap<String, Arc<Process>>>,
    keep_final_token: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A long-running process (VerifyStore) and what its status pollers see.
struct Process {
    state: Mutex<ProcState>,
    /// The current status version, for long polls to wait on.
    version: watch::Sender<i64>,
    cancel: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::Running => "running",
            Code::Succeeded => "succeeded",
            Code::Failed => "failed",
            Code::Cancelled => "cancelled",
        }
    }
}

struct ProcState {
    version: i64,
    code: Code,
    percent: Option<i64>,
    /// Log lines with the status version that added them.
    log: Vec<(i64, String)>,
    error: Option<(String, String)>,
    /// The last status version this server sent to a client for this process.
    last_sent: i64,
    /// Final statuses keep the token (see `SimConfig::mailstore_keep_final_token`).
    keep_token: bool,
}

impl ProcState {
    /// The status as JSON, with the log lines added after `since`.
    fn to_json(&self, token: &str, since: i64) -> Value {
        let log: String = self
            .log
            .iter()
            .filter(|(v, _)| *v > since)
            .map(|(_, line)| format!("{line}\r\n"))
            .collect();
        let running = self.code == Code::Running;
        json!({
            "error": self.error.as_ref().map(|(m, d)| json!({ "message": m, "details": d })),
            "token": if running || self.keep_token { json!(token) } else { Value::Null },
            "statusVersion": self.version,
            "statusCode": self.code.as_str(),
            "percentProgress": self.percent,
            "statusText": null,
            "result": null,
            "logOutput": if log.is_empty() { Value::Null } else { json!(log) },
        })
    }

    /// Moves to a new status version with these log lines.
    fn advance(&mut self, by: i64, lines: Vec<String>) {
        self.version += by;
        let v = self.version;
        self.log.extend(lines.into_iter().map(|l| (v, l)));
    }
}

/// An API function the server knows, for `get-metadata`.
struct Function {
    name: &'static str,
    args: &'static [(&'static str, &'static str, bool)],
}

const FUNCTIONS: &[Function] = &[
    Function {
        name: "GetServerInfo",
        args: &[],
    },
    Function {
        name: "GetStores",
        args: &[("includeSize", "bool", true)],
    },
    Function {
        name: "VerifyStore",
        args: &[("id", "number", false), ("includeIndexes", "bool", true)],
    },
    Function {
        name: "VerifyStores",
        args: &[("includeIndexes", "bool", true)],
    },
    Function {
        name: "GetUsers",
        args: &[],
    },
    Function {
        name: "GetUserInfo",
        args: &[("userName", "string", false)],
    },
    Function {
        name: "GetFolderStatistics",
        args: &[("timeoutMSec", "number", true)],
    },
    Function {
        name: "GetWorkerResults",
        args: &[
            ("fromIncluding", "datetime", false),
            ("toExcluding", "datetime", false),
            ("timeZoneID", "string", false),
            ("profileID", "number", true),
            ("userName", "string", true),
        ],
    },
];

impl MailStoreSim {
    pub(crate) fn new(cfg: &SimConfig, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(MailStoreSim {
            username: cfg.credentials.mailstore_username.clone(),
            password: cfg.credentials.mailstore_password.clone(),
            stores: cfg.mailstore_stores.clone(),
            failing_stores: cfg.mailstore_failing_stores.clone(),
            steps: cfg.mailstore_steps.max(1),
            // Simulated time between updates, taken in real time at the configured scale.
            step_interval: crate::timing::real_duration(
                cfg.mailstore_step_interval,
                cfg.time_scale,
            ),
            faults,
            processes: Mutex::new(HashMap::new()),
            keep_final_token: cfg.mailstore_keep_final_token,
        })
    }

    /// The service's routes, sharing this state.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(dispatch).with_state(self)
    }

    /// Test hook: how many processes are still running.
    pub fn running_processes(&self) -> usize {
        lock(&self.processes)
            .values()
            .filter(|p| lock(&p.state).code == Code::Running)
            .count()
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("Basic") {
            return false;
        }
        let Ok(raw) = STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        // MailStore user names are case-insensitive; passwords are not.
        user.eq_ignore_ascii_case(&self.username) && password == self.password
    }

    fn invoke(self: &Arc<Self>, function: &str, args: &Args) -> Response {
        match function {
            "GetServerInfo" => bom_json(&succeeded(json!({
                "version": SERVER_VERSION,
                "machineName": MACHINE_NAME,
            }))),
            "GetStores" => match args.opt_bool("includeSize") {
                Ok(include_size) => bom_json(&succeeded(self.stores_json(include_size))),
                Err(e) => bom_json(&e),
            },
            "VerifyStore" => self.verify_store(args),
            "VerifyStores" => self.verify_stores(args),
            "GetUsers" => bom_json(&directory::get_users()),
            "GetUserInfo" => bom_json(&directory::get_user_info(args)),
            "GetFolderStatistics" => bom_json(&directory::get_folder_statistics(args)),
            "GetWorkerResults" => bom_json(&directory::get_worker_results(args)),
            _ => bom_json(&failed(
                &format!("Unknown function '{function}'."),
                &format!("The function '{function}' is not part of the Administration API."),
            )),
        }
    }

    fn stores_json(&self, include_size: Option<bool>) -> Value {
        let stores: Vec<Value> = self
            .stores
            .iter()
            .map(|id| {
                let mut s = json!({
                    "id": id,
                    "name": format!("Archive store {id}"),
                    "type": "FileSystemInternal",
                    "requestedState": "normal",
                    "state": "normal",
                    "databaseName": null,
                    "databasePath": format!("C:\\MailArchive\\Store{id}"),
                    "contentPath": null,
                    "indexPath": null,
                    "serverName": null,
                    "userName": null,
                    "error": null,
                    "searchIndexesNeedUpgrade": false,
                });
                if include_size == Some(true) {
                    s["size"] = json!(1_048_576 * (100 + id * 37));
                }
                s
            })
            .collect();
        json!(stores)
    }

    /// `VerifyStore`: starts a verification process and answers its first status.
    fn verify_store(self: &Arc<Self>, args: &Args) -> Response {
        let id = match args.required_i64("id") {
            Ok(id) => id,
            Err(e) => return bom_json(&e),
        };
        if let Err(e) = args.opt_bool("includeIndexes") {
            return bom_json(&e);
        }
        if !self.stores.contains(&id) {
            return bom_json(&failed(
                &format!("Archive store with ID {id} not found."),
                &format!(
                    "No archive store with ID {id} is attached to this MailStore Server. \
                     Use GetStores to list the archive stores."
                ),
            ));
        }
        self.start_verify(&[id])
    }

    /// `VerifyStores`: verifies every attached store in one process.
    fn verify_stores(self: &Arc<Self>, args: &Args) -> Response {
        if let Err(e) = args.opt_bool("includeIndexes") {
            return bom_json(&e);
        }
        let stores = self.stores.clone();
        self.start_verify(&stores)
    }

    /// Starts a verification process over `ids` and answers its first status.
    fn start_verify(self: &Arc<Self>, ids: &[i64]) -> Response {
        let id = ids.first().copied().unwrap_or(0);
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let v = FIRST_ASYNC_STATUS_VERSION;
        let state = ProcState {
            version: v,
            code: Code::Running,
            percent: Some(0),
            log: ids
                .iter()
                .map(|id| (v, format!("Verifying file group #{id}...")))
                .chain([(
                    v,
                    "Creating a list of messages to be verified...".to_string(),
                )])
                .collect(),
            keep_token: self.keep_final_token,
            error: None,
            last_sent: v,
        };
        let first = state.to_json(&token, 0);
        let (tx, _) = watch::channel(v);
        let process = Arc::new(Process {
            state: Mutex::new(state),
            version: tx,
            cancel: CancellationToken::new(),
        });
        lock(&self.processes).insert(token, process.clone());
        let plan = VerifyPlan {
            store: id,
            damaged: ids.iter().any(|i| self.failing_stores.contains(i)),
            steps: self.steps,
            interval: self.step_interval,
        };
        tokio::spawn(plan.run(process));
        bom_json(&first)
    }

    /// `get-status`: long poll for a status newer than `lastKnownStatusVersion`.
    async fn get_status(&self, args: &Args) -> Response {
        let token = match args.required("token") {
            Ok(t) => t.to_string(),
            Err(e) => return bom_json(&e),
        };
        let last_known = match args.required_i64("lastKnownStatusVersion") {
            Ok(v) => v,
            Err(e) => return bom_json(&e),
        };
        let timeout_ms = match args.required_i64("millisecondsTimeout") {
            Ok(ms) if ms >= 0 => ms as u64,
            Ok(_) => {
                return bom_json(&failed(
                    "Invalid argument 'millisecondsTimeout'.",
                    "millisecondsTimeout must not be negative.",
                ))
            }
            Err(e) => return bom_json(&e),
        };
        let Some(process) = lock(&self.processes).get(&token).cloned() else {
            return bom_json(&failed(
                "Invalid status token.",
                &format!("No process with token '{token}' is known to this server."),
            ));
        };
        // Subscribe before looking, so that an update in between still wakes us.
        let mut rx = process.version.subscribe();
        let must_wait = {
            let st = lock(&process.state);
            if last_known != st.last_sent {
                bump(&self.faults.stats.wrong_status_versions);
            }
            st.version <= last_known && st.code == Code::Running
        };
        if must_wait {
            let wait = Duration::from_millis(timeout_ms).min(MAX_POLL_WAIT);
            let _ = tokio::time::timeout(wait, async {
                while rx.changed().await.is_ok() {
                    if *rx.borrow_and_update() > last_known {
                        break;
                    }
                }
            })
            .await;
        }
        let mut st = lock(&process.state);
        let answer = st.to_json(&token, last_known);
        st.last_sent = st.version;
        bom_json(&answer)
    }

    /// `cancel-async`: cancels a running process. Like the real API it does not report
    /// whether anything was cancelled; the process ends with `statusCode: "cancelled"`.
    fn cancel_async(&self, args: &Args) -> Response {
        let token = match args.required("token") {
            Ok(t) => t,
            Err(e) => return bom_json(&e),
        };
        let Some(process) = lock(&self.processes).get(token).cloned() else {
            return bom_json(&failed(
                "Invalid status token.",
                &format!("No process with token '{token}' is known to this server."),
            ));
        };
        let cancelled_now = {
            let mut st = lock(&process.state);
            if st.code == Code::Running {
                st.code = Code::Cancelled;
                st.error = Some((
                    "The operation has been cancelled by the user.".to_string(),
                    "CancelAsync was called for this process.".to_string(),
                ));
                st.advance(1, vec!["Operation cancelled by user.".to_string()]);
                Some(st.version)
            } else {
                None
            }
        };
        if let Some(v) = cancelled_now {
            process.cancel.cancel();
            process.version.send_replace(v);
            bump(&self.faults.stats.mailstore_cancelled);
        }
        bom_json(&succeeded(Value::Null))
    }

    fn metadata(&self) -> Response {
        let functions: Vec<Value> = FUNCTIONS
            .iter()
            .map(|f| {
                let args: Vec<Value> = f
                    .args
                    .iter()
                    .map(|(name, ty, nullable)| {
                        json!({ "name": name, "type": ty, "nullable": nullable })
                    })
                    .collect();
                json!({ "name": f.name, "args": args })
            })
            .collect();
        bom_json(&json!(functions))
    }
}

/// What a VerifyStore process does, step by step.
struct VerifyPlan {
    store: i64,
    damaged: bool,
    steps: u32,
    interval: Duration,
}

impl VerifyPlan {
    fn total_messages(&self) -> i64 {
        250 * i64::from(self.steps) + (self.store.rem_euclid(97)) * 7 + 49
    }

    /// Messages verified after `step` (of `steps`), once past the first step.
    fn verified_after(&self, step: u32) -> i64 {
        let done = if self.steps <= 1 {
            self.total_messages()
        } else {
            self.total_messages() * i64::from(step - 1) / i64::from(self.steps - 1)
        };
        if self.damaged && step == self.steps {
            done * 2 / 3
        } else {
            done
        }
    }

    async fn run(self, process: Arc<Process>) {
        let total = self.total_messages();
        let mut verified = 0i64;
        for step in 1..=self.steps {
            tokio::select! {
                _ = process.cancel.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let mut lines = Vec::new();
            if step == 1 {
                lines.push(format!("{total} messages are about to be verified."));
                lines.push("Verifying...".to_string());
            }
            let now = self.verified_after(step);
            let mut hundred = verified / 100 * 100 + 100;
            while hundred <= now && hundred < total {
                lines.push(format!("  {hundred} messages verified..."));
                hundred += 100;
            }
            verified = now;
            let last = step == self.steps;
            let mut st = lock(&process.state);
            if st.code != Code::Running {
                return;
            }
            if last && self.damaged {
                lines.push(format!(
                    "Error: message #{} in file group #{} cannot be read.",
                    verified + 1,
                    self.store
                ));
                st.code = Code::Failed;
                st.error = Some((
                    format!(
                        "Store {} is damaged: {} messages could not be verified.",
                        self.store,
                        total - verified
                    ),
                    format!(
                        "File group #{} contains unreadable data starting at message #{}. \
                         Restore the archive store from a backup or contact support.",
                        self.store,
                        verified + 1
                    ),
                ));
            } else if last {
                lines.push(format!("  {total} messages verified."));
                lines.push("Finished. No errors have been found.".to_string());
                st.code = Code::Succeeded;
                st.percent = Some(100);
            } else {
                st.percent = Some((i64::from(step) * 100 / i64::from(self.steps)).min(99));
            }
            // Versions move in uneven steps, as on the real server.
            st.advance(1 + i64::from(step % 3), lines);
            let v = st.version;
            drop(st);
            process.version.send_replace(v);
        }
    }
}

/// Routes: Basic auth first, then faults, then the API.
async fn dispatch(State(sim): State<Arc<MailStoreSim>>, req: Request) -> Response {
    if !sim.authorized(req.headers()) {
        bump(&sim.faults.stats.unauthenticated);
        let mut resp = (StatusCode::UNAUTHORIZED, "401 Unauthorized").into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"MailStore Server\""),
        );
        return resp;
    }
    match sim.faults.draw("mailstore").await {
        Injected::TooManyRequests => {
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, "Too many requests").into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
        Injected::ServerError(status) => return super::server_error(status),
        Injected::None => {}
    }
    let path = req.uri().path().to_string();
    let known = path.starts_with("/api/invoke/")
        || matches!(
            path.as_str(),
            "/api/get-status" | "/api/cancel-async" | "/api/get-metadata"
        );
    if !known {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    }
    if req.method() != Method::POST {
        let mut resp = (StatusCode::METHOD_NOT_ALLOWED, "Use POST").into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let Ok(body) = axum::body::to_bytes(req.into_body(), BODY_LIMIT).await else {
        return bom_json(&failed(
            "The request body could not be read.",
            "The body is unreadable or larger than 1 MiB.",
        ));
    };
    if !body.is_empty() && !is_form {
        return bom_json(&failed(
            "Unsupported request content type.",
            "Arguments must be sent form-urlencoded with \
             Content-Type: application/x-www-form-urlencoded.",
        ));
    }
    let args = match parse_form(&body) {
        Ok(pairs) => Args(pairs),
        Err(e) => return bom_json(&failed("Malformed arguments.", &e.to_string())),
    };
    match path.as_str() {
        "/api/get-status" => sim.get_status(&args).await,
        "/api/cancel-async" => sim.cancel_async(&args),
        "/api/get-metadata" => sim.metadata(),
        // Alias kept for callers that invoke CancelAsync like a function.
        "/api/invoke/CancelAsync" => sim.cancel_async(&args),
        _ => {
            let function = path.trim_start_matches("/api/invoke/");
            sim.invoke(function, &args)
        }
    }
}

/// A form body that cannot be decoded; the text goes into the answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormError {
    #[error("The body is not UTF-8.")]
    BodyNotUtf8,
    #[error("Invalid percent escape in '{0}'.")]
    Escape(String),
    #[error("'{0}' does not decode to UTF-8.")]
    NotUtf8(String),
}

/// Parses an `application/x-www-form-urlencoded` body: `&`-separated `name=value` pairs,
/// `+` for space, `%XX` escapes, UTF-8. Order is kept; empty pieces are skipped.
pub(super) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::BodyNotUtf8)?;
    text.split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            Ok((form_decode(name)?, form_decode(value)?))
        })
        .collect()
}

fn form_decode(s: &str) -> Result<String, FormError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| FormError::Escape(s.to_string()))?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8(s.to_string()))
}

/// Decoded form arguments.
struct Args(Vec<(String, String)>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, Value> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            failed(
                &format!("Missing argument '{name}'."),
                &format!("The argument '{name}' is required."),
            )
        })
    }

    /// An optional number; blank counts as absent.
    fn opt_i64(&self, name: &str) -> Result<Option<i64>, Value> {
        match self.get(name).map(str::trim) {
            None | Some("") | Some("null") => Ok(None),
            Some(_) => self.required_i64(name).map(Some),
        }
    }

    fn required_i64(&self, name: &str) -> Result<i64, Value> {
        let raw = self.required(name)?;
        raw.trim().parse().map_err(|_| {
            failed(
                &format!("Invalid argument '{name}'."),
                &format!("'{raw}' is not a valid number."),
            )
        })
    }

    /// An optional boolean, `true`/`false` as the wrapper sends them (json.dumps).
    fn opt_bool(&self, name: &str) -> Result<Option<bool>, Value> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(failed(
                &format!("Invalid argument '{name}'."),
                &format!("'{v}' is not a valid boolean (true or false)."),
            )),
        }
    }
}

/// The answer of a function that completed at once.
fn succeeded(result: Value) -> Value {
    json!({
        "error": null,
        "token": null,
        "statusVersion": SYNC_STATUS_VERSION,
        "statusCode": "succeeded",
        "percentProgress": null,
        "statusText": null,
        "result": result,
        "logOutput": null,
    })
}

/// The answer of a function that failed at once.
fn failed(message: &str, details: &str) -> Value {
    json!({
        "error": { "message": message, "details": details },
        "token": null,
        "statusVersion": SYNC_STATUS_VERSION,
        "statusCode": "failed",
        "percentProgress": null,
        "statusText": null,
        "result": null,
        "logOutput": null,
    })
}

/// HTTP 200, `application/json`, a UTF-8 BOM, then the JSON; with the page's cache headers.
fn bom_json(value: &Value) -> Response {
    let mut body = vec![0xEF, 0xBB, 0xBF];
    body.extend_from_slice(value.to_string().as_bytes());
    let mut resp = Response::new(Body::from(body));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(
            "no-cache,private,no-store,must-revalidate,max-stale=0,post-check=0,pre-check=0",
        ),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
