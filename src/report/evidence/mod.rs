//! The evidence report for people (`auditflow report`, `run --report-html/--report-md`): what
//! ran, by whom and where, a timeline of the steps, every file with its hash checked again at
//! render time, and one sentence on top saying whether the evidence is complete and verified.
//!
//! One typed model ([`EvidenceReport`]) is built from what the run left behind, the output
//! directory's `manifest.json` (the same record `verify` checks) and, when the state
//! directory is at hand, each run's journal (steps, attempts, polls, the jobs that
//! contributed). The HTML and Markdown renderers only lay that model out, so they cannot
//! disagree with each other or with the manifest.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::manifest::{self, Manifest, Problem, SignatureCheck};
use crate::state::Replay;

mod html;
mod markdown;

pub(crate) use html::render as render_html;
pub(crate) use markdown::render as render_markdown;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EvidenceError {
    /// No readable manifest in the directory.
    #[error("{0}")]
    Manifest(String),
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
    let m: Manifest = std::fs::read(&manifest_path)
        .map_err(|e| {
            format!(
                "cannot read {}: {e} (is this the output directory of a run?)",
                manifest_path.display()
            )
        })
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                format!(
                    "{} is not an auditflow manifest: {e}",
                    manifest_path.display()
                )
            })
        })
        .map_err(EvidenceError::Manifest)?;
    let check = manifest::verify(dir).map_err(EvidenceError::Manifest)?;
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
                sha256: e.sha256.clone(),
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
        started_at: r.started_at.clone(),
        finished_at: r.finished_at.clone(),
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
    }
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
pub(crate) fn write(path: &Path, text: &str) -> Result<PathBuf, String> {
    crate::durable::write_atomic(path, text.as_bytes())
        .map(|()| path.to_path_buf())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
