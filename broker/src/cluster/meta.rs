//! The cluster metadata the brokers' Raft replicates, and the commands that change it.
//!
//! Pure: no I/O, no clock, no randomness. [`raft_store`](super::raft_store) feeds committed
//! [`MetaCommand`]s to [`Metadata::apply`] in log order on every node.
//!
//! Invariants:
//! - `apply` is deterministic: the same commands in the same order give the same [`Metadata`]
//!   on every node, whenever and however often they are replayed (after a restart openraft
//!   re-applies the log that follows the last snapshot).
//! - A topic, once created, keeps its first configuration: a later `CreateTopic` of the same
//!   name changes nothing and answers `created: false` with the existing configuration, as the
//!   single-node `CreateTopic` does. So a client may retry a create whose answer it lost.
//! - Commands are validated (name, partition count) by the node that proposes them, before they
//!   enter the log; `apply` never refuses one, because a refusal decided at apply time would
//!   have to be decided identically by every node forever after.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::TopicConfig;

/// The replicated state of the cluster: its topics (its members are Raft's membership).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Every topic by name, with the configuration it was created with.
    pub topics: BTreeMap<String, TopicConfig>,
    /// Where clients reach each broker (`--advertise`), as each recorded it when it led.
    #[serde(default)]
    pub addresses: BTreeMap<u64, String>,
}

impl Metadata {
    /// Applies one committed command and says what it did.
    pub fn apply(&mut self, command: &MetaCommand) -> MetaResponse {
        match command {
            MetaCommand::CreateTopic { name, config } => match self.topics.get(name) {
                Some(existing) => MetaResponse::Topic {
                    created: false,
                    config: *existing,
                },
                None => {
                    self.topics.insert(name.clone(), *config);
                    MetaResponse::Topic {
                        created: true,
                        config: *config,
                    }
                }
            },
            MetaCommand::SetAddress { node, address } => {
                self.addresses.insert(*node, address.clone());
                MetaResponse::None
            }
        }
    }

    /// The configuration of topic `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.topics.get(name).copied()
    }
}

/// A change to the metadata, proposed through Raft (`Raft::client_write`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Create a topic unless it exists.
    CreateTopic {
        /// Topic name (validated by the proposer).
        name: String,
        /// Its partitions and retention.
        config: TopicConfig,
    },
    /// Record where clients reach a broker.
    SetAddress {
        /// The broker.
        node: u64,
        /// Its client address (`host:port`).
        address: String,
    },
}

/// What applying one log entry answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// The entry changed no metadata: a blank entry (a new leader's first) or a membership
    /// change.
    #[default]
    None,
    /// The answer to `CreateTopic`.
    Topic {
        /// Whether this command created it (false: it existed, `config` is the existing one).
        created: bool,
        /// The topic's configuration.
        config: TopicConfig,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(partitions: u32) -> TopicConfig {
        TopicConfig {
            partitions,
            retention_bytes: 0,
            retention_ms: 0,
        }
    }

    fn create(name: &str, partitions: u32) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.to_string(),
            config: config(partitions),
        }
    }

    #[test]
    fn create_topic_creates_it() {
        let mut meta = Metadata::default();
        let answer = meta.apply(&create("orders", 4));
        assert_eq!(
            answer,
            MetaResponse::Topic {
                created: true,
                config: config(4)
            }
        );
        assert_eq!(meta.topic("orders"), Some(config(4)));
        assert_eq!(meta.topic("other"), None);
    }

    #[test]
    fn creating_an_existing_topic_answers_its_config_and_changes_nothing() {
        let mut meta = Metadata::default();
        meta.apply(&create("orders", 4));
        let before = meta.clone();
        let answer = meta.apply(&create("orders", 8));
        assert_eq!(
            answer,
            MetaResponse::Topic {
                created: false,
                config: config(4)
            }
        );
        assert_eq!(meta, before);
    }

    #[test]
    fn replaying_the_same_commands_gives_the_same_metadata() {
        let commands = [
            create("b", 1),
            create("a", 2),
            create("b", 3),
            create("c", 1),
        ];
        let mut one = Metadata::default();
        let mut two = Metadata::default();
        let answers_one: Vec<_> = commands.iter().map(|c| one.apply(c)).collect();
        let answers_two: Vec<_> = commands.iter().map(|c| two.apply(c)).collect();
        assert_eq!(one, two);
        assert_eq!(answers_one, answers_two);
        assert_eq!(one.topics.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(one.topic("b"), Some(config(1)));
    }

    #[test]
    fn commands_responses_and_metadata_round_trip_through_json() {
        let command = create("orders", 4);
        let raw = serde_json::to_vec(&command).unwrap();
        assert_eq!(
            serde_json::from_slice::<MetaCommand>(&raw).unwrap(),
            command
        );

        for answer in [
            MetaResponse::None,
            MetaResponse::Topic {
                created: true,
                config: config(2),
            },
        ] {
            let raw = serde_json::to_vec(&answer).unwrap();
            assert_eq!(
                serde_json::from_slice::<MetaResponse>(&raw).unwrap(),
                answer
            );
        }

        let mut meta = Metadata::default();
        meta.apply(&command);
        let raw = serde_json::to_vec(&meta).unwrap();
        assert_eq!(serde_json::from_slice::<Metadata>(&raw).unwrap(), meta);
    }
}
