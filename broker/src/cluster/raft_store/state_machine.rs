//! The state machine half of the Raft store: the applied [`Metadata`] (in memory) and the
//! latest snapshot (in `snapshot.json`); the parent module says why that split is safe.
//!
//! Invariants: the current snapshot in memory is the one in `snapshot.json` (a build or an
//! install holds `Shared::snapshot_io` from reading the state to swapping the snapshot, so the
//! two never interleave and the newest always lands last); watchers of the metadata see its
//! values in apply order, because they are published under the state's lock.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::files::{
    MAX_SNAPSHOT_BYTES, RaftStoreError, SNAPSHOT_FILE, blocking, lock, read_json, write_atomic,
};
use crate::cluster::meta::{MetaResponse, Metadata};
use crate::cluster::{
    Entry, LogId, RaftStorageError, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};

/// Opens the state machine half of the store in `dir`: the latest snapshot, if any, is its
/// starting state.
pub(super) fn open_state_machine(dir: &Path) -> Result<StateMachine, RaftStoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    let snapshot: Option<SnapshotFile> = read_json(&path, MAX_SNAPSHOT_BYTES)?;
    StateMachine::new(path, snapshot)
}

/// openraft's state machine: the cluster [`Metadata`], the last applied log id and membership,
/// and the latest snapshot (durable in `snapshot.json`).
///
/// Cloning is cheap and shares the state: keep a clone (for [`Self::metadata_watch`]) before
/// handing this one to `Raft::new`. Only openraft should call the trait methods.
#[derive(Debug, Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// Builds snapshots of a [`StateMachine`] for openraft, concurrently with its applies.
#[derive(Debug)]
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    snapshot_path: PathBuf,
    state: Mutex<Applied>,
    /// Held across a snapshot's build or install, file write included, so they run one at a
    /// time and `snapshot.json` always holds the one `Applied::current` holds.
    snapshot_io: tokio::sync::Mutex<()>,
    metadata_tx: watch::Sender<Metadata>,
    snapshots_built: AtomicU64,
}

#[derive(Debug)]
struct Applied {
    metadata: Metadata,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    current: Option<StoredSnapshot>,
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// The snapshot's data as openraft sends it: a [`SnapshotData`] as JSON.
    data: Vec<u8>,
}

/// A snapshot's data: the state machine at its last log id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotData {
    metadata: Metadata,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

/// `snapshot.json`.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: SnapshotData,
}

impl StateMachine {
    fn new(snapshot_path: PathBuf, snapshot: Option<SnapshotFile>) -> Result<Self, RaftStoreError> {
        let mut applied = Applied {
            metadata: Metadata::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            current: None,
        };
        if let Some(file) = snapshot {
            let data =
                serde_json::to_vec(&file.data).map_err(RaftStoreError::encode("snapshot"))?;
            applied.metadata = file.data.metadata;
            applied.last_applied = file.meta.last_log_id;
            applied.last_membership = file.meta.last_membership.clone();
            applied.current = Some(StoredSnapshot {
                meta: file.meta,
                data,
            });
        }
        let (metadata_tx, _) = watch::channel(applied.metadata.clone());
        Ok(Self {
            shared: Arc::new(Shared {
                snapshot_path,
                state: Mutex::new(applied),
                snapshot_io: tokio::sync::Mutex::new(()),
                metadata_tx,
                snapshots_built: AtomicU64::new(0),
            }),
        })
    }

    /// The last log id the current snapshot covers, for the open message.
    pub(super) fn snapshot_last_log_id(&self) -> Option<LogId> {
        self.shared
            .state()
            .current
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
    }

    /// The metadata as of the last applied entry or installed snapshot; the receiver sees every
    /// change (a new topic, a snapshot install), not the blank and membership entries.
    pub fn metadata_watch(&self) -> watch::Receiver<Metadata> {
        self.shared.metadata_tx.subscribe()
    }

    /// A copy of the metadata as of the last applied entry or installed snapshot.
    pub fn metadata(&self) -> Metadata {
        self.shared.state().metadata.clone()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, Applied> {
        lock(&self.state)
    }

    /// Publishes `metadata` to the watchers if it differs from what they saw.
    fn publish(&self, metadata: &Metadata) {
        self.metadata_tx.send_if_modified(|seen| {
            if seen == metadata {
                false
            } else {
                *seen = metadata.clone();
                true
            }
        });
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let state = self.shared.state();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.shared.state();
        let mut answers = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let answer = match entry.payload {
                EntryPayload::Blank => MetaResponse::None,
                EntryPayload::Normal(command) => state.metadata.apply(&command),
                EntryPayload::Membership(membership) => {
                    state.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    MetaResponse::None
                }
            };
            answers.push(answer);
        }
        // Under the lock, so watchers see the values in apply order.
        self.shared.publish(&state.metadata);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let bytes = snapshot.into_inner();
        let path = self.shared.snapshot_path.clone();
        if bytes.len() as u64 > MAX_SNAPSHOT_BYTES {
            let e = RaftStoreError::TooLarge {
                what: "snapshot",
                bytes: bytes.len() as u64,
                limit: MAX_SNAPSHOT_BYTES,
            };
            return Err(e.into_storage(subject, ErrorVerb::Read));
        }
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(|e| {
            let e = RaftStoreError::InvalidSnapshot {
                id: meta.snapshot_id.clone(),
                reason: e.to_string(),
            };
            e.into_storage(subject.clone(), ErrorVerb::Read)
        })?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        let encoded = serde_json::to_vec(&file)
            .map_err(RaftStoreError::encode("snapshot"))
            .map_err(|e| e.into_storage(subject.clone(), ErrorVerb::Write))?;

        let _io = self.shared.snapshot_io.lock().await;
        blocking(&path.clone(), move || write_atomic(&path, &encoded))
            .await
            .map_err(|e| e.into_storage(subject, ErrorVerb::Write))?;
        let mut state = self.shared.state();
        state.metadata = file.data.metadata;
        state.last_applied = meta.last_log_id;
        state.last_membership = meta.last_membership.clone();
        state.current = Some(StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        });
        self.shared.publish(&state.metadata);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, RaftStorageError> {
        Ok(self.shared.state().current.clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, RaftStorageError> {
        let _io = self.shared.snapshot_io.lock().await;
        let data = {
            let state = self.shared.state();
            SnapshotData {
                metadata: state.metadata.clone(),
                last_applied: state.last_applied,
                last_membership: state.last_membership.clone(),
            }
        };
        let seq = self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match data.last_applied {
            Some(id) => format!("{id}-{seq}"),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.last_membership.clone(),
            snapshot_id,
        };
        let to_storage = |e: RaftStoreError| {
            e.into_storage(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        };
        let bytes = serde_json::to_vec(&data)
            .map_err(RaftStoreError::encode("snapshot"))
            .map_err(to_storage)?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        let encoded = serde_json::to_vec(&file)
            .map_err(RaftStoreError::encode("snapshot"))
            .map_err(to_storage)?;
        let path = self.shared.snapshot_path.clone();
        blocking(&path.clone(), move || write_atomic(&path, &encoded))
            .await
            .map_err(to_storage)?;
        // `snapshot_io` kept any install out since the state was read, so this one is the
        // newest snapshot.
        self.shared.state().current = Some(StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}
