//! [`MemoryQueue`]: the [`super::PurchaseQueue`] contract in memory, for tests and local runs.
//! Not durable. Ordered lane: a partition belongs to the consumer holding unacked jobs of it
//! and is free again once they are all acked; a nack rewinds the partition to the nacked job.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::contract::{Backlog, Delivery, DeliveryTag, Enqueued, JobConsumer, Lane, PurchaseQueue};
use super::error::QueueError;
use crate::domain::{Position, PurchaseId, PurchaseJob, QueuedJob};

/// Settings for a [`MemoryQueue`].
#[derive(Debug, Clone)]
pub struct MemoryQueueConfig {
    /// Partitions of the purchases lane.
    pub partitions: u32,
    /// Deliveries before a nacked job is dead-lettered.
    pub max_attempts: u32,
    /// The most jobs held in all (a full queue refuses with [`QueueError::Full`]).
    pub capacity: usize,
}

impl Default for MemoryQueueConfig {
    fn default() -> Self {
        Self {
            partitions: 4,
            max_attempts: 5,
            capacity: 1_000_000,
        }
    }
}

/// Counts for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Jobs in the purchases lane not acked yet.
    pub purchases_lag: u64,
    /// Jobs in the dead-letter lane not acked yet.
    pub dead_letters_lag: u64,
    /// Jobs ever dead-lettered.
    pub dead_lettered: u64,
    /// Enqueue calls ever started (including refused and still running ones).
    pub enqueue_calls: u64,
}

/// An in-memory [`PurchaseQueue`] (not durable across restarts: for tests and local runs).
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: MemoryQueueConfig,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    is_available: bool,
    enqueue_delay: Duration,
    purchases: Vec<Partition>,
    dead_letters: Vec<Partition>,
    dedup: HashMap<PurchaseId, Position>,
    jobs: usize,
    dead_lettered: u64,
    enqueue_calls: u64,
    next_consumer: u64,
}

#[derive(Debug, Default)]
struct Partition {
    log: Vec<Entry>,
    committed: u64,
    next: u64,
    acked: HashSet<u64>,
    inflight: BTreeSet<u64>,
    owner: Option<u64>,
    attempts: HashMap<u64, u32>,
    not_before: Option<Instant>,
}

/// What one nack call failed in one partition.
#[derive(Debug, Default)]
struct Failed {
    /// The offsets nacked.
    nacked: BTreeSet<u64>,
    /// Whether any of them is delivered again (rather than dead-lettered).
    is_retried: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    job: QueuedJob,
    reason: Option<String>,
}

impl Partition {
    fn lag(&self) -> u64 {
        let len = self.log.len() as u64;
        len.saturating_sub(self.committed)
            .saturating_sub(self.acked.len() as u64)
    }

    /// Jobs acknowledged.
    fn decided(&self) -> u64 {
        self.committed + self.acked.len() as u64
    }

    fn ack(&mut self, offset: u64) {
        self.inflight.remove(&offset);
        if offset >= self.committed {
            self.acked.insert(offset);
        }
        while self.acked.remove(&self.committed) {
            self.committed += 1;
        }
        if self.inflight.is_empty() {
            self.owner = None;
        }
    }

    /// A nack of `nacked` (retried or dead-lettered): every unacked in-flight job goes back, to
    /// be delivered again in order. Only the nacked ones are charged the attempt; the ones
    /// taken back behind them did not fail.
    fn take_back(&mut self, nacked: &BTreeSet<u64>) {
        for offset in &self.inflight {
            if !nacked.contains(offset)
                && let Some(a) = self.attempts.get_mut(offset)
            {
                *a = a.saturating_sub(1);
            }
        }
        self.rewind();
    }

    /// Gives every unacked in-flight job back, to be delivered again in order.
    fn rewind(&mut self) {
        if let Some(first) = self.inflight.first() {
            self.next = self.next.min(*first);
        }
        self.inflight.clear();
        self.owner = None;
    }
}

