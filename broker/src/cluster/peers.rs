//! Connections to the other brokers of the cluster: one pipelined [`Client`] per peer, made
//! when first needed and made again after it breaks.
//!
//! Every request between brokers (Raft's and replication's) goes through here, with the
//! cluster's `--peer-timeout` as its deadline. A peer that cannot be reached answers
//! [`ClientError::Connect`] at once until the next attempt; nothing here retries a request:
//! Raft and the replication drivers decide that.

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
                return Err(e);
            }
        };
        slot.failed_at = None;
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
}
