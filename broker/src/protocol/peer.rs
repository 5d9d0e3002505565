//! The bodies of the requests a cluster adds: Metadata (for clients), and the requests
//! between brokers: Raft's own messages, and the replication of a partition's log (Promise,
//! Replicate, ReadReplica; see `REPLICATION.md`). `PROTOCOL.md` has the byte tables.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, Reader, WriteExt};
use crate::protocol::Record;
use crate::protocol::peer_groups::GroupCopy;
use crate::replication::epochs::EpochStart;
use crate::storage::StoredRecord;

/// Bytes of the smallest stored record on the wire: offset, timestamp, an empty record.
const MIN_STORED_RECORD_BYTES: usize = 16 + 12;

/// Who serves a cluster: the answer to Metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Whether the broker is a member of a cluster (a single broker serves everything).
    pub clustered: bool,
    /// The current leader epoch (the Raft term; 0 for a single broker).
    pub epoch: u64,
    /// The leader, as node id and client address, when one is known.
    pub leader: Option<(u64, String)>,
    /// Every member: node id and client address.
    pub nodes: Vec<(u64, String)>,
}

impl Metadata {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(u8::from(self.clustered));
        out.put_u64(self.epoch);
        let (id, addr) = self
            .leader
            .as_ref()
            .map_or((0, ""), |(id, a)| (*id, a.as_str()));
        out.put_u64(id);
        out.put_str(addr);
        out.put_count(self.nodes.len());
        for (id, addr) in &self.nodes {
            out.put_u64(*id);
            out.put_str(addr);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let clustered = r.u8("metadata.clustered")? != 0;
        let epoch = r.u64("metadata.epoch")?;
        let id = r.u64("metadata.leader")?;
        let addr = r.str("metadata.leader_address")?;
        let n = r.count("metadata.nodes", 10)?;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push((r.u64("node.id")?, r.str("node.address")?));
        }
        Ok(Self {
            clustered,
            epoch,
            leader: (id != 0).then_some((id, addr)),
            nodes,
        })
    }
}

/// Which of Raft's messages a Raft request carries (its body is openraft's, as JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftKind {
    /// RequestVote.
    Vote = 0,
    /// AppendEntries (heartbeats too).
    Append = 1,
    /// InstallSnapshot.
    Snapshot = 2,
}

impl RaftKind {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.position();
        match r.u8("raft.kind")? {
            0 => Ok(Self::Vote),
            1 => Ok(Self::Append),
            2 => Ok(Self::Snapshot),
            _ => Err(DecodeError::Invalid {
                field: "raft.kind",
                reason: "must be 0 (vote), 1 (append) or 2 (snapshot)",
                offset: at,
            }),
        }
    }
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionRef {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

impl PartitionRef {
    fn encode(&self, out: &mut BytesMut) {
        out.put_str(&self.topic);
        out.put_u32(self.partition);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            topic: r.str("partition.topic")?,
            partition: r.u32("partition.id")?,
        })
    }
}

fn put_epochs(epochs: &[EpochStart], out: &mut BytesMut) {
    out.put_count(epochs.len());
    for e in epochs {
        out.put_u64(e.epoch);
        out.put_u64(e.start);
    }
}

fn get_epochs(r: &mut Reader<'_>) -> Result<Vec<EpochStart>, DecodeError> {
    let n = r.count("epochs", 16)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(EpochStart {
            epoch: r.u64("epoch.epoch")?,
            start: r.u64("epoch.start")?,
        });
    }
    Ok(v)
}

fn put_records(records: &[StoredRecord], out: &mut BytesMut) {
    out.put_count(records.len());
    for r in records {
        out.put_u64(r.offset);
        out.put_u64(r.timestamp_ms);
        r.record.encode(out);
    }
}

fn get_records(r: &mut Reader<'_>) -> Result<Vec<StoredRecord>, DecodeError> {
    let n = r.count("records", MIN_STORED_RECORD_BYTES)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(StoredRecord {
            offset: r.u64("record.offset")?,
            timestamp_ms: r.u64("record.timestamp_ms")?,
            record: Record::decode(r)?,
        });
    }
    Ok(v)
}

