//! The evidence report for people (`auditflow report`, `run --report-html/--report-md`): what
//! ran, by whom and where, a timeline of the steps, every file with its hash checked again at
//! render time, and one sentence on top saying whether the evidence is complete and verified.
//!
//! One typed model ([`EvidenceReport`]) is built from what the run left behind, the output
//! directory's `manifest.json` (the same record `verify` checks) and, when the state
//! directory is at hand, each run's journal (steps, attempts, polls, the jobs that
//! contributed). The HTML and Markdown renderers only lay that model out, so they cannot
//! disagree with each other or with the manifest.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::manifest::{self, CustodianRecord, Manifest, Problem, SignatureCheck};
use super::step_record::StepRecord;
use crate::events::StatusClass;
use crate::state::Replay;

mod html;
mod markdown;

pub(crate) use html::render as render_html;
pub(crate) use markdown::render as render_markdown;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EvidenceError {
    /// No readable manifest in the directory.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestReadError),
}

/// Everything the report shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EvidenceReport {
    /// The output directory reported on.
    pub dir: String,
    /// When the report was made (the files were re-hashed then).
    pub generated_at: DateTime<Utc>,
    /// The auditflow that made the report.
    pub tool_version: String,
    /// Who and where made the report.
    pub reporter: Where,
    /// One sentence: complete and verified, or what is missing.
    pub summary: Summary,
    /// Each run that wrote into the directory, oldest first.
    pub runs: Vec<RunFacts>,
    /// Every file the manifest lists, checked now.
    pub files: Vec<FileFacts>,
    /// Files in the directory the manifest does not list.
    pub unlisted: Vec<String>,
    /// The manifest's signature.
    pub signature: SignatureFacts,
}

/// The user, host and CI job.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Where {
    pub user: String,
    pub host: String,
    pub ci_job: Option<String>,
}

impl Where {
    fn here() -> Where {
        Where {
            user: std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into()),
            host: crate::state::host_name(),
            ci_job: crate::state::ci_job(),
        }
    }
}

/// The verdict on top of the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Every run succeeded, every file verifies, the signature (when checked) holds.
    pub complete: bool,
    /// The sentence.
    pub sentence: String,
}

/// One run as the manifest and its journal tell it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunFacts {
    pub run_id: String,
    pub workflow: String,
    pub workflow_file: String,
    pub workflow_sha256: String,
    /// The git commit of the workflow's repository, when it sat in one.
    pub workflow_commit: Option<String>,
    pub inputs: Value,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `succeeded`, `failed`, `pending`, `cancelled`, or `unknown`.
    pub status: String,
    /// The jobs (processes) that worked on the run: when each started.
    pub jobs: Vec<DateTime<Utc>>,
    /// The steps, from the journal (empty when it was not at hand).
    pub steps: Vec<StepFacts>,
    /// Pages and records per call step.
    pub calls: Vec<CallFacts>,
    /// Requests adopted at the vendor instead of created.
    pub adopted: Vec<String>,
    /// What steps that accepted an incomplete vendor result (`accept_partial`) lack.
    pub partial: Vec<String>,
    /// Whether the run's journal was read.
    pub journal: bool,
    /// Requests by vendor and status class, and retries with their reasons, by step path:
    /// the same records the JSON report gives each step.
    pub traffic: BTreeMap<String, StepRecord>,
    /// Messages per custodian against the vendor's count.
    pub custodians: Vec<CustodianFacts>,
}

/// One custodian's messages as one step exported them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CustodianFacts {
    pub step: String,
    pub vendor: String,
    pub custodian: String,
    pub exported: u64,
    pub vendor_count: Option<u64>,
    pub status: CustodianStatus,
}

/// How a custodian's exported messages compare with the vendor's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CustodianStatus {
    /// As many as the vendor counted.
    Match,
    /// Fewer than the vendor counted.
    Short,
    /// More than the vendor counted.
    Over,
    /// The vendor gave no count for this custodian.
    Uncounted,
}

impl CustodianFacts {
    /// `download (google)`, or the step alone when no vendor count was involved.
    pub(crate) fn step_and_vendor(&self) -> String {
        if self.vendor.is_empty() {
            self.step.clone()
        } else {
            format!("{} ({})", self.step, self.vendor)
        }
    }
}

impl CustodianStatus {
    fn of(exported: u64, vendor_count: Option<u64>) -> Self {
        match vendor_count {
            None => CustodianStatus::Uncounted,
            Some(n) if exported == n => CustodianStatus::Match,
            Some(n) if exported < n => CustodianStatus::Short,
            Some(_) => CustodianStatus::Over,
        }
    }

    /// The word the report shows.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CustodianStatus::Match => "match",
            CustodianStatus::Short => "short",
            CustodianStatus::Over => "more than counted",
            CustodianStatus::Uncounted => "no vendor count",
        }
    }
}

