//! JUnit XML (`--junit`): one test case per step, so GitLab and GitHub show failures.
use std::path::Path;
use std::sync::Mutex;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event as X};
use quick_xml::Writer;

use super::spool::{write_report, Spool};
use crate::events::{Event, Sink, StepStatus};
use crate::workflow::plan::StepKind;

/// Collects finished steps and writes a JUnit document. Each test case is rendered when its
/// step ends and spooled to a temporary file (a loop of 100,000 items has 100,000 cases);
/// only the counts stay in memory.
pub(crate) struct JUnit {
    suite: Mutex<Suite>,
}

struct Suite {
    name: String,
    /// The run's workflow files, written as `<properties>` of the suite.
    files: Vec<crate::events::FileDigest>,
    tests: usize,
    failures: usize,
    skipped: usize,
    seconds: f64,
    /// The `<testcase>` elements so far, indented for their place in the document.
    cases: Spool,
}

impl Default for JUnit {
    fn default() -> Self {
        JUnit {
            suite: Mutex::new(Suite {
                name: String::new(),
                files: Vec::new(),
                tests: 0,
                failures: 0,
                skipped: 0,
                seconds: 0.0,
                cases: Spool::new(),
            }),
        }
    }
}

/// What an element is written inside, for the indentation of a case rendered on its own.
const PREFIX: &[u8] = b"<testsuites>\n  <testsuite>";

impl JUnit {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The JUnit XML text.
    #[cfg(test)]
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = self.render_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn render_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut g = match self.suite.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut w = Writer::new_with_indent(out, b' ', 2);
        w.write_event(X::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let tests = g.tests.to_string();
        let failures = g.failures.to_string();
        let skipped = g.skipped.to_string();
        let time = format!("{:.3}", g.seconds);
        let mut root = BytesStart::new("testsuites");
        root.push_attribute(("name", "auditflow"));
        root.push_attribute(("tests", tests.as_str()));
        root.push_attribute(("failures", failures.as_str()));
        root.push_attribute(("time", time.as_str()));
        w.write_event(X::Start(root))?;
        let mut s = BytesStart::new("testsuite");
        s.push_attribute(("name", g.name.as_str()));
        s.push_attribute(("tests", tests.as_str()));
        s.push_attribute(("failures", failures.as_str()));
        s.push_attribute(("errors", "0"));
        s.push_attribute(("skipped", skipped.as_str()));
        s.push_attribute(("time", time.as_str()));
        w.write_event(X::Start(s))?;
        write_properties(&mut w, &g.files)?;
        g.cases.copy_to(w.get_mut())?;
        w.write_event(X::End(BytesEnd::new("testsuite")))?;
        w.write_event(X::End(BytesEnd::new("testsuites")))?;
        w.into_inner().write_all(b"\n")
    }

    pub(crate) fn write(&self, path: &Path) -> Result<(), crate::steps::StepError> {
        Ok(write_report(path, |out| self.render_to(out))?)
    }
}

/// `<properties>` naming each workflow file of the run: `workflow_file` = its path (for a
/// pack file `url//path@commit`) and its SHA-256.
fn write_properties<W: std::io::Write>(
    w: &mut Writer<W>,
    files: &[crate::events::FileDigest],
) -> std::io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    w.write_event(X::Start(BytesStart::new("properties")))?;
    for f in files {
        let value = format!("{} sha256:{}", f.path, f.sha256);
        let mut p = BytesStart::new("property");
        p.push_attribute(("name", "workflow_file"));
        p.push_attribute(("value", value.as_str()));
        w.write_event(X::Empty(p))?;
    }
    w.write_event(X::End(BytesEnd::new("properties")))
}

