//! Validation of `connections:`: base URLs and other templates, `status_wait`, the trust
//! fields, and which credentials each connection kind takes (kept apart from `validate.rs`,
//! which holds the steps).
use super::super::model::{ConnectionKind, ConnectionSpec, Credentials};
use super::{Scope, Validator};

impl Validator<'_> {
    /// Every connection of the file (templates read only inputs, env and run).
    pub(super) fn check_connections(&mut self, scope: &Scope) {
        let conns: Vec<(String, ConnectionSpec)> = self
            .wf()
            .connections
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, c) in &conns {
            self.check_connection(name, c, scope);
        }
    }

    fn check_connection(&mut self, name: &str, c: &ConnectionSpec, scope: &Scope) {
        let p = format!("connections.{name}");
        if c.kind != ConnectionKind::Http && c.base_url.is_none() {
            self.err(
                &p,
                format!("connection `{name}` ({:?}) needs `base_url`", c.kind).to_lowercase(),
            );
        }
        if let Some(u) = &c.base_url {
            self.template(&format!("{p}.base_url"), u, scope);
        }
        if let Some(f) = &c.ca_file {
            self.template(&format!("{p}.ca_file"), f, scope);
        }
        if let Some(w) = &c.status_wait {
            if w.contains("{{") {
                self.template(&format!("{p}.status_wait"), w, scope);
            } else if let Err(e) = super::super::duration::parse_duration(w) {
                self.err(&format!("{p}.status_wait"), format!("status_wait: {e}"));
            }
        }
        self.trust_fields(&p, c, scope);
        if let Some(cr) = &c.credentials {
            self.check_credentials(&p, c.kind, cr, scope);
        }
    }

    /// `tls_pin_sha256` and `credential_origins`: templates, and literal values parsed now.
    fn trust_fields(&mut self, p: &str, c: &ConnectionSpec, scope: &Scope) {
        if let Some(pin) = &c.tls_pin_sha256 {
            let path = format!("{p}.tls_pin_sha256");
            self.template(&path, pin, scope);
            if !pin.contains("{{") {
                if let Err(e) = super::super::model::parse_sha256_pins(pin) {
                    self.err(&path, e.to_string());
                }
            }
        }
        for (i, o) in c.credential_origins.iter().enumerate() {
            let path = format!("{p}.credential_origins[{i}]");
            self.template(&path, o, scope);
            if !o.contains("{{") {
                if let Err(e) = super::super::model::parse_origins(o) {
                    self.err(&path, e.to_string());
                }
            }
        }
    }

    /// Each credential is a template, and one the connection's kind takes.
    fn check_credentials(
        &mut self,
        p: &str,
        kind: ConnectionKind,
        cr: &Credentials,
        scope: &Scope,
    ) {
        let fields: [(&str, &Option<String>); 13] = [
            ("access_key", &cr.access_key),
            ("secret_key", &cr.secret_key),
            ("app_id", &cr.app_id),
            ("app_key", &cr.app_key),
            ("client_id", &cr.client_id),
            ("client_secret", &cr.client_secret),
            ("username", &cr.username),
            ("password", &cr.password),
            ("bearer_token", &cr.bearer_token),
            ("service_account_file", &cr.service_account_file),
            ("subject", &cr.subject),
            ("token_url", &cr.token_url),
            ("scopes", &cr.scopes),
        ];
        let allowed = allowed_credentials(kind);
        for (field, value) in fields {
            let Some(v) = value else {
                continue;
            };
            let fp = format!("{p}.credentials.{field}");
            if !allowed.contains(&field) {
                let d = self
                    .file
                    .diag_key(
                        &fp,
                        format!(
                            "`{field}` is not a credential of a `{}` connection",
                            kind_name(kind)
                        ),
                    )
                    .with_help(format!(
                        "credentials of `{}`: {}",
                        kind_name(kind),
                        allowed.join(", ")
                    ));
                self.diags.push(d);
            }
            self.template(&fp, v, scope);
        }
    }
}

/// The credential fields a connection kind takes.
fn allowed_credentials(kind: ConnectionKind) -> &'static [&'static str] {
    match kind {
        ConnectionKind::Mimecast => &[
            "access_key",
            "secret_key",
            "app_id",
            "app_key",
            "client_id",
            "client_secret",
        ],
        ConnectionKind::Mailstore => &["username", "password"],
        ConnectionKind::Google => &[
            "bearer_token",
            "service_account_file",
            "subject",
            "token_url",
            "scopes",
        ],
        ConnectionKind::Http => &["username", "password", "bearer_token"],
    }
}

fn kind_name(k: ConnectionKind) -> &'static str {
    match k {
        ConnectionKind::Mimecast => "mimecast",
        ConnectionKind::Mailstore => "mailstore",
        ConnectionKind::Google => "google",
        ConnectionKind::Http => "http",
    }
}