/// One step on the timeline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepFacts {
    pub step: String,
    pub status: String,
    pub attempts: u32,
    pub polls: u32,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
}

/// What one call step fetched.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CallFacts {
    pub step: String,
    pub pages: u32,
    pub records: u64,
    pub vendor_total: Option<u64>,
    pub truncated: bool,
}

/// One file of the evidence.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileFacts {
    pub path: String,
    pub kind: String,
    pub bytes: u64,
    pub sha256: String,
    pub md5: Option<String>,
    pub request_id: Option<String>,
    pub step: String,
    /// `verified`, or what is wrong now (`missing`, `changed: ...`).
    pub now: String,
    pub verified: bool,
}

/// The manifest's signature as checked at render time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SignatureFacts {
    /// `verified`, `failed`, `not_checked` or `unsigned`.
    pub status: String,
    /// The signing key's fingerprint (verified) or why it failed.
    pub detail: Option<String>,
}

impl SignatureFacts {
    /// What the report says of the signature, in one sentence.
    pub(crate) fn sentence(&self) -> String {
        let detail = self.detail.as_deref().unwrap_or("?");
        match self.status.as_str() {
            "verified" => format!("manifest.json.asc verifies: signed by the key {detail}."),
            "failed" => format!("The signature does not verify: {detail}"),
            "not_checked" => "manifest.json is signed (manifest.json.asc); the signature was not checked: pass --signer KEY.".into(),
            NO_MANIFEST => "No manifest.json yet: the run has written no file, so there is nothing to sign.".into(),
            _ => "manifest.json is not signed (run with --sign-key to sign the evidence).".into(),
        }
    }
}

impl From<SignatureCheck> for SignatureFacts {
    fn from(check: SignatureCheck) -> Self {
        let status = check.status().to_string();
        let detail = match check {
            SignatureCheck::Verified(fingerprint) => Some(fingerprint),
            SignatureCheck::Failed(why) => Some(why),
            SignatureCheck::NotChecked | SignatureCheck::Unsigned => None,
        };
        SignatureFacts { status, detail }
    }
}

/// A run's journal by run id, from wherever the state is kept (None: not found).
pub(crate) type Journals<'a> = &'a dyn Fn(&str) -> Option<Replay>;

/// Builds the report of the output directory `dir`, reading each run's journal through
/// `journals`, checking the signature with `signer` when given.
pub(crate) fn build(
    dir: &Path,
    journals: Journals<'_>,
    signer: Option<&Path>,
) -> Result<EvidenceReport, EvidenceError> {
    let manifest_path = dir.join(manifest::FILE_NAME);
    let m = Manifest::read(&manifest_path)?;
    let check = manifest::verify(dir)?;
    let files = file_facts(&m, &check.problems);
    let runs: Vec<RunFacts> = m.runs.iter().map(|r| run_facts(r, journals)).collect();
    let signature = SignatureCheck::of(&manifest_path, signer).into();
    let summary = summarize(&runs, &files, &check.unlisted, &signature);
    Ok(EvidenceReport {
        dir: dir.display().to_string(),
        generated_at: Utc::now(),
        tool_version: env!("AUDITFLOW_VERSION").into(),
        reporter: Where::here(),
        summary,
        runs,
        files,
        unlisted: check.unlisted,
        signature,
    })
}

/// The report of a run that has written no file yet, so no manifest (it detached to wait for
/// a vendor, or failed first): what its journal `replay` says, with what it waits for on top.
pub(crate) fn build_pending(dir: &Path, replay: &Replay) -> EvidenceReport {
    let h = &replay.header;
    let status = replay.finished.as_ref().map_or_else(
        || "pending".to_string(),
        |(_, s, _)| format!("{s:?}").to_lowercase(),
    );
    // A pending run's journal records when its last job detached, not an end.
    let finished_at = replay
        .finished
        .as_ref()
        .filter(|_| status != "pending")
        .map(|(at, _, _)| at.to_rfc3339());
    let run = RunFacts {
        run_id: h.run_id.clone(),
        workflow: h.workflow_name.clone(),
        workflow_file: h.workflow.clone(),
        workflow_sha256: h
            .files
            .first()
            .map(|f| f.sha256.to_hex())
            .unwrap_or_default(),
        workflow_commit: None,
        inputs: h.inputs.clone(),
        started_at: h.started_at.to_rfc3339(),
        finished_at,
        jobs: jobs_of(replay),
        steps: steps_of(replay),
        calls: vec![],
        adopted: vec![],
        partial: vec![],
        journal: true,
        traffic: BTreeMap::new(),
        custodians: vec![],
        status,
    };
    let sentence = if run.status == "pending" {
        let mut waiting: Vec<String> = replay
            .waiting
            .iter()
            .map(|(step, (what, _))| format!("step {step} ({what})"))
            .collect();
        waiting.sort();
        let waiting = if waiting.is_empty() {
            "its next job (the next `auditflow run` of the workflow resumes it)".to_string()
        } else {
            waiting.join(", ")
        };
        format!("Pending: waiting for {waiting}; the run has written no file yet, so there is no manifest to verify.")
    } else {
        format!(
            "Not complete: the run ended {} before writing any file; there is no manifest to verify.",
            run.status
        )
    };
    EvidenceReport {
        dir: dir.display().to_string(),
        generated_at: Utc::now(),
        tool_version: env!("AUDITFLOW_VERSION").into(),
        reporter: Where::here(),
        summary: Summary {
            complete: false,
            sentence,
        },
        runs: vec![run],
        files: vec![],
        unlisted: vec![],
        signature: SignatureFacts {
            status: NO_MANIFEST.into(),
            detail: None,
        },
    }
}

