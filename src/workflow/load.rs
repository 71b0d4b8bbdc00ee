//! Reading a workflow file: YAML into the model, with a map from model paths to source spans.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

use super::diag::{did_you_mean, Diagnostic};
use super::model::Workflow;

/// Where a node is in the source (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column in characters; 0 when unknown.
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
    /// The file's path as given (relative paths stay relative, for messages).
    pub path: PathBuf,
    /// The file's text, for showing the offending line in diagnostics.
    pub source: String,
    /// The parsed model.
    pub workflow: Workflow,
    /// Line:column of every node, by model path.
    pub spans: SpanMap,
    /// For a file of a workflow pack (then `path` is in the pack cache): where it came from.
    pub origin: Option<super::packs::PackOrigin>,
}

impl Loaded {
    /// How messages name the file: its path, or `pack@commit:path` for a pack file.
    pub fn shown(&self) -> PathBuf {
        match &self.origin {
            Some(o) => PathBuf::from(o.shown()),
            None => self.path.clone(),
        }
    }

    /// A diagnostic at the value of `path`.
    pub fn diag(&self, path: &str, message: String) -> Diagnostic {
        let s = self.spans.find(path);
        self.diag_at(s, message)
    }

    /// A diagnostic at the key of `path`.
    pub fn diag_key(&self, path: &str, message: String) -> Diagnostic {
        let s = self.spans.key(path);
        self.diag_at(s, message)
    }

    /// A diagnostic at `s`; the quoted line shows URLs without their user info (a password
    /// written into a URL, such as a pack's, is never shown).
    fn diag_at(&self, s: Span, message: String) -> Diagnostic {
        Diagnostic::at(&self.shown(), &self.source, s.line, s.col, message)
            .with_source_line(super::packs::redact)
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
    let source = read_text(path, "workflow file").map_err(|d| vec![*d])?;
    load_str(path, source)
}

/// Reads an inputs file (`--inputs-file`): a YAML mapping of input names to values, with the
/// same checks as a workflow file (UTF-8, syntax, duplicate keys, alias expansion).
pub fn load_inputs_file(path: &Path) -> Result<BTreeMap<String, Value>, Box<Diagnostic>> {
    let source = read_text(path, "inputs file")?;
    check_yaml(path, &source).map_err(Box::new)?;
    serde_yaml_ng::from_str(&source).map_err(|e| {
        let mut d = serde_error(path, &source, &e);
        d.message = format!("not a mapping of inputs: {}", d.message);
        Box::new(d)
    })
}

/// Reads a file as UTF-8 text; bytes that are not UTF-8 are an error at their position.
fn read_text(path: &Path, what: &str) -> Result<String, Box<Diagnostic>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Box::new(Diagnostic::file(
            path,
            format!("cannot read the {what}: {e}"),
        ))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let valid = &bytes[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(bytes);
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        let byte = bytes.get(valid.len()).copied().unwrap_or_default();
        let mut d = Diagnostic::at(
            path,
            &text,
            line,
            col,
            format!("the {what} is not UTF-8 text (byte 0x{byte:02X})"),
        )
        .with_help("save the file as UTF-8");
        d.width = 1;
        Box::new(d)
    })
}

/// The event pass over `source`: syntax, duplicate keys and alias expansion, as a diagnostic.
fn check_yaml(path: &Path, source: &str) -> Result<SpanMap, Diagnostic> {
    build_spans(source).map_err(|p| {
        let d = Diagnostic::at(path, source, p.span.line, p.span.col, p.message);
        match p.help {
            Some(h) => d.with_help(h),
            None => d,
        }
    })
}

