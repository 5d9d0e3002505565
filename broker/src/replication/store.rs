//! Where a replica keeps its promise and its labels: `replica.json` in the partition's
//! directory, `{"promised": 7, "epochs": [{"epoch": 3, "start": 0}, ...]}`, with
//! `"catching_up": true` on a broker that joined on a new disk until the replica first held
//! its leader's commit point.
//!
//! The file is replaced atomically (temp file, fsync, rename, directory fsync) before anything
//! that depends on it is answered, so a crash leaves the old or the new one. A partition
//! without the file has promised nothing and labels every record epoch 0: a log written by a
//! single node, before it joined a cluster. The file changes only when an epoch does, so its
//! cost is nothing next to the records' own syncs.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::epochs::{Epoch, EpochHistory, EpochStart};
use crate::groups::journal::write_atomic;
use crate::storage::{Disk, StorageError};

/// The file's name in a partition's directory.
pub const FILE_NAME: &str = "replica.json";

#[derive(Serialize, Deserialize)]
struct OnDisk {
    promised: Epoch,
    epochs: Vec<EpochStart>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    catching_up: bool,
}

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The highest epoch promised.
    pub promised: Epoch,
    /// The labels.
    pub history: EpochHistory,
    /// The replica may lack committed records (its broker joined on a new disk): it does
    /// not count towards a new leader's majority yet.
    pub catching_up: bool,
}

/// Reads what the partition in `dir` stored (`None`: no file, a replica that promised
/// nothing and labels every record epoch 0).
///
/// # Errors
/// When the file cannot be read, or does not parse, or its entries are out of order.
pub fn load(disk: &dyn Disk, dir: &Path) -> Result<Option<Stored>, StorageError> {
    let path = dir.join(FILE_NAME);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let raw =
        crate::storage::read_stable(disk, &path).map_err(|e| StorageError::io("read", &path, e))?;
    let corrupt = |reason: String| StorageError::Corrupt {
        offset: 0,
        path: path.clone(),
        reason,
    };
    let on_disk: OnDisk = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
    let history = EpochHistory::from_entries(on_disk.epochs).map_err(corrupt)?;
    Ok(Some(Stored {
        promised: on_disk.promised,
        history,
        catching_up: on_disk.catching_up,
    }))
}

/// Replaces the file with `stored`, durably.
///
/// # Errors
/// When it cannot be written or synced.
pub fn save(disk: &dyn Disk, dir: &Path, stored: &Stored) -> Result<(), StorageError> {
    let raw = serde_json::to_vec(&OnDisk {
        promised: stored.promised,
        epochs: stored.history.entries().to_vec(),
        catching_up: stored.catching_up,
    })
    .map_err(|e| StorageError::Corrupt {
        offset: 0,
        path: dir.join(FILE_NAME),
        reason: e.to_string(),
    })?;
    write_atomic(disk, &dir.join(FILE_NAME), &raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsDisk;

    #[test]
    fn a_missing_file_is_a_fresh_replica_and_a_saved_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = OsDisk::shared();
        assert_eq!(load(&*disk, dir.path()).unwrap(), None);
        let mut history = EpochHistory::default();
        history.push(2, 0).unwrap();
        history.push(5, 40).unwrap();
        for catching_up in [false, true] {
            let stored = Stored {
                promised: 6,
                history: history.clone(),
                catching_up,
            };
            save(&*disk, dir.path(), &stored).unwrap();
            assert_eq!(load(&*disk, dir.path()).unwrap(), Some(stored));
        }
        // A file written before the flag existed reads as not catching up.
        std::fs::write(dir.path().join(FILE_NAME), br#"{"promised":1,"epochs":[]}"#).unwrap();
        assert_eq!(
            load(&*disk, dir.path()).unwrap().map(|s| s.catching_up),
            Some(false)
        );
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = OsDisk::shared();
        std::fs::write(
            dir.path().join(FILE_NAME),
            br#"{"promised":1,"epochs":[{"epoch":3,"start":5},{"epoch":2,"start":6}]}"#,
        )
        .unwrap();
        let e = load(&*disk, dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("out of order"), "{e}");
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert!(load(&*disk, dir.path()).is_err());
    }
}
