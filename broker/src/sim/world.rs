//! One simulated run: the real engine on a [`SimDisk`], driven by a seed.
//!
//! Each step the seed picks one thing to happen: a produce, a flush of a partition (its write,
//! its sync), a group journal's write, a fetch, an ack, a nack with a delay, a consumer leaving
//! (its deliveries go back), time passing
//! (leases expire, records are dead-lettered, retention runs), a clean restart or a crash.
//! Requests are futures of the real `Broker`, polled by hand, so a crash can land between any
//! two of these, and a power cut in the middle of one (after a seeded number of disk
//! operations). After every restart the run checks what the broker promised:
//! - every acknowledged record is there, intact, once, at its offset (or was deleted by
//!   retention after every group was done with it);
//! - every acknowledged delivery is still done for its group and is never handed out again;
//! - no record of the shared group is handed out more than `MAX_ATTEMPTS` times, restarts
//!   included, and no delivery carries an attempt number above it;
//! - every record served or stored is one that was produced, byte for byte;
//! - the broker opens: a crash never leaves a state recovery refuses.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::clock::SimClock;
use super::disk::SimDisk;
use super::options::{Failure, Options, Outcome, faults_for};
use crate::config::{BrokerConfig, FsyncPolicy};
use crate::engine::host::{Host, Steps};
use crate::engine::{Broker, DLQ_SUFFIX, EngineError};
use crate::metrics::Metrics;
use crate::planted;
use crate::protocol::{AckStatus, Delivery, FetchMode, FetchRequest, ProduceAck, Record};

const TOPIC: &str = "t";
const GROUPS: [(&str, FetchMode); 2] = [
    ("shared", FetchMode::Shared),
    ("ordered", FetchMode::Ordered),
];
const CONSUMERS: u64 = 3;
const MAX_ATTEMPTS: u32 = 3;
const LEASE_MS: u32 = 1_000;

