//! The files a Google Vault export lists beside its archives ("Vault export contents":
//! `<export>-metadata.xml`, `<export>-results-count.csv`, `error.csv`,
//! `<export>-account-exceptions.csv` and a file of MD5 checksums), and the completeness check
//! they allow: messages extracted per account against the results-count figure, every file
//! the checksums file lists against the downloaded one, and the error reports. The page gives
//! neither the CSV headers nor the checksums file's name: both are read defensively, and a
//! file that does not read says what was expected.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Largest side file read whole (results count, checksums, error reports): far above what
/// thousands of accounts or files take.
const MAX_SIDE_FILE: u64 = 64 * 1024 * 1024;
/// Lines of an error report quoted in a message.
const QUOTED_LINES: usize = 20;

/// What a file of a Vault export is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// `<export>-N.zip`: mbox (or PST) files, extracted.
    Archive,
    /// `<export>-results-count.csv`: accounts and their message counts.
    ResultsCount,
    /// The file of MD5 checksums (name not documented: any name holding `checksum`).
    Checksums,
    /// `error.csv`, `<export>-account-exceptions.csv`: only when the export met errors.
    ErrorReport,
    /// Anything else (`<export>-metadata.xml`, ...): kept as evidence.
    Evidence,
}

/// The role of the downloaded file `path`.
pub fn role(path: &Path) -> FileRole {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".zip") {
        FileRole::Archive
    } else if name.ends_with("-results-count.csv") {
        FileRole::ResultsCount
    } else if name.contains("checksum") {
        FileRole::Checksums
    } else if name == "error.csv"
        || name.ends_with("-error.csv")
        || name.ends_with("-account-exceptions.csv")
    {
        FileRole::ErrorReport
    } else {
        FileRole::Evidence
    }
}

/// A downloaded file of the export with the MD5 computed while it streamed in.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Where it is.
    pub path: PathBuf,
    /// Base64 MD5 of its bytes.
    pub md5: String,
}

/// An extracted mbox file and the archive entry it came from.
#[derive(Debug, Clone)]
pub struct Mbox {
    /// The entry's name as stored in the archive.
    pub entry: String,
    /// Where it was extracted.
    pub path: PathBuf,
}

/// What the check found when nothing is wrong with the files themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Messages per account, as the results-count file gives them.
    pub expected: BTreeMap<String, u64>,
    /// Messages per account, counted in the extracted mbox files.
    pub extracted: BTreeMap<String, u64>,
    /// Why the export is incomplete (count differences, error reports); empty: complete.
    pub problems: Vec<String>,
}

/// Why the export's files do not check out. Messages name the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A file the documented set always holds is not among the export's files.
    #[error("the Vault export lists no {what} among its {count} files; its completeness cannot be checked. Check that the export is a Gmail export that COMPLETED, or set `download.extract.verify` off to take its archives unchecked")]
    Missing {
        /// Which file.
        what: &'static str,
        /// Files the export listed.
        count: usize,
    },
    /// A side file does not read as expected.
    #[error("{}: {problem}; expected {expected}. Vault does not document this file's columns: if Google changed them, report it with the file's first lines", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What the reader expects.
        expected: &'static str,
    },
    /// A file's MD5 is not the one the checksums file lists.
    #[error("{}: lists {name} with MD5 {listed}, but the downloaded {name} has MD5 {got}: the file is damaged or not this export's; remove it and run again", checksums.display())]
    ChecksumMismatch {
        /// The checksums file.
        checksums: PathBuf,
        /// The file listed.
        name: String,
        /// Its MD5 there (hex).
        listed: String,
        /// The downloaded file's MD5 (hex).
        got: String,
    },
    /// The checksums file lists a file the export did not list.
    #[error("{}: lists {name}, which is not among the export's files ({count} listed in cloudStorageSink.files): the export is incomplete; check it in the Vault console before using it", checksums.display())]
    ChecksumUnlisted {
        /// The checksums file.
        checksums: PathBuf,
        /// The file listed.
        name: String,
        /// Files the export listed.
        count: usize,
    },
    /// An extracted mbox cannot be matched to one account of the results-count file.
    #[error("{}: archive entry {entry:?} names none of the {count} accounts of the results-count file, so its messages cannot be checked against it; report the entry name pattern", path.display())]
    UnknownOwner {
        /// The extracted file.
        path: PathBuf,
        /// Its archive entry.
        entry: String,
        /// Accounts in the results-count file.
        count: usize,
    },
    /// The export is incomplete and the workflow does not accept partial exports.
    #[error("the Vault export is incomplete:\n  {}\nThe files downloaded intact: the export itself is incomplete. Check the accounts in the Vault console and export again, or keep it as a partial result (`download.extract.accept_partial`; with vault-mail-export.yaml, `-i accept_partial=true`)", problems.join("\n  "))]
    Incomplete {
        /// One line (or block) per problem.
        problems: Vec<String>,
    },
    /// Reading a file failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Checks the export's `files` and the `mboxes` extracted from its archives.
