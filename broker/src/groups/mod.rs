//! Consumer groups: who holds which record, and what is done.
//!
//! `state` is the pure state machine (no I/O, time passed in as milliseconds) and is where the
//! semantics live; `journal` persists acknowledged progress so a restart loses none of it.

pub mod journal;
pub mod state;

pub use state::{
    AckOutcome, ConsumerId, CountsToWrite, DeadLetter, Grant, GroupConfig, GroupState, NackOutcome,
    PartitionProgress,
};
