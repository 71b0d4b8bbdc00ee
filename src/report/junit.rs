//! JUnit XML (`--junit`): one test case per step, so GitLab and GitHub show failures.
use std::path::Path;
use std::sync::Mutex;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event as X};
use quick_xml::Writer;

use crate::events::{Event, Sink, StepStatus};
use crate::workflow::plan::StepKind;

#[derive(Debug, Clone)]
struct Case {
    name: String,
    kind: StepKind,
    status: StepStatus,
    seconds: f64,
    error: Option<String>,
}

/// Collects finished steps and writes a JUnit document.
#[derive(Default)]
pub(crate) struct JUnit {
    suite: Mutex<(String, Vec<Case>, f64)>,
}

impl JUnit {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The JUnit XML text.
    pub(crate) fn render(&self) -> String {
        let (suite, cases, total) = match self.suite.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let failures = cases
            .iter()
            .filter(|c| matches!(c.status, StepStatus::Failed | StepStatus::FailedContinued))
            .count();
        let skipped = cases
            .iter()
            .filter(|c| matches!(c.status, StepStatus::Skipped | StepStatus::Pending))
            .count();
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        let _ = w.write_event(X::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let tests = cases.len().to_string();
        let failures_s = failures.to_string();
        let skipped_s = skipped.to_string();
        let time = format!("{total:.3}");
        let mut root = BytesStart::new("testsuites");
        root.push_attribute(("name", "auditflow"));
        root.push_attribute(("tests", tests.as_str()));
        root.push_attribute(("failures", failures_s.as_str()));
        root.push_attribute(("time", time.as_str()));
        let _ = w.write_event(X::Start(root));
        let mut s = BytesStart::new("testsuite");
        s.push_attribute(("name", suite.as_str()));
        s.push_attribute(("tests", tests.as_str()));
        s.push_attribute(("failures", failures_s.as_str()));
        s.push_attribute(("errors", "0"));
        s.push_attribute(("skipped", skipped_s.as_str()));
        s.push_attribute(("time", time.as_str()));
        let _ = w.write_event(X::Start(s));
        for c in &cases {
            let t = format!("{:.3}", c.seconds);
            let classname = format!("{}.{}", suite, c.kind);
            let mut tc = BytesStart::new("testcase");
            tc.push_attribute(("name", c.name.as_str()));
            tc.push_attribute(("classname", classname.as_str()));
            tc.push_attribute(("time", t.as_str()));
            match (&c.status, &c.error) {
                (StepStatus::Failed | StepStatus::FailedContinued, err) => {
                    let _ = w.write_event(X::Start(tc));
                    let msg = err.clone().unwrap_or_else(|| "failed".into());
                    let first = msg.lines().next().unwrap_or("failed").to_string();
                    let mut f = BytesStart::new("failure");
                    f.push_attribute(("message", first.as_str()));
                    f.push_attribute(("type", "StepFailed"));
                    let _ = w.write_event(X::Start(f));
                    let _ = w.write_event(X::Text(BytesText::new(&msg)));
                    let _ = w.write_event(X::End(BytesEnd::new("failure")));
                    let _ = w.write_event(X::End(BytesEnd::new("testcase")));
                }
                (StepStatus::Skipped | StepStatus::Pending, err) => {
                    let _ = w.write_event(X::Start(tc));
                    let mut sk = BytesStart::new("skipped");
                    let m = err.clone().unwrap_or_else(|| "condition false".into());
                    sk.push_attribute(("message", m.as_str()));
                    let _ = w.write_event(X::Empty(sk));
                    let _ = w.write_event(X::End(BytesEnd::new("testcase")));
                }
                _ => {
                    let _ = w.write_event(X::Empty(tc));
                }
            }
        }
        let _ = w.write_event(X::End(BytesEnd::new("testsuite")));
        let _ = w.write_event(X::End(BytesEnd::new("testsuites")));
        let mut text = String::from_utf8_lossy(&w.into_inner()).into_owned();
        text.push('\n');
        text
    }

    pub(crate) fn write(&self, path: &Path) -> Result<(), crate::steps::StepError> {
        Ok(crate::durable::write_private(
            path,
            self.render().as_bytes(),
        )?)
    }
}

impl Sink for JUnit {
    fn event(&self, e: &Event) {
        let Ok(mut g) = self.suite.lock() else {
            return;
        };
        match e {
            Event::RunStarted { workflow, .. } => g.0 = workflow.clone(),
            Event::StepFinished {
                step,
                kind,
                status,
                duration,
                error,
                label,
                ..
            } => g.1.push(Case {
                // Inside loops, the item names the iteration (`verify[0: store-a].one`).
                name: label.clone().unwrap_or_else(|| step.clone()),
                kind: *kind,
                status: *status,
                seconds: duration.as_secs_f64(),
                error: error.clone(),
            }),
            Event::RunFinished { duration, .. } => g.2 = duration.as_secs_f64(),
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
            started_at: "t".into(),
            dry_run: false,
            resumed: None,
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
