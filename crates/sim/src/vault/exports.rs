//! `matters.exports.create`, `get`, `list` and `delete`: mail exports that stay `IN_PROGRESS`
//! for a while, then end `COMPLETED` (the documented file set in Cloud Storage: a ZIP per
//! account, metadata, results count, error reports, checksums) or `FAILED`.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use super::archive::{
    account_archive, account_exceptions_csv, checksums_csv, error_csv, metadata_xml,
    results_count_csv, ArchiveError, StoredObject,
};
use axum::response::IntoResponse as _;

use super::errors::{api_error, json_ok, ApiError, ApiStatus};
use super::matters::matter_not_found;
use super::{
    json_body, lock, query_params, remove_export, rfc3339, sweep, unknown_field, Db, Page, Service,
    VaultSim,
};
use crate::google::mbox::MboxSpec;

/// Most exports per `matters.exports.list` page.
const MAX_EXPORTS_PAGE: usize = 100;

/// Where an export is (`status` on the reference page).
#[derive(Debug, Clone)]
pub(super) enum Phase {
    InProgress,
    Completed(Completed),
    Failed,
}

/// What a completed export produced.
#[derive(Debug, Clone)]
pub(super) struct Completed {
    /// `(objectName, size, md5Hash)` per file.
    files: Vec<(String, u64, String)>,
    messages: u64,
    bytes: u64,
}

/// One export of a matter.
#[derive(Debug, Clone)]
pub(super) struct VaultExport {
    pub id: String,
    pub matter_id: String,
    pub name: String,
    pub create_time: DateTime<Utc>,
    /// Creation order (lists are in it).
    seq: u64,
    /// The request's `query` and `exportOptions`, answered as sent.
    query: Value,
    export_options: Value,
    accounts: Vec<String>,
    /// Message dates are spread over this window (Unix seconds).
    window: (i64, i64),
    polls: u32,
    phase: Phase,
}

impl VaultExport {
    pub(super) fn in_progress(&self) -> bool {
        matches!(self.phase, Phase::InProgress)
    }

    fn status(&self) -> &'static str {
        match self.phase {
            Phase::InProgress => "IN_PROGRESS",
            Phase::Completed(_) => "COMPLETED",
            Phase::Failed => "FAILED",
        }
    }

    fn json(&self, requester: &str, bucket: &str) -> Value {
        let mut v = json!({
            "id": self.id,
            "matterId": self.matter_id,
            "name": self.name,
            "query": self.query,
            "exportOptions": self.export_options,
            "createTime": rfc3339(self.create_time),
            "requester": { "email": requester, "displayName": requester },
            "status": self.status(),
        });
        if let Phase::Completed(c) = &self.phase {
            let files: Vec<Value> = c
                .files
                .iter()
                .map(|(object, size, md5)| {
                    json!({
                        "bucketName": bucket,
                        "objectName": object,
                        "size": size.to_string(),
                        "md5Hash": md5,
                    })
                })
                .collect();
            v["cloudStorageSink"] = json!({ "files": files });
            v["stats"] = json!({
                "exportedArtifactCount": c.messages.to_string(),
                "totalArtifactCount": c.messages.to_string(),
                "sizeInBytes": c.bytes.to_string(),
            });
        }
        v
    }
}

/// A validated export request.
struct ExportRequest {
    name: String,
    query: Value,
    export_options: Value,
    accounts: Vec<String>,
    window: (i64, i64),
}

const EXPORT_FIELDS: &[&str] = &[
    "name",
    "query",
    "exportOptions",
    "id",
    "matterId",
    "status",
    "createTime",
    "requester",
    "stats",
    "cloudStorageSink",
    "parentExportId",
];

const QUERY_FIELDS: &[&str] = &[
    "corpus",
    "dataScope",
    "searchMethod",
    "method",
    "accountInfo",
    "orgUnitInfo",
    "sharedDriveInfo",
    "teamDriveInfo",
    "hangoutsChatInfo",
    "sitesUrlInfo",
    "driveDocumentInfo",
    "startTime",
    "endTime",
    "terms",
    "timeZone",
    "mailOptions",
    "driveOptions",
    "hangoutsChatOptions",
    "voiceOptions",
    "calendarOptions",
];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ApiStatus::InvalidArgument, message)
}

