//! A group's durable progress in one partition, and the merge of two copies of it.
//!
//! Every part of progress only ever grows: an offset once done stays done, a delivery count
//! only rises, and so does the delivery-count mark. Each is a fact "at least this happened",
//! so two copies merge by taking both: the union of the done offsets, the higher count of each
//! unfinished offset, the higher mark. The merge is commutative, associative and idempotent,
//! so a cluster's new leader that merges the copies of any majority of brokers holds every
//! fact a majority acknowledged, whatever order they arrive in (`REPLICATION.md`).

use std::collections::{BTreeMap, BTreeSet};

/// Durable progress of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionProgress {
    /// Every offset below is done.
    pub committed: u64,
    /// Done offsets at or above `committed`.
    pub acked: Vec<u64>,
    /// Deliveries so far of records not done, by offset.
    pub attempts: Vec<(u64, u32)>,
    /// The delivery-count mark: unfinished offsets below it without a count of their own were
    /// delivered at most once.
    pub mark: u64,
}

impl PartitionProgress {
    /// Whether `offset` is done.
    pub fn is_done(&self, offset: u64) -> bool {
        offset < self.committed || self.acked.binary_search(&offset).is_ok()
    }

    /// Takes in every fact `other` holds.
    pub fn merge(&mut self, other: &Self) {
        let mut committed = self.committed.max(other.committed);
        let mut acked: BTreeSet<u64> = self
            .acked
            .iter()
            .chain(&other.acked)
            .copied()
            .filter(|o| *o >= committed)
            .collect();
        while acked.remove(&committed) {
            committed += 1;
        }
        let mut attempts: BTreeMap<u64, u32> = BTreeMap::new();
        for &(offset, count) in self.attempts.iter().chain(&other.attempts) {
            if offset >= committed && !acked.contains(&offset) {
                let a = attempts.entry(offset).or_insert(0);
                *a = (*a).max(count);
            }
        }
        self.committed = committed;
        self.acked = acked.into_iter().collect();
        self.attempts = attempts.into_iter().collect();
        self.mark = self.mark.max(other.mark);
    }

    /// Merges `others` into `progress`, partition by partition (a partition only one side
    /// has is taken as it is).
    pub fn merge_all(progress: &mut Vec<Self>, others: &[Self]) {
        if progress.len() < others.len() {
            progress.resize(others.len(), Self::default());
        }
        for (mine, theirs) in progress.iter_mut().zip(others) {
            mine.merge(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Progress as the state machine writes it: done offsets, counts of unfinished ones.
    fn arb_progress() -> impl Strategy<Value = PartitionProgress> {
        (
            0u64..20,
            proptest::collection::btree_set(0u64..40, 0..10),
            proptest::collection::btree_map(0u64..40, 1u32..6, 0..6),
            0u64..40,
        )
            .prop_map(|(committed, done, counts, mark)| {
                let mut p = PartitionProgress {
                    committed,
                    mark,
                    ..PartitionProgress::default()
                };
                // Normalised through a merge with nothing: what a journal would hold.
                let raw = PartitionProgress {
                    committed,
                    acked: done.into_iter().collect(),
                    attempts: counts.into_iter().collect(),
                    mark,
                };
                p.merge(&raw);
                p
            })
    }

    fn merged(a: &PartitionProgress, b: &PartitionProgress) -> PartitionProgress {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in arb_progress(), b in arb_progress(), c in arb_progress()
        ) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
        }

        #[test]
        fn merge_keeps_every_fact_of_both(a in arb_progress(), b in arb_progress()) {
            let m = merged(&a, &b);
            for o in 0..60 {
                prop_assert_eq!(m.is_done(o), a.is_done(o) || b.is_done(o), "offset {}", o);
            }
            for (o, count) in a.attempts.iter().chain(&b.attempts) {
                if !m.is_done(*o) {
                    let got = m.attempts.iter().find(|(x, _)| x == o).map(|(_, c)| *c);
                    prop_assert!(got.is_some_and(|g| g >= *count), "offset {} count {:?}", o, got);
                }
            }
            prop_assert!(m.attempts.iter().all(|(o, _)| !m.is_done(*o)));
            prop_assert!(m.acked.iter().all(|o| *o > m.committed));
            prop_assert!(m.acked.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(m.mark, a.mark.max(b.mark));
        }
    }

    #[test]
    fn a_committed_offset_covers_what_the_other_copy_acked_out_of_order() {
        let mut a = PartitionProgress {
            committed: 3,
            acked: vec![5],
            attempts: vec![(4, 2)],
            mark: 10,
        };
        let b = PartitionProgress {
            committed: 0,
            acked: vec![3, 4, 7],
            attempts: vec![(6, 3)],
            mark: 4,
        };
        a.merge(&b);
        assert_eq!(
            a,
            PartitionProgress {
                committed: 6,
                acked: vec![7],
                attempts: vec![(6, 3)],
                mark: 10,
            }
        );
        let mut short = vec![PartitionProgress::default()];
        PartitionProgress::merge_all(&mut short, &[b.clone(), a.clone()]);
        assert_eq!(short, vec![b, a]);
    }
}
