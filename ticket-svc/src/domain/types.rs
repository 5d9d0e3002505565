//! The sale's nouns: events, purchase requests, purchases and the jobs that carry them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::DomainError;
use super::waiting_room::WaitingRoom;
use super::window::SaleWindow;

/// An event's id, assigned by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EventId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(EventId)
    }
}

/// A purchase's id: a UUID v7 minted for one request (ids made later sort later, so indexes grow
/// at the end), or a UUID v5 derived from an Idempotency-Key; for a purchase of an event on shard
/// s ≥ 1 of a sharded store, either one re-stamped as a UUID v8 that carries s
/// ([`PurchaseId::on_shard`]), so the id alone finds its database.
///
/// The v8 layout (bytes of the UUID, big-endian as written):
///
/// | bytes | bits | holds |
/// |---|---|---|
/// | 0–5 | all | as in the original id (a v7's millisecond timestamp: minted ids still sort by time) |
/// | 6 | high 4 | version `8` (was `7` or `5`) |
/// | 6–13 | the rest | as in the original id (a v7's counter and random bits; the variant `10` in byte 8) |
/// | 14 | low 1 | `1` minted (the original was a v7), `0` derived from a key (a v5) |
/// | 14 | high 7 | as in the original id |
/// | 15 | all | the shard, 1 to 255 |
///
/// So at most [`MAX_SHARDS`] shards, and shard 0 keeps the plain v7 and v5 ids (unsharded
/// deployments and data from before sharding read the same). The stamp overwrites 9 of the
/// original's random bits: a minted id keeps its timestamp and its 42-bit counter, which make
/// ids of one process unique, and 23 random bits more; a derived id keeps 113 hash bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PurchaseId(pub Uuid);

/// The namespace of purchase ids derived from idempotency keys (fixed forever: changing it
/// would give a retried request a new purchase).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x9b4f_2c1e_6d3a_5f80_a1c7_e2d4_b608_f35e_u128);

/// The most shards a sharded store may have: a purchase id carries its shard in one byte
/// (shards 0 to 255; see [`PurchaseId`]).
pub const MAX_SHARDS: usize = 256;

/// The byte of a v8 purchase id that holds the shard.
const SHARD_BYTE: usize = 15;
/// The byte, and the bit in it, of a v8 purchase id that says "minted".
const MINTED_BYTE: usize = 14;
const MINTED_BIT: u8 = 0x01;

impl PurchaseId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Whether this id was minted by [`PurchaseId::new`] for one request (a UUID v7, or a v8
    /// stamped from one), rather than derived from an Idempotency-Key (a UUID v5, or a v8
    /// stamped from one), which a later request may name again.
    pub fn is_minted(self) -> bool {
        match self.0.get_version_num() {
            7 => true,
            8 => self.0.as_bytes()[MINTED_BYTE] & MINTED_BIT != 0,
            _ => false,
        }
    }

    /// This id as the id of a purchase whose event lives on `shard` (see [`PurchaseId`] for the
    /// layout). Pure and deterministic, so every API instance stamps a key's derived id the
    /// same way. Shard 0 leaves any id as it is; another shard replaces a stamped id's shard.
    pub fn on_shard(self, shard: u8) -> Self {
        if shard == 0 {
            return self;
        }
        let mut bytes = *self.0.as_bytes();
        if self.is_minted() {
            bytes[MINTED_BYTE] |= MINTED_BIT;
        } else {
            bytes[MINTED_BYTE] &= !MINTED_BIT;
        }
        bytes[SHARD_BYTE] = shard;
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    /// The shard whose database holds this purchase: the one stamped in a v8 id, 0 for any
    /// other id (every id from before sharding, and every id of shard 0).
    pub fn shard(self) -> u8 {
        if self.0.get_version_num() == 8 {
            self.0.as_bytes()[SHARD_BYTE]
        } else {
            0
        }
    }

    /// The id of the purchase an Idempotency-Key names: a UUID v5 of (event, buyer, key), so
    /// every API instance derives the same id with no coordination, the queue's dedup id makes
    /// a retry answer with the first position, and the store (keyed by purchase id) can never
    /// decide it twice. Buyers and keys have no control characters, so the `\n`-joined name is
    /// unambiguous.
    pub fn for_idempotency_key(event: EventId, buyer: &str, key: &IdempotencyKey) -> Self {
        let name = format!("{event}\n{buyer}\n{}", key.as_str());
        Self(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()))
    }
}

