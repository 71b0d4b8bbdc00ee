//! Connecting to the shared state store the way libpq does, so that what a team already set
//! for `psql` works here: a `postgres://` URL, then `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, then the password file
//! (`PGPASSFILE` or `~/.pgpass`, ignored when others can read it, as libpq does).
//!
//! TLS is rustls with certificate verification, like every other connection the tool makes.
//! Where libpq's default `sslmode=prefer` would send a password in clear text to a server
//! that declines TLS, this store refuses it: `prefer` (the default) means no TLS on loopback
//! and Unix sockets (nothing leaves the machine) and verified TLS to any other host; `require`,
//! `verify-ca` and `verify-full` all mean verified TLS (host name included); `disable` turns
//! TLS off. The password is never part of what is shown ([`Target::describe`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;

/// The store's connection settings, resolved from the URL and the environment.
#[derive(Clone)]
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    /// The schema the store's tables live in (`?schema=`, default `auditflow`).
    pub schema: String,
    /// What messages show: `postgres://user@host:port/db` (never the password).
    shown: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why the connection settings cannot be used; the text says what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("--state {shown}: {message}")]
    Invalid { shown: String, message: String },
}

/// The schema tables go in when the URL names none.
const DEFAULT_SCHEMA: &str = "auditflow";

impl Target {
    /// Settings from `url` (`postgres://` or `postgresql://`) completed from the environment.
    pub(crate) fn parse(url: &str) -> Result<Target, ConnectError> {
        Self::parse_with(url, &|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    fn parse_with(url: &str, env: Env<'_>) -> Result<Target, ConnectError> {
        let given = Given::parse(url)?;
        let server = given.server(env)?;
        let schema = given.schema()?;
        let tls = given.tls(env, &server.host)?;
        Ok(Target::build(server, schema, tls))
    }

    /// The settings for `server`, its tables in `schema`, with `tls` when it is on.
    fn build(server: Server, schema: String, tls: Option<Arc<rustls::ClientConfig>>) -> Target {
        let Server {
            host,
            port,
            user,
            dbname,
            password,
        } = server;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host)
            .port(port)
            .user(&user)
            .dbname(&dbname)
            .application_name("auditflow")
            .connect_timeout(Duration::from_secs(10))
            .keepalives_idle(Duration::from_secs(30))
            .ssl_mode(if tls.is_some() {
                SslMode::Require
            } else {
                SslMode::Disable
            })
            .options(format!("-c search_path={schema}"));
        if let Some(p) = &password {
            config.password(p.as_bytes());
        }
        let shown_host = if host.starts_with('/') {
            format!("[socket {host}]")
        } else if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Target {
            config,
            schema,
            shown: format!("postgres://{user}@{shown_host}:{port}/{dbname}"),
            tls,
        }
    }

    /// The server as messages name it: user, host, port, database, schema; no password.
    pub(crate) fn describe(&self) -> String {
        if self.schema == DEFAULT_SCHEMA {
            self.shown.clone()
        } else {
            format!("{}?schema={}", self.shown, self.schema)
        }
    }

    /// The TLS maker tokio-postgres connects with (unused when TLS is off).
    pub(crate) fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        let config = self.tls.as_deref().cloned().unwrap_or_else(plain_config);
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    }

    /// One new connection (its driver runs on the current runtime until it closes).
    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("state store connection closed: {e}");
            }
        });
        Ok(client)
    }
}

/// Reads an environment variable (the process's, or a test's).
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where the server is and who connects, resolved from the URL, then the environment.
struct Server {
    host: String,
    port: u16,
    user: String,
    dbname: String,
    password: Option<String>,
}

/// A `--state` URL as given: parsed, its parameters checked.
struct Given {
    url: url::Url,
    query: Vec<(String, String)>,
    /// The URL without its password, for messages.
    shown: String,
}