enum Done {
    Produce(Vec<Bytes>, Result<Vec<ProduceAck>, EngineError>),
    Fetch(u64, &'static str, Result<Vec<Delivery>, EngineError>),
    Ack(
        &'static str,
        Vec<(u32, u64)>,
        Result<Vec<AckStatus>, EngineError>,
    ),
    Other,
}

type InFlight = Pin<Box<dyn Future<Output = Done>>>;

struct World {
    seed: u64,
    opts: Options,
    rng: StdRng,
    disk: SimDisk,
    clock: Arc<SimClock>,
    steps: Arc<Steps>,
    broker: Arc<Broker>,
    config: BrokerConfig,
    next_payload: u64,
    inflight: Vec<InFlight>,
    /// Every payload ever sent.
    sent: HashSet<Bytes>,
    /// Acknowledged records by partition and offset.
    acked: BTreeMap<(u32, u64), Bytes>,
    /// Acknowledged deliveries, per group.
    done: BTreeMap<&'static str, BTreeSet<(u32, u64)>>,
    /// Deliveries a consumer holds: consumer, group, delivery.
    holding: Vec<(u64, &'static str, Delivery)>,
    /// The attempt numbers each record was handed out with, per group, across restarts.
    handed: BTreeMap<(&'static str, u32, u64), Vec<u32>>,
    events: VecDeque<String>,
    trace: std::collections::hash_map::DefaultHasher,
    out: Outcome,
    step: usize,
}

fn poll_once(f: &mut InFlight) -> Poll<Done> {
    let mut cx = Context::from_waker(Waker::noop());
    f.as_mut().poll(&mut cx)
}

fn open_broker(
    disk: &SimDisk,
    clock: &Arc<SimClock>,
    config: &BrokerConfig,
) -> Result<(Arc<Broker>, Arc<Steps>), EngineError> {
    let steps = Arc::new(Steps::default());
    let host = Host::stepped(
        Arc::new(disk.clone()),
        Arc::clone(clock) as Arc<dyn crate::engine::host::Clock>,
        &steps,
    );
    let metrics = Arc::new(Metrics::new(
        &mut prometheus_client::registry::Registry::default(),
    ));
    let broker = Broker::open_on(host, config.clone(), metrics)?;
    Ok((Arc::new(broker), steps))
}

/// Runs the simulation of `seed`.
pub fn run(seed: u64, opts: &Options) -> Result<Outcome, Failure> {
    if opts.planted.is_some() && !planted::ENABLED {
        return Err(Failure {
            seed,
            step: 0,
            message: "this build has no planted bugs: build with --features planted-bugs".into(),
            events: Vec::new(),
            replay: opts.replay_args(seed),
        });
    }
    planted::set(opts.planted);
    let result = run_inner(seed, opts);
    planted::set(None);
    result
}

fn run_inner(seed: u64, opts: &Options) -> Result<Outcome, Failure> {
    let disk = SimDisk::new(seed, faults_for(seed));
    let clock = Arc::new(SimClock::default());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut config = BrokerConfig::new("/data", ([127, 0, 0, 1], 0).into());
    config.fsync = opts.policy;
    config.segment_bytes = rng.random_range(1_024..=8_192);
    config.retention_bytes = if rng.random_bool(0.5) { 16_384 } else { 0 };
    config.dedup_window = Duration::from_secs(60);
    let partitions = rng.random_range(1..=3);
    let fail = |message: String| Failure {
        seed,
        step: 0,
        message,
        events: Vec::new(),
        replay: opts.replay_args(seed),
    };
    // Setting up is not under test: no faults until the topic exists.
    disk.arm(false);
    let (broker, steps) =
        open_broker(&disk, &clock, &config).map_err(|e| fail(format!("open: {e}")))?;
    let created = {
        let mut f: InFlight = Box::pin({
            let b = Arc::clone(&broker);
            async move {
                b.create_topic(TOPIC, partitions, 0, 0)
                    .await
                    .map(|_| ())
                    .err();
                Done::Other
            }
        });
        matches!(poll_once(&mut f), Poll::Ready(_))
    };
    if !created || broker.topic(TOPIC).is_none() {
        return Err(fail("the topic could not be created".into()));
    }
    disk.arm(true);
    let mut w = World {
        seed,
        opts: opts.clone(),
        rng,
        disk,
        clock,
        steps,
        broker,
        config,
        next_payload: 0,
        inflight: Vec::new(),
        sent: HashSet::new(),
        acked: BTreeMap::new(),
        done: BTreeMap::new(),
        holding: Vec::new(),
        handed: BTreeMap::new(),
        events: VecDeque::new(),
        trace: std::collections::hash_map::DefaultHasher::new(),
        out: Outcome::default(),
        step: 0,
    };
    for step in 0..opts.steps {
        w.step = step;
        w.one_step().map_err(|m| w.failure(m))?;
    }
    w.restart(true).map_err(|m| w.failure(m))?;
    w.out.dead_letters = w
        .broker
        .topic(&format!("{TOPIC}{DLQ_SUFFIX}"))
        .map_or(0, |t| t.partitions().iter().map(|p| p.readable_end()).sum());
    w.out.faults = w.disk.counts();
    w.out.trace = w.trace.finish();
    w.out.events = w.events.iter().cloned().collect();
    Ok(w.out)
}

impl World {
    fn failure(&self, message: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            message,
            events: self.events.iter().cloned().collect(),
            replay: self.opts.replay_args(self.seed),
        }
    }

    fn event(&mut self, e: String) {
        e.hash(&mut self.trace);
        if self.events.len() >= self.opts.events {
            self.events.pop_front();
        }
        self.events.push_back(format!("[{}] {e}", self.step));
    }

    fn one_step(&mut self) -> Result<(), String> {
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..300 => self.produce(),
            300..460 => self.flush(),
            460..560 => self.journal(),
            560..700 => self.fetch(),
            700..800 => self.ack(),
            800..840 => self.nack(),
            840..850 => self.disconnect(),
            850..950 => self.pass_time(),
            950..975 => self.restart(false)?,
            975..990 => {
                // The power goes in the middle of what comes next.
                let ops = self.rng.random_range(0..12);
                self.event(format!("power cut after {ops} operations"));
                self.disk.power_cut_after(ops);
            }
            _ => self.restart(true)?,
        }
        self.poll_all()?;
        if self.disk.power_is_off() {
            self.restart(true)?;
        }
        Ok(())
    }

    fn spawn(&mut self, f: InFlight) -> Result<(), String> {
        self.inflight.push(f);
        self.poll_all()
    }

