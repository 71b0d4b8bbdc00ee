//! The subcommands other than `run`: `validate`, `schema`, `runs`, `verify`, `decrypt`, `keygen`,
//! `completions`, `man` (`sim` is in `simulator.rs`).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::args::{
    CursorsCommand, DecryptArgs, KeygenArgs, RunsCommand, StateCommand, StateDirArg,
};
use super::error::CliError;
use crate::events::RunStatus;
use crate::report::decrypt::{show_progress, DecryptReport};
use crate::report::manifest::Recorded;
use crate::report::manifest::SignatureCheck;
use crate::state::cursors::CursorId;
use crate::state::{StateDir, Store, StoreSpec};
use crate::steps::decrypt::{decrypt_file_reporting, output_name, DecryptionKey};
use crate::workflow::duration::parse_duration;
use crate::workflow::packs::PackSettings;
use crate::workflow::validate::{validate_file, validate_with};
use serde_json::json;

/// The JSON Schema of workflow files, as checked in under `schemas/`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(crate::workflow::model::Workflow);
    serde_json::to_string_pretty(&schema).unwrap_or_else(|_| "{}".into())
}

/// `auditflow completions SHELL`: the completion script on stdout, generated from the clap
/// definition so it never lags behind the flags.
pub(super) fn completions(shell: clap_complete::Shell) {
    let mut cmd = <super::args::Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "auditflow", &mut out);
    crate::out!("{}", String::from_utf8_lossy(&out));
}

