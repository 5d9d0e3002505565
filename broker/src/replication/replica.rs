//! The replication protocol of one partition, without I/O: what a replica decides when a
//! request arrives, and what a leader tracks while it recovers and replicates.
//!
//! The caller (the broker's engine, or the simulator) owns the log and the files, carries the
//! records in its messages, and applies each decision in the order it is given: a promise is
//! made durable first, then a truncation, then the new epoch history, then the records; only
//! then is the reply sent. See `REPLICATION.md` for the protocol and why it is safe.
//!
//! Roles: leadership comes from the cluster's consensus (one leader per epoch, epochs only
//! grow). A new leader first *recovers*: it asks every replica to promise its epoch (a replica
//! that promised refuses every older leader from then on) and, once a majority including itself
//! has, takes the most recent log among them ([`Recovery::best`]), copies what it lacks, and
//! adds its own epoch to its history. Then it *replicates*: it sends each follower the records
//! it lacks, checked against the follower's labels the way Raft checks `prevLogTerm`, and a
//! record is committed once a majority holds it and holds the leader's epoch entry.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::epochs::{Epoch, EpochHistory, EpochStart, divergence};
use crate::planted::{self, Planted};

/// A broker in the cluster.
pub type NodeId = u64;

/// What a replica keeps on disk about its partition, besides the records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// The highest epoch it promised: it refuses requests of older ones.
    pub promised: Epoch,
    /// The labels of its log.
    pub history: EpochHistory,
    /// Its log's first retained offset.
    pub log_start: u64,
    /// Its log's end (everything below is on disk).
    pub end: u64,
}

/// An append, from a leader to a follower (or copied from a replica during recovery): the
/// records `[start, start + count)`, carried beside it by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The sender's epoch.
    pub epoch: Epoch,
    /// The first record's offset.
    pub start: u64,
    /// The label of the record before `start` in the sender's log (0 at the start).
    pub prev_epoch: Epoch,
    /// The sender's log start: it holds no record below it.
    pub log_start: u64,
    /// The sender's labels of the records, as [`labels`] of `[start, start + count]`.
    pub epochs: Vec<EpochStart>,
    /// How many records.
    pub count: u64,
}

/// What a replica does with an [`Append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendPlan {
    /// The sender's epoch is older than the promise: refuse, naming the promise.
    Stale {
        /// The epoch promised.
        promised: Epoch,
    },
    /// The records do not follow this log: answer with this log's history and end, from
    /// which the sender works out where to start again.
    Mismatch {
        /// A higher epoch to promise (durably) first.
        promise: Option<Epoch>,
    },
    /// Take them.
    Apply(Apply),
    /// The records start the sender's log and do not follow this one: this log starts again
    /// where the sender's does (see [`Restart`]).
    Restart(Restart),
}

/// The steps of restarting a log at the sender's start, in the order they must reach the
/// disk. Every record below the sender's start is committed (retention deletes nothing above
/// a commit point), so what this log holds below it is either committed, and deleted on the
/// sender, or a divergent tail: either way it goes. Emptying the log first and writing the
/// sender's labels only then means a crash never leaves a record under a label it does not
/// have, nor labels below the log's start that disagree with the committed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// A higher epoch to promise first.
    pub promise: Option<Epoch>,
    /// Then cut every record; then write this history (the sender's, up to the records' end);
    /// then start the empty log again at this offset.
    pub history: EpochHistory,
    /// Where the log starts again: the sender's log start.
    pub start: u64,
    /// Then append every record and answer: the log agrees with the sender's up to here.
    pub matched: u64,
}

/// The steps of taking an append, in the order they must reach the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    /// A higher epoch to promise first.
    pub promise: Option<Epoch>,
    /// Cut the log to this end first: its records from there disagree with the sender's.
    pub truncate_to: Option<u64>,
    /// Then write this history.
    pub history: Option<EpochHistory>,
    /// Then append the records from this offset on, up to the append's end (none when it is
    /// at or past that end).
    pub append_from: u64,
    /// Then answer: the log now agrees with the sender's up to here.
    pub matched: u64,
}