/// Parses workflow text; `path` is used in messages and for relative paths.
pub fn load_str(path: &Path, source: String) -> Result<Loaded, Vec<Diagnostic>> {
    let spans = check_yaml(path, &source).map_err(|d| vec![d])?;
    let workflow: Workflow =
        serde_yaml_ng::from_str(&source).map_err(|e| vec![serde_error(path, &source, &e)])?;
    Ok(Loaded {
        path: path.to_path_buf(),
        source,
        workflow,
        spans,
        origin: None,
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
        None => {
            let d = Diagnostic::at(path, source, line, col, message.clone());
            match literal_only_help(&message) {
                Some(help) => d.with_help(help),
                None => d,
            }
        }
    }
}

/// A template (or text) where the field takes a literal value: say that the field cannot be
/// templated, rather than leaving only serde's "invalid type".
fn literal_only_help(message: &str) -> Option<String> {
    if message.contains("invalid type: string \"") && message.contains("{{") {
        let expected = match message.rsplit(", expected ").next() {
            Some("u8" | "u16" | "u32" | "u64" | "usize") => "a whole number",
            Some("a boolean") => "true or false",
            Some(other) => other,
            None => "a literal value",
        };
        return Some(format!(
            "this field cannot be a template; write {expected} itself (fields that take templates: \
             values in call/poll/download/decrypt, `if`, `name`, `for_each.items`, `concurrency`)"
        ));
    }
    if message.contains("did not match any variant of untagged enum Count") {
        return Some(
            "write a whole number of at least 1 (e.g. 4) or a template rendering to one".into(),
        );
    }
    None
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

/// Most nodes the aliases of a document may add when expanded: far above any real workflow,
/// far below what an alias bomb ("billion laughs") would make the deserializer build. Nodes
/// written out are not limited (an inputs file may list 100,000 mailboxes).
const MAX_ALIASED_NODES: u64 = 100_000;

#[derive(Debug)]
enum Frame {
    /// In a mapping: its path, the pending key (None: expecting a key) and the keys seen.
    Map {
        path: String,
        key: Option<String>,
        seen: HashMap<String, Span>,
        anchor: usize,
        nodes: u64,
    },
    /// In a sequence: the path and the next index.
    Seq {
        path: String,
        next: usize,
        anchor: usize,
        nodes: u64,
    },
}

impl Frame {
    fn nodes(&mut self) -> &mut u64 {
        match self {
            Frame::Map { nodes, .. } | Frame::Seq { nodes, .. } => nodes,
        }
    }
}

/// A problem found by the event pass.
#[derive(Debug)]
struct Problem {
    span: Span,
    message: String,
    help: Option<String>,
}

impl Problem {
    fn new(span: Span, message: String) -> Self {
        Problem {
            span,
            message,
            help: None,
        }
    }
}

#[derive(Default)]
struct SpanBuilder {
    stack: Vec<Frame>,
    spans: HashMap<String, Span>,
    /// Node count of every anchored node, aliases inside it expanded.
    anchored: HashMap<usize, u64>,
    /// Nodes the document's aliases stand for so far.
    aliased: u64,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
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
            Some(Frame::Seq { path, next, .. }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
        }
    }

    /// Counts `n` more nodes (an alias counts as the nodes it stands for).
    fn count(&mut self, n: u64, span: Span, alias: bool) -> Result<(), Problem> {
        if let Some(f) = self.stack.last_mut() {
            *f.nodes() = f.nodes().saturating_add(n);
        }
        if alias {
            self.aliased = self.aliased.saturating_add(n);
        }
        if self.aliased > MAX_ALIASED_NODES {
            let mut p = Problem::new(
                span,
                format!("YAML aliases expand this document by more than {MAX_ALIASED_NODES} nodes"),
            );
            p.help =
                Some("an alias bomb? write the repeated parts out or use fewer aliases".into());
            return Err(p);
        }
        Ok(())
    }

    /// A mapping key: recorded, and refused when the mapping already has it.
    fn key(&mut self, text: String, span: Span) -> Result<(), Problem> {
        let Some(Frame::Map {
            path, key, seen, ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if let Some(first) = seen.get(&text) {
            let within = if path.is_empty() {
                String::new()
            } else {
                format!(" in `{path}`")
            };
            let mut p = Problem::new(
                span,
                format!(
                    "duplicate key `{text}`{within}; it is already given at line {}",
                    first.line
                ),
            );
            p.help = Some("give each key once (YAML would silently keep only the last)".into());
            return Err(p);
        }
        seen.insert(text.clone(), span);
        self.spans
            .insert(format!("{}#key", join(path, &text)), span);
        *key = Some(text);
        Ok(())
    }

    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), Problem> {
        let span = Self::span(&mark);
        match ev {
            Event::Scalar(text, _, anchor, _) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    self.key(text, span)?;
                } else if let Some(p) = self.value_path() {
                    self.spans.insert(p, span);
                }
                if anchor > 0 {
                    self.anchored.insert(anchor, 1);
                }
                self.count(1, span, false)?;
            }
            Event::Alias(id) => {
                if let Some(p) = self.value_path() {
                    self.spans.insert(p, span);
                }
                let n = self.anchored.get(&id).copied().unwrap_or(1);
                self.count(n, span, true)?;
            }
            Event::MappingStart(anchor, _) => {
                let p = self.value_path().unwrap_or_default();
                self.spans.entry(p.clone()).or_insert(span);
                self.count(1, span, false)?;
                self.stack.push(Frame::Map {
                    path: p,
                    key: None,
                    seen: HashMap::new(),
                    anchor,
                    nodes: 1,
                });
            }
            Event::SequenceStart(anchor, _) => {
                let p = self.value_path().unwrap_or_default();
                self.spans.entry(p.clone()).or_insert(span);
                self.count(1, span, false)?;
                self.stack.push(Frame::Seq {
                    path: p,
                    next: 0,
                    anchor,
                    nodes: 1,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            _ => {}
        }
        Ok(())
    }

    /// Ends a collection: its node count goes to its anchor and to its parent.
    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let (anchor, nodes) = match frame {
            Frame::Map { anchor, nodes, .. } | Frame::Seq { anchor, nodes, .. } => (anchor, nodes),
        };
        if anchor > 0 {
            self.anchored.insert(anchor, nodes);
        }
        if let Some(parent) = self.stack.last_mut() {
            // the collection's own start was already counted into the parent
            *parent.nodes() = parent.nodes().saturating_add(nodes.saturating_sub(1));
        }
    }
}

/// Walks the first document's events (iteratively: deep nesting cannot overflow the stack).
fn build_spans(source: &str) -> Result<SpanMap, Problem> {
    let mut b = SpanBuilder::default();
    let mut parser = Parser::new_from_str(source);
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            Problem::new(
                SpanBuilder::span(e.marker()),
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        if matches!(ev, Event::StreamEnd | Event::DocumentEnd) {
            break;
        }
        b.on_event(ev, mark)?;
    }
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

    #[test]
    fn duplicate_keys_are_refused_at_the_second() {
        let src = "name: demo\nsteps:\n  - id: a\n    call: {url: http://x}\n    id: b\n";
        let errs = load_str(Path::new("w.yaml"), src.into()).unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.starts_with(
                "w.yaml:5:5: error: duplicate key `id` in `steps[0]`; it is already given at line 3"
            ),
            "{text}"
        );
        let top = load_str(Path::new("w.yaml"), "name: a\nname: b\n".into()).unwrap_err();
        assert!(top[0]
            .to_string()
            .starts_with("w.yaml:2:1: error: duplicate key `name`;"));
        // the same key in different mappings is fine
        assert!(load_str(Path::new("w.yaml"), SRC.into()).is_ok());
    }

    #[test]
    fn alias_bombs_stop_at_the_alias_that_goes_over_the_limit() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{p}"); 10].join(", ")
            ));
        }
        let errs = load_str(Path::new("w.yaml"), src).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.starts_with("w.yaml:5:45:"), "{text}");
        assert!(text.contains("by more than 100000 nodes"), "{text}");
        // a few aliases are fine
        let ok = "name: x\nsteps:\n  - &s {id: a, call: {url: http://x}}\n";
        assert!(load_str(Path::new("w.yaml"), ok.into()).is_ok());
        // a long list written out is no bomb (an inputs file of 150,000 mailboxes)
        let items: Vec<String> = (0..150_000).map(|i| format!("u{i}")).collect();
        let long = format!(
            "name: x\ninputs:\n  users: {{type: list, default: [{}]}}\nsteps:\n  - {{id: a, call: {{url: http://x}}}}\n",
            items.join(", ")
        );
        assert!(load_str(Path::new("w.yaml"), long).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!(
            "name: x\nsteps: {}{}\n",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        assert!(load_str(Path::new("w.yaml"), src).is_err());
    }

    #[test]
    fn files_that_are_not_utf8_get_a_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.yaml");
        std::fs::write(&path, b"name: ok\ndescription: caf\xe9\n").expect("write");
        let errs = load_file(&path).unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.contains("w.yaml:2:17: error: the workflow file is not UTF-8 text (byte 0xE9)"),
            "{text}"
        );
        let d = load_inputs_file(&path).unwrap_err();
        assert!(d
            .to_string()
            .contains(":2:17: error: the inputs file is not UTF-8"));
    }

    #[test]
    fn inputs_files_are_checked_like_workflows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("in.yaml");
        std::fs::write(&path, "domain: a\nlimit: 3\n").expect("write");
        let v = load_inputs_file(&path).expect("loads");
        assert_eq!(v.get("limit"), Some(&Value::from(3)));
        std::fs::write(&path, "domain: a\ndomain: b\n").expect("write");
        let d = load_inputs_file(&path).unwrap_err().to_string();
        assert!(
            d.contains("in.yaml:2:1: error: duplicate key `domain`"),
            "{d}"
        );
        std::fs::write(&path, "- a\n- b\n").expect("write");
        let d = load_inputs_file(&path).unwrap_err().to_string();
        assert!(d.contains("not a mapping of inputs"), "{d}");
    }
}
