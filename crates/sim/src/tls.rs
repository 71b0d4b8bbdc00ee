//! HTTPS for the simulated MailStore: a self-signed certificate made at start and a TLS listener.
//!
//! The real Administration API answers on `https://<server>:8463` with a self-signed certificate,
//! so clients must trust (or pin) exactly that certificate. The simulator generates one per start
//! with rcgen, for `localhost`, `127.0.0.1` and the listen address, writes it (PEM, public part
//! only) where the client can read it, and serves through rustls directly: nothing here is shared
//! with `crate::vendors`.
//!
//! The certificate is an end-entity certificate (`CA:FALSE`, server-auth usage) signed by its own
//! key, as MailStore's is: webpki accepts it as its own trust anchor, where a `CA:TRUE` certificate
//! used as the server's would be rejected (`CaUsedAsEndEntity`).
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::SimError;

/// How long a client may take to finish the TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The generated server certificate and where its PEM was written.
pub struct SimCertificate {
    /// The PEM file holding the certificate (no key): what a client trusts (`ca_file`).
    pub pem_file: PathBuf,
    /// SHA-256 of the certificate's DER, colon-separated uppercase hex, as
    /// `openssl x509 -noout -fingerprint -sha256` prints it.
    pub sha256: String,
    der: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for SimCertificate {
    // The private key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCertificate")
            .field("pem_file", &self.pem_file)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Colon-separated uppercase hex SHA-256 of `der` (`AB:CD:...`, 32 bytes).
pub fn fingerprint(der: &[u8]) -> String {
    let pairs: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|b| hex::encode_upper([*b]))
        .collect();
    pairs.join(":")
}

impl SimCertificate {
    /// Generates a self-signed end-entity certificate for `localhost`, `127.0.0.1` and `host`,
    /// and writes its PEM to `dir/mailstore-sim-cert.pem` (replacing an older one).
    pub fn generate(dir: &Path, host: IpAddr) -> Result<Self, SimError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            SimError::Setup(format!("MailStore TLS certificate: {what}: {e}"))
        };
        let key = KeyPair::generate().map_err(|e| setup("key generation failed", &e))?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])
            .map_err(|e| setup("bad name", &e))?;
        for ip in [IpAddr::from([127, 0, 0, 1]), host] {
            if !params.subject_alt_names.contains(&SanType::IpAddress(ip)) {
                params.subject_alt_names.push(SanType::IpAddress(ip));
            }
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "auditflow MailStore simulator");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Validity: rcgen's default (1975 to 4096), so no client clock can be outside it.
        let cert = params
            .self_signed(&key)
            .map_err(|e| setup("signing failed", &e))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| setup(&format!("cannot create {}", dir.display()), &e))?;
        let pem_file = dir.join("mailstore-sim-cert.pem");
        std::fs::write(&pem_file, cert.pem())
            .map_err(|e| setup(&format!("cannot write {}", pem_file.display()), &e))?;
        let der = cert.der().clone();
        Ok(SimCertificate {
            pem_file,
            sha256: fingerprint(&der),
            der,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// A rustls acceptor presenting this certificate (ring provider, TLS 1.2 and 1.3).
    fn acceptor(&self) -> Result<TlsAcceptor, SimError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth().with_single_cert(
                    vec![self.der.clone()],
                    PrivateKeyDer::Pkcs8(self.key.clone_key()),
                )
            })
            .map_err(|e| SimError::Setup(format!("MailStore TLS configuration: {e}")))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A listener that hands axum only connections whose TLS handshake succeeded. Handshakes run
/// in their own tasks, so a slow or broken client does not hold up the others.
pub(crate) struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Wraps a bound TCP listener; handshakes use `cert`.
    pub(crate) fn new(listener: TcpListener, cert: &SimCertificate) -> Result<Self, SimError> {
        let local = listener.local_addr().map_err(|source| SimError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let acceptor = cert.acceptor()?;
        let (tx, incoming) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener {
            incoming,
            local,
            accept_task,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("mailstore sim: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!("mailstore sim: TLS handshake from {peer}: {e}"),
                Err(_) => tracing::debug!("mailstore sim: TLS handshake from {peer} timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(c) => c,
            // The accept loop only ends when aborted on drop: wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