/// [`SignatureFacts::status`] of a report made before any manifest was written.
pub(crate) const NO_MANIFEST: &str = "no_manifest";

fn file_facts(m: &Manifest, problems: &[Problem]) -> Vec<FileFacts> {
    m.artifacts
        .values()
        .map(|e| {
            let problem = problems.iter().find(|p| problem_path(p) == e.path);
            FileFacts {
                path: e.path.clone(),
                kind: serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                bytes: e.bytes,
                sha256: e.sha256.to_hex(),
                md5: e.md5.clone(),
                request_id: e.request_id.clone(),
                step: e.step.clone(),
                now: problem.map_or_else(|| "verified".to_string(), ToString::to_string),
                verified: problem.is_none(),
            }
        })
        .collect()
}

fn problem_path(p: &Problem) -> &str {
    match p {
        Problem::Missing { path }
        | Problem::Size { path, .. }
        | Problem::Hash { path, .. }
        | Problem::Unreadable { path, .. } => path,
    }
}

fn run_facts(r: &manifest::RunRecord, journals: Journals<'_>) -> RunFacts {
    let replay = journals(&r.run_id);
    RunFacts {
        run_id: r.run_id.clone(),
        workflow: r.workflow.clone(),
        workflow_file: r.workflow_file.clone(),
        workflow_sha256: r.workflow_sha256.clone(),
        workflow_commit: r.workflow_commit.clone(),
        inputs: r.inputs.clone(),
        started_at: r.started_at.to_rfc3339(),
        finished_at: r.finished_at.map(|t| t.to_rfc3339()),
        status: r
            .status
            .map_or_else(|| "unknown".to_string(), |s| s.as_str().to_string()),
        jobs: replay.as_ref().map(jobs_of).unwrap_or_default(),
        steps: replay.as_ref().map(steps_of).unwrap_or_default(),
        calls: r
            .calls
            .iter()
            .map(|(step, c)| CallFacts {
                step: step.clone(),
                pages: c.pages,
                records: c.items,
                vendor_total: c.reported_total,
                truncated: c.truncated,
            })
            .collect(),
        adopted: r
            .adopted
            .iter()
            .map(|(step, a)| {
                format!(
                    "{step}: {} request {} ({})",
                    a.vendor,
                    a.request_id.as_deref().unwrap_or("?"),
                    a.detail
                )
            })
            .collect(),
        partial: r
            .partial
            .iter()
            .flat_map(|(step, problems)| problems.iter().map(move |p| format!("{step}: {p}")))
            .collect(),
        journal: replay.is_some(),
        traffic: r.steps.clone(),
        custodians: custodian_facts(&r.custodians),
    }
}

/// One line of the requests table: a step's attempts at one vendor by status class, and the
/// step's retries (on its first line only).
pub(crate) struct RequestRow<'a> {
    pub step: &'a str,
    /// `-` for a step that retried without a vendor answer counted (downloads).
    pub vendor: &'a str,
    /// Success, client error, server error, network.
    pub counts: [u32; 4],
    /// `attempt 1: why (waited 2s)`.
    pub retries: Vec<String>,
}

/// The status classes in the order of [`RequestRow::counts`], with their column headers.
pub(crate) const CLASSES: [(StatusClass, &str); 4] = [
    (StatusClass::Success, "2xx"),
    (StatusClass::ClientError, "4xx"),
    (StatusClass::ServerError, "5xx"),
    (StatusClass::Network, "network"),
];

