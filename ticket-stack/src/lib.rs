//! Everything that runs the ticket service rather than being it: the whole stack in one process
//! on loopback ([`stack`], behind `ticket-svc up` and `ticket-svc demo`) with its worker
//! [`supervisor`], the stack as separate supervised processes ([`cluster`], behind
//! `up --cluster` and `demo --cluster`, with its chaos mode), the [`demo`] over either, the
//! [`credentials`] their APIs
//! share, the CPU pinning of runtime workers ([`affinity`]), and the buyer crowd
//! ([`rush`], behind `ticket-svc rush`) with its report. The crate also builds the `ticket-svc`
//! binary, whose `api` and `worker` commands run the service crate alone.
//!
//! The runner and the crowd are behind the `stack` feature (on by default); without it only
//! [`affinity`] (for the binary's `--pin-workers`), [`access_args`] (the API's front-door
//! flags) and [`service`] (`api` and `worker`) are left.

pub mod access_args;
pub mod affinity;
#[cfg(feature = "stack")]
pub mod cluster;
#[cfg(feature = "stack")]
pub mod credentials;
#[cfg(feature = "stack")]
pub mod demo;
#[cfg(feature = "stack")]
pub mod rush;
pub mod service;
#[cfg(feature = "stack")]
pub mod stack;
#[cfg(feature = "stack")]
pub mod supervisor;

/// The environment variable through which `up --cluster` tells the processes it starts its own
/// pid, so that each ends when the runner does (see the binary's `end_with_the_supervisor`).
pub const SUPERVISOR_PID: &str = "TICKET_SUPERVISOR_PID";
