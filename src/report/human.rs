//! Human output: a line per step, retries and polls as they happen, a summary at the end.
//!
//! In a terminal (and `CI` unset) long steps get a spinner or progress bar (indicatif);
//! otherwise every line is plain text, suitable for CI logs.
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

use crate::events::{Artifact, ArtifactKind, Event, FileProgress, RunStatus, Sink, StepStatus};
use crate::workflow::duration::format_duration;
use crate::workflow::plan::StepKind;

#[cfg(test)]
mod tests;

/// Prints events as lines; with `bars`, shows progress bars for running steps.
pub(crate) struct Human {
    out: Output,
    state: Mutex<State>,
    verbose: bool,
}

/// Where lines go.
enum Output {
    /// Above the progress bars of running steps (a terminal).
    Bars(MultiProgress),
    /// Plain lines on stdout (CI logs, pipes).
    Stdout,
    /// Plain lines kept in memory (tests).
    #[cfg(test)]
    Buffer(Mutex<String>),
}

#[derive(Default)]
struct State {
    running: HashMap<String, ProgressBar>,
    counts: HashMap<&'static str, u32>,
    /// Labels of running steps inside loops (`verify[0: store-a].one`), by path.
    labels: HashMap<String, String>,
    /// Steps whose vendor process was announced (plain output, not verbose).
    announced: HashSet<String>,
    /// Byte bars of the files running steps download or decrypt (several at once), under
    /// their step's spinner, by step path and file.
    file_bars: HashMap<(String, String), ProgressBar>,
    /// A dry run shows its outputs as it renders them ("would output ..."), not at the end.
    dry_run: bool,
}

impl State {
    /// How people read the step at `path`: its label inside loops, else the path.
    fn shown<'a>(&'a self, path: &'a str) -> &'a str {
        self.labels.get(path).map_or(path, String::as_str)
    }
}

/// A finished step as [`Human::step_finished`] prints it.
struct Finished<'a> {
    step: &'a str,
    name: &'a str,
    status: StepStatus,
    attempts: u32,
    duration: Duration,
    error: Option<&'a str>,
}

impl Human {
    /// `interactive`: draw progress bars (a terminal, and `CI` unset).
    pub(crate) fn new(interactive: bool, verbose: bool) -> Self {
        let out = if interactive {
            Output::Bars(MultiProgress::new())
        } else {
            Output::Stdout
        };
        Human::with_output(out, verbose)
    }

    fn with_output(out: Output, verbose: bool) -> Self {
        Human {
            out,
            state: Mutex::new(State::default()),
            verbose,
        }
    }

    fn bars(&self) -> Option<&MultiProgress> {
        match &self.out {
            Output::Bars(m) => Some(m),
            _ => None,
        }
    }

    fn println(&self, line: &str) {
        match &self.out {
            Output::Bars(m) => {
                let _ = m.println(line);
            }
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            #[cfg(test)]
            Output::Buffer(b) => {
                if let Ok(mut b) = b.lock() {
                    b.push_str(line);
                    b.push('\n');
                }
            }
        }
    }

    fn run_started(
        &self,
        workflow: &str,
        file: &str,
        run_id: &str,
        dry_run: bool,
        resumed: Option<&str>,
    ) {
        let mode = if dry_run {
            " (dry run: nothing is sent)"
        } else {
            ""
        };
        self.println(&format!("▶ {workflow} ({file}) run {run_id}{mode}"));
        if let Some(r) = resumed {
            self.println(&format!("  ↺ resuming: {r}"));
        }
    }

