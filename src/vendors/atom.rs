//! Atom entries of `apps:property` pairs: building them, and a tolerant scanner for answers.
//!
//! The Google Email Audit answers mix `atom:`-prefixed and unprefixed element names, both
//! quote styles, and the vendor's own samples are not always well formed (`...>/id>`,
//! `<id>>https...`). [`parse`] is a forgiving scanner rather than an XML parser: it reads
//! what it can (ids, `link` and `apps:property` elements, feed entries), never fails, and
//! lists what it skipped in `warnings`.
//!
//! Shapes (JSON):
//! - entry: `{"kind":"entry","id":..,"properties":{..},"links":[{"rel","href"}],"warnings":[..]}`
//! - feed: `{"kind":"feed","id":..,"entries":[{"id","properties","links"}],"links":[..],
//!   "next": href of rel=next or null,"warnings":[..]}`
//! - any other root element `X`: `{"kind":"X","id":..,"properties":{..},"links":[..],"warnings":[..]}`
use serde_json::{json, Map, Value};

/// Longest piece of skipped text quoted in a warning.
const WARN_EXCERPT: usize = 60;

/// Builds the request entry:
/// `<atom:entry xmlns:atom=.. xmlns:apps=..><apps:property name="N" value="V"/>...</atom:entry>`.
pub fn build_entry(props: &[(String, String)]) -> String {
    let mut s = String::from(
        "<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' \
         xmlns:apps='http://schemas.google.com/apps/2006'>",
    );
    for (name, value) in props {
        s.push_str("<apps:property name=\"");
        s.push_str(&escape_attr(name));
        s.push_str("\" value=\"");
        s.push_str(&escape_attr(value));
        s.push_str("\"/>");
    }
    s.push_str("</atom:entry>");
    s
}

