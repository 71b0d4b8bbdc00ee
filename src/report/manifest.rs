//! The evidence manifest (`manifest.json` in the output directory) and `auditflow verify`.
//!
//! The manifest records, for every artifact a run wrote, its size and SHA-256, where it came
//! from (URL without credentials, or the encrypted file with its own hash), the vendor request
//! id and times, together with the tool version, the workflow file and its SHA-256, and the
//! inputs (secrets masked). `verify` re-hashes everything and reports any difference.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::durable::{sha256_file, Sha256Digest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::step_record::{self, StepRecord};
use crate::events::{Artifact, ArtifactKind, CustodianCount, Event, RunStatus, Sink};

/// File name of the manifest inside the output directory.
pub(crate) const FILE_NAME: &str = "manifest.json";

/// One artifact in the manifest. Paths are relative to the manifest's directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Entry {
    pub path: String,
    pub kind: ArtifactKind,
    pub bytes: u64,
    pub sha256: Sha256Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a decrypted file: the encrypted file it came from, and that file's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<Sha256Digest>,
    /// Base64 MD5 when the vendor listed one (Cloud Storage `md5Hash`), checked on download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub step: String,
    pub run_id: String,
    #[serde(with = "crate::events::rfc3339")]
    pub finished_at: DateTime<Utc>,
    /// The file holds fewer records than the vendor announced, on purpose
    /// (`paginate: false`, or `paginate.truncate` at `max_pages`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What one `call` step fetched, by step path in [`RunRecord::calls`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct CallRecord {
    /// Pages fetched.
    pub pages: u32,
    /// Records in the merged result (the saved file, when the step saves one).
    pub items: u64,
    /// The vendor's own total (Mimecast `totalCount`), checked equal to `items` unless truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_total: Option<u64>,
    /// The vendor announced more pages than were fetched, on purpose.
    pub truncated: bool,
}

/// A run that wrote into the directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct RunRecord {
    pub run_id: String,
    pub workflow: String,
    pub workflow_file: String,
    pub workflow_sha256: String,
    /// The git commit of the repository holding the workflow file when the run began, with
    /// ` (modified)` when the file differs from that commit; absent outside a repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_commit: Option<String>,
    pub inputs: Value,
    #[serde(with = "crate::events::rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(default, with = "crate::events::rfc3339::option")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub status: Option<RunStatus>,
    /// Every workflow file of the run with its SHA-256 and, for pack files, the pack
    /// (URL without credentials, commit) it came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflow_files: Vec<crate::events::FileDigest>,
    /// Per `call` step: pages fetched and records saved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, CallRecord>,
    /// Per step that accepted an incomplete vendor result (`accept_partial`): what is missing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partial: BTreeMap<String, Vec<String>>,
    /// Per step that adopted a request already made at the vendor instead of creating one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adopted: BTreeMap<String, AdoptedRecord>,
    /// Per step that sent requests: requests by vendor and status class, retries and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, StepRecord>,
    /// Per step that counted messages per custodian: exported against the vendor's count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custodians: BTreeMap<String, CustodianRecord>,
}

/// Messages per custodian as one step exported them, by step path in
/// [`RunRecord::custodians`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct CustodianRecord {
    /// The vendor (`google`).
    pub vendor: String,
    /// One entry per custodian.
    pub counts: Vec<CustodianCount>,
}

/// A request found at the vendor and continued instead of created again, by step path in
/// [`RunRecord::adopted`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct AdoptedRecord {
    /// The vendor (`google`).
    pub vendor: String,
    /// The vendor's id of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Its status and creation time as the vendor listed them.
    pub detail: String,
}

/// The manifest document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Manifest {
    pub tool: String,
    pub version: String,
    pub runs: Vec<RunRecord>,
    /// By path, so a later run's file replaces an earlier one's record.
    pub artifacts: BTreeMap<String, Entry>,
}

/// The run and its artifacts (with the step that wrote each).
type Collected = (Option<RunRecord>, Vec<(String, Artifact)>);

/// Collects a run's artifacts from events.
#[derive(Default)]
pub(crate) struct ManifestSink {
    inner: Mutex<Collected>,
}