/// Checks `corpus`, `dataScope` and `searchMethod` (or the deprecated `method`).
fn check_enums(q: &Map<String, Value>) -> Result<(), ApiError> {
    match q.get("corpus").and_then(Value::as_str) {
        Some("MAIL") => {}
        Some(c @ ("DRIVE" | "GROUPS" | "HANGOUTS_CHAT" | "VOICE" | "CALENDAR")) => {
            return Err(invalid(format!(
                "query.corpus {c}: the simulator exports MAIL only"
            )))
        }
        Some(other) => {
            return Err(invalid(format!(
                "Invalid value at 'export.query.corpus', \"{other}\""
            )))
        }
        None => return Err(invalid("query.corpus is required.")),
    }
    match q.get("dataScope").and_then(Value::as_str) {
        Some("ALL_DATA" | "HELD_DATA" | "UNPROCESSED_DATA") => {}
        Some(other) => {
            return Err(invalid(format!(
                "Invalid value at 'export.query.data_scope', \"{other}\""
            )))
        }
        None => return Err(invalid("query.dataScope is required.")),
    }
    let method = q.get("searchMethod").or_else(|| q.get("method"));
    match method.and_then(Value::as_str) {
        Some("ACCOUNT") => Ok(()),
        Some(
            m @ ("ORG_UNIT" | "ENTIRE_ORG" | "TEAM_DRIVE" | "SHARED_DRIVE" | "ROOM" | "SITES_URL"
            | "DRIVE_DOCUMENT"),
        ) => Err(invalid(format!(
            "query.searchMethod {m}: the simulator searches by ACCOUNT only"
        ))),
        Some(other) => Err(invalid(format!(
            "Invalid value at 'export.query.search_method', \"{other}\""
        ))),
        None => Err(invalid("query.searchMethod is required.")),
    }
}

/// `accountInfo.emails`: at least one address, each in the admin's domain.
fn check_accounts(q: &Map<String, Value>, domain: &str) -> Result<Vec<String>, ApiError> {
    let Some(emails) = q
        .get("accountInfo")
        .and_then(|a| a.get("emails"))
        .and_then(Value::as_array)
    else {
        return Err(invalid(
            "query.accountInfo.emails is required with searchMethod ACCOUNT.",
        ));
    };
    let mut out: Vec<String> = Vec::new();
    for e in emails {
        let Some(addr) = e.as_str().map(|s| s.trim().to_ascii_lowercase()) else {
            return Err(invalid("query.accountInfo.emails must be strings."));
        };
        match addr.rsplit_once('@') {
            Some((local, d)) if !local.is_empty() && d == domain => {}
            Some((local, _)) if !local.is_empty() => {
                return Err(ApiError::new(
                    ApiStatus::InvalidArgument,
                    format!("Account {addr} is not in the domain {domain} of this organization."),
                ))
            }
            _ => return Err(invalid(format!("Invalid email address: {addr}"))),
        }
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(invalid("query.accountInfo.emails must not be empty."));
    }
    Ok(out)
}

/// `startTime`/`endTime` (RFC 3339, start before end); default: the year before `now`.
fn check_window(q: &Map<String, Value>, now: DateTime<Utc>) -> Result<(i64, i64), ApiError> {
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| Some(t.timestamp()))
                .ok_or_else(|| {
                    invalid(format!(
                        "Invalid value at 'export.query.{k}' (type.googleapis.com/google.protobuf.Timestamp), {v}"
                    ))
                }),
        }
    };
    let end = time("endTime")?.unwrap_or(now.timestamp());
    let begin = time("startTime")?.unwrap_or(end - 365 * 86_400);
    if begin >= end {
        return Err(invalid("query.startTime must be before query.endTime."));
    }
    for k in ["terms", "timeZone"] {
        if q.get(k).is_some_and(|v| !v.is_string()) {
            return Err(invalid(format!("query.{k} must be a string.")));
        }
    }
    Ok((begin, end))
}

/// `exportOptions.mailOptions.exportFormat`: MBOX (the default); PST is not produced here.
fn check_options(options: Option<&Value>) -> Result<Value, ApiError> {
    let Some(options) = options else {
        return Ok(json!({ "mailOptions": { "exportFormat": "MBOX" } }));
    };
    let format = options
        .get("mailOptions")
        .and_then(|m| m.get("exportFormat"))
        .and_then(Value::as_str);
    match format {
        None | Some("MBOX") => Ok(options.clone()),
        Some("PST") => Err(invalid(
            "exportOptions.mailOptions.exportFormat PST: the simulator produces MBOX only",
        )),
        Some(other) => Err(invalid(format!(
            "Invalid value at 'export.export_options.mail_options.export_format', \"{other}\""
        ))),
    }
}

