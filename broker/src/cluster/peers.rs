//! Connections to the other brokers of the cluster: one pipelined [`Client`] per peer, made
//! when first needed and made again after it breaks.
//!
//! Every request between brokers (Raft's and replication's) goes through here, with the
//! cluster's `--peer-timeout` as its deadline. A peer that cannot be reached answers
//! [`ClientError::Connect`] at once until the next attempt; nothing here retries a request:
//! Raft and the replication drivers decide that. A peer becoming unreachable, and reachable
//! again, is logged here once each; openraft's own line for every failed RPC to it is dropped
//! from the log ([`is_unreachable_noise`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex as AsyncMutex;

use super::NodeId;
use crate::client::{Client, ClientConfig, ClientError};
use crate::protocol::{Request, Response};

/// How long one attempt to connect to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// After a failed connect, calls to that peer fail at once for this long (Raft's heartbeats
/// and every partition's replication would otherwise each wait for a dead peer).
const RECONNECT_AFTER: Duration = Duration::from_millis(200);

/// The other brokers, by node id.
#[derive(Debug)]
pub struct Peers {
    me: NodeId,
    addrs: HashMap<NodeId, String>,
    token: Option<String>,
    timeout: Duration,
    /// One client per peer (or when its last connect failed); the async lock makes
    /// concurrent callers share one connect.
    clients: HashMap<NodeId, AsyncMutex<Slot>>,
    /// Connections made, for the metrics.
    connects: Mutex<u64>,
}

impl Peers {
    /// The peers of node `me` at `addrs` (which may include `me`, left out).
    pub fn new(
        me: NodeId,
        addrs: &std::collections::BTreeMap<NodeId, String>,
        token: Option<String>,
        timeout: Duration,
    ) -> Self {
        let addrs: HashMap<NodeId, String> = addrs
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        let clients = addrs
            .keys()
            .map(|id| (*id, AsyncMutex::new(Slot::default())))
            .collect();
        Self {
            me,
            addrs,
            token,
            timeout,
            clients,
            connects: Mutex::new(0),
        }
    }

    /// The ids of the other brokers.
    pub fn ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.addrs.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// This broker's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    async fn client(&self, node: NodeId) -> Result<Client, ClientError> {
        let (Some(slot), Some(addr)) = (self.clients.get(&node), self.addrs.get(&node)) else {
            return Err(ClientError::Protocol(format!("node {node} is not a peer")));
        };
        let mut slot = slot.lock().await;
        if let Some(c) = slot.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        if let Some(failed) = slot.failed_at
            && failed.elapsed() < RECONNECT_AFTER
        {
            return Err(ClientError::Connect {
                addr: addr.to_string(),
                cause: std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the last connect failed moments ago",
                ),
            });
        }
        let mut config = ClientConfig::new(addr.clone()).with_token(self.token.clone());
        config.client_id = format!("ticketrush-broker-node-{}", self.me);
        // This broker, not the leader it would name (which may be this one).
        config.follow_leader = false;
        config.connect_timeout = CONNECT_TIMEOUT.min(self.timeout);
        config.request_timeout = self.timeout;
        let c = match Client::connect(config).await {
            Ok(c) => c,
            Err(e) => {
                slot.failed_at = Some(Instant::now());
                if !slot.unreachable {
                    slot.unreachable = true;
                    tracing::warn!(node, %addr, error = %e,
                        "cannot reach a broker of the cluster: retrying, silently until it answers");
                }
                return Err(e);
            }
        };
        slot.failed_at = None;
        if slot.unreachable {
            slot.unreachable = false;
            tracing::info!(node, %addr, "a broker of the cluster is reachable again");
        }
        *self
            .connects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        slot.client = Some(c.clone());
        Ok(c)
    }

    /// Sends `req` to `node` and waits for its answer (at most the peer timeout).
    ///
    /// # Errors
    /// When the peer cannot be reached, does not answer in time, or answers with an error.
    pub async fn call(&self, node: NodeId, req: Request) -> Result<Response, ClientError> {
        let client = tokio::time::timeout(self.timeout, self.client(node))
            .await
            .map_err(|_| ClientError::Timeout {
                op: "connect",
                after: self.timeout,
            })??;
        client.request(req).await
    }
}

/// A peer's connection, or when connecting to it last failed.
#[derive(Debug, Default)]
struct Slot {
    client: Option<Client>,
    failed_at: Option<Instant>,
    /// The last connect failed, and that was logged.
    unreachable: bool,
}

/// openraft logs every failed RPC to an unreachable broker, at ERROR and WARN, several lines
/// about twice a second per broker while it is down (a heartbeat, a vote); [`Peers`] logs the
/// broker going and coming back once each instead. Picks openraft's lines, for
/// `plumbing::logging::init_quieting`.
pub fn is_unreachable_noise(event: &tracing::Event<'_>) -> bool {
    let m = event.metadata();
    *m.level() <= tracing::Level::WARN
        && m.target().starts_with("openraft")
        && (plumbing::logging::has_field_containing(event, "Unreachable node")
            || (m.target() == "openraft::replication"
                && plumbing::logging::has_field_containing(event, "backoff mode")))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::is_unreachable_noise;

    struct Probe(Arc<Mutex<Vec<bool>>>);

    impl<S: tracing::Subscriber> Layer<S> for Probe {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(is_unreachable_noise(event));
        }
    }

    #[test]
    fn only_openraft_lines_about_an_unreachable_broker_are_noise() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Probe(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, || {
            let unreachable = "Unreachable node: raft message to node 2: connection refused";
            tracing::error!(target: "openraft::replication", err = %unreachable, "RPCError");
            tracing::error!(target: "openraft::core::raft_core", error = %unreachable, "while requesting vote");
            tracing::warn!(target: "openraft::replication", "backoff_drain_events backoff mode: drain events");
            // Kept: another openraft error, info about the same, and our own line.
            tracing::error!(target: "openraft::replication", err = "storage failed", "RPCError");
            tracing::info!(target: "openraft::replication", err = %unreachable, "RPCError");
            tracing::warn!(target: "broker::cluster::peers", error = %unreachable, "cannot reach");
        });
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(seen, [true, true, true, false, false, false]);
    }
}
