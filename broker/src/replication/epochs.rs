//! A replica's epoch history: which leader epoch wrote each stretch of its log.
//!
//! Every record has a *label*, the epoch of the leader that first appended it. A log keeps its
//! labels as a short list of `(epoch, start)` entries (Kafka's leader-epoch checkpoint): the
//! record at offset `o` has the epoch of the last entry whose start is at or below `o`, and
//! epoch 0 below the first entry (a log written before it had a leader, by a single node).
//!
//! An entry may start at or past the log's end: a new leader adds `(epoch, its end)` before it
//! has appended anything, and a follower copies that entry once its log reaches that start.
//! Only *effective* entries count, those starting at or below the log's end; the others are
//! left over from a write that did not finish and are dropped by the next append.
//!
//! Invariants (the replication protocol keeps them; the property tests check the functions):
//! 1. Entries have strictly increasing epochs and non-decreasing starts.
//! 2. A record's `(label, offset)` names its content: only the leader of an epoch creates
//!    records of that label, and it never writes two records at one offset. So two logs that
//!    agree on the labels below an offset hold the same records below it.
//! 3. A replica whose last effective entry is `(e, s)` holds a prefix of leader `e`'s log that
//!    is at least `s` long: everything leader `e` started its epoch with.

use serde::{Deserialize, Serialize};

/// A leader epoch: the term of the leader that wrote a record. 0 is "no leader".
pub type Epoch = u64;

/// One entry: from `start` on, records were written by the leader of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    /// The leader epoch.
    pub epoch: Epoch,
    /// The first offset of that epoch.
    pub start: u64,
}

/// The labels of a log, as entries (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochHistory {
    entries: Vec<EpochStart>,
}

impl EpochHistory {
    /// A history from entries, which must keep invariant 1.
    ///
    /// # Errors
    /// Names the first entry that breaks it.
    pub fn from_entries(entries: Vec<EpochStart>) -> Result<Self, String> {
        for pair in entries.windows(2) {
            if let [a, b] = pair
                && (b.epoch <= a.epoch || b.start < a.start)
            {
                return Err(format!(
                    "epoch history out of order: ({}, {}) after ({}, {})",
                    b.epoch, b.start, a.epoch, a.start
                ));
            }
        }
        Ok(Self { entries })
    }

    /// Every entry, effective or not.
    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    /// The entries that count for a log ending at `end`.
    pub fn effective(&self, end: u64) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .copied()
                .filter(|e| e.start <= end)
                .collect(),
        }
    }

    /// The label of the record at `offset` (meaningful below the log's end).
    pub fn label(&self, offset: u64) -> Epoch {
        let i = self.entries.partition_point(|e| e.start <= offset);
        i.checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map_or(0, |e| e.epoch)
    }

    /// The epoch of the last effective entry of a log ending at `end`: how recent the log is.
    pub fn last_epoch(&self, end: u64) -> Epoch {
        self.label(end)
    }

    /// Adds `(epoch, start)` at the end; an epoch not above the last is refused.
    ///
    /// # Errors
    /// When `epoch` is not above the last entry's, or `start` is below its start.
    pub fn push(&mut self, epoch: Epoch, start: u64) -> Result<(), String> {
        if let Some(last) = self.entries.last()
            && (epoch <= last.epoch || start < last.start)
        {
            return Err(format!(
                "epoch ({epoch}, {start}) does not follow ({}, {})",
                last.epoch, last.start
            ));
        }
        self.entries.push(EpochStart { epoch, start });
        Ok(())
    }

    /// The history of a log ending at `end` once a new leader starts `epoch` there: the
    /// effective entries, then `(epoch, end)`.
    ///
    /// # Errors
    /// When `epoch` is not above the last effective entry's.
    pub fn begin(&self, epoch: Epoch, end: u64) -> Result<Self, String> {
        let mut out = self.effective(end);
        out.push(epoch, end)?;
        Ok(out)
    }

    /// The entries a copy of `[from, to)` needs: the label at `from`, as an entry starting
    /// there, then every entry starting after `from` up to and including `to` (an entry
    /// starting at `to` is a new epoch that begins where the copy ends).
    pub fn slice(&self, from: u64, to: u64) -> Vec<EpochStart> {
        let mut out = Vec::new();
        let first = self.label(from);
        if first > 0 {
            out.push(EpochStart {
                epoch: first,
                start: from,
            });
        }
        out.extend(
            self.entries
                .iter()
                .copied()
                .filter(|e| e.start > from && e.start <= to),
        );
        out
    }

    /// The history after writing records from `start` on whose labels `slice` gives (see
    /// [`EpochHistory::slice`]): this history's entries below `start`, then the slice's.
    /// Entries that would not raise the epoch are left out (they repeat the label before).
    pub fn spliced(&self, start: u64, slice: &[EpochStart]) -> Self {
        let mut entries: Vec<EpochStart> = self
            .entries
            .iter()
            .copied()
            .filter(|e| e.start < start)
            .collect();
        for e in slice {
            let last = entries.last().map_or(0, |l| l.epoch);
            if e.epoch > last {
                entries.push(EpochStart {
                    epoch: e.epoch,
                    start: e.start.max(start),
                });
            }
        }
        Self { entries }
    }
}