pub fn check(files: &[Downloaded], mboxes: &[Mbox]) -> Result<Verdict, CheckError> {
    let of_role = |r: FileRole| files.iter().filter(move |f| role(&f.path) == r);
    let missing = |what| CheckError::Missing {
        what,
        count: files.len(),
    };
    let counts = of_role(FileRole::ResultsCount)
        .next()
        .ok_or_else(|| missing("<export>-results-count.csv"))?;
    let sums = of_role(FileRole::Checksums)
        .next()
        .ok_or_else(|| missing("checksums file"))?;
    check_checksums(&sums.path, files)?;
    let expected = read_results_count(&counts.path)?;
    let extracted = count_by_account(mboxes, &expected)?;
    let mut problems = count_differences(&expected, &extracted);
    for report in of_role(FileRole::ErrorReport) {
        problems.push(quote_report(&report.path)?);
    }
    Ok(Verdict {
        expected,
        extracted,
        problems,
    })
}

/// Per account in either the results-count file or the extracted mboxes: messages
/// extracted against the results-count figure (None: the file does not list the account).
pub fn custodian_counts(v: &Verdict) -> Vec<crate::events::CustodianCount> {
    let accounts: std::collections::BTreeSet<&String> =
        v.expected.keys().chain(v.extracted.keys()).collect();
    accounts
        .into_iter()
        .map(|a| crate::events::CustodianCount {
            custodian: a.clone(),
            exported: v.extracted.get(a).copied().unwrap_or(0),
            vendor_count: v.expected.get(a).copied(),
        })
        .collect()
}

/// One line per account whose extracted messages differ from its results-count figure.
fn count_differences(
    expected: &BTreeMap<String, u64>,
    extracted: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (account, &want) in expected {
        let got = extracted.get(account).copied().unwrap_or(0);
        if got < want {
            out.push(format!(
                "account {account}: the results-count file says {want} messages, {got} were extracted ({} missing)",
                want - got
            ));
        } else if got > want {
            out.push(format!(
                "account {account}: the results-count file says {want} messages, {got} were extracted ({} more)",
                got - want
            ));
        }
    }
    for (account, got) in extracted {
        if !expected.contains_key(account) {
            out.push(format!(
                "account {account}: {got} messages were extracted, but the results-count file does not list the account"
            ));
        }
    }
    out
}

