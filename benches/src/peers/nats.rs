//! NATS JetStream behind the workload traits. A produce is one JetStream publish on the
//! producer's own connection and counts when its publish ack (the stored sequence) came back.
//! Consumers share one durable pull consumer with `AckExplicit`, read through its message
//! stream, and ack each message (a JetStream ack is a fire-and-forget publish, as an AMQP ack is).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull, stream::StorageType};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use super::{GROUP, System};
use crate::workload::{Producer, Receiver};

/// Most messages one fetch hands back.
const MAX_BATCH: usize = 500;

async fn context(url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    // The default 5 s ack timeout fails runs on a loaded two-core machine; Redis gets 30 s too.
    Ok(jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .build(client))
}

/// A NATS server with JetStream at `url`; streams kept in files or in memory.
#[derive(Debug, Clone)]
pub struct Nats {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// File storage (true) or memory storage (false).
    pub file: bool,
    /// Replicas of the stream (1; 3 or 5 on a clustered nats-server).
    pub replicas: usize,
}

impl System for Nats {
    type Producer = NatsProducer;
    type Receiver = NatsReceiver;

    /// A stream `name` on the subject `name`, and a durable pull consumer with explicit acks.
    async fn create(&self, name: &str) -> anyhow::Result<()> {
        let storage = if self.file {
            StorageType::File
        } else {
            StorageType::Memory
        };
        let stream = context(&self.url)
            .await?
            .create_stream(jetstream::stream::Config {
                name: name.to_string(),
                subjects: vec![name.to_string()],
                storage,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await?;
        stream
            .create_consumer(pull::Config {
                durable_name: Some(GROUP.to_string()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn producer(&self, name: &str, _index: usize) -> anyhow::Result<NatsProducer> {
        Ok(NatsProducer {
            js: context(&self.url).await?,
            subject: name.to_string(),
        })
    }

    async fn receiver(&self, name: &str, _index: usize) -> anyhow::Result<NatsReceiver> {
        let consumer: jetstream::consumer::Consumer<pull::Config> = context(&self.url)
            .await?
            .get_stream(name)
            .await?
            .get_consumer(GROUP)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(NatsReceiver {
            messages: consumer.messages().await?,
            unacked: Vec::new(),
        })
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        context(&self.url).await?.delete_stream(name).await?;
        Ok(())
    }
}

/// A producing connection to a stream's subject.
pub struct NatsProducer {
    js: jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        for p in payloads {
            self.js.publish(self.subject.clone(), p).await?.await?;
        }
        Ok(())
    }
}

/// A reader of a durable pull consumer.
pub struct NatsReceiver {
    messages: pull::Stream,
    unacked: Vec<jetstream::Message>,
}

impl Receiver for NatsReceiver {
    async fn fetch(&mut self) -> anyhow::Result<Vec<Bytes>> {
        let first =
            match tokio::time::timeout(Duration::from_millis(100), self.messages.next()).await {
                Ok(Some(Ok(m))) => m,
                // Not a message (a missed heartbeat, say); the stream goes on, so does the run.
                Ok(Some(Err(e))) => {
                    eprintln!("JetStream consumer: {e}");
                    return Ok(Vec::new());
                }
                Ok(None) => anyhow::bail!("the JetStream message stream ended"),
                Err(_) => return Ok(Vec::new()),
            };
        let mut out = vec![first.payload.clone()];
        self.unacked.push(first);
        while out.len() < MAX_BATCH {
            match self.messages.next().now_or_never() {
                Some(Some(Ok(m))) => {
                    out.push(m.payload.clone());
                    self.unacked.push(m);
                }
                // An error item (a missed heartbeat, say) is not a message; the stream goes on.
                _ => break,
            }
        }
        Ok(out)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        for m in self.unacked.drain(..) {
            m.ack().await.map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(())
    }
}
