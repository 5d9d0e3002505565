//! The bodies of the requests that replicate consumer-group progress between brokers:
//! GroupProgress (a leader's journal entries) and ReadGroups (a new leader reads a broker's
//! copy of every group of a topic). `PROTOCOL.md` has the byte tables.

use bytes::{BufMut, BytesMut};

use crate::codec::{DecodeError, Reader, WriteExt};
use crate::groups::journal::{ENTRY_BYTES, Entry};
use crate::groups::{FetchMode, GroupConfig, PartitionProgress};

/// Bytes of a group configuration on the wire.
const CONFIG_BYTES: usize = 1 + 8 + 4 + 4;
/// Bytes of the smallest partition progress on the wire: committed, two counts, mark.
const MIN_PROGRESS_BYTES: usize = 8 + 4 + 4 + 8;

fn put_config(c: &GroupConfig, out: &mut BytesMut) {
    out.put_u8(c.mode.to_u8());
    out.put_u64(c.lease_ms);
    out.put_u32(c.max_attempts);
    out.put_u32(c.prefetch);
}

fn get_config(r: &mut Reader<'_>) -> Result<GroupConfig, DecodeError> {
    let at = r.position();
    Ok(GroupConfig {
        mode: FetchMode::from_u8("group.mode", r.u8("group.mode")?, at)?,
        lease_ms: r.u64("group.lease_ms")?,
        max_attempts: r.u32("group.max_attempts")?,
        prefetch: r.u32("group.prefetch")?,
    })
}

fn put_progress(p: &PartitionProgress, out: &mut BytesMut) {
    out.put_u64(p.committed);
    out.put_count(p.acked.len());
    for o in &p.acked {
        out.put_u64(*o);
    }
    out.put_count(p.attempts.len());
    for (o, a) in &p.attempts {
        out.put_u64(*o);
        out.put_u32(*a);
    }
    out.put_u64(p.mark);
}

fn get_progress(r: &mut Reader<'_>) -> Result<PartitionProgress, DecodeError> {
    let committed = r.u64("progress.committed")?;
    let n = r.count("progress.acked", 8)?;
    let mut acked = Vec::with_capacity(n);
    for _ in 0..n {
        acked.push(r.u64("progress.acked")?);
    }
    let n = r.count("progress.attempts", 12)?;
    let mut attempts = Vec::with_capacity(n);
    for _ in 0..n {
        attempts.push((r.u64("attempts.offset")?, r.u32("attempts.count")?));
    }
    Ok(PartitionProgress {
        committed,
        acked,
        attempts,
        mark: r.u64("progress.mark")?,
    })
}

/// A leader sends a follower entries of a group's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProgressRequest {
    /// The leader's epoch.
    pub epoch: u64,
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// The group's configuration (a follower creates the group with it).
    pub config: GroupConfig,
    /// The entries, as the journal writes them.
    pub entries: Vec<Entry>,
}

impl GroupProgressRequest {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.epoch);
        out.put_str(&self.topic);
        out.put_str(&self.group);
        put_config(&self.config, out);
        out.put_count(self.entries.len());
        for e in &self.entries {
            out.put_slice(&e.encode());
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epoch = r.u64("group_progress.epoch")?;
        let topic = r.str("group_progress.topic")?;
        let group = r.str("group_progress.group")?;
        let config = get_config(r)?;
        let n = r.count("group_progress.entries", ENTRY_BYTES)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.position();
            let mut raw = [0u8; ENTRY_BYTES];
            raw[..4].copy_from_slice(&r.u32("entry.crc")?.to_be_bytes());
            raw[4..8].copy_from_slice(&r.u32("entry.word")?.to_be_bytes());
            raw[8..].copy_from_slice(&r.u64("entry.offset")?.to_be_bytes());
            entries.push(Entry::decode(&raw).ok_or(DecodeError::Invalid {
                field: "entry.crc",
                reason: "the entry's checksum does not match",
                offset: at,
            })?);
        }
        Ok(Self {
            epoch,
            topic,
            group,
            config,
            entries,
        })
    }
}

/// A new leader reads a broker's copy of every group of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadGroupsRequest {
    /// The leader's epoch.
    pub epoch: u64,
    /// The topic.
    pub topic: String,
}

impl ReadGroupsRequest {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.epoch);
        out.put_str(&self.topic);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: r.u64("read_groups.epoch")?,
            topic: r.str("read_groups.topic")?,
        })
    }
}

