//! The API's certificate, re-read when its files change. [`ReloadingCert`]
//! is the rustls certificate resolver: every handshake takes the current
//! certificate from it, and [`ReloadingCert::watch`] polls the files and
//! swaps in a new pair once it parses and the key matches the certificate.
//! A broken or half-written pair keeps the old certificate and logs one
//! warning; the next change is tried again. Each outcome is counted, and the
//! served certificate's expiry exported (`crate::tls::expiry`).

use super::expiry::not_after;
use super::TlsError;
use crate::telemetry::catalog;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the files are looked at. Reading two small files is cheap, and
/// a rotation is served within this long.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The certificate and key the API serves, from two PEM files.
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The bytes `current` was made from at load, where `watch` starts, so
    /// a change between the two is not missed.
    loaded: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl ReloadingCert {
    /// Reads the pair once; at start a bad pair is an error, not a warning.
    pub fn load(cert_file: &Path, key_file: &Path, provider: Arc<CryptoProvider>) -> Result<ReloadingCert, TlsError> {
        let cert = read(cert_file)?;
        let key = read(key_file)?;
        let certified = certified_key(cert_file, &cert, key_file, &key, &provider)?;
        publish_expiry(&certified);
        Ok(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(certified)),
            loaded: (cert, key),
        })
    }

    /// The certificate handshakes are served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls the files every `every` until `shutdown`, swapping in a pair
    /// whose bytes changed and that is valid. Contents are compared, not
    /// modification times: those can be coarse, and a Kubernetes secret
    /// volume swaps a symlink whose targets keep theirs.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut seen = (Some(self.loaded.0.clone()), Some(self.loaded.1.clone()));
        while crate::roles::pause(every, &shutdown).await {
            // Read off the runtime's threads: the files may be on a slow mount.
            let (cert, key) = tokio::join!(tokio::fs::read(&self.cert_file), tokio::fs::read(&self.key_file));
            let now = (cert.ok(), key.ok());
            if now == seen {
                continue;
            }
            seen = now.clone();
            let (Some(cert), Some(key)) = now else {
                metrics::counter!(catalog::API_TLS_RELOADS.name, "outcome" => "refused").increment(1);
                tracing::warn!(cert = %self.cert_file.display(), key = %self.key_file.display(),
                    "TLS certificate or key is unreadable; keeping the current certificate");
                continue;
            };
            match certified_key(&self.cert_file, &cert, &self.key_file, &key, &self.provider) {
                Ok(certified) => {
                    publish_expiry(&certified);
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
                    metrics::counter!(catalog::API_TLS_RELOADS.name, "outcome" => "reloaded").increment(1);
                    tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                }
                // Often a pair caught between its two writes: the next
                // change (the second write) is tried again.
                Err(e) => {
                    metrics::counter!(catalog::API_TLS_RELOADS.name, "outcome" => "refused").increment(1);
                    tracing::warn!(error = %e, "new TLS certificate refused; keeping the current one");
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Exports when `certified` expires (0 when its date cannot be read, which
/// an expiry alert then reports at once rather than never).
fn publish_expiry(certified: &CertifiedKey) {
    let at = certified.cert.first().and_then(|c| not_after(c.as_ref())).unwrap_or(0);
    metrics::gauge!(catalog::API_TLS_CERT_EXPIRY.name).set(at as f64);
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The certificates in a PEM file (at least one).
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(path, &read(path)?)
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::Pem {
        path: path.display().to_string(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not PEM certificates: {}", pem_problem(&e))))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// A PEM error in words (rustls's own shows the marker as a list of bytes).
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => {
            format!("no \"-----END {}-----\" line", String::from_utf8_lossy(end_marker))
        }
        Error::IllegalSectionStart { line } => format!("bad line {:?}", String::from_utf8_lossy(line)),
        Error::NoItemsFound => "none found".into(),
        other => other.to_string(),
    }
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    cert_file: &Path,
    cert: &[u8],
    key_file: &Path,
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(cert_file, cert)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
        path: key_file.display().to_string(),
        problem: format!("no PEM private key: {}", pem_problem(&e)),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Pair {
        cert: cert_file.display().to_string(),
        key: key_file.display().to_string(),
        problem: e.to_string(),
    })
}
