//! Building connections: a workflow's `connections:` entry rendered into settings, once per run.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::{Connection, ConnectionSettings, Credentials, VendorError, VendorKind};
use crate::secrets::Secrets;
use crate::template::{Template, TemplateError};
use crate::workflow::model::{parse_origins, parse_sha256_pins, ConnectionKind, ConnectionSpec};
use crate::workflow::Loaded;

/// Google Email Audit API scope.
pub const GOOGLE_AUDIT_SCOPE: &str = "https://apps-apis.google.com/a/feeds/compliance/audit/";

/// Why a connection could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A field's template does not render.
    #[error("`{field}`: {source}")]
    Template {
        /// The field, e.g. `connections.mc.credentials.access_key`.
        field: String,
        /// Why rendering failed.
        source: TemplateError,
    },
    /// A required setting rendered empty (usually an unset environment variable).
    #[error("connection `{name}`: {what}{}", env_note(env_vars))]
    Missing {
        /// The connection's name.
        name: String,
        /// What is missing, e.g. "base_url" or "credentials".
        what: &'static str,
        /// The environment variables the credential templates read.
        env_vars: Vec<String>,
    },
    /// `base_url` renders to something that is not a URL.
    #[error("connection `{name}`: base_url `{url}`{} is not a URL: {source}{}", from_vars(.vars), scheme_hint(.url, .source))]
    BaseUrl {
        /// The connection's name.
        name: String,
        /// What it rendered to.
        url: String,
        /// The environment variables its template reads.
        vars: Vec<String>,
        /// The URL parser's complaint.
        source: url::ParseError,
    },
    /// A setting rendered to something unusable.
    #[error("connection `{name}`: `{field}`: {message}")]
    Invalid {
        /// The connection's name.
        name: String,
        /// The field, e.g. `tls_pin_sha256`.
        field: &'static str,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A step names a connection the file does not declare.
    #[error("no connection named `{name}`")]
    Unknown {
        /// The name the step gives.
        name: String,
    },
    /// The HTTP client or the vendor's auth state could not be set up.
    #[error(transparent)]
    Vendor(Box<VendorError>),
}

fn env_note(vars: &[String]) -> String {
    if vars.is_empty() {
        String::new()
    } else {
        format!(" (environment variables it reads: {})", vars.join(", "))
    }
}

/// The connections of one run, each built on first use and then shared.
#[derive(Default)]
pub struct ConnectionCache {
    /// Named connections by (file, name).
    named: Mutex<HashMap<(PathBuf, String), Connection>>,
    /// The one unauthenticated connection for `url:` calls.
    plain: Mutex<Option<Connection>>,
    /// Every connection reaches loopback addresses only (a rehearsal).
    loopback_only: bool,
}

impl ConnectionCache {
    /// A cache whose connections reach loopback addresses only: a rehearsal against the
    /// built-in simulator, where no request may leave the machine.
    pub fn loopback_only() -> Self {
        ConnectionCache {
            loopback_only: true,
            ..ConnectionCache::default()
        }
    }

