//! Tests of the Raft store: openraft's own storage suite, then restarts and damaged files.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Cursor, Write};
use std::path::PathBuf;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, blank_ent, log_id, membership_ent};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use proptest::prelude::*;
use tempfile::TempDir;

use super::files::*;
use super::log_store::{decode_records, encode_record};
use super::*;
use crate::cluster::meta::{MetaCommand, MetaResponse};
use crate::cluster::{
    Entry, NodeId, RaftStorageError, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};
use crate::engine::TopicConfig;

/// Builds each store of openraft's suite in a temp dir the guard deletes.
struct TempDirStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempDirStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), RaftStorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (log, machine) = open(dir.path()).await.unwrap();
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    // The suite runs each case on a runtime of its own, so this is not a tokio test.
    Suite::test_all(TempDirStores).unwrap();
}

fn topic(partitions: u32) -> TopicConfig {
    TopicConfig {
        partitions,
        retention_bytes: 0,
        retention_ms: 0,
    }
}

fn create(term: u64, index: u64, name: &str) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(MetaCommand::CreateTopic {
            name: name.to_string(),
            config: topic(2),
        }),
    }
}

fn voters() -> Vec<BTreeSet<NodeId>> {
    vec![BTreeSet::from([1, 2, 3])]
}

/// Entries 0..5: a membership, two topics, a blank, a topic.
fn five_entries() -> Vec<Entry> {
    vec![
        membership_ent::<TypeConfig>(1, 1, 0, voters()),
        create(1, 1, "a"),
        create(1, 2, "b"),
        blank_ent::<TypeConfig>(2, 1, 3),
        create(2, 4, "c"),
    ]
}

async fn all_entries(log: &mut LogStore) -> Vec<Entry> {
    log.try_get_log_entries(..).await.unwrap()
}

fn log_file(dir: &TempDir) -> PathBuf {
    dir.path().join(LOG_FILE)
}

#[tokio::test]
async fn reopening_restores_the_vote_committed_id_log_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let entries = five_entries();
    let vote = Vote::new(3, 1);
    let snapshot = {
        let (mut log, mut machine) = open(dir.path()).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_committed(Some(log_id(2, 1, 4))).await.unwrap();
        machine.apply(entries[..3].to_vec()).await.unwrap();
        let snapshot = machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        log.purge(log_id(1, 1, 1)).await.unwrap();
        snapshot
    };

    let (mut log, mut machine) = open(dir.path()).await.unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 1, 4)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 4)));
    assert_eq!(all_entries(&mut log).await, entries[2..].to_vec());

    let current = machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(
        current.snapshot.into_inner(),
        snapshot.snapshot.into_inner()
    );
    let (applied, membership) = machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 2)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1, 0)));
    let topics: Vec<_> = machine.metadata().topics.into_keys().collect();
    assert_eq!(topics, ["a", "b"]);
    assert_eq!(*machine.metadata_watch().borrow(), machine.metadata());
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_open_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let entries = five_entries();
    {
        let (mut log, _) = open(dir.path()).await.unwrap();
        log.blocking_append(entries[..3].to_vec()).await.unwrap();
    }
    let whole = fs::metadata(log_file(&dir)).unwrap().len();
    // A record whose header promises 100 bytes, of which 10 made it to disk.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(log_file(&dir))
        .unwrap();
    file.write_all(&100u32.to_be_bytes()).unwrap();
    file.write_all(&[0xab; 14]).unwrap();
    drop(file);

    {
        let (mut log, _) = open(dir.path()).await.unwrap();
        assert_eq!(all_entries(&mut log).await, entries[..3].to_vec());
        assert_eq!(fs::metadata(log_file(&dir)).unwrap().len(), whole);
        log.blocking_append(entries[3..].to_vec()).await.unwrap();
    }
    let (mut log, _) = open(dir.path()).await.unwrap();
    assert_eq!(all_entries(&mut log).await, entries);
}

#[tokio::test]
async fn a_corrupt_record_cuts_the_log_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let entries = five_entries();
    {
        let (mut log, _) = open(dir.path()).await.unwrap();
        log.blocking_append(entries[..1].to_vec()).await.unwrap();
    }
    let first = fs::metadata(log_file(&dir)).unwrap().len();
    {
        let (mut log, _) = open(dir.path()).await.unwrap();
        log.blocking_append(entries[1..].to_vec()).await.unwrap();
    }
    // Flip one byte in the body of the second record.
    let mut bytes = fs::read(log_file(&dir)).unwrap();
    let at = usize::try_from(first).unwrap() + RECORD_HEADER_BYTES + 3;
    bytes[at] ^= 0x20;
    fs::write(log_file(&dir), &bytes).unwrap();

    let (mut log, _) = open(dir.path()).await.unwrap();
    assert_eq!(all_entries(&mut log).await, entries[..1].to_vec());
    assert_eq!(fs::metadata(log_file(&dir)).unwrap().len(), first);
}

#[tokio::test]
async fn a_truncation_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let entries = five_entries();
    let replacement = create(3, 3, "d");
    {
        let (mut log, _) = open(dir.path()).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.truncate(log_id(2, 1, 3)).await.unwrap();
        assert_eq!(all_entries(&mut log).await, entries[..3].to_vec());
        log.blocking_append([replacement.clone()]).await.unwrap();
    }
    let (mut log, _) = open(dir.path()).await.unwrap();
    let mut expected = entries[..3].to_vec();
    expected.push(replacement);
    assert_eq!(all_entries(&mut log).await, expected);
}