impl Given {
    fn parse(url: &str) -> Result<Given, ConnectError> {
        let shown = strip_password(url);
        let invalid = |message: String| ConnectError::Invalid {
            shown: shown.clone(),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            invalid(format!(
                "not a URL ({e}); write it as postgres://USER@HOST:PORT/DATABASE"
            ))
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(invalid(format!(
                "the scheme `{}` is not postgres:// (a state directory is given with --state-dir)",
                parsed.scheme()
            )));
        }
        let query: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        if let Some((k, _)) = query
            .iter()
            .find(|(k, _)| !KNOWN_PARAMS.contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "unknown parameter `{k}` (known: {})",
                KNOWN_PARAMS.join(", ")
            )));
        }
        Ok(Given {
            url: parsed,
            query,
            shown,
        })
    }

    fn invalid(&self, message: String) -> ConnectError {
        ConnectError::Invalid {
            shown: self.shown.clone(),
            message,
        }
    }

    fn param(&self, k: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(q, _)| q == k)
            .map(|(_, v)| v.clone())
    }

    /// Host, port, user, database and password: the URL's, else libpq's variables and
    /// password file, else libpq's defaults.
    fn server(&self, env: Env<'_>) -> Result<Server, ConnectError> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let u = &self.url;
        let host = self
            .param("host")
            .or_else(|| u.host_str().filter(|h| !h.is_empty()).map(decode))
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(default_host);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = match self
            .param("port")
            .or_else(|| u.port().map(|p| p.to_string()))
            .or_else(|| env("PGPORT"))
        {
            Some(p) => p
                .parse()
                .map_err(|_| self.invalid(format!("port `{p}` is not a number")))?,
            None => 5432,
        };
        let user = Some(decode(u.username()))
            .filter(|u| !u.is_empty())
            .or_else(|| self.param("user"))
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let dbname = Some(decode(u.path().trim_start_matches('/')))
            .filter(|d| !d.is_empty())
            .or_else(|| self.param("dbname"))
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let password = u
            .password()
            .map(decode)
            .or_else(|| env("PGPASSWORD"))
            .or_else(|| password_file(env, &host, port, &dbname, &user));
        Ok(Server {
            host,
            port,
            user,
            dbname,
            password,
        })
    }

    /// `?schema=` (default `auditflow`): a plain lower-case identifier.
    fn schema(&self) -> Result<String, ConnectError> {
        let schema = self
            .param("schema")
            .unwrap_or_else(|| DEFAULT_SCHEMA.into());
        let plain = (1..=63).contains(&schema.len())
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            Ok(schema)
        } else {
            Err(self.invalid(format!(
                "schema `{schema}` must be 1 to 63 lower-case letters, digits or `_`"
            )))
        }
    }

    /// The TLS configuration `sslmode` asks for with `host` (see the module's table).
    fn tls(
        &self,
        env: Env<'_>,
        host: &str,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ConnectError> {
        let mode = self
            .param("sslmode")
            .or_else(|| env("PGSSLMODE"))
            .unwrap_or_else(|| "prefer".into());
        let local = host.starts_with('/') || is_loopback(host);
        let wanted = match mode.as_str() {
            "disable" => false,
            "allow" | "prefer" => !local,
            "require" | "verify-ca" | "verify-full" => true,
            other => {
                return Err(self.invalid(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        };
        if !wanted {
            return Ok(None);
        }
        let root_cert = self
            .param("sslrootcert")
            .or_else(|| env("PGSSLROOTCERT"))
            .map(PathBuf::from);
        tls_config(root_cert.as_deref())
            .map(|c| Some(Arc::new(c)))
            .map_err(|m| self.invalid(m))
    }
}

/// The query parameters a `--state` URL may hold.
const KNOWN_PARAMS: &[&str] = &[
    "host",
    "port",
    "user",
    "dbname",
    "schema",
    "sslmode",
    "sslrootcert",
];

/// libpq's default host: its socket directory when it exists, else `localhost`.
fn default_host() -> String {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| Path::new(d).join(".s.PGSQL.5432").exists())
        .map(str::to_string)
        .unwrap_or_else(|| "localhost".into())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `url` without its password, for messages about a URL that could not be parsed.
pub(crate) fn strip_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        // Unparsable: cut anything between `://` and `@` (where credentials would be).
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(a)) if a > s => format!("{}://{}", &url[..s], &url[a + 1..]),
            _ => url.to_string(),
        },
    }
}

