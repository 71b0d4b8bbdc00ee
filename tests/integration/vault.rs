//! Google Vault mail export through the binary and the shipped workflow, against an
//! in-process fake of Vault (matters, exports) and Cloud Storage (objects.get alt=media) on
//! two origins: full flow, md5 mismatch, zip-slip, at-most-once export creation, detach/resume.
use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use md5::Digest as _;
use serde_json::{json, Value};

use crate::common::*;

const TOKEN: &str = "ya29.vault-test-token";
const BUCKET: &str = "vault-export-bucket";
const ACCOUNTS: [&str; 2] = ["alice@example.com", "bob@example.com"];

/// How the fake misbehaves.
#[derive(Clone, Copy, Default, PartialEq)]
enum Mode {
    #[default]
    Normal,
    /// The listed md5Hash is not the object's.
    BadMd5,
    /// The archive holds an entry `../evil.mbox`.
    ZipSlip,
    /// The export ends FAILED.
    Failed,
}

#[derive(Default)]
struct Fake {
    mode: Mode,
    /// Polls of an export before it is COMPLETED.
    polls_needed: u32,
    matters: Vec<Value>,
    exports: Vec<Value>,
    polls: HashMap<String, u32>,
    objects: HashMap<String, Vec<u8>>,
    exports_created: u32,
    unauthorized: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn authorized(s: &Shared, h: &HeaderMap, what: &str) -> bool {
    let ok =
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
    if !ok {
        s.lock().unwrap().unauthorized.push(what.to_string());
    }
    ok
}

fn google_error(code: u16, status: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        Json(json!({"error": {"code": code, "message": message, "status": status}})),
    )
        .into_response()
}

fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn mbox_of(account: &str) -> Vec<u8> {
    format!("From MAILER-DAEMON Thu Jan  1 00:00:00 2026\nFrom: {account}\nSubject: hello\n\nmail of {account}\n\n").into_bytes()
}

/// The storage entry of one object, stored in the fake.
fn sink_file(f: &mut Fake, object: String, bytes: Vec<u8>) -> Value {
    let mut md5 = md5::Md5::digest(&bytes).to_vec();
    if f.mode == Mode::BadMd5 && object.ends_with(".zip") {
        md5[0] ^= 0xff;
    }
    let file = json!({
        "bucketName": BUCKET,
        "objectName": object,
        "size": bytes.len().to_string(),
        "md5Hash": base64::engine::general_purpose::STANDARD.encode(md5),
    });
    f.objects.insert(object, bytes);
    file
}

/// One archive per account, as Vault splits large exports: `<account>.mbox` and a metadata
/// file that is not extracted; beside them the results count (one message per account) and
/// the checksums file, as the "Vault export contents" page lists them (headers of this
/// test's own choosing: the page gives none).
fn sink_files(f: &mut Fake, matter: &str, export: &str, emails: &[String]) -> Vec<Value> {
    let mut files = archives(f, matter, export, emails);
    let mut counts = String::from("Email,Messages\n");
    for e in emails {
        counts.push_str(&format!("{e},1\n"));
    }
    let counts_name = format!("{matter}/{export}/mail-export-results-count.csv");
    files.push(sink_file(f, counts_name, counts.into_bytes()));
    let mut sums = String::new();
    for file in &files {
        let object = file["objectName"].as_str().unwrap();
        let md5 = md5::Md5::digest(&f.objects[object]);
        let hex = hex::encode(md5);
        sums.push_str(&format!("{hex}  {}\n", object.rsplit('/').next().unwrap()));
    }
    let sums_name = format!("{matter}/{export}/mail-export-checksums.txt");
    files.push(sink_file(f, sums_name, sums.into_bytes()));
    files
}

fn archives(f: &mut Fake, matter: &str, export: &str, emails: &[String]) -> Vec<Value> {
    emails
        .iter()
        .enumerate()
        .map(|(i, account)| {
            let mut entries = vec![
                (format!("{export}/{account}.mbox"), mbox_of(account)),
                (
                    format!("{export}/{account}-metadata.xml"),
                    b"<metadata/>".to_vec(),
                ),
            ];
            if f.mode == Mode::ZipSlip {
                entries.push(("../evil.mbox".to_string(), b"owned".to_vec()));
            }
            let bytes = zip_of(&entries);
            let object = format!("{matter}/{export}/mail-export_{}.zip", i + 1);
            sink_file(f, object, bytes)
        })
        .collect()
}

