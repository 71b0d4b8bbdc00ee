//! The `download` and `decrypt` steps: render the spec, run the streaming cores per file
//! (several at once), report progress and artifacts, and expose paths, sizes and hashes.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::decrypt::{self, DecryptionKey};
use super::download::{self, DownloadObserver, FileToFetch, HeaderFn};
use super::extract;
use super::{render_opt_tpl, render_tpl, StepEnv, StepError};
use crate::events::{Artifact, ArtifactKind, Emitter, Event, FileProgress};
use crate::template::{Tpl, TplValue};
use crate::vendors::Connection;
use crate::workflow::file_plan::{DecryptAction, DownloadAction, ExtractTemplates};
use crate::workflow::model::ExtractSpec;

/// A value rendered into a list of strings (a single string is a list of one).
fn string_list(field: &'static str, v: &TplValue, ctx: &Value) -> Result<Vec<String>, StepError> {
    match v.render(ctx).map_err(|e| StepError::template(field, e))? {
        Value::Null => Ok(vec![]),
        Value::String(s) if s.trim().is_empty() => Ok(vec![]),
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(StepError::WrongType {
                    field,
                    expected: "a list of strings",
                    found: other.to_string(),
                }),
            })
            .collect(),
        other => Err(StepError::WrongType {
            field,
            expected: "a string or a list",
            found: other.to_string(),
        }),
    }
}

