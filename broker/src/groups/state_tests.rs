//! Tests of `group`.
use super::*;
use proptest::prelude::*;

fn cfg(mode: FetchMode) -> GroupConfig {
    GroupConfig {
        mode,
        lease_ms: 1000,
        max_attempts: 3,
        prefetch: 100,
    }
}

fn group(mode: FetchMode, partitions: usize) -> GroupState {
    GroupState::new(cfg(mode), vec![PartitionProgress::default(); partitions])
}

fn offsets(g: &[Grant]) -> Vec<(u32, u64)> {
    g.iter().map(|g| (g.partition, g.offset)).collect()
}

#[test]
fn shared_delivers_each_record_once_and_commits_in_order() {
    let mut g = group(FetchMode::Shared, 1);
    let a = g.poll(1, 0, 2, &[5]);
    let b = g.poll(2, 0, 10, &[5]);
    assert_eq!(offsets(&a), vec![(0, 0), (0, 1)]);
    assert_eq!(offsets(&b), vec![(0, 2), (0, 3), (0, 4)]);
    assert_eq!(g.ack(2, 1, 0, 3), AckOutcome::Acked);
    assert_eq!(g.committed(0), 0, "a gap below holds the commit back");
    assert_eq!(g.ack(1, 1, 0, 0), AckOutcome::Acked);
    assert_eq!(g.ack(1, 1, 0, 1), AckOutcome::Acked);
    assert_eq!(g.ack(2, 1, 0, 2), AckOutcome::Acked);
    assert_eq!(g.committed(0), 4);
    assert_eq!(g.ack(2, 1, 0, 2), AckOutcome::AlreadyAcked);
    assert_eq!(g.ack(2, 1, 0, 9), AckOutcome::Unknown);
    assert_eq!(g.lag(0, 5), 1);
}

#[test]
fn shared_redelivers_after_lease_expiry_and_after_disconnect() {
    let mut g = group(FetchMode::Shared, 1);
    assert_eq!(g.poll(1, 0, 1, &[2]).len(), 1);
    assert!(g.tick(999).is_empty());
    assert!(g.poll(2, 999, 10, &[2]).iter().all(|x| x.offset != 0));
    g.tick(1000);
    let again = g.poll(2, 1000, 10, &[2]);
    assert_eq!(
        again,
        vec![Grant {
            partition: 0,
            offset: 0,
            attempt: 2
        }]
    );
    assert_eq!(g.redeliveries(), 1);
    assert!(g.leave(2, 1001).is_empty());
    let third = g.poll(3, 1001, 10, &[2]);
    assert_eq!(offsets(&third), vec![(0, 0), (0, 1)]);
    assert_eq!(third[0].attempt, 3);
}

#[test]
fn nack_with_delay_then_dead_letter_after_max_attempts() {
    let mut g = group(FetchMode::Shared, 1);
    for attempt in 1..=3u32 {
        let now = u64::from(attempt) * 100;
        let got = g.poll(1, now, 1, &[1]);
        assert_eq!(
            got,
            vec![Grant {
                partition: 0,
                offset: 0,
                attempt
            }]
        );
        assert!(g.poll(1, now, 1, &[1]).is_empty(), "not while leased");
        let out = g.nack(1, now, 0, 0, 50, "boom");
        if attempt < 3 {
            assert_eq!(out, NackOutcome::Requeued);
            assert!(g.poll(1, now + 49, 1, &[1]).is_empty(), "delay respected");
        } else {
            assert_eq!(
                out,
                NackOutcome::DeadLetter(DeadLetter {
                    partition: 0,
                    offset: 0,
                    attempts: 3,
                    reason: "boom".into()
                })
            );
        }
    }
    assert!(
        g.poll(1, 10_000, 1, &[1]).is_empty(),
        "pending dead letter is not delivered"
    );
    assert!(g.dead_lettered(0, 0));
    assert_eq!(g.committed(0), 1);
    assert_eq!(g.dead_letters(), 1);
}

#[test]
fn nack_from_a_non_holder_is_stale() {
    let mut g = group(FetchMode::Shared, 1);
    g.poll(1, 0, 1, &[1]);
    assert_eq!(g.nack(2, 0, 0, 0, 0, "x"), NackOutcome::Stale);
    assert_eq!(g.nack(2, 0, 0, 5, 0, "x"), NackOutcome::Unknown);
}