/// Escapes a string for an XML attribute value in either quote style. Line breaks and tabs
/// become character references so that attribute normalization keeps them.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            // Characters XML 1.0 cannot carry at all are dropped.
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// Decodes the predefined entities and character references; unknown ones are kept as
/// written and reported in `warnings`.
pub fn unescape(s: &str, warnings: &mut Vec<String>) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| decode_entity(&after[..e]));
        match (end, decoded) {
            (Some(e), Some(c)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            _ => {
                let shown: String = after.chars().take(10).collect();
                warnings.push(format!("kept unknown entity '&{shown}'"));
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// An entry (or the root element) being read.
#[derive(Default)]
struct Node {
    id: Option<String>,
    properties: Map<String, Value>,
    links: Vec<Value>,
}

impl Node {
    fn into_entry_value(self) -> Value {
        json!({
            "id": self.id,
            "properties": Value::Object(self.properties),
            "links": Value::Array(self.links),
        })
    }
}

struct Scanner {
    root_kind: Option<String>,
    root: Node,
    entries: Vec<Value>,
    current: Option<Node>,
    /// Local names of the open elements.
    stack: Vec<String>,
    /// Just after an `<id>` start tag: the next text is the id.
    id_pending: bool,
    warnings: Vec<String>,
}

fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn shorten(s: &str) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    super::errors::cut_chars(&collapsed, WARN_EXCERPT)
}

impl Scanner {
    fn node(&mut self) -> &mut Node {
        match self.current.as_mut() {
            Some(n) => n,
            None => &mut self.root,
        }
    }

    fn text(&mut self, raw: &str, is_cdata: bool) {
        if raw.trim().is_empty() {
            return;
        }
        let text = if is_cdata {
            raw.to_string()
        } else {
            let mut w = Vec::new();
            let t = unescape(raw, &mut w);
            self.warnings.extend(w);
            t
        };
        if self.id_pending && self.stack.last().map(String::as_str) == Some("id") {
            self.id_pending = false;
            let id = self.clean_id(&text);
            let node = self.node();
            if node.id.is_none() {
                node.id = Some(id);
            }
            return;
        }
        let top = self.stack.last().map(String::as_str);
        if matches!(top, None | Some("entry") | Some("feed")) {
            let where_ = top.unwrap_or("document");
            self.warnings
                .push(format!("skipped text in {where_}: '{}'", shorten(&text)));
        }
    }

    /// Repairs the junk seen around ids on the vendor page.
    fn clean_id(&mut self, text: &str) -> String {
        let mut id = text.trim();
        if id.starts_with('>') {
            self.warnings.push(format!(
                "stray '>' before id '{}'",
                shorten(id.trim_start_matches('>'))
            ));
            id = id.trim_start_matches('>').trim_start();
        }
        for junk in [">/id>", "</id", "/id>"] {
            if let Some(i) = id.find(junk) {
                if junk != "/id>" || i + junk.len() == id.len() {
                    self.warnings.push(format!(
                        "malformed end of id, skipped '{}'",
                        shorten(&id[i..])
                    ));
                    id = id[..i].trim_end();
                    break;
                }
            }
        }
        if let Some(i) = id.find(['<', '>']) {
            self.warnings
                .push(format!("skipped junk in id: '{}'", shorten(&id[i..])));
            id = id[..i].trim_end();
        }
        id.to_string()
    }

    fn start(&mut self, name: &str, attrs: Vec<(String, String)>, self_closing: bool) {
        let local = local_name(name).to_string();
        match &self.root_kind {
            None => self.root_kind = Some(local.clone()),
            Some(_) if local == "entry" => {
                if let Some(open) = self.current.take() {
                    self.warnings
                        .push("an entry was not closed before the next one".to_string());
                    self.entries.push(open.into_entry_value());
                }
                self.current = Some(Node::default());
            }
            Some(_) => {}
        }
        let attr = |key: &str| {
            attrs
                .iter()
                .find(|(k, _)| local_name(k) == key)
                .map(|(_, v)| v.clone())
        };
        match local.as_str() {
            "link" => {
                let rel = attr("rel");
                let href = attr("href");
                if href.is_none() {
                    self.warnings
                        .push("skipped a link without href".to_string());
                } else {
                    self.node().links.push(json!({"rel": rel, "href": href}));
                }
            }
            "property" => match attr("name") {
                Some(n) => {
                    let value = attr("value");
                    if value.is_none() {
                        self.warnings.push(format!("property '{n}' has no value"));
                    }
                    self.node().properties.insert(n, json!(value));
                }
                None => self
                    .warnings
                    .push("skipped a property without name".to_string()),
            },
            "id" if !self_closing => self.id_pending = true,
            _ => {}
        }
        if !self_closing {
            self.stack.push(local);
        }
    }

    fn end(&mut self, name: &str) {
        let local = local_name(name);
        if local != "id" {
            self.id_pending = false;
        }
        match self.stack.iter().rposition(|n| n == local) {
            Some(pos) => {
                for unclosed in self.stack.drain(pos + 1..).collect::<Vec<_>>() {
                    self.warnings
                        .push(format!("element <{unclosed}> was not closed"));
                }
                self.stack.truncate(pos);
            }
            None => {
                self.warnings
                    .push(format!("skipped unexpected end tag </{}>", shorten(name)));
                return;
            }
        }
        if local == "id" {
            self.id_pending = false;
        }
        if local == "entry" && self.root_kind.as_deref() != Some("entry") || self.stack.is_empty() {
            if let Some(n) = self.current.take() {
                self.entries.push(n.into_entry_value());
            }
        }
    }

    fn finish(mut self) -> Value {
        if let Some(n) = self.current.take() {
            self.warnings
                .push("the last entry was not closed".to_string());
            self.entries.push(n.into_entry_value());
        }
        for unclosed in std::mem::take(&mut self.stack) {
            if unclosed != "id" {
                self.warnings
                    .push(format!("element <{unclosed}> was not closed"));
            }
        }
        let Scanner {
            root_kind,
            root,
            entries,
            mut warnings,
            ..
        } = self;
        match root_kind.as_deref() {
            Some("feed") => {
                let next = root
                    .links
                    .iter()
                    .find(|l| l.get("rel").and_then(Value::as_str) == Some("next"))
                    .and_then(|l| l.get("href").cloned())
                    .unwrap_or(Value::Null);
                let mut obj = json!({
                    "kind": "feed",
                    "id": root.id,
                    "entries": entries,
                    "links": root.links,
                    "next": next,
                    "warnings": warnings,
                });
                if !root.properties.is_empty() {
                    obj["properties"] = Value::Object(root.properties);
                }
                obj
            }
            kind => {
                if kind.is_none() {
                    warnings.push("no XML element found".to_string());
                }
                if !entries.is_empty() {
                    warnings.push(format!(
                        "skipped {} nested entries in <{}>",
                        entries.len(),
                        kind.unwrap_or("")
                    ));
                }
                json!({
                    "kind": kind,
                    "id": root.id,
                    "properties": Value::Object(root.properties),
                    "links": root.links,
                    "warnings": warnings,
                })
            }
        }
    }
}

/// Parses tag contents after the name: `name='v' name2="v2" bare`.
fn parse_attrs(s: &str, warnings: &mut Vec<String>) -> Vec<(String, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ns = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        let name = &s[ns..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            warnings.push(format!(
                "skipped attribute '{}' without value",
                shorten(name)
            ));
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            warnings.push(format!("attribute '{}' has no value", shorten(name)));
            break;
        }
        let raw = if b[i] == b'\'' || b[i] == b'"' {
            let q = b[i];
            let vs = i + 1;
            match b[vs..].iter().position(|&c| c == q) {
                Some(len) => {
                    i = vs + len + 1;
                    &s[vs..vs + len]
                }
                None => {
                    warnings.push(format!(
                        "unterminated value of attribute '{}'",
                        shorten(name)
                    ));
                    i = b.len();
                    &s[vs..]
                }
            }
        } else {
            let vs = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            warnings.push(format!("unquoted value of attribute '{}'", shorten(name)));
            s[vs..i].trim_end_matches('/')
        };
        out.push((name.to_string(), unescape(raw, warnings)));
    }
    out
}

/// Finds the `>` closing a tag that starts at `from` (just after `<`), skipping quoted
/// attribute values. Err(position of a `<`) when another tag starts first; Ok(None) at EOF.
fn find_tag_end(s: &str, from: usize) -> Result<Option<usize>, usize> {
    let b = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = from;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'>' => return Ok(Some(i)),
                b'<' => return Err(i),
                _ => {}
            },
        }
        i += 1;
    }
    Ok(None)
}

