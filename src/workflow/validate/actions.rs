//! Validation of the steps that send or write: `call`, `poll`, `download`, `decrypt`, and the
//! `for_each` loop (kept apart from `validate.rs`, which walks the steps and checks templates).
use super::super::call_plan::Method;
use super::super::model::{CallSpec, DecryptSpec, DownloadSpec, ForEachSpec, PollSpec};
use super::answers::Answer;
use super::{Scope, Validator};

impl Validator<'_> {
    /// The documented answer of a call, when its connection's vendor and path are known.
    pub(super) fn call_answer(&self, c: &CallSpec) -> Option<&'static Answer> {
        let conn = self.wf().connections.get(c.connection.as_deref()?)?;
        super::answers::answer_of(conn.kind, c.method.as_deref(), c.path.as_deref()?)
    }

    /// The scope of a template over `response` (the answer of `c`; `filename` in `save_to`).
    fn response_scope(&self, c: &CallSpec, scope: &Scope, filename: bool) -> Scope {
        Scope {
            response: true,
            answer: self.call_answer(c),
            filename,
            ..scope.clone()
        }
    }

    /// A call: its target, method, templates, body, expectations, `save_to` and budget.
    pub(super) fn call(&mut self, p: &str, c: &CallSpec, scope: &Scope) {
        self.call_target(p, c, scope);
        if let Some(m) = c.method.as_ref().filter(|m| Method::parse(m).is_none()) {
            self.err(&format!("{p}.method"), format!("unknown HTTP method `{m}`"));
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
        self.call_body(p, c, scope);
        self.expect(p, c, scope);
        if let Some(s) = &c.save_to {
            let rs = self.response_scope(c, scope, true);
            self.template(&format!("{p}.save_to"), s, &rs);
        }
        if let Some(b) = &c.budget {
            self.budget(&format!("{p}.budget"), b, scope);
        }
    }

    /// Exactly one of `connection` (which must exist) and `url` (with no `path`).
    fn call_target(&mut self, p: &str, c: &CallSpec, scope: &Scope) {
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
    }

    /// At most one body, every string in it a template.
    fn call_body(&mut self, p: &str, c: &CallSpec, scope: &Scope) {
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
            for (k, v) in map.iter().flatten() {
                self.deep(&format!("{p}.{name}.{k}"), v, scope);
            }
        }
        if let Some(t) = &c.text {
            self.template(&format!("{p}.text"), t, scope);
        }
    }

    /// `expect`: statuses are HTTP statuses; the condition and message may read `response`.
    fn expect(&mut self, p: &str, c: &CallSpec, scope: &Scope) {
        let Some(e) = &c.expect else {
            return;
        };
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

    /// A poll: its call, its conditions over `response`, its interval.
    pub(super) fn poll(&mut self, pp: &str, poll: &PollSpec, scope: &Scope) {
        self.call(&format!("{pp}.call"), &poll.call, scope);
        let rs = self.response_scope(&poll.call, scope, false);
        self.template(&format!("{pp}.until"), &poll.until, &rs);
        if let Some(f) = &poll.fail_if {
            self.template(&format!("{pp}.fail_if"), f, &rs);
        }
        if let Some(m) = &poll.fail_message {
            self.template(&format!("{pp}.fail_message"), m, &rs);
        }
        let Some(iv) = &poll.interval else {
            return;
        };
        for (f, v) in [("initial", &iv.initial), ("max", &iv.max)] {
            if let Some(v) = v {
                let fp = format!("{pp}.interval.{f}");
                self.template(&fp, v, scope);
                if crate::template::Tpl::compile(v).is_ok_and(|t| t.is_static()) {
                    if let Err(e) = super::super::duration::parse_duration(v) {
                        self.err(&fp, e.to_string());
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

    /// A download: its connection, URLs, names, checksums, extraction and limits.
    pub(super) fn download(&mut self, dp: &str, d: &DownloadSpec, scope: &Scope) {
        if let Some(c) = &d.connection {
            self.connection_ref(&format!("{dp}.connection"), c);
        }
        self.deep(&format!("{dp}.urls"), &d.urls, scope);
        for (field, v) in [
            ("names", &d.names),
            ("sha256", &d.sha256),
            ("md5", &d.md5),
            ("size", &d.size),
        ] {
            if let Some(v) = v {
                self.deep(&format!("{dp}.{field}"), v, scope);
            }
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

    /// A decrypt: its files, key, passphrase, target, concurrency and custodian.
    pub(super) fn decrypt(&mut self, dp: &str, d: &DecryptSpec, scope: &Scope) {
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

    /// A loop: its items, concurrency and (at least one) steps, which see `item` and `index`.
    pub(super) fn for_each(&mut self, fp: &str, fe: &ForEachSpec, scope: &Scope) {
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
}
