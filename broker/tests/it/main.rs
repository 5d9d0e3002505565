//! Integration tests for the broker: real servers on loopback port 0, temp dirs.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod basics;
mod cluster;
mod connection;
mod crash;
mod disk_full;
mod groups;
mod lazy_fs;
mod power_cut;
mod replication_sim;
mod shutdown;
mod simulation;

use std::time::Duration;

use broker::client::{Client, Consumer};
use broker::protocol::{Delivery, FetchMode};

/// Fetches until `n` deliveries arrived or `deadline` passed.
pub async fn fetch_n(c: &Consumer, n: usize, deadline: Duration) -> Vec<Delivery> {
    let end = tokio::time::Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < end {
        got.extend(c.fetch().await.expect("fetch succeeds"));
    }
    got
}

/// A consumer with short waits, for tests.
pub fn consumer(client: &Client, topic: &str, group: &str, mode: FetchMode) -> Consumer {
    Consumer::new(client.clone(), topic, group, mode).wait(Duration::from_millis(200))
}