impl Default for PurchaseId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PurchaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for PurchaseId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(PurchaseId)
    }
}

/// A purchase's place in its event's line: its offset in the event's queue partition.
/// A smaller position arrived earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What `POST /events` asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// Shown to buyers.
    pub name: String,
    /// How many tickets exist.
    pub tickets: u32,
    /// The most tickets one buyer may hold for this event.
    pub max_per_buyer: u32,
    /// When it is on sale ([`SaleWindow::ALWAYS`] unless [`EventSpec::with_window`] says).
    pub window: SaleWindow,
    /// The line in front of the sale, if any (`None` unless [`EventSpec::with_waiting_room`]
    /// says; only with a window's `opens_at`).
    pub waiting_room: Option<WaitingRoom>,
}

impl EventSpec {
    /// The longest event name, in characters.
    pub const MAX_NAME_CHARS: usize = 200;
    /// The most tickets one event may have.
    pub const MAX_TICKETS: u32 = 100_000_000;
    /// The highest per-buyer limit.
    pub const MAX_PER_BUYER_LIMIT: u32 = 1_000;

    /// Checks every field; the error names the first one that is wrong. The event is always on
    /// sale, with no waiting room: give it a window with [`EventSpec::with_window`], then a room
    /// with [`EventSpec::with_waiting_room`].
    pub fn new(name: &str, tickets: i64, max_per_buyer: i64) -> Result<Self, DomainError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > Self::MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(DomainError::BadName {
                max: Self::MAX_NAME_CHARS,
            });
        }
        let tickets = u32::try_from(tickets)
            .ok()
            .filter(|t| *t <= Self::MAX_TICKETS)
            .ok_or(DomainError::BadTickets {
                max: Self::MAX_TICKETS,
            })?;
        let max_per_buyer = u32::try_from(max_per_buyer)
            .ok()
            .filter(|m| (1..=Self::MAX_PER_BUYER_LIMIT).contains(m))
            .ok_or(DomainError::BadMaxPerBuyer {
                max: Self::MAX_PER_BUYER_LIMIT,
            })?;
        Ok(Self {
            name: name.to_owned(),
            tickets,
            max_per_buyer,
            window: SaleWindow::ALWAYS,
            waiting_room: None,
        })
    }

    /// This spec, on sale only inside `window` (a [`SaleWindow`] is valid by construction).
    pub fn with_window(self, window: SaleWindow) -> Self {
        Self { window, ..self }
    }

    /// This spec, with a waiting room in front of its sale (a [`WaitingRoom`] is valid by
    /// construction). Give it its window first ([`EventSpec::with_window`]): the line forms
    /// before the sale opens, so the room needs the window's `opens_at`.
    ///
    /// # Errors
    /// [`DomainError::WaitingRoomNeedsOpensAt`] when the spec's window has no `opens_at`.
    pub fn with_waiting_room(self, room: WaitingRoom) -> Result<Self, DomainError> {
        if self.window.opens_at().is_none() {
            return Err(DomainError::WaitingRoomNeedsOpensAt);
        }
        Ok(Self {
            waiting_room: Some(room),
            ..self
        })
    }
}

/// An event as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Its id.
    pub id: EventId,
    /// Shown to buyers.
    pub name: String,
    /// How many tickets exist.
    pub tickets: u32,
    /// The most tickets one buyer may hold.
    pub max_per_buyer: u32,
    /// How many are sold (the sum of confirmed quantities).
    pub sold: u32,
    /// When it is on sale ([`SaleWindow::ALWAYS`] for events made before windows existed).
    pub window: SaleWindow,
    /// The line in front of the sale, if any (`None` for events made before waiting rooms
    /// existed). In JSON without its seed (see [`WaitingRoom`]).
    pub waiting_room: Option<WaitingRoom>,
}

impl Event {
    /// Tickets still for sale.
    pub fn remaining(&self) -> u32 {
        self.tickets.saturating_sub(self.sold)
    }
}