#[test]
fn ordered_keeps_order_and_rewinds_on_failure() {
    let mut g = group(FetchMode::Ordered, 1);
    let first = g.poll(1, 0, 3, &[5]);
    assert_eq!(offsets(&first), vec![(0, 0), (0, 1), (0, 2)]);
    assert!(
        g.poll(2, 0, 3, &[5]).is_empty(),
        "the partition belongs to consumer 1"
    );
    assert_eq!(g.ack(1, 1, 0, 0), AckOutcome::Acked);
    assert_eq!(g.nack(1, 1, 0, 1, 10, "retry"), NackOutcome::Requeued);
    assert!(g.poll(1, 5, 10, &[5]).is_empty(), "paused for the delay");
    let again = g.poll(1, 11, 10, &[5]);
    assert_eq!(offsets(&again), vec![(0, 1), (0, 2), (0, 3), (0, 4)]);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[1].attempt, 1, "taken back, not charged");
}

#[test]
fn ordered_dead_lettering_takes_back_what_came_after_it_uncharged() {
    let mut g = group(FetchMode::Ordered, 1);
    for attempt in 1..=3u32 {
        let now = u64::from(attempt) * 100;
        let got = g.poll(1, now, 3, &[3]);
        assert_eq!(offsets(&got), vec![(0, 0), (0, 1), (0, 2)]);
        assert_eq!(got[0].attempt, attempt);
        assert_eq!(
            got[1].attempt, 1,
            "taken back behind the failure, not charged"
        );
        let out = g.nack(1, now, 0, 0, 0, "poison");
        assert_eq!(matches!(out, NackOutcome::DeadLetter(_)), attempt == 3);
    }
    // A consumer that set the later records aside while the first was retried gets them back
    // at once, not when their leases run out.
    let rest = g.poll(1, 301, 10, &[3]);
    assert_eq!(offsets(&rest), vec![(0, 1), (0, 2)]);
    assert!(rest.iter().all(|r| r.attempt == 1));
}

#[test]
fn ordered_hands_partitions_over_when_a_member_dies() {
    let mut g = group(FetchMode::Ordered, 2);
    let a = g.poll(1, 0, 10, &[3, 3]);
    assert_eq!(a.len(), 6, "alone, consumer 1 owns both partitions");
    let dead = g.leave(1, 1);
    assert!(dead.is_empty());
    let b = g.poll(2, 2, 10, &[3, 3]);
    assert_eq!(b.len(), 6);
    // The first record of each partition is charged for the death; the ones behind it
    // were taken back in order and are not.
    for x in &b {
        assert_eq!(x.attempt, if x.offset == 0 { 2 } else { 1 }, "{x:?}");
    }
}

#[test]
fn ordered_shares_partitions_fairly() {
    let mut g = group(FetchMode::Ordered, 4);
    let ends = [10, 10, 10, 10];
    g.poll(1, 0, 0, &ends);
    g.touch(2, 0);
    g.touch(3, 0);
    for round in 0..4 {
        for c in 1..=3 {
            let got = g.poll(c, round, 100, &ends);
            for x in got {
                g.ack(c, round, x.partition, x.offset);
            }
        }
    }
    let owned: Vec<usize> = (1..=3).map(|c| g.owned_by(c)).collect();
    assert_eq!(owned.iter().sum::<usize>(), 4);
    assert!(owned.iter().all(|n| *n >= 1), "{owned:?}");
}

#[test]
fn a_taken_back_grant_is_not_an_attempt() {
    for mode in [FetchMode::Shared, FetchMode::Ordered] {
        let mut g = group(mode, 1);
        let got = g.poll(1, 0, 3, &[3]);
        g.take_back(0, 2);
        g.take_back(0, 1);
        let again = g.poll(1, 0, 3, &[3]);
        assert_eq!(offsets(&again), vec![(0, 1), (0, 2)], "{mode:?}");
        assert!(again.iter().all(|x| x.attempt == 1), "{mode:?}: {again:?}");
        assert_eq!(got.len(), 3);
    }
}

#[test]
fn progress_survives_a_restart() {
    let mut g = group(FetchMode::Shared, 1);
    g.poll(1, 0, 10, &[5]);
    g.ack(1, 0, 0, 0);
    g.ack(1, 0, 0, 2);
    let g2 = GroupState::new(g.config(), g.progress());
    assert_eq!(g2.committed(0), 1);
    let mut g2 = g2;
    let got = g2.poll(1, 0, 10, &[5]);
    assert_eq!(offsets(&got), vec![(0, 1), (0, 3), (0, 4)]);
}

