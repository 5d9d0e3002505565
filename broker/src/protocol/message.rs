//! Typed requests and responses and their bodies.
//!
//! Every body is a sequence of the primitives in [`crate::codec`]; `PROTOCOL.md` has the
//! tables. Decoding a body checks every length first and rejects trailing bytes, so a
//! malformed body is an error naming the field, never a panic or a large allocation.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader, WriteExt};
use crate::groups::FetchMode;
use crate::protocol::peer::{
    Metadata, PeerAnswer, PromiseRequest, RaftKind, ReadReplicaRequest, ReplicateRequest,
    encode_raft,
};
use crate::protocol::peer_groups::{GroupProgressRequest, ReadGroupsRequest};
use crate::protocol::record::{MIN_RECORD_BYTES, Record};

/// Numeric identifiers of the APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    /// Version negotiation and authentication.
    Hello = 0,
    /// Create a topic.
    CreateTopic = 1,
    /// Append records.
    Produce = 2,
    /// Long-poll for deliveries as a member of a consumer group.
    Fetch = 3,
    /// Mark deliveries done.
    Ack = 4,
    /// Hand deliveries back for a later retry.
    Nack = 5,
    /// Topics, partitions and groups as JSON.
    Stats = 6,
    /// Who leads the cluster, and its members.
    Metadata = 7,
    /// Raft's messages between brokers.
    Raft = 8,
    /// A new leader asks a replica to promise its epoch.
    Promise = 9,
    /// A leader sends a follower records.
    Replicate = 10,
    /// A recovering leader reads a replica's records.
    ReadReplica = 11,
    /// A leader sends a follower entries of a consumer group's journal.
    GroupProgress = 12,
    /// A new leader reads a broker's copy of a topic's consumer groups.
    ReadGroups = 13,
    /// An operator drains a broker (it gives up leading and stands for no election) or
    /// takes it back.
    Drain = 14,
}

impl ApiKey {
    /// Every api key, in numeric order (index = key).
    pub const ALL: [ApiKey; 15] = [
        Self::Hello,
        Self::CreateTopic,
        Self::Produce,
        Self::Fetch,
        Self::Ack,
        Self::Nack,
        Self::Stats,
        Self::Metadata,
        Self::Raft,
        Self::Promise,
        Self::Replicate,
        Self::ReadReplica,
        Self::GroupProgress,
        Self::ReadGroups,
        Self::Drain,
    ];

    /// The api key for a raw number, if this build knows it.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::Hello,
            1 => Self::CreateTopic,
            2 => Self::Produce,
            3 => Self::Fetch,
            4 => Self::Ack,
            5 => Self::Nack,
            6 => Self::Stats,
            7 => Self::Metadata,
            8 => Self::Raft,
            9 => Self::Promise,
            10 => Self::Replicate,
            11 => Self::ReadReplica,
            12 => Self::GroupProgress,
            13 => Self::ReadGroups,
            14 => Self::Drain,
            _ => return None,
        })
    }

    /// A short lower-case name, used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::CreateTopic => "create_topic",
            Self::Produce => "produce",
            Self::Fetch => "fetch",
            Self::Ack => "ack",
            Self::Nack => "nack",
            Self::Stats => "stats",
            Self::Metadata => "metadata",
            Self::Raft => "raft",
            Self::Promise => "promise",
            Self::Replicate => "replicate",
            Self::ReadReplica => "read_replica",
            Self::GroupProgress => "group_progress",
            Self::ReadGroups => "read_groups",
            Self::Drain => "drain",
        }
    }

    /// Whether only another broker of the cluster sends it.
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Self::Raft
                | Self::Promise
                | Self::Replicate
                | Self::ReadReplica
                | Self::GroupProgress
                | Self::ReadGroups
        )
    }
}

/// Error codes carried in the response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// The body could not be decoded.
    Malformed = 1,
    /// The api key is not one this server knows.
    UnknownApi = 2,
    /// The request's version is not supported.
    UnsupportedVersion = 3,
    /// The frame was over the size limit (the connection is closed).
    FrameTooLarge = 4,
    /// Hello is required first, or the token was wrong (the connection is closed).
    Unauthorized = 5,
    /// The topic does not exist.
    UnknownTopic = 6,
    /// The request was well-formed but not acceptable (a bad name, zero partitions, ...).
    InvalidRequest = 7,
    /// The server could not write to or read from its storage.
    Storage = 8,
    /// The group exists with another mode.
    GroupMismatch = 9,
    /// The server is shutting down.
    ShuttingDown = 10,
    /// The frame was shorter than its header (the connection is closed).
    FrameTooShort = 11,
    /// The server is overloaded; retry later.
    Busy = 12,
    /// This broker does not lead the cluster (or not yet): ask Metadata who does, and send
    /// it there.
    NotLeader = 13,
}

