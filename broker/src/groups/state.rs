//! The consumer-group state machine.
//!
//! Per partition a group keeps:
//! - `committed`: every offset below it is done (acknowledged or dead-lettered);
//! - `acked`: done offsets at or above `committed` (acknowledgements may come out of order);
//! - `next`: the first offset never handed out (in ordered mode, the cursor, which a failure
//!   rewinds);
//! - `leases`: offsets out with a consumer until a deadline;
//! - `retry` (shared mode): offsets waiting for a delay to pass before the next delivery;
//! - `attempts`: how many times each unfinished offset was delivered;
//! - `counted`: the delivery-count mark. Every delivery is counted on disk before it goes out:
//!   a redelivery by its own count, a first delivery by a per-partition mark written ahead in
//!   steps of [`COUNT_AHEAD`] ("every unfinished offset below the mark may have been delivered
//!   once"), so most fetches wait for no write at all.
//!
//! Invariants (checked by the tests below):
//! 1. An offset is in at most one of `acked`, `leases`, `retry`, `dead_pending`.
//! 2. A done offset is never delivered again; an offset is never leased to two consumers.
//! 3. A failure (nack, lease expiry, consumer gone) counts as an attempt; after `max_attempts`
//!    deliveries a failure moves the record to the dead-letter path instead of retrying it.
//! 4. Ordered mode: a partition is owned by one consumer at a time and delivered in offset
//!    order; a failure at offset `o` takes back every later delivery of that partition (they
//!    are not charged an attempt) and delivery resumes from `o` after the delay.
//! 5. What survives a restart is `committed`, `acked`, the counts and the mark; everything else
//!    is rebuilt as "not delivered now". An unfinished offset below the restored mark without a
//!    count of its own counts as delivered once (it may have been), so no record is delivered
//!    more than `max_attempts` times, restarts included; the price is that a record the crash
//!    came before may lose one attempt. A group with `max_attempts` 1 writes no mark (each first
//!    delivery is counted on its own), since that lost attempt would be its only one.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt};

use super::mode::FetchMode;
use super::progress::PartitionProgress;

/// How far ahead of the first deliveries the delivery-count mark is written: one journal write
/// (and sync) per this many first deliveries of a partition.
pub const COUNT_AHEAD: u64 = 4096;

/// Identifies a consumer: one per connection and group.
pub type ConsumerId = u64;

/// How a group behaves; fixed when the group is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupConfig {
    /// Shared or ordered.
    pub mode: FetchMode,
    /// Visibility timeout of a delivery; also how long an ordered-mode owner keeps its
    /// partitions without fetching or acknowledging.
    pub lease_ms: u64,
    /// Deliveries of one record before a failure dead-letters it.
    pub max_attempts: u32,
    /// Most unacknowledged deliveries one consumer may hold.
    pub prefetch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    consumer: ConsumerId,
    deadline_ms: u64,
}

#[derive(Debug, Default)]
struct PartitionState {
    committed: u64,
    acked: BTreeSet<u64>,
    next: u64,
    delivered_max: u64,
    leases: BTreeMap<u64, Lease>,
    retry: BTreeMap<u64, u64>,
    attempts: HashMap<u64, u32>,
    /// Unfinished offsets below it without a count of their own were delivered at most once
    /// before the last restart.
    restored_mark: u64,
    /// The mark asked for (first deliveries below it are covered once it is on disk).
    mark: u64,
    /// The mark known to be on disk.
    mark_durable: u64,
    dead_pending: BTreeSet<u64>,
    owner: Option<ConsumerId>,
    paused_until_ms: u64,
}

impl PartitionState {
    fn is_done(&self, offset: u64) -> bool {
        offset < self.committed || self.acked.contains(&offset)
    }

    /// Deliveries of `offset` so far.
    fn attempts_of(&self, offset: u64) -> u32 {
        match self.attempts.get(&offset) {
            Some(a) => *a,
            None if offset < self.restored_mark => 1,
            None => 0,
        }
    }

