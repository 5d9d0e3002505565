//! Integration tests: real sockets on 127.0.0.1 port 0, fake backends from
//! `balancer::testing`. No test asserts on timing performance; waits are bounded polls.

// Test helpers outside `#[test]` functions unwrap too (clippy's allow-unwrap-in-tests only
// covers the test functions themselves); a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod admin;
mod cli;
mod drain;
mod failover;
mod limits;
mod proxying;
mod queue;
mod replay;
mod server;
mod strategies;
mod support;
mod tls;
mod upstream;
