//! Test helpers for this crate's and other crates' tests: a real broker on a temp dir and
//! port 0, in-process, stopped (and drained) on demand. Behind the `test-util` feature.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientConfig, ClientError};
use crate::config::BrokerConfig;
use crate::server::Server;

/// A broker serving on loopback for the length of a test.
#[derive(Debug)]
pub struct TestBroker {
    /// The client address.
    pub addr: SocketAddr,
    /// The metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// The data directory (kept until the `TestBroker` is dropped).
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// Starts a broker with the default configuration (fsync always) on a new temp dir.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a broker, letting `tweak` change the configuration first.
    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir can be made for the test broker");
        Self::start_in(dir, tweak).await
    }

    /// Starts a broker on an existing data directory (to test restarts).
    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut config = BrokerConfig::new(dir.path(), loopback);
        config.metrics_listen = Some(loopback);
        tweak(&mut config);
        let server = Server::bind(config, prometheus_client::registry::Registry::default())
            .await
            .expect("the test broker binds to loopback port 0 and opens its temp dir");
        let addr = server
            .local_addr()
            .expect("a bound listener has an address");
        let metrics_addr = server.metrics_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            addr,
            metrics_addr,
            dir,
            shutdown,
            task,
        }
    }

    /// A client configuration for this broker.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.addr.to_string())
    }

    /// A connected client.
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::connect(self.client_config()).await
    }

    /// Stops the broker (draining it) and returns its data directory for a restart.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.dir
    }
}

/// A tmpfs of a given size mounted over a directory for the length of a test (unmounted when
/// dropped): a disk that fills up on demand. Mounting needs root; callers skip the test with a
/// printed reason when [`Tmpfs::mount`] fails.
#[derive(Debug)]
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount`'s syntax: `2m`) over `dir`; the error is `mount`'s.
    pub fn mount(dir: &std::path::Path, size: &str) -> Result<Self, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Grows or shrinks it in place (what is on it stays).
    ///
    /// # Panics
    /// If the remount fails: the test cannot go on.
    pub fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmpfs can be resized");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a file still open on it (a thread that has not wound down yet) must not leave
        // the mount behind; it goes once the last file is closed.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