    /// Counts one more delivery of `offset`; returns which delivery it is.
    fn bump(&mut self, offset: u64) -> u32 {
        let a = self.attempts_of(offset) + 1;
        self.attempts.insert(offset, a);
        a
    }

    fn mark_done(&mut self, offset: u64) {
        self.attempts.remove(&offset);
        self.retry.remove(&offset);
        self.dead_pending.remove(&offset);
        if offset >= self.committed {
            self.acked.insert(offset);
        }
        while self.acked.remove(&self.committed) {
            self.committed += 1;
        }
        self.next = self.next.max(self.committed);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ConsumerState {
    in_flight: u32,
    last_seen_ms: u64,
}

/// One record granted to a consumer by [`GroupState::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Which delivery of this record this is (1 = first).
    pub attempt: u32,
}

/// Delivery counts to write before grants go out (see [`GroupState::counts_to_write`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountsToWrite {
    /// Partition and the mark below which first deliveries are covered.
    pub marks: Vec<(u32, u64)>,
    /// Partition, offset and count of each delivery counted on its own.
    pub deliveries: Vec<(u32, u64, u32)>,
}

impl CountsToWrite {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty() && self.deliveries.is_empty()
    }
}

/// A record that ran out of attempts and must go to the dead-letter topic. Once appended
/// there, call [`GroupState::dead_lettered`]; if that fails, [`GroupState::dead_letter_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Deliveries made.
    pub attempts: u32,
    /// Why the last one failed.
    pub reason: String,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Newly done: persist it.
    Acked,
    /// Done before.
    AlreadyAcked,
    /// Never delivered.
    Unknown,
}

/// What a negative acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NackOutcome {
    /// Will be delivered again after the delay.
    Requeued,
    /// Out of attempts: dead-letter it.
    DeadLetter(DeadLetter),
    /// Not held by this consumer any more.
    Stale,
    /// Never delivered.
    Unknown,
}

/// All the state of one consumer group of one topic.
#[derive(Debug)]
pub struct GroupState {
    config: GroupConfig,
    partitions: Vec<PartitionState>,
    consumers: HashMap<ConsumerId, ConsumerState>,
    rotate: usize,
    redeliveries: u64,
    dead_letters: u64,
    /// Records delivered the maximum number of times before a restart, whose last delivery the
    /// restart ended: the first [`GroupState::tick`] dead-letters them.
    restored_dead: Vec<DeadLetter>,
    /// Dead letters whose append failed, and when to try again.
    dead_retry: Vec<(u64, DeadLetter)>,
}

impl GroupState {
    /// A group over `progress.len()` partitions resuming from durable progress.
    pub fn new(config: GroupConfig, progress: Vec<PartitionProgress>) -> Self {
        let partitions = progress
            .into_iter()
            .map(|p| {
                let mut st = PartitionState {
                    committed: p.committed,
                    next: p.committed,
                    delivered_max: p.committed,
                    ..PartitionState::default()
                };
                for o in p.acked {
                    st.mark_done(o);
                    st.delivered_max = st.delivered_max.max(o + 1);
                }
                for (o, attempts) in p.attempts {
                    if !st.is_done(o) {
                        st.attempts.insert(o, attempts);
                    }
                }
                st.restored_mark = p.mark;
                st.mark = p.mark;
                st.mark_durable = p.mark;
                st
            })
            .collect::<Vec<PartitionState>>();
        let mut restored_dead = Vec::new();
        let mut partitions = partitions;
        for (i, p) in partitions.iter_mut().enumerate() {
            for (&offset, &attempts) in &p.attempts {
                if attempts >= config.max_attempts {
                    p.dead_pending.insert(offset);
                    restored_dead.push(DeadLetter {
                        partition: u32::try_from(i).unwrap_or(u32::MAX),
                        offset,
                        attempts,
                        reason: "delivered the maximum number of times before a restart".into(),
                    });
                }
            }
        }
        restored_dead.sort_by_key(|d| (d.partition, d.offset));
        Self {
            config,
            dead_letters: restored_dead.len() as u64,
            partitions,
            consumers: HashMap::new(),
            rotate: 0,
            redeliveries: 0,
            restored_dead,
            dead_retry: Vec::new(),
        }
    }

