//! The `Link` header (RFC 8288): the `rel="next"` page of a paged answer.
use url::Url;

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against `base`.
pub fn link_next(link: &str, base: &Url) -> Option<Url> {
    for part in split_links(link) {
        let part = part.trim();
        let Some(rest) = part.strip_prefix('<') else {
            continue;
        };
        let Some(end) = rest.find('>') else {
            continue;
        };
        let target = &rest[..end];
        let params = &rest[end + 1..];
        let is_next = params.split(';').any(|p| {
            let mut kv = p.splitn(2, '=');
            let k = kv.next().unwrap_or("").trim();
            let v = kv.next().unwrap_or("").trim().trim_matches('"');
            k.eq_ignore_ascii_case("rel")
                && v.split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return base.join(target.trim()).ok();
        }
    }
    None
}

/// Splits a `Link` header on the commas between link values (not inside `<...>` or quotes).
fn split_links(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_angle = false;
    let mut in_quote = false;
    for (i, c) in s.char_indices() {
        match c {
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            '"' if !in_angle => in_quote = !in_quote,
            ',' if !in_angle && !in_quote => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}
