//! Validation before anything is sent: structure, references, templates, `uses` targets.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::diag::{did_you_mean, Diagnostic};
use super::input_rules::InputProblem;
use super::load::{load_file, Loaded};
use super::model::{CallSpec, ConnectionKind, Count, InputType, RetrySpec, Step, Workflow};
use super::packs::{redact, PackSettings, Packs, Resolved};
use super::plan::{declared_kinds, plan_steps, Plan, PlannedWorkflow, StepKind};
use crate::template::{compile_deep, Template, TemplateError};
use answers::Answer;

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Loads and validates a workflow file and everything it uses (packs pinned by the nearest
/// `auditflow.lock`, cached in the default pack cache).
pub fn validate_file(path: &Path) -> Result<Plan, Vec<Diagnostic>> {
    validate_with(path, &PackSettings::new(None))
}

/// [`validate_file`] with packs cached where `settings` says.
pub fn validate_with(path: &Path, settings: &PackSettings) -> Result<Plan, Vec<Diagnostic>> {
    let mut packs = Packs::for_workflow(settings.clone(), path)
        .map_err(|e| vec![Diagnostic::file(path, e.to_string())])?;
    validate_in(path, &mut packs)
}

/// [`validate_file`] with `uses:` targets found (and, for `auditflow lock`, recorded) by
/// `packs`.
pub fn validate_in(path: &Path, packs: &mut Packs) -> Result<Plan, Vec<Diagnostic>> {
    let mut walk = Walk {
        files: HashMap::new(),
        stack: Vec::new(),
        packs,
    };
    let root = Resolved {
        path: path.to_path_buf(),
        origin: None,
    };
    let workflow = walk.check_file(root)?;
    Ok(Plan {
        root: workflow.file.clone(),
        files: walk
            .files
            .into_iter()
            .map(|(path, planned)| (path, planned.file.clone()))
            .collect(),
        workflow,
    })
}

/// Validated files by canonical path.
type Checked = HashMap<PathBuf, Arc<PlannedWorkflow>>;

/// One validation's walk through the files a workflow uses.
struct Walk<'p> {
    files: Checked,
    /// The files being checked, outermost first (canonical path, shown path): a cycle is a
    /// target already on it.
    stack: Vec<(PathBuf, PathBuf)>,
    packs: &'p mut Packs,
}

/// Loads the file `r`; problems in a pack file name it `pack@commit:path`.
fn load_resolved(r: &Resolved) -> Result<Loaded, Vec<Diagnostic>> {
    let Some(origin) = &r.origin else {
        return load_file(&r.path);
    };
    let shown = PathBuf::from(origin.shown());
    match load_file(&r.path) {
        Ok(mut loaded) => {
            loaded.origin = Some(origin.clone());
            Ok(loaded)
        }
        Err(diags) => Err(diags
            .into_iter()
            .map(|mut d| {
                d.file = shown.clone();
                d
            })
            .collect()),
    }
}

impl Walk<'_> {
    fn check_file(&mut self, target: Resolved) -> Result<Arc<PlannedWorkflow>, Vec<Diagnostic>> {
        let key = canonical(&target.path);
        if let Some(done) = self.files.get(&key) {
            return Ok(done.clone());
        }
        let loaded = Arc::new(load_resolved(&target)?);
        self.stack.push((key.clone(), loaded.shown()));
        let mut v = Validator {
            file: &loaded,
            diags: Vec::new(),
            ids: HashMap::new(),
        };
        v.check_workflow();
        let mut diags = v.diags;
        let callees = self.check_uses(&loaded, &mut diags);
        self.stack.pop();
        if !diags.is_empty() {
            return Err(diags);
        }
        let steps = plan_steps(&loaded.workflow.steps, "steps", &callees).map_err(|at| {
            vec![loaded.diag_key(
                &format!("{at}.id"),
                "internal error: this step passed validation but could not be planned".into(),
            )]
        })?;
        let planned = Arc::new(PlannedWorkflow {
            file: loaded,
            steps,
        });
        self.files.insert(key, planned.clone());
        Ok(planned)
    }

    /// `uses` targets of `loaded`, depth first, with cycle detection: the planned callee
    /// of each target as written.
    fn check_uses(
        &mut self,
        loaded: &Loaded,
        diags: &mut Vec<Diagnostic>,
    ) -> HashMap<String, Arc<PlannedWorkflow>> {
        let mut uses = Vec::new();
        let mut callees = HashMap::new();
        collect_uses(&loaded.workflow.steps, "steps", &mut uses);
        for (at, step_path, target, with) in uses {
            let resolved = match self
                .packs
                .resolve(&loaded.dir(), loaded.origin.as_ref(), &target)
            {
                Ok(r) => r,
                Err(e) => {
                    let d = loaded.diag(&at, e.to_string());
                    diags.push(match e.help() {
                        Some(h) => d.with_help(h),
                        None => d,
                    });
                    continue;
                }
            };
            let canon = canonical(&resolved.path);
            if self.stack.iter().any(|(c, _)| *c == canon) {
                let shown = resolved
                    .origin
                    .as_ref()
                    .map_or_else(|| resolved.path.clone(), |o| PathBuf::from(o.shown()));
                let chain: Vec<String> = self
                    .stack
                    .iter()
                    .map(|(_, shown)| shown.display().to_string())
                    .chain(std::iter::once(shown.display().to_string()))
                    .collect();
                diags.push(
                    loaded
                        .diag(&at, format!("`uses` cycle: {}", chain.join(" -> ")))
                        .with_help("a workflow cannot run itself, directly or through others"),
                );
                continue;
            }
            match self.check_file(resolved) {
                Ok(callee) => {
                    check_with(loaded, &step_path, &callee.file, with.as_ref(), diags);
                    callees.insert(target, callee);
                }
                Err(mut inner) => {
                    diags.push(loaded.diag(
                        &at,
                        format!(
                            "`uses` target `{}` is not a valid workflow (see below)",
                            redact(&target)
                        ),
                    ));
                    diags.append(&mut inner);
                }
            }
        }
        callees
    }
}