async fn create_matter(State(s): State<Shared>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&s, &h, "matters.create") {
        return google_error(401, "UNAUTHENTICATED", "no token");
    }
    let mut f = s.lock().unwrap();
    let matter = json!({"matterId": format!("m-{}", f.matters.len() + 1),
        "name": body["name"], "description": body["description"], "state": "OPEN"});
    f.matters.push(matter.clone());
    Json(matter).into_response()
}

async fn list_matters(State(s): State<Shared>, h: HeaderMap) -> Response {
    if !authorized(&s, &h, "matters.list") {
        return google_error(401, "UNAUTHENTICATED", "no token");
    }
    Json(json!({"matters": s.lock().unwrap().matters})).into_response()
}

async fn create_export(
    State(s): State<Shared>,
    UrlPath(matter): UrlPath<String>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&s, &h, "exports.create") {
        return google_error(401, "UNAUTHENTICATED", "no token");
    }
    let q = &body["query"];
    if q["corpus"] != "MAIL"
        || q["searchMethod"] != "ACCOUNT"
        || body["exportOptions"]["mailOptions"]["exportFormat"] != "MBOX"
    {
        return google_error(400, "INVALID_ARGUMENT", "not a MBOX mail export by account");
    }
    // Empty optional timestamps must be left out, as Vault rejects "".
    if q.get("startTime") == Some(&json!("")) || q.get("endTime") == Some(&json!("")) {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid value at 'query.start_time'",
        );
    }
    let mut f = s.lock().unwrap();
    f.exports_created += 1;
    let export = json!({
        "id": format!("exp-{}", f.exports_created),
        "matterId": matter,
        "name": body["name"],
        "query": body["query"],
        "exportOptions": body["exportOptions"],
        "createTime": chrono::Utc::now().to_rfc3339(),
        "status": "IN_PROGRESS",
    });
    f.exports.push(export.clone());
    Json(export).into_response()
}

async fn list_exports(
    State(s): State<Shared>,
    UrlPath(matter): UrlPath<String>,
    h: HeaderMap,
) -> Response {
    if !authorized(&s, &h, "exports.list") {
        return google_error(401, "UNAUTHENTICATED", "no token");
    }
    let f = s.lock().unwrap();
    let exports: Vec<&Value> = f
        .exports
        .iter()
        .filter(|e| e["matterId"] == matter)
        .collect();
    Json(json!({"exports": exports})).into_response()
}

async fn get_export(
    State(s): State<Shared>,
    UrlPath((matter, id)): UrlPath<(String, String)>,
    h: HeaderMap,
) -> Response {
    if !authorized(&s, &h, "exports.get") {
        return google_error(401, "UNAUTHENTICATED", "no token");
    }
    let mut f = s.lock().unwrap();
    let Some(i) = f
        .exports
        .iter()
        .position(|e| e["id"] == id && e["matterId"] == matter)
    else {
        return google_error(404, "NOT_FOUND", "Export not found");
    };
    let polls = {
        let p = f.polls.entry(id.clone()).or_default();
        *p += 1;
        *p
    };
    if polls >= f.polls_needed && f.exports[i]["status"] == "IN_PROGRESS" {
        if f.mode == Mode::Failed {
            f.exports[i]["status"] = json!("FAILED");
        } else {
            let emails: Vec<String> = f.exports[i]["query"]["accountInfo"]["emails"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
                .collect();
            let files = sink_files(&mut f, &matter, &id, &emails);
            f.exports[i]["status"] = json!("COMPLETED");
            f.exports[i]["cloudStorageSink"] = json!({"files": files});
        }
    }
    Json(f.exports[i].clone()).into_response()
}

async fn get_object(
    State(s): State<Shared>,
    UrlPath((bucket, object)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if !authorized(&s, &h, &format!("objects.get {object}")) {
        return google_error(401, "UNAUTHENTICATED", "no token");
    }
    if q.get("alt").map(String::as_str) != Some("media") || bucket != BUCKET {
        return google_error(400, "INVALID_ARGUMENT", "alt=media expected");
    }
    match s.lock().unwrap().objects.get(&object) {
        Some(bytes) => ([("content-type", "application/zip")], bytes.clone()).into_response(),
        None => google_error(404, "NOT_FOUND", "No such object"),
    }
}

struct Servers {
    vault: String,
    storage: String,
    fake: Shared,
}

async fn start(mode: Mode, polls_needed: u32) -> Servers {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        mode,
        polls_needed,
        ..Fake::default()
    }));
    let vault = Router::new()
        .route("/v1/matters", get(list_matters).post(create_matter))
        .route(
            "/v1/matters/{matter}/exports",
            get(list_exports).post(create_export),
        )
        .route("/v1/matters/{matter}/exports/{id}", get(get_export))
        .with_state(fake.clone());
    let storage = Router::new()
        .route("/storage/v1/b/{bucket}/o/{object}", get(get_object))
        .with_state(fake.clone());
    let mut urls = Vec::new();
    for app in [vault, storage] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    Servers {
        storage: urls.pop().unwrap(),
        vault: urls.pop().unwrap(),
        fake,
    }
}

