//! The evidence report as one self-contained HTML page: inline CSS and SVG, no script, no
//! external fetch; readable at 1280 px and printable to A4. Every value that comes from a
//! vendor, a file name or an input is escaped ([`esc`]).
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{CustodianStatus, EvidenceReport, FileFacts, RunFacts, StepFacts, CLASSES};

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;max-width:1200px;margin:24px auto;padding:0 24px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.summary{padding:12px 16px;border-radius:6px;font-size:16px;font-weight:600}
.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}.bad{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.hash,code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
td.verified{color:#116329}td.problem{color:#a40e26;font-weight:600}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap;word-break:break-all}
.meta{color:#57606a;font-size:12px}
@media print{body{max-width:none;margin:0;font-size:11px}h2{break-after:avoid}table,svg{break-inside:avoid}}
@page{size:A4;margin:14mm}
";

/// Escapes text for HTML element content and attribute values (`&`, `<`, `>`, `'`, `"`).
pub(crate) fn esc(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// The whole page.
pub(crate) fn render(r: &EvidenceReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Evidence report: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&r.dir)
    );
    let _ = writeln!(h, "<h1>Evidence report: <code>{}</code></h1>", esc(&r.dir));
    let _ = writeln!(
        h,
        "<p id=\"summary\" class=\"summary {}\">{}</p>",
        if r.summary.complete { "ok" } else { "bad" },
        esc(&r.summary.sentence)
    );
    h.push_str(&made_by(r));
    for run in &r.runs {
        h.push_str(&run_section(run));
    }
    h.push_str(&files_section(&r.files, &r.unlisted));
    h.push_str(&signature_section(r));
    h.push_str("</body></html>\n");
    h
}

fn made_by(r: &EvidenceReport) -> String {
    format!(
        "<p class=\"meta\">Report made {} by auditflow {} for {} on {}{}; every file was hashed again then.</p>\n",
        esc(&r.generated_at.to_rfc3339()),
        esc(&r.tool_version),
        esc(&r.reporter.user),
        esc(&r.reporter.host),
        r.reporter
            .ci_job
            .as_deref()
            .map(|u| format!(" (CI job {})", esc(u)))
            .unwrap_or_default()
    )
}

fn row(cells: &[String]) -> String {
    let mut s = String::from("<tr>");
    for c in cells {
        let _ = write!(s, "<td>{c}</td>");
    }
    s.push_str("</tr>\n");
    s
}

/// One run: its facts, inputs, timeline and steps, pages, requests, custodians, and what
/// was partial or adopted.
fn run_section(run: &RunFacts) -> String {
    let mut h = format!(
        "<h2>Run <code>{}</code>: {}</h2>\n<table>\n",
        esc(&run.run_id),
        esc(&run.workflow)
    );
    h.push_str(&facts_rows(run));
    h.push_str("</table>\n<h3>Inputs (secrets masked)</h3>\n");
    let _ = writeln!(
        h,
        "<pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&run.inputs).unwrap_or_default())
    );
    if !run.steps.is_empty() {
        h.push_str("<h3>Timeline</h3>\n");
        h.push_str(&timeline(&run.steps));
        h.push_str(&steps_table(&run.steps));
    }
    h.push_str(&calls_table(run));
    h.push_str(&requests_table(run));
    h.push_str(&custodians_table(run));
    if !run.partial.is_empty() {
        h.push_str("<h3 class=\"summary bad\">Partial result: what the vendor reported missing</h3>\n<ul>\n");
        for p in &run.partial {
            let _ = writeln!(h, "<li>{}</li>", esc(p));
        }
        h.push_str("</ul>\n");
    }
    if !run.adopted.is_empty() {
        h.push_str("<h3>Requests adopted at the vendor (not created again)</h3>\n<ul>\n");
        for a in &run.adopted {
            let _ = writeln!(h, "<li>{}</li>", esc(a));
        }
        h.push_str("</ul>\n");
    }
    h
}

/// The run's facts as table rows: workflow file, digest and commit, status, times, jobs.
fn facts_rows(run: &RunFacts) -> String {
    let jobs: Vec<String> = run.jobs.iter().map(|j| esc(&j.to_rfc3339())).collect();
    let facts = [
        (
            "Workflow file",
            format!("<code>{}</code>", esc(&run.workflow_file)),
        ),
        (
            "Workflow SHA-256",
            format!("<code>{}</code>", esc(&run.workflow_sha256)),
        ),
        (
            "Workflow commit",
            esc(run
                .workflow_commit
                .as_deref()
                .unwrap_or("not in a git repository")),
        ),
        ("Status", esc(&run.status)),
        ("Started", esc(&run.started_at)),
        (
            "Finished",
            esc(run.finished_at.as_deref().unwrap_or("not yet")),
        ),
        (
            "Jobs",
            if jobs.is_empty() {
                "(journal not read: pass --state-dir)".into()
            } else {
                jobs.join("<br>")
            },
        ),
    ];
    let mut h = String::new();
    for (k, v) in facts {
        let _ = writeln!(h, "<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>");
    }
    h
}

/// Pages and records per `call` step, with the vendor's total.
fn calls_table(run: &RunFacts) -> String {
    if run.calls.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h3>Pages and records</h3>\n<table><tr><th>Step</th><th>Pages</th><th>Records</th><th>Vendor's total</th><th>Truncated</th></tr>\n");
    for c in &run.calls {
        h.push_str(&row(&[
            esc(&c.step),
            c.pages.to_string(),
            c.records.to_string(),
            c.vendor_total
                .map_or_else(|| "not given".into(), |t| t.to_string()),
            if c.truncated {
                "yes, on purpose".into()
            } else {
                "no".into()
            },
        ]));
    }
    h.push_str("</table>\n");
    h
}

/// Attempts per step, vendor and status class, with the retries and their reasons.
fn requests_table(run: &RunFacts) -> String {
    let rows = run.request_rows();
    if rows.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h3>Requests and retries</h3>\n<table id=\"requests\"><tr><th>Step</th><th>Vendor</th>",
    );
    for (_, header) in CLASSES {
        let _ = write!(h, "<th>{header}</th>");
    }
    h.push_str("<th>Retries (why)</th></tr>\n");
    for r in rows {
        let mut cells = vec![esc(r.step), esc(r.vendor)];
        cells.extend(r.counts.iter().map(u32::to_string));
        cells.push(if r.retries.is_empty() {
            "none".into()
        } else {
            r.retries
                .iter()
                .map(|t| esc(t))
                .collect::<Vec<_>>()
                .join("<br>")
        });
        h.push_str(&row(&cells));
    }
    h.push_str("</table>\n");
    h
}

/// Messages per custodian against the vendor's count; a short one in red.
fn custodians_table(run: &RunFacts) -> String {
    if run.custodians.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h3>Custodians</h3>\n<table id=\"custodians\"><tr><th>Custodian</th><th>Messages exported</th><th>Vendor's count</th><th>Status</th><th>Step</th></tr>\n");
    for c in &run.custodians {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&c.custodian),
            c.exported,
            c.vendor_count
                .map_or_else(|| "not given".into(), |n| n.to_string()),
            if c.status == CustodianStatus::Short {
                "problem"
            } else {
                "verified"
            },
            esc(c.status.as_str()),
            esc(&c.step_and_vendor())
        );
    }
    h.push_str("</table>\n");
    h
}