fn read_side_file(path: &Path) -> Result<String, CheckError> {
    let io = |source| CheckError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_SIDE_FILE {
        return Err(CheckError::Unreadable {
            path: path.to_path_buf(),
            problem: format!("it has {len} bytes"),
            expected: "a CSV file of at most 64 MiB",
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Ok(String::from_utf8_lossy(&bytes)
        .trim_start_matches('\u{feff}')
        .to_string())
}

/// The rows of a CSV text: comma-separated, fields optionally in double quotes (`""` inside
/// is a quote), blank lines left out.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows.retain(|r| r.iter().any(|f| !f.trim().is_empty()));
    rows
}

const RESULTS_COUNT_SHAPE: &str = "a header row, then one row per account with its email address and its number of messages (e.g. `alice@example.com,120`)";

/// `<export>-results-count.csv`: account → messages. The column of each is found by its
/// header (`account`/`email`/`custodian`, `count`/`messages`), else by its content.
fn read_results_count(path: &Path) -> Result<BTreeMap<String, u64>, CheckError> {
    let rows = csv_rows(&read_side_file(path)?);
    let bad = |problem: String| CheckError::Unreadable {
        path: path.to_path_buf(),
        problem,
        expected: RESULTS_COUNT_SHAPE,
    };
    // The first column whose header holds one of `words`, other than `not`.
    let header_at = |row: &[String], words: &[&str], not: Option<usize>| {
        row.iter().enumerate().position(|(i, h)| {
            let h = h.to_ascii_lowercase();
            Some(i) != not && words.iter().any(|w| h.contains(w))
        })
    };
    let mut body = rows.as_slice();
    let mut columns = (None, None);
    if let Some(first) = rows.first().filter(|r| !r.iter().any(|f| f.contains('@'))) {
        let account = header_at(
            first,
            &["account", "email", "custodian", "owner", "user"],
            None,
        );
        columns = (
            account,
            header_at(first, &["count", "messages", "number", "total"], account),
        );
        body = &rows[1..];
    }
    let mut out = BTreeMap::new();
    for (i, row) in body.iter().enumerate() {
        let line = i + 1 + usize::from(body.len() < rows.len());
        let account = columns
            .0
            .and_then(|c| row.get(c))
            .or_else(|| row.iter().find(|f| f.contains('@')))
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| a.contains('@'));
        let count = columns
            .1
            .and_then(|c| row.get(c))
            .or_else(|| {
                row.iter()
                    .find(|f| !f.trim().is_empty() && f.trim().bytes().all(|b| b.is_ascii_digit()))
            })
            .and_then(|n| n.trim().parse::<u64>().ok());
        match (account, count) {
            (Some(a), Some(n)) => *out.entry(a).or_insert(0) += n,
            _ => {
                return Err(bad(format!(
                    "row {line} ({:?}) holds no email address with a message count",
                    row.join(",")
                )))
            }
        }
    }
    Ok(out)
}

/// An MD5 written as 32 hex digits or as base64 (Cloud Storage's `md5Hash`).
fn md5_of(field: &str) -> Option<[u8; 16]> {
    let f = field.trim();
    let bytes = if f.len() == 32 && f.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(f).ok()?
    } else if f.len() == 24 && f.ends_with("==") {
        base64::engine::general_purpose::STANDARD.decode(f).ok()?
    } else {
        return None;
    };
    bytes.try_into().ok()
}

/// The last path component of a listed name (Vault may list object names).
fn base_name(name: &str) -> &str {
    name.trim().rsplit(['/', '\\']).next().unwrap_or_default()
}