type UsesRef = (String, String, String, Option<BTreeMap<String, Value>>);

fn collect_uses(steps: &[Step], base: &str, out: &mut Vec<UsesRef>) {
    for (i, s) in steps.iter().enumerate() {
        let p = format!("{base}[{i}]");
        if let Some(target) = &s.uses {
            out.push((
                format!("{p}.uses"),
                p.clone(),
                target.clone(),
                s.with.clone(),
            ));
        }
        if let Some(fe) = &s.for_each {
            collect_uses(&fe.steps, &format!("{p}.for_each.steps"), out);
        }
        if let Some(r) = &s.repeat {
            collect_uses(&r.steps, &format!("{p}.repeat.steps"), out);
        }
    }
}

/// `with:` keys must be inputs of the callee, and its required inputs must be given.
fn check_with(
    caller: &Loaded,
    step_path: &str,
    callee: &Loaded,
    with: Option<&BTreeMap<String, Value>>,
    diags: &mut Vec<Diagnostic>,
) {
    let empty = BTreeMap::new();
    let with = with.unwrap_or(&empty);
    let declared = &callee.workflow.inputs;
    for key in with.keys() {
        if !declared.contains_key(key) {
            let mut d = caller.diag_key(
                &format!("{step_path}.with.{key}"),
                format!("`{}` has no input `{key}`", callee.shown().display()),
            );
            if let Some(s) = did_you_mean(key, declared.keys().map(String::as_str)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            diags.push(d);
        }
    }
    for (name, spec) in declared {
        if spec.required && spec.default.is_none() && !with.contains_key(name) {
            diags.push(
                caller
                    .diag_key(
                        &format!("{step_path}.uses"),
                        format!(
                            "`{}` requires input `{name}`, which `with:` does not give",
                            callee.shown().display()
                        ),
                    )
                    .with_help(format!("add `{name}: ...` under `with:`")),
            );
        }
    }
}

/// What a template may read at one place of the file.
#[derive(Clone)]
struct Scope {
    /// Step ids visible (earlier steps, enclosing loops' earlier steps), with their kinds
    /// and, for `uses`, the callee's outputs when known.
    steps: Vec<(String, StepKind)>,
    /// The documented answer of each visible call or poll step whose operation is known.
    answers: Vec<(String, &'static Answer)>,
    in_loop: bool,
    response: bool,
    /// In a `response` scope: the call's documented answer, when its operation is known.
    answer: Option<&'static Answer>,
    /// In `save_to`: `response.filename` is defined too.
    filename: bool,
}

struct Validator<'a> {
    file: &'a Loaded,
    diags: Vec<Diagnostic>,
    /// Every step id seen in the file, with its path (ids are unique per file).
    ids: HashMap<String, String>,
}

const ROOTS: &[&str] = &[
    "inputs", "env", "steps", "run", "item", "index", "response", "cursors",
];
const RUN_FIELDS: &[&str] = &["id", "started_at", "workflow", "workflow_dir"];

impl Validator<'_> {
    fn wf(&self) -> &Workflow {
        &self.file.workflow
    }

    fn err(&mut self, path: &str, msg: String) {
        let d = self.file.diag(path, msg);
        self.diags.push(d);
    }

    fn check_workflow(&mut self) {
        if self.wf().name.trim().is_empty() {
            self.err("name", "`name` is empty".into());
        }
        let inputs: Vec<(String, super::model::InputSpec)> = self
            .wf()
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, spec) in &inputs {
            if !valid_ident(name) {
                let d = self.file.diag_key(
                    &format!("inputs.{name}"),
                    format!("input name `{name}` must be letters, digits, `_` or `-`"),
                );
                self.diags.push(d);
            }
            let mistakes = super::input_rules::rule_mistakes(name, spec);
            for (field, message) in &mistakes {
                self.err(&format!("inputs.{name}.{field}"), message.clone());
            }
            if let (Some(def), true) = (&spec.default, mistakes.is_empty()) {
                if let Err(e) = super::input_rules::check_input(spec, def) {
                    let fix = match e {
                        InputProblem::Type { .. } => "",
                        _ => "; change the default or the rule",
                    };
                    self.err(
                        &format!("inputs.{name}.default"),
                        format!("default of input `{name}`: {e}{fix}"),
                    );
                }
            }
        }
        let conns: Vec<(String, super::model::ConnectionSpec)> = self
            .wf()
            .connections
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let base_scope = Scope {
            steps: vec![],
            answers: vec![],
            in_loop: false,
            response: false,
            answer: None,
            filename: false,
        };
        for (name, c) in &conns {
            let p = format!("connections.{name}");
            if c.kind != ConnectionKind::Http && c.base_url.is_none() {
                self.err(
                    &p,
                    format!("connection `{name}` ({:?}) needs `base_url`", c.kind).to_lowercase(),
                );
            }
            if let Some(u) = &c.base_url {
                self.template(&format!("{p}.base_url"), u, &base_scope);
            }
            if let Some(f) = &c.ca_file {
                self.template(&format!("{p}.ca_file"), f, &base_scope);
            }
            if let Some(w) = &c.status_wait {
                if w.contains("{{") {
                    self.template(&format!("{p}.status_wait"), w, &base_scope);
                } else if let Err(e) = super::duration::parse_duration(w) {
                    self.err(&format!("{p}.status_wait"), format!("status_wait: {e}"));
                }
            }
            self.trust_fields(&p, c, &base_scope);
            if let Some(cr) = &c.credentials {
                let fields: Vec<(&str, &Option<String>)> = vec![
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
                let allowed: &[&str] = match c.kind {
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
                };
                for (field, value) in fields {
                    if let Some(v) = value {
                        let fp = format!("{p}.credentials.{field}");
                        if !allowed.contains(&field) {
                            let d = self
                                .file
                                .diag_key(
                                    &fp,
                                    format!(
                                        "`{field}` is not a credential of a `{}` connection",
                                        kind_name(c.kind)
                                    ),
                                )
                                .with_help(format!(
                                    "credentials of `{}`: {}",
                                    kind_name(c.kind),
                                    allowed.join(", ")
                                ));
                            self.diags.push(d);
                        }
                        self.template(&fp, v, &base_scope);
                    }
                }
            }
        }
        if let Some(d) = self.wf().defaults.clone() {
            if let Some(r) = &d.retry {
                self.retry("defaults.retry", r);
            }
        }
        self.cursors(&base_scope);
        let steps = self.wf().steps.clone();
        if steps.is_empty() {
            self.err("steps", "a workflow needs at least one step".into());
        }
        let out_scope = self.steps(&steps, "steps", base_scope);
        let outputs: Vec<(String, Value)> = self
            .wf()
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in outputs {
            self.deep(&format!("outputs.{k}"), &v, &out_scope);
        }
    }

    /// `tls_pin_sha256` and `credential_origins`: templates, and literal values parsed now.
    fn trust_fields(&mut self, p: &str, c: &super::model::ConnectionSpec, scope: &Scope) {
        if let Some(pin) = &c.tls_pin_sha256 {
            let path = format!("{p}.tls_pin_sha256");
            self.template(&path, pin, scope);
            if !pin.contains("{{") {
                if let Err(e) = super::model::parse_sha256_pins(pin) {
                    self.err(&path, e);
                }
            }
        }
        for (i, o) in c.credential_origins.iter().enumerate() {
            let path = format!("{p}.credential_origins[{i}]");
            self.template(&path, o, scope);
            if !o.contains("{{") {
                if let Err(e) = super::model::parse_origins(o) {
                    self.err(&path, e);
                }
            }
        }
    }

    /// Checks a list of steps; returns the scope after them (for outputs).
    fn steps(&mut self, steps: &[Step], base: &str, mut scope: Scope) -> Scope {
        for (i, s) in steps.iter().enumerate() {
            let p = format!("{base}[{i}]");
            self.step(s, &p, &scope);
            // A step without exactly one kind is reported in `step`; references to it are
            // checked as if it were its first kind, or a call.
            let kind = declared_kinds(s).first().copied().unwrap_or(StepKind::Call);
            scope.steps.push((s.id.clone(), kind));
            let call = s.call.as_ref().or(s.poll.as_ref().map(|p| &p.call));
            if let Some(answer) = call.and_then(|c| self.call_answer(c)) {
                scope.answers.push((s.id.clone(), answer));
            }
        }
        scope
    }

    /// The documented answer of a call, when its connection's vendor and path are known.
    fn call_answer(&self, c: &CallSpec) -> Option<&'static Answer> {
        let conn = self.wf().connections.get(c.connection.as_deref()?)?;
        answers::answer_of(conn.kind, c.method.as_deref(), c.path.as_deref()?)
    }

    /// The scope of a template over `response` (the answer of `c`).
    fn response_scope(&self, c: &CallSpec, scope: &Scope, filename: bool) -> Scope {
        Scope {
            response: true,
            answer: self.call_answer(c),
            filename,
            ..scope.clone()
        }
    }

    fn step(&mut self, s: &Step, p: &str, scope: &Scope) {
        if !valid_ident(&s.id) {
            self.err(
                &format!("{p}.id"),
                format!("step id `{}` must start with a letter or `_` and hold only letters, digits, `_` or `-`", s.id),
            );
        }
        if let Some(prev) = self.ids.insert(s.id.clone(), p.to_string()) {
            let line = self.file.spans.find(&format!("{prev}.id")).line;
            self.err(
                &format!("{p}.id"),
                format!("duplicate step id `{}` (first used on line {line})", s.id),
            );
        }
        let kinds = declared_kinds(s);
        if kinds.len() != 1 {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            let msg = if kinds.is_empty() {
                format!("step `{}` does nothing: give it one of call, poll, download, decrypt, for_each, uses, set_cursor, repeat", s.id)
            } else {
                format!(
                    "step `{}` has several kinds ({}); a step does exactly one thing",
                    s.id,
                    names.join(", ")
                )
            };
            self.diags.push(self.file.diag_key(&format!("{p}.id"), msg));
        }
        if s.with.is_some() && s.uses.is_none() {
            self.err(
                &format!("{p}.with"),
                "`with:` only goes with `uses:`".into(),
            );
        }
        if let Some(w) = &s.when {
            self.template(&format!("{p}.if"), w, scope);
        }
        if let Some(n) = &s.name {
            self.template(&format!("{p}.name"), n, scope);
        }
        if let Some(r) = &s.retry {
            self.retry(&format!("{p}.retry"), r);
        }
        if let Some(c) = &s.call {
            self.call(&format!("{p}.call"), c, scope);
        }
        if let Some(poll) = &s.poll {
            let pp = format!("{p}.poll");
            self.call(&format!("{pp}.call"), &poll.call, scope);
            let rs = self.response_scope(&poll.call, scope, false);
            self.template(&format!("{pp}.until"), &poll.until, &rs);
            if let Some(f) = &poll.fail_if {
                self.template(&format!("{pp}.fail_if"), f, &rs);
            }
            if let Some(m) = &poll.fail_message {
                self.template(&format!("{pp}.fail_message"), m, &rs);
            }
            if let Some(iv) = &poll.interval {
                for (f, v) in [("initial", &iv.initial), ("max", &iv.max)] {
                    if let Some(v) = v {
                        let fp = format!("{pp}.interval.{f}");
                        self.template(&fp, v, scope);
                        if Template::compile(v).map(|t| t.is_static()).unwrap_or(false) {
                            if let Err(e) = super::duration::parse_duration(v) {
                                self.err(&fp, e);
                            }
                        }
                    }
                }
                if iv.factor.is_some_and(|f| !(1.0..=100.0).contains(&f)) {
                    self.err(
                        &format!("{pp}.interval.factor"),
                        "`factor` must be between 1 and 100".into(),
                    );
                }
            }
        }
        if let Some(d) = &s.download {
            let dp = format!("{p}.download");
            if let Some(c) = &d.connection {
                self.connection_ref(&format!("{dp}.connection"), c);
            }
            self.deep(&format!("{dp}.urls"), &d.urls, scope);
            if let Some(n) = &d.names {
                self.deep(&format!("{dp}.names"), n, scope);
            }
            if let Some(h) = &d.sha256 {
                self.deep(&format!("{dp}.sha256"), h, scope);
            }
            if let Some(h) = &d.md5 {
                self.deep(&format!("{dp}.md5"), h, scope);
            }
            if let Some(n) = &d.size {
                self.deep(&format!("{dp}.size"), n, scope);
            }
            if let Some(x) = &d.extract {
                self.template(&format!("{dp}.extract.to"), &x.to, scope);
                if x.max_ratio == Some(0) {
                    self.err(
                        &format!("{dp}.extract.max_ratio"),
                        "`max_ratio` must be at least 1 (default 100)".into(),
                    );
                }
                if let Some(a) = &x.accept_partial {
                    self.template(&format!("{dp}.extract.accept_partial"), a, scope);
                }
            }
            self.template(&format!("{dp}.to"), &d.to, scope);
            if let Some(r) = &d.request_id {
                self.template(&format!("{dp}.request_id"), r, scope);
            }
            if let Some(c) = &d.concurrency {
                self.count(&format!("{dp}.concurrency"), c, scope);
            }
            if d.stall_timeout.is_some_and(|t| t.get().is_zero()) {
                self.err(
                    &format!("{dp}.stall_timeout"),
                    "`stall_timeout` must be longer than 0 (default 2m)".into(),
                );
            }
        }
        if let Some(d) = &s.decrypt {
            let dp = format!("{p}.decrypt");
            self.deep(&format!("{dp}.files"), &d.files, scope);
            self.template(&format!("{dp}.key"), &d.key, scope);
            if let Some(pw) = &d.passphrase {
                self.template(&format!("{dp}.passphrase"), pw, scope);
            }
            self.template(&format!("{dp}.to"), &d.to, scope);
            if let Some(c) = &d.concurrency {
                self.count(&format!("{dp}.concurrency"), c, scope);
            }
            if let Some(c) = &d.custodian {
                self.template(&format!("{dp}.custodian"), c, scope);
            }
        }
        if let Some(fe) = &s.for_each {
            let fp = format!("{p}.for_each");
            self.deep(&format!("{fp}.items"), &fe.items, scope);
            if let Some(c) = &fe.concurrency {
                self.count(&format!("{fp}.concurrency"), c, scope);
            }
            if fe.steps.is_empty() {
                self.err(
                    &format!("{fp}.steps"),
                    "`for_each` needs at least one step".into(),
                );
            }
            let inner = Scope {
                in_loop: true,
                ..scope.clone()
            };
            self.steps(&fe.steps, &format!("{fp}.steps"), inner);
        }
        if let Some(with) = &s.with {
            for (k, v) in with {
                self.deep(&format!("{p}.with.{k}"), v, scope);
            }
        }
        if let Some(c) = &s.set_cursor {
            self.set_cursor(&format!("{p}.set_cursor"), c, scope);
        }
        if let Some(r) = &s.repeat {
            self.repeat(&format!("{p}.repeat"), r, scope);
        }
    }

    fn connection_ref(&mut self, path: &str, name: &str) {
        if !self.wf().connections.contains_key(name) {
            let names: Vec<String> = self.wf().connections.keys().cloned().collect();
            let mut d = self
                .file
                .diag(path, format!("no connection named `{name}`"));
            d = match did_you_mean(name, names.iter().map(String::as_str)) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None if names.is_empty() => d.with_help("declare it under `connections:`"),
                None => d.with_help(format!("connections in this file: {}", names.join(", "))),
            };
            self.diags.push(d);
        }
    }

    fn call(&mut self, p: &str, c: &CallSpec, scope: &Scope) {
        match (&c.connection, &c.url) {
            (Some(name), None) => self.connection_ref(&format!("{p}.connection"), name),
            (None, Some(u)) => {
                self.template(&format!("{p}.url"), u, scope);
                if c.path.is_some() {
                    self.err(
                        &format!("{p}.path"),
                        "`path` goes with `connection`; with `url`, write the whole URL".into(),
                    );
                }
            }
            (Some(_), Some(_)) => self.err(p, "give either `connection` or `url`, not both".into()),
            (None, None) => self.err(
                p,
                "a call needs `connection` (a name in `connections`) or a full `url`".into(),
            ),
        }
        if let Some(m) = &c.method {
            let up = m.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].contains(&up.as_str())
            {
                self.err(&format!("{p}.method"), format!("unknown HTTP method `{m}`"));
            }
        }
        if let Some(path) = &c.path {
            self.template(&format!("{p}.path"), path, scope);
        }
        for (k, v) in &c.query {
            self.template(&format!("{p}.query.{k}"), v, scope);
        }
        for (k, v) in &c.headers {
            self.template(&format!("{p}.headers.{k}"), v, scope);
        }
        let bodies = [
            c.json.is_some(),
            c.form.is_some(),
            c.atom.is_some(),
            c.text.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if bodies > 1 {
            self.err(
                p,
                "give at most one body: `json`, `form`, `atom` or `text`".into(),
            );
        }
        if let Some(j) = &c.json {
            self.deep(&format!("{p}.json"), j, scope);
        }
        for (name, map) in [("form", &c.form), ("atom", &c.atom)] {
            if let Some(m) = map {
                for (k, v) in m {
                    self.deep(&format!("{p}.{name}.{k}"), v, scope);
                }
            }
        }
        if let Some(t) = &c.text {
            self.template(&format!("{p}.text"), t, scope);
        }
        if let Some(e) = &c.expect {
            for s in &e.status {
                if !(100..=599).contains(s) {
                    self.err(
                        &format!("{p}.expect.status"),
                        format!("`{s}` is not an HTTP status"),
                    );
                }
            }
            let rs = self.response_scope(c, scope, false);
            if let Some(cond) = &e.condition {
                self.template(&format!("{p}.expect.condition"), cond, &rs);
            }
            if let Some(msg) = &e.message {
                self.template(&format!("{p}.expect.message"), msg, &rs);
            }
        }
        if let Some(s) = &c.save_to {
            let rs = self.response_scope(c, scope, true);
            self.template(&format!("{p}.save_to"), s, &rs);
        }
        if let Some(b) = &c.budget {
            self.budget(&format!("{p}.budget"), b, scope);
        }
    }

    /// A count is at least 1; a templated one is checked like every template (its value is
    /// checked when the step starts).
    fn count(&mut self, p: &str, c: &Count, scope: &Scope) {
        match c {
            Count::Number(0) => self.err(p, "`concurrency` must be at least 1".into()),
            Count::Number(_) => {}
            Count::Template(t) if !t.contains("{{") => self.err(
                p,
                format!("`{t}` is not a whole number; write one (e.g. 4) or a template rendering to one (e.g. \"{{{{ inputs.concurrency }}}}\")"),
            ),
            Count::Template(t) => self.template(p, t, scope),
        }
    }

    fn retry(&mut self, p: &str, r: &RetrySpec) {
        if r.max_attempts == Some(0) {
            self.err(
                &format!("{p}.max_attempts"),
                "`max_attempts` counts the first attempt too: at least 1".into(),
            );
        }
        if r.factor.is_some_and(|f| !(1.0..=100.0).contains(&f)) {
            self.err(
                &format!("{p}.factor"),
                "`factor` must be between 1 and 100".into(),
            );
        }
    }

    /// Every string inside a JSON value is a template.
    fn deep(&mut self, p: &str, v: &Value, scope: &Scope) {
        match compile_deep(v) {
            Ok(list) => {
                for (sub, t) in list {
                    let at = join_path(p, &sub);
                    self.vars(&at, &t, scope);
                }
            }
            Err((sub, e)) => {
                let at = join_path(p, &sub);
                let src = value_at(v, &sub);
                self.template_error(&at, src, &e);
            }
        }
    }

    fn template(&mut self, p: &str, src: &str, scope: &Scope) {
        match Template::compile(src) {
            Ok(t) => self.vars(p, &t, scope),
            Err(e) => self.template_error(p, Some(src), &e),
        }
    }

    fn template_error(&mut self, p: &str, src: Option<&str>, e: &TemplateError) {
        let d = self.diag_in_template(p, src, e.offset(), format!("invalid template: {e}"));
        self.diags.push(d);
    }

    /// A diagnostic pointing at the `{{ ... }}` at `offset` inside the template of `p`, when
    /// the value sits on one source line and its text maps one to one (no escapes); else at
    /// the value.
    fn diag_in_template(
        &self,
        p: &str,
        src: Option<&str>,
        offset: Option<usize>,
        msg: String,
    ) -> Diagnostic {
        let fallback = || self.file.diag(p, msg.clone());
        let (Some(src), Some(offset)) = (src, offset) else {
            return fallback();
        };
        let span = self.file.spans.find(p);
        let Some(line) = self.file.source.lines().nth(span.line.saturating_sub(1)) else {
            return fallback();
        };
        let Some(before) = src.get(..offset) else {
            return fallback();
        };
        let rest: String = line.chars().skip(span.col.saturating_sub(1)).collect();
        let quoted = rest.starts_with('"') || rest.starts_with('\'');
        let content = if quoted { &rest[1..] } else { &rest[..] };
        if before.contains('\n') || !content.starts_with(before) {
            return fallback();
        }
        let expr = &src[offset..];
        let width = expr
            .find("}}")
            .map(|i| i + 2)
            .unwrap_or(expr.chars().count());
        if !content[before.len()..].starts_with(&expr[..width.min(expr.len())]) {
            return fallback();
        }
        let col = span.col + usize::from(quoted) + before.chars().count();
        let mut d = Diagnostic::at(&self.file.shown(), &self.file.source, span.line, col, msg);
        d.width = expr[..width.min(expr.len())].chars().count().max(1);
        d
    }

    /// Checks every variable path of a template against the scope.
    fn vars(&mut self, p: &str, t: &Template, scope: &Scope) {
        for v in t.variables() {
            if let Err((msg, help)) = self.check_var(&v.path, scope) {
                let mut d = self.diag_in_template(p, Some(t.source()), Some(v.offset), msg);
                if let Some(h) = help {
                    d = d.with_help(h);
                }
                self.diags.push(d);
            }
        }
    }

    fn check_var(&self, path: &[String], scope: &Scope) -> Result<(), (String, Option<String>)> {
        let Some(root) = path.first() else {
            return Ok(());
        };
        let full = path.join(".");
        match root.as_str() {
            "env" => Ok(()),
            "inputs" => match path.get(1) {
                None => Ok(()),
                Some(name) if self.wf().inputs.contains_key(name) => Ok(()),
                Some(name) => Err((
                    format!("undefined variable `{full}`: no input `{name}`"),
                    Some(
                        did_you_mean(name, self.wf().inputs.keys().map(String::as_str))
                            .map(|s| format!("did you mean `inputs.{s}`?"))
                            .unwrap_or_else(|| "declare it under `inputs:`".into()),
                    ),
                )),
            },
            "steps" => {
                let Some(id) = path.get(1) else {
                    return Ok(());
                };
                match scope.steps.iter().find(|(s, _)| s == id) {
                    Some((_, kind)) => match path.get(2) {
                        Some(out) if !kind.outputs().contains(&out.as_str()) => Err((
                            format!(
                                "undefined variable `{full}`: a {} step has no output `{out}`",
                                kind.as_str()
                            ),
                            Some(
                                did_you_mean(out, kind.outputs().iter().copied())
                                    .map(|s| format!("did you mean `steps.{id}.{s}`?"))
                                    .unwrap_or_else(|| {
                                        format!(
                                            "outputs of a {} step: {}",
                                            kind.as_str(),
                                            kind.outputs().join(", ")
                                        )
                                    }),
                            ),
                        )),
                        Some(out) if out == "body" => match scope.answers.iter().find(|(s, _)| s == id) {
                            Some((_, answer)) => {
                                answers::check_path(answer, &format!("steps.{id}.body"), &path[3..])
                            }
                            None => Ok(()),
                        },
                        _ => Ok(()),
                    },
                    None => {
                        let later = self.later_step(id);
                        let msg = if later {
                            format!("`{full}` refers to step `{id}`, which has not run yet at this point")
                        } else {
                            format!("undefined variable `{full}`: no step `{id}`")
                        };
                        let help = if later {
                            Some("a step can only read the outputs of steps before it".to_string())
                        } else {
                            did_you_mean(id, scope.steps.iter().map(|(s, _)| s.as_str()))
                                .map(|s| format!("did you mean `steps.{s}`?"))
                        };
                        Err((msg, help))
                    }
                }
            }
            "run" => match path.get(1) {
                Some(f) if !RUN_FIELDS.contains(&f.as_str()) => Err((
                    format!("undefined variable `{full}`"),
                    Some(format!("`run` has: {}", RUN_FIELDS.join(", "))),
                )),
                _ => Ok(()),
            },
            "item" | "index" if scope.in_loop => Ok(()),
            "item" | "index" => Err((
                format!("`{root}` is only defined inside `for_each` steps"),
                None,
            )),
            "cursors" => self.check_cursor_var(path),
            "response" if scope.response => check_response(path, scope),
            "response" => Err((
                "`response` is only defined in `poll.until`, `poll.fail_if`, `expect.condition`, `expect.message` and `call.save_to`"
                    .to_string(),
                None,
            )),
            other => {
                let mut avail: Vec<&str> = vec!["inputs", "env", "steps", "run"];
                if !self.wf().cursors.is_empty() {
                    avail.push("cursors");
                }
                if scope.in_loop {
                    avail.extend(["item", "index"]);
                }
                if scope.response {
                    avail.push("response");
                }
                let help = did_you_mean(other, ROOTS.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| {
                        format!("variables start with one of: {}", avail.join(", "))
                    });
                Err((format!("undefined variable `{full}`"), Some(help)))
            }
        }
    }

    /// True when `id` is a step of this file (so a reference to it is "too early", not unknown).
    fn later_step(&self, id: &str) -> bool {
        fn walk(steps: &[Step], id: &str) -> bool {
            steps.iter().any(|s| {
                s.id == id
                    || s.for_each.as_ref().is_some_and(|f| walk(&f.steps, id))
                    || s.repeat.as_ref().is_some_and(|r| walk(&r.steps, id))
            })
        }
        walk(&self.wf().steps, id)
    }
}

