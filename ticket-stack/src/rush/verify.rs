//! The sale's invariants (docs/DESIGN.md), checked over what a crowd observed: pure, so it is unit-tested.
//!
//! The check assumes the crowd was the only buyer of its event while it ran (it compares the
//! event's `sold` before and after with what its own purchases confirmed).

use std::collections::{BTreeSet, HashMap};

use ticket_svc::domain::{Position, PurchaseStatus, RejectReason};

/// One accepted purchase as the crowd saw it in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The purchase id (text, as answered).
    pub purchase_id: String,
    /// Who bought.
    pub buyer: String,
    /// How many tickets.
    pub quantity: u32,
    /// Its place in line.
    pub position: Position,
    /// The last status seen (`Pending` if it never became final).
    pub status: PurchaseStatus,
}

/// The event before and after the crowd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCounts {
    /// Tickets that exist.
    pub tickets: u32,
    /// The per-buyer limit.
    pub max_per_buyer: u32,
    /// Sold before the crowd started.
    pub sold_before: u32,
    /// Sold after every purchase was final.
    pub sold_after: u32,
}

/// One invariant of docs/DESIGN.md that the check covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// A purchase id is always answered with the same position and quantity.
    OneAnswerPerPurchase,
    /// Every accepted purchase reaches a final state.
    EveryPurchaseDecided,
    /// Never more tickets sold than exist.
    NoOversell,
    /// The event's `sold` grew by exactly the tickets the confirmed purchases hold.
    SoldMatchesConfirmed,
    /// No buyer holds more than `max_per_buyer`.
    PerBuyerLimit,
    /// No purchase confirmed after an earlier one of no more tickets was sold out.
    FirstComeFirstServed,
    /// A retry with the same Idempotency-Key gets the same purchase.
    IdempotentRetries,
}

impl Invariant {
    /// Every invariant, in the order reports list them.
    pub const ALL: [Self; 7] = [
        Self::EveryPurchaseDecided,
        Self::NoOversell,
        Self::SoldMatchesConfirmed,
        Self::PerBuyerLimit,
        Self::FirstComeFirstServed,
        Self::IdempotentRetries,
        Self::OneAnswerPerPurchase,
    ];

    /// The invariant in words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::OneAnswerPerPurchase => "each purchase answered with one position and quantity",
            Self::EveryPurchaseDecided => "every accepted purchase reached a final state",
            Self::NoOversell => "no oversell (sold ≤ tickets)",
            Self::SoldMatchesConfirmed => "sold grew by exactly the confirmed tickets",
            Self::PerBuyerLimit => "no buyer over max_per_buyer",
            Self::FirstComeFirstServed => "first come, first served",
            Self::IdempotentRetries => "same Idempotency-Key, same purchase",
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Purchases confirmed / rejected by reason / still pending.
    pub confirmed: u64,
    /// Tickets confirmed.
    pub confirmed_tickets: u64,
    /// Rejections by reason.
    pub rejected: HashMap<&'static str, u64>,
    /// Purchases that never reached a final state.
    pub pending: u64,
    /// Every broken invariant, in words.
    pub violations: Vec<String>,
    /// The invariants broken at least once.
    pub broken: BTreeSet<Invariant>,
}

impl Verification {
    /// True when every invariant holds.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// True when `invariant` was never broken.
    pub fn holds(&self, invariant: Invariant) -> bool {
        !self.broken.contains(&invariant)
    }

    fn broke(&mut self, invariant: Invariant, what: String) {
        self.broken.insert(invariant);
        self.violations.push(what);
    }
}