impl ErrorCode {
    /// The code for a raw number; unknown numbers are reported as `Malformed`'s neighbour
    /// `InvalidRequest` by callers that need one.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::Malformed,
            2 => Self::UnknownApi,
            3 => Self::UnsupportedVersion,
            4 => Self::FrameTooLarge,
            5 => Self::Unauthorized,
            6 => Self::UnknownTopic,
            7 => Self::InvalidRequest,
            8 => Self::Storage,
            9 => Self::GroupMismatch,
            10 => Self::ShuttingDown,
            11 => Self::FrameTooShort,
            12 => Self::Busy,
            13 => Self::NotLeader,
            _ => return None,
        })
    }

    /// A short name, used in logs and as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Malformed => "malformed",
            Self::UnknownApi => "unknown_api",
            Self::UnsupportedVersion => "unsupported_version",
            Self::FrameTooLarge => "frame_too_large",
            Self::Unauthorized => "unauthorized",
            Self::UnknownTopic => "unknown_topic",
            Self::InvalidRequest => "invalid_request",
            Self::Storage => "storage",
            Self::GroupMismatch => "group_mismatch",
            Self::ShuttingDown => "shutting_down",
            Self::FrameTooShort => "frame_too_short",
            Self::Busy => "busy",
            Self::NotLeader => "not_leader",
        }
    }

    /// Whether a client may retry the same request later and expect it to succeed.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            Self::Storage | Self::ShuttingDown | Self::Busy | Self::NotLeader
        )
    }
}

/// A Fetch request: long-poll for up to `max_records` deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The topic.
    pub topic: String,
    /// The consumer group; created on first fetch with the options below.
    pub group: String,
    /// The group's mode.
    pub mode: FetchMode,
    /// Most deliveries to return.
    pub max_records: u32,
    /// How long to wait when nothing is ready (milliseconds).
    pub max_wait_ms: u32,
    /// Visibility timeout of each delivery (milliseconds); 0 = the server default.
    pub lease_ms: u32,
    /// Deliveries of one record before it is dead-lettered; 0 = the server default.
    pub max_attempts: u32,
    /// Most unacknowledged deliveries this consumer may hold; 0 = the server default.
    pub prefetch: u32,
}

/// One record handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Identifies this delivery in Ack and Nack: `partition << 48 | offset`.
    pub delivery_id: u64,
    /// Partition of the record.
    pub partition: u32,
    /// Offset of the record in its partition.
    pub offset: u64,
    /// 1 for the first delivery, then 2, 3, ...
    pub attempt: u32,
    /// When the broker appended the record (Unix milliseconds).
    pub timestamp_ms: u64,
    /// The record.
    pub record: Record,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// The record repeated a dedup id seen within the window; `offset` is the first one's.
    pub duplicate: bool,
}

/// What an Ack did to one delivery id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Acknowledged now.
    Acked = 0,
    /// It had been acknowledged already.
    AlreadyAcked = 1,
    /// No such delivery.
    Unknown = 2,
}

/// What a Nack did to one delivery id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackStatus {
    /// It will be delivered again after the delay.
    Requeued = 0,
    /// It had no attempts left and went to the dead-letter topic.
    DeadLettered = 1,
    /// This consumer no longer holds it (its lease expired, or it was acknowledged).
    Stale = 2,
    /// No such delivery.
    Unknown = 3,
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Negotiate a version and authenticate.
    Hello {
        /// Highest version the client speaks.
        max_version: u16,
        /// Free-form client name, for logs.
        client_id: String,
        /// The shared secret; empty when none.
        token: String,
    },
    /// Create a topic (no error if it exists).
    CreateTopic {
        /// Name: 1-200 of `[A-Za-z0-9._-]`.
        name: String,
        /// Partition count, 1-1024.
        partitions: u32,
        /// Retention by size per partition; 0 = the server default.
        retention_bytes: u64,
        /// Retention by age; 0 = the server default.
        retention_ms: u64,
    },
    /// Append records.
    Produce {
        /// The topic.
        topic: String,
        /// The records.
        records: Vec<Record>,
    },
    /// Fetch deliveries.
    Fetch(FetchRequest),
    /// Mark deliveries done.
    Ack {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// Delivery ids.
        ids: Vec<u64>,
    },
    /// Hand deliveries back.
    Nack {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// Wait this long before delivering again (milliseconds).
        delay_ms: u32,
        /// Why; recorded on the dead letter if it comes to that.
        reason: String,
        /// Delivery ids.
        ids: Vec<u64>,
    },
    /// Stats as JSON; empty topic = every topic.
    Stats {
        /// The topic, or empty.
        topic: String,
    },
    /// Who leads the cluster.
    Metadata,
    /// A Raft message from another broker.
    Raft {
        /// Which one.
        kind: RaftKind,
        /// openraft's request, as JSON.
        json: Bytes,
    },
    /// Promise an epoch (from a new leader).
    Promise(PromiseRequest),
    /// Take records (from the leader).
    Replicate(ReplicateRequest),
    /// Read records (for a recovering leader).
    ReadReplica(ReadReplicaRequest),
    /// Take a consumer group's journal entries (from the leader).
    GroupProgress(GroupProgressRequest),
    /// Read every consumer group of a topic (for a new leader).
    ReadGroups(ReadGroupsRequest),
    /// Drain this broker, or take it back.
    Drain {
        /// True to drain, false to take back.
        drain: bool,
    },
}

