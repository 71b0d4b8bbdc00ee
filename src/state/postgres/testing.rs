//! Test support: a store in a schema of its own on the test server, dropped afterwards.
//!
//! The server is `AUDITFLOW_TEST_POSTGRES` (a URL), else the development machines'
//! `postgres://postgres@127.0.0.1:5432/test`. Without a reachable server the caller skips
//! with one line saying what to set, unless the variable is set: then it fails.
use std::time::Duration;

use super::PgStore;

/// A store in a fresh schema.
pub(crate) struct TestPg {
    pub store: PgStore,
    pub url: String,
    admin: String,
    schema: String,
}

fn server() -> (String, bool) {
    match std::env::var("AUDITFLOW_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => (url, true),
        _ => ("postgres://postgres@127.0.0.1:5432/test".into(), false),
    }
}

async fn admin(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A store in a new schema of the test server, or None (said) when there is no server.
pub(crate) async fn schema() -> Option<TestPg> {
    let (url, required) = server();
    if let Err(e) = admin(&url).await {
        assert!(
            !required,
            "AUDITFLOW_TEST_POSTGRES={url} is set but the server cannot be used: {e}"
        );
        eprintln!(
            "SKIPPED: no PostgreSQL server at {url} ({e}); set AUDITFLOW_TEST_POSTGRES to a server URL to run the shared-store tests"
        );
        return None;
    }
    let schema = format!("af_unit_{}", uuid::Uuid::new_v4().simple());
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}schema={schema}");
    let store = PgStore::open(&store_url)
        .await
        .expect("open the test store");
    Some(TestPg {
        store,
        url: store_url,
        admin: url,
        schema,
    })
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let (url, schema) = (self.admin.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = admin(&url).await {
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}
