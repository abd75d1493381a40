//! HTTPS for the coordinator's API, with rustls (ring). [`server_config`]
//! builds the rustls configuration from [`HttpTls`]: the certificate comes
//! from `certs::ReloadingCert`, which re-reads the files when they change so
//! a rotation (cert-manager, an ACME client) needs no restart; with a client
//! CA, clients must present a certificate it signed. `listener::TlsListener`
//! does the handshakes and hands `axum::serve` finished TLS streams, so
//! graceful shutdown works as over plain TCP.
//!
//! - `certs`: PEM reading and the reloading certificate resolver.
//! - `expiry`: `notAfter` of the served certificate, for its gauge.
//! - `listener`: the accept loop with handshakes off it.

mod certs;
mod expiry;
mod listener;

pub use certs::{ReloadingCert, RELOAD_EVERY};
pub use listener::TlsListener;

use crate::config::HttpTls;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// Why the API's TLS could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {problem}")]
    Pem { path: String, problem: String },
    #[error("{cert} and {key}: {problem}")]
    Pair { cert: String, key: String, problem: String },
    #[error("client CA {path}: {problem}")]
    ClientCa { path: String, problem: String },
}

/// The one crypto provider drover's TLS uses, named rather than taken from
/// the process default, which is unset when more than one is compiled in.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration for `tls`, and its certificate resolver (whose
/// [`ReloadingCert::watch`] the caller runs for reloads).
pub fn server_config(tls: &HttpTls) -> Result<(Arc<ServerConfig>, Arc<ReloadingCert>), TlsError> {
    let provider = provider();
    let cert = Arc::new(ReloadingCert::load(&tls.cert_file, &tls.key_file, provider.clone())?);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
    };
    let mut config = builder.with_cert_resolver(cert.clone());
    // Only HTTP/1.1: axum is built without HTTP/2, so offering h2 would make
    // clients that prefer it speak a protocol the server does not.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert))
}

/// A verifier that requires a client certificate signed by a CA in `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let problem = |problem: String| TlsError::ClientCa {
        path: path.display().to_string(),
        problem,
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in certs::read_certs(path)? {
        roots.add(der).map_err(|e| problem(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| problem(e.to_string()))
}