/// Decides what a replica in `state` does with `append`.
pub fn on_append(state: &ReplicaState, append: &Append) -> AppendPlan {
    let checks_epoch = !planted::active(Planted::NoPromiseCheck);
    if checks_epoch && append.epoch < state.promised {
        return AppendPlan::Stale {
            promised: state.promised,
        };
    }
    let promise = (append.epoch > state.promised).then_some(append.epoch);
    let end = state.end;
    let start = append.start;
    let upto = start.saturating_add(append.count);
    // A copy from the sender's log start carries every label up to its end (see [`labels`]).
    let whole = if start == append.log_start {
        match EpochHistory::from_entries(append.epochs.clone()) {
            Ok(h) => Some(h),
            // Labels out of order come from no leader: refused like records that do not follow.
            Err(_) => return AppendPlan::Mismatch { promise },
        }
    } else {
        None
    };
    // The record before `start` must carry the same label here (below the log's start every
    // record is committed, so agreed).
    let follows = start <= end
        && (start <= state.log_start || state.history.label(start - 1) == append.prev_epoch);
    if !follows {
        let restarts = !planted::active(Planted::NoLogRestart);
        return match whole {
            Some(history) if restarts => AppendPlan::Restart(Restart {
                promise,
                history: history.effective(upto),
                start,
                matched: upto,
            }),
            _ => AppendPlan::Mismatch { promise },
        };
    }
    // The history this log has if it takes the sender's records from `start`. Where it labels
    // one of this log's records below `upto` differently, this log diverges and is cut there
    // (Raft's rule: only a conflict cuts, so a repeated or late append never does). An entry
    // of the sender's starting at `upto` labels the record there too: a new epoch that began
    // where the sender's log ended, so a different record here is not in the sender's log.
    let slice: Cow<'_, [EpochStart]> = match whole {
        Some(h) => Cow::Owned(h.slice(start, upto)),
        None => Cow::Borrowed(&append.epochs),
    };
    let theirs = state.history.spliced(start, &slice);
    let cut = divergence(&state.history, end, &theirs, upto);
    let ends_there = upto < end
        && slice.last().is_some_and(|e| e.start == upto)
        && theirs.label(upto) != state.history.label(upto);
    let truncate_to = if cut < end.min(upto) {
        Some(cut)
    } else if ends_there {
        Some(upto)
    } else {
        None
    };
    // The history changes only with what the append writes or cuts: a late append that ends
    // below this log's end must not take away an entry the log has past it.
    let history = (truncate_to.is_some() || upto >= end)
        .then_some(theirs)
        .filter(|t| *t != state.history);
    let kept = truncate_to.unwrap_or(end);
    AppendPlan::Apply(Apply {
        promise,
        truncate_to,
        history,
        append_from: kept.max(start),
        matched: upto,
    })
}

/// What a replica answers a leader's promise request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromisePlan {
    /// Refuse: the epoch is older than the promise.
    Stale {
        /// The epoch promised.
        promised: Epoch,
    },
    /// Promise (durably, when it is new), then answer with the history and end.
    Promise {
        /// The epoch to promise, if above the current promise.
        promise: Option<Epoch>,
    },
}

/// Decides what a replica in `state` does when asked to promise `epoch`.
pub fn on_promise(state: &ReplicaState, epoch: Epoch) -> PromisePlan {
    if epoch < state.promised && !planted::active(Planted::NoPromiseCheck) {
        PromisePlan::Stale {
            promised: state.promised,
        }
    } else {
        PromisePlan::Promise {
            promise: (epoch > state.promised).then_some(epoch),
        }
    }
}

/// A copy of `[from, from + count)` of a replica's log, as an [`Append`] in `epoch`.
pub fn copy_of(state: &ReplicaState, epoch: Epoch, from: u64, max: u64) -> Append {
    let from = from.clamp(state.log_start, state.end);
    let count = max.min(state.end - from);
    Append {
        epoch,
        start: from,
        prev_epoch: from.checked_sub(1).map_or(0, |p| state.history.label(p)),
        log_start: state.log_start,
        epochs: labels(state, from, from + count),
        count,
    }
}

/// The labels a copy of `[from, to)` of a log in `state` carries: [`EpochHistory::slice`],
/// or, for a copy from the log's start, every entry up to `to`. A receiver that must start its
/// log again there (see [`Restart`]) takes the labels below it too; they are the committed
/// records' labels, the same in every log, so later comparisons of its log with others find
/// no difference where it holds nothing.
pub fn labels(state: &ReplicaState, from: u64, to: u64) -> Vec<EpochStart> {
    if from == state.log_start {
        state.history.effective(to).entries().to_vec()
    } else {
        state.history.slice(from, to)
    }
}