impl State {
    fn lane(&mut self, lane: Lane) -> &mut Vec<Partition> {
        match lane {
            Lane::Purchases => &mut self.purchases,
            Lane::DeadLetters => &mut self.dead_letters,
        }
    }
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(config: MemoryQueueConfig) -> Self {
        let partitions = config.partitions.max(1);
        let state = State {
            is_available: true,
            enqueue_delay: Duration::ZERO,
            purchases: (0..partitions).map(|_| Partition::default()).collect(),
            dead_letters: vec![Partition::default()],
            dedup: HashMap::new(),
            jobs: 0,
            dead_lettered: 0,
            enqueue_calls: 0,
            next_consumer: 0,
        };
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                changed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug in this file; the state stays usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes enqueue, readiness, joining and fetching fail (a broker that is down), or work
    /// again.
    pub fn set_available(&self, is_available: bool) {
        self.state().is_available = is_available;
    }

    /// Makes every enqueue take this long first (a slow broker).
    pub fn set_enqueue_delay(&self, delay: Duration) {
        self.state().enqueue_delay = delay;
    }

    /// Current counts.
    pub fn stats(&self) -> QueueStats {
        let st = self.state();
        QueueStats {
            purchases_lag: st.purchases.iter().map(Partition::lag).sum(),
            dead_letters_lag: st.dead_letters.iter().map(Partition::lag).sum(),
            dead_lettered: st.dead_lettered,
            enqueue_calls: st.enqueue_calls,
        }
    }

    fn release(&self, lane: Lane, consumer: u64) {
        let mut st = self.state();
        for p in st.lane(lane).iter_mut() {
            if p.owner == Some(consumer) {
                p.rewind();
            }
        }
        drop(st);
        self.inner.changed.notify_waiters();
    }
}

impl PurchaseQueue for MemoryQueue {
    type Consumer = MemoryConsumer;