/// `auditflow man --dir DIR`: `auditflow.1` and `auditflow-<sub>.1` for every subcommand.
pub(super) fn man(dir: &Path) -> Result<(), CliError> {
    let cmd = <super::args::Cli as clap::CommandFactory>::command();
    let fail = |e: std::io::Error| {
        CliError::Failed(format!(
            "cannot write man pages into {}: {e}; pick a writable directory with --dir",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(cmd, dir).map_err(fail)?;
    crate::outln!("man pages written to {}", dir.display());
    Ok(())
}

/// `auditflow validate`: `ok` per good file on stdout, the diagnostics of the others.
pub(super) fn validate(files: &[PathBuf], packs: &PackSettings) -> Result<(), CliError> {
    let mut errors = Vec::new();
    for f in files {
        match validate_with(f, packs) {
            Ok(plan) => {
                let extra = plan.files.len().saturating_sub(1);
                if extra > 0 {
                    crate::outln!(
                        "{}: ok (with {extra} used file{})",
                        f.display(),
                        if extra == 1 { "" } else { "s" }
                    );
                } else {
                    crate::outln!("{}: ok", f.display());
                }
            }
            Err(diags) => errors.push(CliError::InvalidWorkflow(diags)),
        }
    }
    if !errors.is_empty() {
        errors.push(CliError::InvalidFiles {
            bad: errors.len(),
            total: files.len(),
        });
    }
    CliError::all(errors)
}

/// `auditflow runs list|show`.
pub(super) async fn runs(cmd: RunsCommand) -> Result<(), CliError> {
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
    match cmd {
        RunsCommand::List { state, json } => {
            let sd = existing_store(&state).await?;
            let list = sd
                .list()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if json {
                crate::outln!("{}", pretty(crate::report::runs::list_json(&list)));
            } else {
                crate::out!("{}", crate::report::runs::list(&list));
            }
        }
        RunsCommand::Show { run, state, json } => {
            let sd = existing_store(&state).await?;
            let (r, active) = sd
                .show(&run)
                .await
                .map_err(|e| CliError::Invalid(e.to_string()))?;
            let runner = sd.runner(&r.header.run_id, &r.header.key, active).await;
            if json {
                let mut v = crate::report::runs::show_json(&r, active);
                v["runner"] = serde_json::json!(runner);
                crate::outln!("{}", pretty(v));
            } else {
                crate::out!("{}", crate::report::runs::show(&r, active));
                if let Some(who) = runner {
                    crate::outln!("runner: {who}");
                }
            }
        }
        RunsCommand::Abandon { run, state } => {
            let sd = existing_store(&state).await?;
            let id = sd
                .abandon_run(&run)
                .await
                .map_err(|e| CliError::Invalid(e.to_string()))?;
            crate::outln!("abandoned run {id}: no later run resumes it (its journal is kept)");
        }
        RunsCommand::Prune {
            older_than,
            apply,
            state,
        } => prune(&existing_store(&state).await?, &older_than, apply).await?,
    }
    Ok(())
}

/// The store `--state`/`--state-dir` name; a directory must exist (a command that only
/// reads it does not create one).
pub(super) async fn existing_store(arg: &StateDirArg) -> Result<Store, CliError> {
    match arg.spec() {
        StoreSpec::Dir(dir) => existing_state(&dir).map(Store::Dir),
        spec => Store::open(&spec)
            .await
            .map_err(|e| CliError::Invalid(e.to_string())),
    }
}

/// The state directory `dir`, which must exist (a command that only reads it does not
/// create one).
fn existing_state(dir: &Path) -> Result<StateDir, CliError> {
    if !dir.join("auditflow-state.json").exists() {
        return Err(CliError::Invalid(format!(
            "{} is not an auditflow state directory (no runs recorded there); pass --state-dir",
            dir.display()
        )));
    }
    StateDir::open(dir).map_err(|e| CliError::Invalid(e.to_string()))
}

/// `auditflow runs prune`: lists the unfinished runs idle for `older_than`, and abandons
/// them with `apply`.
async fn prune(sd: &Store, older_than: &str, apply: bool) -> Result<(), CliError> {
    let idle =
        parse_duration(older_than).map_err(|e| CliError::Usage(format!("--older-than: {e}")))?;
    let cutoff =
        chrono::Utc::now() - chrono::TimeDelta::from_std(idle).unwrap_or(chrono::TimeDelta::MAX);
    let stale = sd
        .unfinished_before(cutoff)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if stale.is_empty() {
        crate::outln!("no unfinished run has been idle for {older_than}");
        return Ok(());
    }
    let mut failed = Vec::new();
    for r in &stale {
        let line = format!(
            "{} {} (started {}, last record {})",
            r.run_id,
            r.workflow,
            r.started_at.format("%Y-%m-%d %H:%M UTC"),
            r.last_at.format("%Y-%m-%d %H:%M UTC")
        );
        if !apply {
            crate::outln!("would abandon {line}");
            continue;
        }
        match sd.abandon_run(&r.run_id).await {
            Ok(_) => crate::outln!("abandoned {line}"),
            Err(e) => failed.push(format!("{}: {e}", r.run_id)),
        }
    }
    if !apply {
        crate::outln!("{} run(s); pass --apply to abandon them", stale.len());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "not abandoned: {}",
            failed.join("; ")
        )))
    }
}

/// `auditflow state copy`.
pub(super) async fn state(cmd: StateCommand) -> Result<(), CliError> {
    let StateCommand::Copy { from, to } = cmd;
    let (from, to) = (StoreSpec::parse(&from), StoreSpec::parse(&to));
    if from == to {
        return Err(CliError::Usage(
            "--from and --to name the same store; nothing to copy".into(),
        ));
    }
    let source = match &from {
        StoreSpec::Dir(d) => Store::Dir(existing_state(d)?),
        spec => Store::open(spec)
            .await
            .map_err(|e| CliError::Invalid(e.to_string()))?,
    };
    let target = Store::open(&to)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let counts = source
        .copy_to(&target)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    crate::outln!(
        "copied {} run(s) from {} to {} ({} already there), {} unfinished, {} quota ledger(s), {} cursor(s)",
        counts.runs,
        source.describe(),
        target.describe(),
        counts.runs_present,
        counts.unfinished,
        counts.ledgers,
        counts.cursors
    );
    for key in &counts.conflicts {
        crate::errln!(
            "warning: run key {key} has another unfinished run in {}; that one is kept (see `auditflow runs list`)",
            target.describe()
        );
    }
    crate::outln!(
        "run with --state {} from now on; the source is left as it was",
        target.describe()
    );
    Ok(())
}

