//! TLS termination with ALPN: HTTP/1.1 and h2 over TLS, a large body over h2, and an
//! unreadable certificate refused at bind time.

use std::path::PathBuf;
use std::sync::Arc;

use balancer::config::TlsPaths;
use balancer::testing::FakeBackend;
use balancer::{Balancer, BalancerError};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::{TestBalancer, config};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn connector(alpn: &[&[u8]]) -> TlsConnector {
    let pem = std::fs::read(fixture("test-cert.pem")).unwrap();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

fn tls_config(a: &FakeBackend) -> balancer::Config {
    let mut cfg = config(&[a]);
    cfg.tls = Some(TlsPaths {
        cert: fixture("test-cert.pem"),
        key: fixture("test-key.pem"),
    });
    cfg
}

#[tokio::test]
async fn tls_http1_and_h2_via_alpn() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(tls_config(&a));
    let name = ServerName::try_from("localhost").unwrap();

    // HTTP/1.1 over TLS.
    let tcp = TcpStream::connect(lb.addr).await.unwrap();
    let tls = connector(&[b"http/1.1"])
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let req = Request::get("/one")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    drop(send);
    let _ = driver.await;

    // h2 over TLS, with a body larger than any single frame or window both ways.
    let tcp = TcpStream::connect(lb.addr).await.unwrap();
    let tls = connector(&[b"h2", b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let big = Bytes::from(vec![b'q'; 3 * 1024 * 1024]);
    let req = Request::post("https://localhost/echo")
        .body(Full::new(big.clone()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), big.len());
    drop(send);
    driver.abort();
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn unreadable_certificate_is_refused_at_bind() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = tls_config(&a);
    cfg.tls = Some(TlsPaths {
        cert: fixture("missing.pem"),
        key: fixture("test-key.pem"),
    });
    let err = Balancer::bind(cfg).unwrap_err();
    assert!(matches!(err, BalancerError::Tls(_)), "{err}");
    assert!(err.to_string().contains("missing.pem"));
}

/// The certificate the server presented on a fresh connection.
async fn served_cert(addr: std::net::SocketAddr, trust: &[&str]) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    for name in trust {
        let pem = std::fs::read(fixture(name)).unwrap();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn certificate_is_reloaded_for_new_connections() {
    let a = FakeBackend::start("a").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::copy(fixture("test-cert.pem"), &cert).unwrap();
    std::fs::copy(fixture("test-key.pem"), &key).unwrap();
    let mut cfg = config(&[&a]);
    cfg.tls = Some(TlsPaths {
        cert: cert.clone(),
        key: key.clone(),
    });
    let lb = TestBalancer::start(cfg);
    let trust = ["test-cert.pem", "test-cert2.pem"];
    let first = served_cert(lb.addr, &trust).await;
    std::fs::copy(fixture("test-cert2.pem"), &cert).unwrap();
    std::fs::copy(fixture("test-key2.pem"), &key).unwrap();
    lb.handle.reload_tls().unwrap();
    let second = served_cert(lb.addr, &trust).await;
    assert_ne!(first, second, "new connections get the new certificate");
    lb.stop().await.unwrap();
}