impl Request {
    /// The api key of this request.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Self::Hello { .. } => ApiKey::Hello,
            Self::CreateTopic { .. } => ApiKey::CreateTopic,
            Self::Produce { .. } => ApiKey::Produce,
            Self::Fetch(_) => ApiKey::Fetch,
            Self::Ack { .. } => ApiKey::Ack,
            Self::Nack { .. } => ApiKey::Nack,
            Self::Stats { .. } => ApiKey::Stats,
            Self::Metadata => ApiKey::Metadata,
            Self::Raft { .. } => ApiKey::Raft,
            Self::Promise(_) => ApiKey::Promise,
            Self::Replicate(_) => ApiKey::Replicate,
            Self::ReadReplica(_) => ApiKey::ReadReplica,
            Self::GroupProgress(_) => ApiKey::GroupProgress,
            Self::ReadGroups(_) => ApiKey::ReadGroups,
            Self::Drain { .. } => ApiKey::Drain,
        }
    }

    /// Writes the body (not the frame header).
    pub fn encode_body(&self, out: &mut BytesMut) {
        match self {
            Self::Hello {
                max_version,
                client_id,
                token,
            } => {
                out.put_u16(*max_version);
                out.put_str(client_id);
                out.put_str(token);
            }
            Self::CreateTopic {
                name,
                partitions,
                retention_bytes,
                retention_ms,
            } => {
                out.put_str(name);
                out.put_u32(*partitions);
                out.put_u64(*retention_bytes);
                out.put_u64(*retention_ms);
            }
            Self::Produce { topic, records } => {
                out.put_str(topic);
                out.put_count(records.len());
                for r in records {
                    r.encode(out);
                }
            }
            Self::Fetch(f) => {
                out.put_str(&f.topic);
                out.put_str(&f.group);
                out.put_u8(f.mode.to_u8());
                out.put_u32(f.max_records);
                out.put_u32(f.max_wait_ms);
                out.put_u32(f.lease_ms);
                out.put_u32(f.max_attempts);
                out.put_u32(f.prefetch);
            }
            Self::Ack { topic, group, ids } => {
                out.put_str(topic);
                out.put_str(group);
                put_ids(ids, out);
            }
            Self::Nack {
                topic,
                group,
                delay_ms,
                reason,
                ids,
            } => {
                out.put_str(topic);
                out.put_str(group);
                out.put_u32(*delay_ms);
                out.put_str(reason);
                put_ids(ids, out);
            }
            Self::Stats { topic } => out.put_str(topic),
            Self::Metadata => {}
            Self::Raft { kind, json } => encode_raft(*kind, json, out),
            Self::Promise(p) => p.encode(out),
            Self::Replicate(p) => p.encode(out),
            Self::ReadReplica(p) => p.encode(out),
            Self::GroupProgress(p) => p.encode(out),
            Self::ReadGroups(p) => p.encode(out),
            Self::Drain { drain } => out.put_u8(u8::from(*drain)),
        }
    }

    /// Decodes a body for `api`; the whole body must be used.
    pub fn decode_body(api: ApiKey, body: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::shared(body);
        let req = match api {
            ApiKey::Hello => Self::Hello {
                max_version: r.u16("hello.max_version")?,
                client_id: r.str("hello.client_id")?,
                token: r.str("hello.token")?,
            },
            ApiKey::CreateTopic => Self::CreateTopic {
                name: r.str("create_topic.name")?,
                partitions: r.u32("create_topic.partitions")?,
                retention_bytes: r.u64("create_topic.retention_bytes")?,
                retention_ms: r.u64("create_topic.retention_ms")?,
            },
            ApiKey::Produce => {
                let topic = r.str("produce.topic")?;
                let n = r.count("produce.records", MIN_RECORD_BYTES)?;
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    records.push(Record::decode(&mut r)?);
                }
                Self::Produce { topic, records }
            }
            ApiKey::Fetch => {
                let topic = r.str("fetch.topic")?;
                let group = r.str("fetch.group")?;
                let at = r.position();
                let mode = FetchMode::from_u8("fetch.mode", r.u8("fetch.mode")?, at)?;
                Self::Fetch(FetchRequest {
                    topic,
                    group,
                    mode,
                    max_records: r.u32("fetch.max_records")?,
                    max_wait_ms: r.u32("fetch.max_wait_ms")?,
                    lease_ms: r.u32("fetch.lease_ms")?,
                    max_attempts: r.u32("fetch.max_attempts")?,
                    prefetch: r.u32("fetch.prefetch")?,
                })
            }
            ApiKey::Ack => Self::Ack {
                topic: r.str("ack.topic")?,
                group: r.str("ack.group")?,
                ids: get_ids(&mut r, "ack.ids")?,
            },
            ApiKey::Nack => Self::Nack {
                topic: r.str("nack.topic")?,
                group: r.str("nack.group")?,
                delay_ms: r.u32("nack.delay_ms")?,
                reason: r.str("nack.reason")?,
                ids: get_ids(&mut r, "nack.ids")?,
            },
            ApiKey::Stats => Self::Stats {
                topic: r.str("stats.topic")?,
            },
            ApiKey::Metadata => Self::Metadata,
            ApiKey::Raft => Self::Raft {
                kind: RaftKind::decode(&mut r)?,
                json: r.bytes("raft.json")?,
            },
            ApiKey::Promise => Self::Promise(PromiseRequest::decode(&mut r)?),
            ApiKey::Replicate => Self::Replicate(ReplicateRequest::decode(&mut r)?),
            ApiKey::ReadReplica => Self::ReadReplica(ReadReplicaRequest::decode(&mut r)?),
            ApiKey::GroupProgress => Self::GroupProgress(GroupProgressRequest::decode(&mut r)?),
            ApiKey::ReadGroups => Self::ReadGroups(ReadGroupsRequest::decode(&mut r)?),
            ApiKey::Drain => {
                let at = r.position();
                Self::Drain {
                    drain: match r.u8("drain")? {
                        0 => false,
                        1 => true,
                        _ => {
                            return Err(DecodeError::Invalid {
                                field: "drain",
                                reason: "must be 0 (take back) or 1 (drain)",
                                offset: at,
                            });
                        }
                    },
                }
            }
        };
        r.finish()?;
        Ok(req)
    }
}