/// `auditflow cursors list|show|set`.
pub(super) async fn cursors(cmd: CursorsCommand) -> Result<(), CliError> {
    match cmd {
        CursorsCommand::List { state, json } => {
            let sd = existing_store(&state).await?;
            let all = sd
                .list_cursors()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect();
                crate::outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else if all.is_empty() {
                crate::outln!("no cursor is stored in {}", sd.describe());
            } else {
                for c in &all {
                    crate::outln!("{}", cursor_line(c));
                }
            }
            Ok(())
        }
        CursorsCommand::Show {
            workflow,
            cursor,
            key,
            state,
        } => {
            let sd = existing_store(&state).await?;
            let id = CursorId {
                workflow: &workflow,
                name: &cursor,
                key: &key,
            };
            match sd
                .read_cursor(id)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?
            {
                Some(c) => {
                    crate::outln!("{}", cursor_line(&c));
                    Ok(())
                }
                None => Err(CliError::Failed(format!(
                    "no position is stored for cursor `{cursor}` of workflow `{workflow}`{} in {}: its next run starts from the cursor's initial value",
                    if key.is_empty() { String::new() } else { format!(" (key {key})") },
                    sd.describe()
                ))),
            }
        }
        CursorsCommand::Set {
            workflow,
            cursor,
            value,
            key,
            state,
        } => set_cursor(&workflow, &cursor, &value, &key, &state.spec()).await,
    }
}

