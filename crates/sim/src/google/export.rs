//! One mailbox export: its request options, life phases, retention and Atom entry.
use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use tokio::sync::watch;

use super::atom::EntryView;
use super::mbox::MboxSpec;
use super::{retention, rfc3339_millis, GoogleSim, DATE_FMT, EXPORT_PATH, FILE_PATH};

/// Where an export is in its life.
#[derive(Debug, Clone)]
pub(super) enum Phase {
    Pending,
    /// Files are being encrypted; the receiver turns true when done (shown as `PENDING`).
    Generating(watch::Receiver<bool>),
    Completed,
    Error,
    MarkedDelete,
    Deleted,
    Expired,
}

impl Phase {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Phase::Pending | Phase::Generating(_) => "PENDING",
            Phase::Completed => "COMPLETED",
            Phase::Error => "ERROR",
            Phase::MarkedDelete => "MARKED_DELETE",
            Phase::Deleted => "DELETED",
            Phase::Expired => "EXPIRED",
        }
    }

    pub(super) fn files_available(&self) -> bool {
        matches!(self, Phase::Completed | Phase::MarkedDelete)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Package {
    FullMessage,
    HeaderOnly,
}

impl Package {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Package::FullMessage => "FULL_MESSAGE",
            Package::HeaderOnly => "HEADER_ONLY",
        }
    }
}

/// The options of an export request.
#[derive(Debug, Clone)]
pub(super) struct ExportOptions {
    pub(super) begin: Option<NaiveDateTime>,
    pub(super) end: Option<NaiveDateTime>,
    pub(super) include_deleted: bool,
    pub(super) search_query: Option<String>,
    pub(super) package: Package,
}

/// A create request's properties the API refuses (400).
#[derive(Debug, thiserror::Error)]
pub(super) enum OptionsError {
    #[error("property '{0}' is given more than once")]
    Repeated(String),
    #[error("{name} '{value}' is not a date of the form YYYY-MM-DD HH:MM")]
    Date { name: String, value: String },
    #[error("includeDeleted '{0}' is not true or false")]
    IncludeDeleted(String),
    #[error("packageContent '{0}' is not FULL_MESSAGE or HEADER_ONLY")]
    PackageContent(String),
    #[error("beginDate {begin} is after endDate {end}")]
    BeginAfterEnd { begin: String, end: String },
}

/// Reads the create-request properties; unknown properties are ignored as the service does.
pub(super) fn parse_options(props: &[(String, String)]) -> Result<ExportOptions, OptionsError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut opts = ExportOptions {
        begin: None,
        end: None,
        include_deleted: false,
        search_query: None,
        package: Package::FullMessage,
    };
    for (name, value) in props {
        let known = [
            "beginDate",
            "endDate",
            "includeDeleted",
            "searchQuery",
            "packageContent",
        ];
        let Some(known) = known.iter().find(|k| **k == name.as_str()) else {
            continue;
        };
        if seen.contains(known) {
            return Err(OptionsError::Repeated(name.clone()));
        }
        seen.push(known);
        let value = value.trim();
        match *known {
            "beginDate" | "endDate" => {
                let date = NaiveDateTime::parse_from_str(value, DATE_FMT).map_err(|_| {
                    OptionsError::Date {
                        name: name.clone(),
                        value: value.to_string(),
                    }
                })?;
                if *known == "beginDate" {
                    opts.begin = Some(date);
                } else {
                    opts.end = Some(date);
                }
            }
            "includeDeleted" => {
                opts.include_deleted = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(OptionsError::IncludeDeleted(value.to_string())),
                }
            }
            "searchQuery" => {
                opts.search_query = (!value.is_empty()).then(|| value.to_string());
            }
            _ => {
                opts.package = match value {
                    "FULL_MESSAGE" => Package::FullMessage,
                    "HEADER_ONLY" => Package::HeaderOnly,
                    _ => return Err(OptionsError::PackageContent(value.to_string())),
                }
            }
        }
    }
    if let (Some(b), Some(e)) = (opts.begin, opts.end) {
        if b > e {
            return Err(OptionsError::BeginAfterEnd {
                begin: b.format(DATE_FMT).to_string(),
                end: e.format(DATE_FMT).to_string(),
            });
        }
    }
    Ok(opts)
}

/// One encrypted file on disk.
#[derive(Debug, Clone)]
pub(super) struct FileInfo {
    pub(super) token: String,
    pub(super) path: PathBuf,
    pub(super) plaintext_sha256: String,
}