#[tokio::test]
async fn a_crash_between_saving_the_purged_id_and_rewriting_the_log_hides_purged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let entries = five_entries();
    {
        let (mut log, _) = open(dir.path()).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
    }
    // What `purge` writes first; the crash comes before the log is rewritten.
    let purged = serde_json::to_vec(&Some(log_id(1, 1, 2))).unwrap();
    fs::write(dir.path().join(PURGED_FILE), purged).unwrap();

    let (mut log, _) = open(dir.path()).await.unwrap();
    assert_eq!(all_entries(&mut log).await, entries[3..].to_vec());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 4)));
}

#[tokio::test]
async fn a_corrupt_snapshot_file_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).await.unwrap());
    fs::write(dir.path().join(SNAPSHOT_FILE), b"{\"meta\":").unwrap();
    let err = open(dir.path()).await.unwrap_err();
    assert!(matches!(err, RaftStoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
}

#[tokio::test]
async fn the_metadata_watch_sees_applies_and_installs_but_not_blank_entries() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_, mut leader) = open(leader_dir.path()).await.unwrap();
    leader
        .apply([create(1, 0, "x"), create(1, 1, "y")])
        .await
        .unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (_, mut machine) = open(dir.path()).await.unwrap();
    let mut watch = machine.metadata_watch();
    let answers = machine.apply([create(1, 0, "a")]).await.unwrap();
    assert_eq!(
        answers,
        [MetaResponse::Topic {
            created: true,
            config: topic(2)
        }]
    );
    assert!(watch.has_changed().unwrap());
    assert!(watch.borrow_and_update().topic("a").is_some());

    let answers = machine
        .apply([blank_ent::<TypeConfig>(2, 1, 1), create(2, 2, "a")])
        .await
        .unwrap();
    assert_eq!(answers[0], MetaResponse::None);
    assert!(matches!(
        answers[1],
        MetaResponse::Topic { created: false, .. }
    ));
    assert!(!watch.has_changed().unwrap());

    let mut received = machine.begin_receiving_snapshot().await.unwrap();
    *received = *snapshot.snapshot;
    machine
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    assert!(watch.has_changed().unwrap());
    let topics: Vec<_> = watch.borrow_and_update().topics.keys().cloned().collect();
    assert_eq!(topics, ["x", "y"]);
    let (applied, _) = machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 1)));

    // The installed snapshot is the one a restart loads.
    drop(machine);
    let (_, mut machine) = open(dir.path()).await.unwrap();
    assert_eq!(
        machine.get_current_snapshot().await.unwrap().unwrap().meta,
        snapshot.meta
    );
    assert_eq!(machine.metadata().topic("y"), Some(topic(2)));
}

#[tokio::test]
async fn a_snapshot_that_does_not_decode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut machine) = open(dir.path()).await.unwrap();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 1, 4)),
        last_membership: StoredMembership::default(),
        snapshot_id: "bad".to_string(),
    };
    let garbage = Box::new(Cursor::new(b"not json".to_vec()));
    assert!(machine.install_snapshot(&meta, garbage).await.is_err());
    assert!(machine.get_current_snapshot().await.unwrap().is_none());
}

/// Every record's end offset in `bytes`, and the bytes.
fn encoded(entries: &[Entry]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for entry in entries {
        encode_record(&mut bytes, entry).unwrap();
        ends.push(bytes.len());
    }
    (bytes, ends)
}

#[test]
fn every_cut_of_the_log_keeps_exactly_its_whole_records() {
    let entries = five_entries();
    let (bytes, ends) = encoded(&entries);
    for cut in 0..=bytes.len() {
        let decoded = decode_records(&bytes[..cut]);
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(decoded.entries, entries[..whole].to_vec(), "cut at {cut}");
        let valid = if whole == 0 { 0 } else { ends[whole - 1] };
        assert_eq!(decoded.valid_bytes, valid, "cut at {cut}");
        assert_eq!(decoded.stopped.is_none(), valid == cut, "cut at {cut}");
    }
}

#[test]
fn an_out_of_sequence_record_stops_the_read() {
    let entries = five_entries();
    let (bytes, ends) = encoded(&[entries[0].clone(), entries[2].clone()]);
    let decoded = decode_records(&bytes);
    assert_eq!(decoded.entries, entries[..1].to_vec());
    assert_eq!(decoded.valid_bytes, ends[0]);
    assert!(decoded.stopped.is_some());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let decoded = decode_records(&bytes);
        prop_assert!(decoded.valid_bytes <= bytes.len());
    }

    #[test]
    fn garbage_after_valid_records_leaves_them_whole(
        garbage in proptest::collection::vec(any::<u8>(), 1..256),
    ) {
        let entries = five_entries();
        let (mut bytes, ends) = encoded(&entries);
        bytes.extend_from_slice(&garbage);
        let decoded = decode_records(&bytes);
        prop_assert_eq!(decoded.entries, entries);
        prop_assert_eq!(decoded.valid_bytes, ends[4]);
        prop_assert!(decoded.stopped.is_some());
    }
}
