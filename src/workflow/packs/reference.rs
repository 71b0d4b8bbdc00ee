//! What a `uses:` target names: a file beside the caller, a file in a git repository at a
//! revision (`git+https://host/org/repo.git//dir/file.yaml@v1`), or a file found through
//! `AUDITFLOW_PATH`. Also the one place that takes credentials out of URLs.
use std::fmt;

/// URL schemes of remote `uses:` targets, as written, and what git is given.
const SCHEMES: &[(&str, &str)] = &[
    ("git+https://", "https://"),
    ("git+http://", "http://"),
    ("git+ssh://", "ssh://"),
    ("git+file://", "file://"),
    ("git://", "git://"),
];

/// A file in a git repository at a revision, as a `uses:` target names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// The repository URL given to git, as written (it may hold user info).
    pub fetch_url: String,
    /// The repository URL as written in the workflow, without user info: what logs, errors,
    /// the lock file, the evidence and the cache paths show.
    pub url: String,
    /// The file's path inside the repository (`/`-separated, no `..`).
    pub path: String,
    /// The tag, branch or commit id after `@`.
    pub rev: String,
}

impl RemoteRef {
    /// Whether the revision is a full 40-hex commit id (pinned without a lock file).
    pub fn is_commit_id(&self) -> bool {
        is_commit_id(&self.rev)
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}//{}@{}", self.url, self.path, self.rev)
    }
}

/// Whether `s` is a full SHA-1 commit id.
pub fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a `uses:` target is remote (starts with one of the git URL schemes).
pub fn is_remote(target: &str) -> bool {
    SCHEMES.iter().any(|(s, _)| target.starts_with(s))
}

/// Parses a remote `uses:` target; the error says what is wrong and how it should look.
pub fn parse_remote(target: &str) -> Result<RemoteRef, String> {
    let example = "write it as git+https://host/org/repo.git//path/in/repo.yaml@v1.2.0 \
                   (the repository, `//`, the file, `@` and a tag, branch or commit id)";
    let Some((written, git_scheme)) = SCHEMES.iter().find(|(s, _)| target.starts_with(s)) else {
        return Err(format!("`{}` is not a git URL; {example}", redact(target)));
    };
    let rest = &target[written.len()..];
    let Some((repo, file_rev)) = rest.split_once("//") else {
        return Err(format!(
            "`{}` does not say which file of the repository to use; {example}",
            redact(target)
        ));
    };
    let Some((path, rev)) = file_rev.rsplit_once('@') else {
        return Err(format!("`{}` has no revision; {example}", redact(target)));
    };
    let path = normalize(path)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("`{path}` is not a path inside the repository (no `..` above its top, not empty); {example}"))?;
    if rev.is_empty()
        || rev.starts_with('-')
        || rev.contains("..")
        || rev.contains(char::is_whitespace)
    {
        return Err(format!(
            "`{rev}` is not a tag, branch or commit id; {example}"
        ));
    }
    if repo.is_empty() {
        return Err(format!(
            "`{}` names no repository; {example}",
            redact(target)
        ));
    }
    Ok(RemoteRef {
        fetch_url: format!("{git_scheme}{repo}"),
        url: strip_userinfo(&format!("{written}{repo}")),
        path,
        rev: rev.to_string(),
    })
}

/// `base` joined with the relative `rel` inside a repository, `..` resolved; None when it
/// leaves the repository.
pub fn join_in_repo(base_dir: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    normalize(&format!("{base_dir}/{rel}"))
}

/// A `/`-separated path with `.`, `..` and empty parts resolved; None when `..` goes above
/// the top.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// `url` without the `user:password@` part of its authority.
pub fn strip_userinfo(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_string();
    };
    let start = i + 3;
    let end = url[start..].find('/').map_or(url.len(), |j| start + j);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}{}", &url[..start], &url[start + at + 1..]),
        None => url.to_string(),
    }
}

/// `text` (git's messages, a target as written) with the user info of every URL in it
/// removed.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        let end = rest[start..]
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .map_or(rest.len(), |j| start + j);
        out.push_str(&rest[..start]);
        let authority = &rest[start..end];
        out.push_str(
            authority
                .rfind('@')
                .map_or(authority, |at| &authority[at + 1..]),
        );
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_file_and_revision() {
        let r = parse_remote(
            "git+https://bot:s3cret@git.example.com/sec/playbooks.git//google/./x.yaml@v1.4.0",
        )
        .expect("valid");
        assert_eq!(
            r.fetch_url,
            "https://bot:s3cret@git.example.com/sec/playbooks.git"
        );
        assert_eq!(r.url, "git+https://git.example.com/sec/playbooks.git");
        assert_eq!(
            (r.path.as_str(), r.rev.as_str()),
            ("google/x.yaml", "v1.4.0")
        );
        assert!(!r.is_commit_id());
        let d = parse_remote(
            "git://127.0.0.1:9418/p.git//a.yaml@0123456789abcdef0123456789abcdef01234567",
        )
        .expect("valid");
        assert_eq!(d.fetch_url, "git://127.0.0.1:9418/p.git");
        assert!(d.is_commit_id());
    }

    #[test]
    fn refuses_incomplete_targets_without_showing_passwords() {
        for bad in [
            "git+https://u:pw@h/r.git@v1",
            "git+https://u:pw@h/r.git//x.yaml",
            "git+https://u:pw@h/r.git//../x.yaml@v1",
            "git+https://u:pw@h/r.git//x.yaml@",
        ] {
            let e = parse_remote(bad).expect_err(bad);
            assert!(!e.contains("pw"), "{e}");
            assert!(e.contains("git+https://host/org/repo.git//"), "{e}");
        }
    }

    #[test]
    fn relative_paths_stay_inside_the_repository() {
        assert_eq!(
            join_in_repo("google", "common/f.yaml").as_deref(),
            Some("google/common/f.yaml")
        );
        assert_eq!(
            join_in_repo("google", "../shared/f.yaml").as_deref(),
            Some("shared/f.yaml")
        );
        assert_eq!(join_in_repo("google", "../../f.yaml"), None);
        assert_eq!(join_in_repo("", "/etc/passwd"), None);
    }

    #[test]
    fn credentials_are_removed_from_urls_and_messages() {
        assert_eq!(strip_userinfo("https://a:b@h:8/x"), "https://h:8/x");
        assert_eq!(strip_userinfo("ssh://git@h/x@y"), "ssh://h/x@y");
        assert_eq!(
            redact("fatal: unable to access 'http://u:pw@127.0.0.1:1/r.git/': refused"),
            "fatal: unable to access 'http://127.0.0.1:1/r.git/': refused"
        );
    }
}
