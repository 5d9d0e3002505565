//! The broker's wire protocol, sans I/O: framing (`frame`), typed messages (`message`), the
//! bodies a cluster adds (`peer`, and `peer_groups` for consumer groups), and the record they
//! all carry (`record`).
//!
//! `broker/PROTOCOL.md` is the byte-by-byte description; this module is its implementation
//! and the two must agree.

pub mod frame;
pub mod message;
pub mod peer;
pub mod peer_groups;
pub mod record;

pub use crate::groups::FetchMode;
pub use frame::{FrameError, RequestHeader, ResponseHeader};
pub use message::{
    AckStatus, ApiKey, Delivery, ErrorCode, FetchRequest, NackStatus, ProduceAck, Request, Response,
};
pub use record::{Header, Record};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Default largest frame accepted (8 MiB), the length prefix excluded.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
