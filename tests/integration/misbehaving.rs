//! Servers as they misbehave (issue 22): a server echoing a credential into the cut of an
//! error excerpt, a credential variable holding the key itself, helpers splitting secrets, a
//! Google feed whose `next` is itself, a stalled download, an archive bomb, a state directory
//! that is not the user's own.
use std::path::{Path, PathBuf};

use crate::case::{Case, Ran};
use crate::common::{auditflow, serve, text, Reply};

/// Every text a failed run leaves for people and machines to read: its stdout and stderr,
/// `report.json`, `junit.xml`, the journals under `.auditflow/runs` and `runs show`.
fn everything_written(ran: &Ran) -> Vec<(String, String)> {
    let mut out = vec![
        ("stdout".to_string(), ran.stdout.clone()),
        ("stderr".to_string(), ran.stderr.clone()),
    ];
    for name in ["report.json", "junit.xml"] {
        if let Ok(t) = std::fs::read_to_string(ran.path().join(name)) {
            out.push((name.to_string(), t));
        }
    }
    let runs = ran.path().join(".auditflow/runs");
    for run in std::fs::read_dir(&runs).expect("runs dir").flatten() {
        let journal: PathBuf = run.path().join("journal.jsonl");
        out.push((
            journal.display().to_string(),
            std::fs::read_to_string(&journal).expect("journal"),
        ));
        let id = run.file_name().to_string_lossy().into_owned();
        for json in [false, true] {
            let mut args = vec!["runs", "show", id.as_str()];
            if json {
                args.push("--json");
            }
            let (shown, err) = text(&auditflow(&args, &[], ran.path()));
            out.push((format!("runs show {id} (json: {json})"), shown + &err));
        }
    }
    out
}

/// Fails with where `needle` (or, when `partial`, any 12 characters of it) shows.
fn assert_nowhere(written: &[(String, String)], needle: &str, partial: bool) {
    let chars: Vec<char> = needle.chars().collect();
    let pieces: Vec<String> = if partial && chars.len() > 12 {
        chars.windows(12).map(|w| w.iter().collect()).collect()
    } else {
        vec![needle.to_string()]
    };
    for (what, text) in written {
        for piece in &pieces {
            assert!(
                !text.contains(piece.as_str()),
                "{what} shows {piece:?} of a secret:\n{text}"
            );
        }
    }
}

fn has_file(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

#[tokio::test]
async fn a_secret_echoed_across_the_excerpt_cut_or_with_blanks_is_never_shown() {
    // 26 characters starting at character 175 of the 200 the excerpt keeps: cut, then masked,
    // it showed 25 of them; "two  spaces" collapsed to one space and was shown whole.
    const TOKEN: &str = "TOK-abcdefghijklmnopqrstuv";
    const SPACED: &str = "open  sesame  42";
    let body = format!("{} {TOKEN} {}", "e".repeat(174), "z".repeat(100));
    let mut reply = Reply::json(401, serde_json::json!({}));
    reply.headers = vec![("content-type".into(), "text/plain".into())];
    reply.body = body;
    let mut spaced = reply.clone();
    spaced.body = format!("denied for   {SPACED} (check it)");
    let (base, _script) = serve(vec![("/cut", vec![reply]), ("/spaced", vec![spaced])]).await;
    let ran = Case::yaml(
        r#"
        name: echo
        inputs:
          token: {type: string, secret: true}
          phrase: {type: string, secret: true}
        connections:
          api:
            kind: http
            base_url: "{{ env.BASE }}"
            credentials: {bearer_token: "{{ inputs.token }}"}
        steps:
          - id: cut
            continue_on_error: true
            retry: {max_attempts: 1}
            call: {connection: api, path: /cut}
          - id: spaced
            retry: {max_attempts: 1}
            call: {connection: api, path: /spaced, headers: {x-phrase: "{{ inputs.phrase }}"}}
        "#,
    )
    .env("BASE", &base)
    .input("token", TOKEN)
    .input("phrase", SPACED)
    .report()
    .arg("--junit")
    .arg("junit.xml")
    .code(1)
    .stderr_has("HTTP 401")
    .stderr_has("denied for ***")
    .run()
    .await;
    assert!(has_file(ran.path(), "junit.xml"));
    let written = everything_written(&ran);
    assert!(
        written
            .iter()
            .filter(|(_, t)| t.contains(&"e".repeat(100)))
            .count()
            >= 4,
        "the excerpt is quoted in the outputs: {written:#?}"
    );
    assert_nowhere(&written, TOKEN, true);
    assert_nowhere(&written, SPACED, false);
    assert_nowhere(&written, "open sesame 42", false);
}
