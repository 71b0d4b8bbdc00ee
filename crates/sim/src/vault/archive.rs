//! The objects a completed Vault mail export leaves in Cloud Storage, as the "Vault export
//! contents" page lists them: one ZIP per account holding its `.mbox`, beside them the
//! metadata XML, the results-count CSV, error reports when the export met errors and a file
//! of MD5 checksums; with the hashes Storage reports (MD5, CRC32C).
use std::io::{Read as _, Write as _};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::{Digest as _, Md5};

use crate::google::mbox::{MboxReader, MboxSpec};

/// One stored Cloud Storage object.
#[derive(Debug)]
pub(super) struct StoredObject {
    pub bytes: Vec<u8>,
    /// base64 of the MD5 digest, as `md5Hash` and `x-goog-hash: md5=`.
    pub md5_b64: String,
    /// base64 of the big-endian CRC32C, as `crc32c` and `x-goog-hash: crc32c=`.
    pub crc32c_b64: String,
    /// Export that wrote it (deleted with it).
    pub export_id: String,
    /// Generation number (microseconds of creation, as Storage uses).
    pub generation: i64,
    /// RFC 3339 creation time.
    pub created: String,
}

impl StoredObject {
    pub(super) fn new(bytes: Vec<u8>, export_id: &str, generation: i64, created: String) -> Self {
        let md5_b64 = STANDARD.encode(Md5::digest(&bytes));
        let crc32c_b64 = STANDARD.encode(crc32c(&bytes).to_be_bytes());
        StoredObject {
            bytes,
            md5_b64,
            crc32c_b64,
            export_id: export_id.to_string(),
            generation,
            created,
        }
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Cloud Storage computes it.
pub(super) fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// What one account's archive holds.
pub(super) struct AccountArchive {
    pub zip: Vec<u8>,
    /// Messages the account owns in the export (what the results-count file says).
    pub messages: u64,
}

/// Why a completed export's files could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ArchiveError {
    #[error("cannot generate the mbox of {email}: {source}")]
    Mbox {
        email: String,
        source: std::io::Error,
    },
    #[error("cannot write the archive of {email}: {source}")]
    Zip {
        email: String,
        source: zip::result::ZipError,
    },
    #[error("{0}")]
    Write(#[from] std::io::Error),
    #[error("export vanished")]
    Vanished,
}

/// Builds the ZIP of one account, holding `{email}.mbox` (deflated). A `short` archive lacks
/// the mbox's last message while `messages` still counts it (an export that came out short).
pub(super) fn account_archive(spec: MboxSpec, short: bool) -> Result<AccountArchive, ArchiveError> {
    let email = spec.user_email.clone();
    let mut mbox = Vec::new();
    MboxReader::new(spec)
        .read_to_end(&mut mbox)
        .map_err(|source| ArchiveError::Mbox {
            email: email.clone(),
            source,
        })?;
    let messages = count_messages(&mbox);
    if short {
        drop_last_message(&mut mbox);
    }
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let zerr = |source| ArchiveError::Zip {
        email: email.clone(),
        source,
    };
    w.start_file(format!("{email}.mbox"), opts).map_err(zerr)?;
    w.write_all(&mbox)?;
    let zip = w.finish().map_err(zerr)?.into_inner();
    Ok(AccountArchive { zip, messages })
}

/// Messages in an mboxrd text: lines starting `From ` (body lines are escaped `>From `).
fn count_messages(mbox: &[u8]) -> u64 {
    let starts = mbox
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"From "));
    starts.count() as u64
}

/// Cuts the mbox before its last `From ` line: its last message goes (all of it when it has one).
fn drop_last_message(mbox: &mut Vec<u8>) {
    let last = mbox
        .windows(6)
        .rposition(|w| w == b"\nFrom ")
        .map(|i| i + 1)
        .unwrap_or(0);
    mbox.truncate(last);
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `{export}-metadata.xml`: one document entry per account (the real file holds one per
/// message; its schema is not documented on the contents page).
pub(super) fn metadata_xml(export_name: &str, counts: &[(String, u64)]) -> String {
    let docs: String = counts
        .iter()
        .map(|(email, n)| {
            format!(
                "<Document DocType=\"Message\" Custodian=\"{}\" Messages=\"{n}\"/>",
                xml_escape(email)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Root DataInterchangeType=\"Update\">\
         <Batch name=\"{}\"><Documents>{docs}</Documents></Batch></Root>\n",
        xml_escape(export_name)
    )
}

/// `{export}-results-count.csv`: the accounts of the message owners and the number of
/// messages of each (the page's words; the header is this simulator's guess).
pub(super) fn results_count_csv(counts: &[(String, u64)]) -> String {
    let mut out = String::from("Account,Message Count\r\n");
    for (email, n) in counts {
        out.push_str(&format!("{},{n}\r\n", csv_field(email)));
    }
    out
}

/// `error.csv` (present only when the export met errors; columns guessed).
pub(super) fn error_csv(unknown: &[String]) -> String {
    let mut out = String::from("Account,Error\r\n");
    for email in unknown {
        out.push_str(&format!(
            "{},Account not found: no mail was exported for it\r\n",
            csv_field(email)
        ));
    }
    out
}

/// `{export}-account-exceptions.csv` (Gmail exports with errors; columns guessed).
pub(super) fn account_exceptions_csv(unknown: &[String]) -> String {
    let mut out = String::from("Account,Exception\r\n");
    for email in unknown {
        out.push_str(&format!("{},ACCOUNT_NOT_FOUND\r\n", csv_field(email)));
    }
    out
}

/// The checksums file: the MD5 (hex) of every other file of the export. Its name and
/// columns are not documented: `{export}-checksums.csv` with `File Name,MD5 Hash` is a guess.
pub(super) fn checksums_csv(files: &[(String, Vec<u8>)]) -> String {
    let mut out = String::from("File Name,MD5 Hash\r\n");
    for (name, bytes) in files {
        let hex = hex::encode(Md5::digest(bytes));
        out.push_str(&format!("{},{hex}\r\n", csv_field(name)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_mbox_lacks_its_last_message_only() {
        let mut m = b"From a\nx\n\nFrom b\ny\n\nFrom c\nz\n".to_vec();
        assert_eq!(count_messages(&m), 3);
        drop_last_message(&mut m);
        assert_eq!(m, b"From a\nx\n\nFrom b\ny\n\n");
        assert_eq!(count_messages(&m), 2);
    }

    #[test]
    fn crc32c_matches_the_rfc_3720_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }
}
