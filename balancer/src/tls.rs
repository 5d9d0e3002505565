//! TLS termination: load a PEM certificate chain and key into a rustls acceptor that
//! offers ALPN `h2` and `http/1.1`. Reloaded on SIGHUP by building a new acceptor and swapping
//! it in; connections already established keep their session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsPaths;

/// Errors loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("no private key found in {0}")]
    NoKey(PathBuf),
    /// rustls refused the pair.
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Loads the acceptor for `paths`.
pub fn load_acceptor(paths: &TlsPaths) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = read(&paths.cert)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: paths.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(paths.cert.clone()));
    }
    let key_pem = read(&paths.key)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: paths.key.clone(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(paths.key.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