fn read_request(body: &[u8], domain: &str, now: DateTime<Utc>) -> Result<ExportRequest, ApiError> {
    let obj = json_body(body)?;
    if let Some(r) = unknown_field(&obj, EXPORT_FIELDS, "export") {
        return Err(r);
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("Export name is required."))?
        .to_string();
    let Some(Value::Object(q)) = obj.get("query") else {
        return Err(invalid("Export query is required."));
    };
    if let Some(r) = unknown_field(q, QUERY_FIELDS, "export.query") {
        return Err(r);
    }
    check_enums(q)?;
    let accounts = check_accounts(q, domain)?;
    let window = check_window(q, now)?;
    let export_options = check_options(obj.get("exportOptions"))?;
    Ok(ExportRequest {
        name,
        query: Value::Object(q.clone()),
        export_options,
        accounts,
        window,
    })
}

impl VaultSim {
    /// The domain of the admin the exports are made as (lowercase).
    fn domain(&self) -> String {
        let admin = &self.cfg.credentials.google_admin_email;
        admin
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default()
    }

    fn export_json(&self, e: &VaultExport) -> Value {
        e.json(&self.cfg.credentials.google_admin_email, &self.bucket)
    }

    /// Ends an export that has been polled and aged enough: FAILED when it includes the
    /// configured failing account, else COMPLETED with one archive per account.
    fn progress(&self, st: &mut Db, id: &str, now: DateTime<Utc>) {
        let Some(e) = st.exports.get(id) else { return };
        let aged = now - e.create_time
            >= TimeDelta::from_std(self.cfg.vault_export_duration).unwrap_or(TimeDelta::MAX);
        if !e.in_progress() || e.polls < self.cfg.vault_pending_polls || !aged {
            return;
        }
        let failing = self.cfg.vault_failing_account.as_deref();
        let phase = if failing.is_some_and(|f| e.accounts.iter().any(|a| a.eq_ignore_ascii_case(f)))
        {
            Phase::Failed
        } else {
            match self.write_archives(st, id, now) {
                Ok(c) => Phase::Completed(c),
                Err(msg) => {
                    tracing::error!("vault sim: {msg}");
                    Phase::Failed
                }
            }
        };
        if let Some(e) = st.exports.get_mut(id) {
            e.phase = phase;
        }
    }

    /// Whether the organization has `account` (see `vault_directory`).
    fn knows(&self, account: &str) -> bool {
        self.cfg
            .vault_directory
            .as_ref()
            .is_none_or(|d| d.iter().any(|a| a.eq_ignore_ascii_case(account)))
    }

    /// Writes the documented file set of a completed export: `{name}-N.zip` per account with
    /// mail, `{name}-metadata.xml`, `{name}-results-count.csv`, `error.csv` and
    /// `{name}-account-exceptions.csv` when an account is unknown (it gets no mail), and the
    /// checksums file listing the MD5 of all of them.
    fn write_archives(
        &self,
        st: &mut Db,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Completed, ArchiveError> {
        let e = st.exports.get(id).ok_or(ArchiveError::Vanished)?.clone();
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut counts: Vec<(String, u64)> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for (n, account) in e.accounts.iter().enumerate() {
            if !self.knows(account) {
                unknown.push(account.clone());
                continue;
            }
            let spec = MboxSpec {
                request_id: e.seq,
                user_email: account.clone(),
                file_no: n as u32,
                target_size: self.cfg.vault_mbox_size,
                headers_only: false,
                begin: e.window.0,
                end: e.window.1,
            };
            let short = self
                .cfg
                .vault_short_account
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(account));
            let a = account_archive(spec, short)?;
            files.push((format!("{}-{}.zip", e.name, counts.len() + 1), a.zip));
            counts.push((account.clone(), a.messages));
        }
        files.push((
            format!("{}-metadata.xml", e.name),
            metadata_xml(&e.name, &counts).into_bytes(),
        ));
        files.push((
            format!("{}-results-count.csv", e.name),
            results_count_csv(&counts).into_bytes(),
        ));
        if !unknown.is_empty() {
            files.push(("error.csv".into(), error_csv(&unknown).into_bytes()));
            files.push((
                format!("{}-account-exceptions.csv", e.name),
                account_exceptions_csv(&unknown).into_bytes(),
            ));
        }
        let checksums = checksums_csv(&files).into_bytes();
        files.push((format!("{}-checksums.csv", e.name), checksums));
        let mut done = Completed {
            files: Vec::new(),
            messages: counts.iter().map(|(_, n)| n).sum(),
            bytes: 0,
        };
        for (n, (name, bytes)) in files.into_iter().enumerate() {
            let object = format!("{}/{}/{name}", e.matter_id, e.id);
            let generation = now.timestamp_micros() + n as i64;
            let stored = StoredObject::new(bytes, &e.id, generation, rfc3339(now));
            done.files.push((
                object.clone(),
                stored.bytes.len() as u64,
                stored.md5_b64.clone(),
            ));
            done.bytes += stored.bytes.len() as u64;
            st.objects
                .insert((self.bucket.clone(), object), Arc::new(stored));
        }
        Ok(done)
    }
}

