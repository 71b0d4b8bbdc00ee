//! Shared helpers of the vendor adapter tests: in-process servers, settings, a recording observer.
#![allow(
    dead_code,
    reason = "shared by every vendor suite; each uses a part of it"
)]
use std::sync::Mutex;
use std::time::Duration;

use auditflow::vendors::{ConnectionSettings, Credentials, Observer, VendorKind};

/// Serves `router` on 127.0.0.1 (free port) and returns its base URL.
pub(crate) async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

pub(crate) fn settings(
    kind: VendorKind,
    base: &str,
    credentials: Credentials,
) -> ConnectionSettings {
    ConnectionSettings {
        base_url: Some(url::Url::parse(base).unwrap()),
        credentials,
        request_timeout: Duration::from_secs(10),
        status_poll_timeout: Duration::from_millis(200),
        ..ConnectionSettings::new(format!("test-{kind}"), kind)
    }
}

pub(crate) fn url(base: &str, path: &str) -> url::Url {
    url::Url::parse(&format!("{base}{path}")).unwrap()
}

/// Records what the adapter reports.
#[derive(Default)]
pub(crate) struct Recorder {
    pub lines: Mutex<Vec<String>>,
    pub progress: Mutex<Vec<f64>>,
}

impl Observer for Recorder {
    fn log(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_string());
    }
    fn progress(&self, percent: f64) {
        self.progress.lock().unwrap().push(percent);
    }
}

impl Recorder {
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
    pub(crate) fn progress(&self) -> Vec<f64> {
        self.progress.lock().unwrap().clone()
    }
}

/// Asserts that none of `secrets` appears in `text`.
pub(crate) fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "secret {s:?} leaked in: {text}");
    }
}

/// Parses an `application/x-www-form-urlencoded` body.
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

pub(crate) fn form_get<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}
