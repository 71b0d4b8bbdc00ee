//! Validation of cursors: the `cursors:` map, `{{ cursors.NAME }}` reads, `set_cursor` and
//! `repeat` steps (kept apart from `validate.rs`, which holds the other step kinds).
use serde_json::Value;

use super::super::diag::did_you_mean;
use super::super::model::{RepeatSpec, SetCursorSpec};
use super::{valid_ident, Scope, Validator};

impl Validator<'_> {
    /// Cursor names are identifiers; `initial` and `key` read only inputs, env and run.
    pub(super) fn cursors(&mut self, base: &Scope) {
        let cursors: Vec<(String, super::super::model::CursorSpec)> = self
            .wf()
            .cursors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, c) in &cursors {
            let p = format!("cursors.{name}");
            if !valid_ident(name) {
                let d = self.file.diag_key(
                    &p,
                    format!("cursor name `{name}` must start with a letter or `_` and hold only letters, digits, `_` or `-`"),
                );
                self.diags.push(d);
            }
            if let Some(v) = &c.initial {
                self.deep(&format!("{p}.initial"), v, base);
                self.no_cursor_reads(&format!("{p}.initial"), v);
            }
            if let Some(k) = &c.key {
                self.template(&format!("{p}.key"), k, base);
                self.no_cursor_reads(&format!("{p}.key"), &Value::String(k.clone()));
            }
        }
    }

    /// `initial` and `key` are rendered before any cursor is read.
    fn no_cursor_reads(&mut self, p: &str, v: &Value) {
        let Ok(list) = crate::template::compile_deep(v) else {
            return;
        };
        let reads = list.iter().any(|(_, t)| {
            t.variables()
                .iter()
                .any(|var| var.path.first().is_some_and(|r| r == "cursors"))
        });
        if reads {
            self.err(
                p,
                "a cursor's `initial` and `key` cannot read `cursors` (they decide which value is read)"
                    .into(),
            );
        }
    }

    /// `cursors.NAME` must name a cursor of this file.
    pub(super) fn check_cursor_var(&self, path: &[String]) -> Result<(), (String, Option<String>)> {
        let full = path.join(".");
        match path.get(1) {
            None => Ok(()),
            Some(name) if self.wf().cursors.contains_key(name) => Ok(()),
            Some(name) => Err((
                format!("undefined variable `{full}`: no cursor `{name}`"),
                Some(self.cursor_help(name)),
            )),
        }
    }

    fn cursor_help(&self, name: &str) -> String {
        let names = self.wf().cursors.keys().map(String::as_str);
        match did_you_mean(name, names) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "declare it under `cursors:` at the top of the file".into(),
        }
    }

    pub(super) fn set_cursor(&mut self, p: &str, c: &SetCursorSpec, scope: &Scope) {
        if !self.wf().cursors.contains_key(&c.name) {
            let d = self
                .file
                .diag(
                    &format!("{p}.name"),
                    format!("no cursor named `{}`", c.name),
                )
                .with_help(self.cursor_help(&c.name));
            self.diags.push(d);
        }
        self.deep(&format!("{p}.value"), &c.value, scope);
    }

    pub(super) fn repeat(&mut self, p: &str, r: &RepeatSpec, scope: &Scope) {
        if r.max_iterations == 0 {
            self.err(
                &format!("{p}.max_iterations"),
                "`max_iterations` must be at least 1".into(),
            );
        }
        if r.steps.is_empty() {
            self.err(
                &format!("{p}.steps"),
                "`repeat` needs at least one step".into(),
            );
        }
        let after = self.steps(&r.steps, &format!("{p}.steps"), scope.clone());
        self.template(&format!("{p}.until"), &r.until, &after);
    }
}