/// Checks a path under `response`: one of its fields, and inside `body` the documented answer.
fn check_response(path: &[String], scope: &Scope) -> Result<(), (String, Option<String>)> {
    let Some(field) = path.get(1) else {
        return Ok(());
    };
    let known = answers::RESPONSE_FIELDS.contains(&field.as_str())
        || (scope.filename && field == "filename");
    if !known {
        let mut fields = answers::RESPONSE_FIELDS.to_vec();
        if scope.filename {
            fields.push("filename");
        }
        let help = match did_you_mean(field, fields.iter().copied()) {
            Some(f) => format!("did you mean `response.{f}`?"),
            None if field == "records" || field == "pages" || field == "items" => format!(
                "`response` has {}; the step's `{field}` (every page) is read by later steps as `steps.<id>.{field}`",
                fields.join(", ")
            ),
            None => format!("`response` has {}", fields.join(", ")),
        };
        return Err((
            format!("undefined variable `{}`", path.join(".")),
            Some(help),
        ));
    }
    match (field.as_str(), scope.answer) {
        ("body", Some(answer)) => answers::check_path(answer, "response.body", &path[2..]),
        _ => Ok(()),
    }
}

/// The string at a `compile_deep` location (`a.b[2]`) inside `v`.
fn value_at<'v>(v: &'v Value, loc: &str) -> Option<&'v str> {
    let mut cur = v;
    for part in loc.split('.').filter(|p| !p.is_empty()) {
        let (key, idx) = match part.find('[') {
            Some(i) => (&part[..i], Some(&part[i..])),
            None => (part, None),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        if let Some(idx) = idx {
            for n in idx.split(['[', ']']).filter(|s| !s.is_empty()) {
                cur = cur.get(n.parse::<usize>().ok()?)?;
            }
        }
    }
    cur.as_str()
}