    /// A spinner in a terminal; a line only when verbose otherwise.
    fn step_started(
        &self,
        st: &mut State,
        step: &str,
        label: Option<&str>,
        name: &str,
        kind: StepKind,
    ) {
        if let Some(l) = label {
            st.labels.insert(step.to_string(), l.to_string());
        }
        let shown = st.shown(step).to_string();
        let step = step.to_string();
        let step = step.as_str();
        if let Some(m) = self.bars() {
            let pb = m.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("  {spinner} {prefix} {wide_msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(format!("{shown} [{kind}]"));
            pb.set_message(name.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            st.running.insert(step.to_string(), pb);
        } else if self.verbose {
            self.println(&format!("  … {shown} [{kind}] {name}"));
        }
    }

    fn retry(&self, st: &State, step: &str, attempt: u32, error: &str, wait: Duration) {
        let step = st.shown(step);
        self.println(&format!(
            "  ↻ {step}: attempt {attempt} failed: {error}; retrying in {}",
            format_duration(wait)
        ));
    }

    /// On the step's spinner when it has one, else a line.
    fn poll(&self, st: &State, step: &str, poll: u32, observed: &str, next_in: Duration) {
        let path = step;
        let step = st.shown(path);
        let line = if next_in.is_zero() {
            format!("  ⧗ {step}: poll {poll}: {observed}")
        } else {
            format!(
                "  ⧗ {step}: poll {poll}: {observed}; next in {}",
                format_duration(next_in)
            )
        };
        match st.running.get(path) {
            Some(pb) => pb.set_message(line.trim().to_string()),
            None => self.println(&line),
        }
    }

    fn log(&self, st: &State, step: &str, line: &str) {
        if self.verbose || !st.running.contains_key(step) {
            self.println(&format!("    {}: {line}", st.shown(step)));
        } else if let Some(pb) = st.running.get(step) {
            pb.set_message(line.to_string());
        }
    }

    /// A vendor process's own log (MailStore): every line with `--verbose`; otherwise on the
    /// step's spinner in a terminal, or one line saying the process runs.
    fn vendor_log(&self, st: &mut State, step: &str, line: &str) {
        if self.verbose {
            self.println(&format!("    {}: {line}", st.shown(step)));
        } else if let Some(pb) = st.running.get(step) {
            pb.set_message(line.to_string());
        } else {
            self.announce(st, step);
        }
    }

    /// Once per step in plain output: its vendor process is running (the step's end line
    /// follows when it is done).
    fn announce(&self, st: &mut State, step: &str) {
        if st.announced.insert(step.to_string()) {
            self.println(&format!(
                "  … {}: vendor process running (-v shows its log)",
                st.shown(step)
            ));
        }
    }

    fn dry_run(
        &self,
        st: &State,
        step: &str,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<&str>,
    ) {
        let mut s = format!("  ⇢ {}: {method} {url}", st.shown(step));
        for (k, v) in headers {
            s.push_str(&format!("\n      {k}: {v}"));
        }
        for l in body.into_iter().flat_map(str::lines) {
            s.push_str(&format!("\n      | {l}"));
        }
        self.println(&s);
    }

    fn artifact(&self, st: &State, step: &str, a: &Artifact) {
        self.println(&format!(
            "    {}: wrote {} ({}, sha256 {})",
            st.shown(step),
            a.path,
            HumanBytes(a.bytes),
            &a.sha256.to_hex()[..16]
        ));
    }

    fn step_finished(&self, st: &mut State, f: Finished<'_>, label: Option<&str>) {
        if let Some(pb) = st.running.remove(f.step) {
            pb.finish_and_clear();
        }
        st.announced.remove(f.step);
        st.file_bars.retain(|(step, _), pb| {
            let mine = step == f.step;
            if mine {
                pb.finish_and_clear();
            }
            !mine
        });
        let path = st.labels.remove(f.step);
        let shown = label.or(path.as_deref()).unwrap_or(f.step);
        let tries = if f.attempts > 1 {
            format!(", {} attempts", f.attempts)
        } else {
            String::new()
        };
        let label = if f.name == f.step {
            shown.to_string()
        } else {
            format!("{shown} ({})", f.name)
        };
        let mut line = format!(
            "  {} {label}: {} in {}{tries}",
            mark(f.status),
            f.status.as_str(),
            format_duration(f.duration)
        );
        if let Some(err) = f.error {
            line.push_str(&format!("\n      {}", err.replace('\n', "\n      ")));
        }
        *st.counts.entry(f.status.as_str()).or_default() += 1;
        self.println(&line);
    }

    /// The summary line: verdict, duration, steps counted by outcome.
    fn run_finished(
        &self,
        st: &State,
        status: RunStatus,
        duration: Duration,
        outputs: &serde_json::Value,
        error: Option<&str>,
    ) {
        let mut parts: Vec<String> = ["ok", "FAILED", "failed (continued)", "skipped", "pending"]
            .iter()
            .filter_map(|k| st.counts.get(k).map(|n| format!("{n} {k}")))
            .collect();
        if parts.is_empty() {
            parts.push("no steps".into());
        }
        self.println(&format!(
            "■ run {} in {}: {}",
            verdict(status),
            format_duration(duration),
            parts.join(", ")
        ));
        if let (Some(e), RunStatus::Pending) = (error, status) {
            self.println(&format!("  waiting for: {e}"));
        }
        if status == RunStatus::Succeeded && !st.dry_run {
            for line in output_lines(outputs) {
                self.println(&line);
            }
        }
    }
}

/// The workflow's `outputs` of a successful run, one per line (`  output request_id = ...`),
/// so that what the next command needs (an export's id) is on screen, not only in reports.
/// Lists and objects are shown as compact JSON, cut at [`OUTPUT_SHOWN_CHARS`].
fn output_lines(outputs: &serde_json::Value) -> Vec<String> {
    let Some(map) = outputs.as_object() else {
        return Vec::new();
    };
    map.iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let shown = crate::vendors::errors::cut_chars(&text, OUTPUT_SHOWN_CHARS);
            format!("  output {name} = {shown}")
        })
        .collect()
}