/// Parses an Atom entry or feed tolerantly (never fails). See the module docs for the shape.
pub fn parse(text: &str) -> Value {
    let mut sc = Scanner {
        root_kind: None,
        root: Node::default(),
        entries: Vec::new(),
        current: None,
        stack: Vec::new(),
        id_pending: false,
        warnings: Vec::new(),
    };
    let s = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut pos = 0;
    while pos < s.len() {
        let Some(rel) = s[pos..].find('<') else {
            sc.text(&s[pos..], false);
            break;
        };
        let lt = pos + rel;
        if lt > pos {
            sc.text(&s[pos..lt], false);
        }
        let scan = match sc.skip_special(s, lt) {
            Some(scan) => scan,
            None => sc.tag(s, lt),
        };
        match scan {
            Scan::To(next) => pos = next,
            Scan::Stop => break,
        }
    }
    sc.finish()
}

/// Where scanning goes on after a piece of markup.
enum Scan {
    /// At this position.
    To(usize),
    /// Nowhere: the text ended inside the markup.
    Stop,
}

impl Scanner {
    /// Comments, CDATA sections (their text taken in), processing instructions and
    /// declarations starting at `lt`; None when the markup there is a tag.
    fn skip_special(&mut self, s: &str, lt: usize) -> Option<Scan> {
        let rest = &s[lt..];
        let (end, what) = if rest.starts_with("<!--") {
            ("-->", "unterminated comment")
        } else if let Some(inner) = rest.strip_prefix("<![CDATA[") {
            return Some(match inner.find("]]>") {
                Some(e) => {
                    self.text(&inner[..e], true);
                    Scan::To(lt + 9 + e + 3)
                }
                None => self.stop("unterminated CDATA section".to_string()),
            });
        } else if rest.starts_with("<?") {
            ("?>", "unterminated processing instruction")
        } else if rest.starts_with("<!") {
            (">", "unterminated declaration")
        } else {
            return None;
        };
        Some(match rest.find(end) {
            Some(e) => Scan::To(lt + e + end.len()),
            None => self.stop(what.to_string()),
        })
    }