    fn poll_all(&mut self) -> Result<(), String> {
        let mut i = 0;
        while i < self.inflight.len() {
            match poll_once(&mut self.inflight[i]) {
                Poll::Ready(done) => {
                    drop(self.inflight.swap_remove(i));
                    self.settle(done)?;
                }
                Poll::Pending => i += 1,
            }
        }
        Ok(())
    }

    fn settle(&mut self, done: Done) -> Result<(), String> {
        match done {
            Done::Produce(payloads, Ok(acks)) => {
                for (payload, ack) in payloads.into_iter().zip(acks) {
                    self.event(format!("acked produce p{}@{}", ack.partition, ack.offset));
                    if let Some(was) = self
                        .acked
                        .insert((ack.partition, ack.offset), payload.clone())
                        && was != payload
                    {
                        return Err(format!(
                            "offset {}@{} acknowledged twice, for two records",
                            ack.partition, ack.offset
                        ));
                    }
                    self.out.acked_records += 1;
                }
            }
            Done::Produce(_, Err(e)) => {
                if matches!(
                    e,
                    EngineError::Storage(crate::storage::StorageError::Fenced)
                ) {
                    self.out.refused += 1;
                }
                self.event(format!("produce failed: {e}"));
            }
            Done::Ack(group, ids, Ok(statuses)) => {
                for (id, s) in ids.into_iter().zip(statuses) {
                    if s == AckStatus::Acked {
                        self.event(format!("acked delivery {group} p{}@{}", id.0, id.1));
                        self.done.entry(group).or_default().insert(id);
                        self.out.acked_deliveries += 1;
                    }
                }
            }
            Done::Ack(group, _, Err(e)) => self.event(format!("ack {group} failed: {e}")),
            Done::Fetch(consumer, group, Ok(deliveries)) => {
                self.delivered(consumer, group, deliveries)?;
            }
            Done::Fetch(_, group, Err(e)) => self.event(format!("fetch {group} failed: {e}")),
            Done::Other => {}
        }
        Ok(())
    }

    fn produce(&mut self) {
        let n = self.rng.random_range(1..=4);
        let mut records = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        for _ in 0..n {
            self.next_payload += 1;
            let size = self.rng.random_range(8..600);
            let fill = char::from(b'a' + (self.next_payload % 26) as u8);
            let payload = Bytes::from(format!(
                "record-{}-{}",
                self.next_payload,
                fill.to_string().repeat(size)
            ));
            self.sent.insert(payload.clone());
            payloads.push(payload.clone());
            let mut r = Record::new(payload);
            if self.rng.random_bool(0.5) {
                r.key = Some(Bytes::from(format!("k{}", self.rng.random_range(0..8))));
            }
            if self.rng.random_bool(0.3) {
                r = r.with_dedup_id(format!("id-{}", self.next_payload));
            }
            records.push(r);
        }
        self.event(format!("produce {n}"));
        let b = Arc::clone(&self.broker);
        let produced = b.produce(TOPIC, records);
        let _ = self.spawn(Box::pin(
            async move { Done::Produce(payloads, produced.await) },
        ));
    }

    /// Runs some of the queued flushes (writes, and syncs where the policy says).
    fn flush(&mut self) {
        let queued = self.steps.take_flushes();
        let now = self.clock.now();
        let mut later = Vec::new();
        let mut ran = 0;
        for s in queued {
            if (s.urgent || s.due <= now) && self.rng.random_bool(0.8) {
                s.part.flush();
                ran += 1;
            } else {
                later.push(s);
            }
        }
        self.steps.put_back(later);
        self.event(format!("flushed {ran}"));
    }

    fn journal(&mut self) {
        let journals = self.steps.journals();
        if journals.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..journals.len());
        journals[i].step();
        self.event(format!("journal {i} step"));
    }

    fn fetch(&mut self) {
        let consumer = self.rng.random_range(1..=CONSUMERS);
        let (group, mode) = GROUPS[self.rng.random_range(0..GROUPS.len())];
        let req = FetchRequest {
            topic: TOPIC.into(),
            group: group.into(),
            mode,
            max_records: self.rng.random_range(1..=5),
            max_wait_ms: 0,
            lease_ms: LEASE_MS,
            max_attempts: MAX_ATTEMPTS,
            prefetch: 8,
        };
        self.event(format!("fetch {group} by c{consumer}"));
        let b = Arc::clone(&self.broker);
        let _ = self.spawn(Box::pin(async move {
            let r = b.fetch(consumer, req, CancellationToken::new()).await;
            Done::Fetch(consumer, group, r)
        }));
    }

