//! A broker on a new, empty disk joining its cluster under its old id (`broker serve --join`;
//! `REPLICATION.md`, "A broker on a new disk").
//!
//! The broker lost its Raft vote and its replicas' promises with its disk. Taken back as it is,
//! it could vote twice in one term, or promise an old leader what it had refused, and either
//! can lose acknowledged records. So before Raft starts it asks the other brokers for their
//! epoch until enough answered that the highest is at least every epoch it ever voted in or
//! promised (a majority of the cluster less itself: of any majority it was part of, one of
//! them answered), votes for itself in that epoch (so it votes for no one else in it), and
//! gives every replica it opens that epoch as its promise. Then, until it holds what it lost,
//! it counts towards no majority: it stands for no election, each replica gives no promise
//! and no records until it has held its leader's commit point once, and it gives a new leader
//! no copy of the groups until it has copied the leader's (`catch_up.rs`). `raft/join.json`
//! keeps where the join stands across restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::NodeId;
use super::peers::Peers;
use crate::groups::journal::write_atomic;
use crate::protocol::{Request, Response};
use crate::storage::{Disk, StorageError};

const FILE_NAME: &str = "join.json";

/// Where a join stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct JoinState {
    /// The epoch learned from the other brokers when the join began.
    pub epoch: u64,
    /// The leader's consumer groups were copied here.
    pub groups_copied: bool,
    /// Every replica caught up too: the broker is a member like any other.
    pub done: bool,
}

fn path(raft_dir: &Path) -> PathBuf {
    raft_dir.join(FILE_NAME)
}

/// The join this broker began, if it ever began one.
pub(super) fn load(disk: &dyn Disk, raft_dir: &Path) -> Result<Option<JoinState>, StorageError> {
    let path = path(raft_dir);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let raw =
        crate::storage::read_stable(disk, &path).map_err(|e| StorageError::io("read", &path, e))?;
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| StorageError::Corrupt {
            offset: 0,
            path,
            reason: e.to_string(),
        })
}

/// Writes where the join stands, durably.
pub(super) fn save(disk: &dyn Disk, raft_dir: &Path, state: JoinState) -> Result<(), StorageError> {
    let raw = serde_json::to_vec(&state).unwrap_or_default();
    write_atomic(disk, &path(raft_dir), &raw)
}

/// How many other brokers must answer so that the highest epoch among them is at least any
/// this broker voted in or promised: every such epoch was elected or promised by a majority
/// that held it, of which at least a majority less this broker are others, so answers from
/// all but that many less one of the others include one of them.
pub(super) fn answers_needed(members: usize) -> usize {
    (members - members / 2).min(members.saturating_sub(1))
}

/// Asks every other broker for its epoch until [`answers_needed`] answered; returns the
/// highest, or `None` if `stop` fired first.
pub(super) async fn learn_epoch(
    peers: &Peers,
    members: usize,
    stop: &CancellationToken,
) -> Option<u64> {
    let needed = answers_needed(members);
    let mut answered: std::collections::BTreeMap<NodeId, u64> = std::collections::BTreeMap::new();
    let mut asked = 0u32;
    loop {
        for node in peers.ids() {
            if answered.contains_key(&node) {
                continue;
            }
            match peers.call(node, Request::Metadata).await {
                Ok(Response::Metadata(m)) => {
                    answered.insert(node, m.epoch);
                }
                Ok(other) => tracing::warn!(node, answer = ?other, "unexpected answer to metadata"),
                Err(e) => tracing::debug!(node, error = %e, "no epoch from this broker yet"),
            }
        }
        if answered.len() >= needed {
            return Some(answered.values().max().copied().unwrap_or(0));
        }
        asked += 1;
        if asked % 10 == 1 {
            tracing::warn!(
                answered = answered.len(),
                needed,
                "joining on a new disk: waiting for enough brokers to say their epoch"
            );
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_brokers_answer_to_include_one_of_every_majority() {
        // Of 3, a majority less this broker is one other: both others must answer. Of 5, a
        // majority less this broker is two others: three of the four must answer.
        assert_eq!(answers_needed(3), 2);
        assert_eq!(answers_needed(5), 3);
        for members in 2..=9usize {
            let majority = members / 2 + 1;
            let others = members - 1;
            // Others that may have missed an epoch a majority (with this broker) held.
            let may_lack = others - (majority - 1);
            assert!(answers_needed(members) > may_lack, "{members} brokers");
            assert!(answers_needed(members) <= others, "{members} brokers");
        }
    }

    #[test]
    fn the_join_state_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::storage::OsDisk::shared();
        assert_eq!(load(&*disk, dir.path()).unwrap(), None);
        let state = JoinState {
            epoch: 9,
            groups_copied: true,
            done: false,
        };
        save(&*disk, dir.path(), state).unwrap();
        assert_eq!(load(&*disk, dir.path()).unwrap(), Some(state));
    }
}
