//! Safe local file names for downloads (URL redaction lives in `vendors::http`).
use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;
use url::Url;

use super::DownloadError;
use crate::vendors::http::redact_url;

/// Longest file name accepted, in bytes (the limit of common file systems).
const MAX_NAME_BYTES: usize = 255;

/// The file name a URL points at: its last path segment, percent-decoded and checked by the
/// same rules as [`safe_join`]. The query string never takes part.
pub fn file_name_from_url(url: &Url) -> Result<String, DownloadError> {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("");
    if last.is_empty() {
        return Err(DownloadError::BadName {
            name: redact_url(url),
            reason: "the URL path ends without a file name; give the file a name in the workflow"
                .to_string(),
        });
    }
    let decoded = percent_decode_str(last)
        .decode_utf8()
        .map_err(|_| DownloadError::BadName {
            name: last.to_string(),
            reason: "the percent-decoded name is not valid UTF-8".to_string(),
        })?;
    check_name(&decoded)?;
    Ok(decoded.into_owned())
}

/// `dir/name`, after checking that `name` is one plain file name that stays inside `dir`.
///
/// Rejected: empty names, `.` and `..`, path separators (`/`, `\`), absolute paths, control
/// characters, invisible direction/format characters, and names over 255 bytes.
pub fn safe_join(dir: &Path, name: &str) -> Result<PathBuf, DownloadError> {
    check_name(name)?;
    Ok(dir.join(name))
}

fn check_name(name: &str) -> Result<(), DownloadError> {
    let bad = |reason: &str| {
        Err(DownloadError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name == "." || name == ".." {
        return bad("the name refers to a directory");
    }
    if name.contains(['/', '\\']) {
        return bad("the name contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return bad("the name contains control characters");
    }
    if name.chars().any(is_invisible_format_char) {
        return bad("the name contains invisible direction or format characters");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("the name is longer than 255 bytes");
    }
    // Belt and braces: exactly one normal component, whatever the platform's rules.
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(c)), None) if c == name => Ok(()),
        _ => bad("the name is not a single plain file name"),
    }
}

/// Zero-width and bidirectional-override characters, which make a name display as another.
fn is_invisible_format_char(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    #[test]
    fn redaction_drops_query_fragment_and_userinfo() {
        let u = url(
            "https://user:pw@storage.example.com/b/export-1.mbox.gpg?access_token=SECRET&x=1#frag",
        );
        assert_eq!(
            redact_url(&u),
            "https://storage.example.com/b/export-1.mbox.gpg"
        );
    }

    #[test]
    fn name_from_url_is_decoded_last_segment_without_query() {
        let u = url("https://h/d/file%20name.mbox.gpg?access_token=SECRET");
        assert_eq!(file_name_from_url(&u).expect("name"), "file name.mbox.gpg");
    }

    #[test]
    fn names_from_url_that_escape_or_are_empty_are_rejected() {
        for s in [
            "https://h/",
            "https://h/d/",
            "https://h/d/..%2F..%2Fetc%2Fpasswd",
            "https://h/d/%2Fetc%2Fpasswd",
            "https://h/d/a%5Cb",
            "https://h/d/%2e%2e",
            "https://h/d/a%00b",
            "https://h/d/a%0Ab",
            "https://h/d/%FF%FE",
        ] {
            assert!(
                matches!(
                    file_name_from_url(&url(s)),
                    Err(DownloadError::BadName { .. })
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn safe_join_accepts_plain_names_only() {
        let dir = Path::new("/exports");
        assert_eq!(
            safe_join(dir, "export-1.mbox.gpg").expect("plain"),
            PathBuf::from("/exports/export-1.mbox.gpg")
        );
        let long = "a".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "a\nb",
            "a\u{0}b",
            "\u{202E}gpg.exe",
            long.as_str(),
        ] {
            assert!(safe_join(dir, bad).is_err(), "{bad:?}");
        }
    }
}