#[test]
fn delivery_counts_survive_a_restart_and_a_last_delivery_ended_by_it_dead_letters() {
    let mut g = group(FetchMode::Shared, 1);
    g.poll(1, 0, 2, &[3]);
    for t in [1, 2] {
        assert_eq!(g.nack(1, t, 0, 0, 0, "no"), NackOutcome::Requeued);
        assert_eq!(g.poll(1, t, 1, &[3])[0].attempt, t as u32 + 1);
    }
    // Restarted while offset 0 was out for its third and last time, and offset 1 for its first.
    let mut g2 = GroupState::new(g.config(), g.progress());
    let dead = g2.tick(0);
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].offset, dead[0].attempts), (0, 3));
    let got = g2.poll(1, 0, 10, &[3]);
    assert_eq!(
        got.iter()
            .map(|x| (x.offset, x.attempt))
            .collect::<Vec<_>>(),
        vec![(1, 2), (2, 1)],
        "the dead letter is not delivered; the others go on counting"
    );
}

#[test]
fn a_failed_dead_letter_is_tried_again_never_delivered_again() {
    let mut g = group(FetchMode::Shared, 1);
    for t in 0..3 {
        g.poll(1, t, 1, &[1]);
        if let NackOutcome::DeadLetter(dl) = g.nack(1, t, 0, 0, 0, "no") {
            assert_eq!(t, 2);
            g.dead_letter_failed(dl, t, 100);
        }
    }
    assert!(g.poll(1, 50, 10, &[1]).is_empty(), "out of attempts");
    assert!(g.tick(50).is_empty());
    let again = g.tick(102);
    assert_eq!(again.len(), 1, "the move is tried again");
    assert!(g.dead_lettered(0, 0));
    assert_eq!(g.committed(0), 1);
}

#[test]
fn a_delivery_goes_out_only_while_its_lease_holds_and_its_lease_runs_from_then() {
    let mut g = group(FetchMode::Shared, 1);
    g.poll(1, 0, 2, &[2]);
    assert!(g.hand_out(1, 900, 0, 0));
    assert!(!g.hand_out(2, 900, 0, 1), "another consumer's lease");
    assert!(g.tick(1000).iter().all(|d| d.offset != 0));
    assert_eq!(
        offsets(&g.poll(2, 1000, 10, &[2])),
        vec![(0, 1)],
        "1 expired, 0 did not"
    );
    g.tick(1900);
    assert!(!g.hand_out(1, 1900, 0, 0), "expired");
}

#[test]
fn first_deliveries_are_covered_by_a_mark_written_ahead_and_charged_once_after_a_restart() {
    let mut g = group(FetchMode::Shared, 1);
    let first = g.poll(1, 0, 2, &[20]);
    let counts = g.counts_to_write(&first);
    assert_eq!(counts.marks, vec![(0, 1 + COUNT_AHEAD)]);
    assert!(counts.deliveries.is_empty());
    // Until it is written, later fetches wait for it too (they ask for the same mark).
    let second = g.poll(1, 0, 1, &[20]);
    assert_eq!(g.counts_to_write(&second).marks, vec![(0, 1 + COUNT_AHEAD)]);
    g.counts_written(&counts, true);
    let third = g.poll(1, 0, 1, &[20]);
    assert!(
        g.counts_to_write(&third).is_empty(),
        "covered: nothing to write"
    );
    // A redelivery is counted on its own.
    g.nack(1, 0, 0, 0, 0, "no");
    let again = g.poll(2, 0, 1, &[20]);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(g.counts_to_write(&again).deliveries, vec![(0, 0, 2)]);
    // After a restart every unfinished offset below the mark counts as delivered once, even
    // one that never was (offset 5): it may lose one attempt, never get one too many.
    let mut g2 = GroupState::new(g.config(), g.progress());
    let after = g2.poll(1, 0, 10, &[20]);
    assert!(after.iter().all(|x| x.attempt >= 2), "{after:?}");
    assert!(g2.counts_to_write(&after).marks.is_empty());
}

#[test]
fn a_mark_that_could_not_be_written_is_asked_for_again() {
    let mut g = group(FetchMode::Shared, 1);
    let first = g.poll(1, 0, 1, &[5]);
    let counts = g.counts_to_write(&first);
    g.counts_written(&counts, false);
    g.take_back(0, 0);
    let again = g.poll(1, 0, 1, &[5]);
    assert_eq!(g.counts_to_write(&again).marks, counts.marks);
}

#[test]
fn a_group_with_one_attempt_counts_each_first_delivery_on_its_own() {
    let mut g = GroupState::new(
        GroupConfig {
            max_attempts: 1,
            ..cfg(FetchMode::Shared)
        },
        vec![PartitionProgress::default()],
    );
    let first = g.poll(1, 0, 2, &[5]);
    let counts = g.counts_to_write(&first);
    assert!(
        counts.marks.is_empty(),
        "no record may lose its only attempt"
    );
    assert_eq!(counts.deliveries, vec![(0, 0, 1), (0, 1, 1)]);
}

