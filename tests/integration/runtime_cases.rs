//! Runtime failures as files, like the validation cases: each `tests/cases/runtime/NAME.yaml`
//! runs against an in-process HTTP server and the vendor simulator, must exit 1, and must print
//! exactly `NAME.err` on stderr once run-specific parts (ports, temp paths, durations, run ids)
//! are normalized. Files in subdirectories (`lib/`) are `uses` children, not cases.
//!
//! After an intended change of messages, regenerate with
//! `AUDITFLOW_BLESS=1 cargo test --test integration runtime_cases` and review the diff.
use std::path::{Path, PathBuf};

use auditflow::sim::{self, SimConfig};
use serde_json::json;

use crate::case::Case;
use crate::common::{root, serve, Reply};

/// The top-level `*.yaml` files of the runtime cases directory.
fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_failures_print_their_expected_text() {
    let (url, _script) = serve(vec![
        ("/items", vec![Reply::json(200, json!({"count": 2}))]),
        (
            "/events",
            vec![Reply::json(
                200,
                json!({"data": [
                    {"id": 1, "status": "delivered"},
                    {"id": 2, "status": "failed", "reason": "SPF fail"},
                    {"id": 3, "status": "failed", "reason": "mailbox full"},
                    {"id": 4, "status": "delivered"},
                    {"id": 5, "status": "failed", "reason": "DMARC reject"},
                    {"id": 6, "status": "failed", "reason": "timeout"},
                ]}),
            )],
        ),
        (
            "/items/gone",
            vec![Reply::json(
                404,
                json!({"error": "item `gone` was deleted"}),
            )],
        ),
        (
            "/missing",
            vec![Reply::json(404, json!({"error": "no such item"}))],
        ),
        ("/pages", link_pages(4)),
        (
            "/job",
            vec![Reply::json(
                200,
                json!({"status": "ERROR", "reason": "bad key"}),
            )],
        ),
    ])
    .await;
    // Vault knows two accounts: `vault-unknown-account.yaml` exports a third.
    let sim = sim::start(SimConfig {
        vault_pending_polls: 1,
        vault_directory: Some(vec!["alice@example.com".into(), "bob@example.com".into()]),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = root().join("tests/cases/runtime");
    let cases = cases(&dir);
    assert!(
        cases.len() >= 5,
        "expected the runtime cases, found {cases:?}"
    );
    let mut mismatches = Vec::new();
    for case in cases {
        let ran = Case::file(&case)
            .envs(&sim.env())
            .env("API_URL", &url)
            .code(1)
            .run()
            .await;
        let got = normalize(&ran.stderr, ran.path());
        mismatches.extend(crate::common::check_snapshot(&case, &got));
    }
    sim.shutdown().await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// `n` `Link`-paged JSON arrays of three records of about 400 bytes each (relative links).
fn link_pages(n: usize) -> Vec<Reply> {
    (0..n)
        .map(|p| {
            let records: Vec<serde_json::Value> = (0..3)
                .map(|i| json!({"id": p * 3 + i, "text": "x".repeat(400)}))
                .collect();
            let reply = Reply::json(200, serde_json::Value::Array(records));
            if p + 1 < n {
                reply.header("link", &format!("</pages?page={}>; rel=\"next\"", p + 1))
            } else {
                reply
            }
        })
        .collect()
}

/// Replaces what differs between runs: the repository root, the run's temp dir, local ports,
/// durations and run ids.
fn normalize(stderr: &str, tmp: &Path) -> String {
    let s = stderr
        .replace(&root().display().to_string(), "[ROOT]")
        .replace(&tmp.display().to_string(), "[TMP]");
    let s = replace_after(&s, "127.0.0.1:", |c| c.is_ascii_digit(), "[PORT]");
    let s = replace_runs(&s, is_run_id, "[RUN]");
    replace_runs(&s, is_duration, "[DURATION]")
}

/// Replaces the run of characters matching `keep` right after each `marker`.
fn replace_after(s: &str, marker: &str, keep: impl Fn(char) -> bool, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        if end > 0 {
            out.push_str(with);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces every whitespace- or punctuation-delimited word for which `matches` holds.
fn replace_runs(s: &str, matches: fn(&str) -> bool, with: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in s.chars() {
        if c.is_alphanumeric() || c == '.' || c == '-' {
            word.push(c);
            continue;
        }
        flush(&mut out, &mut word, matches, with);
        out.push(c);
    }
    flush(&mut out, &mut word, matches, with);
    out
}

fn flush(out: &mut String, word: &mut String, matches: fn(&str) -> bool, with: &str) {
    let trimmed = word.trim_end_matches('.');
    if matches(trimmed) {
        out.push_str(with);
        out.push_str(&word[trimmed.len()..]);
    } else {
        out.push_str(word);
    }
    word.clear();
}

/// A UUID, hyphenated or simple (32 hex digits).
fn is_run_id(w: &str) -> bool {
    let hex: String = w.chars().filter(|c| *c != '-').collect();
    hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && (w.len() == 32 || w.len() == 36)
}

/// `12ms`, `1.5s`, `2m3s`, `340µs`: digits (with an optional fraction) and time units.
fn is_duration(w: &str) -> bool {
    let units = ["ns", "µs", "us", "ms", "s", "m", "h"];
    let mut rest = w;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = units.iter().find(|u| rest.starts_with(*u)) else {
            return false;
        };
        rest = &rest[unit.len()..];
        any = true;
    }
    any
}