/// A buyer's request to buy `quantity` tickets, validated against its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRequest {
    /// Who buys (an opaque name the client chooses).
    pub buyer: String,
    /// How many tickets, 1..=max_per_buyer.
    pub quantity: u32,
}

impl PurchaseRequest {
    /// The longest buyer name, in characters.
    pub const MAX_BUYER_CHARS: usize = 128;

    /// Checks the buyer and the quantity against the event's per-buyer limit.
    pub fn new(buyer: &str, quantity: i64, event: &Event) -> Result<Self, DomainError> {
        if buyer.is_empty()
            || buyer.chars().count() > Self::MAX_BUYER_CHARS
            || buyer.chars().any(char::is_control)
        {
            return Err(DomainError::BadBuyer {
                max: Self::MAX_BUYER_CHARS,
            });
        }
        let quantity = u32::try_from(quantity)
            .ok()
            .filter(|q| (1..=event.max_per_buyer).contains(q))
            .ok_or(DomainError::BadQuantity {
                got: quantity,
                max_per_buyer: event.max_per_buyer,
            })?;
        Ok(Self {
            buyer: buyer.to_owned(),
            quantity,
        })
    }
}

/// A client-chosen key that makes a retried purchase request answer with the first one's
/// purchase (scoped to buyer and event).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key, in bytes.
    pub const MAX_BYTES: usize = 128;

    /// Accepts 1..=128 visible ASCII characters.
    pub fn new(key: &str) -> Result<Self, DomainError> {
        if key.is_empty()
            || key.len() > Self::MAX_BYTES
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(DomainError::BadIdempotencyKey {
                max: Self::MAX_BYTES,
            });
        }
        Ok(Self(key.to_owned()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a purchase was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not enough tickets left when its turn came.
    SoldOut,
    /// The buyer would go over the event's `max_per_buyer`.
    LimitExceeded,
    /// The job could not be processed (dead-lettered); nothing was sold.
    Failed,
}

impl RejectReason {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoldOut => "sold_out",
            Self::LimitExceeded => "limit_exceeded",
            Self::Failed => "failed",
        }
    }

    /// Parses the wire and database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sold_out" => Some(Self::SoldOut),
            "limit_exceeded" => Some(Self::LimitExceeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// Where a purchase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurchaseStatus {
    /// Queued, not decided yet.
    Pending,
    /// Sold.
    Confirmed,
    /// Not sold, and why.
    Rejected(RejectReason),
}

impl PurchaseStatus {
    /// The wire and database spelling of the status (without the reason).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected(_) => "rejected",
        }
    }

    /// The reason, for a rejection.
    pub fn reason(self) -> Option<RejectReason> {
        match self {
            Self::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// Rebuilds a status from its stored spelling; `None` for an inconsistent pair.
    pub fn parse(status: &str, reason: Option<&str>) -> Option<Self> {
        match (status, reason) {
            ("pending", None) => Some(Self::Pending),
            ("confirmed", None) => Some(Self::Confirmed),
            ("rejected", Some(r)) => RejectReason::parse(r).map(Self::Rejected),
            _ => None,
        }
    }

    /// Whether a worker (or the dead-letter path) has decided it.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// A purchase as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// Its id.
    pub id: PurchaseId,
    /// The event it buys tickets for.
    pub event_id: EventId,
    /// Who buys.
    pub buyer: String,
    /// How many tickets.
    pub quantity: u32,
    /// Its place in the event's line.
    pub position: Position,
    /// Where it stands.
    pub status: PurchaseStatus,
}

/// The job the API queues and a worker decides: everything needed to decide a purchase.
/// This is the queue payload (JSON), so its field names are a wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseJob {
    /// The purchase id; also the queue's dedup id.
    pub purchase_id: PurchaseId,
    /// The event; also the queue key, so an event's jobs share one partition, in arrival order.
    pub event_id: EventId,
    /// Who buys.
    pub buyer: String,
    /// How many tickets (already validated against `max_per_buyer` by the API).
    pub quantity: u32,
}

/// A job together with the position the queue gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// The job.
    pub job: PurchaseJob,
    /// Its offset in the event's partition.
    pub position: Position,
}

