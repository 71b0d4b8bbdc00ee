//! Diagnostics that point into a workflow file: `file:line:col: message`, the line, a caret.
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The workflow file the problem is in, as given or reached through `uses`.
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    /// What is wrong, one sentence naming the field.
    pub message: String,
    /// Extra advice ("did you mean `retry`?").
    pub help: Option<String>,
    /// The source line, when known.
    pub source_line: Option<String>,
    /// How many characters to underline.
    pub width: usize,
}

impl Diagnostic {
    /// A diagnostic at a position of `source`.
    pub fn at(file: &Path, source: &str, line: usize, col: usize, message: String) -> Self {
        let source_line = if line > 0 {
            source
                .lines()
                .nth(line - 1)
                .map(std::string::ToString::to_string)
        } else {
            None
        };
        let width = source_line
            .as_deref()
            .map(|l| token_width(l, col))
            .unwrap_or(1);
        Diagnostic {
            file: file.to_path_buf(),
            line,
            col,
            message,
            help: None,
            source_line,
            width,
        }
    }

    /// A diagnostic about a whole file (no position).
    pub fn file(file: &Path, message: String) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            message,
            help: None,
            source_line: None,
            width: 1,
        }
    }

    /// The diagnostic with its quoted source line rewritten by `f` (the caret keeps its
    /// column and covers the rewritten token): to leave out what must not be shown, such as
    /// the password of a URL.
    pub fn with_source_line(mut self, f: impl Fn(&str) -> String) -> Self {
        if let Some(line) = self.source_line.take() {
            let line = f(&line);
            self.width = token_width(&line, self.col);
            self.source_line = Some(line);
        }
        self
    }

    /// Adds advice printed under the caret line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Width of the token starting at 1-based `col` of `line`: a key, a word or a quoted string
/// (a plain word ends before a flow collection's `,`, `}` or `]`).
fn token_width(line: &str, col: usize) -> usize {
    let rest: String = line.chars().skip(col.saturating_sub(1)).collect();
    let mut chars = rest.chars();
    match chars.next() {
        None => 1,
        Some(q @ ('"' | '\'')) => {
            let inner = chars.take_while(|c| *c != q).count();
            inner + 2
        }
        Some(_) => rest
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, ':' | ',' | '}' | ']'))
            .count()
            .max(1),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.line > 0 {
            writeln!(
                f,
                "{file}:{}:{}: error: {}",
                self.line, self.col, self.message
            )?;
        } else {
            writeln!(f, "{file}: error: {}", self.message)?;
        }
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {src}")?;
            // Keep tabs so the caret lines up under the same characters.
            let lead: String = src
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(self.width.max(1)))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_col_source_and_caret() {
        let src = "name: x\nsteps:\n  - id: a\n    retyr: 3\n";
        let d = Diagnostic::at(
            Path::new("w.yaml"),
            src,
            4,
            5,
            "unknown field `retyr`".into(),
        )
        .with_help("did you mean `retry`?");
        let text = d.to_string();
        assert_eq!(
            text,
            "w.yaml:4:5: error: unknown field `retyr`\n  |\n4 |     retyr: 3\n  |     ^^^^^\n  = help: did you mean `retry`?\n"
        );
    }

    #[test]
    fn suggestions_only_for_close_words() {
        let fields = ["retry", "timeout", "name", "id"];
        assert_eq!(did_you_mean("retyr", fields), Some("retry"));
        assert_eq!(did_you_mean("timout", fields), Some("timeout"));
        assert_eq!(did_you_mean("zzzz", fields), None);
    }

    #[test]
    fn caret_covers_quoted_strings() {
        assert_eq!(token_width(r#"  path: "/a b/c" # x"#, 9), 8);
        assert_eq!(token_width("  x: {default: 30mins}", 16), 6);
    }
}