    /// The connection `name` of `file` (rendered over `ctx`'s inputs, env and run), or the
    /// plain one when `name` is None. Credentials are registered with `secrets` before use;
    /// `warn` hears about `insecure_tls` and credentials too weak to be masked in text.
    pub fn get(
        &self,
        file: &Loaded,
        name: Option<&str>,
        ctx: &Value,
        secrets: &Secrets,
        mut warn: impl FnMut(String),
    ) -> Result<Connection, BuildError> {
        let Some(name) = name else {
            let mut plain = self
                .plain
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(c) = plain.as_ref() {
                return Ok(c.clone());
            }
            let settings = ConnectionSettings {
                loopback_only: self.loopback_only,
                ..ConnectionSettings::plain()
            };
            let c = Connection::new(settings, secrets.clone())
                .map_err(|e| BuildError::Vendor(Box::new(e)))?;
            *plain = Some(c.clone());
            return Ok(c);
        };
        let key = (file.path.clone(), name.to_string());
        if let Some(c) = self
            .named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(c.clone());
        }
        let spec = file
            .workflow
            .connections
            .get(name)
            .ok_or_else(|| BuildError::Unknown {
                name: name.to_string(),
            })?;
        // Connections see inputs, env and run, but not step outputs or loop items.
        let conn_ctx = json!({
            "inputs": ctx.get("inputs").cloned().unwrap_or(Value::Null),
            "env": ctx.get("env").cloned().unwrap_or(Value::Null),
            "run": ctx.get("run").cloned().unwrap_or(Value::Null),
        });
        for note in register_credential_env(secrets, spec, &conn_ctx) {
            warn(format!("connection `{name}`: {note}"));
        }
        let mut settings = connection_settings(name, spec, &conn_ctx)?;
        settings.loopback_only = self.loopback_only;
        register_credentials(secrets, &settings.credentials);
        if settings.insecure_tls {
            warn(format!(
                "connection `{name}`: insecure_tls is on; TLS certificates are NOT verified"
            ));
        }
        let conn = Connection::new(settings, secrets.clone())
            .map_err(|e| BuildError::Vendor(Box::new(e)))?;
        self.named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, conn.clone());
        Ok(conn)
    }
}

/// Renders an optional setting's template, trimmed; empty, blank, or reading an unset
/// environment variable counts as absent.
fn cred(field: &Option<String>, ctx: &Value, name: &str) -> Result<Option<String>, BuildError> {
    let rendered = crate::template::render_optional(field.as_deref(), ctx).map_err(|source| {
        BuildError::Template {
            field: name.to_string(),
            source,
        }
    })?;
    Ok(rendered
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// The environment variables a connection's credential templates read (for messages), the
/// settings `scopes` and `token_url` left out.
/// ` (from MIMECAST_BASE_URL)` when the base URL comes from the environment.
fn from_vars(vars: &[String]) -> String {
    if vars.is_empty() {
        String::new()
    } else {
        format!(" (from {})", vars.join(", "))
    }
}

/// For a URL written without its scheme (`127.0.0.1:8080`): the likely fix.
fn scheme_hint(url: &str, source: &url::ParseError) -> String {
    let bare = matches!(source, url::ParseError::RelativeUrlWithoutBase)
        || (!url.contains("://") && url.contains(':'));
    if bare {
        format!("; write it with its scheme, e.g. `https://{url}` (or `http://{url}` for a plain-HTTP test server)")
    } else {
        String::new()
    }
}

/// A base URL: absolute, with a scheme and a host (`127.0.0.1:8080` parses as the scheme
/// `127.0.0.1`: refused as a URL without a base).
fn parse_base_url(text: &str) -> Result<url::Url, url::ParseError> {
    let u = url::Url::parse(text)?;
    if u.cannot_be_a_base() || u.host().is_none() {
        return Err(url::ParseError::RelativeUrlWithoutBase);
    }
    Ok(u)
}

/// The environment variables a connection reads: its base URL's, then its credentials'.
fn connection_vars(spec: &ConnectionSpec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .base_url
        .iter()
        .flat_map(|u| env_vars_read(u))
        .collect();
    names.extend(env_names(spec));
    names.dedup();
    names
}

/// The environment variables the credential templates read (their values are secrets).
fn env_names(spec: &ConnectionSpec) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(c) = &spec.credentials {
        for f in [
            &c.client_id,
            &c.client_secret,
            &c.access_key,
            &c.secret_key,
            &c.app_id,
            &c.app_key,
            &c.username,
            &c.password,
            &c.bearer_token,
            &c.service_account_file,
            &c.subject,
        ]
        .into_iter()
        .flatten()
        {
            names.extend(env_vars_read(f));
        }
    }
    names.dedup();
    names
}

/// The environment variables one template reads.
fn env_vars_read(template: &str) -> Vec<String> {
    let Ok(t) = Template::compile(template) else {
        return Vec::new();
    };
    t.variables()
        .into_iter()
        .filter(|v| v.path.first().map(String::as_str) == Some("env") && v.path.len() > 1)
        .map(|v| v.path[1].clone())
        .collect()
}

/// Registers the value of every environment variable a credential template reads (the key
/// file's variable included), before anything is rendered from it: whatever form it comes in,
/// no message, report or journal record shows it.
/// Returns a warning for each that is a short plain word (masked only as a whole value).
fn register_credential_env(secrets: &Secrets, spec: &ConnectionSpec, ctx: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    for name in env_names(spec) {
        if let Some(value) = ctx.pointer(&format!("/env/{name}")).and_then(Value::as_str) {
            secrets.add(value);
            secrets.add(value.trim());
            if crate::secrets::is_plain_word(value) {
                notes.push(crate::secrets::plain_word_note(&format!("`{name}`")));
            }
        }
    }
    notes
}

/// The error of a `service_account_file` that holds the key itself (`form`), naming the
/// variables it reads and never the value.
fn key_instead_of_path(name: &str, spec: &ConnectionSpec, form: &str) -> BuildError {
    let vars = spec
        .credentials
        .as_ref()
        .and_then(|c| c.service_account_file.as_deref())
        .map(env_vars_read)
        .unwrap_or_default();
    BuildError::Invalid {
        name: name.to_string(),
        field: "credentials.service_account_file",
        message: format!(
            "this variable must name a file; it holds the key itself ({form}, not shown){}. \
             Write the key to a file only you can read and give its path (in GitLab CI, make \
             the variable of type \"File\"; in GitHub Actions, write the secret to a file in \
             a step first)",
            env_note(&vars)
        ),
    }
}

/// The path of a service-account key file, refused when the value is the key itself.
fn key_file_path(value: String) -> Result<PathBuf, CredentialsError> {
    match key_material_instead_of_path(&value) {
        Some(form) => Err(CredentialsError::KeyInsteadOfPath(form)),
        None => Ok(PathBuf::from(value)),
    }
}

/// Why a rendered `service_account_file` is the key itself rather than a file's path: JSON,
/// a PEM block or several lines where a path is expected (a CI variable of type "Variable"
/// where one of type "File" was meant).
fn key_material_instead_of_path(value: &str) -> Option<&'static str> {
    if value.trim_start().starts_with('{') {
        Some("JSON")
    } else if value.contains("-----BEGIN") {
        Some("a PEM block")
    } else if value.contains('\n') {
        Some("several lines")
    } else {
        None
    }
}