fn join_path(base: &str, sub: &str) -> String {
    if sub.is_empty() {
        base.to_string()
    } else if sub.starts_with('[') {
        format!("{base}{sub}")
    } else {
        format!("{base}.{sub}")
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

/// Letters, digits, `_` and `-`, not starting with a digit or `-`.
pub fn valid_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Converts an input value (from the command line as a string, or typed from YAML) to its type.
pub fn coerce_input(kind: InputType, v: &Value) -> Result<Value, String> {
    match (kind, v) {
        (InputType::String, Value::String(_)) => Ok(v.clone()),
        (InputType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (InputType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (InputType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(v.clone()),
        (InputType::Integer, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("`{s}` is not an integer")),
        (InputType::Boolean, Value::Bool(_)) => Ok(v.clone()),
        (InputType::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("`{s}` is not a boolean (true or false)")),
        },
        (InputType::List, Value::Array(_)) => Ok(v.clone()),
        (InputType::List, Value::String(s)) => {
            let t = s.trim();
            if t.starts_with('[') {
                serde_json::from_str::<Value>(t)
                    .ok()
                    .filter(Value::is_array)
                    .ok_or_else(|| format!("`{s}` is not a JSON list"))
            } else if t.is_empty() {
                Ok(Value::Array(vec![]))
            } else {
                Ok(Value::Array(
                    t.split(',')
                        .map(|x| Value::String(x.trim().to_string()))
                        .collect(),
                ))
            }
        }
        (InputType::Duration, Value::String(s)) => {
            super::duration::parse_duration(s).map(|_| Value::String(s.trim().to_string()))
        }
        (InputType::Timestamp, Value::String(s)) => super::input_rules::coerce_timestamp(s),
        // a bare number is refused like any duration without a unit
        (InputType::Duration, Value::Number(n)) => {
            super::duration::parse_duration(&n.to_string()).map(|_| Value::String(n.to_string()))
        }
        (k, other) => Err(format!(
            "expected a {}, got {}",
            k.as_str(),
            match other {
                Value::Null => "nothing".to_string(),
                Value::Bool(_) => "a boolean".to_string(),
                Value::Number(_) => "a number".to_string(),
                Value::String(_) => "a string".to_string(),
                Value::Array(_) => "a list".to_string(),
                Value::Object(_) => "a mapping".to_string(),
            }
        )),
    }
}

mod answers;
pub mod budget;
mod cursors;
#[cfg(test)]
mod tests;