/// A group as a broker holds it: its name, configuration and durable progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCopy {
    /// The group's name.
    pub name: String,
    /// Its configuration.
    pub config: GroupConfig,
    /// Its progress, per partition.
    pub progress: Vec<PartitionProgress>,
}

impl GroupCopy {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_str(&self.name);
        put_config(&self.config, out);
        out.put_count(self.progress.len());
        for p in &self.progress {
            put_progress(p, out);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.str("group.name")?;
        let config = get_config(r)?;
        let n = r.count("group.partitions", MIN_PROGRESS_BYTES)?;
        let mut progress = Vec::with_capacity(n);
        for _ in 0..n {
            progress.push(get_progress(r)?);
        }
        Ok(Self {
            name,
            config,
            progress,
        })
    }

    /// Bytes of the smallest copy on the wire (an empty name, no partitions).
    pub(crate) const MIN_BYTES: usize = 2 + CONFIG_BYTES + 4;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peer::PeerAnswer;
    use crate::protocol::{ApiKey, Request, Response};
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (0u32..1 << 31, any::<u64>())
                .prop_map(|(partition, offset)| Entry::Done { partition, offset }),
            (0u32..=0xFFFF, any::<u64>())
                .prop_map(|(partition, mark)| Entry::Counted { partition, mark }),
            (0u32..=0xFFFF, any::<u64>(), 1u32..=0x7FFF).prop_map(
                |(partition, offset, attempts)| Entry::Delivered {
                    partition,
                    offset,
                    attempts
                }
            ),
        ]
    }

    fn arb_config() -> impl Strategy<Value = GroupConfig> {
        (any::<bool>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
            |(ordered, lease_ms, max_attempts, prefetch)| GroupConfig {
                mode: if ordered {
                    FetchMode::Ordered
                } else {
                    FetchMode::Shared
                },
                lease_ms,
                max_attempts,
                prefetch,
            },
        )
    }

    fn arb_copy() -> impl Strategy<Value = GroupCopy> {
        let progress = (
            any::<u64>(),
            proptest::collection::vec(any::<u64>(), 0..4),
            proptest::collection::vec((any::<u64>(), any::<u32>()), 0..4),
            any::<u64>(),
        )
            .prop_map(|(committed, acked, attempts, mark)| PartitionProgress {
                committed,
                acked,
                attempts,
                mark,
            });
        (
            "[a-z]{0,8}",
            arb_config(),
            proptest::collection::vec(progress, 0..3),
        )
            .prop_map(|(name, config, progress)| GroupCopy {
                name,
                config,
                progress,
            })
    }

    fn round_trip_request(req: &Request) -> Request {
        let mut out = BytesMut::new();
        req.encode_body(&mut out);
        Request::decode_body(req.api_key(), &out.freeze()).unwrap()
    }

    proptest! {
        #[test]
        fn group_requests_round_trip(
            epoch in any::<u64>(),
            topic in "[a-z]{1,8}",
            group in "[a-z]{1,8}",
            config in arb_config(),
            entries in proptest::collection::vec(arb_entry(), 0..6),
        ) {
            let progress = Request::GroupProgress(GroupProgressRequest {
                epoch, topic: topic.clone(), group, config, entries,
            });
            prop_assert_eq!(round_trip_request(&progress), progress);
            let read = Request::ReadGroups(ReadGroupsRequest { epoch, topic });
            prop_assert_eq!(round_trip_request(&read), read);
        }

        #[test]
        fn group_answers_round_trip(copies in proptest::collection::vec(arb_copy(), 0..3)) {
            for (api, answer) in [
                (ApiKey::ReadGroups, PeerAnswer::Groups(copies.clone())),
                (ApiKey::GroupProgress, PeerAnswer::GroupWritten),
            ] {
                let resp = Response::Peer(answer);
                let mut out = BytesMut::new();
                resp.encode_body(&mut out);
                prop_assert_eq!(Response::decode_body(api, &out.freeze()).unwrap(), resp);
            }
        }
    }

    #[test]
    fn an_entry_whose_checksum_fails_is_refused() {
        let req = Request::GroupProgress(GroupProgressRequest {
            epoch: 3,
            topic: "t".into(),
            group: "g".into(),
            config: GroupConfig {
                mode: FetchMode::Shared,
                lease_ms: 1000,
                max_attempts: 3,
                prefetch: 10,
            },
            entries: vec![Entry::Done {
                partition: 0,
                offset: 7,
            }],
        });
        let mut out = BytesMut::new();
        req.encode_body(&mut out);
        let last = out.len() - 1;
        out[last] ^= 1;
        let err = Request::decode_body(ApiKey::GroupProgress, &out.freeze()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
