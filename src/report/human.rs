//! Human output: a line per step, retries and polls as they happen, a summary at the end.
//!
//! In a terminal (and `CI` unset) long steps get a spinner or progress bar (indicatif);
//! otherwise every line is plain text, suitable for CI logs.
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::events::{Event, RunStatus, Sink, StepStatus};
use crate::workflow::duration::format_duration;

/// Prints events as lines; with `bars`, shows progress bars for running steps.
pub struct Human {
    bars: Option<MultiProgress>,
    state: Mutex<State>,
    verbose: bool,
}

#[derive(Default)]
struct State {
    running: HashMap<String, ProgressBar>,
    counts: HashMap<&'static str, u32>,
}

impl Human {
    /// `interactive`: draw progress bars (a terminal, and `CI` unset).
    pub fn new(interactive: bool, verbose: bool) -> Self {
        Human {
            bars: interactive.then(MultiProgress::new),
            state: Mutex::new(State::default()),
            verbose,
        }
    }

    fn println(&self, line: &str) {
        match &self.bars {
            Some(m) => {
                let _ = m.println(line);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        }
    }
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
                let mode = if *dry_run {
                    " (dry run: nothing is sent)"
                } else {
                    ""
                };
                self.println(&format!("▶ {workflow} ({file}) run {run_id}{mode}"));
                if let Some(r) = resumed {
                    self.println(&format!("  ↺ resuming: {r}"));
                }
            }
            Event::StepStarted { step, name, kind } => {
                if let Some(m) = &self.bars {
                    let pb = m.add(ProgressBar::new_spinner());
                    pb.set_style(
                        ProgressStyle::with_template("  {spinner} {prefix} {wide_msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.set_prefix(format!("{step} [{kind}]"));
                    pb.set_message(name.clone());
                    pb.enable_steady_tick(std::time::Duration::from_millis(120));
                    st.running.insert(step.clone(), pb);
                } else if self.verbose {
                    self.println(&format!("  … {step} [{kind}] {name}"));
                }
            }
            Event::Retry {
                step,
                attempt,
                error,
                wait,
            } => self.println(&format!(
                "  ↻ {step}: attempt {attempt} failed: {error}; retrying in {}",
                format_duration(*wait)
            )),
            Event::Poll {
                step,
                poll,
                observed,
                next_in,
            } => {
                let line = if next_in.is_zero() {
                    format!("  ⧗ {step}: poll {poll}: {observed}")
                } else {
                    format!(
                        "  ⧗ {step}: poll {poll}: {observed}; next in {}",
                        format_duration(*next_in)
                    )
                };
                match st.running.get(step) {
                    Some(pb) => pb.set_message(line.trim().to_string()),
                    None => self.println(&line),
                }
            }
            Event::Log { step, line } => {
                if self.verbose || !st.running.contains_key(step) {
                    self.println(&format!("    {step}: {line}"));
                } else if let Some(pb) = st.running.get(step) {
                    pb.set_message(line.clone());
                }
            }
            Event::Progress {
                step,
                percent,
                bytes,
                total,
            } => {
                if let Some(pb) = st.running.get(step) {
                    match (percent, bytes, total) {
                        (Some(p), _, _) => pb.set_message(format!("{p:.0}%")),
                        (_, Some(b), Some(t)) => pb.set_message(format!(
                            "{} / {}",
                            indicatif::HumanBytes(*b),
                            indicatif::HumanBytes(*t)
                        )),
                        (_, Some(b), None) => pb.set_message(indicatif::HumanBytes(*b).to_string()),
                        _ => {}
                    }
                }
            }
            Event::DryRun {
                step,
                method,
                url,
                headers,
                body,
            } => {
                let mut s = format!("  ⇢ {step}: {method} {url}");
                for (k, v) in headers {
                    s.push_str(&format!("\n      {k}: {v}"));
                }
                if let Some(b) = body {
                    for l in b.lines() {
                        s.push_str(&format!("\n      | {l}"));
                    }
                }
                self.println(&s);
            }
            Event::Artifact { step, artifact } => self.println(&format!(
                "    {step}: wrote {} ({}, sha256 {})",
                artifact.path,
                indicatif::HumanBytes(artifact.bytes),
                &artifact.sha256[..artifact.sha256.len().min(16)]
            )),
            Event::Warning { message } => self.println(&format!("  ⚠ warning: {message}")),
            Event::StepFinished {
                step,
                status,
                attempts,
                duration,
                error,
                name,
                ..
            } => {
                if let Some(pb) = st.running.remove(step) {
                    pb.finish_and_clear();
                }
                let mark = match status {
                    StepStatus::Succeeded => "✓",
                    StepStatus::Failed => "✗",
                    StepStatus::FailedContinued => "✗",
                    StepStatus::Skipped => "-",
                    StepStatus::Pending => "⧗",
                    StepStatus::Recorded => "↺",
                };
                let tries = if *attempts > 1 {
                    format!(", {attempts} attempts")
                } else {
                    String::new()
                };
                let label = if name == step {
                    step.clone()
                } else {
                    format!("{step} ({name})")
                };
                let mut line = format!(
                    "  {mark} {label}: {} in {}{tries}",
                    status.as_str(),
                    format_duration(*duration)
                );
                if let Some(err) = error {
                    line.push_str(&format!("\n      {}", err.replace('\n', "\n      ")));
                }
                *st.counts.entry(status.as_str()).or_default() += 1;
                self.println(&line);
            }
            Event::RunFinished {
                status,
                duration,
                error,
                ..
            } => {
                let mut parts: Vec<String> =
                    ["ok", "FAILED", "failed (continued)", "skipped", "pending"]
                        .iter()
                        .filter_map(|k| st.counts.get(k).map(|n| format!("{n} {k}")))
                        .collect();
                if parts.is_empty() {
                    parts.push("no steps".into());
                }
                let verdict = match status {
                    RunStatus::Succeeded => "succeeded",
                    RunStatus::Failed => "FAILED",
                    RunStatus::Pending => "PENDING (run again later to continue)",
                    RunStatus::Cancelled => "CANCELLED",
                };
                self.println(&format!(
                    "■ run {verdict} in {}: {}",
                    format_duration(*duration),
                    parts.join(", ")
                ));
                if let (Some(e), RunStatus::Pending) = (error, status) {
                    self.println(&format!("  waiting for: {e}"));
                }
            }
        }
    }
}