async fn run_export(
    s: &Servers,
    dir: &Path,
    inputs: &[&str],
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "run".into(),
        wf("google/vault-mail-export.yaml"),
        "-i".into(),
        format!("accounts={}", ACCOUNTS.join(",")),
        "-i".into(),
        "export_name=case-42 mail".into(),
        "-i".into(),
        "poll_interval=50ms".into(),
        "-i".into(),
        format!("out_dir={}", dir.join("out").display()),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
    ];
    for i in inputs {
        args.push("-i".into());
        args.push((*i).to_string());
    }
    args.extend(extra.iter().map(|x| (*x).to_string()));
    let mut e: Vec<(String, String)> = vec![
        ("GOOGLE_VAULT_BASE_URL".into(), s.vault.clone()),
        ("GOOGLE_STORAGE_BASE_URL".into(), s.storage.clone()),
        ("GOOGLE_ACCESS_TOKEN".into(), TOKEN.into()),
    ];
    e.extend(
        env.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
    );
    auditflow_async(args, e, dir.to_path_buf()).await
}

/// Both accounts' mbox files are in `out`, byte for byte, and the manifest records the
/// archives (object URL, md5, export and matter) and the mbox files (from which archive).
fn assert_exported(out: &Path, matter: &str, export: &str) {
    for a in ACCOUNTS {
        let got = std::fs::read(out.join(format!("{a}.mbox"))).expect("mbox file");
        assert_eq!(got, mbox_of(a));
    }
    assert!(!out.join("evil.mbox").exists());
    let m: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let arts = m["artifacts"].as_object().expect("artifacts");
    let resource = format!("matters/{matter}/exports/{export}");
    let downloads: Vec<&Value> = arts.values().filter(|a| a["kind"] == "download").collect();
    assert_eq!(
        downloads.len(),
        4,
        "2 archives, results count, checksums: {m:#}"
    );
    let archives: Vec<&Value> = downloads
        .into_iter()
        .filter(|a| a["path"].as_str().unwrap().ends_with(".zip"))
        .collect();
    assert_eq!(archives.len(), 2, "{m:#}");
    for a in &archives {
        assert_eq!(a["request_id"], resource.as_str());
        assert!(a["md5"].as_str().is_some_and(|x| x.len() == 24), "{a}");
        assert!(
            a["source"]
                .as_str()
                .unwrap()
                .contains("/storage/v1/b/vault-export-bucket/o/"),
            "{a}"
        );
        assert_eq!(a["sha256"].as_str().unwrap().len(), 64);
    }
    let mboxes: Vec<&Value> = arts.values().filter(|a| a["kind"] == "extracted").collect();
    assert_eq!(mboxes.len(), 2, "{m:#}");
    for x in mboxes {
        assert!(x["path"].as_str().unwrap().ends_with(".mbox"), "{x}");
        assert!(
            x["source"].as_str().unwrap().starts_with("archives/"),
            "{x}"
        );
        assert!(
            archives.iter().any(|a| a["sha256"] == x["source_sha256"]),
            "{x}"
        );
        assert_eq!(x["request_id"], resource.as_str());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_two_accounts_end_to_end_with_a_new_matter() {
    let s = start(Mode::Normal, 2).await;
    let d = Dir::new();
    let o = run_export(
        &s,
        d.path(),
        &["matter_name=Case 42", "start_time=2025-01-01T00:00:00Z"],
        &[],
        &[],
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let f = s.fake.lock().unwrap();
    assert_eq!(f.matters.len(), 1);
    assert_eq!(f.matters[0]["name"], "Case 42");
    assert_eq!(f.exports_created, 1);
    let q = &f.exports[0]["query"];
    assert_eq!(q["accountInfo"]["emails"], json!(ACCOUNTS));
    assert_eq!(
        (q["dataScope"].as_str(), q["startTime"].as_str()),
        (Some("ALL_DATA"), Some("2025-01-01T00:00:00Z"))
    );
    assert!(
        q.get("endTime").is_none() && q.get("terms").is_none(),
        "{q}"
    );
    assert!(f.unauthorized.is_empty(), "{:?}", f.unauthorized);
    drop(f);
    assert_exported(&d.path().join("out"), "m-1", "exp-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_md5_mismatch_fails_and_keeps_nothing() {
    let s = start(Mode::BadMd5, 1).await;
    let d = Dir::new();
    let o = run_export(&s, d.path(), &["matter_id=m-9"], &[], &[]).await;
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}\n{err}");
    assert_ne!(o.status.code(), Some(75), "{out}\n{err}");
    assert!(err.contains("expected MD5"), "{err}");
    let archives = d.path().join("out/archives");
    let kept: Vec<_> = std::fs::read_dir(&archives)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        kept.iter().all(|n| !n.to_string_lossy().ends_with(".zip")),
        "{kept:?}"
    );
    assert!(!d
        .path()
        .join("out")
        .join(format!("{}.mbox", ACCOUNTS[0]))
        .exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zip_slip_entry_is_refused() {
    let s = start(Mode::ZipSlip, 1).await;
    let d = Dir::new();
    let o = run_export(&s, d.path(), &["matter_id=m-9"], &[], &[]).await;
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        err.contains("../evil.mbox") && err.contains("outside the output directory"),
        "{err}"
    );
    assert!(!d.path().join("evil.mbox").exists());
    assert!(!d.path().join("out/evil.mbox").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_export_ends_the_run_with_vaults_answer() {
    let s = start(Mode::Failed, 1).await;
    let d = Dir::new();
    let o = run_export(&s, d.path(), &["matter_id=m-9"], &[], &[]).await;
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        err.contains("ended FAILED") && err.contains("exp-1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_creating_resumes_without_a_second_export() {
    let s = start(Mode::Normal, 1).await;
    let d = Dir::new();
    // The export is created at Vault, then the process dies before recording the answer.
    let o = run_export(
        &s,
        d.path(),
        &["matter_id=m-7"],
        &[],
        &[("AUDITFLOW_FAILPOINT", "once-before-response")],
    )
    .await;
    assert_ne!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(s.fake.lock().unwrap().exports_created, 1);
    let o = run_export(&s, d.path(), &["matter_id=m-7"], &[], &[]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("already carried it out (request exp-1)"),
        "{out}\n{err}"
    );
    assert_eq!(
        s.fake.lock().unwrap().exports_created,
        1,
        "never a second export"
    );
    assert_exported(&d.path().join("out"), "m-7", "exp-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn detaches_with_75_while_in_progress_and_resumes() {
    let s = start(Mode::Normal, 8).await;
    let d = Dir::new();
    let o = run_export(
        &s,
        d.path(),
        &["matter_id=m-3"],
        &["--max-wait", "300ms"],
        &[],
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}\n{err}");
    assert!(
        err.contains("IN_PROGRESS") || err.contains("pending"),
        "{err}"
    );
    let mut code = Some(75);
    for _ in 0..20 {
        let o = run_export(
            &s,
            d.path(),
            &["matter_id=m-3"],
            &["--max-wait", "400ms"],
            &[],
        )
        .await;
        code = o.status.code();
        if code != Some(75) {
            assert_eq!(code, Some(0), "{:?}", text(&o));
            break;
        }
    }
    assert_eq!(code, Some(0));
    assert_eq!(
        s.fake.lock().unwrap().exports_created,
        1,
        "never a second export"
    );
    assert_exported(&d.path().join("out"), "m-3", "exp-1");
}

/// The shipped workflow against the built-in simulator's Vault and Cloud Storage: the
/// client and the simulator were written apart from the reference pages, so this is the
/// check that they agree.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_workflow_exports_two_accounts_from_the_simulator() {
    let h = auditflow_sim::start(auditflow_sim::SimConfig::default())
        .await
        .expect("simulator");
    let ran = crate::case::Case::file(Path::new(&wf("google/vault-mail-export.yaml")))
        .envs(&h.env())
        .input("accounts", "alice@example.com,bob@example.com")
        .input("export_name", "sim-check")
        .input("poll_interval", "100ms")
        .run()
        .await;
    let out = ran.path().join("out");
    for account in ["alice@example.com", "bob@example.com"] {
        let mbox = std::fs::read(out.join(format!("{account}.mbox"))).expect("mbox");
        assert!(mbox.starts_with(b"From "), "{account}: not an mbox");
    }
    let verify = auditflow(&["verify", "out"], &[], ran.path());
    assert!(verify.status.success(), "{:?}", text(&verify));
}
