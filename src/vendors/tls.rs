//! TLS trust of a connection: the platform's roots (plus `SSL_CERT_FILE`/`SSL_CERT_DIR`), a
//! `ca_file` that may be the server's own self-signed certificate, SHA-256 pins, and
//! rejections that carry the presented certificate's fingerprint so the user can pin it.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

use super::{ConnectionSettings, VendorError, VendorKind};

/// Why the server's certificate was refused, with what the user needs to pin it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct CertificateRejected {
    /// Why, in words (unknown issuer, self-signed, name mismatch, pin mismatch...).
    pub reason: String,
    /// SHA-256 of the presented certificate, `AB:CD:...`.
    pub fingerprint: String,
    /// The connection pins certificates and this one matched none of the pins.
    pub pin_mismatch: bool,
}

/// The rustls configuration of a connection's client (ring provider, HTTP/2 and 1.1 ALPN).
pub(super) fn client_config(
    settings: &ConnectionSettings,
) -> Result<rustls::ClientConfig, VendorError> {
    let vendor = settings.kind;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_certs = match &settings.ca_file {
        Some(path) => read_ca_file(vendor, path)?,
        None => Vec::new(),
    };
    let env_certs = env_certs();
    let mut extra_roots = ca_certs.clone();
    // Roots the platform verifier would refuse to load (it fails on the first bad one) are
    // left to the exact-certificate match below.
    extra_roots.extend(env_certs.iter().filter(|c| is_loadable_root(c)).cloned());
    // A machine without CA certificates can still reach a pinned or `ca_file` server.
    let platform =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map(Arc::new)
            .map_err(|e| format!("no trusted certificates could be loaded ({e})"));
    let verifier = Verifier {
        platform,
        own_certificates: ca_certs.into_iter().chain(env_certs).collect(),
        pins: settings.tls_pins.clone(),
        insecure: settings.insecure_tls,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| VendorError::Config {
            vendor,
            message: format!("cannot set up TLS: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn is_loadable_root(cert: &CertificateDer<'static>) -> bool {
    rustls::RootCertStore::empty().add(cert.clone()).is_ok()
}

/// Reads a PEM file of certificates (a CA, or the server's own certificate).
fn read_ca_file(
    vendor: VendorKind,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, VendorError> {
    let pem = std::fs::read(path).map_err(|e| VendorError::Config {
        vendor,
        message: format!("cannot read CA file {}: {e}", path.display()),
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| VendorError::Config {
            vendor,
            message: format!("CA file {} holds no valid PEM certificate", path.display()),
        })?;
    if certs.is_empty() {
        return Err(VendorError::Config {
            vendor,
            message: format!(
                "CA file {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        });
    }
    if let Some(i) = certs.iter().position(|c| !is_loadable_root(c)) {
        return Err(VendorError::Config {
            vendor,
            message: format!(
                "certificate {} of CA file {} is not a valid X.509 certificate",
                i + 1,
                path.display()
            ),
        });
    }
    Ok(certs)
}

/// The certificates of `SSL_CERT_FILE` and the files of `SSL_CERT_DIR` (`:`-separated);
/// unreadable files and bad PEM are skipped (as OpenSSL does).
fn env_certs() -> Vec<CertificateDer<'static>> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        files.push(PathBuf::from(f));
    }
    if let Some(dirs) = std::env::var_os("SSL_CERT_DIR") {
        for dir in std::env::split_paths(&dirs) {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        }
    }
    files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .flat_map(|pem| {
            CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `AB:CD:...`, the form `openssl x509 -fingerprint -sha256` prints.
pub fn fingerprint(der: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(der).into();
    let pairs: Vec<String> = digest.iter().map(|b| hex::encode_upper([*b])).collect();
    pairs.join(":")
}

/// Accepts the platform's (and `ca_file`'s) chains; a certificate the user trusts exactly
/// (in `ca_file` or `SSL_CERT_FILE`) even when it is a self-signed CA used as the server's
/// own; or, when pins are set, only a certificate with a pinned SHA-256 (any name).
/// The handshake signature is always checked against the presented certificate's key.
#[derive(Debug)]
struct Verifier {
    /// The system's trust (with `ca_file` and `SSL_CERT_*` as extra roots), or why not.
    platform: Result<Arc<rustls_platform_verifier::Verifier>, String>,
    own_certificates: Vec<CertificateDer<'static>>,
    pins: Vec<[u8; 32]>,
    insecure: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    fn reject(&self, end_entity: &CertificateDer<'_>, reason: String) -> rustls::Error {
        let rejected = CertificateRejected {
            reason,
            fingerprint: fingerprint(end_entity),
            pin_mismatch: !self.pins.is_empty(),
        };
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            rejected,
        ))))
    }

    /// The server's own certificate, trusted as exactly this certificate: only its name is
    /// checked (a self-signed certificate carries no chain to check, and webpki refuses a CA
    /// certificate as a server's own). None when `end_entity` is not one of them.
    fn own_certificate(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
    ) -> Option<Result<ServerCertVerified, rustls::Error>> {
        if !self
            .own_certificates
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return None;
        }
        let checked = rustls::server::ParsedCertificate::try_from(end_entity)
            .and_then(|parsed| rustls::client::verify_server_name(&parsed, server_name));
        Some(match checked {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(self.reject(end_entity, describe(&e))),
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        if !self.pins.is_empty() {
            let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            return if self.pins.contains(&digest) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(self.reject(
                    end_entity,
                    "its SHA-256 fingerprint is not one of the connection's tls_pin_sha256".into(),
                ))
            };
        }
        if let Some(result) = self.own_certificate(end_entity, server_name) {
            return result;
        }
        match &self.platform {
            Ok(platform) => platform
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| self.reject(end_entity, describe(&e))),
            Err(why) => Err(self.reject(end_entity, why.clone())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A verification failure in words a user can act on.
fn describe(e: &rustls::Error) -> String {
    let text = e.to_string();
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "it is not issued by a certificate authority this machine trusts (a self-signed certificate?)".into()
        }
        _ if text.contains("CaUsedAsEndEntity") => {
            "it is a self-signed CA certificate used as the server's own certificate (MailStore Server's default), which no trust store vouches for".into()
        }
        _ => text
            .strip_prefix("invalid peer certificate: ")
            .unwrap_or(&text)
            .to_string(),
    }
}

/// The rejection behind a failed request, when the server's certificate was refused.
pub fn rejection(err: &(dyn std::error::Error + 'static)) -> Option<CertificateRejected> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
        {
            if let Some(r) = other.0.downcast_ref::<CertificateRejected>() {
                return Some(r.clone());
            }
        }
        // `io::Error::source` skips the error it wraps (it gives that error's source).
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The message of a refused certificate: why, the fingerprint, and how to trust it.
pub fn rejection_message(r: &CertificateRejected) -> String {
    let how = if r.pin_mismatch {
        "if the server's certificate was replaced on purpose, check the new fingerprint on the \
         server and update tls_pin_sha256"
    } else {
        "if this is your server's certificate (check the fingerprint on the server, e.g. \
         `openssl x509 -noout -fingerprint -sha256 -in server.pem`), trust it with \
         `tls_pin_sha256: \"<fingerprint>\"` on the connection, or with `ca_file:` naming a PEM \
         file of the certificate (or of the CA that issued it), or SSL_CERT_FILE"
    };
    format!(
        "the server's TLS certificate was refused: {}. Its SHA-256 fingerprint is {}; {how}. \
         Not retried.",
        r.reason, r.fingerprint
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_upper_hex_with_colons() {
        let f = fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF:"), "{f}");
    }

    #[test]
    fn rejection_is_found_through_io_errors() {
        let rejected = CertificateRejected {
            reason: "r".into(),
            fingerprint: "AA".into(),
            pin_mismatch: false,
        };
        let tls = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(rejected),
        )));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let found = rejection(&io).expect("found");
        assert_eq!(found.fingerprint, "AA");
        assert!(rejection_message(&found).contains("tls_pin_sha256"));
    }
}