#[derive(Debug)]
pub(super) struct Export {
    pub(super) id: u64,
    pub(super) domain: String,
    pub(super) user: String,
    pub(super) admin: String,
    pub(super) requested: DateTime<Utc>,
    pub(super) updated: DateTime<Utc>,
    pub(super) completed: Option<DateTime<Utc>>,
    pub(super) options: ExportOptions,
    pub(super) polls: u32,
    pub(super) phase: Phase,
    /// When a DELETE first left it MARKED_DELETE (simulated time), for the cleanup job.
    pub(super) marked: Option<DateTime<Utc>>,
    pub(super) deletes: u32,
    pub(super) files: Vec<FileInfo>,
}

impl Export {
    pub(super) fn user_email(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    pub(super) fn mbox_spec(&self, file_no: u32, target_size: usize) -> MboxSpec {
        let end = self
            .options
            .end
            .map(|d| d.and_utc())
            .unwrap_or(self.requested);
        let begin = self
            .options
            .begin
            .map(|d| d.and_utc())
            .unwrap_or(end - TimeDelta::days(365));
        MboxSpec {
            request_id: self.id,
            user_email: self.user_email(),
            file_no,
            target_size,
            headers_only: self.options.package == Package::HeaderOnly,
            begin: begin.timestamp(),
            end: end.timestamp(),
        }
    }
}

impl GoogleSim {
    pub(super) fn export_href(&self, base: &str, e: &Export) -> String {
        format!("{base}{EXPORT_PATH}/{}/{}/{}", e.domain, e.user, e.id)
    }

    pub(super) fn entry_view(&self, base: &str, e: &Export) -> EntryView {
        let href = self.export_href(base, e);
        let o = &e.options;
        let mut props: Vec<(String, String)> = Vec::new();
        let mut add = |k: &str, v: String| props.push((k.to_string(), v));
        add("status", e.phase.name().into());
        add("packageContent", o.package.as_str().into());
        add("includeDeleted", o.include_deleted.to_string());
        if let Some(q) = &o.search_query {
            add("searchQuery", q.clone());
        }
        if let Some(c) = e.completed {
            add("completedDate", c.format(DATE_FMT).to_string());
        }
        add("adminEmailAddress", e.admin.clone());
        if !matches!(e.phase, Phase::Pending | Phase::Generating(_)) {
            add("numberOfFiles", e.files.len().to_string());
        }
        add("requestId", e.id.to_string());
        add("userEmailAddress", e.user_email());
        if let Some(end) = o.end {
            add("endDate", end.format(DATE_FMT).to_string());
        }
        add("requestDate", e.requested.format(DATE_FMT).to_string());
        if let Some(begin) = o.begin {
            add("beginDate", begin.format(DATE_FMT).to_string());
        }
        if e.phase.files_available() {
            for (i, f) in e.files.iter().enumerate() {
                add(
                    &format!("fileUrl{i}"),
                    format!("{base}{FILE_PATH}/{}", f.token),
                );
            }
        }
        EntryView {
            id: href.clone(),
            updated: rfc3339_millis(e.updated),
            self_href: href.clone(),
            edit_href: Some(href),
            props,
        }
    }
}

/// Ages an export to `now` (simulated): `EXPIRED` once past the 3-week retention, `DELETED`
/// once Google's cleanup job has run on a `MARKED_DELETE` one (`cleanup` after the first
/// DELETE marked it; the page: "within 24 hours"). Returns the files to remove.
pub(super) fn expire(e: &mut Export, now: DateTime<Utc>, cleanup: TimeDelta) -> Vec<PathBuf> {
    let live = matches!(
        e.phase,
        Phase::Pending | Phase::Completed | Phase::MarkedDelete
    );
    if live && now - e.requested >= retention() {
        e.phase = Phase::Expired;
        e.updated = now;
        return e.files.iter().map(|f| f.path.clone()).collect();
    }
    let cleaned = e.marked.is_some_and(|m| now - m >= cleanup);
    if matches!(e.phase, Phase::MarkedDelete) && cleaned {
        e.phase = Phase::Deleted;
        e.updated = now;
        return e.files.iter().map(|f| f.path.clone()).collect();
    }
    Vec::new()
}

pub(super) fn remove_files(paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("google sim: cannot remove {}: {e}", p.display());
            }
        }
    }
}