/// Checks every invariant over the crowd's purchases (deduplicated by purchase id).
pub fn check(event: EventCounts, purchases: &[Observed], retry_mismatches: u64) -> Verification {
    let mut v = Verification::default();
    let mut seen = HashMap::new();
    for p in purchases {
        if let Some(prev) = seen.insert(p.purchase_id.as_str(), p)
            && (prev.position != p.position || prev.quantity != p.quantity)
        {
            v.broke(
                Invariant::OneAnswerPerPurchase,
                format!(
                    "purchase {} answered with two positions or quantities",
                    p.purchase_id
                ),
            );
        }
    }
    let mut unique: Vec<&Observed> = seen.into_values().collect();
    unique.sort_by_key(|p| p.position);

    let mut per_buyer: HashMap<&str, u32> = HashMap::new();
    for p in &unique {
        match p.status {
            PurchaseStatus::Pending => v.pending += 1,
            PurchaseStatus::Confirmed => {
                v.confirmed += 1;
                v.confirmed_tickets += u64::from(p.quantity);
                *per_buyer.entry(&p.buyer).or_default() += p.quantity;
            }
            PurchaseStatus::Rejected(r) => *v.rejected.entry(r.as_str()).or_default() += 1,
        }
    }
    if v.pending > 0 {
        v.broke(
            Invariant::EveryPurchaseDecided,
            format!(
                "{} accepted purchases never reached a final state",
                v.pending
            ),
        );
    }
    if event.sold_after > event.tickets {
        v.broke(
            Invariant::NoOversell,
            format!(
                "oversold: sold {} of {} tickets",
                event.sold_after, event.tickets
            ),
        );
    }
    let sold_now = u64::from(event.sold_after.saturating_sub(event.sold_before));
    if sold_now != v.confirmed_tickets {
        v.broke(
            Invariant::SoldMatchesConfirmed,
            format!(
                "sold grew by {sold_now} but confirmed purchases hold {} tickets",
                v.confirmed_tickets
            ),
        );
    }
    for (buyer, n) in &per_buyer {
        if *n > event.max_per_buyer {
            v.broke(
                Invariant::PerBuyerLimit,
                format!(
                    "buyer {buyer} holds {n} tickets, over the limit of {}",
                    event.max_per_buyer
                ),
            );
        }
    }
    // First come, first served: walking the line, remember the smallest quantity rejected as
    // sold out so far; no later purchase of that quantity or more may be confirmed.
    let mut smallest_sold_out: Option<&Observed> = None;
    for p in &unique {
        if p.status == PurchaseStatus::Confirmed
            && let Some(early) = smallest_sold_out
            && early.quantity <= p.quantity
        {
            v.broke(Invariant::FirstComeFirstServed, format!(
                "first come, first served broken: position {} ({} tickets) confirmed after position {} ({} tickets) was sold out",
                p.position, p.quantity, early.position, early.quantity
            ));
        }
        if p.status == PurchaseStatus::Rejected(RejectReason::SoldOut)
            && smallest_sold_out.is_none_or(|s| p.quantity < s.quantity)
        {
            smallest_sold_out = Some(p);
        }
    }
    if retry_mismatches > 0 {
        v.broke(
            Invariant::IdempotentRetries,
            format!(
                "{retry_mismatches} retries with the same Idempotency-Key got another purchase"
            ),
        );
    }
    v.violations.truncate(50);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, buyer: &str, q: u32, pos: u64, status: PurchaseStatus) -> Observed {
        Observed {
            purchase_id: id.into(),
            buyer: buyer.into(),
            quantity: q,
            position: Position(pos),
            status,
        }
    }

    const C: PurchaseStatus = PurchaseStatus::Confirmed;
    const SOLD_OUT: PurchaseStatus = PurchaseStatus::Rejected(RejectReason::SoldOut);

    fn counts(tickets: u32, sold_after: u32) -> EventCounts {
        EventCounts {
            tickets,
            max_per_buyer: 4,
            sold_before: 0,
            sold_after,
        }
    }

    #[test]
    fn a_fair_sale_passes() {
        let ps = [
            p("a", "a", 4, 0, C),
            p("b", "b", 2, 1, SOLD_OUT),
            p("c", "c", 1, 2, C),
        ];
        let v = check(counts(5, 5), &ps, 0);
        assert!(v.is_ok(), "{:?}", v.violations);
        assert_eq!(v.confirmed_tickets, 5);
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let unfair = [p("a", "a", 1, 0, SOLD_OUT), p("b", "b", 2, 1, C)];
        assert!(check(counts(5, 2), &unfair, 0).violations[0].contains("first come"));
        let over = [p("a", "a", 3, 0, C), p("b", "a", 3, 1, C)];
        assert!(check(counts(10, 6), &over, 0).violations[0].contains("over the limit"));
        let oversold = [p("a", "a", 3, 0, C)];
        let v = check(counts(2, 3), &oversold, 0);
        assert!(v.violations.iter().any(|m| m.contains("oversold")));
        let pending = [p("a", "a", 1, 0, PurchaseStatus::Pending)];
        assert!(check(counts(2, 0), &pending, 0).violations[0].contains("final state"));
        let drift = [p("a", "a", 1, 0, C)];
        assert!(check(counts(2, 2), &drift, 0).violations[0].contains("sold grew"));
        let retried = check(counts(2, 0), &[], 1);
        assert!(!retried.is_ok());
        assert!(!retried.holds(Invariant::IdempotentRetries));
        assert!(retried.holds(Invariant::NoOversell));
    }

    #[test]
    fn repeated_answers_for_one_purchase_count_once() {
        let ps = [p("a", "a", 2, 0, C), p("a", "a", 2, 0, C)];
        let v = check(counts(5, 2), &ps, 0);
        assert!(v.is_ok(), "{:?}", v.violations);
    }
}
