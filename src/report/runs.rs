//! Views of recorded runs for `auditflow runs list` and `auditflow runs show`.
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::state::{DoneStatus, Listed, Replay};

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
                let status = if s.active && !s.status.succeeded() {
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
    let h = &r.header;
    let mut out = String::new();
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
    if let Some((_, _, Some(e))) = &r.finished {
        let _ = writeln!(out, "error     {e}");
    }
    if let Some(s) = &h.shard {
        let _ = writeln!(out, "shard     {s}");
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
    let _ = writeln!(out, "\nsteps");
    for step in &r.order {
        let state = if let Some(d) = r.done.get(step) {
            let what = match d.status {
                DoneStatus::Succeeded => "done",
                DoneStatus::Skipped => "skipped",
                DoneStatus::FailedContinued => "failed (continued)",
            };
            format!("{what} {} ({} attempts)", when(d.at), d.attempts)
        } else if let Some((w, polls)) = r.waiting.get(step) {
            format!("waiting after {polls} polls: {w}")
        } else if let Some((n, seen)) = r.polls.get(step) {
            format!("polling: {n} polls so far, last saw {seen}")
        } else if let Some(e) = r.failed.get(step) {
            format!("failed: {e}")
        } else {
            "started, not finished".to_string()
        };
        let _ = writeln!(out, "  {step:<40} {state}");
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
            let id = resp
                .response
                .pointer("/body/properties/requestId")
                .or_else(|| resp.response.get("request_id"))
                .and_then(|v| v.as_str())
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
                &a.sha256[..a.sha256.len().min(16)]
            );
        }
    }
    out
}
