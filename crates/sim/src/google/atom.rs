//! Atom for the simulated audit API: tolerant reading of `apps:property` entries, page-style writing.
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::XmlVersion;

/// Namespaces used by the audit API.
pub(super) const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
pub(super) const APPS_NS: &str = "http://schemas.google.com/apps/2006";
pub(super) const OPENSEARCH_NS: &str = "http://a9.com/-/spec/opensearchrss/1.0/";

/// Why an Atom entry could not be read (400); the text says what was wrong.
#[derive(Debug, thiserror::Error)]
pub(super) enum AtomError {
    #[error("body is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("empty body: expected an atom:entry element")]
    Empty,
    #[error("malformed XML near byte {at}: {source}")]
    Malformed { at: u64, source: quick_xml::Error },
    #[error("expected an atom:entry element, found <{0}>")]
    NotEntry(String),
    #[error("no XML element found: expected an atom:entry element")]
    NoElement,
    #[error("bad attribute in a property element: {0}")]
    Attribute(quick_xml::events::attributes::AttrError),
    #[error("bad value of attribute '{key}' in a property: {source}")]
    AttributeValue {
        key: String,
        source: quick_xml::Error,
    },
    #[error("a property element has no 'name' attribute")]
    NoName,
    #[error("property '{0}' has no 'value' attribute")]
    NoValue(String),
}

/// Reads the `property` elements of an Atom `entry` document.
///
/// Tolerant like the service: the root element must be an `entry` (any prefix); properties are
/// matched by local name at any depth; mismatched end tags and junk text around them are ignored.
/// Whatever cannot be read (not XML, wrong root, a property without `name` or `value`, a bad
/// entity) comes back as a message saying what was wrong.
pub(super) fn parse_entry_properties(body: &[u8]) -> Result<Vec<(String, String)>, AtomError> {
    let text = std::str::from_utf8(body).map_err(AtomError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(AtomError::Empty);
    }
    let mut reader = Reader::from_str(text);
    {
        let cfg = reader.config_mut();
        cfg.check_end_names = false;
        cfg.allow_unmatched_ends = true;
        cfg.trim_text(true);
    }
    let mut root_seen = false;
    let mut props = Vec::new();
    loop {
        let event = match reader.read_event() {
            Ok(ev) => ev,
            Err(source) => {
                return Err(AtomError::Malformed {
                    at: reader.error_position(),
                    source,
                })
            }
        };
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let local = local_name(&e);
                if !root_seen {
                    root_seen = true;
                    if local != "entry" {
                        return Err(AtomError::NotEntry(e.name().as_ref().to_string()));
                    }
                }
                if local == "property" {
                    props.push(read_property(&e)?);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err(AtomError::NoElement);
    }
    Ok(props)
}

fn local_name(e: &BytesStart<'_>) -> String {
    e.local_name().as_ref().to_string()
}

fn read_property(e: &BytesStart<'_>) -> Result<(String, String), AtomError> {
    let mut name = None;
    let mut value = None;
    for attr in e.attributes() {
        let attr = attr.map_err(AtomError::Attribute)?;
        let key = attr.key.local_name().as_ref().to_string();
        if key != "name" && key != "value" {
            continue;
        }
        let v = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|source| AtomError::AttributeValue {
                key: key.clone(),
                source,
            })?
            .into_owned();
        if key == "name" {
            name = Some(v);
        } else {
            value = Some(v);
        }
    }
    let name = name.ok_or(AtomError::NoName)?;
    let value = value.ok_or_else(|| AtomError::NoValue(name.clone()))?;
    Ok((name, value))
}

/// Escapes text for an attribute value or element content (single or double quoted).
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// One entry as the service shows it.
#[derive(Debug, Clone)]
pub(super) struct EntryView {
    pub id: String,
    /// RFC 3339 with milliseconds, `Z`.
    pub updated: String,
    pub self_href: String,
    pub edit_href: Option<String>,
    pub props: Vec<(String, String)>,
}

/// A page of the export list.
#[derive(Debug, Clone)]
pub(super) struct FeedView {
    pub id: String,
    pub updated: String,
    pub self_href: String,
    pub feed_href: String,
    pub next_href: Option<String>,
    /// 1-based index of the first entry of this page.
    pub start_index: usize,
    pub entries: Vec<EntryView>,
}

fn write_entry_children(out: &mut String, v: &EntryView, prefix: &str, indent: &str) {
    let link_type = "application/atom+xml";
    out.push_str(&format!(
        "{indent}<{prefix}id>{}</{prefix}id>\n",
        escape(&v.id)
    ));
    out.push_str(&format!(
        "{indent}<{prefix}updated>{}</{prefix}updated>\n",
        escape(&v.updated)
    ));
    out.push_str(&format!(
        "{indent}<{prefix}link rel='self' type='{link_type}' href='{}'/>\n",
        escape(&v.self_href)
    ));
    if let Some(edit) = &v.edit_href {
        out.push_str(&format!(
            "{indent}<{prefix}link rel='edit' type='{link_type}' href='{}'/>\n",
            escape(edit)
        ));
    }
    for (name, value) in &v.props {
        out.push_str(&format!(
            "{indent}<apps:property name='{}' value='{}'/>\n",
            escape(name),
            escape(value)
        ));
    }
}

/// A standalone entry document (create, status, delete and public-key answers).
pub(super) fn render_entry(v: &EntryView) -> String {
    let mut out = String::from("<?xml version='1.0' encoding='UTF-8'?>\n");
    out.push_str(&format!(
        "<entry xmlns='{ATOM_NS}' xmlns:apps='{APPS_NS}'>\n"
    ));
    write_entry_children(&mut out, v, "", "    ");
    out.push_str("</entry>\n");
    out
}

