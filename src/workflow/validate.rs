//! Validation before anything is sent: structure, references, templates, `uses` targets.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::call_plan::PlanError;
use super::diag::{did_you_mean, Diagnostic};
use super::input_rules::InputProblem;
use super::load::{load_file, Loaded};
use super::model::{Count, InputType, RetrySpec, Step, Workflow};
use super::packs::{redact, PackSettings, Packs, Resolved};
use super::plan::{declared_kinds, plan_outputs, plan_steps, Plan, PlannedWorkflow, StepKind};
use super::step_output::{StepOutput, RESPONSE_FIELDS};
use crate::template::{Template, TemplateError, TplValue};
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
        let planned = Arc::new(plan_file(loaded, &callees)?);
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

/// The validated file `loaded` typed and its templates compiled (`callees`: the planned
/// workflow of each `uses:` target). Validation reported every problem planning finds, so a
/// failure here is an internal error, shown at the step.
fn plan_file(
    loaded: Arc<Loaded>,
    callees: &HashMap<String, Arc<PlannedWorkflow>>,
) -> Result<PlannedWorkflow, Vec<Diagnostic>> {
    let planned = plan_steps(&loaded.workflow.steps, "steps", callees)
        .and_then(|steps| Ok((steps, plan_outputs(&loaded.workflow.outputs)?)));
    match planned {
        Ok((steps, outputs)) => Ok(PlannedWorkflow {
            file: loaded,
            steps,
            outputs,
        }),
        Err(e) => {
            let at = match &e {
                PlanError::Unplanned { at } => format!("{at}.id"),
                PlanError::Template { at, .. }
                | PlanError::Method { at, .. }
                | PlanError::Target { at } => at.clone(),
            };
            Err(vec![loaded.diag_key(
                &at,
                format!(
                    "internal error: this step passed validation but could not be planned: {e}"
                ),
            )])
        }
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

/// Why a template may not read a variable: the message and, when there is one, a hint.
struct VarProblem {
    message: String,
    help: Option<String>,
}

impl VarProblem {
    fn new(message: String, help: Option<String>) -> VarProblem {
        VarProblem { message, help }
    }
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
        self.check_inputs();
        let base_scope = Scope {
            steps: vec![],
            answers: vec![],
            in_loop: false,
            response: false,
            answer: None,
            filename: false,
        };
        self.check_connections(&base_scope);
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

    /// Input names are identifiers, their rules make sense, and defaults follow them.
    fn check_inputs(&mut self) {
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

    fn step(&mut self, s: &Step, p: &str, scope: &Scope) {
        self.step_id(s, p);
        self.step_kinds(s, p);
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
            self.poll(&format!("{p}.poll"), poll, scope);
        }
        if let Some(d) = &s.download {
            self.download(&format!("{p}.download"), d, scope);
        }
        if let Some(d) = &s.decrypt {
            self.decrypt(&format!("{p}.decrypt"), d, scope);
        }
        if let Some(fe) = &s.for_each {
            self.for_each(&format!("{p}.for_each"), fe, scope);
        }
        for (k, v) in s.with.iter().flatten() {
            self.deep(&format!("{p}.with.{k}"), v, scope);
        }
        if let Some(c) = &s.set_cursor {
            self.set_cursor(&format!("{p}.set_cursor"), c, scope);
        }
        if let Some(r) = &s.repeat {
            self.repeat(&format!("{p}.repeat"), r, scope);
        }
    }

    /// The id is an identifier, unique in the file.
    fn step_id(&mut self, s: &Step, p: &str) {
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
    }

    /// The step declares exactly one action.
    fn step_kinds(&mut self, s: &Step, p: &str) {
        let kinds = declared_kinds(s);
        if kinds.len() == 1 {
            return;
        }
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
        match TplValue::compile(v) {
            Ok(compiled) => {
                for (sub, t) in compiled.templates() {
                    let at = join_path(p, &sub);
                    self.vars(&at, t.template(), scope);
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
            if let Err(VarProblem { message, help }) = self.check_var(&v.path, scope) {
                let mut d = self.diag_in_template(p, Some(t.source()), Some(v.offset), message);
                if let Some(h) = help {
                    d = d.with_help(h);
                }
                self.diags.push(d);
            }
        }
    }

    /// Whether a template may read `path` here.
    fn check_var(&self, path: &[String], scope: &Scope) -> Result<(), VarProblem> {
        let Some(root) = path.first() else {
            return Ok(());
        };
        match root.as_str() {
            "env" => Ok(()),
            "inputs" => self.check_input_var(path),
            "steps" => self.check_step_var(path, scope),
            "run" => match path.get(1) {
                Some(f) if !RUN_FIELDS.contains(&f.as_str()) => Err(VarProblem::new(
                    format!("undefined variable `{}`", path.join(".")),
                    Some(format!("`run` has: {}", RUN_FIELDS.join(", "))),
                )),
                _ => Ok(()),
            },
            "item" | "index" if scope.in_loop => Ok(()),
            "item" | "index" => Err(VarProblem::new(
                format!("`{root}` is only defined inside `for_each` steps"),
                None,
            )),
            "cursors" => self.check_cursor_var(path),
            "response" if scope.response => check_response(path, scope)
                .map_err(|(message, help)| VarProblem::new(message, help)),
            "response" => Err(VarProblem::new(
                "`response` is only defined in `poll.until`, `poll.fail_if`, `expect.condition`, `expect.message` and `call.save_to`"
                    .to_string(),
                None,
            )),
            other => Err(self.unknown_root(other, path, scope)),
        }
    }

    /// `inputs.NAME` must name an input of this file.
    fn check_input_var(&self, path: &[String]) -> Result<(), VarProblem> {
        match path.get(1) {
            None => Ok(()),
            Some(name) if self.wf().inputs.contains_key(name) => Ok(()),
            Some(name) => Err(VarProblem::new(
                format!("undefined variable `{}`: no input `{name}`", path.join(".")),
                Some(
                    did_you_mean(name, self.wf().inputs.keys().map(String::as_str))
                        .map(|s| format!("did you mean `inputs.{s}`?"))
                        .unwrap_or_else(|| "declare it under `inputs:`".into()),
                ),
            )),
        }
    }

    /// `steps.ID.OUTPUT` must name an earlier step and one of its kind's outputs.
    fn check_step_var(&self, path: &[String], scope: &Scope) -> Result<(), VarProblem> {
        let Some(id) = path.get(1) else {
            return Ok(());
        };
        let full = path.join(".");
        let Some((_, kind)) = scope.steps.iter().find(|(s, _)| s == id) else {
            return Err(self.unknown_step(id, &full, scope));
        };
        match path.get(2) {
            Some(out) if kind.output(out).is_none() => {
                let names = || kind.outputs().iter().map(|o| o.as_str());
                let help = did_you_mean(out, names())
                    .map(|s| format!("did you mean `steps.{id}.{s}`?"))
                    .unwrap_or_else(|| {
                        let all: Vec<&str> = names().collect();
                        format!("outputs of a {} step: {}", kind.as_str(), all.join(", "))
                    });
                Err(VarProblem::new(
                    format!(
                        "undefined variable `{full}`: a {} step has no output `{out}`",
                        kind.as_str()
                    ),
                    Some(help),
                ))
            }
            Some(out) if out == "body" => match scope.answers.iter().find(|(s, _)| s == id) {
                Some((_, answer)) => {
                    answers::check_path(answer, &format!("steps.{id}.body"), &path[3..])
                        .map_err(|(message, help)| VarProblem::new(message, help))
                }
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// A step id not visible here: a later step ("not run yet") or none at all.
    fn unknown_step(&self, id: &str, full: &str, scope: &Scope) -> VarProblem {
        if self.later_step(id) {
            return VarProblem::new(
                format!("`{full}` refers to step `{id}`, which has not run yet at this point"),
                Some("a step can only read the outputs of steps before it".to_string()),
            );
        }
        VarProblem::new(
            format!("undefined variable `{full}`: no step `{id}`"),
            did_you_mean(id, scope.steps.iter().map(|(s, _)| s.as_str()))
                .map(|s| format!("did you mean `steps.{s}`?")),
        )
    }

    /// A root no template may read, with the close one or the roots available here.
    fn unknown_root(&self, root: &str, path: &[String], scope: &Scope) -> VarProblem {
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
        let help = did_you_mean(root, ROOTS.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("variables start with one of: {}", avail.join(", ")));
        VarProblem::new(
            format!("undefined variable `{}`", path.join(".")),
            Some(help),
        )
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
    let mut fields: Vec<&str> = RESPONSE_FIELDS.iter().map(|f| f.as_str()).collect();
    if scope.filename {
        fields.push(StepOutput::Filename.as_str());
    }
    if !fields.contains(&field.as_str()) {
        let help = match did_you_mean(field, fields.iter().copied()) {
            Some(f) => format!("did you mean `response.{f}`?"),
            None if matches!(
                StepKind::Call.output(field),
                Some(StepOutput::Records | StepOutput::Pages | StepOutput::Items)
            ) =>
            {
                format!(
                "`response` has {}; the step's `{field}` (every page) is read by later steps as `steps.<id>.{field}`",
                fields.join(", ")
            )
            }
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

/// The string at a [`TplValue::compile`] location (`a.b[2]`) inside `v`.
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
        (InputType::Duration, Value::String(s)) => super::duration::parse_duration(s)
            .map(|_| Value::String(s.trim().to_string()))
            .map_err(|e| e.to_string()),
        (InputType::Timestamp, Value::String(s)) => super::input_rules::coerce_timestamp(s),
        // a bare number is refused like any duration without a unit
        (InputType::Duration, Value::Number(n)) => super::duration::parse_duration(&n.to_string())
            .map(|_| Value::String(n.to_string()))
            .map_err(|e| e.to_string()),
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

mod actions;
mod answers;
pub mod budget;
mod connections;
mod cursors;
#[cfg(test)]
mod tests;
