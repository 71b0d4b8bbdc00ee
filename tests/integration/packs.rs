//! Workflow packs end to end against real git servers on loopback: a "playbooks" repository
//! served by `git daemon` with tags v1 and v2 and a "team" workflow using it (lock,
//! validate, run offline from the cache, update to v2, a moved tag refused, a tampered cache
//! refused), a private repository behind HTTP basic auth served by `git http-backend`, and
//! `AUDITFLOW_PATH`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::common::{auditflow_async, serve, text, Dir, Reply};

/// `git` with a fixed identity, in `cwd`; its stdout.
fn git(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "Playbook Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Playbook Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `git daemon` serving every repository under a directory; stopped when dropped.
struct GitDaemon {
    child: Child,
}

impl GitDaemon {
    fn start(base: &Path, port: u16) -> GitDaemon {
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        // Stopped by `drop` on every path, the panic below included.
        let daemon = GitDaemon { child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("git daemon did not listen on {port}");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PACK_FETCH: &str = "name: pack-fetch
inputs:
  base: {required: true, type: string}
outputs:
  got: '{{ steps.inner.outputs.got }}'
steps:
  - id: inner
    uses: common.yaml
    with: {base: '{{ inputs.base }}'}
";

fn pack_common(version: &str) -> String {
    format!(
        "name: pack-common
inputs:
  base: {{required: true, type: string}}
outputs:
  got: '{{{{ steps.get.body.version }}}}'
steps:
  - id: get
    call: {{url: '{{{{ inputs.base }}}}/{version}'}}
"
    )
}

/// A working repository with `google/fetch.yaml` (which uses its neighbour
/// `google/common.yaml`) tagged v1 and v2, and its bare clone `<served>/<name>.git`.
struct Playbooks {
    work: PathBuf,
    bare: PathBuf,
}

impl Playbooks {
    fn create(root: &Path, served: &Path, name: &str) -> Playbooks {
        let work = root.join(format!("{name}-work"));
        std::fs::create_dir_all(work.join("google")).expect("mkdir");
        git(&["init", "-q", "-b", "main"], &work);
        std::fs::write(work.join("google/fetch.yaml"), PACK_FETCH).expect("write");
        for v in ["v1", "v2"] {
            std::fs::write(work.join("google/common.yaml"), pack_common(v)).expect("write");
            git(&["add", "-A"], &work);
            git(&["commit", "-q", "-m", v], &work);
            git(&["tag", v], &work);
        }
        let bare = served.join(format!("{name}.git"));
        git(
            &[
                "clone",
                "-q",
                "--bare",
                &work.to_string_lossy(),
                &bare.to_string_lossy(),
            ],
            root,
        );
        Playbooks { work, bare }
    }

    fn commit(&self, rev: &str) -> String {
        git(&["rev-parse", &format!("{rev}^{{commit}}")], &self.work)
    }

    fn sha256_at(&self, rev: &str, path: &str) -> String {
        use sha2::Digest as _;
        let text = git(&["show", &format!("{rev}:{path}")], &self.work);
        // `git` output is trimmed: the files end with one newline.
        hex(&sha2::Sha256::digest(format!("{text}\n").as_bytes()))
    }

    /// Moves `tag` to a new commit (a changed file) in the served repository too.
    fn move_tag(&self, tag: &str) {
        std::fs::write(self.work.join("google/common.yaml"), pack_common("moved")).expect("write");
        git(&["commit", "-q", "-am", "moved"], &self.work);
        git(&["tag", "-f", tag], &self.work);
        git(
            &[
                "push",
                "-q",
                "-f",
                &self.bare.to_string_lossy(),
                &format!("refs/tags/{tag}"),
            ],
            &self.work,
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn team_workflow(pack_url: &str, rev: &str) -> String {
    format!(
        "name: nightly
inputs:
  out_dir: {{type: string, default: out}}
steps:
  - id: fetch
    uses: {pack_url}//google/fetch.yaml@{rev}
    with: {{base: '{{{{ env.PACK_TEST_BASE }}}}'}}
  - id: save
    call: {{url: '{{{{ env.PACK_TEST_BASE }}}}/saved', save_to: '{{{{ inputs.out_dir }}}}/saved.json'}}
"
    )
}

/// `auditflow ARGS` in `cwd` with the pack cache and the call target set.
async fn af(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = auditflow_async(
        args.iter().map(ToString::to_string).collect(),
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd.to_path_buf(),
    )
    .await;
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_locks_runs_offline_updates_and_refuses_a_moved_tag() {
    let d = Dir::new();
    let served = d.path().join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let books = Playbooks::create(d.path(), &served, "playbooks");
    let port = free_port();
    let daemon = GitDaemon::start(&served, port);
    let url = format!("git://127.0.0.1:{port}/playbooks.git");
    let (api, seen) = serve(vec![
        ("/v1", vec![Reply::json(200, json!({"version": "one"}))]),
        ("/v2", vec![Reply::json(200, json!({"version": "two"}))]),
        ("/saved", vec![Reply::json(200, json!({"saved": true}))]),
    ])
    .await;
    let team = d.path().join("team");
    std::fs::create_dir_all(&team).expect("mkdir");
    std::fs::write(team.join("nightly.yaml"), team_workflow(&url, "v1")).expect("write");
    let cache = d.path().join("cache");
    let cache_s = cache.to_string_lossy().to_string();
    let env = [
        ("AUDITFLOW_PACK_CACHE", cache_s.as_str()),
        ("PACK_TEST_BASE", api.as_str()),
    ];

    // Not locked, not pinned to a commit: refused, saying how to pin it.
    let (code, _, err) = af(&["validate", "nightly.yaml"], &team, &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is not pinned") && err.contains("40-hex commit id"),
        "{err}"
    );
    assert!(err.contains("auditflow lock"), "{err}");

    // Lock: the commit of v1 and the hash of both pack files (the relative `uses` inside
    // the pack included).
    let (code, out, err) = af(&["lock", "nightly.yaml"], &team, &env).await;
    assert_eq!(code, 0, "{out}{err}");
    let v1 = books.commit("v1");
    assert!(
        out.contains(&format!("{url}@v1: {v1} (2 files) (new)")),
        "{out}"
    );
    let lock: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(team.join("auditflow.lock")).expect("lock written"),
    )
    .expect("lock is YAML");
    assert_eq!(lock["workflows"], json!(["nightly.yaml"]));
    assert_eq!(lock["packs"][0]["url"], json!(url));
    assert_eq!(lock["packs"][0]["commit"], json!(v1));
    for f in ["google/fetch.yaml", "google/common.yaml"] {
        assert_eq!(
            lock["packs"][0]["files"][f],
            json!(books.sha256_at("v1", f)),
            "{f}"
        );
    }

    // The server goes away: validate and run work from the cache alone.
    drop(daemon);
    let (code, out, err) = af(&["validate", "nightly.yaml"], &team, &env).await;
    assert_eq!(
        (code, out.trim()),
        (0, "nightly.yaml: ok (with 2 used files)"),
        "{err}"
    );
    let (code, out, err) = af(
        &[
            "run",
            "nightly.yaml",
            "--state-dir",
            "state",
            "--report-json",
            "report.json",
            "--junit",
            "junit.xml",
        ],
        &team,
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(seen.requests("/v1").len(), 1);
    let report: Value =
        serde_json::from_slice(&std::fs::read(team.join("report.json")).expect("report"))
            .expect("json");
    let files = report["workflow"]["files"].as_array().expect("files");
    let common = files
        .iter()
        .find(|f| f["origin"]["path"] == "google/common.yaml")
        .expect("the pack's relative file is recorded");
    assert_eq!(common["origin"]["url"], json!(url));
    assert_eq!(common["origin"]["commit"], json!(v1));
    assert_eq!(common["origin"]["rev"], "v1");
    assert_eq!(
        common["sha256"],
        json!(books.sha256_at("v1", "google/common.yaml"))
    );
    assert_eq!(
        common["path"],
        json!(format!("{url}//google/common.yaml@{v1}"))
    );
    let local = files
        .iter()
        .find(|f| f["path"] == "nightly.yaml")
        .expect("root recorded");
    assert!(local.get("origin").is_none(), "{local}");
    let junit = std::fs::read_to_string(team.join("junit.xml")).expect("junit");
    assert!(
        junit.contains(&format!(
            "value=\"{url}//google/fetch.yaml@{v1} sha256:{}\"",
            books.sha256_at("v1", "google/fetch.yaml")
        )),
        "{junit}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(team.join("out/manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(
        manifest["runs"][0]["workflow_files"],
        report["workflow"]["files"]
    );
    let run_id = report["run_id"].as_str().expect("run id").to_string();
    let (code, out, err) = af(
        &["runs", "show", &run_id, "--state-dir", "state"],
        &team,
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("file      {url}//google/common.yaml@{v1} sha256 ")),
        "{out}"
    );

    // Update to v2: the edited reference is not in the lock until locked again.
    let daemon = GitDaemon::start(&served, port);
    std::fs::write(team.join("nightly.yaml"), team_workflow(&url, "v2")).expect("write");
    let (code, _, err) = af(&["validate", "nightly.yaml"], &team, &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("@v2` is not in ") && err.contains("auditflow.lock"),
        "{err}"
    );
    let (code, out, err) = af(&["lock", "--update", &url], &team, &env).await;
    assert_eq!(code, 0, "{out}{err}");
    let v2 = books.commit("v2");
    assert!(
        out.contains(&format!("{url}@v2: {v2} (2 files) (new)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{url}@v1: no longer used, removed")),
        "{out}"
    );
    let (code, out, err) = af(
        &["run", "nightly.yaml", "--state-dir", "state"],
        &team,
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(seen.requests("/v2").len(), 1);

    // v2 is moved to another commit upstream: a fresh cache (a new runner) refuses it, and
    // so does `fetch`.
    books.move_tag("v2");
    let fresh = d.path().join("fresh-cache");
    let fresh_s = fresh.to_string_lossy().to_string();
    let fresh_env = [("AUDITFLOW_PACK_CACHE", fresh_s.as_str()), env[1]];
    let (code, _, err) = af(&["validate", "nightly.yaml"], &team, &fresh_env).await;
    assert_eq!(code, 2, "{err}");
    let moved = books.commit("v2");
    assert!(
        err.contains(&format!(
            "tag `v2` of {url} now names commit {moved}, but the lock pinned it to {v2}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("auditflow lock --update {url}")),
        "{err}"
    );
    let (code, _, err) = af(&["fetch", "nightly.yaml"], &team, &env).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the tag was moved"), "{err}");
    drop(daemon);

    // A cached pack file changed on disk: refused, naming the file in the pack.
    let cached = walk(&cache)
        .into_iter()
        .find(|p| p.ends_with(format!("{v2}/google/common.yaml")))
        .expect("cached tree");
    std::fs::write(&cached, pack_common("tampered")).expect("tamper");
    let (code, _, err) = af(&["validate", "nightly.yaml"], &team, &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{url}@{}:google/common.yaml has SHA-256",
            &v2[..12]
        )),
        "{err}"
    );
    assert!(err.contains("not what was locked"), "{err}");
}

/// Every file and directory under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_in_a_pack_point_at_the_pack_file_and_commit() {
    let d = Dir::new();
    let served = d.path().join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let books = Playbooks::create(d.path(), &served, "playbooks");
    let v1 = books.commit("v1");
    // Pinned to a full commit id: no lock needed; the pack is read with git+file://.
    let url = format!("git+file://{}", books.bare.display());
    let team = d.path().join("team");
    std::fs::create_dir_all(&team).expect("mkdir");
    std::fs::write(
        team.join("bad.yaml"),
        format!(
            "name: bad\nsteps:\n  - id: fetch\n    uses: {url}//google/fetch.yaml@{v1}\n    with: {{basse: x}}\n"
        ),
    )
    .expect("write");
    let cache = d.path().join("cache");
    let cache_s = cache.to_string_lossy().to_string();
    let env = [("AUDITFLOW_PACK_CACHE", cache_s.as_str())];
    let (code, _, err) = af(&["validate", "bad.yaml"], &team, &env).await;
    assert_eq!(code, 2, "{err}");
    let shown = format!("{url}@{}:google/fetch.yaml", &v1[..12]);
    assert!(
        err.contains(&format!("`{shown}` has no input `basse`")),
        "{err}"
    );
    assert!(err.contains("did you mean `base`?"), "{err}");
    assert!(
        err.contains(&format!("`{shown}` requires input `base`")),
        "{err}"
    );
}

/// A CGI bridge to `git http-backend` behind HTTP basic auth (user `auditor`).
mod http_backend {
    use std::path::PathBuf;
    use std::sync::Arc;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt as _;

    pub(super) const PASSWORD: &str = "pw-s3cret-7f3a";

    struct Backend {
        root: PathBuf,
    }

    async fn handle(
        State(b): State<Arc<Backend>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("auditor:{PASSWORD}"))
        );
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"playbooks\"")],
                "credentials needed",
            )
                .into_response();
        }
        let header = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let mut child = tokio::process::Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &b.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", method.as_str())
            .env("PATH_INFO", uri.path())
            .env("QUERY_STRING", uri.query().unwrap_or(""))
            .env("CONTENT_TYPE", header("content-type"))
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
            .env("GIT_PROTOCOL", header("git-protocol"))
            .env("REMOTE_USER", "auditor")
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("git http-backend");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&body).await.expect("cgi body");
        drop(stdin);
        let out = child.wait_with_output().await.expect("cgi output");
        cgi_response(&out.stdout)
    }

    /// A CGI answer (headers, a blank line, the body) as an HTTP response.
    fn cgi_response(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
        let Some((i, sep)) = split else {
            return (StatusCode::BAD_GATEWAY, "bad CGI output").into_response();
        };
        let head = String::from_utf8_lossy(&raw[..i]).into_owned();
        let mut resp = Response::new(axum::body::Body::from(raw[i + sep..].to_vec()));
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("status") {
                let code = v.split_whitespace().next().and_then(|c| c.parse().ok());
                *resp.status_mut() = StatusCode::from_u16(code.unwrap_or(500))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            } else if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::try_from(k.trim()),
                axum::http::HeaderValue::try_from(v),
            ) {
                resp.headers_mut().insert(name, value);
            }
        }
        resp
    }

    /// Serves the repositories under `root` on loopback; its base URL (`http://127.0.0.1:P`).
    pub(super) async fn serve(root: PathBuf) -> String {
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::new(Backend { root }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_pack_over_http_uses_gits_credentials_and_never_shows_the_password() {
    let d = Dir::new();
    let served = d.path().join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let books = Playbooks::create(d.path(), &served, "private");
    let base = http_backend::serve(served.clone()).await;
    let (api, seen) = serve(vec![
        ("/v1", vec![Reply::json(200, json!({"version": "one"}))]),
        ("/saved", vec![Reply::json(200, json!({"saved": true}))]),
    ])
    .await;
    let url = format!("git+{base}/private.git");
    let team = d.path().join("team");
    std::fs::create_dir_all(&team).expect("mkdir");
    std::fs::write(team.join("nightly.yaml"), team_workflow(&url, "v1")).expect("write");
    let cache = d.path().join("cache");
    let cache_s = cache.to_string_lossy().to_string();
    let pw = http_backend::PASSWORD;

    // Without credentials git fails at once (no prompt), and says so.
    let no_creds = [
        ("AUDITFLOW_PACK_CACHE", cache_s.as_str()),
        ("PACK_TEST_BASE", api.as_str()),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ];
    let (code, _, err) = af(&["lock", "nightly.yaml"], &team, &no_creds).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("fetching {url}: git says:")), "{err}");

    // A credential helper from git's configuration (as a CI secret would be given).
    let helper = format!("!f() {{ echo username=auditor; echo password={pw}; }}; f");
    let mut with_creds = no_creds.to_vec();
    with_creds.extend([
        ("GIT_CONFIG_COUNT", "1"),
        ("GIT_CONFIG_KEY_0", "credential.helper"),
        ("GIT_CONFIG_VALUE_0", helper.as_str()),
    ]);
    let mut outputs = Vec::new();
    for args in [
        &["lock", "nightly.yaml"][..],
        &["validate", "nightly.yaml"][..],
        &[
            "run",
            "nightly.yaml",
            "--state-dir",
            "state",
            "--report-json",
            "r.json",
        ][..],
    ] {
        let (code, out, err) = af(args, &team, &with_creds).await;
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        outputs.push(out + &err);
    }
    assert_eq!(seen.requests("/v1").len(), 1);
    assert!(outputs[0].contains(&books.commit("v1")), "{}", outputs[0]);

    // The password written into the URL itself: still never shown or stored.
    let in_url = format!(
        "git+http://auditor:{pw}@{}/private.git",
        base.trim_start_matches("http://")
    );
    std::fs::write(team.join("inline.yaml"), team_workflow(&in_url, "v1")).expect("write");
    let (code, out, err) = af(&["lock", "inline.yaml"], &team, &no_creds).await;
    assert_eq!(code, 0, "{out}{err}");
    outputs.push(out + &err);
    // A new runner's empty cache: fetched with the URL's own credentials.
    let cache2 = d.path().join("cache2");
    let cache2_s = cache2.to_string_lossy().to_string();
    let mut fresh = no_creds.to_vec();
    fresh[0] = ("AUDITFLOW_PACK_CACHE", cache2_s.as_str());
    let (code, out, err) = af(&["validate", "inline.yaml"], &team, &fresh).await;
    assert_eq!(code, 0, "{out}{err}");
    outputs.push(out + &err);
    // A wrong password in the URL: git's message names the URL without it.
    let wrong = in_url.replace(pw, "wrong-pass-9");
    std::fs::write(team.join("wrong.yaml"), team_workflow(&wrong, "v2")).expect("write");
    let (code, out, err) = af(&["lock", "wrong.yaml"], &team, &no_creds).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(!err.contains("wrong-pass-9") && err.contains(&url), "{err}");

    for o in &outputs {
        assert!(!o.contains(pw), "password shown: {o}");
    }
    for f in [team.join("auditflow.lock"), team.join("r.json")] {
        let body = std::fs::read_to_string(&f).expect("read");
        assert!(!body.contains(pw), "password in {}", f.display());
    }
    let stored = [
        walk(&cache),
        walk(&cache2),
        walk(&team.join("state")),
        walk(&team.join("out")),
    ];
    for p in stored.into_iter().flatten() {
        assert!(
            !p.to_string_lossy().contains(pw),
            "password in a path: {}",
            p.display()
        );
        if p.is_file() {
            let bytes = std::fs::read(&p).expect("read");
            assert!(
                !String::from_utf8_lossy(&bytes).contains(pw),
                "password in {}",
                p.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auditflow_path_is_searched_after_the_callers_directory() {
    let d = Dir::new();
    let org = d.write(
        "org/shared/probe.yaml",
        "name: org-probe\nsteps:\n  - id: get\n    call: {url: 'http://127.0.0.1:9/org'}\n",
    );
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let team = d.write(
        "team/w.yaml",
        "name: w\nsteps:\n  - id: probe\n    uses: shared/probe.yaml\n",
    );
    let team_dir = team.parent().expect("dir").to_path_buf();
    let (code, _, err) = af(&["validate", "w.yaml"], &team_dir, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`uses` target `shared/probe.yaml` does not exist"),
        "{err}"
    );
    let search = std::env::join_paths([
        other.clone(),
        org.parent()
            .and_then(Path::parent)
            .expect("org")
            .to_path_buf(),
    ])
    .expect("path list");
    let search = search.to_string_lossy().to_string();
    let env = [("AUDITFLOW_PATH", search.as_str())];
    let (code, out, err) = af(&["validate", "w.yaml"], &team_dir, &env).await;
    assert_eq!(
        (code, out.trim()),
        (0, "w.yaml: ok (with 1 used file)"),
        "{err}"
    );
    // A file beside the caller wins over the search path.
    d.write(
        "team/shared/probe.yaml",
        "name: local-probe\ninputs:\n  must: {required: true}\nsteps:\n  - id: get\n    call: {url: 'http://127.0.0.1:9/local'}\n",
    );
    let (code, _, err) = af(&["validate", "w.yaml"], &team_dir, &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("requires input `must`"), "{err}");
}
