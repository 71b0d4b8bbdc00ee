//! What a run leaves on disk, through the real binary: a file the user had is never replaced
//! without `--overwrite` (run and `auditflow decrypt`), a re-run into the same directory
//! replaces its own recorded files, a pipelined download whose decrypt failed is not "ok",
//! and mail files, the directories made for them and the state directory are private.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::case::{Case, Ran};
use crate::common::{self, serve, Reply};

const PASSPHRASE: &str = "auditflow-fixture-passphrase";

fn fixture(name: &str) -> PathBuf {
    common::root().join("tests/fixtures/gpg").join(name)
}

/// The armored encrypted fixture, served as text.
fn armored() -> Reply {
    let body = std::fs::read_to_string(fixture("zlib-armored.asc")).expect("fixture");
    Reply {
        status: 200,
        headers: vec![],
        body,
        delay: Duration::ZERO,
    }
}

fn text(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// The plaintext of every encrypted fixture.
fn mailbox() -> Vec<u8> {
    std::fs::read(fixture("mailbox.mbox")).expect("fixture")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Downloads `{base}/mailbox-0.asc` into `out_dir` and decrypts it there (pipelined), and
/// saves a call's answer beside them.
pub(crate) fn export_case(base: &str) -> Case {
    Case::yaml(&format!(
        r#"
        name: export
        inputs:
          out_dir: {{default: out}}
        steps:
          - id: list
            call: {{url: "{base}/list", save_to: "{{{{ inputs.out_dir }}}}/list.json"}}
          - id: fetch
            download: {{urls: ["{base}/mailbox-0.asc"], to: "{{{{ inputs.out_dir }}}}"}}
          - id: dec
            decrypt:
              files: "{{{{ steps.fetch.files }}}}"
              key: "{key}"
              passphrase: "{{{{ env.PGP_PASSPHRASE }}}}"
              to: "{{{{ inputs.out_dir }}}}"
        "#,
        key = fixture("protected.sec.asc").display()
    ))
    .env("PGP_PASSPHRASE", PASSPHRASE)
}

pub(crate) async fn export_server() -> (String, std::sync::Arc<common::Script>) {
    serve(vec![
        ("/list", vec![Reply::json(200, serde_json::json!({"n": 1}))]),
        ("/mailbox-0.asc", vec![armored()]),
    ])
    .await
}

fn again(ran: &Ran) -> Case {
    ran.again().env("PGP_PASSPHRASE", PASSPHRASE)
}

#[tokio::test]
async fn run_never_replaces_a_file_the_user_had_unless_told() {
    let (base, script) = export_server().await;
    // The user's own file where the decrypted mailbox would go: the pair fails before
    // anything is fetched, naming the file and the way out.
    let ran = export_case(&base)
        .write("out/mailbox-0.mbox", "my own notes\n")
        .code(1)
        .stderr_has("out/mailbox-0.mbox")
        .stderr_has("--overwrite")
        .run()
        .await;
    let out = ran.path().join("out");
    assert_eq!(
        std::fs::read_to_string(out.join("mailbox-0.mbox")).unwrap(),
        "my own notes\n"
    );
    assert!(script.requests("/mailbox-0.asc").is_empty());
    assert!(!out.join("mailbox-0.asc").exists());

    // --overwrite replaces it.
    again(&ran).arg("--overwrite").run().await;
    assert_eq!(
        std::fs::read(out.join("mailbox-0.mbox")).unwrap(),
        mailbox()
    );

    // A re-run of the job into the same directory replaces what the manifest records.
    let lists = script.requests("/list").len();
    again(&ran).run().await;
    assert_eq!(script.requests("/list").len(), lists + 1);
    assert_eq!(
        std::fs::read(out.join("mailbox-0.mbox")).unwrap(),
        mailbox()
    );

    // A recorded file changed since is the user's again: the call is not even sent.
    std::fs::write(out.join("list.json"), "{\"edited\": true}\n").unwrap();
    again(&ran)
        .code(1)
        .stderr_has("list.json")
        .stderr_has("--overwrite")
        .run()
        .await;
    assert_eq!(script.requests("/list").len(), lists + 1);
    assert_eq!(
        std::fs::read_to_string(out.join("list.json")).unwrap(),
        "{\"edited\": true}\n"
    );
}

#[tokio::test]
async fn a_resumed_run_rewrites_its_own_files_without_the_flag() {
    let (base, script) = serve(vec![
        ("/a.asc", vec![armored()]),
        ("/b.asc", vec![armored()]),
    ])
    .await;
    let dir = common::Dir::new();
    let wf = dir.write(
        "wf.yaml",
        &format!(
            "name: resume\nsteps:\n  - id: fetch\n    download: {{urls: [\"{base}/a.asc\", \"{base}/b.asc\"], to: out, concurrency: 1}}\n"
        ),
    );
    // The first process dies (like kill -9: no manifest) right after `a` is recorded.
    let args = vec!["run".to_string(), wf.display().to_string()];
    let crash = vec![(
        "AUDITFLOW_FAILPOINT".to_string(),
        "after-download:1".to_string(),
    )];
    let o = common::auditflow_async(args.clone(), crash, dir.path().to_path_buf()).await;
    assert!(!o.status.success(), "{:?}", common::text(&o));
    assert!(dir.path().join("out/a.asc").exists());
    assert!(
        !dir.path().join("out/manifest.json").exists()
            && !dir.path().join("manifest.json").exists()
    );
    // The next one resumes: `a` is its own (the journal says so), no --overwrite needed.
    let o = common::auditflow_async(args, vec![], dir.path().to_path_buf()).await;
    assert_eq!(o.status.code(), Some(0), "{:?}", common::text(&o));
    assert_eq!(
        script.requests("/a.asc").len(),
        1,
        "a was kept, not fetched again"
    );
    assert_eq!(script.requests("/b.asc").len(), 1);
}

#[tokio::test]
async fn a_step_may_allow_overwriting_its_own_files() {
    let (base, script) = serve(vec![(
        "/data",
        vec![Reply::json(200, serde_json::json!({"fresh": 1}))],
    )])
    .await;
    let yaml = |overwrite: bool| {
        format!(
            "name: save\nsteps:\n  - id: get\n    overwrite: {overwrite}\n    call: {{url: \"{base}/data\", save_to: result.json}}\n"
        )
    };
    let ran = Case::yaml(&yaml(false))
        .write("result.json", "{\"mine\": true}\n")
        .code(1)
        .stderr_has("result.json")
        .run()
        .await;
    assert!(script.requests("/data").is_empty(), "sent before refusing");
    std::fs::write(ran.path().join("wf.yaml"), yaml(true)).unwrap();
    ran.again().arg("--fresh").run().await;
    let saved = std::fs::read_to_string(ran.path().join("result.json")).unwrap();
    assert!(saved.contains("fresh"), "{saved}");
}

fn decrypt(out: &Path, extra: &[&str]) -> std::process::Output {
    let key = fixture("protected.sec.asc");
    let input = fixture("zlib.gpg");
    let mut args = vec![
        "decrypt",
        "--key",
        key.to_str().unwrap(),
        "--passphrase-env",
        "PW",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(input.to_str().unwrap());
    common::auditflow(&args, &[("PW", PASSPHRASE)], out.parent().unwrap())
}

#[test]
fn decrypt_command_never_replaces_a_file_the_user_had_unless_told() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("zlib.mbox"), "mine\n").unwrap();
    let o = decrypt(&out, &[]);
    let (stdout, stderr) = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("zlib.mbox") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("zlib.mbox")).unwrap(),
        "mine\n"
    );

    let o = decrypt(&out, &["--overwrite"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", common::text(&o));
    assert_eq!(std::fs::read(out.join("zlib.mbox")).unwrap(), mailbox());
    // Recorded in out/manifest.json unchanged: decrypting again needs no flag.
    let o = decrypt(&out, &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", common::text(&o));
}

#[test]
fn decrypt_command_makes_its_directories_and_files_private() {
    let d = tempfile::tempdir().unwrap();
    let top = d.path().join("new");
    let out = top.join("out");
    std::fs::create_dir(&top).unwrap();
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = decrypt(&out, &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", common::text(&o));
    assert_eq!(mode(&out), 0o700, "a directory it created");
    assert_eq!(mode(&top), 0o755, "the user's directory keeps its mode");
    assert_eq!(mode(&out.join("zlib.mbox")), 0o600);
}

#[tokio::test]
async fn a_download_is_not_ok_when_a_pipelined_decrypt_stopped_it() {
    // `a.asc` is not OpenPGP: its decrypt fails while `b.asc` is still downloading.
    let (base, _script) = serve(vec![
        ("/a.asc", vec![text("this is not an OpenPGP message\n")]),
        ("/b.asc", vec![armored().delay(Duration::from_secs(30))]),
    ])
    .await;
    let ran = Case::yaml(&format!(
        r#"
        name: pipe
        steps:
          - id: fetch
            download: {{urls: ["{base}/a.asc", "{base}/b.asc"], to: out, concurrency: 2}}
          - id: dec
            decrypt:
              files: "{{{{ steps.fetch.files }}}}"
              key: "{key}"
              passphrase: "{{{{ env.PW }}}}"
              to: out
        "#,
        key = fixture("protected.sec.asc").display()
    ))
    .env("PW", PASSPHRASE)
    .report()
    .code(1)
    .run()
    .await;
    let report = ran.report();
    assert_eq!(report["status"], "failed", "{report:#}");
    let step = |id: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no step {id} in {report:#}"))
    };
    let fetch = step("fetch");
    assert_eq!(fetch["status"], "failed", "{fetch:#}");
    let error = fetch["error"].as_str().unwrap_or_default();
    assert!(error.contains("1 of 2 files"), "{error}");
    assert_eq!(step("dec")["status"], "failed");
    assert!(ran.stdout.contains("fetch: FAILED"), "{}", ran.stdout);
}

#[tokio::test]
async fn downloads_and_the_directories_made_for_them_are_private() {
    let (base, _script) = export_server().await;
    let ran = export_case(&base)
        .input("out_dir", "out/nested/mail")
        .run()
        .await;
    let p = ran.path();
    for dir in ["out", "out/nested", "out/nested/mail"] {
        assert_eq!(mode(&p.join(dir)), 0o700, "{dir}");
    }
    for file in ["mailbox-0.asc", "mailbox-0.mbox", "list.json"] {
        assert_eq!(mode(&p.join("out/nested/mail").join(file)), 0o600, "{file}");
    }
}

/// A server that announces 1000 bytes, sends 500 and hangs up.
async fn half_file_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n";
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&[b'x'; 500]).await;
            let _ = sock.shutdown().await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_partial_download_is_private_too() {
    let base = half_file_server().await;
    let ran = Case::yaml(&format!(
        "name: part\nsteps:\n  - id: fetch\n    retry: {{max_attempts: 1}}\n    download: {{urls: [\"{base}/mailbox.gpg\"], to: out}}\n"
    ))
    .code(1)
    .run()
    .await;
    let part = ran.path().join("out/mailbox.gpg.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 500);
    assert_eq!(mode(&part), 0o600);
}

#[tokio::test]
async fn a_state_directory_open_to_others_is_made_private() {
    let (base, _script) = serve(vec![(
        "/ping",
        vec![Reply::json(200, serde_json::json!({"ok": true}))],
    )])
    .await;
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let case = || {
        Case::yaml(&format!(
            "name: ping\nsteps:\n  - id: ping\n    call: {{url: \"{base}/ping\"}}\n"
        ))
        .arg("--state-dir")
        .arg(state.to_str().unwrap())
    };
    // The empty directory the user made is adopted and made 0700, with a warning.
    let ran = case().run().await;
    assert_eq!(mode(&state), 0o700);
    assert!(
        format!("{}{}", ran.stdout, ran.stderr).contains("made it 0700"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );
    // Loosened later (a restored CI cache, say): tightened again.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    case().run().await;
    assert_eq!(mode(&state), 0o700);
}