/// Longest output value shown on the console (the JSON report has them whole).
const OUTPUT_SHOWN_CHARS: usize = 200;

/// The mark before a finished step.
fn mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "✓",
        StepStatus::Failed | StepStatus::FailedContinued => "✗",
        StepStatus::Skipped => "-",
        StepStatus::Pending => "⧗",
        StepStatus::Recorded => "↺",
    }
}

/// How the summary line names the run's end.
fn verdict(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "FAILED",
        RunStatus::Pending => "PENDING (run again later to continue)",
        RunStatus::Cancelled => "CANCELLED",
    }
}

/// A vendor process's percentage, on its step's spinner. Nothing without a bar.
fn percent(st: &State, step: &str, percent: f64) {
    if let Some(pb) = st.running.get(step) {
        pb.set_message(format!("{percent:.0}%"));
    }
}

/// Bytes of a file a step downloads or decrypts, on a byte bar of its own under the step's
/// spinner (rate and ETA measured by indicatif). The bar goes once the file is complete, or
/// with its step. Nothing without bars (plain output has a line per file instead).
fn file_progress(
    m: &MultiProgress,
    st: &mut State,
    step: &str,
    file: Option<&FileProgress>,
    (bytes, total): (u64, Option<u64>),
) {
    let Some(spinner) = st.running.get(step) else {
        return;
    };
    let path = file.map_or("", |f| f.path.as_str());
    let key = (step.to_string(), path.to_string());
    let pb = match st.file_bars.get(&key) {
        Some(pb) => pb,
        None => {
            let pb = m.insert_after(spinner, ProgressBar::new(total.unwrap_or(0)));
            pb.set_style(byte_style(total.is_some()));
            pb.set_prefix(file_prefix(st.shown(step), file));
            st.file_bars.entry(key.clone()).or_insert(pb)
        }
    };
    if let Some(t) = total {
        pb.set_length(t);
    }
    pb.set_position(bytes);
    if total.is_some_and(|t| bytes >= t) {
        pb.finish_and_clear();
        st.file_bars.remove(&key);
    }
}

