//! Errors a new user trips over name the URL, the variable and the likely fix, and are not
//! retried when retrying cannot help.
use crate::common::{auditflow, auditflow_async, root, serve, text, Dir, Reply};

fn workflow(d: &Dir) -> String {
    d.write(
        "wf.yaml",
        "name: errs\nconnections:\n  api: {kind: http, base_url: '{{ env.API_BASE_URL }}'}\ndefaults: {retry: {max_attempts: 5, initial_interval: 10ms}}\nsteps:\n  - id: get\n    call: {connection: api, path: /x}\n",
    )
    .display()
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_against_a_plain_http_port_is_named_and_not_retried() {
    let (url, _) = serve(vec![("/x", vec![Reply::json(200, serde_json::json!({}))])]).await;
    let d = Dir::new();
    let wf = workflow(&d);
    let https = url.replacen("http://", "https://", 1);
    let o = auditflow(&["run", &wf], &[("API_BASE_URL", https.as_str())], d.path());
    let (out, err) = text(&o);
    let all = format!("{out}{err}");
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains("did not answer in TLS"), "{all}");
    assert!(all.contains("`http://`"), "{all}");
    assert!(!all.contains("attempts"), "not retried: {all}");
}

#[test]
fn a_base_url_without_its_scheme_says_how_to_write_it() {
    let d = Dir::new();
    let wf = workflow(&d);
    let o = auditflow(
        &["run", &wf],
        &[("API_BASE_URL", "127.0.0.1:39289")],
        d.path(),
    );
    let (out, err) = text(&o);
    let all = format!("{out}{err}");
    assert_ne!(o.status.code(), Some(0), "{all}");
    assert!(all.contains("(from API_BASE_URL)"), "{all}");
    assert!(all.contains("`http://127.0.0.1:39289`"), "{all}");
}

#[test]
fn an_unset_base_url_names_its_variable() {
    let d = Dir::new();
    let wf = d
        .write(
            "m.yaml",
            "name: m\nconnections:\n  mc: {kind: mimecast, base_url: '{{ env.MIMECAST_BASE_URL }}', credentials: {access_key: '{{ env.MIMECAST_ACCESS_KEY }}', secret_key: '{{ env.MIMECAST_SECRET_KEY }}', app_id: '{{ env.MIMECAST_APP_ID }}', app_key: '{{ env.MIMECAST_APP_KEY }}'}}\nsteps:\n  - id: get\n    call: {connection: mc, path: /api/account/get-account, json: {data: []}}\n",
        )
        .display()
        .to_string();
    let o = auditflow(&["run", &wf], &[], d.path());
    let (out, err) = text(&o);
    let all = format!("{out}{err}");
    assert_ne!(o.status.code(), Some(0), "{all}");
    assert!(all.contains("MIMECAST_BASE_URL"), "{all}");
}

/// Inputs outside their rules (a Vault timestamp without its time, an export name with
/// forbidden characters, a Mimecast page size above 100) stop the run with exit 2 before
/// any request, naming the input, the value, what is allowed and the `-i` fix
/// (`tests/cases/operator/out-of-rule.err`).
#[tokio::test(flavor = "multi_thread")]
async fn inputs_outside_their_rules_stop_the_run_before_any_request() {
    let (url, script) = serve(vec![]).await;
    let vault = "workflows/google/vault-mail-export.yaml";
    let siem = "workflows/mimecast/siem-batch-events.yaml";
    let runs: [(&str, &[&str]); 4] = [
        (
            vault,
            &[
                "accounts=a@example.com",
                "export_name=q4",
                "start_time=2026-01-01",
            ],
        ),
        (
            vault,
            &["accounts=a@example.com", "export_name=q4 (legal: hold)"],
        ),
        (siem, &["page_size=500"]),
        (siem, &["page_size=0"]),
    ];
    let env = vec![
        ("GOOGLE_VAULT_BASE_URL".to_string(), url.clone()),
        ("GOOGLE_ACCESS_TOKEN".to_string(), "token".to_string()),
        ("MIMECAST_BASE_URL".to_string(), url.clone()),
        ("MIMECAST_CLIENT_ID".to_string(), "id".to_string()),
        ("MIMECAST_CLIENT_SECRET".to_string(), "secret".to_string()),
    ];
    let mut got = String::new();
    for (workflow, inputs) in runs {
        let d = Dir::new();
        let mut args = vec!["run".to_string(), workflow.to_string()];
        args.push("--state-dir".into());
        args.push(d.path().join("state").display().to_string());
        for i in inputs {
            args.extend(["-i".to_string(), i.to_string()]);
        }
        let o = auditflow_async(args, env.clone(), root().to_path_buf()).await;
        let (out, err) = text(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{workflow} {inputs:?}: {out}{err}"
        );
        got.push_str(&format!("$ {workflow} -i {}\n{err}", inputs.join(" -i ")));
    }
    assert!(script.all().is_empty(), "sent: {:?}", script.all());
    let case = root().join("tests/cases/operator/out-of-rule.yaml");
    if let Some(m) = crate::common::check_snapshot(&case, &got) {
        panic!("{m}");
    }
}

/// A connection pointed at another vendor's server says whose answer it got, the URL, the
/// variable to set and the fix, instead of showing a Mimecast code under the Google label
/// (`tests/cases/operator/wrong-server.err`; the simulator's addresses are replaced by
/// their names).
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_pointed_at_another_vendor_names_it_and_the_variable() {
    let sim = auditflow_sim::start(auditflow_sim::SimConfig::default())
        .await
        .expect("simulator");
    let runs = [
        (
            "workflows/google/list-exports.yaml",
            "domain=example.com",
            "GOOGLE_AUDIT_BASE_URL",
            sim.mimecast_url.clone(),
        ),
        (
            "workflows/mimecast/audit-events.yaml",
            "out_dir=out",
            "MIMECAST_BASE_URL",
            sim.google_url.clone(),
        ),
    ];
    let mut got = String::new();
    for (workflow, input, var, wrong) in runs {
        let d = Dir::new();
        let mut env: Vec<(String, String)> =
            sim.env().into_iter().filter(|(k, _)| k != var).collect();
        env.push((var.to_string(), wrong));
        let args = ["run", workflow, "-i", input, "--state-dir"]
            .iter()
            .map(ToString::to_string)
            .chain([d.path().join("state").display().to_string()])
            .collect();
        let o = auditflow_async(args, env, root().to_path_buf()).await;
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{workflow}: {out}{err}");
        let named = format!("{out}{err}")
            .replace(&sim.mimecast_url, "MIMECAST_SIM")
            .replace(&sim.google_url, "GOOGLE_SIM");
        let line = named
            .lines()
            .find(|l| l.contains("HTTP 404"))
            .unwrap_or_else(|| panic!("a 404 in {named}"));
        got.push_str(&format!(
            "$ {var}=(the other vendor) {workflow}\n{}\n",
            line.trim()
        ));
    }
    let case = root().join("tests/cases/operator/wrong-server.yaml");
    if let Some(m) = crate::common::check_snapshot(&case, &got) {
        panic!("{m}");
    }
}