    /// Notes why scanning stops.
    fn stop(&mut self, warning: String) -> Scan {
        self.warnings.push(warning);
        Scan::Stop
    }

    /// The start or end tag at `lt`: taken in, or skipped with a warning when malformed.
    fn tag(&mut self, s: &str, lt: usize) -> Scan {
        let gt = match find_tag_end(s, lt + 1) {
            Ok(Some(gt)) => gt,
            Ok(None) => {
                return self.stop(format!("skipped unterminated tag '{}'", shorten(&s[lt..])))
            }
            Err(next_lt) => {
                self.warnings
                    .push(format!("skipped broken tag '{}'", shorten(&s[lt..next_lt])));
                return Scan::To(next_lt);
            }
        };
        let inner = &s[lt + 1..gt];
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim();
            if name.is_empty() {
                self.warnings.push("skipped empty end tag".to_string());
            } else {
                self.end(name);
            }
            return Scan::To(gt + 1);
        }
        let trimmed = inner.trim_end();
        let self_closing = trimmed.ends_with('/');
        let body = trimmed.trim_end_matches('/');
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
        {
            self.warnings
                .push(format!("skipped malformed tag '<{}>'", shorten(inner)));
            return Scan::To(gt + 1);
        }
        let attrs = parse_attrs(&body[name_end..], &mut self.warnings);
        self.start(name, attrs, self_closing);
        Scan::To(gt + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_an_escaped_entry() {
        let s = build_entry(&[
            ("searchQuery".into(), "from:\"a&b\" <x> 'y'".into()),
            ("beginDate".into(), "2022-07-01 04:30".into()),
        ]);
        assert_eq!(
            s,
            "<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' \
             xmlns:apps='http://schemas.google.com/apps/2006'>\
             <apps:property name=\"searchQuery\" value=\"from:&quot;a&amp;b&quot; &lt;x&gt; &apos;y&apos;\"/>\
             <apps:property name=\"beginDate\" value=\"2022-07-01 04:30\"/></atom:entry>"
        );
        // And it reads back.
        let v = parse(&s);
        assert_eq!(v["properties"]["searchQuery"], "from:\"a&b\" <x> 'y'");
        assert_eq!(v["warnings"], json!([]));
    }

    #[test]
    fn unknown_entities_are_kept() {
        let mut w = Vec::new();
        assert_eq!(unescape("a &nbsp; &#x41;&#66; &", &mut w), "a &nbsp; AB &");
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn never_panics_on_junk() {
        for junk in [
            "",
            "<",
            ">",
            "<<<>>>",
            "<entry",
            "<entry><apps:property name='a",
            "</entry>",
            "<entry><id>x",
            "<feed><entry><entry></feed>",
            "<a b=c/>",
            "<!-- x",
            "<![CDATA[",
            "<?xml",
            "<!DOCTYPE",
            "<é attr='ü'>ß</é>",
            "&&&;;;",
            "<entry><apps:property name='x' value='&#xFFFFFFFF;'/></entry>",
            "<entry>\u{0}\u{1}</entry>",
        ] {
            let v = parse(junk);
            assert!(v.get("warnings").is_some(), "{junk}");
        }
    }
}
