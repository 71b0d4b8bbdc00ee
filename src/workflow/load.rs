//! Reading a workflow file: YAML into the model, with a map from model paths to source spans.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::diag::{did_you_mean, Diagnostic};
use super::model::Workflow;

/// Where a node is in the source (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

/// Source positions of every node, keyed by path (`steps[2].call.path`). For a mapping entry
/// the path maps to its value; `path#key` maps to the key itself.
#[derive(Debug, Clone, Default)]
pub struct SpanMap {
    spans: HashMap<String, Span>,
}

impl SpanMap {
    /// The span of the value at `path`, or of its closest ancestor that has one.
    pub fn find(&self, path: &str) -> Span {
        let mut p = path.to_string();
        loop {
            if let Some(s) = self.spans.get(&p) {
                return *s;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.spans.get("").copied().unwrap_or_default(),
            }
        }
    }

    /// The span of the key of the mapping entry at `path` (falls back to the value).
    pub fn key(&self, path: &str) -> Span {
        self.spans
            .get(&format!("{path}#key"))
            .copied()
            .unwrap_or_else(|| self.find(path))
    }
}

/// A loaded workflow with what is needed to point at its source.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub source: String,
    pub workflow: Workflow,
    pub spans: SpanMap,
}

impl Loaded {
    /// A diagnostic at the value of `path`.
    pub fn diag(&self, path: &str, message: String) -> Diagnostic {
        let s = self.spans.find(path);
        Diagnostic::at(&self.path, &self.source, s.line, s.col, message)
    }

    /// A diagnostic at the key of `path`.
    pub fn diag_key(&self, path: &str, message: String) -> Diagnostic {
        let s = self.spans.key(path);
        Diagnostic::at(&self.path, &self.source, s.line, s.col, message)
    }

    /// The directory of the file (for relative `uses:` and `file` paths).
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Reads and parses a workflow file.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::file(
            path,
            format!("cannot read the workflow file: {e}"),
        )]
    })?;
    load_str(path, source)
}

/// Parses workflow text; `path` is used in messages and for relative paths.
pub fn load_str(path: &Path, source: String) -> Result<Loaded, Vec<Diagnostic>> {
    let spans = build_spans(&source).map_err(|(span, msg)| {
        vec![Diagnostic::at(
            path,
            &source,
            span.line,
            span.col,
            format!("YAML syntax error: {msg}"),
        )]
    })?;
    let workflow: Workflow =
        serde_yaml_ng::from_str(&source).map_err(|e| vec![serde_error(path, &source, &e)])?;
    Ok(Loaded {
        path: path.to_path_buf(),
        source,
        workflow,
        spans,
    })
}

/// Turns a serde_yaml error into a diagnostic with a "did you mean" for unknown fields.
fn serde_error(path: &Path, source: &str, e: &serde_yaml_ng::Error) -> Diagnostic {
    let raw = e.to_string();
    // serde_yaml appends " at line L column C"; the diagnostic shows the position itself.
    let message = match raw.rfind(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw.clone(),
    };
    let (line, col) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    match unknown_field_help(&message) {
        Some(help) => {
            // The help lists or suggests the valid names; keep the headline short.
            let short = match message.find(", expected") {
                Some(i) => &message[..i],
                None => &message,
            };
            Diagnostic::at(path, source, line, col, short.to_string()).with_help(help)
        }
        None => Diagnostic::at(path, source, line, col, message),
    }
}