/// Registers everything in a connection's credentials block, so none of it is shown
/// anywhere (dry-run included): an application id or a user name is credential material too.
/// The key file's path is registered too (see [`register_credential_env`]); scopes and the
/// token endpoint are settings, not secrets.
fn register_credentials(secrets: &Secrets, c: &Credentials) {
    let values: Vec<&String> = match c {
        Credentials::None => vec![],
        Credentials::GoogleServiceAccount {
            subject, key_file, ..
        } => {
            secrets.add(key_file.to_string_lossy());
            vec![subject]
        }
        Credentials::Mimecast1 {
            access_key,
            secret_key,
            app_id,
            app_key,
        } => vec![access_key, secret_key, app_id, app_key],
        Credentials::Mimecast2 {
            client_id,
            client_secret,
        } => vec![client_id, client_secret],
        Credentials::Basic { username, password } => vec![username, password],
        Credentials::Bearer { token } => vec![token],
    };
    for v in values {
        secrets.add(v);
    }
}

/// Renders a connection's settings and chooses its credentials. Relative paths (`ca_file`,
/// a service account key) are relative to the working directory, like every path.
pub fn connection_settings(
    name: &str,
    spec: &ConnectionSpec,
    ctx: &Value,
) -> Result<ConnectionSettings, BuildError> {
    let missing = |what: &'static str| BuildError::Missing {
        name: name.to_string(),
        what,
        env_vars: connection_vars(spec),
    };
    let base_url = base_url(name, spec, ctx)?;
    if base_url.is_none() && spec.kind != ConnectionKind::Http {
        return Err(missing(
            "base_url is empty or its environment variable is not set",
        ));
    }
    let credentials = credentials(spec, ctx).map_err(|e| match e {
        CredentialsError::Missing(what) => missing(what),
        CredentialsError::KeyInsteadOfPath(form) => key_instead_of_path(name, spec, form),
        CredentialsError::Build(e) => e,
    })?;
    let ca_file = cred(&spec.ca_file, ctx, "ca_file")?.map(PathBuf::from);
    let invalid = |field: &'static str, message: String| BuildError::Invalid {
        name: name.to_string(),
        field,
        message,
    };
    let tls_pins = match cred(&spec.tls_pin_sha256, ctx, "tls_pin_sha256")? {
        Some(p) => parse_sha256_pins(&p).map_err(|e| invalid("tls_pin_sha256", e.to_string()))?,
        None => Vec::new(),
    };
    let credential_origins = credential_origins(name, spec, ctx)?;
    if base_url.is_none()
        && credential_origins.is_empty()
        && !matches!(credentials, Credentials::None)
    {
        return Err(missing(
            "base_url (or credential_origins): credentials are sent only to those origins",
        ));
    }
    let mut settings = ConnectionSettings::new(name, vendor_kind(spec.kind));
    settings.base_url = base_url;
    settings.credentials = credentials;
    settings.ca_file = ca_file;
    settings.tls_pins = tls_pins;
    settings.insecure_tls = spec.insecure_tls;
    settings.credential_origins = credential_origins;
    settings.base_url_vars = spec
        .base_url
        .iter()
        .flat_map(|t| env_vars_read(t))
        .collect();
    if let Some(d) = &spec.request_timeout {
        settings.request_timeout = d.get();
    }
    if let Some(text) = cred(&spec.status_wait, ctx, "status_wait")? {
        settings.status_poll_timeout = crate::workflow::duration::parse_duration(&text)
            .map_err(|e| invalid("status_wait", e.to_string()))?;
    }
    Ok(settings)
}

