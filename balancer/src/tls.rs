//! TLS termination: load a PEM certificate chain and key into a rustls acceptor that
//! offers ALPN `h2` and `http/1.1`. Reloaded on SIGHUP by building a new acceptor and swapping
//! it in; connections already established keep their session.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
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

/// Loads the acceptor for `paths`.
pub fn load_acceptor(paths: &TlsPaths) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .and_then(|certs| certs.collect())
        .map_err(|error| unreadable(&paths.cert, error))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(paths.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey(paths.key.clone()),
        error => unreadable(&paths.key, error),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A file that cannot be read or holds malformed PEM, as [`TlsError::Read`] with the
/// wording operators saw before the PEM parsing moved from `rustls-pemfile` into
/// rustls' own types.
fn unreadable(path: &Path, error: pem::Error) -> TlsError {
    let invalid = |text: String| io::Error::new(io::ErrorKind::InvalidData, text);
    let source = match error {
        pem::Error::Io(source) => source,
        pem::Error::MissingSectionEnd { end_marker } => invalid(format!(
            "section end {:?} missing",
            String::from_utf8_lossy(&end_marker)
        )),
        pem::Error::IllegalSectionStart { line } => invalid(format!(
            "illegal section start: {:?}",
            String::from_utf8_lossy(&line)
        )),
        pem::Error::Base64Decode(text) => invalid(text),
        other => invalid(format!("{other:?}")),
    };
    TlsError::Read {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("fixtures")
            .join(name)
    }

    /// The error loading `cert` and `key` (file contents; `None`: no such file).
    fn refusal(cert: Option<&[u8]>, key: Option<&[u8]>) -> (String, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        if let Some(c) = cert {
            std::fs::write(&paths.cert, c).unwrap();
        }
        if let Some(k) = key {
            std::fs::write(&paths.key, k).unwrap();
        }
        let Err(error) = load_acceptor(&paths) else {
            panic!("loaded {paths:?}");
        };
        let error = error.to_string();
        (error, paths.cert, paths.key)
    }

    #[test]
    fn good_files_load() {
        let paths = TlsPaths {
            cert: fixture("test-cert.pem"),
            key: fixture("test-key.pem"),
        };
        assert!(load_acceptor(&paths).is_ok());
    }

    #[test]
    fn missing_empty_and_malformed_files_are_refused_by_name() {
        let cert = std::fs::read(fixture("test-cert.pem")).unwrap();
        let (e, c, _) = refusal(None, None);
        assert!(
            e.starts_with(&format!("cannot read {}: ", c.display())),
            "{e}"
        );
        assert!(e.contains("os error 2"), "{e}");
        let (e, c, _) = refusal(Some(b""), None);
        assert_eq!(e, format!("no certificate found in {}", c.display()));
        let (e, c, _) = refusal(Some(b"-----BEGIN CERTIFICATE-----\nMIIB\n"), None);
        assert_eq!(
            e,
            format!(
                "cannot read {}: section end \"CERTIFICATE\" missing",
                c.display()
            )
        );
        let (e, c, _) = refusal(
            Some(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            None,
        );
        assert_eq!(
            e,
            format!("cannot read {}: InvalidCharacter(33)", c.display())
        );
        let (e, _, k) = refusal(Some(&cert), None);
        assert!(
            e.starts_with(&format!("cannot read {}: ", k.display())),
            "{e}"
        );
        let (e, _, k) = refusal(Some(&cert), Some(b""));
        assert_eq!(e, format!("no private key found in {}", k.display()));
        let (e, _, k) = refusal(Some(&cert), Some(&cert));
        assert_eq!(e, format!("no private key found in {}", k.display()));
        let (e, _, k) = refusal(Some(&cert), Some(b"-----BEGIN PRIVATE KEY-----\nMIIB\n"));
        assert_eq!(
            e,
            format!(
                "cannot read {}: section end \"PRIVATE KEY\" missing",
                k.display()
            )
        );
    }
}