/// A replica's answer to a promise request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promised {
    /// Its history (effective entries).
    pub history: EpochHistory,
    /// Its log's first retained offset.
    pub log_start: u64,
    /// Its log's end.
    pub end: u64,
}

impl Promised {
    /// The answer of a replica in `state`.
    pub fn of(state: &ReplicaState) -> Self {
        Self {
            history: state.history.effective(state.end),
            log_start: state.log_start,
            end: state.end,
        }
    }

    /// How recent the log is: its last epoch, then its length.
    fn rank(&self) -> (Epoch, u64) {
        if planted::active(Planted::BestByLength) {
            return (0, self.end);
        }
        (self.history.last_epoch(self.end), self.end)
    }
}

/// A new leader's first step: promises from a majority, and the most recent log among them.
#[derive(Debug, Clone)]
pub struct Recovery {
    epoch: Epoch,
    me: NodeId,
    replicas: Vec<NodeId>,
    answers: BTreeMap<NodeId, Promised>,
}

impl Recovery {
    /// Recovery of `me`, leader of `epoch`, among `replicas` (which include `me`).
    pub fn new(epoch: Epoch, me: NodeId, replicas: Vec<NodeId>) -> Self {
        Self {
            epoch,
            me,
            replicas,
            answers: BTreeMap::new(),
        }
    }

    /// The epoch it recovers for.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Records `node`'s promise (its own included).
    pub fn promised(&mut self, node: NodeId, answer: Promised) {
        if self.replicas.contains(&node) {
            self.answers.insert(node, answer);
        }
    }

    /// The replicas that have not answered yet.
    pub fn unanswered(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|n| !self.answers.contains_key(n))
            .collect()
    }

    /// The answers so far.
    pub fn answers(&self) -> &BTreeMap<NodeId, Promised> {
        &self.answers
    }

    /// Once a majority (including the leader) promised: the replica with the most recent log
    /// (latest epoch, then longest; the leader itself on a tie), and its answer.
    pub fn best(&self) -> Option<(NodeId, &Promised)> {
        if !self.answers.contains_key(&self.me) || self.answers.len() < majority(&self.replicas) {
            return None;
        }
        let mine = self.answers.get(&self.me)?;
        let mut best = (self.me, mine);
        for (node, answer) in &self.answers {
            if answer.rank() > best.1.rank() {
                best = (*node, answer);
            }
        }
        Some(best)
    }
}

/// How many replicas make a majority.
pub fn majority(replicas: &[NodeId]) -> usize {
    replicas.len() / 2 + 1
}

/// What a leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The next offset to send.
    next: u64,
    /// How far its log is known to agree with the leader's (confirmed in this epoch).
    matched: Option<u64>,
    /// Where the follower's log starts, when it said.
    log_start: u64,
}

/// A leader that recovered: where each follower stands, and the commit point.
#[derive(Debug, Clone)]
pub struct Leader {
    epoch: Epoch,
    replicas: Vec<NodeId>,
    /// The leader's end when its epoch began: only a follower that reached it holds the
    /// leader's epoch entry, and only such followers count for the commit point.
    epoch_start: u64,
    commit: u64,
    followers: BTreeMap<NodeId, Progress>,
}

impl Leader {
    /// The leader of `epoch` whose recovered log ends at `epoch_start`.
    pub fn new(epoch: Epoch, me: NodeId, replicas: Vec<NodeId>, epoch_start: u64) -> Self {
        let followers = replicas
            .iter()
            .filter(|n| **n != me)
            .map(|n| {
                (
                    *n,
                    Progress {
                        next: epoch_start,
                        matched: None,
                        log_start: 0,
                    },
                )
            })
            .collect();
        Self {
            epoch,
            replicas,
            epoch_start,
            commit: 0,
            followers,
        }
    }

    /// Its epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Where its epoch began.
    pub fn epoch_start(&self) -> u64 {
        self.epoch_start
    }

