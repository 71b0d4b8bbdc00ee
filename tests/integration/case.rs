//! A builder for "run this workflow with these env/inputs, expect this exit code and output"
//! (after just's `Test`): the engine and runtime-failure tests state a case in one expression.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::{auditflow_async, text, Dir};

/// One run of the real binary on a workflow written into a fresh temp dir (also the cwd).
#[must_use = "a case does nothing until `run` is awaited"]
pub(crate) struct Case {
    dir: Arc<Dir>,
    workflow: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    report: bool,
    code: i32,
    stdout_has: Vec<String>,
    stderr_has: Vec<String>,
}

/// What a run produced; its temp dir lives as long as this does.
pub(crate) struct Ran {
    dir: Arc<Dir>,
    workflow: PathBuf,
    pub stdout: String,
    pub stderr: String,
    /// The `--report-json` report, when the case asked for one with [`Case::report`].
    pub report: Option<serde_json::Value>,
}

impl Case {
    /// A workflow given inline, written to `wf.yaml`; the common indentation of its lines is
    /// removed, so the YAML can be indented like the code around it.
    pub(crate) fn yaml(text: &str) -> Case {
        let dir = Dir::new();
        let workflow = dir.write("wf.yaml", &dedent(text));
        Case::at(Arc::new(dir), workflow)
    }

    /// A workflow file that already exists (a shipped workflow or a case file).
    pub(crate) fn file(path: &Path) -> Case {
        Case::at(Arc::new(Dir::new()), path.to_path_buf())
    }

    fn at(dir: Arc<Dir>, workflow: PathBuf) -> Case {
        Case {
            dir,
            workflow,
            args: Vec::new(),
            env: Vec::new(),
            report: false,
            code: 0,
            stdout_has: Vec::new(),
            stderr_has: Vec::new(),
        }
    }

    /// Another file beside the workflow (a `uses` child, say), path relative to the temp dir.
    pub(crate) fn write(self, name: &str, yaml: &str) -> Case {
        self.dir.write(name, &dedent(yaml));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.into(), value.into()));
        self
    }

    pub(crate) fn envs(mut self, vars: &[(String, String)]) -> Case {
        self.env.extend(vars.iter().cloned());
        self
    }

    /// `--input key=value`.
    pub(crate) fn input(self, key: &str, value: &str) -> Case {
        self.arg("--input").arg(&format!("{key}={value}"))
    }

    /// Any other argument of `auditflow run`.
    pub(crate) fn arg(mut self, a: &str) -> Case {
        self.args.push(a.into());
        self
    }

    /// Asks for `--report-json` into the temp dir; [`Ran::report`] holds it parsed.
    pub(crate) fn report(mut self) -> Case {
        self.report = true;
        self
    }

    /// The expected exit code (default 0).
    pub(crate) fn code(mut self, code: i32) -> Case {
        self.code = code;
        self
    }

    pub(crate) fn stdout_has(mut self, s: &str) -> Case {
        self.stdout_has.push(s.into());
        self
    }

    pub(crate) fn stderr_has(mut self, s: &str) -> Case {
        self.stderr_has.push(s.into());
        self
    }

    /// Runs `auditflow run WORKFLOW ARGS...` and asserts the exit code and output.
    pub(crate) async fn run(self) -> Ran {
        let report_path = self.dir.path().join("report.json");
        let mut args = vec!["run".to_string(), self.workflow.display().to_string()];
        args.extend(self.args.iter().cloned());
        if self.report {
            args.extend(["--report-json".into(), report_path.display().to_string()]);
        }
        let out = auditflow_async(args, self.env.clone(), self.dir.path().to_path_buf()).await;
        let (stdout, stderr) = text(&out);
        let shown = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
        assert_eq!(out.status.code(), Some(self.code), "exit code\n{shown}");
        for s in &self.stdout_has {
            assert!(stdout.contains(s.as_str()), "stdout lacks {s:?}\n{shown}");
        }
        for s in &self.stderr_has {
            assert!(stderr.contains(s.as_str()), "stderr lacks {s:?}\n{shown}");
        }
        let report = self.report.then(|| read_json(&report_path));
        Ran {
            dir: self.dir,
            workflow: self.workflow,
            stdout,
            stderr,
            report,
        }
    }
}

impl Ran {
    /// The parsed `--report-json` report (panics when the case did not ask for one).
    pub(crate) fn report(&self) -> &serde_json::Value {
        self.report
            .as_ref()
            .expect("the case did not call .report()")
    }

    /// The temp dir the run worked in (its cwd).
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new case on the same workflow in the same temp dir (no env or arguments carried over).
    pub(crate) fn again(&self) -> Case {
        Case::at(self.dir.clone(), self.workflow.clone())
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Removes a leading newline and the indentation common to all non-blank lines.
pub(crate) fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out
}