impl ManifestSink {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// True when the run wrote any artifact.
    pub(crate) fn has_artifacts(&self) -> bool {
        self.inner.lock().map(|g| !g.1.is_empty()).unwrap_or(false)
    }

    /// Merges this run into `dir/manifest.json` (created if absent); returns its path.
    pub(crate) fn write(&self, dir: &Path) -> Result<PathBuf, ManifestError> {
        let (run, artifacts) = match self.inner.lock() {
            Ok(g) => (g.0.clone(), g.1.clone()),
            Err(p) => {
                let g = p.into_inner();
                (g.0.clone(), g.1.clone())
            }
        };
        let mut run = run.ok_or(ManifestError::NoRun)?;
        let path = dir.join(FILE_NAME);
        let mut manifest = Manifest::read_or_new(&path)?;
        manifest.version = env!("AUDITFLOW_VERSION").into();
        // A resumed run keeps what its earlier processes recorded of steps not run again.
        let run_id = run.run_id.clone();
        for earlier in manifest.runs.iter().filter(|r| r.run_id == run_id) {
            run.keep_earlier(earlier);
        }
        manifest.runs.retain(|r| r.run_id != run.run_id);
        for (step, a) in artifacts {
            let entry = Entry::of(dir, &run, step, a);
            manifest.artifacts.insert(entry.path.clone(), entry);
        }
        manifest.inherit_request_ids();
        manifest.runs.push(run);
        let text = serde_json::to_vec_pretty(&manifest).map_err(ManifestError::Serialize)?;
        crate::durable::write_private(&path, &text)?;
        Ok(path)
    }
}

/// Why the manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    /// No run started (nothing to record).
    #[error("no run was recorded")]
    NoRun,
    /// The file in its place is something else.
    #[error("{} exists but is not an auditflow manifest ({source}); move it away", .path.display())]
    NotAManifest {
        /// The manifest's path.
        path: PathBuf,
        /// Why it does not read as one.
        source: serde_json::Error,
    },
    /// The manifest could not be turned into JSON.
    #[error("{0}")]
    Serialize(serde_json::Error),
    /// Writing it failed.
    #[error(transparent)]
    Write(#[from] crate::durable::WriteError),
}

impl Manifest {
    /// The manifest at `path`, or a new empty one when there is none.
    fn read_or_new(path: &Path) -> Result<Manifest, ManifestError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes).map_err(|source| {
                ManifestError::NotAManifest {
                    path: path.to_path_buf(),
                    source,
                }
            }),
            Err(_) => Ok(Manifest {
                tool: "auditflow".into(),
                version: env!("AUDITFLOW_VERSION").into(),
                runs: vec![],
                artifacts: BTreeMap::new(),
            }),
        }
    }

    /// A decrypted file belongs to the same vendor request as the file it came from.
    fn inherit_request_ids(&mut self) {
        let ids: BTreeMap<String, String> = self
            .artifacts
            .values()
            .filter_map(|e| e.request_id.clone().map(|r| (e.path.clone(), r)))
            .collect();
        for e in self.artifacts.values_mut() {
            if e.request_id.is_none() {
                e.request_id = e.source.as_ref().and_then(|s| ids.get(s).cloned());
            }
        }
    }
}

impl RunRecord {
    /// Keeps what an earlier process of this run recorded of steps not run again (calls,
    /// adoptions, partial results, custodians), and adds its request counts and retries.
    fn keep_earlier(&mut self, earlier: &RunRecord) {
        for (step, c) in &earlier.calls {
            self.calls.entry(step.clone()).or_insert_with(|| c.clone());
        }
        for (step, a) in &earlier.adopted {
            self.adopted
                .entry(step.clone())
                .or_insert_with(|| a.clone());
        }
        for (step, p) in &earlier.partial {
            self.partial
                .entry(step.clone())
                .or_insert_with(|| p.clone());
        }
        for (step, c) in &earlier.custodians {
            self.custodians
                .entry(step.clone())
                .or_insert_with(|| c.clone());
        }
        for (step, t) in &earlier.steps {
            let now = self.steps.entry(step.clone()).or_default();
            let mut merged = t.clone();
            merged.retries.append(&mut now.retries);
            for (vendor, by_class) in std::mem::take(&mut now.requests) {
                let into = merged.requests.entry(vendor).or_default();
                for (class, n) in by_class {
                    *into.entry(class).or_default() += n;
                }
            }
            *now = merged;
        }
    }
}