/// A leader asks a replica to promise its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromiseRequest {
    /// The leader's epoch.
    pub epoch: u64,
    /// The partition.
    pub partition: PartitionRef,
}

impl PromiseRequest {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.epoch);
        self.partition.encode(out);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: r.u64("promise.epoch")?,
            partition: PartitionRef::decode(r)?,
        })
    }
}

/// What a replica says of its log: its labels, start and end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogState {
    /// Its labels (effective entries).
    pub epochs: Vec<EpochStart>,
    /// Its first retained offset.
    pub log_start: u64,
    /// Its end.
    pub end: u64,
}

impl LogState {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.log_start);
        out.put_u64(self.end);
        put_epochs(&self.epochs, out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            log_start: r.u64("log.start")?,
            end: r.u64("log.end")?,
            epochs: get_epochs(r)?,
        })
    }
}

/// A broker's answer to another's Promise, Replicate, ReadReplica, GroupProgress or
/// ReadGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// Promised (answer to Promise): its log.
    Promised(LogState),
    /// Took the records (answer to Replicate): its log agrees with the leader's up to here.
    Appended {
        /// The offset up to which it agrees.
        matched: u64,
    },
    /// The records do not follow its log (answer to Replicate): its log.
    Mismatch(LogState),
    /// Records of its log (answer to ReadReplica).
    Records(ReplicatedRecords),
    /// It promised a later epoch: the sender no longer leads.
    Stale {
        /// The epoch it promised.
        promised: u64,
    },
    /// Its copy of every group of the topic (answer to ReadGroups).
    Groups(Vec<GroupCopy>),
    /// It holds the entries (answer to GroupProgress).
    GroupWritten,
}

impl PeerAnswer {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Promised(s) => {
                out.put_u8(0);
                s.encode(out);
            }
            Self::Appended { matched } => {
                out.put_u8(1);
                out.put_u64(*matched);
            }
            Self::Mismatch(s) => {
                out.put_u8(2);
                s.encode(out);
            }
            Self::Records(rs) => {
                out.put_u8(3);
                rs.encode(out);
            }
            Self::Stale { promised } => {
                out.put_u8(4);
                out.put_u64(*promised);
            }
            Self::Groups(groups) => {
                out.put_u8(5);
                out.put_count(groups.len());
                for g in groups {
                    g.encode(out);
                }
            }
            Self::GroupWritten => out.put_u8(6),
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.position();
        Ok(match r.u8("answer.kind")? {
            0 => Self::Promised(LogState::decode(r)?),
            1 => Self::Appended {
                matched: r.u64("answer.matched")?,
            },
            2 => Self::Mismatch(LogState::decode(r)?),
            3 => Self::Records(ReplicatedRecords::decode(r)?),
            4 => Self::Stale {
                promised: r.u64("answer.promised")?,
            },
            5 => {
                let n = r.count("answer.groups", GroupCopy::MIN_BYTES)?;
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    groups.push(GroupCopy::decode(r)?);
                }
                Self::Groups(groups)
            }
            6 => Self::GroupWritten,
            _ => {
                return Err(DecodeError::Invalid {
                    field: "answer.kind",
                    reason: "must be 0 to 6",
                    offset: at,
                });
            }
        })
    }
}

/// Records of a partition's log with their labels: what a leader sends a follower, and what a
/// replica gives a recovering leader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicatedRecords {
    /// The first record's offset.
    pub start: u64,
    /// The label of the record before `start`.
    pub prev_epoch: u64,
    /// The sender's log start: it holds no record below it.
    pub log_start: u64,
    /// The labels of the records, as `replication::replica::labels`: from `start`, or every
    /// label of the sender's up to the records' end when `start` is its log start.
    pub epochs: Vec<EpochStart>,
    /// The records, from `start` on.
    pub records: Vec<StoredRecord>,
}