/// The vendor adapter of a connection kind.
fn vendor_kind(kind: ConnectionKind) -> VendorKind {
    match kind {
        ConnectionKind::Mimecast => VendorKind::Mimecast,
        ConnectionKind::Mailstore => VendorKind::MailStore,
        ConnectionKind::Google => VendorKind::Google,
        ConnectionKind::Http => VendorKind::Http,
    }
}

/// The rendered `base_url`, parsed (None when it renders empty).
fn base_url(
    name: &str,
    spec: &ConnectionSpec,
    ctx: &Value,
) -> Result<Option<url::Url>, BuildError> {
    let Some(u) = cred(&spec.base_url, ctx, "base_url")? else {
        return Ok(None);
    };
    parse_base_url(&u)
        .map(Some)
        .map_err(|source| BuildError::BaseUrl {
            name: name.to_string(),
            url: u.clone(),
            vars: spec
                .base_url
                .iter()
                .flat_map(|t| env_vars_read(t))
                .collect(),
            source,
        })
}

/// The rendered `credential_origins`, each entry a list of origins.
fn credential_origins(
    name: &str,
    spec: &ConnectionSpec,
    ctx: &Value,
) -> Result<Vec<url::Origin>, BuildError> {
    let mut origins = Vec::new();
    for (i, o) in spec.credential_origins.iter().enumerate() {
        if let Some(text) = cred(&Some(o.clone()), ctx, &format!("credential_origins[{i}]"))? {
            origins.extend(parse_origins(&text).map_err(|e| BuildError::Invalid {
                name: name.to_string(),
                field: "credential_origins",
                message: e.to_string(),
            })?);
        }
    }
    Ok(origins)
}

