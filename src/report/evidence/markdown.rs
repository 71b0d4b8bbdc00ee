//! The evidence report as Markdown, for tickets and CI job summaries (GitHub's
//! `$GITHUB_STEP_SUMMARY`, GitLab job artifacts): the same facts as the HTML page, tables
//! instead of the chart. Table cells are escaped ([`cell`]) so a file name cannot break out.
use std::fmt::Write as _;

use super::{CustodianStatus, EvidenceReport, RunFacts, CLASSES};

/// Text safe in a Markdown table cell: `|` and newlines escaped, markup characters too.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\''),
            c => out.push(c),
        }
    }
    out
}

/// The whole document.
pub(crate) fn render(r: &EvidenceReport) -> String {
    let mut m = format!("# Evidence report: `{}`\n\n", cell(&r.dir));
    let _ = writeln!(
        m,
        "**{}** {}\n",
        if r.summary.complete { "✅" } else { "❌" },
        cell(&r.summary.sentence)
    );
    let _ = writeln!(
        m,
        "Report made {} by auditflow {} for {} on {}{}.\n",
        r.generated_at.to_rfc3339(),
        cell(&r.tool_version),
        cell(&r.reporter.user),
        cell(&r.reporter.host),
        r.reporter
            .ci_job
            .as_deref()
            .map(|u| format!(" (CI job {})", cell(u)))
            .unwrap_or_default()
    );
    for run in &r.runs {
        m.push_str(&run_section(run));
    }
    let _ = writeln!(
        m,
        "## Files ({})\n\n| Path | Kind | Bytes | SHA-256 | Request | Now |\n|---|---|---|---|---|---|",
        r.files.len()
    );
    for f in &r.files {
        let _ = writeln!(
            m,
            "| `{}` | {} | {} | `{}` | {} | {} |",
            cell(&f.path),
            cell(&f.kind),
            f.bytes,
            cell(&f.sha256),
            cell(f.request_id.as_deref().unwrap_or("")),
            cell(&f.now)
        );
    }
    if !r.unlisted.is_empty() {
        m.push_str("\nFiles not in the manifest:\n\n");
        for u in &r.unlisted {
            let _ = writeln!(m, "- `{}`", cell(u));
        }
    }
    let _ = writeln!(m, "\n## Signature\n\n{}", cell(&r.signature.sentence()));
    m
}

fn run_section(run: &RunFacts) -> String {
    let mut m = format!(
        "## Run `{}`: {}\n\n| | |\n|---|---|\n",
        cell(&run.run_id),
        cell(&run.workflow)
    );
    let jobs: Vec<String> = run.jobs.iter().map(chrono::DateTime::to_rfc3339).collect();
    for (k, v) in [
        ("Workflow file", format!("`{}`", cell(&run.workflow_file))),
        (
            "Workflow SHA-256",
            format!("`{}`", cell(&run.workflow_sha256)),
        ),
        (
            "Workflow commit",
            cell(
                run.workflow_commit
                    .as_deref()
                    .unwrap_or("not in a git repository"),
            ),
        ),
        ("Status", cell(&run.status)),
        ("Started", cell(&run.started_at)),
        (
            "Finished",
            cell(run.finished_at.as_deref().unwrap_or("not yet")),
        ),
        ("Jobs", jobs.join(", ")),
        (
            "Inputs",
            format!(
                "`{}`",
                cell(&serde_json::to_string(&run.inputs).unwrap_or_default())
            ),
        ),
    ] {
        let _ = writeln!(m, "| {k} | {v} |");
    }
    if !run.steps.is_empty() {
        m.push_str(
            "\n| Step | Status | Attempts | Polls | Started | Ended |\n|---|---|---|---|---|---|\n",
        );
        for s in &run.steps {
            let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(|| "-".into(), |t| t.to_rfc3339())
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&s.step),
                cell(&s.status),
                s.attempts,
                s.polls,
                when(s.started),
                when(s.ended)
            );
        }
    }
    m.push_str(&requests_table(run));
    m.push_str(&custodians_table(run));
    for p in &run.partial {
        let _ = writeln!(m, "\nPartial result, missing: {}", cell(p));
    }
    for a in &run.adopted {
        let _ = writeln!(
            m,
            "\nAdopted at the vendor (not created again): {}",
            cell(a)
        );
    }
    m.push('\n');
    m
}

/// Attempts per step, vendor and status class, with the retries and their reasons.
fn requests_table(run: &RunFacts) -> String {
    let rows = run.request_rows();
    if rows.is_empty() {
        return String::new();
    }
    let mut m = String::from("\n### Requests and retries\n\n| Step | Vendor |");
    for (_, header) in CLASSES {
        let _ = write!(m, " {header} |");
    }
    m.push_str(" Retries (why) |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        let counts: Vec<String> = r.counts.iter().map(u32::to_string).collect();
        let retries = if r.retries.is_empty() {
            "none".to_string()
        } else {
            r.retries
                .iter()
                .map(|t| cell(t))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {retries} |",
            cell(r.step),
            cell(r.vendor),
            counts.join(" | ")
        );
    }
    m
}

/// Messages per custodian against the vendor's count.
fn custodians_table(run: &RunFacts) -> String {
    if run.custodians.is_empty() {
        return String::new();
    }
    let mut m = String::from("\n### Custodians\n\n| Custodian | Messages exported | Vendor's count | Status | Step |\n|---|---|---|---|---|\n");
    for c in &run.custodians {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} |",
            cell(&c.custodian),
            c.exported,
            c.vendor_count
                .map_or_else(|| "not given".into(), |n| n.to_string()),
            if c.status == CustodianStatus::Short {
                format!("**{}**", c.status.as_str())
            } else {
                c.status.as_str().to_string()
            },
            cell(&c.step_and_vendor())
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_cannot_break_the_table_or_inject_markup() {
        assert_eq!(cell("a|b\n<script>`x`"), "a\\|b &lt;script&gt;'x'");
    }
}