/// Every file the checksums file lists matches the downloaded one. Rows are a name and an
/// MD5 (hex or base64) in any order, comma-separated or `md5sum`-style; a first row
/// without an MD5 is a header.
fn check_checksums(path: &Path, files: &[Downloaded]) -> Result<(), CheckError> {
    let rows = csv_rows(&read_side_file(path)?);
    let mut listed = 0;
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<String> = if row.len() == 1 {
            row[0].split_whitespace().map(str::to_string).collect()
        } else {
            row.clone()
        };
        let hash = fields.iter().position(|f| md5_of(f).is_some());
        let name = fields
            .iter()
            .enumerate()
            .find(|(j, f)| Some(*j) != hash && !f.trim().is_empty())
            .map(|(_, f)| base_name(f.trim_start_matches('*')).to_string());
        let (Some(h), Some(name)) = (hash.and_then(|h| md5_of(&fields[h])), name) else {
            if i == 0 {
                continue;
            }
            return Err(CheckError::Unreadable {
                path: path.to_path_buf(),
                problem: format!(
                    "row {} ({:?}) holds no file name with an MD5",
                    i + 1,
                    row.join(",")
                ),
                expected: "one row per file: its name and its MD5 (32 hex digits or base64)",
            });
        };
        listed += 1;
        let Some(f) = files.iter().find(|f| {
            f.path
                .file_name()
                .is_some_and(|n| n.to_string_lossy() == name)
        }) else {
            return Err(CheckError::ChecksumUnlisted {
                checksums: path.to_path_buf(),
                name,
                count: files.len(),
            });
        };
        let got = base64::engine::general_purpose::STANDARD
            .decode(f.md5.trim())
            .unwrap_or_default();
        if got != h {
            return Err(CheckError::ChecksumMismatch {
                checksums: path.to_path_buf(),
                name,
                listed: hex::encode(h),
                got: hex::encode(got),
            });
        }
    }
    if listed == 0 {
        return Err(CheckError::Unreadable {
            path: path.to_path_buf(),
            problem: "it lists no file".into(),
            expected: "one row per file: its name and its MD5 (32 hex digits or base64)",
        });
    }
    Ok(())
}

/// Messages in an mbox file, read as a stream: lines starting `From ` (mboxrd and mboxo
/// escape such body lines as `>From `).
pub(crate) fn count_messages(path: &Path) -> Result<u64, CheckError> {
    let io = |source| CheckError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut r = BufReader::with_capacity(256 * 1024, std::fs::File::open(path).map_err(io)?);
    let mut line = Vec::with_capacity(1024);
    let mut n = 0;
    loop {
        line.clear();
        // Long lines are read whole; only their first bytes matter.
        if r.read_until(b'\n', &mut line).map_err(io)? == 0 {
            return Ok(n);
        }
        if line.starts_with(b"From ") {
            n += 1;
        }
    }
}