/// Why no credentials were chosen.
enum CredentialsError {
    /// What is missing, for [`BuildError::Missing`].
    Missing(&'static str),
    /// `service_account_file` holds key material (its form) instead of a path.
    KeyInsteadOfPath(&'static str),
    Build(BuildError),
}

impl From<BuildError> for CredentialsError {
    fn from(e: BuildError) -> Self {
        CredentialsError::Build(e)
    }
}

/// Renders the credential fields that apply to the connection's kind and chooses among them.
fn credentials(spec: &ConnectionSpec, ctx: &Value) -> Result<Credentials, CredentialsError> {
    let c = spec.credentials.clone().unwrap_or_default();
    let get = |f: &Option<String>, n: &str| cred(f, ctx, &format!("credentials.{n}"));
    let credentials = match spec.kind {
        ConnectionKind::Mimecast => mimecast_credentials(&c, &get)?,
        ConnectionKind::Mailstore => {
            match (get(&c.username, "username")?, get(&c.password, "password")?) {
                (Some(username), Some(password)) => Credentials::Basic { username, password },
                _ => {
                    return Err(CredentialsError::Missing(
                        "username and password are required",
                    ))
                }
            }
        }
        ConnectionKind::Google => google_credentials(&c, &get)?,
        ConnectionKind::Http => match (
            get(&c.bearer_token, "bearer_token")?,
            get(&c.username, "username")?,
            get(&c.password, "password")?,
        ) {
            (Some(token), _, _) => Credentials::Bearer { token },
            (None, Some(username), Some(password)) => Credentials::Basic { username, password },
            _ => Credentials::None,
        },
    };
    Ok(credentials)
}

/// Renders one credential field (`credentials.<name>`).
type RenderField<'a> = dyn Fn(&Option<String>, &str) -> Result<Option<String>, BuildError> + 'a;

/// Mimecast: API 2.0 (client id and secret) when complete, else API 1.0 (four keys).
fn mimecast_credentials(
    c: &crate::workflow::model::Credentials,
    get: &RenderField<'_>,
) -> Result<Credentials, CredentialsError> {
    let (id, secret) = (
        get(&c.client_id, "client_id")?,
        get(&c.client_secret, "client_secret")?,
    );
    let v1 = (
        get(&c.access_key, "access_key")?,
        get(&c.secret_key, "secret_key")?,
        get(&c.app_id, "app_id")?,
        get(&c.app_key, "app_key")?,
    );
    match (id, secret, v1) {
        (Some(client_id), Some(client_secret), _) => Ok(Credentials::Mimecast2 {
            client_id,
            client_secret,
        }),
        (_, _, (Some(access_key), Some(secret_key), Some(app_id), Some(app_key))) => {
            Ok(Credentials::Mimecast1 {
                access_key,
                secret_key,
                app_id,
                app_key,
            })
        }
        _ => Err(CredentialsError::Missing(
            "no complete credentials: give client_id and client_secret (API 2.0) or access_key, secret_key, app_id and app_key (API 1.0)",
        )),
    }
}

/// Google: a bearer token, else a service account key file acting for `subject` with its
/// scopes (the Email Audit scope by default).
fn google_credentials(
    c: &crate::workflow::model::Credentials,
    get: &RenderField<'_>,
) -> Result<Credentials, CredentialsError> {
    match (
        get(&c.bearer_token, "bearer_token")?,
        get(&c.service_account_file, "service_account_file")?,
        get(&c.subject, "subject")?,
    ) {
        (Some(token), _, _) => Ok(Credentials::Bearer { token }),
        (None, Some(file), Some(subject)) => Ok(Credentials::GoogleServiceAccount {
            key_file: key_file_path(file)?,
            subject,
            scopes: match get(&c.scopes, "scopes")? {
                Some(list) => list
                    .split(|ch: char| ch == ',' || ch.is_whitespace())
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => vec![GOOGLE_AUDIT_SCOPE.to_string()],
            },
            token_url: get(&c.token_url, "token_url")?,
        }),
        _ => Err(CredentialsError::Missing(
            "no credentials: give bearer_token, or service_account_file and subject",
        )),
    }
}
