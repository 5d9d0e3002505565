//! A deterministic simulator of the broker's storage under disk faults, in the manner of
//! FoundationDB's simulation and TigerBeetle's VOPR: the real engine runs on a simulated disk
//! ([`disk::SimDisk`]) and clock, on one thread, with every background step (a partition's
//! write and sync, a journal's write) taken when the seed says. A seed replays its run exactly.
//!
//! `cargo run --release -p broker --example simulate -- --seeds 10000` runs many seeds;
//! `--seed N` replays one and prints its events. See docs/DESIGN.md, "Durability proven against the disk, by simulation".

mod clock;
pub mod disk;
mod options;
mod world;

pub use crate::planted::Planted;
pub use clock::SimClock;
pub use options::{Failure, Options, Outcome, faults_for};
pub use world::run;