    /// The group's configuration.
    pub fn config(&self) -> GroupConfig {
        self.config
    }

    /// Partition count.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Durable progress of every partition.
    pub fn progress(&self) -> Vec<PartitionProgress> {
        self.partitions
            .iter()
            .map(|p| PartitionProgress {
                committed: p.committed,
                acked: p.acked.iter().copied().collect(),
                attempts: p
                    .attempts
                    .iter()
                    .filter(|(o, _)| !p.is_done(**o))
                    .map(|(o, a)| (*o, *a))
                    .collect(),
                mark: p.mark_durable,
            })
            .collect()
    }

    /// Every offset below the partition's committed offset is done.
    pub fn committed(&self, partition: u32) -> u64 {
        self.part(partition).map_or(0, |p| p.committed)
    }

    /// Records not yet done below `end_offset` in a partition.
    pub fn lag(&self, partition: u32, end_offset: u64) -> u64 {
        self.part(partition).map_or(0, |p| {
            end_offset
                .saturating_sub(p.committed)
                .saturating_sub(p.acked.range(..end_offset).count() as u64)
        })
    }

    /// Deliveries out with consumers.
    pub fn in_flight(&self) -> usize {
        self.partitions.iter().map(|p| p.leases.len()).sum()
    }

    /// Deliveries after the first, ever.
    pub fn redeliveries(&self) -> u64 {
        self.redeliveries
    }