fn steps_table(steps: &[StepFacts]) -> String {
    let mut h = String::from("<table><tr><th>Step</th><th>Status</th><th>Attempts</th><th>Polls</th><th>Started</th><th>Ended</th></tr>\n");
    let when = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".into(), |t| esc(&t.to_rfc3339()));
    for s in steps {
        h.push_str(&row(&[
            esc(&s.step),
            esc(&s.status),
            s.attempts.to_string(),
            s.polls.to_string(),
            when(s.started),
            when(s.ended),
        ]));
    }
    h.push_str("</table>\n");
    h
}

/// One bar per step from its first start to its end, on a common time axis.
fn timeline(steps: &[StepFacts]) -> String {
    let starts = steps.iter().filter_map(|s| s.started);
    let ends = steps.iter().filter_map(|s| s.ended.or(s.started));
    let (Some(t0), Some(t1)) = (starts.min(), ends.max()) else {
        return String::new();
    };
    let span = (t1 - t0).num_milliseconds().max(1) as f64;
    let (left, width, bar_h) = (260.0, 860.0, 18.0);
    let height = 30.0 + bar_h * 1.4 * steps.len() as f64;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"step timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"1140\" height=\"{height:.0}\" viewBox=\"0 0 1140 {height:.0}\">\n"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{left}\" y=\"14\" font-size=\"11\" fill=\"#57606a\">{}</text><text x=\"{}\" y=\"14\" font-size=\"11\" fill=\"#57606a\" text-anchor=\"end\">{} (total {})</text>",
        esc(&t0.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        left + width,
        esc(&t1.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        esc(&human_span(t1 - t0))
    );
    for (i, s) in steps.iter().enumerate() {
        let y = 24.0 + bar_h * 1.4 * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"0\" y=\"{:.0}\" font-size=\"12\">{}</text>",
            y + 13.0,
            esc(&s.step)
        );
        let (Some(a), b) = (s.started, s.ended.or(s.started)) else {
            continue;
        };
        let b = b.unwrap_or(a);
        let x = left + width * (a - t0).num_milliseconds() as f64 / span;
        let w = (width * (b - a).num_milliseconds() as f64 / span).max(2.0);
        let fill = match s.status.as_str() {
            "succeeded" => "#4ac26b",
            "failed" => "#ff8182",
            "waiting" | "unfinished" => "#d4a72c",
            _ => "#8c959f",
        };
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{fill}\"><title>{}: {} ({})</title></rect>",
            esc(&s.step),
            esc(&s.status),
            esc(&human_span(b - a))
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `3d 4h`, `12m 5s`, `800ms`.
fn human_span(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    let (s, m, h, days) = (ms / 1000, ms / 60_000, ms / 3_600_000, ms / 86_400_000);
    match () {
        _ if days > 0 => format!("{days}d {}h", h % 24),
        _ if h > 0 => format!("{h}h {}m", m % 60),
        _ if m > 0 => format!("{m}m {}s", s % 60),
        _ if s > 0 => format!("{s}s"),
        _ => format!("{ms}ms"),
    }
}

fn files_section(files: &[FileFacts], unlisted: &[String]) -> String {
    let mut h = format!(
        "<h2>Files ({})</h2>\n<table id=\"files\"><tr><th>Path</th><th>Kind</th><th>Bytes</th><th>SHA-256</th><th>MD5 (base64)</th><th>Request</th><th>Now</th></tr>\n",
        files.len()
    );
    for f in files {
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"hash\">{}</td><td class=\"hash\">{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&f.path),
            esc(&f.kind),
            f.bytes,
            esc(&f.sha256),
            esc(f.md5.as_deref().unwrap_or("")),
            esc(f.request_id.as_deref().unwrap_or("")),
            if f.verified { "verified" } else { "problem" },
            esc(&f.now)
        );
    }
    h.push_str("</table>\n");
    if !unlisted.is_empty() {
        h.push_str("<h3>Files not in the manifest (not evidence this tool wrote)</h3>\n<ul id=\"unlisted\">\n");
        for u in unlisted {
            let _ = writeln!(h, "<li><code>{}</code></li>", esc(u));
        }
        h.push_str("</ul>\n");
    }
    h
}

fn signature_section(r: &EvidenceReport) -> String {
    let text = r.signature.sentence();
    format!(
        "<h2>Signature</h2>\n<p id=\"signature\" class=\"{}\">{}</p>\n",
        if r.signature.status == "failed" {
            "summary bad"
        } else {
            ""
        },
        esc(&text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_from_vendors_and_file_names() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(human_span(chrono::TimeDelta::milliseconds(800)), "800ms");
        assert_eq!(human_span(chrono::TimeDelta::seconds(65)), "1m 5s");
        assert_eq!(human_span(chrono::TimeDelta::hours(28)), "1d 4h");
    }
}
