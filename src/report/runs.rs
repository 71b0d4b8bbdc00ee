//! Views of recorded runs for `auditflow runs list` and `auditflow runs show`.
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use serde_json::{json, Value};

use crate::state::journal::DoneStep;
use crate::state::{DoneStatus, EndStatus, Listed, Replay};

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One line per run (newest first); damaged journals are listed with their error.
pub(crate) fn list(runs: &[Listed]) -> String {
    if runs.is_empty() {
        return "no runs recorded\n".into();
    }
    let mut out = String::new();
    let mut any_unfinished = false;
    let _ = writeln!(
        out,
        "{:<36}  {:<11}  {:<23}  {:<23}  {:>5}  workflow",
        "run", "status", "started", "last record", "steps"
    );
    for r in runs {
        match r {
            Ok(s) => {
                let status = if unfinished(s.active, s.status.succeeded()) {
                    any_unfinished = true;
                    format!("{}*", s.status)
                } else {
                    s.status.to_string()
                };
                let _ = writeln!(
                    out,
                    "{:<36}  {:<11}  {:<23}  {:<23}  {:>5}  {}",
                    s.run_id,
                    status,
                    when(s.started_at),
                    when(s.last_at),
                    s.steps_done,
                    s.workflow
                );
                for w in &s.waiting {
                    let _ = writeln!(out, "    waiting: {w}");
                }
                if let Some(who) = &s.runner {
                    let verb = if s.held { "held by" } else { "last run by" };
                    let _ = writeln!(out, "    {verb} {who}");
                }
            }
            Err((id, e)) => {
                let _ = writeln!(out, "{id:<36}  unreadable: {e}");
            }
        }
    }
    if any_unfinished {
        let _ = writeln!(
            out,
            "* unfinished: the next `auditflow run` of the same workflow and inputs resumes it"
        );
    }
    out
}

/// Everything a run recorded, step by step.
pub(crate) fn show(r: &Replay, active: bool) -> String {
    let mut out = String::new();
    show_run(&mut out, r, active);
    let _ = writeln!(out, "\nsteps");
    for step in &r.order {
        show_step(&mut out, r, step);
    }
    out
}

/// The run's part of [`show`]: its identity, times, status, files and inputs.
fn show_run(out: &mut String, r: &Replay, active: bool) {
    let h = &r.header;
    let _ = writeln!(out, "run       {}", h.run_id);
    let _ = writeln!(out, "workflow  {} ({})", h.workflow_name, h.workflow);
    let _ = writeln!(out, "journal   {}", r.path.display());
    let _ = writeln!(out, "started   {}", when(h.started_at));
    for t in &r.resumes {
        let _ = writeln!(out, "resumed   {}", when(*t));
    }
    let status = match &r.finished {
        Some((at, s, _)) => format!("{} at {}", s.as_str(), when(*at)),
        None => format!(
            "interrupted (no end recorded; last record {})",
            when(r.last_at)
        ),
    };
    let _ = writeln!(
        out,
        "status    {status}{}",
        if active && !r.status().succeeded() {
            " — unfinished: the next run of the same workflow and inputs resumes it"
        } else {
            ""
        }
    );
    if let Some((_, end, Some(e))) = &r.finished {
        // A pending run's note is what it waits for, not an error.
        let label = if *end == EndStatus::Pending {
            "waiting "
        } else {
            "error   "
        };
        let _ = writeln!(out, "{label}  {e}");
    }
    if let Some(s) = &h.shard {
        let _ = writeln!(out, "shard     {s}");
    }
    for f in &h.files {
        let _ = writeln!(out, "file      {} sha256 {}", f.path, f.sha256);
    }
    let _ = writeln!(
        out,
        "inputs    {}",
        serde_json::to_string(&h.inputs).unwrap_or_default()
    );
    if r.torn_tail {
        let _ = writeln!(
            out,
            "note      the last record was cut off by a crash and is ignored"
        );
    }
}

/// One step's lines of [`show`]: where it stands, its request that must not be repeated,
/// its recorded answer and its files.
fn show_step(out: &mut String, r: &Replay, step: &str) {
    let state = match step_state(r, step) {
        StepState::Done(d) => format!(
            "{} {} ({} attempt{})",
            done_word(d.status),
            when(d.at),
            d.attempts,
            if d.attempts == 1 { "" } else { "s" }
        ),
        StepState::Waiting { what, polls } => format!("waiting after {polls} polls: {what}"),
        StepState::Failed {
            error,
            polls: Some(n),
        } => format!("failed after {n} polls: {error}"),
        StepState::Failed { error, polls: None } => format!("failed: {error}"),
        StepState::Polling { polls, seen } => {
            format!("polling: {polls} polls so far, last saw {seen}")
        }
        StepState::Started => "started, not finished".to_string(),
    };
    let shown = r.labels.get(step).map_or(step, String::as_str);
    let _ = writeln!(out, "  {shown:<40} {state}");
    if let Some(i) = r.intents.get(step) {
        let _ = writeln!(
            out,
            "  {:<40} request that must not be repeated: attempt {} at {}, answer not recorded (looked up before sending again)",
            "",
            i.attempt,
            when(i.at)
        );
    }
    if let Some(resp) = r.responses.get(step) {
        let id = request_id(&resp.response)
            .map(|s| format!(" (request {s})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<40} sent once, answer recorded {}{id}",
            "",
            when(resp.at)
        );
    }
    for a in r.artifacts.get(step).into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<40} {} {} ({} bytes, sha256 {})",
            "",
            a.kind,
            a.path,
            a.bytes,
            &a.sha256.to_hex()[..16]
        );
    }
}

