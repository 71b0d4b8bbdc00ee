//! Snapshot tests of the human reporter's plain (non-terminal) output.
//!
//! Each test feeds an event sequence and compares the lines exactly with
//! `src/report/snapshots/human_NAME.txt`. After an intended change of the output, regenerate
//! with `AUDITFLOW_BLESS=1 cargo test --lib report::human` and review the diff.
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::events::ArtifactKind;

fn render(verbose: bool, events: &[Event]) -> String {
    let h = Human::with_output(Output::Buffer(Mutex::new(String::new())), verbose);
    for e in events {
        h.event(e);
    }
    match h.out {
        Output::Buffer(b) => b.into_inner().unwrap(),
        _ => unreachable!("the test reporter writes into its buffer"),
    }
}

/// The snapshot harness the integration tests use too.
#[path = "../../../tests/integration/snapshot.rs"]
mod snapshot;

/// Compares `got` with the snapshot file `human_NAME.txt` (or writes it when blessing).
fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/snapshots")
        .join(format!("human_{name}.txt"));
    if let Some(m) = snapshot::compare(&path, got) {
        pretty_assertions::assert_eq!(m.got, m.expected, "output differs from {}", path.display());
    }
}

fn started(resumed: Option<&str>, dry_run: bool) -> Event {
    Event::RunStarted {
        run_id: "0b7c3f1e-run".into(),
        workflow: "mailbox export".into(),
        file: "workflows/google/mailbox-export.yaml".into(),
        inputs: json!({"user": "ann@example.com"}),
        started_at: crate::events::rfc3339::parse("2024-05-01T10:00:00+00:00").unwrap(),
        dry_run,
        resumed: resumed.map(str::to_string),
        files: vec![],
    }
}

fn step_started(step: &str, kind: StepKind) -> Event {
    Event::StepStarted {
        step: step.into(),
        name: step.into(),
        kind,
        label: None,
    }
}

fn step_finished(step: &str, name: &str, status: StepStatus, attempts: u32, ms: u64) -> Event {
    Event::StepFinished {
        step: step.into(),
        name: name.into(),
        kind: StepKind::Call,
        status,
        attempts,
        duration: Duration::from_millis(ms),
        error: None,
        outputs: Value::Null,
        label: None,
    }
}

fn failed(step: &str, status: StepStatus, error: &str) -> Event {
    let mut e = step_finished(step, step, status, 1, 2_500);
    if let Event::StepFinished { error: slot, .. } = &mut e {
        *slot = Some(error.into());
    }
    e
}

fn run_finished(status: RunStatus, secs: u64, error: Option<&str>) -> Event {
    Event::RunFinished {
        status,
        duration: Duration::from_secs(secs),
        outputs: Value::Null,
        error: error.map(str::to_string),
    }
}

fn artifact(step: &str, path: &str, bytes: u64) -> Event {
    Event::Artifact {
        step: step.into(),
        artifact: Artifact {
            kind: ArtifactKind::Download,
            path: path.into(),
            bytes,
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .parse()
                .unwrap(),
            source: Some("https://vendor.example/files/1".into()),
            source_sha256: None,
            md5: None,
            request_id: None,
            finished_at: crate::events::rfc3339::parse("2024-05-01T10:01:00+00:00").unwrap(),
        },
    }
}

