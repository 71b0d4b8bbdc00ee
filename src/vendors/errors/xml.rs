//! Google-style XML error answers (and HTML error pages): a `reason` attribute, else an
//! `internalReason`, `reason` or `message` element, else the text without its markup.
//!
//! Read with quick-xml's event reader, set to be lenient (end tags need not match, stray end
//! tags are skipped) because HTML pages from proxies and gateways are seldom well formed
//! XML. Reading stops at the first error (a body cut inside a tag); what was read by then is
//! used. Entities are decoded with [`atom::unescape`], as in every other Google answer.
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use super::excerpt;
use crate::secrets::Secrets;
use crate::vendors::atom;

/// The elements whose text is the message, in order of preference.
const MESSAGE_ELEMENTS: [&str; 3] = ["internalReason", "reason", "message"];

/// The vendor's message in an XML or HTML error body, `secrets` masked in an excerpt.
pub(super) fn xml_error_message(text: &str, secrets: &Secrets) -> Option<String> {
    let scan = Scan::of(text);
    if let Some(reason) = scan.reason_attribute {
        return Some(reason);
    }
    if let Some(m) = scan.elements.into_iter().flatten().next() {
        return Some(m);
    }
    let ex = excerpt(&scan.text, secrets);
    (!ex.is_empty()).then_some(ex)
}

/// What one pass over the body found.
#[derive(Default)]
struct Scan {
    /// The first non-blank `reason` attribute (also `...reason`, as `errorReason`).
    reason_attribute: Option<String>,
    /// The first non-blank text of each of [`MESSAGE_ELEMENTS`], in that order.
    elements: [Option<String>; 3],
    /// The text with every piece of markup replaced by a space, entities as written.
    text: String,
}

impl Scan {
    fn of(text: &str) -> Scan {
        let mut reader = Reader::from_str(text);
        let cfg = reader.config_mut();
        cfg.check_end_names = false;
        cfg.allow_unmatched_ends = true;
        let mut scan = Scan::default();
        // Where each message element's content began (byte offset), while it is open.
        let mut open: [Option<usize>; 3] = [None; 3];
        loop {
            let before = reader.buffer_position() as usize;
            let event = match reader.read_event() {
                Ok(Event::Eof) | Err(_) => break,
                Ok(event) => event,
            };
            match event {
                Event::Start(e) => {
                    scan.attributes(&e);
                    if let Some(i) = message_element(e.local_name().as_ref()) {
                        open[i] = open[i].or(Some(reader.buffer_position() as usize));
                    }
                    scan.text.push(' ');
                }
                Event::Empty(e) => {
                    scan.attributes(&e);
                    scan.text.push(' ');
                }
                Event::End(e) => {
                    if let Some(i) = message_element(e.local_name().as_ref()) {
                        if let Some(start) = open[i].take() {
                            scan.element_text(i, &text[start..before]);
                        }
                    }
                    scan.text.push(' ');
                }
                Event::Text(t) => scan.text.push_str(&t),
                Event::GeneralRef(r) => {
                    scan.text.push('&');
                    scan.text.push_str(&r);
                    scan.text.push(';');
                }
                _ => scan.text.push(' '),
            }
        }
        scan
    }

    fn attributes(&mut self, e: &BytesStart<'_>) {
        if self.reason_attribute.is_some() {
            return;
        }
        for attr in e.attributes().with_checks(false).flatten() {
            if attr.key.as_ref().ends_with("reason") {
                let value = atom::unescape(&attr.value, &mut Vec::new());
                if !value.trim().is_empty() {
                    self.reason_attribute = Some(value.trim().to_string());
                    return;
                }
            }
        }
    }

    fn element_text(&mut self, i: usize, raw: &str) {
        if self.elements[i].is_none() {
            let v = atom::unescape(raw, &mut Vec::new());
            let v = v.trim();
            self.elements[i] = (!v.is_empty()).then(|| v.to_string());
        }
    }
}

fn message_element(name: &str) -> Option<usize> {
    MESSAGE_ELEMENTS.iter().position(|m| *m == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Option<String> {
        xml_error_message(text, &Secrets::new())
    }

    #[test]
    fn a_reason_attribute_wins_then_the_elements_in_their_order() {
        let both = "<errors><error reason='R &amp; D'><message>m</message></error></errors>";
        assert_eq!(message(both).as_deref(), Some("R & D"));
        let elements = "<e><message>second</message><internalReason> first </internalReason></e>";
        assert_eq!(message(elements).as_deref(), Some("first"));
        let attributed = "<e><reason lang=\"en\">why</reason></e>";
        assert_eq!(message(attributed).as_deref(), Some("why"));
        let blank = "<e reason=\" \"><message>  </message>text</e>";
        assert_eq!(message(blank).as_deref(), Some("text"));
    }

    #[test]
    fn html_that_is_not_xml_still_gives_its_text() {
        // A gateway page: unclosed and mismatched tags, upper case, a doctype, a script with
        // `<` in it, an entity HTML knows and XML does not.
        let page = "<!DOCTYPE html><HTML><HEAD><TITLE>502</TITLE></HEAD><BODY><p>Bad&nbsp;Gateway\
                    <br><hr></body><script>if (a < b) {}</script></HTML>";
        // (Script text is text up to its `<`, as the hand-written tag stripper this replaced
        // also read it.)
        assert_eq!(message(page).as_deref(), Some("502 Bad&nbsp;Gateway if (a"));
        // A body cut inside a tag: what came before the cut.
        assert_eq!(
            message("<p>Service down</p><a href=\"x").as_deref(),
            Some("Service down")
        );
        assert_eq!(message("<br/>  <hr>"), None);
    }
}