/// Where one step of a recorded run stands; the text and JSON views both read it.
enum StepState<'a> {
    Done(&'a DoneStep),
    Waiting {
        what: &'a str,
        polls: u32,
    },
    /// Failed for good; `polls` when it was a poll (its last state is in the error).
    Failed {
        error: &'a str,
        polls: Option<u32>,
    },
    Polling {
        polls: u32,
        seen: &'a str,
    },
    Started,
}

fn step_state<'a>(r: &'a Replay, step: &str) -> StepState<'a> {
    if let Some(d) = r.done.get(step) {
        StepState::Done(d)
    } else if let Some((what, polls)) = r.waiting.get(step) {
        StepState::Waiting {
            what,
            polls: *polls,
        }
    } else if let Some(error) = r.failed.get(step) {
        StepState::Failed {
            error,
            polls: r.polls.get(step).map(|(n, _)| *n),
        }
    } else if let Some((polls, seen)) = r.polls.get(step) {
        StepState::Polling {
            polls: *polls,
            seen,
        }
    } else {
        StepState::Started
    }
}

fn done_word(s: DoneStatus) -> &'static str {
    match s {
        DoneStatus::Succeeded => "done",
        DoneStatus::Skipped => "skipped",
        DoneStatus::FailedContinued => "failed (continued)",
    }
}

/// The vendor's id of a recorded answer (a Google export's `requestId`, a MailStore token).
fn request_id(response: &Value) -> Option<&str> {
    response
        .pointer("/body/properties/requestId")
        .or_else(|| response.get("request_id"))
        .and_then(Value::as_str)
}

/// Whether the next run of the same workflow and inputs resumes this one.
fn unfinished(active: bool, succeeded: bool) -> bool {
    active && !succeeded
}

/// `runs list --json`: an array, newest first; unreadable journals carry `error`.
pub(crate) fn list_json(runs: &[Listed]) -> Value {
    let one = |r: &Listed| match r {
        Ok(s) => json!({
            "run_id": s.run_id,
            "workflow": s.workflow,
            "identity": s.identity,
            "status": s.status.as_str(),
            "unfinished": unfinished(s.active, s.status.succeeded()),
            "started_at": s.started_at,
            "last_at": s.last_at,
            "steps_done": s.steps_done,
            "waiting": s.waiting,
            "runner": s.runner,
            "held": s.held,
        }),
        Err((id, e)) => json!({"run_id": id, "error": e.to_string()}),
    };
    Value::Array(runs.iter().map(one).collect())
}

/// `runs show --json`: the run and its steps in the order first seen.
pub(crate) fn show_json(r: &Replay, active: bool) -> Value {
    let h = &r.header;
    let (ended_at, error, waiting_for) = match &r.finished {
        Some((at, EndStatus::Pending, e)) => (Some(*at), None, e.clone()),
        Some((at, _, e)) => (Some(*at), e.clone(), None),
        None => (None, None, None),
    };
    json!({
        "run_id": h.run_id,
        "workflow": h.workflow,
        "identity": h.identity.as_ref().map(|i| &i.path),
        "workflow_name": h.workflow_name,
        "journal": r.path,
        "started_at": h.started_at,
        "resumed_at": r.resumes,
        "status": r.status().as_str(),
        "ended_at": ended_at,
        "last_at": r.last_at,
        "error": error,
        "waiting_for": waiting_for,
        "unfinished": unfinished(active, r.status().succeeded()),
        "shard": h.shard,
        "inputs": h.inputs,
        "files": h.files,
        "torn_tail": r.torn_tail,
        "steps": r.order.iter().map(|step| step_json(r, step)).collect::<Vec<_>>(),
    })
}

fn step_json(r: &Replay, step: &str) -> Value {
    let mut v = match step_state(r, step) {
        StepState::Done(d) => json!({
            "state": done_word(d.status), "at": d.at, "attempts": d.attempts,
        }),
        StepState::Waiting { what, polls } => {
            json!({"state": "waiting", "waiting_for": what, "polls": polls})
        }
        StepState::Failed { error, polls } => {
            json!({"state": "failed", "error": error, "polls": polls})
        }
        StepState::Polling { polls, seen } => {
            json!({"state": "polling", "polls": polls, "last_seen": seen})
        }
        StepState::Started => json!({"state": "started"}),
    };
    v["step"] = json!(step);
    if let Some(l) = r.labels.get(step) {
        v["label"] = json!(l);
    }
    if let Some(i) = r.intents.get(step) {
        v["unanswered_request"] = json!({"attempt": i.attempt, "at": i.at});
    }
    if let Some(resp) = r.responses.get(step) {
        v["answer_recorded_at"] = json!(resp.at);
        v["request_id"] = json!(request_id(&resp.response));
    }
    if let Some(a) = r.artifacts.get(step) {
        v["artifacts"] = json!(a);
    }
    v
}
