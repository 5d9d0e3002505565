//! The on-disk log: one directory per topic-partition holding segment files.
//!
//! Layout under the data directory:
//!
//! ```text
//! topics/<topic>/topic.json                  partitions and retention (written once, atomically)
//! topics/<topic>/<partition>/<base:020>.log  records, appended
//! topics/<topic>/<partition>/<base:020>.index  u32 file position of each record (dense), CRC32C
//! groups/<topic>/<group>/...                 consumer-group progress (see `groups::journal`)
//! ```
//!
//! A segment is named by the offset of its first record. The index is derived data: recovery
//! rebuilds it whenever it does not match its log.

mod clock;
pub mod disk;
mod error;
pub mod log;
pub mod record;
pub mod recovery;
pub mod segment;

pub use clock::now_ms;
pub use disk::{Disk, DiskFile, FileRef, OsDisk, create_dir_durable, open_durable, read_stable};
pub use error::StorageError;
pub use log::{Batch, LogConfig, PartitionLog};
pub use record::StoredRecord;
pub use recovery::RecoveryReport;