/// A resumed run: retries, polls, every way a step ends, a loop, a detach (exit 75).
#[test]
fn a_resumed_run_that_detaches_while_polling() {
    let events = [
        started(Some("run started 2024-05-01T09:00:00+00:00; 1 step recorded; last process ended pending"), false),
        Event::Warning {
            message: "connection `google` has no timeout; using 30s".into(),
        },
        step_finished("create", "create the export", StepStatus::Recorded, 1, 0),
        step_started("token", StepKind::Call),
        Event::Retry {
            step: "token".into(),
            attempt: 1,
            error: "HTTP 503 from google (Service Unavailable)".into(),
            wait: Duration::from_millis(1_500),
        },
        step_finished("token", "token", StepStatus::Succeeded, 2, 1_800),
        failed(
            "notify",
            StepStatus::FailedContinued,
            "HTTP 404 from mailstore\nthe hook is not configured",
        ),
        step_finished("archive", "archive", StepStatus::Skipped, 0, 0),
        step_started("users[0].download", StepKind::Download),
        Event::Log {
            step: "users[0].download".into(),
            line: "resuming at byte 1024".into(),
            vendor_log: false,
        },
        Event::Progress {
            step: "users[0].download".into(),
            percent: Some(50.0),
            bytes: None,
            total: None,
            file: None,
        },
        artifact("users[0].download", "out/ann/export-1.mbox.gpg", 3 * 1024 * 1024),
        step_finished("users[0].download", "users[0].download", StepStatus::Succeeded, 1, 65_000),
        failed(
            "users[1].download",
            StepStatus::Failed,
            "users[1].download: HTTP 403 from google: the export belongs to another admin",
        ),
        Event::Poll {
            step: "wait".into(),
            poll: 3,
            observed: "PENDING".into(),
            next_in: Duration::from_secs(30),
        },
        Event::Poll {
            step: "wait".into(),
            poll: 4,
            observed: "PENDING".into(),
            next_in: Duration::ZERO,
        },
        step_finished("wait", "wait for the export", StepStatus::Pending, 4, 120_000),
        run_finished(RunStatus::Pending, 190, Some("wait: export 7 is PENDING")),
    ];
    check("resumed_pending", &render(false, &events));
}