/// One `<testcase>` element, indented as inside `<testsuites><testsuite>`.
fn case_xml(
    suite: &str,
    (step, kind): (&str, StepKind),
    status: StepStatus,
    seconds: f64,
    error: Option<&str>,
) -> Vec<u8> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let _ = w.write_event(X::Start(BytesStart::new("testsuites")));
    let _ = w.write_event(X::Start(BytesStart::new("testsuite")));
    let t = format!("{seconds:.3}");
    let classname = format!("{suite}.{kind}");
    let mut tc = BytesStart::new("testcase");
    tc.push_attribute(("name", step));
    tc.push_attribute(("classname", classname.as_str()));
    tc.push_attribute(("time", t.as_str()));
    match status {
        StepStatus::Failed | StepStatus::FailedContinued => {
            let _ = w.write_event(X::Start(tc));
            let msg = error.unwrap_or("failed");
            let first = msg.lines().next().unwrap_or("failed");
            let mut f = BytesStart::new("failure");
            f.push_attribute(("message", first));
            f.push_attribute(("type", "StepFailed"));
            let _ = w.write_event(X::Start(f));
            let _ = w.write_event(X::Text(BytesText::new(msg)));
            let _ = w.write_event(X::End(BytesEnd::new("failure")));
            let _ = w.write_event(X::End(BytesEnd::new("testcase")));
        }
        StepStatus::Skipped | StepStatus::Pending => {
            let _ = w.write_event(X::Start(tc));
            let mut sk = BytesStart::new("skipped");
            sk.push_attribute(("message", error.unwrap_or("condition false")));
            let _ = w.write_event(X::Empty(sk));
            let _ = w.write_event(X::End(BytesEnd::new("testcase")));
        }
        _ => {
            let _ = w.write_event(X::Empty(tc));
        }
    }
    let mut bytes = w.into_inner();
    bytes.drain(..PREFIX.len().min(bytes.len()));
    bytes
}

impl Sink for JUnit {
    fn event(&self, e: &Event) {
        let Ok(mut g) = self.suite.lock() else {
            return;
        };
        match e {
            Event::RunStarted {
                workflow, files, ..
            } => {
                g.name = workflow.clone();
                g.files = files.clone();
            }
            Event::StepFinished {
                step,
                kind,
                status,
                duration,
                error,
                label,
                ..
            } => {
                let xml = case_xml(
                    &g.name,
                    // Inside loops, the item names the iteration (`verify[0: store-a].one`).
                    (label.as_deref().unwrap_or(step), *kind),
                    *status,
                    duration.as_secs_f64(),
                    error.as_deref(),
                );
                g.cases.push(&xml);
                g.tests += 1;
                match status {
                    StepStatus::Failed | StepStatus::FailedContinued => g.failures += 1,
                    StepStatus::Skipped | StepStatus::Pending => g.skipped += 1,
                    _ => {}
                }
            }
            Event::RunFinished { duration, .. } => g.seconds = duration.as_secs_f64(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_and_skips_are_reported() {
        let j = JUnit::new();
        j.event(&Event::RunStarted {
            run_id: "r".into(),
            workflow: "wf <&>".into(),
            file: "f".into(),
            inputs: serde_json::Value::Null,
            started_at: chrono::Utc::now(),
            dry_run: false,
            resumed: None,
            files: vec![],
        });
        for (step, status, error) in [
            ("a", StepStatus::Succeeded, None),
            (
                "b",
                StepStatus::Failed,
                Some("HTTP 401: \"denied\" <x>".to_string()),
            ),
            ("c", StepStatus::Skipped, None),
        ] {
            j.event(&Event::StepFinished {
                step: step.into(),
                name: step.into(),
                kind: StepKind::Call,
                status,
                attempts: 1,
                duration: Duration::from_millis(1500),
                error,
                outputs: serde_json::Value::Null,
                label: (step == "c").then(|| "loop[0: ann@example.com].c".to_string()),
            });
        }
        let x = j.render();
        assert!(x.contains(r#"<testsuite name="wf &lt;&amp;&gt;" tests="3" failures="1" errors="0" skipped="1""#), "{x}");
        assert!(
            x.contains(r#"<testcase name="a" classname="wf &lt;&amp;&gt;.call" time="1.500"/>"#),
            "{x}"
        );
        assert!(
            x.contains(r#"<testcase name="loop[0: ann@example.com].c" "#),
            "{x}"
        );
        assert!(
            x.contains(
                r#"<failure message="HTTP 401: &quot;denied&quot; &lt;x&gt;" type="StepFailed">"#
            ),
            "{x}"
        );
        // well-formed: parses back
        let mut r = quick_xml::Reader::from_str(&x);
        loop {
            match r.read_event() {
                Ok(X::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("not well-formed: {e}\n{x}"),
            }
        }
    }
}