impl RunFacts {
    /// The requests table, one row per step and vendor.
    pub(crate) fn request_rows(&self) -> Vec<RequestRow<'_>> {
        let mut rows = Vec::new();
        for (step, rec) in &self.traffic {
            let mut retries: Vec<String> = rec
                .retries
                .iter()
                .map(|r| {
                    format!(
                        "attempt {}: {} (waited {})",
                        r.attempt,
                        r.reason,
                        crate::workflow::duration::format_duration(
                            std::time::Duration::from_millis(r.wait_ms)
                        )
                    )
                })
                .collect();
            let vendors: Vec<(&str, [u32; 4])> = rec
                .requests
                .iter()
                .map(|(v, by)| {
                    (
                        v.as_str(),
                        CLASSES.map(|(c, _)| by.get(&c).copied().unwrap_or(0)),
                    )
                })
                .collect();
            if vendors.is_empty() {
                rows.push(RequestRow {
                    step,
                    vendor: "-",
                    counts: [0; 4],
                    retries,
                });
                continue;
            }
            for (vendor, counts) in vendors {
                rows.push(RequestRow {
                    step,
                    vendor,
                    counts,
                    retries: std::mem::take(&mut retries),
                });
            }
        }
        rows
    }
}

fn custodian_facts(by_step: &BTreeMap<String, CustodianRecord>) -> Vec<CustodianFacts> {
    by_step
        .iter()
        .flat_map(|(step, rec)| {
            rec.counts.iter().map(move |c| CustodianFacts {
                step: step.clone(),
                vendor: rec.vendor.clone(),
                custodian: c.custodian.clone(),
                exported: c.exported,
                vendor_count: c.vendor_count,
                status: CustodianStatus::of(c.exported, c.vendor_count),
            })
        })
        .collect()
}

fn jobs_of(r: &Replay) -> Vec<DateTime<Utc>> {
    let mut jobs = vec![r.header.started_at];
    jobs.extend(r.resumes.iter().copied());
    jobs
}

fn steps_of(r: &Replay) -> Vec<StepFacts> {
    r.order
        .iter()
        .map(|step| {
            let done = r.done.get(step);
            let failed = r.failed.contains_key(step);
            let status = match (done, failed, r.waiting.contains_key(step)) {
                (Some(d), _, _) => format!("{:?}", d.status).to_lowercase(),
                (None, true, _) => "failed".into(),
                (None, false, true) => "waiting".into(),
                _ => "unfinished".into(),
            };
            StepFacts {
                step: r.labels.get(step).cloned().unwrap_or_else(|| step.clone()),
                status,
                attempts: done.map_or(0, |d| d.attempts),
                polls: r.polls.get(step).map_or(0, |p| p.0),
                started: r.first_started.get(step).copied(),
                ended: done.map(|d| d.at),
            }
        })
        .collect()
}

/// The sentence on top: complete and verified, or each thing that is not.
fn summarize(
    runs: &[RunFacts],
    files: &[FileFacts],
    unlisted: &[String],
    signature: &SignatureFacts,
) -> Summary {
    let mut missing = Vec::new();
    let unfinished = runs.iter().filter(|r| r.status != "succeeded").count();
    if unfinished > 0 {
        missing.push(format!("{unfinished} run(s) did not succeed"));
    }
    let partial: usize = runs.iter().map(|r| r.partial.len()).sum();
    if partial > 0 {
        missing.push(format!(
            "the vendor reported the export incomplete ({partial} problem(s), kept as a partial result)"
        ));
    }
    let short = runs
        .iter()
        .flat_map(|r| &r.custodians)
        .filter(|c| c.status == CustodianStatus::Short)
        .count();
    if short > 0 {
        missing.push(format!(
            "{short} custodian(s) have fewer messages exported than the vendor counted"
        ));
    }
    let bad = files.iter().filter(|f| !f.verified).count();
    if bad > 0 {
        missing.push(format!(
            "{bad} of {} file(s) no longer match the manifest",
            files.len()
        ));
    }
    if signature.status == "failed" {
        missing.push(format!(
            "the manifest's signature does not verify ({})",
            signature.detail.as_deref().unwrap_or("no detail")
        ));
    }
    if !unlisted.is_empty() {
        missing.push(format!(
            "{} file(s) in the directory are not in the manifest",
            unlisted.len()
        ));
    }
    if missing.is_empty() {
        let signed = match signature.status.as_str() {
            "verified" => ", and the manifest's signature verifies",
            "not_checked" => " (the manifest is signed; its signature was not checked)",
            _ => " (the manifest is not signed)",
        };
        return Summary {
            complete: true,
            sentence: format!(
                "Complete and verified: {} run(s) succeeded and all {} file(s) match their recorded size and SHA-256{signed}.",
                runs.len(),
                files.len()
            ),
        };
    }
    Summary {
        complete: false,
        sentence: format!("Not complete: {}.", missing.join("; ")),
    }
}

/// Writes `text` to `path` (0600, atomically).
pub(crate) fn write(path: &Path, text: &str) -> Result<PathBuf, crate::durable::WriteError> {
    crate::durable::write_atomic(path, text.as_bytes())
        .map(|()| path.to_path_buf())
        .map_err(|source| crate::durable::WriteError {
            path: path.to_path_buf(),
            source,
        })
}
