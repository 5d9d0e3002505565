//! RabbitMQ behind the workload traits, through the default exchange. A produce is one
//! `basic.publish` on a channel in confirm mode and counts when its publisher confirm (an ack,
//! not a nack) came back: for a quorum queue with persistent messages that is after the
//! queue's log was fsynced. Consumers each have their own connection and channel,
//! `basic.consume` with manual acks and a prefetch, and ack each batch with one
//! `basic.ack(multiple)`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{GROUP, System};
use crate::workload::{Producer, Receiver};

/// Most deliveries one fetch hands back.
const MAX_BATCH: usize = 500;

async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

/// A RabbitMQ server at `url`. Durable: quorum queues and persistent messages. Fast:
/// transient classic queues and transient messages (publisher confirms stay on, so a produce
/// still counts only once the server took it).
#[derive(Debug, Clone)]
pub struct Rabbit {
    /// `amqp://USER:PASS@HOST:PORT/%2f`.
    pub url: String,
    /// Quorum queue + persistent messages (true), or the fast setting (false).
    pub durable: bool,
    /// Unacknowledged deliveries per consumer (`basic.qos`).
    pub prefetch: u16,
}

impl System for Rabbit {
    type Producer = RabbitProducer;
    type Receiver = RabbitReceiver;

    /// RabbitMQ has no group object: the queue is the group, each consumer takes its share.
    async fn create(&self, name: &str) -> anyhow::Result<()> {
        let (conn, ch) = channel(&self.url).await?;
        let mut args = FieldTable::default();
        if self.durable {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        let options = QueueDeclareOptions {
            durable: self.durable,
            ..QueueDeclareOptions::default()
        };
        ch.queue_declare(name.into(), options, args).await?;
        conn.close(200, "done".into()).await?;
        Ok(())
    }

    async fn producer(&self, name: &str, _index: usize) -> anyhow::Result<RabbitProducer> {
        let (conn, ch) = channel(&self.url).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let delivery_mode = if self.durable { 2 } else { 1 };
        Ok(RabbitProducer {
            _conn: conn,
            ch,
            queue: name.to_string(),
            properties: BasicProperties::default().with_delivery_mode(delivery_mode),
        })
    }

    async fn receiver(&self, name: &str, index: usize) -> anyhow::Result<RabbitReceiver> {
        let (conn, ch) = channel(&self.url).await?;
        ch.basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = ch
            .basic_consume(
                name.into(),
                format!("{GROUP}-{index}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(RabbitReceiver {
            _conn: conn,
            ch,
            consumer,
            last_tag: None,
        })
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        let (conn, ch) = channel(&self.url).await?;
        ch.queue_delete(name.into(), QueueDeleteOptions::default())
            .await?;
        conn.close(200, "done".into()).await?;
        Ok(())
    }
}

/// A producing connection with a channel in confirm mode.
pub struct RabbitProducer {
    _conn: Connection,
    ch: Channel,
    queue: String,
    properties: BasicProperties,
}

impl Producer for RabbitProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        for p in payloads {
            let confirm = self
                .ch
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &p,
                    self.properties.clone(),
                )
                .await?
                .await?;
            anyhow::ensure!(
                confirm.is_ack(),
                "RabbitMQ did not confirm a publish: {confirm:?}"
            );
        }
        Ok(())
    }
}

/// A consumer with manual acks.
pub struct RabbitReceiver {
    _conn: Connection,
    ch: Channel,
    consumer: lapin::Consumer,
    last_tag: Option<u64>,
}

impl Receiver for RabbitReceiver {
    async fn fetch(&mut self) -> anyhow::Result<Vec<Bytes>> {
        let first =
            match tokio::time::timeout(Duration::from_millis(100), self.consumer.next()).await {
                Ok(Some(d)) => d?,
                Ok(None) => anyhow::bail!("the RabbitMQ consumer was cancelled"),
                Err(_) => return Ok(Vec::new()),
            };
        self.last_tag = Some(first.delivery_tag);
        let mut out = vec![Bytes::from(first.data)];
        while out.len() < MAX_BATCH {
            match self.consumer.next().now_or_never() {
                Some(Some(d)) => {
                    let d = d?;
                    self.last_tag = Some(d.delivery_tag);
                    out.push(Bytes::from(d.data));
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        if let Some(tag) = self.last_tag.take() {
            self.ch
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        Ok(())
    }
}