impl ReplicatedRecords {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.start);
        out.put_u64(self.prev_epoch);
        out.put_u64(self.log_start);
        put_epochs(&self.epochs, out);
        put_records(&self.records, out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.u64("records.start")?;
        let prev_epoch = r.u64("records.prev_epoch")?;
        let log_start = r.u64("records.log_start")?;
        let epochs = get_epochs(r)?;
        let records = get_records(r)?;
        if let Some((i, bad)) = records
            .iter()
            .enumerate()
            .find(|(i, rec)| Some(rec.offset) != start.checked_add(*i as u64))
        {
            return Err(DecodeError::Invalid {
                field: "records.offset",
                reason: "records must be consecutive from start",
                offset: usize::try_from(bad.offset.min(i as u64)).unwrap_or(0),
            });
        }
        Ok(Self {
            start,
            prev_epoch,
            log_start,
            epochs,
            records,
        })
    }
}

/// A leader sends a follower records (none: a heartbeat that checks it follows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateRequest {
    /// The leader's epoch.
    pub epoch: u64,
    /// The partition.
    pub partition: PartitionRef,
    /// The leader's commit point.
    pub commit: u64,
    /// The records.
    pub records: ReplicatedRecords,
}

impl ReplicateRequest {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.epoch);
        self.partition.encode(out);
        out.put_u64(self.commit);
        self.records.encode(out);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: r.u64("replicate.epoch")?,
            partition: PartitionRef::decode(r)?,
            commit: r.u64("replicate.commit")?,
            records: ReplicatedRecords::decode(r)?,
        })
    }
}

/// A recovering leader reads a replica's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReplicaRequest {
    /// The leader's epoch.
    pub epoch: u64,
    /// The partition.
    pub partition: PartitionRef,
    /// The first offset wanted.
    pub from: u64,
    /// Most records.
    pub max_records: u32,
}

impl ReadReplicaRequest {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.epoch);
        self.partition.encode(out);
        out.put_u64(self.from);
        out.put_u32(self.max_records);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: r.u64("read.epoch")?,
            partition: PartitionRef::decode(r)?,
            from: r.u64("read.from")?,
            max_records: r.u32("read.max_records")?,
        })
    }
}