fn put_ids(ids: &[u64], out: &mut BytesMut) {
    out.put_count(ids.len());
    for id in ids {
        out.put_u64(*id);
    }
}

fn get_ids(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u64>, DecodeError> {
    let n = r.count(field, 8)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(r.u64(field)?);
    }
    Ok(ids)
}

/// A decoded successful response; errors travel as an [`ErrorCode`] and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to Hello.
    Hello {
        /// The version both sides will speak.
        version: u16,
        /// Server name and build.
        server: String,
    },
    /// Answer to CreateTopic.
    CreateTopic {
        /// False when the topic existed already.
        created: bool,
        /// Its partition count.
        partitions: u32,
    },
    /// Answer to Produce, one entry per record in request order.
    Produce(Vec<ProduceAck>),
    /// Answer to Fetch.
    Fetch(Vec<Delivery>),
    /// Answer to Ack, one status per id.
    Ack(Vec<AckStatus>),
    /// Answer to Nack, one status per id.
    Nack(Vec<NackStatus>),
    /// Answer to Stats: a JSON document.
    Stats(Bytes),
    /// Answer to Metadata.
    Metadata(Metadata),
    /// Answer to Raft: openraft's response, as JSON.
    Raft(Bytes),
    /// Answer to Promise, Replicate, ReadReplica, GroupProgress and ReadGroups.
    Peer(PeerAnswer),
    /// Answer to Drain: whether the broker is drained now, and who leads.
    Drain {
        /// Whether it is drained.
        draining: bool,
        /// The cluster as it knows it.
        metadata: Metadata,
    },
}

