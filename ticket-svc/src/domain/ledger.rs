//! Deciding purchases: the one place the sale rules are applied.
//!
//! A [`Ledger`] is the part of the store's state a batch of jobs touches (its events' inventory,
//! its buyers' confirmed totals, the decisions already made for its purchase ids). A store loads
//! it inside a transaction, [`decide_in_order`] applies the rules, and the store writes back
//! what changed before committing. Because the rules live here, both stores sell the same way.
//!
//! Rules, for each job in position order within its event:
//! 1. a purchase already decided keeps its decision (a redelivered job never sells twice);
//! 2. the buyer's confirmed total plus the quantity over `max_per_buyer` → `limit_exceeded`;
//! 3. fewer tickets remaining than the quantity → `sold_out` (remaining only shrinks, so no later
//!    purchase of the same or a larger quantity can be confirmed after it);
//! 4. otherwise confirmed: sold and the buyer's total grow by the quantity.

use foldhash::HashMap;

use super::types::{EventId, PurchaseId, PurchaseJob, PurchaseStatus, QueuedJob, RejectReason};

/// An event's inventory as the ledger tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inventory {
    tickets: u32,
    max_per_buyer: u32,
    sold: u32,
}

/// The outcome for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The purchase's status after the decision.
    pub status: PurchaseStatus,
    /// True when this call made the decision; false when it was already made (a redelivery)
    /// or the event is unknown (then `status` is `rejected: failed` and nothing is recorded).
    pub is_new: bool,
}