    /// The replicas, the leader included.
    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// What `node` said of its log (a promise answer, or a mismatch): the next append starts
    /// where its log and the leader's first differ.
    pub fn learned(&mut self, node: NodeId, theirs: &Promised, mine: &ReplicaState) {
        let trust_end = planted::active(Planted::TrustFollowerEnd);
        if let Some(p) = self.followers.get_mut(&node) {
            p.next = if trust_end {
                theirs.end.min(mine.end)
            } else {
                divergence(&mine.history, mine.end, &theirs.history, theirs.end)
            };
            p.log_start = theirs.log_start;
        }
    }

    /// The next append for `node` from a leader in `mine`: at most `max` records from where it
    /// stands, or an empty one (a heartbeat that checks it still follows). `None` for a node
    /// that is not a follower. The records are sent as if they will arrive; a lost append is
    /// found by the follower's mismatch answer to a later one.
    pub fn next_append(&mut self, node: NodeId, mine: &ReplicaState, max: u64) -> Option<Append> {
        let p = self.followers.get_mut(&node)?;
        let from = p.next.clamp(mine.log_start, mine.end);
        let append = copy_of(mine, self.epoch, from, max);
        p.next = from + append.count;
        Some(append)
    }

    /// The append last made for `node` carried records up to `to` only (a byte limit cut
    /// it short): the next one starts there.
    pub fn sent(&mut self, node: NodeId, to: u64) {
        if let Some(p) = self.followers.get_mut(&node) {
            p.next = to;
        }
    }

    /// An append to `node` was lost: the next one starts from what it last confirmed (or,
    /// never having confirmed anything, where it stood).
    pub fn rewind(&mut self, node: NodeId) {
        if let Some(p) = self.followers.get_mut(&node)
            && let Some(m) = p.matched
        {
            p.next = p.next.min(m);
        }
    }

    /// Whether `node` has not been sent everything below `end`.
    pub fn has_more(&self, node: NodeId, end: u64) -> bool {
        self.followers.get(&node).is_some_and(|p| p.next < end)
    }

    /// Whether `node`'s log ends below the leader's first retained record: it needs the log
    /// restarted at the leader's start (its own records there are all committed).
    pub fn needs_reset(&self, node: NodeId, mine: &ReplicaState) -> bool {
        self.followers
            .get(&node)
            .is_some_and(|p| p.next < mine.log_start)
    }

    /// `node` took an append: its log agrees with the leader's up to `matched`.
    pub fn appended(&mut self, node: NodeId, matched: u64) {
        if let Some(p) = self.followers.get_mut(&node) {
            p.matched = Some(p.matched.map_or(matched, |m| m.max(matched)));
            p.next = p.next.max(matched);
        }
    }

    /// The commit point, given the leader's own durable end: the highest offset that a
    /// majority holds, counting only followers that reached the epoch's start. Never moves
    /// back.
    pub fn commit(&mut self, my_end: u64) -> u64 {
        let count_stale = planted::active(Planted::CountStaleFollowers);
        let mut ends: Vec<u64> = self
            .followers
            .values()
            .filter_map(|p| p.matched)
            .filter(|m| count_stale || *m >= self.epoch_start)
            .collect();
        ends.push(my_end);
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let need = majority(&self.replicas);
        if let Some(c) = need.checked_sub(1).and_then(|i| ends.get(i))
            && (count_stale || *c >= self.epoch_start)
        {
            self.commit = self.commit.max(*c);
        }
        self.commit
    }

