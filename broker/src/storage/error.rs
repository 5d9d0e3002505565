//! [`StorageError`]: why a storage call failed, with the file, offset or limit it concerns.
//! Shared by the log, its segments and the group journal.

use std::path::PathBuf;

/// A storage failure, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{op} {path}: {cause}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A record failed its checksum or could not be decoded.
    #[error("corrupt record at offset {offset} in {path}: {reason}")]
    Corrupt {
        /// The record's offset.
        offset: u64,
        /// The segment file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A record too large for a segment.
    #[error("record of {bytes} bytes is over the limit of {max} bytes")]
    RecordTooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The log's writer has stopped (the broker is shutting down).
    #[error("the partition writer has stopped")]
    Closed,
    /// A write or sync failed earlier, so what reached the disk is unknown: the partition (or
    /// group journal) takes no more writes until a restart lets recovery settle its tail.
    #[error(
        "writes are refused after a failed write or sync (see the broker's log); restart the broker to recover"
    )]
    Fenced,
    /// This broker stopped leading the partition while the request waited: the records may or
    /// may not be committed by the next leader (a producer re-sends them with their dedup ids).
    #[error("this broker no longer leads the partition; send to the leader")]
    NotLeader,
}

impl StorageError {
    /// An equal error, for answering every request of a batch that failed together.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Io { op, path, cause } => Self::Io {
                op,
                path: path.clone(),
                cause: std::io::Error::new(cause.kind(), cause.to_string()),
            },
            Self::Corrupt {
                offset,
                path,
                reason,
            } => Self::Corrupt {
                offset: *offset,
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::RecordTooLarge { bytes, max } => Self::RecordTooLarge {
                bytes: *bytes,
                max: *max,
            },
            Self::Closed => Self::Closed,
            Self::Fenced => Self::Fenced,
            Self::NotLeader => Self::NotLeader,
        }
    }

    /// Wraps an I/O error with what was being done and where.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            cause,
        }
    }
}