    fn delivered(
        &mut self,
        consumer: u64,
        group: &'static str,
        deliveries: Vec<Delivery>,
    ) -> Result<(), String> {
        let durable = self.opts.policy == FsyncPolicy::Always;
        for d in deliveries {
            self.event(format!(
                "delivered {group} p{}@{} attempt {} to c{consumer}",
                d.partition, d.offset, d.attempt
            ));
            self.out.deliveries += 1;
            let at = (d.partition, d.offset);
            if !self.sent.contains(&d.record.payload) {
                return Err(format!(
                    "{group} was served a record nobody produced at {}@{}",
                    at.0, at.1
                ));
            }
            if let Some(want) = self.acked.get(&at)
                && *want != d.record.payload
            {
                return Err(format!(
                    "{group} was served another record at {}@{}",
                    at.0, at.1
                ));
            }
            if self.done.get(group).is_some_and(|s| s.contains(&at)) {
                return Err(format!(
                    "{group} was handed {}@{} again after its ack was acknowledged",
                    at.0, at.1
                ));
            }
            if d.attempt > MAX_ATTEMPTS {
                return Err(format!(
                    "{group} got {}@{} as attempt {} of at most {MAX_ATTEMPTS}",
                    at.0, at.1, d.attempt
                ));
            }
            let handed = self.handed.entry((group, at.0, at.1)).or_default();
            handed.push(d.attempt);
            // In shared mode every delivery counts (in ordered mode one taken back after an
            // earlier record's failure does not), and counts survive restarts.
            if durable && group == "shared" && handed.len() > MAX_ATTEMPTS as usize {
                return Err(format!(
                    "{group} got {}@{} {} times (attempts {handed:?}), more than its maximum of {MAX_ATTEMPTS}",
                    at.0,
                    at.1,
                    handed.len()
                ));
            }
            self.holding.push((consumer, group, d));
        }
        Ok(())
    }