    async fn enqueue(&self, job: &PurchaseJob) -> Result<Enqueued, QueueError> {
        let delay = {
            let mut st = self.state();
            st.enqueue_calls += 1;
            if !st.is_available {
                return Err(QueueError::Unavailable {
                    reason: "in-memory queue switched off".into(),
                });
            }
            st.enqueue_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = self.state();
        if let Some(position) = st.dedup.get(&job.purchase_id) {
            return Ok(Enqueued {
                position: *position,
                is_duplicate: true,
            });
        }
        if st.jobs >= self.inner.config.capacity {
            return Err(QueueError::Full {
                capacity: self.inner.config.capacity,
            });
        }
        let partitions = u32::try_from(st.purchases.len()).unwrap_or(1);
        let p = partition_of(&job.event_id.to_string(), partitions) as usize;
        let Some(part) = st.purchases.get_mut(p) else {
            return Err(QueueError::Unavailable {
                reason: format!("partition {p} missing"),
            });
        };
        let position = Position(part.log.len() as u64);
        part.log.push(Entry {
            job: QueuedJob {
                job: job.clone(),
                position,
            },
            reason: None,
        });
        st.dedup.insert(job.purchase_id, position);
        st.jobs += 1;
        drop(st);
        self.inner.changed.notify_waiters();
        Ok(Enqueued {
            position,
            is_duplicate: false,
        })
    }

    async fn consumer(&self, lane: Lane, _name: &str) -> Result<MemoryConsumer, QueueError> {
        let mut st = self.state();
        if !st.is_available {
            return Err(QueueError::Unavailable {
                reason: "in-memory queue switched off".into(),
            });
        }
        st.next_consumer += 1;
        Ok(MemoryConsumer {
            queue: self.clone(),
            lane,
            id: st.next_consumer,
            rotate: 0,
        })
    }

    async fn check_ready(&self) -> Result<(), QueueError> {
        if self.state().is_available {
            Ok(())
        } else {
            Err(QueueError::Unavailable {
                reason: "in-memory queue switched off".into(),
            })
        }
    }

    async fn backlog(&self) -> Option<Backlog> {
        let st = self.state();
        if !st.is_available {
            return None;
        }
        Some(Backlog {
            queued: st.purchases.iter().map(Partition::lag).sum(),
            busy_partitions: st.purchases.iter().filter(|p| p.lag() > 0).count(),
            decided: st.purchases.iter().map(Partition::decided).sum(),
        })
    }
}

/// A consumer of a [`MemoryQueue`] lane.
#[derive(Debug)]
pub struct MemoryConsumer {
    queue: MemoryQueue,
    lane: Lane,
    id: u64,
    rotate: usize,
}

impl MemoryConsumer {
    /// Takes what is deliverable now; otherwise says when to look again.
    fn take(&mut self, max_jobs: usize) -> (Vec<Delivery>, Option<Instant>) {
        let now = Instant::now();
        let (lane, id) = (self.lane, self.id);
        let mut st = self.queue.state();
        let parts = st.lane(lane);
        let n = parts.len();
        let mut out = Vec::new();
        let mut wake: Option<Instant> = None;
        self.rotate = self.rotate.wrapping_add(1);
        for k in 0..n {
            let pi = (self.rotate + k) % n;
            let Some(p) = parts.get_mut(pi) else { continue };
            if p.owner.is_some_and(|o| o != id) {
                continue;
            }
            if let Some(t) = p.not_before {
                if t > now {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                    continue;
                }
                p.not_before = None;
            }
            while out.len() < max_jobs {
                let offset = p.next;
                let Some(entry) = p.log.get(offset as usize) else {
                    break;
                };
                p.next += 1;
                if offset < p.committed || p.acked.contains(&offset) {
                    continue;
                }
                let attempt = p.attempts.entry(offset).or_insert(0);
                *attempt += 1;
                out.push(Delivery {
                    tag: DeliveryTag {
                        partition: u32::try_from(pi).unwrap_or(u32::MAX),
                        offset,
                    },
                    job: entry.job.clone(),
                    attempt: *attempt,
                    dead_letter_reason: entry.reason.clone(),
                });
                p.inflight.insert(offset);
                p.owner = Some(id);
            }
        }
        (out, wake)
    }
}

impl JobConsumer for MemoryConsumer {
    async fn fetch(
        &mut self,
        max_jobs: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        if !self.queue.state().is_available {
            return Err(QueueError::Unavailable {
                reason: "in-memory queue switched off".into(),
            });
        }
        loop {
            let inner = Arc::clone(&self.queue.inner);
            let notified = inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (got, wake) = self.take(max_jobs.max(1));
            if !got.is_empty() {
                return Ok(got);
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), QueueError> {
        let mut st = self.queue.state();
        let parts = st.lane(self.lane);
        for tag in tags {
            // Any consumer may acknowledge a job it was handed, even one since taken back or
            // handed to another: the work was done (as the broker does).
            if let Some(p) = parts.get_mut(tag.partition as usize)
                && p.attempts.contains_key(&tag.offset)
            {
                p.ack(tag.offset);
            }
        }
        drop(st);
        self.queue.inner.changed.notify_waiters();
        Ok(())
    }

    async fn nack(&mut self, tags: &[DeliveryTag], delay: Duration) -> Result<(), QueueError> {
        let (lane, id) = (self.lane, self.id);
        let max_attempts = self.queue.inner.config.max_attempts;
        let mut st = self.queue.state();
        let mut dead = Vec::new();
        let mut failed: BTreeMap<u32, Failed> = BTreeMap::new();
        let parts = st.lane(lane);
        for tag in tags {
            let Some(p) = parts.get_mut(tag.partition as usize) else {
                continue;
            };
            if p.owner != Some(id) || !p.inflight.contains(&tag.offset) {
                continue;
            }
            let attempts = p.attempts.get(&tag.offset).copied().unwrap_or(0);
            let failed = failed.entry(tag.partition).or_default();
            failed.nacked.insert(tag.offset);
            if lane == Lane::Purchases && attempts >= max_attempts {
                // Its last attempt: dead-lettered, and done with here like an ack.
                if let Some(entry) = p.log.get(tag.offset as usize) {
                    dead.push(entry.job.clone());
                }
                p.ack(tag.offset);
            } else {
                failed.is_retried = true;
            }
        }
        for (partition, failed) in &failed {
            if let Some(p) = parts.get_mut(*partition as usize) {
                p.take_back(&failed.nacked);
                if failed.is_retried {
                    p.not_before = Some(Instant::now() + delay);
                }
            }
        }
        for job in dead {
            st.dead_lettered += 1;
            if let Some(dlq) = st.dead_letters.first_mut() {
                dlq.log.push(Entry {
                    job,
                    reason: Some(format!("nacked on all {max_attempts} attempts")),
                });
            }
        }
        drop(st);
        self.queue.inner.changed.notify_waiters();
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.queue.release(self.lane, self.id);
    }
}

/// The stable partition of an event: FNV-1a of the key's text (the event id), mod `partitions`.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(h % u64::from(partitions.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventId;

    fn job(event: i64) -> PurchaseJob {
        crate::testing::purchase(EventId(event), "b", 1)
    }

    const NO_WAIT: Duration = Duration::ZERO;

    #[tokio::test]
    async fn stats_count_what_is_queued_once_and_what_is_dead_lettered() {
        let q = MemoryQueue::new(MemoryQueueConfig {
            partitions: 1,
            max_attempts: 1,
            ..Default::default()
        });
        let a = job(1);
        q.enqueue(&a).await.unwrap();
        q.enqueue(&job(1)).await.unwrap();
        assert!(q.enqueue(&a).await.unwrap().is_duplicate);
        assert_eq!(q.stats().purchases_lag, 2);
        let mut c = q.consumer(Lane::Purchases, "c").await.unwrap();
        let got = c.fetch(1, NO_WAIT).await.unwrap();
        c.nack(&[got[0].tag], Duration::ZERO).await.unwrap();
        let stats = q.stats();
        assert_eq!(stats.dead_lettered, 1);
        assert_eq!(stats.dead_letters_lag, 1);
        assert_eq!(stats.purchases_lag, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_waits_for_a_job_and_gives_up_at_the_deadline() {
        let q = MemoryQueue::new(MemoryQueueConfig::default());
        let mut c = q.consumer(Lane::Purchases, "c").await.unwrap();
        assert!(c.fetch(1, Duration::from_secs(1)).await.unwrap().is_empty());
        let q2 = q.clone();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            q2.enqueue(&job(3)).await.unwrap();
        });
        assert_eq!(c.fetch(1, Duration::from_secs(5)).await.unwrap().len(), 1);
        producer.await.unwrap();
    }

    #[tokio::test]
    async fn an_unavailable_or_full_queue_refuses() {
        let q = MemoryQueue::new(MemoryQueueConfig {
            capacity: 1,
            ..Default::default()
        });
        q.set_available(false);
        assert!(matches!(
            q.enqueue(&job(1)).await,
            Err(QueueError::Unavailable { .. })
        ));
        assert!(q.check_ready().await.is_err());
        q.set_available(true);
        q.enqueue(&job(1)).await.unwrap();
        assert!(matches!(
            q.enqueue(&job(1)).await,
            Err(QueueError::Full { .. })
        ));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(i64),
        Fetch(usize, usize),
        AckAll(usize),
        NackFirst(usize),
        Drop(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (1i64..6).prop_map(Op::Enqueue),
            3 => (0usize..3, 1usize..5).prop_map(|(c, n)| Op::Fetch(c, n)),
            2 => (0usize..3).prop_map(Op::AckAll),
            1 => (0usize..3).prop_map(Op::NackFirst),
            1 => (0usize..3).prop_map(Op::Drop),
        ]
    }

    proptest::proptest! {
        /// Ordered lane under any interleaving of consumers, acks, nacks and crashes: a
        /// partition is held by one consumer at a time, delivered strictly in offset order
        /// (nothing unacked is skipped), and every job is eventually acked exactly once.
        #[test]
        fn ordered_lane_keeps_order_and_ownership(ops in proptest::collection::vec(op(), 1..120)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async move {
                let q = MemoryQueue::new(MemoryQueueConfig {
                    partitions: 2,
                    max_attempts: 10_000,
                    ..Default::default()
                });
                let mut consumers = Vec::new();
                for _ in 0..3 {
                    consumers.push(q.consumer(Lane::Purchases, "c").await.unwrap());
                }
                let mut held: Vec<BTreeSet<(u32, u64)>> = vec![BTreeSet::new(); 3];
                let mut acked: HashSet<(u32, u64)> = HashSet::new();
                let mut enqueued: HashSet<(u32, u64)> = HashSet::new();
                for op in ops {
                    match op {
                        Op::Enqueue(event) => {
                            let j = job(event);
                            let e = q.enqueue(&j).await.unwrap();
                            let p = partition_of(&event.to_string(), 2);
                            enqueued.insert((p, e.position.0));
                            let again = q.enqueue(&j).await.unwrap();
                            assert_eq!(again.position, e.position);
                        }
                        Op::Fetch(c, n) => {
                            let got = consumers[c].fetch(n, Duration::ZERO).await.unwrap();
                            let mut last: HashMap<u32, u64> = HashMap::new();
                            for d in &got {
                                let (p, o) = (d.tag.partition, d.tag.offset);
                                for (other, h) in held.iter().enumerate() {
                                    if other != c {
                                        assert!(h.iter().all(|(hp, _)| *hp != p), "partition {p} held by two consumers");
                                    }
                                }
                                let expected = match last.get(&p) {
                                    Some(prev) => (prev + 1..).find(|x| !acked.contains(&(p, *x))).unwrap(),
                                    None => (0..).find(|x| !acked.contains(&(p, *x)) && !held[c].contains(&(p, *x))).unwrap(),
                                };
                                assert_eq!(o, expected, "partition {p} out of order");
                                last.insert(p, o);
                                held[c].insert((p, o));
                            }
                        }
                        Op::AckAll(c) => {
                            let tags: Vec<DeliveryTag> = held[c].iter().map(|(p, o)| DeliveryTag { partition: *p, offset: *o }).collect();
                            consumers[c].ack(&tags).await.unwrap();
                            for t in &tags {
                                assert!(acked.insert((t.partition, t.offset)), "acked twice");
                            }
                            held[c].clear();
                        }
                        Op::NackFirst(c) => {
                            if let Some((p, o)) = held[c].iter().next().copied() {
                                consumers[c].nack(&[DeliveryTag { partition: p, offset: o }], Duration::ZERO).await.unwrap();
                                held[c].retain(|(hp, _)| *hp != p);
                            }
                        }
                        Op::Drop(c) => {
                            consumers[c] = q.consumer(Lane::Purchases, "c").await.unwrap();
                            held[c].clear();
                        }
                    }
                }
                // Drain with a fresh consumer once the others are gone.
                drop(consumers);
                let mut last = q.consumer(Lane::Purchases, "drain").await.unwrap();
                loop {
                    let got = last.fetch(64, Duration::ZERO).await.unwrap();
                    if got.is_empty() { break; }
                    let tags: Vec<_> = got.iter().map(|d| d.tag).collect();
                    last.ack(&tags).await.unwrap();
                    for t in tags {
                        assert!(acked.insert((t.partition, t.offset)), "acked twice");
                    }
                }
                assert_eq!(acked, enqueued);
                assert_eq!(q.stats().purchases_lag, 0);
            });
        }
    }
}
