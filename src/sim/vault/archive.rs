//! The objects a completed Vault mail export leaves in Cloud Storage: one ZIP per account
//! holding its `.mbox` and a metadata XML, with the hashes Storage reports (MD5, CRC32C).
use std::io::{Read as _, Write as _};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::{Digest as _, Md5};

use crate::sim::google::mbox::{MboxReader, MboxSpec};

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
    /// Messages in its mbox.
    pub messages: u64,
}

/// Builds the ZIP of one account: `{email}.mbox` (deflated) and `{export}-metadata.xml`.
pub(super) fn account_archive(spec: MboxSpec, export_name: &str) -> Result<AccountArchive, String> {
    let email = spec.user_email.clone();
    let mut mbox = Vec::new();
    MboxReader::new(spec)
        .read_to_end(&mut mbox)
        .map_err(|e| format!("cannot generate the mbox of {email}: {e}"))?;
    let messages = count_messages(&mbox);
    let xml = metadata_xml(export_name, &email, messages);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let zerr = |e: zip::result::ZipError| format!("cannot write the archive of {email}: {e}");
    w.start_file(format!("{email}.mbox"), opts).map_err(zerr)?;
    w.write_all(&mbox).map_err(|e| e.to_string())?;
    w.start_file(format!("{export_name}-metadata.xml"), opts)
        .map_err(zerr)?;
    w.write_all(xml.as_bytes()).map_err(|e| e.to_string())?;
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

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn metadata_xml(export_name: &str, email: &str, messages: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Root DataInterchangeType=\"Update\">\
         <Batch name=\"{}\"><Documents><Document DocType=\"Message\" Custodian=\"{}\" \
         Messages=\"{messages}\"/></Documents></Batch></Root>\n",
        xml_escape(export_name),
        xml_escape(email)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_rfc_3720_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }
}