/// Whether `value` holds a key block or the value of an environment variable that names a
/// credential (`*SECRET*`, `*PASSWORD*`, `*PASSPHRASE*`, `*TOKEN*`, `*KEY*`).
fn looks_like_credential(value: &str) -> bool {
    if value.contains("-----BEGIN") || value.contains("PRIVATE KEY") {
        return true;
    }
    std::env::vars().any(|(name, v)| {
        let name = name.to_ascii_uppercase();
        ["SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "KEY"]
            .iter()
            .any(|w| name.contains(w))
            && v.len() >= 8
            && value.contains(v.as_str())
    })
}

/// One stored cursor as a line.
fn cursor_line(c: &crate::state::cursors::StoredCursor) -> String {
    format!(
        "{} {}{} = {} (written {} by run {})",
        c.workflow,
        c.name,
        if c.key.is_empty() {
            String::new()
        } else {
            format!("[{}]", c.key)
        },
        c.value,
        c.written_at.format("%Y-%m-%d %H:%M:%S UTC"),
        c.run_id
    )
}

/// `auditflow cursors set`: the cursor must be declared by the workflow file; a value that
/// holds a credential of the environment (or a key block) is refused, as cursors are kept in
/// the clear.
async fn set_cursor(
    workflow: &Path,
    cursor: &str,
    value: &str,
    key: &str,
    store: &StoreSpec,
) -> Result<(), CliError> {
    let plan = validate_file(workflow).map_err(CliError::InvalidWorkflow)?;
    let wf = &plan.root.workflow;
    if !wf.cursors.contains_key(cursor) {
        let known: Vec<&str> = wf.cursors.keys().map(String::as_str).collect();
        return Err(CliError::Invalid(format!(
            "{} declares no cursor `{cursor}` (it has: {})",
            workflow.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    }
    if looks_like_credential(value) {
        return Err(CliError::Invalid(format!(
            "the value for cursor `{cursor}` holds a credential (a key block, or the value of a secret environment variable); cursors are kept in the clear: give a position (a token, a date)"
        )));
    }
    let parsed: serde_json::Value = serde_json::from_str(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    let sd = Store::open(store)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let id = CursorId {
        workflow: &wf.name,
        name: cursor,
        key,
    };
    sd.write_cursor(&crate::state::cursors::StoredCursor::new(
        id,
        &parsed,
        "set-by-hand",
    ))
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?;
    crate::outln!(
        "cursor `{cursor}` of workflow `{}`{} set to {parsed}: the next run starts there",
        wf.name,
        if key.is_empty() {
            String::new()
        } else {
            format!(" (key {key})")
        }
    );
    Ok(())
}

/// `auditflow inputs WF`: what the workflow takes and uses.
pub(super) fn describe(workflow: &Path, json: bool) -> Result<(), CliError> {
    let plan = validate_file(workflow).map_err(CliError::InvalidWorkflow)?;
    let d = crate::workflow::describe::Description::of(&plan);
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
        return Ok(());
    }
    crate::outln!("{} ({})", d.name, workflow.display());
    if let Some(text) = &d.description {
        crate::outln!(
            "  {}",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    crate::outln!(
        "lifecycle: {}",
        serde_json::to_value(d.lifecycle)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    crate::outln!("inputs (-i NAME=VALUE):");
    for i in &d.inputs {
        let default = match (&i.default, i.required) {
            (_, true) => "required".to_string(),
            (Some(v), _) => format!("default {v}"),
            (None, false) => "optional".to_string(),
        };
        crate::outln!(
            "  {:<20} {:<9} {}{}{}{}",
            i.name,
            i.kind,
            default,
            if i.secret { ", secret" } else { "" },
            i.allowed
                .as_deref()
                .map(|a| format!(", allowed: {a}"))
                .unwrap_or_default(),
            i.description
                .as_deref()
                .map(|t| format!(": {t}"))
                .unwrap_or_default()
        );
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    crate::outln!("environment: {}", list(&d.environment));
    crate::outln!("quota budgets: {}", list(&d.budgets));
    crate::outln!("cursors: {}", list(&d.cursors));
    Ok(())
}

/// `auditflow report`: the evidence report of `dir` in `format`, to `output` or stdout.
pub(super) fn report(
    dir: &Path,
    format: super::args::ReportFormat,
    output: Option<&Path>,
    store: &StoreSpec,
    signer: Option<&Path>,
    run: Option<&str>,
) -> Result<(), CliError> {
    let text = evidence_report(dir, format, store, signer, run)?;
    match output {
        Some(path) => {
            crate::report::evidence::write(path, &text)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            crate::errln!("evidence report: {}", path.display());
        }
        None => crate::out!("{text}"),
    }
    Ok(())
}

/// Runs `f` to its end from synchronous code inside the CLI's multi-thread runtime (the
/// evidence report is built synchronously; the shared store answers asynchronously).
fn wait_for<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// The evidence report of `dir` rendered in `format` (the journals read from the store
/// `store` names, when it can be opened). When `dir` holds no manifest yet and `run` names
/// a run, the report is made from that run's journal alone (a pending run that wrote no
/// file).
pub(super) fn evidence_report(
    dir: &Path,
    format: super::args::ReportFormat,
    store: &StoreSpec,
    signer: Option<&Path>,
    run: Option<&str>,
) -> Result<String, CliError> {
    use crate::report::evidence;
    let state = match store {
        StoreSpec::Dir(d) => existing_state(d).ok().map(Store::Dir),
        spec => wait_for(Store::open(spec)).ok(),
    };
    let journals = |id: &str| {
        let s = state.as_ref()?;
        wait_for(s.show(id)).ok().map(|(r, _)| r)
    };
    let no_manifest = !dir.join(crate::report::manifest::FILE_NAME).exists();
    let r = match run.filter(|_| no_manifest) {
        Some(id) => {
            let replay = journals(id).ok_or_else(|| {
                CliError::Invalid(format!(
                    "{} holds no manifest.json, and run {id} has no journal in the state store {}: check the run id (`auditflow runs list`) and --state-dir",
                    dir.display(),
                    store.describe()
                ))
            })?;
            evidence::build_pending(dir, &replay)
        }
        None => {
            evidence::build(dir, &journals, signer).map_err(|e| CliError::Invalid(e.to_string()))?
        }
    };
    Ok(match format {
        super::args::ReportFormat::Html => evidence::render_html(&r),
        super::args::ReportFormat::Md => evidence::render_markdown(&r),
    })
}

/// `auditflow verify`: re-hashes the artifacts of `dir` against its manifest, checks the
/// manifest's signature with `signer`, and lists files the manifest does not know (failing
/// on them with `strict`).
pub(super) fn verify(
    dir: &Path,
    signer: Option<&Path>,
    strict: bool,
    json: bool,
) -> Result<(), CliError> {
    let v = crate::report::manifest::verify(dir).map_err(|e| CliError::Invalid(e.to_string()))?;
    let sig = SignatureCheck::of(&dir.join(crate::report::manifest::FILE_NAME), signer);
    let bad_sig = matches!(sig, SignatureCheck::Failed(_));
    let failing_unlisted = if strict { v.unlisted.len() } else { 0 };
    let ok = v.problems.is_empty() && !bad_sig && failing_unlisted == 0;
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dir": dir.display().to_string(),
                "ok": ok,
                "checked": v.checked,
                "problems": v.problems,
                "unlisted": v.unlisted,
                "strict": strict,
                "signature": sig.json(),
            }))
            .unwrap_or_default()
        );
    } else {
        for p in &v.problems {
            crate::outln!("{p}");
        }
        for u in &v.unlisted {
            crate::outln!("UNLISTED {u}: not in the manifest (not evidence this tool wrote)");
        }
        crate::outln!("{}", sig.line());
        if v.problems.is_empty() {
            crate::outln!(
                "{}: {} artifact(s) verified, all sizes and SHA-256 match{}",
                dir.display(),
                v.checked,
                match (v.unlisted.len(), strict) {
                    (0, _) => String::new(),
                    (n, false) =>
                        format!("; {n} file(s) not in the manifest (--strict fails on them)"),
                    (n, true) => format!("; {n} file(s) not in the manifest"),
                }
            );
        }
    }
    if ok {
        return Ok(());
    }
    Err(CliError::Differs {
        dir: dir.to_path_buf(),
        differ: v.problems.len() + usize::from(bad_sig) + failing_unlisted,
        checked: v.checked,
    })
}

/// Fails, before anything is decrypted, when an output file exists that `out/manifest.json`
/// does not record unchanged (a file the user had there is never replaced silently).
fn refuse_overwrite(out: &Path, files: &[PathBuf]) -> Result<(), CliError> {
    let recorded = Recorded::load(out);
    for f in files {
        let output = out.join(output_name(f));
        if std::fs::symlink_metadata(&output).is_ok() && !recorded.owns(&output) {
            return Err(CliError::Failed(format!(
                "{} already exists and is not recorded unchanged in {}; nothing was decrypted. \
                 Move the file away, or pass --overwrite to replace it",
                output.display(),
                out.join(crate::report::manifest::FILE_NAME).display()
            )));
        }
    }
    Ok(())
}

/// `auditflow decrypt`: unlocks the key once, decrypts each file (in parallel), writes a
/// manifest of what it produced.
pub(super) async fn decrypt(a: DecryptArgs) -> Result<(), CliError> {
    let passphrase = match &a.passphrase_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            CliError::Usage(format!(
                "--passphrase-env {var}: the environment variable {var} is not set"
            ))
        })?),
        None => None,
    };
    if !a.overwrite {
        refuse_overwrite(&a.out, &a.files)?;
    }
    crate::durable::create_private_dir(&a.out)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", a.out.display())))?;
    let key = load_key(a.key.clone(), passphrase).await?;
    let report = DecryptReport::start(key.key_ids(), &a.files);
    let tasks: Vec<_> = a
        .files
        .iter()
        .map(|f| {
            let (key, input, output) = (key.clone(), f.clone(), a.out.join(output_name(f)));
            let bar = report.bar(f);
            let progress = bar.clone();
            let task = tokio::task::spawn_blocking(move || {
                let progress = |read, size| show_progress(&progress, read, size);
                decrypt_file_reporting(&key, &input, &output, &progress)
            });
            (bar, task)
        })
        .collect();
    let mut errors = Vec::new();
    for (f, (bar, t)) in a.files.iter().zip(tasks) {
        let done = t.await;
        bar.finish_and_clear();
        match done {
            Ok(Ok(d)) => report.decrypted(f, &d),
            Ok(Err(e)) => errors.push(CliError::Failed(e.to_string())),
            Err(e) => errors.push(CliError::Failed(format!(
                "{}: decrypt task failed: {e}",
                f.display()
            ))),
        }
    }
    let status = if errors.is_empty() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    if let Err(e) = report.finish(status, &a.out) {
        errors.push(CliError::Report(e));
    }
    if !errors.is_empty() {
        errors.push(CliError::DecryptFailed {
            failed: errors.len(),
            total: a.files.len(),
        });
    }
    CliError::all(errors)
}