/// Messages per account: each mbox belongs to the account its entry name holds (the
/// longest that matches), or to the only account of an export of one.
fn count_by_account(
    mboxes: &[Mbox],
    expected: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>, CheckError> {
    let mut out = BTreeMap::new();
    for m in mboxes {
        let entry = m.entry.to_ascii_lowercase();
        let owner = expected
            .keys()
            .filter(|a| entry.contains(a.as_str()))
            .max_by_key(|a| a.len())
            .or_else(|| expected.keys().next().filter(|_| expected.len() == 1))
            .ok_or_else(|| CheckError::UnknownOwner {
                path: m.path.clone(),
                entry: m.entry.clone(),
                count: expected.len(),
            })?;
        *out.entry(owner.clone()).or_insert(0) += count_messages(&m.path)?;
    }
    Ok(out)
}

/// An error report quoted for a message: its name and first lines.
fn quote_report(path: &Path) -> Result<String, CheckError> {
    let text = read_side_file(path)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = format!(
        "{} (the export met errors; {} line(s)):",
        path.display(),
        lines.len()
    );
    for l in lines.iter().take(QUOTED_LINES) {
        let l: String = l.chars().take(300).collect();
        out.push_str(&format!("\n    {l}"));
    }
    if lines.len() > QUOTED_LINES {
        out.push_str(&format!("\n    ... ({} more)", lines.len() - QUOTED_LINES));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    fn put(dir: &Path, name: &str, text: &str) -> Downloaded {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Downloaded {
            md5: base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(text)),
            path,
        }
    }

    fn sums(files: &[&Downloaded]) -> String {
        let mut out = String::from("File Name,MD5 Hash\n");
        for f in files {
            let md5 = base64::engine::general_purpose::STANDARD
                .decode(&f.md5)
                .unwrap();
            out.push_str(&format!(
                "{},{}\n",
                f.path.file_name().unwrap().to_string_lossy(),
                hex::encode(md5)
            ));
        }
        out
    }

    #[test]
    fn roles_follow_the_documented_names() {
        for (name, r) in [
            ("q4-1.zip", FileRole::Archive),
            ("q4-results-count.csv", FileRole::ResultsCount),
            ("q4-checksums.csv", FileRole::Checksums),
            ("error.csv", FileRole::ErrorReport),
            ("q4-account-exceptions.csv", FileRole::ErrorReport),
            ("q4-metadata.xml", FileRole::Evidence),
            ("q4-metadata.csv", FileRole::Evidence),
        ] {
            assert_eq!(role(Path::new(name)), r, "{name}");
        }
    }

    #[test]
    fn results_count_reads_headers_in_any_order_and_without_them() {
        let d = tempfile::tempdir().unwrap();
        for text in [
            "Account,Message Count\r\nAlice@Example.com,3\r\nbob@example.com,2\r\n",
            "\u{feff}\"Messages\",\"Email\"\n3,alice@example.com\n2,\"bob@example.com\"\n",
            "alice@example.com,3\nbob@example.com,2\n",
        ] {
            let f = put(d.path(), "x-results-count.csv", text);
            let got = read_results_count(&f.path).unwrap();
            assert_eq!(
                got,
                BTreeMap::from([
                    ("alice@example.com".into(), 3),
                    ("bob@example.com".into(), 2)
                ]),
                "{text}"
            );
        }
        let f = put(
            d.path(),
            "x-results-count.csv",
            "Account,Count\nalice,three\n",
        );
        let e = read_results_count(&f.path).unwrap_err().to_string();
        assert!(
            e.contains("row 2 (\"alice,three\") holds no email address with a message count")
                && e.contains("expected a header row, then one row per account"),
            "{e}"
        );
    }

    #[test]
    fn a_short_account_a_damaged_file_and_error_reports_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let mbox_a = put(
            d.path(),
            "alice@example.com.mbox",
            "From a\nx\nFrom b\n>From c\n",
        );
        let mbox_b = put(d.path(), "bob@example.com.mbox", "From a\nx\n");
        let zip = put(d.path(), "q4-1.zip", "zip bytes");
        let counts = put(
            d.path(),
            "q4-results-count.csv",
            "Account,Message Count\nalice@example.com,2\nbob@example.com,3\n",
        );
        let sum = put(d.path(), "q4-checksums.csv", &sums(&[&zip, &counts]));
        let mboxes = [
            Mbox {
                entry: "q4/alice@example.com.mbox".into(),
                path: mbox_a.path.clone(),
            },
            Mbox {
                entry: "q4/bob@example.com.mbox".into(),
                path: mbox_b.path.clone(),
            },
        ];
        let files = vec![zip.clone(), counts.clone(), sum.clone()];
        let v = check(&files, &mboxes).unwrap();
        assert_eq!(
            v.problems,
            ["account bob@example.com: the results-count file says 3 messages, 1 were extracted (2 missing)"]
        );
        // An error report is quoted.
        let err = put(
            d.path(),
            "error.csv",
            "Account,Error\ntypo@example.com,not found\n",
        );
        let mut with_err = files.clone();
        with_err.push(err);
        let v = check(&with_err, &mboxes).unwrap();
        assert!(v.problems[1].contains("error.csv (the export met errors; 2 line(s)):\n    Account,Error\n    typo@example.com,not found"), "{:?}", v.problems);
        // A file that is not what the checksums file says fails whatever the workflow accepts.
        let mut damaged = files.clone();
        damaged[0].md5 = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        let e = check(&damaged, &mboxes).unwrap_err();
        assert!(
            matches!(e, CheckError::ChecksumMismatch { ref name, .. } if name == "q4-1.zip"),
            "{e}"
        );
        // No checksums file: the set is not the documented one.
        let e = check(&files[..2], &mboxes).unwrap_err().to_string();
        assert!(
            e.contains("lists no checksums file among its 2 files"),
            "{e}"
        );
    }
}