/// `--dry-run --verbose`: step starts and every rendered request.
#[test]
fn a_verbose_dry_run_shows_each_request() {
    let events = [
        started(None, true),
        step_started("list", StepKind::Call),
        Event::DryRun {
            step: "list".into(),
            method: "POST".into(),
            url: "https://api.example/export?token=***".into(),
            headers: vec![
                ("authorization".into(), "Bearer ***".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: Some("{\n  \"user\": \"ann@example.com\"\n}".into()),
        },
        step_finished("list", "list", StepStatus::Succeeded, 1, 3),
        run_finished(RunStatus::Succeeded, 0, None),
    ];
    check("verbose_dry_run", &render(true, &events));
}

/// A run without steps, and one that failed and one that was cancelled: their summaries.
#[test]
fn summaries_name_how_the_run_ended() {
    let events = [
        started(None, false),
        run_finished(RunStatus::Succeeded, 0, None),
        run_finished(
            RunStatus::Failed,
            12,
            Some("ignored: the error is printed by the cli"),
        ),
        run_finished(RunStatus::Cancelled, 3, Some("cancelled")),
    ];
    check("summaries", &render(false, &events));
}

/// A loop's iterations named by their items, and a MailStore process whose log shows only
/// with `--verbose` (plain output: one line when it starts, then the step's end line).
#[test]
fn loop_labels_and_vendor_process_logs() {
    let label = |s: &str| Some(s.to_string());
    let one = "verify[0].one";
    let events = |verbose_case: &str| {
        vec![
            started(None, false),
            Event::StepStarted {
                step: one.into(),
                name: one.into(),
                kind: StepKind::Call,
                label: label("verify[0: store-a].one"),
            },
            Event::Log {
                step: one.into(),
                line: format!("VerifyStore: checking folder 1 ({verbose_case})"),
                vendor_log: true,
            },
            Event::Progress {
                step: one.into(),
                percent: Some(40.0),
                bytes: None,
                total: None,
                file: None,
            },
            Event::Log {
                step: one.into(),
                line: "VerifyStore: checking folder 2".into(),
                vendor_log: true,
            },
            Event::Retry {
                step: one.into(),
                attempt: 1,
                error: "HTTP 503 from mailstore".into(),
                wait: Duration::from_secs(1),
            },
            Event::StepFinished {
                step: one.into(),
                name: one.into(),
                kind: StepKind::Call,
                status: StepStatus::Succeeded,
                attempts: 2,
                duration: Duration::from_millis(3_200),
                error: None,
                outputs: Value::Null,
                label: label("verify[0: store-a].one"),
            },
            run_finished(RunStatus::Succeeded, 4, None),
        ]
    };
    let quiet = render(false, &events("quiet"));
    let verbose = render(true, &events("verbose"));
    check(
        "loop_labels_vendor_log",
        &format!("{quiet}--- verbose ---\n{verbose}"),
    );
}

/// In a terminal, each file a step downloads or decrypts has a byte bar of its own (several
/// run at once); a complete file's bar goes, and the step's end takes the rest with it.
#[test]
fn each_file_in_flight_has_its_own_byte_bar() {
    let hidden = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    let h = Human::with_output(Output::Bars(hidden), false);
    let step = "users[0].download";
    let bytes = |kind, path: &str, done, total| Event::Progress {
        step: step.into(),
        percent: None,
        bytes: Some(done),
        total,
        file: Some(FileProgress {
            kind,
            path: path.into(),
        }),
    };
    let bars = |h: &Human| {
        let st = h.state.lock().unwrap();
        let mut shown: Vec<(String, u64, Option<u64>)> = st
            .file_bars
            .values()
            .map(|pb| (pb.prefix(), pb.position(), pb.length()))
            .collect();
        shown.sort();
        shown
    };
    h.event(&step_started(step, StepKind::Download));
    h.event(&bytes(
        ArtifactKind::Download,
        "out/a/export-1.gpg",
        10,
        Some(100),
    ));
    h.event(&bytes(
        ArtifactKind::Decrypt,
        "out/a/export-0.mbox",
        5,
        Some(50),
    ));
    h.event(&bytes(
        ArtifactKind::Download,
        "out/a/export-1.gpg",
        40,
        Some(100),
    ));
    assert_eq!(
        bars(&h),
        vec![
            (format!("{step} decrypt export-0.mbox"), 5, Some(50)),
            (format!("{step} download export-1.gpg"), 40, Some(100)),
        ]
    );
    h.event(&bytes(
        ArtifactKind::Decrypt,
        "out/a/export-0.mbox",
        50,
        Some(50),
    ));
    assert_eq!(
        bars(&h),
        vec![(format!("{step} download export-1.gpg"), 40, Some(100))]
    );
    // Progress of a step that is not running draws nothing.
    h.event(&Event::Progress {
        step: "other".into(),
        percent: None,
        bytes: Some(1),
        total: None,
        file: None,
    });
    assert_eq!(bars(&h).len(), 1);
    h.event(&step_finished(step, step, StepStatus::Failed, 1, 10));
    assert!(bars(&h).is_empty(), "the step's end clears its file bars");
}

/// A successful run shows the workflow's outputs after its summary (long values cut); a
/// failed run and a dry run (which shows "would output" as it renders them) do not.
#[test]
fn a_successful_run_shows_its_outputs() {
    let outputs =
        json!({"request_id": "53156", "files": ["a.mbox", "b.mbox"], "long": "x".repeat(250)});
    let finished = |status| Event::RunFinished {
        status,
        duration: Duration::from_secs(3),
        outputs: outputs.clone(),
        error: None,
    };
    let ok = render(
        false,
        &[started(None, false), finished(RunStatus::Succeeded)],
    );
    assert!(ok.contains("\n  output request_id = 53156\n"), "{ok}");
    assert!(
        ok.contains("\n  output files = [\"a.mbox\",\"b.mbox\"]\n"),
        "{ok}"
    );
    assert!(
        ok.contains(&format!("  output long = {}…\n", "x".repeat(200))),
        "{ok}"
    );
    let failed = render(false, &[started(None, false), finished(RunStatus::Failed)]);
    assert!(!failed.contains("output "), "{failed}");
    let dry = render(
        false,
        &[started(None, true), finished(RunStatus::Succeeded)],
    );
    assert!(!dry.contains("output "), "{dry}");
}