#[test]
fn absorbed_progress_is_done_here_and_its_counts_count() {
    let mut g = group(FetchMode::Shared, 2);
    let held = g.poll(1, 0, 3, &[3, 0]);
    assert_eq!(offsets(&held), vec![(0, 0), (0, 1), (0, 2)]);
    g.absorb(&[
        PartitionProgress {
            committed: 1,
            acked: vec![2],
            attempts: vec![(1, 3), (4, 2)],
            mark: 8,
        },
        PartitionProgress {
            committed: 5,
            ..PartitionProgress::default()
        },
    ]);
    assert_eq!(g.committed(0), 1);
    assert_eq!(g.committed(1), 5);
    assert_eq!(g.in_flight(), 1, "the leases of done offsets ended");
    assert_eq!(g.ack(1, 1, 0, 2), AckOutcome::AlreadyAcked);
    let progress = g.progress();
    assert_eq!(progress[0].acked, vec![2]);
    assert_eq!(progress[0].mark, 8);
    let mut counts = progress[0].attempts.clone();
    counts.sort_unstable();
    assert_eq!(counts, vec![(1, 3), (4, 2)]);
    // Absorbing it again changes nothing.
    let sorted = |mut v: Vec<PartitionProgress>| {
        v.iter_mut().for_each(|p| p.attempts.sort_unstable());
        v
    };
    let before = sorted(g.progress());
    g.absorb(&before);
    assert_eq!(sorted(g.progress()), before);
}

proptest! {
    /// Random interleavings of polls, acks, nacks, expiries and departures never deliver a
    /// done record, never lease one record twice, and every record ends done or pending.
    #[test]
    fn no_double_lease_and_no_redelivery_of_done(
        ordered in any::<bool>(),
        ops in proptest::collection::vec((0u8..6, 1u64..4, 0usize..8), 1..200),
    ) {
        let mode = if ordered { FetchMode::Ordered } else { FetchMode::Shared };
        let mut g = GroupState::new(GroupConfig { mode, lease_ms: 50, max_attempts: 4, prefetch: 5 },
            vec![PartitionProgress::default(); 2]);
        let ends = [6u64, 6u64];
        let mut now = 0u64;
        let mut held: Vec<(u64, Grant)> = Vec::new();
        let mut done: BTreeSet<(u32, u64)> = BTreeSet::new();
        for (op, c, k) in ops {
            now += 7;
            match op {
                0 | 1 => {
                    for gr in g.poll(c, now, 3, &ends) {
                        prop_assert!(!done.contains(&(gr.partition, gr.offset)), "done record delivered");
                        prop_assert!(g.part(gr.partition).unwrap().leases.get(&gr.offset).map(|l| l.consumer) == Some(c));
                        held.retain(|(_, h)| (h.partition, h.offset) != (gr.partition, gr.offset));
                        held.push((c, gr));
                    }
                }
                2 if !held.is_empty() => {
                    let (c, gr) = held.remove(k % held.len());
                    if g.ack(c, now, gr.partition, gr.offset) == AckOutcome::Acked {
                        done.insert((gr.partition, gr.offset));
                    }
                }
                3 if !held.is_empty() => {
                    let (c, gr) = held.remove(k % held.len());
                    if let NackOutcome::DeadLetter(d) = g.nack(c, now, gr.partition, gr.offset, 5, "x") {
                        prop_assert!(g.dead_lettered(d.partition, d.offset));
                        done.insert((d.partition, d.offset));
                    }
                }
                4 => {
                    for d in g.tick(now) {
                        prop_assert!(g.dead_lettered(d.partition, d.offset));
                        done.insert((d.partition, d.offset));
                    }
                }
                5 => {
                    for d in g.leave(c, now) {
                        prop_assert!(g.dead_lettered(d.partition, d.offset));
                        done.insert((d.partition, d.offset));
                    }
                    held.retain(|(h, _)| *h != c);
                }
                _ => {}
            }
            for p in &g.partitions {
                for o in p.leases.keys() {
                    prop_assert!(!p.is_done(*o));
                    prop_assert!(!p.retry.contains_key(o));
                }
            }
        }
        // Drain: everything not done is eventually delivered again and can be finished.
        for _ in 0..100 {
            now += 1000;
            for d in g.tick(now) {
                g.dead_lettered(d.partition, d.offset);
            }
            for gr in g.poll(9, now, 100, &ends) {
                g.ack(9, now, gr.partition, gr.offset);
            }
        }
        prop_assert_eq!(g.committed(0), 6);
        prop_assert_eq!(g.committed(1), 6);
    }
}