impl Entry {
    /// The manifest entry of an artifact `step` of `run` wrote, its paths relative to `dir`.
    fn of(dir: &Path, run: &RunRecord, step: String, a: Artifact) -> Entry {
        let rel = relative(dir, Path::new(&a.path));
        Entry {
            path: rel,
            kind: a.kind,
            bytes: a.bytes,
            sha256: a.sha256,
            source: a.source.map(|s| {
                // Local sources (the encrypted file of a decrypt) are made relative too.
                if s.contains("://") {
                    s
                } else {
                    relative(dir, Path::new(&s))
                }
            }),
            source_sha256: a.source_sha256,
            md5: a.md5,
            request_id: a.request_id,
            truncated: run.calls.get(&step).is_some_and(|c| c.truncated),
            step,
            run_id: run.run_id.clone(),
            finished_at: a.finished_at,
        }
    }
}

/// The commit `git` says the repository holding `file` is at, with ` (modified)` when the
/// file has changes not committed; None outside a repository or without `git`.
fn git_commit_of(file: &Path) -> Option<String> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty())?;
    let name = file.file_name()?.to_string_lossy().into_owned();
    let dirty = git(&["status", "--porcelain", "--", &name]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit} (modified)")
    } else {
        commit
    })
}

/// `path` relative to `dir` when inside it (both made absolute first), else as given.
fn relative(dir: &Path, path: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (d, p) = (abs(dir), abs(path));
    match p.strip_prefix(&d) {
        Ok(r) => r.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

impl Sink for ManifestSink {
    fn event(&self, e: &Event) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        match e {
            Event::RunStarted { .. } => g.0 = RunRecord::of_start(e),
            Event::Artifact { step, artifact } => g.1.push((step.clone(), artifact.clone())),
            _ => {
                if let Some(r) = g.0.as_mut() {
                    r.observe(e);
                }
            }
        }
    }
}

impl RunRecord {
    /// The record of a run as its [`Event::RunStarted`] describes it (None for other events).
    fn of_start(e: &Event) -> Option<RunRecord> {
        let Event::RunStarted {
            run_id,
            workflow,
            file,
            inputs,
            started_at,
            files,
            ..
        } = e
        else {
            return None;
        };
        Some(RunRecord {
            workflow_files: files.clone(),
            run_id: run_id.clone(),
            workflow: workflow.clone(),
            workflow_file: file.clone(),
            workflow_sha256: sha256_file(Path::new(file)).unwrap_or_default(),
            workflow_commit: git_commit_of(Path::new(file)),
            inputs: inputs.clone(),
            started_at: *started_at,
            finished_at: None,
            status: None,
            calls: BTreeMap::new(),
            adopted: BTreeMap::new(),
            partial: BTreeMap::new(),
            steps: BTreeMap::new(),
            custodians: BTreeMap::new(),
        })
    }

    /// Records what an event of the running run says: adoptions, requests and retries,
    /// custodians, partial results, pages fetched, and its end.
    fn observe(&mut self, e: &Event) {
        match e {
            Event::Adopted {
                step,
                vendor,
                request_id,
                detail,
            } => {
                let adopted = AdoptedRecord {
                    vendor: vendor.clone(),
                    request_id: request_id.clone(),
                    detail: detail.clone(),
                };
                self.adopted.insert(step.clone(), adopted);
            }
            Event::Answer { .. } | Event::Retry { .. } => {
                step_record::observe(&mut self.steps, e);
            }
            Event::Custodians {
                step,
                vendor,
                counts,
            } => {
                let custodians = CustodianRecord {
                    vendor: vendor.clone(),
                    counts: counts.clone(),
                };
                self.custodians.insert(step.clone(), custodians);
            }
            Event::Partial { step, problems } => {
                self.partial.insert(step.clone(), problems.clone());
            }
            Event::Paged {
                step,
                pages,
                items,
                reported_total,
                truncated,
            } => {
                let call = CallRecord {
                    pages: *pages,
                    items: *items,
                    reported_total: *reported_total,
                    truncated: *truncated,
                };
                self.calls.insert(step.clone(), call);
            }
            Event::RunFinished { status, .. } => {
                self.finished_at = Some(chrono::Utc::now());
                self.status = Some(*status);
            }
            _ => {}
        }
    }
}

/// The artifacts a directory's manifest records: a file there that still has its recorded
/// size and SHA-256 is an earlier run's output, which a re-run of the job may replace. A
/// missing or unreadable manifest records nothing.
pub(crate) struct Recorded {
    dir: PathBuf,
    artifacts: BTreeMap<String, Entry>,
}

impl Recorded {
    /// Reads `dir/manifest.json`.
    pub(crate) fn load(dir: &Path) -> Recorded {
        let artifacts = std::fs::read(dir.join(FILE_NAME))
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
            .map(|m| m.artifacts)
            .unwrap_or_default();
        Recorded {
            dir: dir.to_path_buf(),
            artifacts,
        }
    }

    /// True when `path` is recorded and unchanged since (same size, same SHA-256).
    pub(crate) fn owns(&self, path: &Path) -> bool {
        let Some(e) = self.artifacts.get(&relative(&self.dir, path)) else {
            return false;
        };
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == e.bytes)
            && sha256_file(path).is_ok_and(|h| e.sha256 == h)
    }
}

