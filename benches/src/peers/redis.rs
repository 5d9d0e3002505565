//! Redis Streams behind the workload traits. A produce is one `XADD` (field `d`) on its own
//! connection and counts when Redis replied: with `appendfsync always` Redis replies only after
//! the AOF write was fsynced. Consumers are members of one group: `XREADGROUP ... BLOCK 100`,
//! then one `XACK` for the ids read.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Value};

use super::{GROUP, System};
use crate::workload::{Producer, Receiver};

/// Connects to `url` (`redis://127.0.0.1:PORT`) with timeouts long enough for a loaded machine.
pub async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A Redis server at `url`; members read up to `count` entries at a time.
#[derive(Debug, Clone)]
pub struct Redis {
    /// `redis://HOST:PORT`.
    pub url: String,
    /// Most entries per XREADGROUP.
    pub count: usize,
}

impl System for Redis {
    type Producer = RedisProducer;
    type Receiver = RedisReceiver;

    async fn create(&self, name: &str) -> anyhow::Result<()> {
        let mut con = connect(&self.url).await?;
        let _: Value = con.xgroup_create_mkstream(name, GROUP, "0").await?;
        Ok(())
    }

    async fn producer(&self, name: &str, _index: usize) -> anyhow::Result<RedisProducer> {
        Ok(RedisProducer {
            con: connect(&self.url).await?,
            key: name.to_string(),
        })
    }

    async fn receiver(&self, name: &str, index: usize) -> anyhow::Result<RedisReceiver> {
        Ok(RedisReceiver {
            con: connect(&self.url).await?,
            key: name.to_string(),
            options: StreamReadOptions::default()
                .group(GROUP, format!("c{index}"))
                .count(self.count)
                .block(100),
            unacked: Vec::new(),
        })
    }

    /// Deletes the stream key, and with it its group.
    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let mut con = connect(&self.url).await?;
        let _: Value = con.del(name).await?;
        Ok(())
    }
}

/// A producing connection to a stream.
pub struct RedisProducer {
    con: MultiplexedConnection,
    key: String,
}

impl Producer for RedisProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        for p in payloads {
            let _: Option<String> = self.con.xadd(&self.key, "*", &[("d", p.as_ref())]).await?;
        }
        Ok(())
    }
}

/// A member of a stream's consumer group.
pub struct RedisReceiver {
    con: MultiplexedConnection,
    key: String,
    options: StreamReadOptions,
    unacked: Vec<String>,
}

impl Receiver for RedisReceiver {
    async fn fetch(&mut self) -> anyhow::Result<Vec<Bytes>> {
        let reply: Option<StreamReadReply> = self
            .con
            .xread_options(&[&self.key], &[">"], &self.options)
            .await?;
        let mut out = Vec::new();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            if let Some(Value::BulkString(d)) = entry.map.get("d") {
                out.push(Bytes::copy_from_slice(d.as_slice()));
            }
            self.unacked.push(entry.id);
        }
        Ok(out)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        if !self.unacked.is_empty() {
            let _: Value = self.con.xack(&self.key, GROUP, &self.unacked).await?;
            self.unacked.clear();
        }
        Ok(())
    }
}