    /// How far behind `node` is: the leader's end minus what it is known to hold.
    pub fn lag(&self, node: NodeId, my_end: u64) -> Option<u64> {
        let p = self.followers.get(&node)?;
        Some(my_end.saturating_sub(p.matched.unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::epochs::history_of_pairs as h;

    fn state(promised: u64, entries: &[(u64, u64)], end: u64) -> ReplicaState {
        ReplicaState {
            promised,
            history: h(entries),
            log_start: 0,
            end,
        }
    }

    fn apply(plan: AppendPlan) -> Apply {
        match plan {
            AppendPlan::Apply(a) => a,
            other => panic!("expected apply, got {other:?}"),
        }
    }

    #[test]
    fn an_older_epoch_is_refused_and_a_newer_one_promised() {
        let s = state(5, &[(5, 0)], 3);
        let leader = state(4, &[(4, 0)], 3);
        let a = copy_of(&leader, 4, 3, 10);
        assert_eq!(on_append(&s, &a), AppendPlan::Stale { promised: 5 });
        let b = copy_of(&state(7, &[(5, 0)], 3), 7, 3, 10);
        assert_eq!(apply(on_append(&s, &b)).promise, Some(7));
        assert_eq!(on_promise(&s, 4), PromisePlan::Stale { promised: 5 });
        assert_eq!(on_promise(&s, 6), PromisePlan::Promise { promise: Some(6) });
        assert_eq!(on_promise(&s, 5), PromisePlan::Promise { promise: None });
    }

    #[test]
    fn a_gap_or_a_different_previous_label_is_a_mismatch() {
        let leader = state(3, &[(1, 0), (3, 4)], 8);
        let behind = state(3, &[(1, 0)], 2);
        assert!(matches!(
            on_append(&behind, &copy_of(&leader, 3, 5, 3)),
            AppendPlan::Mismatch { .. }
        ));
        // Same length, but its record 4 was written by epoch 2.
        let other = state(3, &[(1, 0), (2, 4)], 5);
        assert!(matches!(
            on_append(&other, &copy_of(&leader, 3, 5, 3)),
            AppendPlan::Mismatch { .. }
        ));
    }

    #[test]
    fn a_divergent_tail_is_cut_where_labels_first_differ() {
        let leader = state(3, &[(1, 0), (3, 4)], 8);
        let follower = state(3, &[(1, 0), (2, 5)], 7);
        let a = apply(on_append(&follower, &copy_of(&leader, 3, 4, 4)));
        assert_eq!(
            a.truncate_to,
            Some(4),
            "its record 4 is of epoch 1, the leader's of 3"
        );
        assert_eq!(a.append_from, 4);
        assert_eq!(a.matched, 8);
        assert_eq!(a.history, Some(h(&[(1, 0), (3, 4)])));
    }

    #[test]
    fn a_repeated_append_changes_nothing_and_cuts_nothing() {
        let leader = state(3, &[(1, 0), (3, 4)], 8);
        let follower = state(3, &[(1, 0), (3, 4)], 8);
        let a = apply(on_append(&follower, &copy_of(&leader, 3, 2, 4)));
        assert_eq!(a.truncate_to, None);
        assert_eq!(a.history, None);
        assert_eq!(a.append_from, 8, "nothing to append");
        assert_eq!(a.matched, 6);
    }

    #[test]
    fn a_new_epoch_that_starts_where_the_copy_ends_cuts_an_older_tail_past_it() {
        // The leader's log ends at 4 and its epoch 3 starts there; the follower has records 4
        // and 5 of epoch 2 that the leader never had.
        let leader = state(3, &[(1, 0), (3, 4)], 4);
        let follower = state(3, &[(1, 0), (2, 4)], 6);
        let a = apply(on_append(&follower, &copy_of(&leader, 3, 2, 10)));
        assert_eq!(a.truncate_to, Some(4));
        assert_eq!(a.matched, 4);
        assert_eq!(a.history, Some(h(&[(1, 0), (3, 4)])));
    }

    #[test]
    fn a_late_append_ending_where_two_epochs_began_cuts_nothing() {
        // Epochs 16 and 18 both began at 30 on the leader; the follower already holds 30..34
        // of epoch 18. A late copy of 26..30 carries both entries at 30.
        let leader = state(18, &[(12, 20), (15, 27), (16, 30), (18, 30)], 34);
        let follower = leader.clone();
        let a = apply(on_append(&follower, &copy_of(&leader, 18, 26, 4)));
        assert_eq!(a.truncate_to, None);
        assert_eq!(a.history, None);
        assert_eq!(a.matched, 30);
    }

    fn retained(mut s: ReplicaState, log_start: u64) -> ReplicaState {
        s.log_start = log_start;
        s
    }

    #[test]
    fn a_log_that_ends_below_the_leaders_start_starts_again_there_with_its_labels() {
        // Retention deleted the leader's records below 20; the follower stopped at 12.
        let leader = retained(state(5, &[(1, 0), (3, 10), (5, 22)], 30), 20);
        let follower = state(3, &[(1, 0), (3, 10)], 12);
        let copy = copy_of(&leader, 5, 12, 4);
        assert_eq!((copy.start, copy.log_start, copy.count), (20, 20, 4));
        match on_append(&follower, &copy) {
            AppendPlan::Restart(r) => {
                assert_eq!(r.promise, Some(5));
                assert_eq!(r.start, 20);
                assert_eq!(r.matched, 24);
                assert_eq!(
                    r.history,
                    h(&[(1, 0), (3, 10), (5, 22)]),
                    "the leader's labels below its start too"
                );
            }
            other => panic!("expected a restart, got {other:?}"),
        }
        // A copy that is not from the leader's start is only a mismatch.
        let later = copy_of(&leader, 5, 24, 4);
        assert!(matches!(
            on_append(&follower, &later),
            AppendPlan::Mismatch { .. }
        ));
    }

    #[test]
    fn a_log_that_diverges_just_below_the_leaders_start_starts_again_there() {
        // The follower's records 18 and 19 are of epoch 4, which the leader never had.
        let leader = retained(state(5, &[(1, 0), (3, 10), (5, 22)], 30), 20);
        let follower = state(4, &[(1, 0), (3, 10), (4, 18)], 25);
        assert!(matches!(
            on_append(&follower, &copy_of(&leader, 5, 20, 4)),
            AppendPlan::Restart(_)
        ));
    }

    #[test]
    fn a_log_that_holds_the_leaders_start_takes_a_copy_from_there_as_usual() {
        let leader = retained(state(5, &[(1, 0), (3, 10), (5, 22)], 30), 20);
        let follower = state(5, &[(1, 0), (3, 10)], 21);
        let a = apply(on_append(&follower, &copy_of(&leader, 5, 20, 4)));
        assert_eq!(a.truncate_to, None);
        assert_eq!(a.append_from, 21);
        assert_eq!(a.matched, 24);
        assert_eq!(a.history, Some(h(&[(1, 0), (3, 10), (5, 22)])));
        // Labels out of order in a copy from the start are refused.
        let mut bad = copy_of(&leader, 5, 20, 4);
        bad.epochs.reverse();
        assert!(matches!(
            on_append(&follower, &bad),
            AppendPlan::Mismatch { .. }
        ));
    }

    #[test]
    fn recovery_waits_for_a_majority_with_the_leader_and_takes_the_latest_epoch_then_length() {
        let mut r = Recovery::new(5, 1, vec![1, 2, 3]);
        r.promised(2, Promised::of(&state(5, &[(2, 0)], 9)));
        assert!(r.best().is_none(), "the leader has not answered itself");
        r.promised(1, Promised::of(&state(5, &[(3, 0)], 4)));
        assert_eq!(
            r.best().map(|b| b.0),
            Some(1),
            "epoch 3 beats a longer epoch 2"
        );
        r.promised(3, Promised::of(&state(5, &[(3, 0)], 6)));
        assert_eq!(r.best().map(|b| b.0), Some(3), "same epoch: the longer");
    }

    #[test]
    fn the_commit_point_counts_only_followers_that_reached_the_epoch_start() {
        let mut l = Leader::new(4, 1, vec![1, 2, 3], 10);
        assert_eq!(l.commit(12), 0);
        l.appended(2, 8);
        assert_eq!(l.commit(12), 0, "8 is below the epoch start");
        l.appended(2, 11);
        assert_eq!(l.commit(12), 11);
        l.appended(3, 12);
        assert_eq!(l.commit(12), 12);
        assert_eq!(l.commit(11), 12, "never back");
    }

    #[test]
    fn a_follower_is_sent_from_where_it_diverges() {
        let mine = state(4, &[(1, 0), (4, 6)], 9);
        let mut l = Leader::new(4, 1, vec![1, 2, 3], 6);
        l.learned(2, &Promised::of(&state(4, &[(1, 0), (2, 3)], 8)), &mine);
        let a = l.next_append(2, &mine, 100).unwrap();
        assert_eq!((a.start, a.count, a.prev_epoch), (3, 6, 1));
        // Sent as if it arrived: the next one is a heartbeat at the end.
        let b = l.next_append(2, &mine, 100).unwrap();
        assert_eq!((b.start, b.count), (9, 0));
        assert!(l.next_append(1, &mine, 100).is_none(), "the leader itself");
    }
}