/// One difference found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Problem {
    Missing {
        path: String,
    },
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    Hash {
        path: String,
        expected: String,
        found: String,
    },
    Unreadable {
        path: String,
        error: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { path } => write!(f, "MISSING  {path}"),
            Problem::Size {
                path,
                expected,
                found,
            } => write!(
                f,
                "CHANGED  {path}: {found} bytes, manifest says {expected}"
            ),
            Problem::Hash {
                path,
                expected,
                found,
            } => write!(
                f,
                "CHANGED  {path}: sha256 {found}, manifest says {expected}"
            ),
            Problem::Unreadable { path, error } => write!(f, "UNREADABLE {path}: {error}"),
        }
    }
}

/// The result of verifying a directory.
#[derive(Debug)]
pub(crate) struct Verification {
    pub checked: usize,
    pub problems: Vec<Problem>,
    /// Files in the directory (relative paths) that the manifest does not list: not this
    /// tool's evidence (a file put there later, a report written into it).
    pub unlisted: Vec<String>,
}

/// The files under `dir` (relative, `/`-separated; symlinks are not followed) that are
/// neither listed in `m` nor the manifest and its signature.
fn unlisted(dir: &Path, m: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(rel) = p.strip_prefix(dir) else {
                continue;
            };
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let own = rel == FILE_NAME || rel == format!("{FILE_NAME}.asc");
            if !own && !m.artifacts.contains_key(&rel) {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// What `verify` and the evidence report find of the manifest's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureCheck {
    /// `--signer` given and the signature holds: the signing key's fingerprint.
    Verified(String),
    /// `--signer` given and the signature is missing, foreign or does not hold.
    Failed(String),
    /// A signature exists but no `--signer` was given.
    NotChecked,
    /// No signature and none asked for.
    Unsigned,
}

impl SignatureCheck {
    /// Checks `manifest`'s detached signature with the key file `signer`, when given.
    pub(crate) fn of(manifest: &Path, signer: Option<&Path>) -> SignatureCheck {
        use crate::openpgp::sign::{signature_path, verify_file};
        let sig = signature_path(manifest);
        match (signer, sig.exists()) {
            (Some(key), true) => match verify_file(manifest, &sig, key) {
                Ok(fp) => SignatureCheck::Verified(fp),
                Err(e) => SignatureCheck::Failed(e.to_string()),
            },
            (Some(_), false) => SignatureCheck::Failed(format!(
                "{} is missing: the manifest is not signed",
                sig.display()
            )),
            (None, true) => SignatureCheck::NotChecked,
            (None, false) => SignatureCheck::Unsigned,
        }
    }

    /// `verified`, `failed`, `not_checked` or `unsigned`.
    pub(crate) fn status(&self) -> &'static str {
        match self {
            SignatureCheck::Verified(_) => "verified",
            SignatureCheck::Failed(_) => "failed",
            SignatureCheck::NotChecked => "not_checked",
            SignatureCheck::Unsigned => "unsigned",
        }
    }

    /// As `verify --json` gives it.
    pub(crate) fn json(&self) -> Value {
        let mut v = serde_json::json!({"status": self.status()});
        match self {
            SignatureCheck::Verified(fp) => v["fingerprint"] = fp.as_str().into(),
            SignatureCheck::Failed(e) => v["error"] = e.as_str().into(),
            SignatureCheck::NotChecked | SignatureCheck::Unsigned => {}
        }
        v
    }

    /// As `verify` prints it.
    pub(crate) fn line(&self) -> String {
        match self {
            SignatureCheck::Verified(fp) => {
                format!("SIGNED   manifest.json, signature verified (key {fp})")
            }
            SignatureCheck::Failed(e) => format!("BAD SIGNATURE {e}"),
            SignatureCheck::NotChecked => {
                "signed   manifest.json.asc present, not checked: pass --signer KEY to check it"
                    .into()
            }
            SignatureCheck::Unsigned => {
                "unsigned manifest.json has no signature (run with --sign-key to sign the evidence)"
                    .into()
            }
        }
    }
}