/// The first offset at which two logs differ: where their labels first disagree below both
/// ends, or the shorter end. Below it the logs hold the same records (invariant 2).
pub fn divergence(a: &EpochHistory, a_end: u64, b: &EpochHistory, b_end: u64) -> u64 {
    let end = a_end.min(b_end);
    // Labels only change at an entry's start: compare them at 0 and at every start.
    let mut points: Vec<u64> = a
        .entries
        .iter()
        .chain(&b.entries)
        .map(|e| e.start)
        .filter(|s| *s < end)
        .collect();
    points.push(0);
    points.sort_unstable();
    points.dedup();
    points
        .into_iter()
        .filter(|p| *p < end)
        .find(|p| a.label(*p) != b.label(*p))
        .unwrap_or(end)
}

/// A history from `(epoch, start)` pairs, for tests.
#[cfg(test)]
pub(crate) fn history_of_pairs(entries: &[(u64, u64)]) -> EpochHistory {
    EpochHistory::from_entries(
        entries
            .iter()
            .map(|&(epoch, start)| EpochStart { epoch, start })
            .collect(),
    )
    .expect("test histories are in order")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(entries: &[(u64, u64)]) -> EpochHistory {
        history_of_pairs(entries)
    }

    #[test]
    fn labels_follow_the_entries_and_are_zero_before_the_first() {
        let x = h(&[(2, 3), (5, 7), (6, 7)]);
        assert_eq!(x.label(0), 0);
        assert_eq!(x.label(2), 0);
        assert_eq!(x.label(3), 2);
        assert_eq!(x.label(6), 2);
        assert_eq!(x.label(7), 6, "of two entries at one start the later wins");
        assert_eq!(x.last_epoch(7), 6);
        assert_eq!(x.last_epoch(6), 2, "an entry past the end does not count");
    }

    #[test]
    fn out_of_order_entries_are_refused() {
        assert!(
            EpochHistory::from_entries(vec![
                EpochStart { epoch: 3, start: 0 },
                EpochStart { epoch: 3, start: 4 }
            ])
            .is_err()
        );
        assert!(
            EpochHistory::from_entries(vec![
                EpochStart { epoch: 3, start: 5 },
                EpochStart { epoch: 4, start: 4 }
            ])
            .is_err()
        );
        let mut x = h(&[(3, 5)]);
        assert!(x.push(3, 9).is_err());
        assert!(x.push(4, 4).is_err());
        x.push(4, 5).unwrap();
    }

    #[test]
    fn divergence_is_where_labels_first_differ() {
        // a: epoch 1 from 0, epoch 2 from 5; b: epoch 1 from 0, epoch 3 from 4.
        let a = h(&[(1, 0), (2, 5)]);
        let b = h(&[(1, 0), (3, 4)]);
        assert_eq!(divergence(&a, 9, &b, 9), 4);
        assert_eq!(divergence(&a, 3, &b, 9), 3, "the shorter end");
        assert_eq!(divergence(&a, 9, &a, 7), 7);
        assert_eq!(divergence(&EpochHistory::default(), 4, &h(&[(1, 0)]), 4), 0);
    }

    #[test]
    fn a_splice_keeps_what_is_below_and_takes_the_leaders_labels_above() {
        let follower = h(&[(1, 0), (2, 5), (3, 8)]);
        let leader = h(&[(1, 0), (2, 5), (4, 7), (6, 10)]);
        let s = follower.spliced(7, &leader.slice(7, 10));
        assert_eq!(s, h(&[(1, 0), (2, 5), (4, 7), (6, 10)]));
        // A copy that stops before the new epoch's start leaves it out.
        let s = follower.spliced(7, &leader.slice(7, 9));
        assert_eq!(s, h(&[(1, 0), (2, 5), (4, 7)]));
        // A copy inside one epoch adds nothing.
        let s = leader.spliced(5, &leader.slice(5, 6));
        assert_eq!(s, h(&[(1, 0), (2, 5)]));
    }

    /// A log as labels per offset, and its history.
    fn history_of(labels: &[u64]) -> EpochHistory {
        let mut out = EpochHistory::default();
        let mut last = 0;
        for (o, l) in labels.iter().enumerate() {
            if *l > last {
                out.push(*l, o as u64).unwrap();
                last = *l;
            }
        }
        out
    }

    fn labels() -> impl Strategy<Value = Vec<u64>> {
        // Non-decreasing labels: a log's epochs only grow along it.
        proptest::collection::vec(0u64..4, 0..24).prop_map(|steps| {
            let mut acc = 0;
            steps
                .into_iter()
                .map(|s| {
                    acc += u64::from(s == 0);
                    acc
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn divergence_matches_a_record_by_record_comparison(a in labels(), b in labels()) {
            let (ha, hb) = (history_of(&a), history_of(&b));
            let want = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            prop_assert_eq!(divergence(&ha, a.len() as u64, &hb, b.len() as u64), want as u64);
            for (o, l) in a.iter().enumerate() {
                prop_assert_eq!(ha.label(o as u64), *l);
            }
        }

        #[test]
        fn splicing_a_copy_gives_the_leaders_labels(
            a in labels(), b in labels(), cut in 0usize..24, len in 0usize..24,
        ) {
            // The follower keeps its first `start` records (which agree with the leader's) and
            // copies the leader's records from there.
            let start = cut.min(divergence(&history_of(&a), a.len() as u64, &history_of(&b), b.len() as u64) as usize);
            let to = (start + len).min(b.len());
            let (ha, hb) = (history_of(&a), history_of(&b));
            let spliced = ha.spliced(start as u64, &hb.slice(start as u64, to as u64));
            prop_assert!(EpochHistory::from_entries(spliced.entries.clone()).is_ok());
            for (o, want) in b.iter().enumerate().take(to) {
                prop_assert_eq!(spliced.label(o as u64), *want, "offset {}", o);
            }
        }
    }
}
