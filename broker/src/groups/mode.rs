//! How a consumer group hands out records: the mode a group is created with, and its byte on
//! the wire.

use crate::codec::DecodeError;

/// How a consumer group hands out records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchMode {
    /// Any member gets any record; each delivery is a lease.
    Shared,
    /// A partition belongs to one member at a time; strict offset order.
    Ordered,
}

impl FetchMode {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Shared => 0,
            Self::Ordered => 1,
        }
    }

    pub(crate) fn from_u8(field: &'static str, v: u8, offset: usize) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Self::Shared),
            1 => Ok(Self::Ordered),
            _ => Err(DecodeError::Invalid {
                field,
                reason: "mode must be 0 (shared) or 1 (ordered)",
                offset,
            }),
        }
    }

    /// `"shared"` or `"ordered"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Ordered => "ordered",
        }
    }
}