    fn take_held(&mut self) -> Option<(u64, &'static str, Vec<Delivery>)> {
        if self.holding.is_empty() {
            return None;
        }
        let (consumer, group, _) = self.holding[self.rng.random_range(0..self.holding.len())];
        let mut picked = Vec::new();
        let mut i = 0;
        while i < self.holding.len() {
            let h = &self.holding[i];
            if h.0 == consumer && h.1 == group && self.rng.random_bool(0.6) {
                picked.push(self.holding.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        Some((consumer, group, picked))
    }

    fn ack(&mut self) {
        let Some((consumer, group, picked)) = self.take_held() else {
            return;
        };
        let ids: Vec<(u32, u64)> = picked.iter().map(|d| (d.partition, d.offset)).collect();
        let wire: Vec<u64> = picked.iter().map(|d| d.delivery_id).collect();
        self.event(format!("ack {group} {ids:?} by c{consumer}"));
        let b = Arc::clone(&self.broker);
        let _ = self.spawn(Box::pin(async move {
            let r = b.ack(consumer, TOPIC, group, &wire).await;
            Done::Ack(group, ids, r)
        }));
    }

    fn nack(&mut self) {
        let Some((consumer, group, picked)) = self.take_held() else {
            return;
        };
        let wire: Vec<u64> = picked.iter().map(|d| d.delivery_id).collect();
        let delay = self.rng.random_range(0..500);
        self.event(format!("nack {group} {} by c{consumer}", wire.len()));
        let b = Arc::clone(&self.broker);
        let _ = self.spawn(Box::pin(async move {
            let _ = b.nack(consumer, TOPIC, group, &wire, delay, "sim").await;
            Done::Other
        }));
    }

    /// A consumer's connection closes: what it holds goes back (a failed attempt each).
    fn disconnect(&mut self) {
        let consumer = self.rng.random_range(1..=CONSUMERS);
        let (group, _) = GROUPS[self.rng.random_range(0..GROUPS.len())];
        self.holding
            .retain(|(c, g, _)| !(*c == consumer && *g == group));
        self.event(format!("c{consumer} leaves {group}"));
        let b = Arc::clone(&self.broker);
        let _ = self.spawn(Box::pin(async move {
            b.leave(consumer, TOPIC, group).await;
            Done::Other
        }));
    }

    fn pass_time(&mut self) {
        // Mostly less than a lease, now and then more.
        let ms = if self.rng.random_bool(0.8) {
            self.rng.random_range(1..300)
        } else {
            self.rng.random_range(300..2_000)
        };
        self.clock.advance(Duration::from_millis(ms));
        let retention = self.rng.random_bool(0.3);
        self.event(format!("time +{ms} ms, maintain (retention {retention})"));
        let b = Arc::clone(&self.broker);
        let _ = self.spawn(Box::pin(async move {
            b.maintain(retention).await;
            Done::Other
        }));
    }

    /// A crash (the disk loses what the fault model says), or a clean stop; then the broker
    /// opens again and every promise is checked.
    fn restart(&mut self, crash: bool) -> Result<(), String> {
        self.event(format!("restart (crash: {crash})"));
        if !crash {
            self.disk.arm(false);
            let mut rounds = 0;
            while !self.inflight.is_empty() {
                rounds += 1;
                if rounds > 10_000 {
                    return Err(format!(
                        "{} requests still wait after 10000 rounds of a clean stop",
                        self.inflight.len()
                    ));
                }
                self.drain_once()?;
            }
            self.broker.close();
        }
        // A power cut that came during the stop makes it a crash.
        let crash = crash || self.disk.power_is_off();
        self.disk.cancel_power_cut();
        // Whatever was in flight is gone with the process; so are the consumers' deliveries.
        self.inflight.clear();
        self.holding.clear();
        if crash {
            self.disk.crash();
        }
        // Recovery runs with faults on: a read error or a failed sync while opening is part of
        // the model. A broker that cannot open is started again, as an operator would; the
        // last try is without faults, where it must open.
        let mut opened = Err(EngineError::ShuttingDown);
        for tries_left in (0..4).rev() {
            self.disk.arm(tries_left > 0);
            opened = open_broker(&self.disk, &self.clock, &self.config);
            match &opened {
                Ok(_) => break,
                Err(e) => self.event(format!("open failed: {e}")),
            }
        }
        self.disk.arm(false);
        let (broker, steps) = opened.map_err(|e| {
            format!(
                "the broker does not open after a {}: {e}",
                if crash { "crash" } else { "clean stop" }
            )
        })?;
        self.broker = broker;
        self.steps = steps;
        self.out.restarts += 1;
        self.check()?;
        self.disk.arm(true);
        Ok(())
    }

    /// One round of everything queued (for a clean stop, without faults).
    fn drain_once(&mut self) -> Result<(), String> {
        for s in self.steps.take_flushes() {
            s.part.flush();
        }
        for j in self.steps.journals() {
            j.step();
        }
        let before = self.inflight.len();
        self.poll_all()?;
        if self.inflight.len() == before {
            // Nothing moved: what waits now waits for time (a retry's delay).
            self.clock.advance(Duration::from_millis(100));
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        let topic = self
            .broker
            .topic(TOPIC)
            .ok_or("the topic is gone after a restart")?;
        let progress: BTreeMap<&str, Vec<crate::groups::PartitionProgress>> = GROUPS
            .iter()
            .filter_map(|(g, _)| Some((*g, topic.group_progress(g)?)))
            .collect();
        let is_done = |g: &str, p: u32, o: u64| {
            progress
                .get(g)
                .and_then(|v| v.get(p as usize))
                .is_some_and(|pp| o < pp.committed || pp.acked.contains(&o))
        };
        let durable = self.opts.policy == FsyncPolicy::Always;
        // Acknowledged deliveries are still done.
        for (g, ids) in self.done.iter().filter(|_| durable) {
            for &(p, o) in ids {
                if !is_done(g, p, o) {
                    return Err(format!(
                        "{g}: the acknowledged delivery {p}@{o} is not done after the restart"
                    ));
                }
            }
        }
        // Every record in every partition was produced, and sits at most once.
        let mut seen: HashSet<Bytes> = HashSet::new();
        let mut stored: BTreeMap<(u32, u64), Bytes> = BTreeMap::new();
        for (p, part) in topic.partitions().iter().enumerate() {
            let p = u32::try_from(p).unwrap_or(0);
            let mut next = part.start_offset();
            let end = part.readable_end();
            while next < end {
                let got = match part.read(next, 64, usize::MAX) {
                    Ok(got) => got,
                    // Under `interval` and `never` a power cut may leave a hole of unwritten
                    // records: never served, but not a broken promise.
                    Err(_) if !durable => {
                        next += 1;
                        continue;
                    }
                    Err(e) => {
                        return Err(format!(
                            "partition {p} unreadable at {next} after a restart: {e}"
                        ));
                    }
                };
                let Some(last) = got.last() else {
                    return Err(format!(
                        "partition {p} reads nothing at {next} below its end {end}"
                    ));
                };
                next = last.offset + 1;
                for r in got {
                    if !self.sent.contains(&r.record.payload) {
                        return Err(format!(
                            "partition {p} holds a record nobody produced at {}",
                            r.offset
                        ));
                    }
                    if !seen.insert(r.record.payload.clone()) {
                        return Err(format!(
                            "partition {p} holds a record twice (again at {})",
                            r.offset
                        ));
                    }
                    stored.insert((p, r.offset), r.record.payload);
                }
            }
        }
        // Every acknowledged record is there, at its offset (or retention deleted it after
        // every group was done with it).
        for (&(p, o), payload) in &self.acked {
            match stored.get(&(p, o)) {
                // Under `interval` and `never` a power cut may take back what was acknowledged,
                // and a write that failed (and was undone) may resurface in its place: a record
                // whose producer got an error, which it may have sent again anyway.
                None | Some(_) if !durable => {}
                Some(got) if got == payload => {}
                Some(_) => {
                    return Err(format!(
                        "the acknowledged record at {p}@{o} was replaced by another"
                    ));
                }
                None => {
                    let start = topic
                        .partitions()
                        .get(p as usize)
                        .map_or(0, |x| x.start_offset());
                    // Retention waits for the groups that exist; a group made later starts at
                    // the oldest record retained.
                    let retained_away = o < start && progress.keys().all(|g| is_done(g, p, o));
                    if !retained_away {
                        return Err(format!(
                            "the acknowledged record at {p}@{o} is lost (partition starts at {start})"
                        ));
                    }
                }
            }
        }
        if !durable {
            // Under `interval` and `never` a crash may take back what was acknowledged (a
            // suffix of each partition, and group progress): what survived is the new truth.
            self.acked.retain(|k, v| stored.get(k) == Some(v));
            for (g, ids) in &mut self.done {
                ids.retain(|&(p, o)| is_done(g, p, o));
            }
        }
        self.event(format!(
            "checked {} records, {} acked",
            stored.len(),
            self.acked.len()
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::disk::Faults;

    /// The stepped host's queues hold partitions and journals, which hold the host: a strong
    /// reference back would keep every stopped broker (and its disk) alive, a leak per restart.
    #[test]
    fn a_stopped_broker_and_its_queues_are_freed() {
        let disk = SimDisk::new(1, Faults::default());
        let clock = Arc::new(SimClock::default());
        let config = BrokerConfig::new("/data", ([127, 0, 0, 1], 0).into());
        let (broker, steps) = open_broker(&disk, &clock, &config).unwrap();
        let b = Arc::clone(&broker);
        let mut setup: InFlight = Box::pin(async move {
            b.create_topic(TOPIC, 1, 0, 0).await.unwrap();
            let req = FetchRequest {
                topic: TOPIC.into(),
                group: "g".into(),
                mode: FetchMode::Shared,
                max_records: 1,
                max_wait_ms: 0,
                lease_ms: 0,
                max_attempts: 0,
                prefetch: 0,
            };
            b.fetch(1, req, CancellationToken::new()).await.unwrap();
            let _waiting = b.produce(TOPIC, vec![Record::new("x")]);
            Done::Other
        });
        assert!(poll_once(&mut setup).is_ready());
        assert!(!steps.journals().is_empty());
        let host = Arc::downgrade(broker.host());
        drop((broker, steps));
        assert!(
            host.upgrade().is_none(),
            "something still holds the stopped broker's host"
        );
    }
}