pub(super) async fn create_export(
    State(sim): State<Arc<VaultSim>>,
    Path(matter): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = sim.guard(Service::VaultWrite, &headers).await {
        return r;
    }
    let now = sim.now();
    if !lock(&sim.state).matters.contains_key(&matter) {
        return matter_not_found(&matter);
    }
    let req = match read_request(&body, &sim.domain(), now) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let mut st = lock(&sim.state);
    sweep(&mut st, now, sim.retention());
    let running = st.exports.values().filter(|e| e.in_progress()).count();
    let limit = sim.cfg.vault_max_in_progress as usize;
    if running >= limit {
        return api_error(
            ApiStatus::ResourceExhausted,
            format!(
                "You can have no more than {limit} exports in progress across your organization."
            ),
        );
    }
    st.created += 1;
    let e = VaultExport {
        id: format!("exportly-{}", uuid::Uuid::new_v4()),
        matter_id: matter,
        name: req.name,
        create_time: now,
        seq: st.created,
        query: req.query,
        export_options: req.export_options,
        accounts: req.accounts,
        window: req.window,
        polls: 0,
        phase: Phase::InProgress,
    };
    let answer = sim.export_json(&e);
    st.exports.insert(e.id.clone(), e);
    json_ok(&answer)
}

pub(super) async fn get_export(
    State(sim): State<Arc<VaultSim>>,
    Path((matter, export)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (mut st, now) = match open_matter(&sim, &headers, Service::VaultRead, &matter).await {
        Ok(open) => open,
        Err(r) => return r,
    };
    match st.exports.get_mut(&export) {
        Some(e) if e.matter_id == matter => e.polls = e.polls.saturating_add(1),
        _ => return export_not_found(&export),
    }
    sim.progress(&mut st, &export, now);
    match st.exports.get(&export) {
        Some(e) => json_ok(&sim.export_json(e)),
        None => export_not_found(&export),
    }
}

pub(super) async fn list_exports(
    State(sim): State<Arc<VaultSim>>,
    Path(matter): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = sim.guard(Service::VaultRead, &headers).await {
        return r;
    }
    let params = query_params(raw.as_deref());
    let scope = format!("exports/{matter}");
    let page = match Page::read(&params, &scope, MAX_EXPORTS_PAGE) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let now = sim.now();
    let mut st = lock(&sim.state);
    if !st.matters.contains_key(&matter) {
        return matter_not_found(&matter);
    }
    sweep(&mut st, now, sim.retention());
    let mut mine: Vec<&VaultExport> = st
        .exports
        .values()
        .filter(|e| e.matter_id == matter)
        .collect();
    mine.sort_by_key(|e| e.seq);
    let items: Vec<Value> = mine
        .iter()
        .skip(page.start)
        .take(page.size)
        .map(|e| sim.export_json(e))
        .collect();
    let mut out = json!({});
    if !items.is_empty() {
        out["exports"] = Value::Array(items);
    }
    if let Some(t) = page.next_token(mine.len(), &scope) {
        out["nextPageToken"] = t.into();
    }
    json_ok(&out)
}

pub(super) async fn delete_export(
    State(sim): State<Arc<VaultSim>>,
    Path((matter, export)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (mut st, _) = match open_matter(&sim, &headers, Service::VaultWrite, &matter).await {
        Ok(open) => open,
        Err(r) => return r,
    };
    if st
        .exports
        .get(&export)
        .is_none_or(|e| e.matter_id != matter)
    {
        return export_not_found(&export);
    }
    remove_export(&mut st, &export);
    json_ok(&json!({}))
}

/// The database, expired exports swept, once the caller may use `service` and `matter`
/// exists (the checks every export handler makes first, in this order); else the answer.
async fn open_matter<'a>(
    sim: &'a VaultSim,
    headers: &HeaderMap,
    service: Service,
    matter: &str,
) -> Result<(std::sync::MutexGuard<'a, Db>, DateTime<Utc>), Response> {
    if let Some(r) = sim.guard(service, headers).await {
        return Err(r);
    }
    let now = sim.now();
    let mut st = lock(&sim.state);
    if !st.matters.contains_key(matter) {
        return Err(matter_not_found(matter));
    }
    sweep(&mut st, now, sim.retention());
    Ok((st, now))
}

fn export_not_found(id: &str) -> Response {
    api_error(
        ApiStatus::NotFound,
        format!("Requested entity was not found. (export {id})"),
    )
}
