//! Starting and stopping a balancer in a test, and bounded waiting.

use std::net::SocketAddr;
use std::time::Duration;

use balancer::testing::FakeBackend;
use balancer::{BackendSpec, Balancer, BalancerError, Config, Handle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A balancer running inside the test.
pub struct TestBalancer {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub handle: Handle,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), BalancerError>>>,
}

/// A config for `backends` with fast health checks and the admin listener on port 0.
pub fn config(backends: &[&FakeBackend]) -> Config {
    let specs = backends
        .iter()
        .map(|b| BackendSpec::new(b.addr()))
        .collect();
    let mut c = Config::new("127.0.0.1:0".parse().unwrap(), specs);
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    c.health.interval = Duration::from_millis(50);
    // Generous: a refused connect or a 503 fails a check at once, while a loaded CI machine
    // must not fail a live backend's check by being slow.
    c.health.timeout = Duration::from_secs(5);
    c.health.rise = 1;
    c.health.fall = 1;
    c.seed = Some(7);
    c.timeouts.drain = Duration::from_secs(5);
    c
}

impl TestBalancer {
    /// Binds and spawns `config`.
    pub fn start(config: Config) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let b = Balancer::bind(config).expect("bind balancer");
        let addr = b.listen_addr();
        let admin = b.admin_addr().expect("admin listener configured");
        let handle = b.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(b.run(shutdown.clone()));
        Self {
            addr,
            admin,
            handle,
            shutdown,
            task: Some(task),
        }
    }

    /// Drains and waits (bounded) for `run` to return.
    pub async fn stop(mut self) -> Result<(), BalancerError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("balancer stopped in time")
            .expect("balancer task did not panic")
    }

    /// Begins the drain without waiting.
    pub fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    /// The `run` task, for tests that cancel themselves.
    pub fn take_task(&mut self) -> JoinHandle<Result<(), BalancerError>> {
        self.task.take().expect("task present")
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub use plumbing::testing::wait_until;

/// The status row of `addr`.
pub fn row(handle: &Handle, addr: SocketAddr) -> Option<balancer::admin::status::BackendStatus> {
    handle
        .status()
        .backends
        .into_iter()
        .find(|b| b.addr == addr.to_string())
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes from a raw backend's connection into `buf`; false at EOF.
pub async fn fill(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut tmp = [0u8; 16 * 1024];
    match s.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}