/// The password for `host:port/db` as `user` from the password file, as libpq reads it:
/// `hostname:port:database:username:password` lines, `*` matching anything, `\` escaping.
/// A file others can read is ignored (with a warning), as libpq does.
fn password_file(env: Env<'_>, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; it is ignored (chmod 0600 it, as for psql)",
                path.display()
            );
            return None;
        }
    }
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(split_pgpass)
        .find(|f| {
            let m = |pat: &str, v: &str| pat == "*" || pat == v;
            m(&f[0], host) && m(&f[1], &port) && m(&f[2], db) && m(&f[3], user)
        })
        .map(|f| f[4].clone())
}

/// The five fields of a password-file line (`:` separates, `\` escapes), if it has them.
fn split_pgpass(line: &str) -> Option<[String; 5]> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

/// Verified TLS: the system's roots plus `root_cert` (a PEM file, `sslrootcert`).
fn tls_config(root_cert: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra: Vec<CertificateDer<'static>> = match root_cert {
        Some(p) => CertificateDer::pem_file_iter(p)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| {
                format!(
                    "sslrootcert {}: cannot read PEM certificates ({e}); point PGSSLROOTCERT at the server's CA certificate",
                    p.display()
                )
            })?,
        None => Vec::new(),
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("no trusted certificates could be loaded ({e})"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A TLS configuration for the maker when TLS is off (never used to connect).
fn plain_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::empty();
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(url: &str, vars: &[(&str, &str)]) -> Result<Target, ConnectError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Target::parse_with(url, &move |k| map.get(k).cloned())
    }

    #[test]
    fn the_url_wins_over_the_environment_and_the_password_is_never_shown() {
        let t = parse(
            "postgres://ops:s3cret@db.internal:6543/audit?schema=team_a&sslmode=disable",
            &[("PGUSER", "other"), ("PGHOST", "elsewhere")],
        )
        .unwrap();
        assert_eq!(
            t.describe(),
            "postgres://ops@db.internal:6543/audit?schema=team_a"
        );
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(t.schema, "team_a");
        assert!(t.tls.is_none());
    }

    #[test]
    fn libpq_variables_complete_a_bare_url() {
        let t = parse(
            "postgres://",
            &[
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", "5433"),
                ("PGUSER", "ci"),
                ("PGDATABASE", "state"),
                ("PGPASSWORD", "pw"),
            ],
        )
        .unwrap();
        assert_eq!(t.describe(), "postgres://ci@127.0.0.1:5433/state");
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
        // Loopback with the default sslmode: no TLS.
        assert!(t.tls.is_none());
    }

    #[test]
    fn a_remote_host_gets_verified_tls_unless_disabled() {
        let t = parse("postgres://u@db.example.com/x", &[]).unwrap();
        assert!(t.tls.is_some());
        let t = parse("postgres://u@db.example.com/x", &[("PGSSLMODE", "disable")]).unwrap();
        assert!(t.tls.is_none());
        let e = parse("postgres://u@h/x?sslmode=sometimes", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslmode `sometimes`"), "{e}");
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\n127.0.0.1:5432:*:ci:p\\:ss\n",
        )
        .unwrap();
        let pass = file.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let t = parse("postgres://ci@127.0.0.1/db", &[("PGPASSFILE", &pass)]).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"p:ss"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let t = parse("postgres://ci@127.0.0.1/db", &[("PGPASSFILE", &pass)]).unwrap();
            assert_eq!(t.config.get_password(), None);
        }
    }

    #[test]
    fn bad_urls_say_what_to_write_without_the_password() {
        let e = parse("postgres://u:hunter2@h/db?bogus=1", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown parameter `bogus`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse("mysql://u:hunter2@h/db", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            !e.contains("hunter2") && e.contains("not postgres://"),
            "{e}"
        );
        let e = parse("postgres://h/db?schema=Bad-Name", &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("schema `Bad-Name`"), "{e}");
    }
}
