//! The HTTP client of a connection: TLS, timeouts, the redirect policy, and (for a rehearsal)
//! a resolver that cannot leave the machine.
use super::http::error_chain;
use super::redirect::same_origin_redirects;
use super::{ConnectionSettings, VendorError};

/// Builds the HTTP client of a connection: TLS through [`super::tls`] (platform roots,
/// `SSL_CERT_FILE`, `ca_file`, pins, `insecure_tls`), no `Referer`, and redirects followed
/// automatically only within one origin (see [`send_guarded`] for the others).
///
/// No overall timeout is set on the client (downloads may take long); every adapter request
/// carries its own timeout.
pub fn build_client(settings: &ConnectionSettings) -> Result<reqwest::Client, VendorError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let vendor = settings.kind;
    let tls = super::tls::client_config(settings)?;
    let builder = reqwest::Client::builder()
        .connect_timeout(settings.request_timeout)
        .user_agent(concat!("auditflow/", env!("CARGO_PKG_VERSION")))
        .referer(false)
        .redirect(same_origin_redirects())
        .tls_backend_preconfigured(tls);
    let builder = if settings.loopback_only {
        loopback::confine(builder)
    } else {
        builder
    };
    builder.build().map_err(|e| VendorError::Config {
        vendor,
        message: format!("cannot build the HTTP client: {}", error_chain(&e)),
    })
}

/// A client that cannot leave the machine (a rehearsal against the built-in simulator).
mod loopback {
    use std::net::{Ipv4Addr, SocketAddr};

    use reqwest::dns::{Addrs, Name, Resolve, Resolving};
    use url::{Host, Url};

    /// What a refused request's error says.
    pub(super) const REFUSED: &str = "a rehearsal (--dry-run=sim) sends requests to the built-in \
        simulator only: this one names another host and was not sent. Name the vendor through \
        a connection whose base_url comes from its environment variable (as the shipped \
        workflows do), which the rehearsal points at the simulator";

    /// Host names resolve to nothing but `localhost`; a URL with an address that is not a
    /// loopback one goes through a proxy whose name does not resolve. Either way the request
    /// fails before any connection is made, with [`REFUSED`] in its error.
    pub(super) fn confine(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let outside = reqwest::Proxy::custom(|url: &Url| {
            (!is_loopback(url)).then_some("http://outside-the-simulator.invalid")
        });
        builder.proxy(outside).dns_resolver(LoopbackOnly)
    }

    pub(super) fn is_loopback(url: &Url) -> bool {
        match url.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        }
    }

    struct LoopbackOnly;

    impl Resolve for LoopbackOnly {
        fn resolve(&self, name: Name) -> Resolving {
            let local = name.as_str().eq_ignore_ascii_case("localhost");
            Box::pin(async move {
                if local {
                    let addrs: Addrs =
                        Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
                    Ok(addrs)
                } else {
                    Err(REFUSED.into())
                }
            })
        }
    }
}

/// The refusal of a rehearsal's client to leave the machine, when that is what `err` is: a
/// configuration error, not a transient one (trying again changes nothing).
pub fn rehearsal_refusal(err: &reqwest::Error) -> Option<&'static str> {
    error_chain(err)
        .contains(loopback::REFUSED)
        .then_some(loopback::REFUSED)
}