/// For "unknown field `x`, expected one of `a`, `b`": suggest the closest expected field.
fn unknown_field_help(message: &str) -> Option<String> {
    let (kind, rest) = if let Some(i) = message.find("unknown field `") {
        ("field", &message[i + "unknown field `".len()..])
    } else if let Some(i) = message.find("unknown variant `") {
        ("value", &message[i + "unknown variant `".len()..])
    } else {
        return None;
    };
    let end = rest.find('`')?;
    let word = &rest[..end];
    let expected: Vec<&str> = rest[end..]
        .split('`')
        .enumerate()
        .filter(|(i, _)| *i > 0 && i % 2 == 0)
        .map(|(_, s)| s)
        .collect();
    match did_you_mean(word, expected.iter().copied()) {
        Some(s) => Some(format!("did you mean `{s}`?")),
        None if !expected.is_empty() => Some(format!(
            "valid {kind}s here: {}",
            expected
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => None,
    }
}

#[derive(Debug)]
enum Frame {
    /// In a mapping: the path of the mapping, and the pending key (None: expecting a key).
    Map { path: String, key: Option<String> },
    /// In a sequence: the path and the next index.
    Seq { path: String, next: usize },
}

struct SpanBuilder {
    stack: Vec<Frame>,
    spans: HashMap<String, Span>,
}

impl SpanBuilder {
    fn span(m: &Marker) -> Span {
        Span {
            line: m.line(),
            col: m.col() + 1,
        }
    }

    /// The path of the node that starts now, if it is a value (not a mapping key).
    fn value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => key.take().map(|k| {
                if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }
            }),
        }
    }
}

impl MarkedEventReceiver for SpanBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let span = Self::span(&mark);
        match ev {
            Event::Scalar(text, ..) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                        let full = if path.is_empty() {
                            text.clone()
                        } else {
                            format!("{path}.{text}")
                        };
                        self.spans.insert(format!("{full}#key"), span);
                        *key = Some(text);
                    }
                } else if let Some(p) = self.value_path() {
                    self.spans.insert(p, span);
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.value_path() {
                    self.spans.insert(p, span);
                }
            }
            Event::MappingStart(..) => {
                let p = self.value_path().unwrap_or_default();
                self.spans.entry(p.clone()).or_insert(span);
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = self.value_path().unwrap_or_default();
                self.spans.entry(p.clone()).or_insert(span);
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

fn build_spans(source: &str) -> Result<SpanMap, (Span, String)> {
    let mut b = SpanBuilder {
        stack: Vec::new(),
        spans: HashMap::new(),
    };
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut b, false).map_err(|e| {
        let m = e.marker();
        (
            Span {
                line: m.line(),
                col: m.col() + 1,
            },
            e.info().to_string(),
        )
    })?;
    Ok(SpanMap { spans: b.spans })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "name: demo\nsteps:\n  - id: first\n    call:\n      url: http://x\n  - id: second\n    call: {url: \"http://y\"}\n";

    #[test]
    fn spans_point_at_values_and_keys() {
        let l = load_str(Path::new("w.yaml"), SRC.into()).expect("loads");
        assert_eq!(l.spans.find("steps[0].id"), Span { line: 3, col: 9 });
        assert_eq!(l.spans.key("steps[0].call"), Span { line: 4, col: 5 });
        assert_eq!(l.spans.find("steps[1].call.url"), Span { line: 7, col: 17 });
        // unknown paths fall back to the closest ancestor
        assert_eq!(
            l.spans.find("steps[1].call.nothing"),
            Span { line: 7, col: 11 }
        );
    }

    #[test]
    fn unknown_field_names_the_field_and_suggests() {
        let src = "name: demo\nsteps:\n  - id: a\n    retyr: {}\n    call: {url: http://x}\n";
        let errs = load_str(Path::new("w.yaml"), src.into()).unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.starts_with("w.yaml:4:5: error: steps[0]: unknown field `retyr`"),
            "{text}"
        );
        assert!(text.contains("did you mean `retry`?"), "{text}");
    }

    #[test]
    fn syntax_error_reports_the_line() {
        let src = "name: demo\nsteps:\n  - id: a\n    call: {url: x\n";
        let errs = load_str(Path::new("w.yaml"), src.into()).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.contains("YAML syntax error"), "{text}");
        assert!(
            text.starts_with("w.yaml:5:") || text.starts_with("w.yaml:4:"),
            "{text}"
        );
    }
}