/// `step download export-1.mbox.gpg`: the step, what happens to the file, the file's name.
fn file_prefix(step: &str, file: Option<&FileProgress>) -> String {
    let Some(f) = file else {
        return step.to_string();
    };
    let name = std::path::Path::new(&f.path)
        .file_name()
        .map_or_else(|| f.path.clone(), |n| n.to_string_lossy().into_owned());
    let what = match f.kind {
        ArtifactKind::Decrypt => "decrypt",
        _ => "download",
    };
    format!("{step} {what} {name}")
}

/// The look of a download or decrypt: bytes, rate and (with a known size) a bar and ETA.
pub(super) fn byte_style(sized: bool) -> ProgressStyle {
    let template = if sized {
        "  {spinner} {prefix} [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "  {spinner} {prefix} {bytes} {bytes_per_sec} {elapsed}"
    };
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Sink for Human {
    fn event(&self, e: &Event) {
        let mut st = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        match e {
            Event::RunStarted {
                workflow,
                file,
                run_id,
                dry_run,
                resumed,
                ..
            } => {
                st.dry_run = *dry_run;
                self.run_started(workflow, file, run_id, *dry_run, resumed.as_deref());
            }
            Event::StepStarted {
                step,
                name,
                kind,
                label,
            } => {
                self.step_started(&mut st, step, label.as_deref(), name, *kind);
            }
            Event::Retry {
                step,
                attempt,
                error,
                wait,
            } => self.retry(&st, step, *attempt, error, *wait),
            Event::Poll {
                step,
                poll,
                observed,
                next_in,
            } => self.poll(&st, step, *poll, observed, *next_in),
            Event::Log {
                step,
                line,
                vendor_log: true,
            } => self.vendor_log(&mut st, step, line),
            Event::Log { step, line, .. } => self.log(&st, step, line),
            Event::Progress {
                step,
                percent: Some(_),
                bytes: None,
                ..
            } if self.bars().is_none() && !self.verbose => self.announce(&mut st, step),
            Event::Progress {
                step,
                bytes: Some(b),
                total,
                file,
                ..
            } => {
                if let Some(m) = self.bars() {
                    file_progress(m, &mut st, step, file.as_ref(), (*b, *total));
                }
            }
            Event::Progress {
                step,
                percent: Some(p),
                ..
            } => percent(&st, step, *p),
            Event::Progress { .. } => {}
            Event::DryRun {
                step,
                method,
                url,
                headers,
                body,
            } => self.dry_run(&st, step, method, url, headers, body.as_deref()),
            Event::Artifact { step, artifact } => self.artifact(&st, step, artifact),
            Event::Warning { message } => self.println(&format!("  ⚠ warning: {message}")),
            Event::Partial { step, problems } => self.println(&format!(
                "  ⚠ PARTIAL result of `{step}` (accepted by the workflow):\n      {}",
                problems.join("\n      ")
            )),
            Event::Paged {
                step, pages, items, ..
            } => self.log(&st, step, &format!("{pages} page(s), {items} record(s)")),
            // The step's own log line says what was adopted; answers are counted for the
            // reports, and the retries among them are shown by `Retry`.
            Event::Adopted { .. } | Event::Answer { .. } => {}
            Event::Custodians { step, counts, .. } => {
                let short = counts
                    .iter()
                    .filter(|c| c.vendor_count.is_some_and(|n| c.exported < n))
                    .count();
                self.log(
                    &st,
                    step,
                    &format!(
                        "{} custodian(s), {short} short of the vendor's count",
                        counts.len()
                    ),
                );
            }
            Event::StepFinished {
                step,
                status,
                attempts,
                duration,
                error,
                name,
                label,
                ..
            } => self.step_finished(
                &mut st,
                Finished {
                    step,
                    name,
                    status: *status,
                    attempts: *attempts,
                    duration: *duration,
                    error: error.as_deref(),
                },
                label.as_deref(),
            ),
            Event::RunFinished {
                status,
                duration,
                outputs,
                error,
            } => self.run_finished(&st, *status, *duration, outputs, error.as_deref()),
        }
    }
}