/// A Raft message's body: its kind and openraft's JSON.
pub(crate) fn encode_raft(kind: RaftKind, json: &Bytes, out: &mut BytesMut) {
    out.put_u8(kind as u8);
    out.put_bytes_field(json);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ApiKey, Request, Response};
    use proptest::prelude::*;

    fn arb_epochs() -> impl Strategy<Value = Vec<EpochStart>> {
        proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4).prop_map(|v| {
            v.into_iter()
                .map(|(epoch, start)| EpochStart { epoch, start })
                .collect()
        })
    }

    fn arb_records() -> impl Strategy<Value = ReplicatedRecords> {
        (
            0u64..1 << 40,
            any::<u64>(),
            any::<u64>(),
            arb_epochs(),
            proptest::collection::vec(("[a-z]{0,8}", any::<u64>()), 0..4),
        )
            .prop_map(
                |(start, prev_epoch, log_start, epochs, rs)| ReplicatedRecords {
                    start,
                    prev_epoch,
                    log_start,
                    epochs,
                    records: rs
                        .into_iter()
                        .enumerate()
                        .map(|(i, (payload, ts))| StoredRecord {
                            offset: start + i as u64,
                            timestamp_ms: ts,
                            record: Record::new(payload).with_dedup_id(format!("d{i}")),
                        })
                        .collect(),
                },
            )
    }

    fn part() -> impl Strategy<Value = PartitionRef> {
        ("[a-z]{1,8}", any::<u32>())
            .prop_map(|(topic, partition)| PartitionRef { topic, partition })
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Metadata),
            any::<bool>().prop_map(|drain| Request::Drain { drain }),
            (0u8..3, proptest::collection::vec(any::<u8>(), 0..32)).prop_map(|(k, j)| {
                Request::Raft {
                    kind: [RaftKind::Vote, RaftKind::Append, RaftKind::Snapshot][usize::from(k)],
                    json: Bytes::from(j),
                }
            }),
            (any::<u64>(), part()).prop_map(|(epoch, partition)| Request::Promise(
                PromiseRequest { epoch, partition }
            )),
            (any::<u64>(), part(), any::<u64>(), arb_records()).prop_map(
                |(epoch, partition, commit, records)| Request::Replicate(ReplicateRequest {
                    epoch,
                    partition,
                    commit,
                    records
                })
            ),
            (any::<u64>(), part(), any::<u64>(), any::<u32>()).prop_map(
                |(epoch, partition, from, max_records)| Request::ReadReplica(ReadReplicaRequest {
                    epoch,
                    partition,
                    from,
                    max_records
                })
            ),
        ]
    }

    fn arb_state() -> impl Strategy<Value = LogState> {
        (arb_epochs(), any::<u64>(), any::<u64>()).prop_map(|(epochs, log_start, end)| LogState {
            epochs,
            log_start,
            end,
        })
    }

    fn arb_answer() -> impl Strategy<Value = PeerAnswer> {
        prop_oneof![
            arb_state().prop_map(PeerAnswer::Promised),
            any::<u64>().prop_map(|matched| PeerAnswer::Appended { matched }),
            arb_state().prop_map(PeerAnswer::Mismatch),
            arb_records().prop_map(PeerAnswer::Records),
            any::<u64>().prop_map(|promised| PeerAnswer::Stale { promised }),
        ]
    }

    proptest! {
        #[test]
        fn cluster_requests_round_trip(req in arb_request()) {
            let mut out = BytesMut::new();
            req.encode_body(&mut out);
            prop_assert_eq!(Request::decode_body(req.api_key(), &out.freeze()).unwrap(), req);
        }

        #[test]
        fn peer_answers_round_trip(a in arb_answer(), api in 9u16..14) {
            let resp = Response::Peer(a);
            let mut out = BytesMut::new();
            resp.encode_body(&mut out);
            let api = ApiKey::from_u16(api).unwrap();
            prop_assert_eq!(Response::decode_body(api, &out.freeze()).unwrap(), resp);
        }

        #[test]
        fn metadata_round_trips(
            clustered in any::<bool>(),
            epoch in any::<u64>(),
            leader in proptest::option::of((1u64..9, "[0-9.:]{1,21}")),
            nodes in proptest::collection::vec((any::<u64>(), "[0-9.:]{0,21}"), 0..5),
        ) {
            let metadata = Metadata { clustered, epoch, leader, nodes };
            let resp = Response::Metadata(metadata.clone());
            let mut out = BytesMut::new();
            resp.encode_body(&mut out);
            prop_assert_eq!(Response::decode_body(ApiKey::Metadata, &out.freeze()).unwrap(), resp);
            let drained = Response::Drain { draining: clustered, metadata };
            let mut out = BytesMut::new();
            drained.encode_body(&mut out);
            prop_assert_eq!(Response::decode_body(ApiKey::Drain, &out.freeze()).unwrap(), drained);
        }
    }

    #[test]
    fn records_that_do_not_follow_their_start_are_refused() {
        let mut rs = ReplicatedRecords {
            start: 10,
            records: vec![StoredRecord {
                offset: 11,
                timestamp_ms: 0,
                record: Record::new("x"),
            }],
            ..ReplicatedRecords::default()
        };
        let mut out = BytesMut::new();
        PeerAnswer::Records(rs.clone()).encode(&mut out);
        let body = out.freeze();
        assert!(PeerAnswer::decode(&mut Reader::shared(&body)).is_err());
        rs.records[0].offset = 10;
        let mut out = BytesMut::new();
        PeerAnswer::Records(rs.clone()).encode(&mut out);
        let body = out.freeze();
        assert_eq!(
            PeerAnswer::decode(&mut Reader::shared(&body)).unwrap(),
            PeerAnswer::Records(rs)
        );
    }
}