/// The state a batch of decisions reads and changes.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    inventory: HashMap<EventId, Inventory>,
    buyer_totals: HashMap<(EventId, String), u32>,
    decided: HashMap<PurchaseId, PurchaseStatus>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event's inventory as stored.
    pub fn add_event(&mut self, id: EventId, tickets: u32, max_per_buyer: u32, sold: u32) {
        self.inventory.insert(
            id,
            Inventory {
                tickets,
                max_per_buyer,
                sold,
            },
        );
    }

    /// Adds a buyer's confirmed total for an event as stored.
    pub fn add_buyer_total(&mut self, event: EventId, buyer: &str, confirmed: u32) {
        self.buyer_totals
            .insert((event, buyer.to_owned()), confirmed);
    }

    /// Adds a decision already made (final status) for a purchase.
    pub fn add_decided(&mut self, id: PurchaseId, status: PurchaseStatus) {
        if status.is_final() {
            self.decided.insert(id, status);
        }
    }

    /// Tickets sold for an event, if the ledger knows it.
    pub fn sold(&self, event: EventId) -> Option<u32> {
        self.inventory.get(&event).map(|i| i.sold)
    }

    /// Every event's sold count, to write back.
    pub fn sold_counts(&self) -> impl Iterator<Item = (EventId, u32)> + '_ {
        self.inventory.iter().map(|(id, inv)| (*id, inv.sold))
    }

    /// A buyer's confirmed total for an event (0 if unknown).
    pub fn buyer_total(&self, event: EventId, buyer: &str) -> u32 {
        self.buyer_totals
            .get(&(event, buyer.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Every buyer total, to write back.
    pub fn buyer_totals(&self) -> impl Iterator<Item = (EventId, &str, u32)> + '_ {
        self.buyer_totals
            .iter()
            .map(|((e, b), n)| (*e, b.as_str(), *n))
    }

    /// Decides one job against the ledger (see the module rules).
    pub fn decide(&mut self, job: &PurchaseJob) -> Decision {
        if let Some(status) = self.decided.get(&job.purchase_id) {
            return Decision {
                status: *status,
                is_new: false,
            };
        }
        let Some(inv) = self.inventory.get_mut(&job.event_id) else {
            return Decision {
                status: PurchaseStatus::Rejected(RejectReason::Failed),
                is_new: false,
            };
        };
        let total = self
            .buyer_totals
            .entry((job.event_id, job.buyer.clone()))
            .or_insert(0);
        let status = if job.quantity == 0 {
            // The API never queues this; a foreign job gets no tickets.
            PurchaseStatus::Rejected(RejectReason::Failed)
        } else if total.saturating_add(job.quantity) > inv.max_per_buyer {
            PurchaseStatus::Rejected(RejectReason::LimitExceeded)
        } else if inv.tickets.saturating_sub(inv.sold) < job.quantity {
            PurchaseStatus::Rejected(RejectReason::SoldOut)
        } else {
            inv.sold += job.quantity;
            *total += job.quantity;
            PurchaseStatus::Confirmed
        };
        self.decided.insert(job.purchase_id, status);
        Decision {
            status,
            is_new: true,
        }
    }
}

/// Decides a batch: within each event in position order (whatever order the batch came in),
/// returning one decision per job in the batch's order.
pub fn decide_in_order(ledger: &mut Ledger, jobs: &[QueuedJob]) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| jobs.get(i).map(|j| (j.job.event_id, j.position)));
    let mut out = vec![
        Decision {
            status: PurchaseStatus::Pending,
            is_new: false,
        };
        jobs.len()
    ];
    for i in order {
        if let (Some(job), Some(slot)) = (jobs.get(i), out.get_mut(i)) {
            *slot = ledger.decide(&job.job);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(event: i64, buyer: &str, quantity: u32, position: u64) -> QueuedJob {
        crate::testing::queued(EventId(event), buyer, quantity, position)
    }

    fn ledger(tickets: u32, max_per_buyer: u32) -> Ledger {
        let mut l = Ledger::new();
        l.add_event(EventId(1), tickets, max_per_buyer, 0);
        l
    }

    #[test]
    fn first_come_first_served_with_a_smaller_later_fit() {
        let mut l = ledger(5, 4);
        let jobs = [
            job(1, "a", 4, 0), // confirmed, 1 left
            job(1, "b", 2, 1), // sold out
            job(1, "c", 1, 2), // smaller, fits
            job(1, "d", 1, 3), // sold out
        ];
        let d: Vec<_> = decide_in_order(&mut l, &jobs)
            .iter()
            .map(|d| d.status)
            .collect();
        use PurchaseStatus::*;
        assert_eq!(
            d,
            [
                Confirmed,
                Rejected(RejectReason::SoldOut),
                Confirmed,
                Rejected(RejectReason::SoldOut)
            ]
        );
        assert_eq!(l.sold(EventId(1)), Some(5));
    }

    #[test]
    fn a_buyer_cannot_go_over_the_limit_across_purchases() {
        let mut l = ledger(100, 4);
        let jobs = [job(1, "a", 3, 0), job(1, "a", 2, 1), job(1, "a", 1, 2)];
        let d: Vec<_> = decide_in_order(&mut l, &jobs)
            .iter()
            .map(|d| d.status)
            .collect();
        assert_eq!(
            d,
            [
                PurchaseStatus::Confirmed,
                PurchaseStatus::Rejected(RejectReason::LimitExceeded),
                PurchaseStatus::Confirmed
            ]
        );
        assert_eq!(l.buyer_total(EventId(1), "a"), 4);
    }

    #[test]
    fn batch_order_does_not_matter_position_does() {
        let mut l = ledger(1, 4);
        let late = job(1, "late", 1, 9);
        let early = job(1, "early", 1, 2);
        let d = decide_in_order(&mut l, &[late, early]);
        assert_eq!(d[0].status, PurchaseStatus::Rejected(RejectReason::SoldOut));
        assert_eq!(d[1].status, PurchaseStatus::Confirmed);
    }

    #[test]
    fn a_redelivered_job_keeps_its_decision_and_sells_nothing() {
        let mut l = ledger(3, 4);
        let j = job(1, "a", 2, 0);
        assert!(l.decide(&j.job).is_new);
        let again = l.decide(&j.job);
        assert!(!again.is_new);
        assert_eq!(again.status, PurchaseStatus::Confirmed);
        assert_eq!(l.sold(EventId(1)), Some(2));
    }

    #[test]
    fn unknown_event_fails_without_recording() {
        let mut l = Ledger::new();
        let d = l.decide(&job(7, "a", 1, 0).job);
        assert_eq!(d.status, PurchaseStatus::Rejected(RejectReason::Failed));
        assert!(!d.is_new);
    }

    /// (buyer index, quantity) per job, tickets, max_per_buyer, batch sizes.
    fn scenario() -> impl Strategy<Value = (Vec<(u8, u32)>, u32, u32, Vec<usize>)> {
        (1u32..6).prop_flat_map(|max| {
            (
                proptest::collection::vec((0u8..8, 1..=max), 0..80),
                0u32..60,
                Just(max),
                proptest::collection::vec(1usize..10, 1..20),
            )
        })
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_arrivals_and_batching(
            (arrivals, tickets, max, batches) in scenario()
        ) {
            let jobs: Vec<QueuedJob> = arrivals
                .iter()
                .enumerate()
                .map(|(i, (b, q))| job(1, &format!("buyer{b}"), *q, i as u64))
                .collect();

            // Decide in arbitrary batch sizes, carrying the ledger (as the store does across
            // transactions), and redeliver every batch once.
            let mut l = ledger(tickets, max);
            let mut statuses = Vec::new();
            let mut rest = &jobs[..];
            for size in batches.iter().cycle() {
                if rest.is_empty() { break; }
                let (batch, tail) = rest.split_at((*size).min(rest.len()));
                let first = decide_in_order(&mut l, batch);
                let sold_before = l.sold(EventId(1));
                let again = decide_in_order(&mut l, batch);
                prop_assert_eq!(l.sold(EventId(1)), sold_before, "redelivery sold again");
                for (a, b) in first.iter().zip(&again) {
                    prop_assert_eq!(a.status, b.status);
                    prop_assert!(!b.is_new);
                }
                statuses.extend(first.iter().map(|d| d.status));
                rest = tail;
            }

            // The same jobs in one batch decide the same way: batching changes nothing.
            let mut one = ledger(tickets, max);
            let single: Vec<_> = decide_in_order(&mut one, &jobs).iter().map(|d| d.status).collect();
            prop_assert_eq!(&single, &statuses);

            let sold = l.sold(EventId(1)).unwrap();
            prop_assert!(sold <= tickets);
            let confirmed: u32 = jobs.iter().zip(&statuses)
                .filter(|(_, s)| **s == PurchaseStatus::Confirmed)
                .map(|(j, _)| j.job.quantity).sum();
            prop_assert_eq!(sold, confirmed);

            let mut per_buyer: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
            for (j, s) in jobs.iter().zip(&statuses) {
                prop_assert!(s.is_final());
                if *s == PurchaseStatus::Confirmed {
                    *per_buyer.entry(j.job.buyer.as_str()).or_default() += j.job.quantity;
                }
            }
            prop_assert!(per_buyer.values().all(|n| *n <= max));

            // First come, first served.
            for (i, (ji, si)) in jobs.iter().zip(&statuses).enumerate() {
                if *si != PurchaseStatus::Rejected(RejectReason::SoldOut) { continue; }
                for (jj, sj) in jobs.iter().zip(&statuses).skip(i + 1) {
                    prop_assert!(
                        !(*sj == PurchaseStatus::Confirmed && ji.job.quantity <= jj.job.quantity),
                        "later purchase of {} confirmed after earlier {} was sold out",
                        jj.job.quantity, ji.job.quantity
                    );
                }
            }
        }
    }
}