    /// Records sent to the dead-letter topic, ever.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters
    }

    /// Consumers currently known.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// The owner of a partition (ordered mode).
    pub fn owner(&self, partition: u32) -> Option<ConsumerId> {
        self.part(partition).and_then(|p| p.owner)
    }

    fn part(&self, partition: u32) -> Option<&PartitionState> {
        self.partitions.get(usize::try_from(partition).ok()?)
    }

    fn part_mut(&mut self, partition: u32) -> Option<&mut PartitionState> {
        self.partitions.get_mut(usize::try_from(partition).ok()?)
    }

    /// Retention deleted everything below `start`: nothing below it can be delivered.
    pub fn advance_start(&mut self, partition: u32, start: u64) {
        if let Some(p) = self.part_mut(partition)
            && start > p.committed
        {
            p.committed = start;
            p.acked = p.acked.split_off(&start);
            p.retry = p.retry.split_off(&start);
            p.attempts.retain(|o, _| *o >= start);
            p.next = p.next.max(start);
            p.delivered_max = p.delivered_max.max(start);
            while p.acked.remove(&p.committed) {
                p.committed += 1;
            }
        }
    }

    /// Takes in durable progress written by another broker (a follower keeps its copy of the
    /// leader's progress this way): its done offsets are done here (their leases end), its
    /// counts and mark count.
    pub fn absorb(&mut self, progress: &[PartitionProgress]) {
        for (i, theirs) in progress.iter().enumerate().take(self.partitions.len()) {
            let partition = u32::try_from(i).unwrap_or(u32::MAX);
            let done: Vec<u64> = self.partitions[i]
                .leases
                .keys()
                .copied()
                .filter(|o| theirs.is_done(*o))
                .collect();
            for o in done {
                self.release_lease(partition, o);
            }
            let p = &mut self.partitions[i];
            if theirs.committed > p.committed {
                let c = theirs.committed;
                p.committed = c;
                p.acked = p.acked.split_off(&c);
                p.retry = p.retry.split_off(&c);
                p.dead_pending = p.dead_pending.split_off(&c);
                p.attempts.retain(|o, _| *o >= c);
                p.delivered_max = p.delivered_max.max(c);
            }
            for &o in &theirs.acked {
                p.mark_done(o);
            }
            for &(o, count) in &theirs.attempts {
                if !p.is_done(o) {
                    let a = p.attempts.entry(o).or_insert(0);
                    *a = (*a).max(count);
                }
            }
            p.restored_mark = p.restored_mark.max(theirs.mark);
            p.mark = p.mark.max(theirs.mark);
            p.mark_durable = p.mark_durable.max(theirs.mark);
            while p.acked.remove(&p.committed) {
                p.committed += 1;
            }
            p.next = p.next.max(p.committed);
        }
    }

    /// Records that `consumer` is alive.
    pub fn touch(&mut self, consumer: ConsumerId, now_ms: u64) {
        self.consumers.entry(consumer).or_default().last_seen_ms = now_ms;
    }

    /// Hands `consumer` up to `max` deliveries from partitions whose readable end offsets are
    /// `ends` (records at or above these are not yet readable).
    pub fn poll(
        &mut self,
        consumer: ConsumerId,
        now_ms: u64,
        max: usize,
        ends: &[u64],
    ) -> Vec<Grant> {
        self.touch(consumer, now_ms);
        let in_flight = self.consumers.get(&consumer).map_or(0, |c| c.in_flight);
        let budget = max.min(self.config.prefetch.saturating_sub(in_flight) as usize);
        if budget == 0 || self.partitions.is_empty() {
            return Vec::new();
        }
        let grants = match self.config.mode {
            FetchMode::Shared => self.poll_shared(now_ms, budget, ends),
            FetchMode::Ordered => {
                self.rebalance(consumer, now_ms);
                self.poll_ordered(consumer, now_ms, budget, ends)
            }
        };
        for g in &grants {
            self.lease(consumer, g, now_ms);
        }
        self.rotate = self.rotate.wrapping_add(1);
        grants
    }

    fn lease(&mut self, consumer: ConsumerId, g: &Grant, now_ms: u64) {
        let deadline_ms = now_ms.saturating_add(self.config.lease_ms);
        if let Some(p) = self.part_mut(g.partition) {
            p.leases.insert(
                g.offset,
                Lease {
                    consumer,
                    deadline_ms,
                },
            );
            p.delivered_max = p.delivered_max.max(g.offset + 1);
        }
        if let Some(c) = self.consumers.get_mut(&consumer) {
            c.in_flight += 1;
        }
        if g.attempt > 1 {
            self.redeliveries += 1;
        }
    }

    fn poll_shared(&mut self, now_ms: u64, budget: usize, ends: &[u64]) -> Vec<Grant> {
        let n = self.partitions.len();
        let mut grants = Vec::with_capacity(budget);
        // Redeliveries whose delay has passed come first, oldest offset first.
        for k in 0..n {
            let i = (self.rotate + k) % n;
            let Some(p) = self.partitions.get_mut(i) else {
                continue;
            };
            let ready: Vec<u64> = p
                .retry
                .iter()
                .filter(|(_, at)| **at <= now_ms)
                .map(|(o, _)| *o)
                .take(budget - grants.len())
                .collect();
            for o in ready {
                p.retry.remove(&o);
                let attempt = p.bump(o);
                grants.push(Grant {
                    partition: i as u32,
                    offset: o,
                    attempt,
                });
            }
            if grants.len() >= budget {
                return grants;
            }
        }
        // Then new records, one partition at a time in turn so that none starves.
        let mut progressed = true;
        while grants.len() < budget && progressed {
            progressed = false;
            for k in 0..n {
                if grants.len() >= budget {
                    break;
                }
                let i = (self.rotate + k) % n;
                let end = ends.get(i).copied().unwrap_or(0);
                let Some(p) = self.partitions.get_mut(i) else {
                    continue;
                };
                while p.next < end && (p.is_done(p.next) || p.dead_pending.contains(&p.next)) {
                    p.next += 1;
                }
                if p.next < end {
                    let o = p.next;
                    p.next += 1;
                    let attempt = p.bump(o);
                    grants.push(Grant {
                        partition: i as u32,
                        offset: o,
                        attempt,
                    });
                    progressed = true;
                }
            }
        }
        grants
    }

    fn active_consumers(&self, now_ms: u64) -> usize {
        self.consumers
            .values()
            .filter(|c| now_ms.saturating_sub(c.last_seen_ms) <= self.config.lease_ms)
            .count()
            .max(1)
    }

    fn owned_by(&self, consumer: ConsumerId) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.owner == Some(consumer))
            .count()
    }

    /// Ordered mode: claim or give up partitions so that every live consumer gets a fair share.
    fn rebalance(&mut self, consumer: ConsumerId, now_ms: u64) {
        let n = self.partitions.len();
        let members = self.active_consumers(now_ms);
        let floor = n / members;
        let ceil = n.div_ceil(members);
        let owned = self.owned_by(consumer);
        let starving = self.consumers.iter().any(|(id, c)| {
            *id != consumer
                && now_ms.saturating_sub(c.last_seen_ms) <= self.config.lease_ms
                && self.owned_by(*id) < floor
        });
        if owned > ceil || (starving && owned > floor) {
            let target = if owned > ceil { ceil } else { floor };
            let mut to_release = owned - target;
            for p in &mut self.partitions {
                if to_release == 0 {
                    break;
                }
                if p.owner == Some(consumer) && p.leases.is_empty() {
                    p.owner = None;
                    to_release -= 1;
                }
            }
        } else if owned < floor || (owned < ceil && !starving) {
            let limit = if owned < floor && starving {
                floor
            } else {
                ceil
            };
            let mut to_claim = limit - owned;
            for p in &mut self.partitions {
                if to_claim == 0 {
                    break;
                }
                if p.owner.is_none() {
                    p.owner = Some(consumer);
                    to_claim -= 1;
                }
            }
        }
    }

    fn poll_ordered(
        &mut self,
        consumer: ConsumerId,
        now_ms: u64,
        budget: usize,
        ends: &[u64],
    ) -> Vec<Grant> {
        let n = self.partitions.len();
        let mut grants = Vec::with_capacity(budget);
        for k in 0..n {
            let i = (self.rotate + k) % n;
            let end = ends.get(i).copied().unwrap_or(0);
            let Some(p) = self.partitions.get_mut(i) else {
                continue;
            };
            if p.owner != Some(consumer) || p.paused_until_ms > now_ms {
                continue;
            }
            while grants.len() < budget && p.next < end {
                let o = p.next;
                p.next += 1;
                if p.is_done(o) || p.dead_pending.contains(&o) || p.leases.contains_key(&o) {
                    continue;
                }
                let attempt = p.bump(o);
                grants.push(Grant {
                    partition: i as u32,
                    offset: o,
                    attempt,
                });
            }
        }
        grants
    }

    fn release_lease(&mut self, partition: u32, offset: u64) -> Option<Lease> {
        let lease = self.part_mut(partition)?.leases.remove(&offset)?;
        if let Some(c) = self.consumers.get_mut(&lease.consumer) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Some(lease)
    }

    /// A delivery failed (its lease was already released): retry it or dead-letter it.
    fn fail(
        &mut self,
        partition: u32,
        offset: u64,
        now_ms: u64,
        delay_ms: u64,
        reason: &str,
    ) -> Option<DeadLetter> {
        let mode = self.config.mode;
        let max_attempts = self.config.max_attempts;
        let p = self.part_mut(partition)?;
        let attempts = p.attempts_of(offset);
        if attempts >= max_attempts {
            p.dead_pending.insert(offset);
            self.dead_letters += 1;
            if mode == FetchMode::Ordered {
                // A failure like any other (invariant 4): what was delivered after it comes
                // back at once, uncharged, for the consumer may have set it aside waiting for
                // this record's retry. The cursor steps over the dead-lettered record.
                self.rewind(partition, offset, now_ms);
            }
            return Some(DeadLetter {
                partition,
                offset,
                attempts,
                reason: reason.to_string(),
            });
        }
        let ready = now_ms.saturating_add(delay_ms);
        match mode {
            FetchMode::Shared => {
                p.retry.insert(offset, ready);
            }
            FetchMode::Ordered => self.rewind(partition, offset, ready),
        }
        None
    }

    /// Ordered mode: take back every delivery after `offset` and resume from it at `ready`.
    fn rewind(&mut self, partition: u32, offset: u64, ready_ms: u64) {
        let later: Vec<u64> = match self.part(partition) {
            Some(p) => p.leases.range(offset + 1..).map(|(o, _)| *o).collect(),
            None => return,
        };
        for o in later {
            self.release_lease(partition, o);
            if let Some(p) = self.part_mut(partition) {
                // Not this record's failure: the delivery does not count.
                if let Some(a) = p.attempts.get_mut(&o) {
                    *a = a.saturating_sub(1);
                }
            }
        }
        if let Some(p) = self.part_mut(partition) {
            p.next = p.next.min(offset);
            p.paused_until_ms = p.paused_until_ms.max(ready_ms);
        }
    }

    /// Acknowledges a delivery. Any consumer may acknowledge a delivered record: the work was
    /// done, even if its lease had expired and it went to someone else.
    pub fn ack(
        &mut self,
        consumer: ConsumerId,
        now_ms: u64,
        partition: u32,
        offset: u64,
    ) -> AckOutcome {
        self.touch(consumer, now_ms);
        let Some(p) = self.part(partition) else {
            return AckOutcome::Unknown;
        };
        if p.is_done(offset) {
            return AckOutcome::AlreadyAcked;
        }
        if offset >= p.delivered_max {
            return AckOutcome::Unknown;
        }
        self.release_lease(partition, offset);
        if let Some(p) = self.part_mut(partition) {
            p.mark_done(offset);
        }
        AckOutcome::Acked
    }

    /// Hands a delivery back: retried after `delay_ms`, or dead-lettered when out of attempts.
    pub fn nack(
        &mut self,
        consumer: ConsumerId,
        now_ms: u64,
        partition: u32,
        offset: u64,
        delay_ms: u64,
        reason: &str,
    ) -> NackOutcome {
        self.touch(consumer, now_ms);
        let Some(p) = self.part(partition) else {
            return NackOutcome::Unknown;
        };
        match p.leases.get(&offset) {
            Some(l) if l.consumer == consumer => {}
            _ if offset >= p.delivered_max => return NackOutcome::Unknown,
            _ => return NackOutcome::Stale,
        }
        self.release_lease(partition, offset);
        match self.fail(partition, offset, now_ms, delay_ms, reason) {
            Some(dl) => NackOutcome::DeadLetter(dl),
            None => NackOutcome::Requeued,
        }
    }

    /// Takes back a grant that never reached its consumer (it did not fit in the response):
    /// not an attempt, and deliverable again at once, in order.
    pub fn take_back(&mut self, partition: u32, offset: u64) {
        if self.release_lease(partition, offset).is_none() {
            return;
        }
        let mode = self.config.mode;
        if let Some(p) = self.part_mut(partition) {
            if let Some(a) = p.attempts.get_mut(&offset) {
                *a = a.saturating_sub(1);
            }
            if mode == FetchMode::Shared {
                p.retry.insert(offset, 0);
            }
        }
        if mode == FetchMode::Ordered {
            self.rewind(partition, offset, 0);
        }
    }

    /// Expires leases past their deadline and forgets consumers that went quiet. Returns the
    /// records that ran out of attempts.
    pub fn tick(&mut self, now_ms: u64) -> Vec<DeadLetter> {
        let mut dead = std::mem::take(&mut self.restored_dead);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.dead_retry)
            .into_iter()
            .partition(|(at, _)| *at <= now_ms);
        self.dead_retry = later;
        dead.extend(due.into_iter().map(|(_, dl)| dl));
        for i in 0..self.partitions.len() {
            let partition = i as u32;
            let expired: Vec<u64> = self.partitions[i]
                .leases
                .iter()
                .filter(|(_, l)| l.deadline_ms <= now_ms)
                .map(|(o, _)| *o)
                .collect();
            for o in expired {
                // A rewind for an earlier offset may have taken this one back already.
                if self.release_lease(partition, o).is_some() {
                    dead.extend(self.fail(partition, o, now_ms, 0, "lease expired"));
                }
            }
        }
        let lease_ms = self.config.lease_ms;
        let quiet: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.in_flight == 0 && now_ms.saturating_sub(c.last_seen_ms) > lease_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in quiet {
            self.consumers.remove(&id);
            for p in &mut self.partitions {
                if p.owner == Some(id) {
                    p.owner = None;
                }
            }
        }
        dead
    }

    /// A consumer disconnected: its deliveries fail and its partitions are free.
    pub fn leave(&mut self, consumer: ConsumerId, now_ms: u64) -> Vec<DeadLetter> {
        let mut dead = Vec::new();
        for i in 0..self.partitions.len() {
            let partition = i as u32;
            let held: Vec<u64> = self.partitions[i]
                .leases
                .iter()
                .filter(|(_, l)| l.consumer == consumer)
                .map(|(o, _)| *o)
                .collect();
            for o in held {
                if self.release_lease(partition, o).is_some() {
                    dead.extend(self.fail(partition, o, now_ms, 0, "consumer disconnected"));
                }
            }
            if self.partitions[i].owner == Some(consumer) {
                self.partitions[i].owner = None;
            }
        }
        self.consumers.remove(&consumer);
        dead
    }

    /// The dead letter is safely in the dead-letter topic: the record is done. Returns true if
    /// that is news to persist.
    pub fn dead_lettered(&mut self, partition: u32, offset: u64) -> bool {
        match self.part_mut(partition) {
            Some(p) if !p.is_done(offset) => {
                p.mark_done(offset);
                true
            }
            _ => false,
        }
    }

    /// Appending the dead letter failed: the record stays out of delivery (it has had all its
    /// attempts) and [`GroupState::tick`] hands it back for another try after `retry_ms`.
    pub fn dead_letter_failed(&mut self, dl: DeadLetter, now_ms: u64, retry_ms: u64) {
        if self
            .part(dl.partition)
            .is_some_and(|p| p.dead_pending.contains(&dl.offset))
        {
            self.dead_retry.push((now_ms.saturating_add(retry_ms), dl));
        }
    }

    /// What must be on disk before `grants` go out: per partition, a delivery-count mark that
    /// covers its first deliveries (asked for [`COUNT_AHEAD`] further than needed, so the next
    /// fetches wait for nothing), and the count of every other delivery.
    pub fn counts_to_write(&mut self, grants: &[Grant]) -> CountsToWrite {
        let exact = self.config.max_attempts <= 1;
        let mut out = CountsToWrite::default();
        for g in grants {
            if exact || g.attempt > 1 {
                out.deliveries.push((g.partition, g.offset, g.attempt));
                continue;
            }
            let Some(p) = self.part_mut(g.partition) else {
                continue;
            };
            if g.offset < p.mark_durable {
                continue;
            }
            if g.offset >= p.mark {
                p.mark = g.offset + 1 + COUNT_AHEAD;
            }
            match out.marks.iter_mut().find(|(part, _)| *part == g.partition) {
                Some(m) => m.1 = m.1.max(p.mark),
                None => out.marks.push((g.partition, p.mark)),
            }
        }
        out
    }

    /// The counts asked for by [`GroupState::counts_to_write`] are on disk (`Ok`) or could not be
    /// written (the grants are taken back, and the marks asked for are given up).
    pub fn counts_written(&mut self, counts: &CountsToWrite, written: bool) {
        for &(partition, mark) in &counts.marks {
            if let Some(p) = self.part_mut(partition) {
                if written {
                    p.mark_durable = p.mark_durable.max(mark);
                } else {
                    p.mark = p.mark_durable;
                }
            }
        }
    }

    /// A granted delivery is about to reach `consumer` (its count was written first): true if
    /// the consumer still holds its lease, which then runs from now.
    pub fn hand_out(
        &mut self,
        consumer: ConsumerId,
        now_ms: u64,
        partition: u32,
        offset: u64,
    ) -> bool {
        let lease_ms = self.config.lease_ms;
        match self
            .part_mut(partition)
            .and_then(|p| p.leases.get_mut(&offset))
        {
            Some(l) if l.consumer == consumer => {
                l.deadline_ms = now_ms.saturating_add(lease_ms);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