/// `download.size` rendered: a list of sizes, each a number or a string of digits (Vault
/// and Cloud Storage write int64 values as strings).
fn size_list(v: &TplValue, ctx: &Value) -> Result<Vec<u64>, StepError> {
    let field = "download.size";
    let items = match v.render(ctx).map_err(|e| StepError::template(field, e))? {
        Value::Null => vec![],
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .into_iter()
        .map(|i| {
            let n = match &i {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            n.ok_or_else(|| StepError::WrongType {
                field,
                expected: "a list of sizes in bytes (numbers or digit strings)",
                found: i.to_string(),
            })
        })
        .collect()
}

/// Download progress as events: a line per file, bytes as progress.
struct Progress<'a> {
    step: &'a str,
    emitter: &'a Emitter,
    /// The file being downloaded (its final path, as events show paths).
    file: String,
    /// The file's size from the last `started` (`u64::MAX`: not known), for byte bars.
    total: std::sync::atomic::AtomicU64,
}

impl DownloadObserver for Progress<'_> {
    fn started(&self, url: &str, total: Option<u64>, resumed_from: u64) {
        self.total.store(
            total.unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        let size = total.map(|t| format!(" ({t} bytes)")).unwrap_or_default();
        let resume = if resumed_from > 0 {
            format!(", resuming at byte {resumed_from}")
        } else {
            String::new()
        };
        self.emitter
            .log(self.step, format!("downloading {url}{size}{resume}"));
    }
    fn progress(&self, bytes_so_far: u64) {
        self.emitter.emit(Event::Progress {
            step: self.step.to_string(),
            percent: None,
            bytes: Some(bytes_so_far),
            total: Some(self.total.load(std::sync::atomic::Ordering::Relaxed))
                .filter(|t| *t != u64::MAX),
            file: Some(FileProgress {
                kind: ArtifactKind::Download,
                path: self.file.clone(),
            }),
        });
    }
    fn retrying(&self, attempt: u32, wait: std::time::Duration, reason: &str) {
        // `attempt` is the one about to start; the event names the one that failed.
        self.emitter.emit(Event::Retry {
            step: self.step.to_string(),
            attempt: attempt.saturating_sub(1).max(1),
            error: reason.to_string(),
            wait,
        });
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A rendered download step: the files to fetch and how.
pub struct DownloadPlan {
    /// The files, in the order of `urls`.
    pub files: Vec<FileToFetch>,
    /// The destination directory.
    pub to: PathBuf,
    /// The vendor request id to record on each artifact, when known.
    pub request_id: Option<String>,
    /// Files fetched at once (at least 1).
    pub concurrency: usize,
    /// The stall rule of every file's attempts (`download.stall_timeout`).
    pub options: download::DownloadOptions,
}

/// Renders a `download` step into its list of files.
pub fn plan_download(spec: &DownloadAction, ctx: &Value) -> Result<DownloadPlan, StepError> {
    let urls = string_list("download.urls", &spec.urls, ctx)?;
    let names = match &spec.names {
        Some(n) => Some(string_list("download.names", n, ctx)?),
        None => None,
    };
    if let Some(n) = &names {
        if n.len() != urls.len() {
            return Err(StepError::NamesMismatch {
                names: n.len(),
                urls: urls.len(),
            });
        }
    }
    let hashes = match &spec.sha256 {
        Some(h) => Some(string_list("download.sha256", h, ctx)?),
        None => None,
    };
    let md5s = match &spec.md5 {
        Some(h) => Some(string_list("download.md5", h, ctx)?),
        None => None,
    };
    let sizes = match &spec.size {
        Some(v) => Some(size_list(v, ctx)?),
        None => None,
    };
    let to = PathBuf::from(render_tpl("download.to", &spec.to, ctx)?);
    let request_id = match &spec.request_id {
        Some(r) => Some(render_tpl("download.request_id", r, ctx)?).filter(|s| !s.is_empty()),
        None => None,
    };
    let mut files = Vec::with_capacity(urls.len());
    for (i, u) in urls.iter().enumerate() {
        let url = url::Url::parse(u).map_err(|source| StepError::ListUrl {
            field: "download.urls",
            index: i,
            source,
        })?;
        let name = match &names {
            Some(n) => n[i].clone(),
            None => download::file_name_from_url(&url)?,
        };
        let dest = download::safe_join(&to, &name)?;
        files.push(FileToFetch {
            url,
            dest,
            expected_sha256: hashes.as_ref().and_then(|h| h.get(i).cloned()),
            expected_size: sizes.as_ref().and_then(|s| s.get(i).copied()),
            expected_md5: md5s.as_ref().and_then(|h| h.get(i).cloned()),
        });
    }
    Ok(DownloadPlan {
        files,
        to,
        request_id,
        concurrency: super::render_count(
            "download.concurrency",
            spec.concurrency.as_ref(),
            4,
            ctx,
        )?,
        options: download::DownloadOptions {
            stall_timeout: spec.stall_timeout.map_or(
                download::DEFAULT_STALL_TIMEOUT,
                crate::workflow::duration::Dur::get,
            ),
        },
    })
}

fn header_fn(conn: &Connection, authorize: bool) -> HeaderFn {
    if authorize {
        let c = conn.clone();
        Arc::new(move |url| {
            let (c, url) = (c.clone(), url.clone());
            Box::pin(async move { c.download_headers(&url).await })
        })
    } else {
        Arc::new(|_| Box::pin(async { Ok(reqwest::header::HeaderMap::new()) }))
    }
}

/// Says which files are fetched without the connection's credentials (their URL is on an
/// origin the credentials may not go to), once per origin.
fn note_withheld(plan: &DownloadPlan, conn: &Connection, authorize: bool, env: &StepEnv<'_>) {
    if !authorize {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for f in &plan.files {
        let settings = conn.settings();
        if settings.withholds_credentials_from(&f.url) && seen.insert(f.url.origin()) {
            env.emitter
                .log(env.step, crate::vendors::withheld_note(settings, &f.url));
        }
    }
}

/// Downloads one file and reports it as an artifact.
async fn fetch_one(
    client: &reqwest::Client,
    f: &FileToFetch,
    headers: &HeaderFn,
    request_id: &Option<String>,
    options: &download::DownloadOptions,
    env: &StepEnv<'_>,
) -> Result<download::Downloaded, StepError> {
    if let Some(d) = already_downloaded(f, env).await {
        env.emitter.log(
            env.step,
            format!(
                "{} was downloaded and verified by an earlier process",
                d.path.display()
            ),
        );
        emit_downloaded(&d, request_id, env);
        return Ok(d);
    }
    let observer = Progress {
        step: env.step,
        emitter: env.emitter,
        file: display(&f.dest),
        total: std::sync::atomic::AtomicU64::new(u64::MAX),
    };
    let d = download::download_with_options(
        client, f, headers, &env.retry, &observer, env.cancel, options,
    )
    .await?;
    emit_downloaded(&d, request_id, env);
    durable_record(env).await;
    crate::failpoint::hit("after-download");
    Ok(d)
}

/// Waits until the artifact just emitted is in the journal, so a crash from here on does
/// not cost the file (it is verified and kept by the next run). Without state, nothing.
async fn durable_record(env: &StepEnv<'_>) {
    if let Some(l) = env.ledger {
        if let Err(e) = l.journal.flush().await {
            env.emitter.warn(format!("step `{}`: {e}", env.step));
        }
    }
}

/// The recorded artifact of `path` when the file on disk still has its size and SHA-256.
pub(super) async fn recorded_file(
    env: &StepEnv<'_>,
    kind: ArtifactKind,
    path: &Path,
    source: Option<&str>,
) -> Option<Artifact> {
    let ledger = env.ledger?;
    let shown = display(path);
    let a = ledger
        .artifacts
        .iter()
        .rev()
        .find(|a| {
            a.kind == kind && a.path == shown && (source.is_none() || a.source.as_deref() == source)
        })?
        .clone();
    intact(path, a).await
}

/// `a` when the file at `path` still has the recorded size and SHA-256.
async fn intact(path: &Path, a: Artifact) -> Option<Artifact> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if meta.len() != a.bytes {
        return None;
    }
    let p = path.to_path_buf();
    let sha = tokio::task::spawn_blocking(move || crate::durable::sha256_file(&p))
        .await
        .ok()?
        .ok()?;
    (a.sha256 == sha).then_some(a)
}

/// The download an earlier process recorded for `f` under another step path: same
/// destination and same object (the URL without its query, which for pre-signed links
/// changes with each listing), when the file on disk still has its size and SHA-256.
async fn recorded_elsewhere(f: &FileToFetch, env: &StepEnv<'_>) -> Option<Artifact> {
    let ledger = env.ledger?;
    let shown = display(&f.dest);
    let same_object = |source: &str| {
        url::Url::parse(source)
            .is_ok_and(|u| u.origin() == f.url.origin() && u.path() == f.url.path())
    };
    let a = ledger
        .earlier
        .downloads_at(&shown)
        .iter()
        .rev()
        .find(|a| a.source.as_deref().is_some_and(same_object))?
        .clone();
    intact(&f.dest, a).await
}

/// A file an earlier process of the run downloaded, still intact (then it is not fetched):
/// recorded by this step, or by the step at another iteration of a resumed `repeat`.
async fn already_downloaded(f: &FileToFetch, env: &StepEnv<'_>) -> Option<download::Downloaded> {
    let a = match recorded_file(env, ArtifactKind::Download, &f.dest, None).await {
        Some(a) => a,
        None => recorded_elsewhere(f, env).await?,
    };
    if f.expected_sha256.as_ref().is_some_and(|h| a.sha256 != *h) {
        return None;
    }
    if f.expected_md5
        .as_ref()
        .is_some_and(|h| a.md5.as_deref() != Some(h.trim()))
    {
        return None;
    }
    Some(download::Downloaded {
        path: f.dest.clone(),
        bytes: a.bytes,
        sha256: a.sha256,
        md5: a.md5.unwrap_or_default(),
        url: crate::vendors::http::redact_url(&f.url),
        attempts: 0,
        resumed: false,
    })
}

fn emit_downloaded(d: &download::Downloaded, request_id: &Option<String>, env: &StepEnv<'_>) {
    env.emitter.emit(Event::Artifact {
        step: env.step.to_string(),
        artifact: Artifact {
            kind: ArtifactKind::Download,
            path: d.path.display().to_string(),
            bytes: d.bytes,
            sha256: d.sha256,
            source: Some(d.url.clone()),
            source_sha256: None,
            md5: Some(d.md5.clone()).filter(|m| !m.is_empty()),
            request_id: request_id.clone(),
            finished_at: now(),
        },
    });
}

fn download_outputs(done: &[download::Downloaded]) -> Value {
    json!({
        "files": done.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(),
        "bytes": done.iter().map(|d| d.bytes).sum::<u64>(),
        "sizes": done.iter().map(|d| d.bytes).collect::<Vec<_>>(),
        "sha256": done.iter().map(|d| d.sha256).collect::<Vec<_>>(),
        "md5": done.iter().map(|d| d.md5.clone()).collect::<Vec<_>>(),
        "urls": done.iter().map(|d| d.url.clone()).collect::<Vec<_>>(),
        "extracted": [],
        "extracted_sha256": [],
        "evidence": [],
        "partial": false,
        "problems": [],
        "results_count": {},
        "messages": {},
    })
}

/// Takes the wanted entries out of every downloaded archive into `spec.to` (see
/// [`extract`]); files an earlier process of the run extracted and that are unchanged are
/// kept. Returns each extracted file with its archive entry's name, in archive order.
async fn extract_all(
    (spec, to): (&ExtractSpec, &Tpl),
    done: &[&download::Downloaded],
    request_id: &Option<String>,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<Vec<(String, extract::Extracted)>, StepError> {
    let to = PathBuf::from(render_tpl("download.extract.to", to, ctx)?);
    create_dir(&to)?;
    let limits = extract::Limits {
        max_ratio: spec.max_ratio.map_or(extract::DEFAULT_MAX_RATIO, u64::from),
        max_total: spec.max_total.map_or(
            extract::DEFAULT_MAX_TOTAL,
            crate::workflow::bytesize::ByteSize::get,
        ),
    };
    let mut used: u64 = 0;
    let mut taken = std::collections::HashSet::new();
    let mut out = Vec::new();
    for d in done {
        let (archive, dir, format) = (d.path.clone(), to.clone(), spec.format);
        let (planned, t) = blocking("archive listing", move || {
            let p = extract::plan(&archive, &dir, format, &mut taken);
            (p, taken)
        })
        .await?;
        taken = t;
        let planned = planned?;
        limits.check_declared(&d.path, &planned, used)?;
        super::overwrite::check(env, planned.iter().map(|p| p.dest.as_path())).await?;
        for p in planned {
            let entry = p.entry.clone();
            let source = display(&d.path);
            let x = match recorded_file(env, ArtifactKind::Extracted, &p.dest, Some(&source)).await
            {
                Some(a) => extract::Extracted {
                    path: p.dest.clone(),
                    bytes: a.bytes,
                    sha256: a.sha256,
                    md5: a.md5.unwrap_or_default(),
                },
                None => {
                    let archive = d.path.clone();
                    let x = blocking("extraction", move || {
                        extract::extract_one(&archive, &p, &limits, used)
                    })
                    .await??;
                    env.emitter.log(
                        env.step,
                        format!(
                            "extracted {} ({} bytes) from {source}",
                            x.path.display(),
                            x.bytes
                        ),
                    );
                    x
                }
            };
            env.emitter.emit(Event::Artifact {
                step: env.step.to_string(),
                artifact: Artifact {
                    kind: ArtifactKind::Extracted,
                    path: display(&x.path),
                    bytes: x.bytes,
                    sha256: x.sha256,
                    source: Some(source),
                    source_sha256: Some(d.sha256),
                    md5: Some(x.md5.clone()).filter(|m| !m.is_empty()),
                    request_id: request_id.clone(),
                    finished_at: now(),
                },
            });
            used = used.saturating_add(x.bytes);
            out.push((entry, x));
        }
        durable_record(env).await;
    }
    Ok(out)
}

/// Runs `f` on the blocking pool; a panic in it is a [`StepError::TaskFailed`] naming `task`.
async fn blocking<T: Send + 'static>(
    task: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| StepError::TaskFailed { task, source })
}

/// Creates the output directory: new directories are 0700 (they will hold mail); an
/// existing one keeps its mode.
fn create_dir(dir: &Path) -> Result<(), StepError> {
    crate::durable::create_private_dir(dir).map_err(|source| StepError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn dry_run_downloads(plan: &DownloadPlan, env: &StepEnv<'_>) -> Value {
    for f in &plan.files {
        env.emitter.emit(Event::DryRun {
            step: env.step.to_string(),
            method: "GET".into(),
            url: crate::template::placeholder::readable_url(&crate::vendors::http::redact_url(
                &f.url,
            )),
            headers: vec![],
            body: None,
        });
    }
    json!({"files": [], "bytes": 0, "sizes": [], "sha256": [], "md5": [], "urls": [], "extracted": [], "extracted_sha256": [], "evidence": [], "partial": false, "problems": [], "results_count": {}, "messages": {}})
}

/// A dry run's `download`: the requests it would send, or, when the URLs come from a
/// response the dry run does not have (placeholders), what it would fetch into where.
fn dry_run_download(
    spec: &DownloadAction,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<Value, StepError> {
    let urls = string_list("download.urls", &spec.urls, ctx)?;
    if urls.iter().all(|u| url::Url::parse(u).is_ok()) {
        return Ok(dry_run_downloads(&plan_download(spec, ctx)?, env));
    }
    let to = render_tpl("download.to", &spec.to, ctx)?;
    for u in &urls {
        env.emitter
            .log(env.step, format!("would download {u} into {to}"));
    }
    Ok(json!({"files": [], "bytes": 0, "sizes": [], "sha256": [], "urls": []}))
}

/// Runs a `download` step.
pub async fn download_step(
    spec: &DownloadAction,
    conn: &Connection,
    authorize: bool,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<Value, StepError> {
    if env.dry_run {
        return dry_run_download(spec, env, ctx);
    }
    let plan = plan_download(spec, ctx)?;
    super::overwrite::check(env, plan.files.iter().map(|f| f.dest.as_path())).await?;
    create_dir(&plan.to)?;
    note_withheld(&plan, conn, authorize, env);
    let headers = header_fn(conn, authorize);
    let client = conn.client().clone();
    let done: Vec<download::Downloaded> = futures::stream::iter(0..plan.files.len())
        .map(|i| {
            fetch_one(
                &client,
                &plan.files[i],
                &headers,
                &plan.request_id,
                &plan.options,
                env,
            )
        })
        .buffered(plan.concurrency)
        .try_collect()
        .await?;
    let mut outputs = download_outputs(&done);
    if let (Some(x), Some(t)) = (&spec.spec.extract, &spec.extract) {
        extract_step((x, t), &done, &plan.request_id, env, ctx, &mut outputs).await?;
    }
    Ok(outputs)
}

/// `download.extract`: takes the mbox files out of the ZIP archives among `done` (the other
/// files of an export stay where they were downloaded, as evidence), then checks the export
/// when `verify` asks. Sets `extracted`, `extracted_sha256`, `evidence` and, with `verify`,
/// `partial`, `problems`, `results_count` and `messages` in `outputs`.
async fn extract_step(
    (spec, tpl): (&ExtractSpec, &ExtractTemplates),
    done: &[download::Downloaded],
    request_id: &Option<String>,
    env: &StepEnv<'_>,
    ctx: &Value,
    outputs: &mut Value,
) -> Result<(), StepError> {
    use super::vault_export::{self, FileRole};
    let (archives, others): (Vec<&download::Downloaded>, Vec<&download::Downloaded>) = done
        .iter()
        .partition(|d| vault_export::role(&d.path) == FileRole::Archive);
    for d in &others {
        env.emitter.log(
            env.step,
            format!("{} is not an archive: kept as evidence", d.path.display()),
        );
    }
    let extracted = extract_all((spec, &tpl.to), &archives, request_id, env, ctx).await?;
    outputs["extracted"] = json!(extracted
        .iter()
        .map(|(_, x)| display(&x.path))
        .collect::<Vec<_>>());
    outputs["extracted_sha256"] =
        json!(extracted.iter().map(|(_, x)| x.sha256).collect::<Vec<_>>());
    outputs["evidence"] = json!(others.iter().map(|d| display(&d.path)).collect::<Vec<_>>());
    let Some(crate::workflow::model::ExportVerify::Vault) = spec.verify else {
        return Ok(());
    };
    let accept_partial = tpl.accept_partial.as_ref();
    verify_vault_export(accept_partial, done, extracted, env, ctx, outputs).await
}

/// `download.extract.verify: vault`: checks the export's files and mboxes against its
/// results-count and checksums files, reports the custodians, and fails on what is missing
/// unless `accept_partial` (then the step is partial and says what is missing).
async fn verify_vault_export(
    accept_partial: Option<&Tpl>,
    done: &[download::Downloaded],
    extracted: Vec<(String, extract::Extracted)>,
    env: &StepEnv<'_>,
    ctx: &Value,
    outputs: &mut Value,
) -> Result<(), StepError> {
    use super::vault_export;
    let files: Vec<vault_export::Downloaded> = done
        .iter()
        .map(|d| vault_export::Downloaded {
            path: d.path.clone(),
            md5: d.md5.clone(),
        })
        .collect();
    let mboxes: Vec<vault_export::Mbox> = extracted
        .into_iter()
        .map(|(entry, x)| vault_export::Mbox {
            entry,
            path: x.path,
        })
        .collect();
    let verdict = blocking("export check", move || vault_export::check(&files, &mboxes)).await??;
    env.emitter.emit(Event::Custodians {
        step: env.step.to_string(),
        vendor: crate::vendors::VendorKind::Google.as_str().to_string(),
        counts: vault_export::custodian_counts(&verdict),
    });
    let accept = match accept_partial {
        Some(t) => render_bool("download.extract.accept_partial", t, ctx)?,
        None => false,
    };
    let problems: Vec<String> = verdict
        .problems
        .iter()
        .map(|p| env.emitter.secrets().mask(p))
        .collect();
    if !problems.is_empty() && !accept {
        return Err(vault_export::CheckError::Incomplete { problems }.into());
    }
    if problems.is_empty() {
        env.emitter.log(
            env.step,
            format!(
                "checked against the export's results-count and checksums files: {} account(s), {} message(s)",
                verdict.expected.len(),
                verdict.extracted.values().sum::<u64>()
            ),
        );
    } else {
        env.emitter.emit(Event::Partial {
            step: env.step.to_string(),
            problems: problems.clone(),
        });
    }
    outputs["partial"] = json!(!problems.is_empty());
    outputs["problems"] = json!(problems);
    outputs["results_count"] = json!(verdict.expected);
    outputs["messages"] = json!(verdict.extracted);
    Ok(())
}

/// A template that must render to `true` or `false`.
fn render_bool(field: &'static str, t: &Tpl, ctx: &Value) -> Result<bool, StepError> {
    match render_tpl(field, t, ctx)?.trim() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        other => Err(StepError::WrongType {
            field,
            expected: "true or false",
            found: other.to_string(),
        }),
    }
}

/// A rendered decrypt step (files aside).
pub struct DecryptPlan {
    /// The OpenPGP secret key file.
    pub key_path: PathBuf,
    /// The key's passphrase, when it has one (secret).
    pub passphrase: Option<String>,
    /// The directory the plaintext goes to.
    pub to: PathBuf,
    /// Files decrypted at once (at least 1).
    pub concurrency: usize,
}

/// Renders a `decrypt` step's key, passphrase and target; the passphrase becomes a secret.
pub fn plan_decrypt(
    spec: &DecryptAction,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<DecryptPlan, StepError> {
    let key_path = PathBuf::from(render_tpl("decrypt.key", &spec.key, ctx)?);
    let passphrase = render_opt_tpl("decrypt.passphrase", spec.passphrase.as_ref(), ctx)?;
    if let Some(p) = &passphrase {
        env.emitter.secrets().add(p);
    }
    let to = PathBuf::from(render_tpl("decrypt.to", &spec.to, ctx)?);
    let default_conc = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(2);
    Ok(DecryptPlan {
        key_path,
        passphrase,
        to,
        concurrency: super::render_count(
            "decrypt.concurrency",
            spec.concurrency.as_ref(),
            default_conc,
            ctx,
        )?,
    })
}

/// Loads and unlocks the key now, so a wrong passphrase is reported before any work.
async fn load_key(plan: &DecryptPlan) -> Result<Arc<DecryptionKey>, StepError> {
    let (path, pass) = (plan.key_path.clone(), plan.passphrase.clone());
    let key = tokio::task::spawn_blocking(move || DecryptionKey::load(&path, pass.as_deref()))
        .await
        .map_err(|source| StepError::TaskFailed {
            task: "key loading",
            source,
        })??;
    Ok(Arc::new(key))
}

/// Decrypts one file on the blocking pool and reports it as an artifact.
async fn decrypt_one(
    key: Arc<DecryptionKey>,
    input: PathBuf,
    to: &Path,
    env: &StepEnv<'_>,
) -> Result<decrypt::DecryptedFile, StepError> {
    let output = to.join(decrypt::output_name(&input));
    if let Some(a) =
        recorded_file(env, ArtifactKind::Decrypt, &output, Some(&display(&input))).await
    {
        let input_bytes = tokio::fs::metadata(&input).await.map(|m| m.len()).ok();
        if let (Some(input_bytes), Some(input_sha256)) = (input_bytes, a.source_sha256) {
            env.emitter.log(
                env.step,
                format!("{} was decrypted by an earlier process", output.display()),
            );
            let d = decrypt::DecryptedFile {
                input,
                path: output,
                bytes: a.bytes,
                sha256: a.sha256,
                input_bytes,
                input_sha256,
            };
            emit_decrypted(env, &d);
            return Ok(d);
        }
    }
    if env.ledger.is_some() {
        // This run owns `output`: plaintext a crashed process left half-written goes first.
        let removed = decrypt::remove_stale_temps(&output);
        if removed > 0 {
            env.emitter.log(
                env.step,
                format!("removed {removed} partial plaintext file(s) left by an earlier process"),
            );
        }
    }
    env.emitter
        .log(env.step, format!("decrypting {}", input.display()));
    let (emitter, step, file) = (env.emitter.clone(), env.step.to_string(), display(&output));
    let progress = move |read, size| {
        emitter.emit(Event::Progress {
            step: step.clone(),
            percent: None,
            bytes: Some(read),
            total: Some(size),
            file: Some(FileProgress {
                kind: ArtifactKind::Decrypt,
                path: file.clone(),
            }),
        });
    };
    let d = tokio::task::spawn_blocking(move || {
        decrypt::decrypt_file_reporting(&key, &input, &output, &progress)
    })
    .await
    .map_err(|source| StepError::TaskFailed {
        task: "decrypt",
        source,
    })??;
    // The plaintext is in place, its artifact record not yet written.
    crate::failpoint::hit("decrypted-unrecorded");
    emit_decrypted(env, &d);
    durable_record(env).await;
    crate::failpoint::hit("after-decrypt");
    Ok(d)
}

fn decrypt_outputs(done: &[decrypt::DecryptedFile]) -> Value {
    json!({
        "files": done.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(),
        "bytes": done.iter().map(|d| d.bytes).sum::<u64>(),
        "sizes": done.iter().map(|d| d.bytes).collect::<Vec<_>>(),
        "sha256": done.iter().map(|d| d.sha256).collect::<Vec<_>>(),
    })
}

/// Runs a `decrypt` step.
pub async fn decrypt_step(
    spec: &DecryptAction,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<Value, StepError> {
    let files = string_list("decrypt.files", &spec.files, ctx)?;
    let plan = plan_decrypt(spec, env, ctx)?;
    if env.dry_run {
        for f in &files {
            env.emitter.log(
                env.step,
                format!(
                    "would decrypt {f} into {} with {}",
                    plan.to.display(),
                    plan.key_path.display()
                ),
            );
        }
        return Ok(decrypt_outputs(&[]));
    }
    let outputs: Vec<PathBuf> = files
        .iter()
        .map(|f| plan.to.join(decrypt::output_name(Path::new(f))))
        .collect();
    super::overwrite::check(env, outputs.iter().map(PathBuf::as_path)).await?;
    create_dir(&plan.to)?;
    let key = load_key(&plan).await?;
    let done: Vec<decrypt::DecryptedFile> = futures::stream::iter(files)
        .map(|f| decrypt_one(key.clone(), PathBuf::from(f), &plan.to, env))
        .buffered(plan.concurrency)
        .try_collect()
        .await?;
    count_custodian(spec, &done, env, ctx).await?;
    Ok(decrypt_outputs(&done))
}

/// With `decrypt.custodian`: counts the messages of the decrypted mbox files and reports
/// them as that custodian's (the vendor gives no count of its own).
async fn count_custodian(
    spec: &DecryptAction,
    done: &[decrypt::DecryptedFile],
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<(), StepError> {
    let rendered = render_opt_tpl("decrypt.custodian", spec.custodian.as_ref(), ctx)?;
    let Some(custodian) = rendered.filter(|c| !c.trim().is_empty()) else {
        return Ok(());
    };
    let paths: Vec<PathBuf> = done.iter().map(|d| d.path.clone()).collect();
    let exported = blocking("message count", move || {
        paths
            .iter()
            .map(|p| super::vault_export::count_messages(p))
            .sum::<Result<u64, _>>()
    })
    .await??;
    env.emitter.emit(Event::Custodians {
        step: env.step.to_string(),
        vendor: String::new(),
        counts: vec![crate::events::CustodianCount {
            custodian,
            exported,
            vendor_count: None,
        }],
    });
    Ok(())
}

/// Which of two pipelined steps failed.
#[derive(Debug)]
pub enum PipelineError {
    /// The download step failed (nothing of it is reported as decrypted).
    Download(StepError),
    /// The decrypt step failed, with the downloads stopped where they were.
    Decrypt {
        /// Why the decrypt step failed.
        error: StepError,
        /// How far the download step got (None: it had not started).
        downloads: Option<DownloadProgress>,
    },
}

/// How far the download step of a pipelined pair got when its decrypt step failed: a
/// download step is complete only when every one of its files is downloaded and verified.
#[derive(Debug)]
pub struct DownloadProgress {
    /// Files downloaded and verified (at their final names).
    pub complete: usize,
    /// Files the step downloads in all.
    pub of: usize,
}

impl DownloadProgress {
    /// True when every file of the download step is complete.
    pub fn is_complete(&self) -> bool {
        self.complete == self.of
    }
}

/// A `download` followed by a `decrypt` of its files, pipelined: each file is decrypted as
/// soon as it has arrived, while the others still download. The key is unlocked first, so a
/// wrong passphrase fails before gigabytes are fetched.
pub async fn download_then_decrypt(
    dl: &DownloadAction,
    conn: &Connection,
    authorize: bool,
    dec: &DecryptAction,
    env_dl: &StepEnv<'_>,
    env_dec: &StepEnv<'_>,
    ctx: &Value,
) -> Result<(Value, Value), PipelineError> {
    let plan = plan_download(dl, ctx).map_err(PipelineError::Download)?;
    let dplan = plan_decrypt(dec, env_dec, ctx).map_err(decrypt_failed_first)?;
    if env_dl.dry_run {
        let out = dry_run_downloads(&plan, env_dl);
        env_dec.emitter.log(
            env_dec.step,
            format!(
                "would decrypt each downloaded file into {}",
                dplan.to.display()
            ),
        );
        return Ok((out, decrypt_outputs(&[])));
    }
    let n = plan.files.len();
    prepare_both_outputs(&plan, &dplan, env_dl, env_dec).await?;
    note_withheld(&plan, conn, authorize, env_dl);
    let headers = header_fn(conn, authorize);
    // The downloads finished so far: when the decrypt stage fails, the others are dropped
    // mid-transfer and the download step is only as complete as this list.
    let finished = std::sync::Mutex::new(Vec::with_capacity(n));
    // Two stages joined by a channel: downloads (`concurrency` at a time) hand each finished
    // file to the decrypt stage at once, which runs `dplan.concurrency` decrypts at a time.
    // A decrypt never holds a download slot, and the key is unlocked while the first files
    // download; a wrong passphrase still stops everything (try_join drops the downloads,
    // leaving their `.part` files to resume).
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, download::Downloaded)>(n.max(1));
    let downloads = download_stage(conn.client(), &headers, &plan, env_dl, tx, &finished);
    let decrypts = decrypt_stage(&dplan, rx, env_dec, n);
    let decrypts = async { decrypts.await.map_err(Stage::Decrypt) };
    let downloads = async { downloads.await.map_err(Stage::Download) };
    let joined = futures::future::try_join(downloads, decrypts).await;
    let downloaded = in_order(
        finished
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let decrypted = match joined {
        Ok(((), decrypted)) => in_order(decrypted),
        Err(Stage::Download(e)) => return Err(PipelineError::Download(e)),
        Err(Stage::Decrypt(e)) => return Err(decrypt_failed(e, &downloaded, n)),
    };
    count_custodian(dec, &decrypted, env_dec, ctx)
        .await
        .map_err(|e| decrypt_failed(e, &downloaded, n))?;
    Ok((download_outputs(&downloaded), decrypt_outputs(&decrypted)))
}

/// Every file either step would write is checked before anything is fetched; both target
/// directories are created.
async fn prepare_both_outputs(
    plan: &DownloadPlan,
    dplan: &DecryptPlan,
    env_dl: &StepEnv<'_>,
    env_dec: &StepEnv<'_>,
) -> Result<(), PipelineError> {
    let dests = plan.files.iter().map(|f| f.dest.as_path());
    super::overwrite::check(env_dl, dests)
        .await
        .map_err(PipelineError::Download)?;
    let outputs: Vec<PathBuf> = plan
        .files
        .iter()
        .map(|f| dplan.to.join(decrypt::output_name(&f.dest)))
        .collect();
    super::overwrite::check(env_dec, outputs.iter().map(PathBuf::as_path))
        .await
        .map_err(decrypt_failed_first)?;
    create_dir(&plan.to).map_err(PipelineError::Download)?;
    create_dir(&dplan.to).map_err(decrypt_failed_first)
}

/// The items of a stage by their file's index in the plan.
fn in_order<T>(mut indexed: Vec<(usize, T)>) -> Vec<T> {
    indexed.sort_by_key(|(i, _)| *i);
    indexed.into_iter().map(|(_, t)| t).collect()
}

/// The download stage: `plan.concurrency` downloads at a time; each finished file is noted
/// in `finished` and handed to the decrypt stage.
async fn download_stage(
    client: &reqwest::Client,
    headers: &HeaderFn,
    plan: &DownloadPlan,
    env_dl: &StepEnv<'_>,
    tx: tokio::sync::mpsc::Sender<(usize, download::Downloaded)>,
    finished: &std::sync::Mutex<Vec<(usize, download::Downloaded)>>,
) -> Result<(), StepError> {
    let mut stream = futures::stream::iter(0..plan.files.len())
        .map(|i| async move {
            fetch_one(
                client,
                &plan.files[i],
                headers,
                &plan.request_id,
                &plan.options,
                env_dl,
            )
            .await
            .map(|d| (i, d))
        })
        .buffer_unordered(plan.concurrency);
    while let Some(r) = stream.next().await {
        let (i, d) = r?;
        finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((i, d.clone()));
        // The decrypt stage only goes away on its own error, which try_join reports.
        let _ = tx.send((i, d)).await;
    }
    Ok(())
}

/// The decrypt stage: unlocks the key, then decrypts each file as it arrives,
/// `dplan.concurrency` at a time.
async fn decrypt_stage(
    dplan: &DecryptPlan,
    mut rx: tokio::sync::mpsc::Receiver<(usize, download::Downloaded)>,
    env_dec: &StepEnv<'_>,
    n: usize,
) -> Result<Vec<(usize, decrypt::DecryptedFile)>, StepError> {
    let key = load_key(dplan).await?;
    let mut running = futures::stream::FuturesUnordered::new();
    let mut done = Vec::with_capacity(n);
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            got = rx.recv(), if open && running.len() < dplan.concurrency => match got {
                Some((i, d)) => {
                    let key = key.clone();
                    let to = &dplan.to;
                    running.push(async move {
                        decrypt_one(key, d.path, to, env_dec).await.map(|m| (i, m))
                    });
                }
                None => open = false,
            },
            Some(r) = running.next(), if !running.is_empty() => done.push(r?),
        }
    }
    Ok(done)
}

/// The stage of a pipelined pair that stopped it.
enum Stage {
    Download(StepError),
    Decrypt(StepError),
}

/// The decrypt step's failure, with the `complete` downloads of the `of` files.
fn decrypt_failed(error: StepError, complete: &[download::Downloaded], of: usize) -> PipelineError {
    PipelineError::Decrypt {
        error,
        downloads: Some(DownloadProgress {
            complete: complete.len(),
            of,
        }),
    }
}

/// The decrypt step's failure before any download started.
fn decrypt_failed_first(error: StepError) -> PipelineError {
    PipelineError::Decrypt {
        error,
        downloads: None,
    }
}

fn emit_decrypted(env: &StepEnv<'_>, d: &decrypt::DecryptedFile) {
    env.emitter.emit(Event::Artifact {
        step: env.step.to_string(),
        artifact: Artifact {
            kind: ArtifactKind::Decrypt,
            path: d.path.display().to_string(),
            bytes: d.bytes,
            sha256: d.sha256,
            source: Some(display(&d.input)),
            source_sha256: Some(d.input_sha256),
            md5: None,
            request_id: None,
            finished_at: now(),
        },
    });
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