impl Response {
    /// Writes the body.
    pub fn encode_body(&self, out: &mut BytesMut) {
        match self {
            Self::Hello { version, server } => {
                out.put_u16(*version);
                out.put_str(server);
            }
            Self::CreateTopic {
                created,
                partitions,
            } => {
                out.put_u8(u8::from(*created));
                out.put_u32(*partitions);
            }
            Self::Produce(acks) => {
                out.put_count(acks.len());
                for a in acks {
                    out.put_u32(a.partition);
                    out.put_u64(a.offset);
                    out.put_u8(u8::from(a.duplicate));
                }
            }
            Self::Fetch(deliveries) => {
                out.put_count(deliveries.len());
                for d in deliveries {
                    out.put_u64(d.delivery_id);
                    out.put_u32(d.partition);
                    out.put_u64(d.offset);
                    out.put_u32(d.attempt);
                    out.put_u64(d.timestamp_ms);
                    d.record.encode(out);
                }
            }
            Self::Ack(statuses) => {
                out.put_count(statuses.len());
                for s in statuses {
                    out.put_u8(*s as u8);
                }
            }
            Self::Nack(statuses) => {
                out.put_count(statuses.len());
                for s in statuses {
                    out.put_u8(*s as u8);
                }
            }
            Self::Stats(json) | Self::Raft(json) => out.put_bytes_field(json),
            Self::Metadata(m) => m.encode(out),
            Self::Peer(a) => a.encode(out),
            Self::Drain { draining, metadata } => {
                out.put_u8(u8::from(*draining));
                metadata.encode(out);
            }
        }
    }

    /// Decodes the body of a successful response to `api`.
    pub fn decode_body(api: ApiKey, body: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::shared(body);
        let resp = match api {
            ApiKey::Hello => Self::Hello {
                version: r.u16("hello.version")?,
                server: r.str("hello.server")?,
            },
            ApiKey::CreateTopic => Self::CreateTopic {
                created: r.u8("create_topic.created")? != 0,
                partitions: r.u32("create_topic.partitions")?,
            },
            ApiKey::Produce => {
                let n = r.count("produce.acks", 13)?;
                let mut acks = Vec::with_capacity(n);
                for _ in 0..n {
                    acks.push(ProduceAck {
                        partition: r.u32("ack.partition")?,
                        offset: r.u64("ack.offset")?,
                        duplicate: r.u8("ack.duplicate")? != 0,
                    });
                }
                Self::Produce(acks)
            }
            ApiKey::Fetch => {
                let n = r.count("fetch.deliveries", 32 + MIN_RECORD_BYTES)?;
                let mut ds = Vec::with_capacity(n);
                for _ in 0..n {
                    ds.push(Delivery {
                        delivery_id: r.u64("delivery.id")?,
                        partition: r.u32("delivery.partition")?,
                        offset: r.u64("delivery.offset")?,
                        attempt: r.u32("delivery.attempt")?,
                        timestamp_ms: r.u64("delivery.timestamp_ms")?,
                        record: Record::decode(&mut r)?,
                    });
                }
                Self::Fetch(ds)
            }
            ApiKey::Ack => {
                let n = r.count("ack.statuses", 1)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = r.position();
                    v.push(match r.u8("ack.status")? {
                        0 => AckStatus::Acked,
                        1 => AckStatus::AlreadyAcked,
                        2 => AckStatus::Unknown,
                        _ => return Err(invalid("ack.status", at)),
                    });
                }
                Self::Ack(v)
            }
            ApiKey::Nack => {
                let n = r.count("nack.statuses", 1)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = r.position();
                    v.push(match r.u8("nack.status")? {
                        0 => NackStatus::Requeued,
                        1 => NackStatus::DeadLettered,
                        2 => NackStatus::Stale,
                        3 => NackStatus::Unknown,
                        _ => return Err(invalid("nack.status", at)),
                    });
                }
                Self::Nack(v)
            }
            ApiKey::Stats => Self::Stats(r.bytes("stats.json")?),
            ApiKey::Metadata => Self::Metadata(Metadata::decode(&mut r)?),
            ApiKey::Raft => Self::Raft(r.bytes("raft.json")?),
            ApiKey::Promise
            | ApiKey::Replicate
            | ApiKey::ReadReplica
            | ApiKey::GroupProgress
            | ApiKey::ReadGroups => Self::Peer(PeerAnswer::decode(&mut r)?),
            ApiKey::Drain => Self::Drain {
                draining: r.u8("drain.draining")? != 0,
                metadata: Metadata::decode(&mut r)?,
            },
        };
        r.finish()?;
        Ok(resp)
    }
}

fn invalid(field: &'static str, offset: usize) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: "unknown status value",
        offset,
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