impl QueuedJob {
    /// The purchase this job stands for, with the given status.
    pub fn to_purchase(&self, status: PurchaseStatus) -> Purchase {
        Purchase {
            id: self.job.purchase_id,
            event_id: self.job.event_id,
            buyer: self.job.buyer.clone(),
            quantity: self.job.quantity,
            position: self.position,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(max_per_buyer: u32) -> Event {
        Event {
            id: EventId(1),
            name: "x".into(),
            tickets: 10,
            max_per_buyer,
            sold: 0,
            window: SaleWindow::ALWAYS,
            waiting_room: None,
        }
    }

    #[test]
    fn only_fresh_ids_are_minted() {
        assert!(PurchaseId::new().is_minted());
        let key = IdempotencyKey::new("k-1").unwrap();
        assert!(!PurchaseId::for_idempotency_key(EventId(1), "ann", &key).is_minted());
        let parsed: PurchaseId = "00000000-0000-4000-8000-000000000000".parse().unwrap();
        assert!(!parsed.is_minted());
    }

    #[test]
    fn event_spec_names_the_bad_field() {
        assert!(EventSpec::new("DJ night", 100, 4).is_ok());
        assert!(matches!(
            EventSpec::new("  ", 1, 1),
            Err(DomainError::BadName { .. })
        ));
        assert!(matches!(
            EventSpec::new("a", -1, 1),
            Err(DomainError::BadTickets { .. })
        ));
        assert!(matches!(
            EventSpec::new("a", 1, 0),
            Err(DomainError::BadMaxPerBuyer { .. })
        ));
    }

    #[test]
    fn an_event_spec_is_always_on_sale_unless_given_a_window() {
        let spec = EventSpec::new("DJ night", 100, 4).unwrap();
        assert_eq!(spec.window, SaleWindow::ALWAYS);
        let opens = crate::domain::UnixMillis(1_798_135_200_000);
        let window = SaleWindow::new(Some(opens), None).unwrap();
        let windowed = spec.clone().with_window(window);
        assert_eq!(windowed.window, window);
        assert_eq!(
            (
                windowed.name.as_str(),
                windowed.tickets,
                windowed.max_per_buyer
            ),
            (spec.name.as_str(), spec.tickets, spec.max_per_buyer)
        );
    }

    #[test]
    fn quantity_must_be_within_one_and_max_per_buyer() {
        let e = event(4);
        assert!(PurchaseRequest::new("ann", 1, &e).is_ok());
        assert!(PurchaseRequest::new("ann", 4, &e).is_ok());
        for bad in [0, -1, 5, i64::MAX] {
            assert!(matches!(
                PurchaseRequest::new("ann", bad, &e),
                Err(DomainError::BadQuantity { .. })
            ));
        }
        assert!(matches!(
            PurchaseRequest::new("", 1, &e),
            Err(DomainError::BadBuyer { .. })
        ));
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::new("abc-123").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new(&"k".repeat(129)).is_err());
    }

    #[test]
    fn status_round_trips_through_its_stored_spelling() {
        for s in [
            PurchaseStatus::Pending,
            PurchaseStatus::Confirmed,
            PurchaseStatus::Rejected(RejectReason::SoldOut),
            PurchaseStatus::Rejected(RejectReason::LimitExceeded),
            PurchaseStatus::Rejected(RejectReason::Failed),
        ] {
            let reason = s.reason().map(RejectReason::as_str);
            assert_eq!(PurchaseStatus::parse(s.as_str(), reason), Some(s));
        }
        assert_eq!(PurchaseStatus::parse("rejected", None), None);
    }

    #[test]
    fn idempotency_keys_name_one_purchase_per_event_buyer_and_key() {
        let k = IdempotencyKey::new("k-1").unwrap();
        let id = PurchaseId::for_idempotency_key(EventId(1), "ann", &k);
        assert_eq!(id, PurchaseId::for_idempotency_key(EventId(1), "ann", &k));
        assert_ne!(id, PurchaseId::for_idempotency_key(EventId(2), "ann", &k));
        assert_ne!(id, PurchaseId::for_idempotency_key(EventId(1), "bob", &k));
        let k2 = IdempotencyKey::new("k-2").unwrap();
        assert_ne!(id, PurchaseId::for_idempotency_key(EventId(1), "ann", &k2));
        // Fixed forever: a retry after an upgrade must still name the same purchase.
        assert_eq!(
            PurchaseId::for_idempotency_key(EventId(7), "buyer", &k).to_string(),
            "64932a07-8d73-553f-99c2-163337eca9d2"
        );
    }

    /// A UUID of `version` (7: minted, 5: derived) with the RFC variant and `bits` elsewhere.
    fn id_of(bits: u128, version: u8) -> PurchaseId {
        let mut b = bits.to_be_bytes();
        b[6] = (b[6] & 0x0f) | (version << 4);
        b[8] = (b[8] & 0x3f) | 0x80;
        PurchaseId(Uuid::from_bytes(b))
    }

    proptest::proptest! {
        #[test]
        fn a_stamped_id_names_its_shard_and_keeps_whether_it_was_minted(
            bits in proptest::prelude::any::<u128>(),
            minted in proptest::prelude::any::<bool>(),
            shard in proptest::prelude::any::<u8>(),
            other in proptest::prelude::any::<u8>(),
        ) {
            let id = id_of(bits, if minted { 7 } else { 5 });
            proptest::prop_assert_eq!(id.shard(), 0);
            proptest::prop_assert_eq!(id.is_minted(), minted);
            let s = id.on_shard(shard);
            proptest::prop_assert_eq!(s.shard(), shard);
            proptest::prop_assert_eq!(s.is_minted(), minted);
            // Deterministic: every API instance derives the same id for the same key.
            proptest::prop_assert_eq!(s, id.on_shard(shard));
            // A minted id keeps its timestamp, so stamped ids still sort by time.
            proptest::prop_assert_eq!(&s.0.as_bytes()[..6], &id.0.as_bytes()[..6]);
            if shard == 0 {
                proptest::prop_assert_eq!(s, id);
            } else {
                proptest::prop_assert_eq!(s.0.get_version_num(), 8);
                proptest::prop_assert_eq!(s.0.get_variant(), uuid::Variant::RFC4122);
                // It survives its text form, as it travels in URLs and the queue.
                proptest::prop_assert_eq!(s.to_string().parse::<PurchaseId>().ok(), Some(s));
            }
            // Stamping again with a shard other than 0 replaces the shard and keeps the rest;
            // shard 0 leaves any id as it is.
            let again = s.on_shard(other);
            let expected = if other == 0 { s.shard() } else { other };
            proptest::prop_assert_eq!(again.shard(), expected);
            proptest::prop_assert_eq!(again.is_minted(), minted);
        }

        #[test]
        fn any_uuid_has_a_shard_and_never_panics(bits in proptest::prelude::any::<u128>()) {
            let id = PurchaseId(Uuid::from_u128(bits));
            let shard = id.shard();
            proptest::prop_assert!(usize::from(shard) < MAX_SHARDS);
            let _ = id.is_minted();
        }
    }

    #[test]
    fn every_shard_round_trips_for_minted_and_derived_ids() {
        let key = IdempotencyKey::new("k-1").unwrap();
        let derived = PurchaseId::for_idempotency_key(EventId(7), "buyer", &key);
        let minted = PurchaseId::new();
        for shard in 0..=u8::MAX {
            let (d, m) = (derived.on_shard(shard), minted.on_shard(shard));
            assert_eq!((d.shard(), m.shard()), (shard, shard));
            assert!(!d.is_minted() && m.is_minted(), "shard {shard}");
            assert_eq!(d, derived.on_shard(shard));
        }
        assert_eq!(derived.on_shard(0), derived);
        // Fixed forever: a retry after an upgrade must still name the same purchase.
        assert_eq!(
            derived.on_shard(3).to_string(),
            "64932a07-8d73-853f-99c2-163337eca803"
        );
        // Ids minted one after another on a shard still sort by time.
        let later = PurchaseId::new();
        assert!(minted.on_shard(9) < later.on_shard(9));
    }

    #[test]
    fn purchase_ids_round_trip_and_reject_garbage() {
        let id = PurchaseId::new();
        assert_eq!(id.to_string().parse::<PurchaseId>().unwrap(), id);
        assert!("nope".parse::<PurchaseId>().is_err());
    }
}