/// Loads and unlocks the secret key off the async threads.
async fn load_key(
    path: PathBuf,
    passphrase: Option<String>,
) -> Result<Arc<DecryptionKey>, CliError> {
    let loaded =
        tokio::task::spawn_blocking(move || DecryptionKey::load(&path, passphrase.as_deref()))
            .await;
    match loaded {
        Ok(Ok(k)) => Ok(Arc::new(k)),
        Ok(Err(e)) => Err(CliError::Failed(e.to_string())),
        Err(e) => Err(CliError::Failed(format!("key loading failed: {e}"))),
    }
}

/// `auditflow keygen`: an RSA key pair for Google exports, the fingerprint, and what to run next.
pub(super) fn keygen(a: &KeygenArgs) -> Result<(), CliError> {
    use crate::openpgp::generate::{
        refuse_existing, rsa_key, signing_key, write_key_files, KeygenError,
    };
    let var = a.passphrase_env.clone().unwrap_or_else(|| {
        if a.sign {
            "AUDIT_SIGN_PASSPHRASE".into()
        } else {
            "AUDIT_PGP_PASSPHRASE".into()
        }
    });
    let passphrase = if a.no_passphrase {
        None
    } else {
        match std::env::var(&var) {
            Ok(p) if !p.is_empty() => Some(p),
            _ => {
                return Err(CliError::Invalid(format!(
                    "the environment variable {} is empty or not set: set it to the passphrase \
                     that will protect the secret key (or pass --no-passphrase to leave the key \
                     unprotected)",
                    var
                )))
            }
        }
    };
    let fail = |e: KeygenError| match e {
        KeygenError::Exists { .. } => CliError::Invalid(e.to_string()),
        _ => CliError::Failed(e.to_string()),
    };
    refuse_existing(&a.out).map_err(fail)?;
    if a.sign {
        let key = signing_key(&a.user_id, passphrase.as_deref()).map_err(fail)?;
        let files = write_key_files(&key, &a.out).map_err(fail)?;
        crate::outln!("fingerprint: {}", files.fingerprint);
        crate::outln!(
            "public key:  {} (give it to whoever checks the evidence: `auditflow verify DIR --signer {}` or `gpg --import`)",
            files.public.display(),
            files.public.display()
        );
        crate::outln!(
            "secret key:  {} (mode 0600; it signs manifests: `auditflow run ... --sign-key {}`)",
            files.secret.display(),
            files.secret.display()
        );
        return Ok(());
    }
    let bits = a.bits.parse().unwrap_or(3072);
    crate::errln!("generating an RSA-{bits} key (this takes a few seconds)...");
    let key = rsa_key(&a.user_id, bits, passphrase.as_deref()).map_err(fail)?;
    let files = write_key_files(&key, &a.out).map_err(fail)?;
    crate::outln!("fingerprint: {}", files.fingerprint);
    crate::outln!("public key:  {} (upload this one)", files.public.display());
    crate::outln!(
        "secret key:  {} (mode 0600; keep it safe, it decrypts the exports)",
        files.secret.display()
    );
    crate::outln!(
        "next: auditflow run workflows/google/upload-public-key.yaml -i domain=YOUR_DOMAIN -i public_key_file={} -i private_key_file={}",
        files.public.display(),
        files.secret.display()
    );
    Ok(())
}