/// Why the manifest of a directory could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestReadError {
    /// No file (or no readable one).
    #[error("cannot read {}: {source} (is this the output directory of a run?)", .path.display())]
    Unreadable {
        /// The manifest's path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a manifest.
    #[error("{} is not an auditflow manifest: {source}", .path.display())]
    NotAManifest {
        /// The manifest's path.
        path: PathBuf,
        /// Why it does not read as one.
        source: serde_json::Error,
    },
}

impl Manifest {
    /// Reads the manifest at `path` (`auditflow verify` and the evidence report).
    pub(crate) fn read(path: &Path) -> Result<Manifest, ManifestReadError> {
        let bytes = std::fs::read(path).map_err(|source| ManifestReadError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ManifestReadError::NotAManifest {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Re-hashes every artifact of `dir/manifest.json`.
pub(crate) fn verify(dir: &Path) -> Result<Verification, ManifestReadError> {
    let m = Manifest::read(&dir.join(FILE_NAME))?;
    let mut problems = Vec::new();
    for e in m.artifacts.values() {
        let p = if Path::new(&e.path).is_absolute() {
            PathBuf::from(&e.path)
        } else {
            dir.join(&e.path)
        };
        let Ok(meta) = std::fs::metadata(&p) else {
            problems.push(Problem::Missing {
                path: e.path.clone(),
            });
            continue;
        };
        if meta.len() != e.bytes {
            problems.push(Problem::Size {
                path: e.path.clone(),
                expected: e.bytes,
                found: meta.len(),
            });
            continue;
        }
        match sha256_file(&p) {
            Ok(h) if e.sha256 == h => {}
            Ok(h) => problems.push(Problem::Hash {
                path: e.path.clone(),
                expected: e.sha256.to_hex(),
                found: h,
            }),
            Err(err) => problems.push(Problem::Unreadable {
                path: e.path.clone(),
                error: err.to_string(),
            }),
        }
    }
    Ok(Verification {
        checked: m.artifacts.len(),
        problems,
        unlisted: unlisted(dir, &m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(path: &Path, bytes: &[u8]) -> Artifact {
        std::fs::write(path, bytes).unwrap();
        Artifact {
            kind: ArtifactKind::Download,
            path: path.display().to_string(),
            bytes: bytes.len() as u64,
            sha256: Sha256Digest::of(bytes),
            source: Some("https://example.com/f".into()),
            source_sha256: None,
            md5: None,
            request_id: Some("42".into()),
            finished_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn written_manifest_verifies_and_detects_changes() {
        let d = tempfile::tempdir().unwrap();
        let wf = d.path().join("wf.yaml");
        std::fs::write(&wf, "name: x").unwrap();
        let s = ManifestSink::new();
        s.event(&Event::RunStarted {
            run_id: "r1".into(),
            workflow: "x".into(),
            file: wf.display().to_string(),
            inputs: serde_json::json!({"password": "***"}),
            started_at: chrono::Utc::now(),
            dry_run: false,
            resumed: None,
            files: vec![],
        });
        let a = artifact(&d.path().join("a.gpg"), b"encrypted bytes");
        let b = artifact(&d.path().join("b.mbox"), b"From x\n");
        s.event(&Event::Artifact {
            step: "dl".into(),
            artifact: a,
        });
        s.event(&Event::Artifact {
            step: "dec".into(),
            artifact: b,
        });
        let p = s.write(d.path()).unwrap();
        let m: Manifest = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(
            m.runs[0].workflow_sha256,
            crate::durable::sha256_hex(b"name: x")
        );
        assert!(m.artifacts.contains_key("a.gpg") && m.artifacts.contains_key("b.mbox"));
        let v = verify(d.path()).unwrap();
        assert_eq!((v.checked, v.problems.len()), (2, 0));

        std::fs::write(d.path().join("b.mbox"), b"From y\n").unwrap();
        std::fs::remove_file(d.path().join("a.gpg")).unwrap();
        let v = verify(d.path()).unwrap();
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert!(v.problems.contains(&Problem::Missing {
            path: "a.gpg".into()
        }));
        assert!(matches!(&v.problems[1], Problem::Hash { path, .. } if path == "b.mbox"));
    }

    /// A manifest as releases before typed digests and times wrote it.
    const OLD_MANIFEST: &str = r#"{
  "tool": "auditflow",
  "version": "0.1.0",
  "runs": [
    {
      "run_id": "r1",
      "workflow": "x",
      "workflow_file": "wf.yaml",
      "workflow_sha256": "",
      "inputs": {
        "password": "***"
      },
      "started_at": "2024-05-01T10:00:00.123456789+00:00",
      "finished_at": "2024-05-01T10:05:00.250+00:00",
      "status": "succeeded"
    },
    {
      "run_id": "r2",
      "workflow": "x",
      "workflow_file": "wf.yaml",
      "workflow_sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      "inputs": {},
      "started_at": "2024-05-02T10:00:00+00:00",
      "finished_at": null,
      "status": null
    }
  ],
  "artifacts": {
    "a.txt": {
      "path": "a.txt",
      "kind": "download",
      "bytes": 3,
      "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      "source": "https://example.com/a.txt",
      "request_id": "42",
      "step": "dl",
      "run_id": "r1",
      "finished_at": "2024-05-01T10:01:00.123+00:00"
    },
    "b.txt": {
      "path": "b.txt",
      "kind": "decrypt",
      "bytes": 0,
      "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "source": "a.txt",
      "source_sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      "step": "dec",
      "run_id": "r1",
      "finished_at": "2024-05-01T10:02:00+00:00"
    }
  }
}"#;

    #[test]
    fn manifests_written_before_typed_digests_and_times_read_back_and_verify() {
        let m: Manifest = serde_json::from_str(OLD_MANIFEST).unwrap();
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(&m).unwrap()).unwrap(),
            OLD_MANIFEST
        );
        assert_eq!(m.artifacts["a.txt"].sha256, Sha256Digest::of(b"abc"));
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE_NAME), OLD_MANIFEST).unwrap();
        std::fs::write(d.path().join("a.txt"), b"abc").unwrap();
        std::fs::write(d.path().join("b.txt"), b"").unwrap();
        let v = verify(d.path()).unwrap();
        assert_eq!((v.checked, v.problems.len()), (2, 0), "{:?}", v.problems);
        std::fs::write(d.path().join("a.txt"), b"abd").unwrap();
        let v = verify(d.path()).unwrap();
        assert!(
            matches!(&v.problems[..], [Problem::Hash { path, expected, .. }]
                if path == "a.txt" && *expected == Sha256Digest::of(b"abc").to_hex()),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn verify_without_manifest_says_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("output directory of a run"), "{e}");
    }
}