/// A feed page. Like the vendor page, entries alternate between `atom:`-prefixed children and
/// unprefixed ones (both in the Atom namespace here, so namespace-aware readers agree).
pub(super) fn render_feed(f: &FeedView) -> String {
    let link_type = "application/atom+xml";
    let mut out = String::from("<?xml version='1.0' encoding='UTF-8'?>\n");
    out.push_str(&format!(
        "<feed xmlns='{ATOM_NS}' xmlns:atom='{ATOM_NS}'\nxmlns:openSearch='{OPENSEARCH_NS}'\nxmlns:apps='{APPS_NS}'>\n"
    ));
    out.push_str(&format!("    <id>{}</id>\n", escape(&f.id)));
    out.push_str(&format!("    <updated>{}</updated>\n", escape(&f.updated)));
    if let Some(next) = &f.next_href {
        out.push_str(&format!(
            "    <link rel='next' type='{link_type}' href='{}'/>\n",
            escape(next)
        ));
    }
    for rel in [
        "http://schemas.google.com/g/2005#feed",
        "http://schemas.google.com/g/2005#post",
    ] {
        out.push_str(&format!(
            "    <link rel='{rel}' type='{link_type}' href='{}'/>\n",
            escape(&f.feed_href)
        ));
    }
    out.push_str(&format!(
        "    <link rel='self' type='{link_type}' href='{}'/>\n",
        escape(&f.self_href)
    ));
    out.push_str(&format!(
        "    <openSearch:startIndex>{}</openSearch:startIndex>\n",
        f.start_index
    ));
    for (i, e) in f.entries.iter().enumerate() {
        let prefix = if i % 2 == 0 { "atom:" } else { "" };
        out.push_str("    <entry>\n");
        write_entry_children(&mut out, e, prefix, "        ");
        out.push_str("    </entry>\n");
    }
    out.push_str("</feed>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_page_sample_with_both_quote_styles() {
        let body = r#"<atom:entry xmlns:atom='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>
   <apps:property name='beginDate' value='2022-07-01 04:30'/>
   <apps:property name="endDate" value="2022-08-30 20:00"/>
   <property name='searchQuery' value='in:chat &amp; from:a'/>
</atom:entry>"#;
        let props = parse_entry_properties(body.as_bytes()).expect("parses");
        assert_eq!(
            props,
            vec![
                ("beginDate".to_string(), "2022-07-01 04:30".to_string()),
                ("endDate".to_string(), "2022-08-30 20:00".to_string()),
                ("searchQuery".to_string(), "in:chat & from:a".to_string()),
            ]
        );
    }

    #[test]
    fn tolerates_the_page_junk_but_reports_real_errors() {
        // `...>/id>` and `<id>>` as on the vendor page: no matching end tags.
        let body = "<entry><id>https://x/id>/id><id>>https://y</id>\
                    <apps:property name='status' value='PENDING'/></entry>";
        let props = parse_entry_properties(body.as_bytes()).expect("tolerant");
        assert_eq!(props, vec![("status".into(), "PENDING".into())]);

        for bad in [
            "",
            "   ",
            "not xml at all",
            "{\"beginDate\":\"2022-07-01 04:30\"}",
            "<feed><apps:property name='a' value='b'/></feed>",
            "<entry><apps:property name='a'/></entry>",
            "<entry><apps:property value='a'/></entry>",
            "<entry><apps:property name='a' value='&bogus;'/></entry>",
            "<entry><apps:property name='a' value='b",
        ] {
            let err = parse_entry_properties(bad.as_bytes())
                .expect_err(&format!("{bad:?} must be rejected"));
            assert!(!err.to_string().is_empty());
        }
        assert!(parse_entry_properties(&[0xff, 0xfe, b'<']).is_err());
    }

    #[test]
    fn renders_escaped_single_quoted_entries_and_mixed_feeds() {
        let e = EntryView {
            id: "http://h/a/1".into(),
            updated: "2022-10-17T15:02:45.646Z".into(),
            self_href: "http://h/a/1?x=1&y='2'".into(),
            edit_href: None,
            props: vec![("searchQuery".into(), "a<b & 'c'".into())],
        };
        let doc = render_entry(&e);
        assert!(doc.contains("<entry xmlns='http://www.w3.org/2005/Atom'"));
        assert!(doc.contains("href='http://h/a/1?x=1&amp;y=&apos;2&apos;'"));
        assert!(
            doc.contains("<apps:property name='searchQuery' value='a&lt;b &amp; &apos;c&apos;'/>")
        );
        // What we write, we read back.
        let back = parse_entry_properties(doc.as_bytes()).expect("round trip");
        assert_eq!(back, e.props);

        let feed = render_feed(&FeedView {
            id: "http://h/f".into(),
            updated: "2022-10-17T15:02:45.646Z".into(),
            self_href: "http://h/f".into(),
            feed_href: "http://h/f".into(),
            next_href: Some("http://h/f?start=a&fromDate=x".into()),
            start_index: 1,
            entries: vec![e.clone(), e],
        });
        assert!(feed.contains("<atom:id>http://h/a/1</atom:id>"));
        assert!(feed.contains("        <id>http://h/a/1</id>"));
        assert!(feed.contains("<link rel='next' type='application/atom+xml' href='http://h/f?start=a&amp;fromDate=x'/>"));
    }
}
