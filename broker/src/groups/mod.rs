//! Consumer groups: who holds which record, and what is done.
//!
//! `state` is the pure state machine (no I/O, time passed in as milliseconds) and is where the
//! semantics live; `progress` is what of it is durable, and how two copies of it merge (a
//! cluster's new leader merges a majority's); `journal` persists that progress so a restart
//! loses none of it.

pub mod journal;
pub mod mode;
pub mod progress;
pub mod state;

pub use mode::FetchMode;
pub use progress::PartitionProgress;
pub use state::{
    AckOutcome, ConsumerId, CountsToWrite, DeadLetter, Grant, GroupConfig, GroupState, NackOutcome,
};
