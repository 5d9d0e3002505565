//! A deterministic simulation of the replication protocol: 3 or 5 replicas of one partition
//! run [`super::replica`]'s rules over a simulated network, driven by a seed that replays.
//!
//! Each step the seed picks one thing: a message delivered (any in flight, so messages are
//! reordered), dropped or delivered twice; a produce at some node; a node's tick (a leader
//! sends appends, a recovering one asks again); a node crashing (it keeps what it wrote, as
//! every write here is synced before it is answered, and loses its role, its waiting produces
//! and what it knew of the commit point) and coming back later; a link cut in one direction, a
//! node cut off, the network healed; retention at a node (it deletes the front of its log, up
//! to a point below the commit point it knows); or an election. Elections stand for the
//! cluster's consensus: each picks any node that is up, stale or not, as leader of a new,
//! higher epoch, and tells only that node, so older leaders go on until they hear of it.
//!
//! The run checks:
//! - a record acknowledged at an offset is never acknowledged with another value there;
//! - no log starts past the commit point: retention and restarts delete committed records only;
//! - every leader that finishes its recovery holds every acknowledged record at its offset
//!   (from its log's start on);
//! - any two logs that label a record alike hold the same record there (log matching);
//! - at the end, with the network healed and one last leader, every replica converges to the
//!   leader's log within a bounded number of rounds, and it holds every acknowledged record.
//!
//! The steps are here; the checks that look at the whole cluster are in `checks`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::epochs::{Epoch, divergence};
use super::replica::{
    Append, AppendPlan, Leader, NodeId, PromisePlan, Promised, Recovery, ReplicaState, copy_of,
    on_append, on_promise,
};
pub use super::sim_options::{ClusterOptions, ClusterOutcome};

mod checks;
use crate::planted;
use crate::planted::Planted;
use crate::sim::Failure;

/// Records per append or copy.
const MAX_BATCH: u64 = 4;

/// How often, in percent of steps, the faults and elections happen (drawn per seed).
#[derive(Debug, Clone, Copy)]
struct Rates {
    crash: f64,
    elect: f64,
    network: f64,
    retain: f64,
}

#[derive(Debug, Clone)]
enum Msg {
    Promise(Epoch),
    Promised(Epoch, Promised),
    /// Records, and the sender's commit point.
    Append(Append, Vec<u64>, u64),
    Appended(Epoch, u64),
    Mismatch(Epoch, Promised),
    Stale(Epoch),
    Read(Epoch, u64),
    Copy(Append, Vec<u64>),
}

#[derive(Debug)]
enum Role {
    Follower,
    Recovering {
        recovery: Recovery,
        /// The replica copied from, once a majority promised, and the end to copy to.
        source: Option<(NodeId, u64)>,
    },
    Leading {
        leader: Leader,
        /// Produces appended and not yet acknowledged: offset and value.
        waiting: Vec<(u64, u64)>,
    },
}

#[derive(Debug)]
struct Node {
    state: ReplicaState,
    /// The records by offset; below `state.log_start`, 0 (deleted).
    log: Vec<u64>,
    /// The commit point it knows (a leader's own, a follower's from its leader), in memory.
    commit: u64,
    role: Role,
    down_until: Option<usize>,
}

impl Node {
    fn epoch_led(&self) -> Option<Epoch> {
        match &self.role {
            Role::Follower => None,
            Role::Recovering { recovery, .. } => Some(recovery.epoch()),
            Role::Leading { leader, .. } => Some(leader.epoch()),
        }
    }
}

struct Cluster {
    opts: ClusterOptions,
    seed: u64,
    rng: StdRng,
    nodes: Vec<Node>,
    ids: Vec<NodeId>,
    inflight: Vec<(NodeId, NodeId, Msg)>,
    cut: HashSet<(NodeId, NodeId)>,
    p_drop: f64,
    p_dup: f64,
    epoch: Epoch,
    next_value: u64,
    /// Acknowledged records by offset: the value, and the epoch that first acknowledged it.
    acked: BTreeMap<u64, (u64, Epoch)>,
    /// Records sent and not yet acknowledged, which clients send again.
    unacked: BTreeSet<u64>,
    rates: Rates,
    /// The last node that finished recovering: where clients send first.
    announced: Option<NodeId>,
    /// The highest commit point any leader reached: every record below it is committed.
    committed: u64,
    step: usize,
    out: ClusterOutcome,
    events: Vec<String>,
    hasher: std::collections::hash_map::DefaultHasher,
}

/// Runs one seed; a broken promise is a [`Failure`] that says how to replay it.
///
/// # Errors
/// The first check that failed.
pub fn run(seed: u64, opts: &ClusterOptions) -> Result<ClusterOutcome, Box<Failure>> {
    planted::set(opts.planted);
    let result = Cluster::new(seed, opts.clone()).run();
    planted::set(None);
    result
}

impl Cluster {
    fn new(seed: u64, opts: ClusterOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = if rng.random_bool(0.7) { 3 } else { 5 };
        // Swarm testing: each fault is off in some runs.
        let p_drop = if rng.random_bool(0.7) { 0.05 } else { 0.0 };
        let p_dup = if rng.random_bool(0.7) { 0.05 } else { 0.0 };
        let mut rate = || if rng.random_bool(0.5) { 0.4 } else { 2.5 };
        let rates = Rates {
            crash: rate(),
            elect: rate(),
            network: rate(),
            retain: if rng.random_bool(0.6) { 1.5 } else { 0.0 },
        };
        let ids: Vec<NodeId> = (1..=n).collect();
        let nodes = ids
            .iter()
            .map(|_| Node {
                state: ReplicaState::default(),
                log: Vec::new(),
                commit: 0,
                role: Role::Follower,
                down_until: None,
            })
            .collect();
        Self {
            opts,
            seed,
            rng,
            nodes,
            ids,
            inflight: Vec::new(),
            cut: HashSet::new(),
            p_drop,
            p_dup,
            epoch: 0,
            next_value: 1,
            acked: BTreeMap::new(),
            unacked: BTreeSet::new(),
            rates,
            announced: None,
            committed: 0,
            step: 0,
            out: ClusterOutcome {
                nodes: n as usize,
                ..ClusterOutcome::default()
            },
            events: Vec::new(),
            hasher: std::collections::hash_map::DefaultHasher::new(),
        }
    }

    fn event(&mut self, e: String) {
        e.hash(&mut self.hasher);
        self.events.push(e);
        let keep = self.opts.events.max(1);
        if self.events.len() > keep.saturating_mul(4).max(1024) {
            let cut = self.events.len() - keep;
            self.events.drain(..cut);
        }
    }

    fn fail(&self, message: String) -> Box<Failure> {
        let keep = self.opts.events.min(self.events.len());
        Box::new(Failure {
            seed: self.seed,
            step: self.step,
            message,
            events: self.events[self.events.len() - keep..].to_vec(),
            replay: self.opts.replay_args(self.seed),
        })
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        let i = usize::try_from(id - 1).unwrap_or(usize::MAX);
        self.nodes
            .get_mut(i)
            .expect("node ids run from 1 to the node count")
    }

    fn is_up(&self, id: NodeId) -> bool {
        let i = usize::try_from(id - 1).unwrap_or(usize::MAX);
        self.nodes.get(i).is_some_and(|n| n.down_until.is_none())
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        if self.cut.contains(&(from, to)) {
            self.out.dropped += 1;
            return;
        }
        self.inflight.push((from, to, msg));
    }

    fn run(mut self) -> Result<ClusterOutcome, Box<Failure>> {
        while self.step < self.opts.steps {
            self.step += 1;
            self.revive();
            self.random_step()?;
            if self.step.is_multiple_of(50) {
                self.check_log_matching()?;
            }
        }
        self.converge()?;
        self.out.acked = self.acked.len() as u64;
        self.out.trace = self.hasher.finish();
        let keep = self.opts.events.min(self.events.len());
        self.out.events = self.events[self.events.len() - keep..].to_vec();
        Ok(self.out)
    }

    fn revive(&mut self) {
        let step = self.step;
        for i in 0..self.nodes.len() {
            if self.nodes[i].down_until.is_some_and(|until| until <= step) {
                self.nodes[i].down_until = None;
                self.event(format!("node {} back", i + 1));
            }
        }
    }

    fn random_node(&mut self) -> NodeId {
        let i = self.rng.random_range(0..self.ids.len());
        self.ids[i]
    }

    fn random_step(&mut self) -> Result<(), Box<Failure>> {
        let roll = self.rng.random_range(0.0..100.0);
        let Rates {
            crash,
            elect,
            network,
            retain,
        } = self.rates;
        if roll < crash {
            self.crash();
            return Ok(());
        }
        if roll < crash + elect {
            let id = self.random_node();
            return self.elect(id);
        }
        if roll < crash + elect + network {
            self.change_network();
            return Ok(());
        }
        if roll < crash + elect + network + retain {
            let id = self.random_node();
            return self.retain(id);
        }
        match self.rng.random_range(0..100) {
            0..55 => self.deliver_one(),
            55..72 => {
                // Clients mostly find the leader the cluster last announced.
                let id = match self.announced {
                    Some(id) if self.rng.random_bool(0.8) => id,
                    _ => self.random_node(),
                };
                self.produce(id)
            }
            _ => {
                let id = self.random_node();
                self.tick(id)
            }
        }
    }

    fn deliver_one(&mut self) -> Result<(), Box<Failure>> {
        if self.inflight.is_empty() {
            return Ok(());
        }
        let i = self.rng.random_range(0..self.inflight.len());
        if self.rng.random_bool(self.p_drop) {
            self.inflight.swap_remove(i);
            self.out.dropped += 1;
            return Ok(());
        }
        let (from, to, msg) = if self.rng.random_bool(self.p_dup) {
            self.out.duplicated += 1;
            self.inflight[i].clone()
        } else {
            self.inflight.swap_remove(i)
        };
        self.receive(from, to, msg)
    }

    fn crash(&mut self) {
        let id = self.random_node();
        if !self.is_up(id) {
            return;
        }
        let back = self.step + self.rng.random_range(1..60);
        let node = self.node(id);
        node.role = Role::Follower;
        node.commit = 0;
        node.down_until = Some(back);
        self.out.crashes += 1;
        self.event(format!("node {id} crashed until step {back}"));
    }

    fn change_network(&mut self) {
        match self.rng.random_range(0..4) {
            0 => {
                self.cut.clear();
                self.event("network healed".into());
            }
            1 => {
                let victim = self.random_node();
                for other in self.ids.clone() {
                    if other != victim {
                        self.cut.insert((victim, other));
                        self.cut.insert((other, victim));
                    }
                }
                self.event(format!("node {victim} cut off"));
            }
            _ => {
                let (a, b) = (self.random_node(), self.random_node());
                if a != b {
                    self.cut.insert((a, b));
                    self.event(format!("link {a}->{b} cut"));
                }
            }
        }
    }

    /// Retention at `id`: its log's front is deleted up to a random point at or below the
    /// commit point it knows (every node runs it, the way every broker does). It never deletes
    /// a record whose producer still waits for an answer: in production retention keeps hours
    /// and a client retries for seconds, and a retry whose record is gone is appended again.
    fn retain(&mut self, id: NodeId) -> Result<(), Box<Failure>> {
        if !self.is_up(id) {
            return Ok(());
        }
        let past_commit = planted::active(Planted::RetainUncommitted);
        let unacked = &self.unacked;
        let i = usize::try_from(id - 1).unwrap_or(usize::MAX);
        let Some(node) = self.nodes.get(i) else {
            return Ok(());
        };
        let waited_for = node
            .log
            .iter()
            .position(|v| unacked.contains(v))
            .map_or(u64::MAX, |o| o as u64);
        let bound = if past_commit {
            node.state.end
        } else {
            node.commit.min(node.state.end)
        }
        .min(waited_for);
        if bound <= node.state.log_start {
            return Ok(());
        }
        let from = node.state.log_start;
        let to = self.rng.random_range(from + 1..=bound);
        let node = self.node(id);
        for v in node
            .log
            .iter_mut()
            .take(usize::try_from(to).unwrap_or(usize::MAX))
        {
            *v = 0;
        }
        node.state.log_start = to;
        self.out.retained += to - from;
        self.event(format!("node {id} retention deleted [{from}, {to})"));
        self.check_log_starts()
    }

    /// The cluster's consensus elects `id` leader of a new epoch (if it is up).
    fn elect(&mut self, id: NodeId) -> Result<(), Box<Failure>> {
        if !self.is_up(id) {
            return Ok(());
        }
        self.epoch += 1;
        let epoch = self.epoch;
        self.out.elections += 1;
        self.event(format!("node {id} elected for epoch {epoch}"));
        let ids = self.ids.clone();
        let node = self.node(id);
        node.state.promised = node.state.promised.max(epoch);
        let mut recovery = Recovery::new(epoch, id, ids.clone());
        recovery.promised(id, Promised::of(&node.state));
        node.role = Role::Recovering {
            recovery,
            source: None,
        };
        for other in ids {
            if other != id {
                self.send(id, other, Msg::Promise(epoch));
            }
        }
        self.advance_recovery(id)
    }

    /// A client sends a record to `id`: a new one, or one not yet acknowledged again (with
    /// its dedup id, as clients do after a failover), which a leader that holds it does not
    /// append twice.
    fn produce(&mut self, id: NodeId) -> Result<(), Box<Failure>> {
        if !self.is_up(id) {
            return Ok(());
        }
        let retry = if self.unacked.is_empty() || self.rng.random_bool(0.5) {
            None
        } else {
            let i = self.rng.random_range(0..self.unacked.len());
            self.unacked.iter().nth(i).copied()
        };
        let value = retry.unwrap_or(self.next_value);
        let node = self.node(id);
        let Role::Leading { waiting, .. } = &mut node.role else {
            return Ok(());
        };
        let found = node.log.iter().position(|v| *v == value);
        let offset = match found {
            Some(o) => o as u64,
            None => {
                node.log.push(value);
                node.state.end += 1;
                node.state.end - 1
            }
        };
        waiting.push((offset, value));
        if retry.is_none() {
            self.next_value += 1;
            self.unacked.insert(value);
        } else {
            self.out.retries += 1;
        }
        let how = if found.is_some() { "found" } else { "appended" };
        self.event(format!("node {id} {how} {value} at {offset}"));
        self.commit(id)
    }

    fn tick(&mut self, id: NodeId) -> Result<(), Box<Failure>> {
        if !self.is_up(id) {
            return Ok(());
        }
        let node = self.node(id);
        let state = node.state.clone();
        let mut sends = Vec::new();
        match &mut node.role {
            Role::Follower => {}
            Role::Recovering { recovery, source } => match source {
                Some((from, _)) => sends.push((*from, Msg::Read(recovery.epoch(), state.end))),
                None => {
                    for other in recovery.unanswered() {
                        sends.push((other, Msg::Promise(recovery.epoch())));
                    }
                }
            },
            Role::Leading { leader, .. } => {
                let log = &node.log;
                for other in leader.replicas().to_vec() {
                    if let Some(append) = leader.next_append(other, &state, MAX_BATCH) {
                        let records = records_of(log, &append);
                        sends.push((other, Msg::Append(append, records, node.commit)));
                    }
                }
            }
        }
        for (to, msg) in sends {
            self.send(id, to, msg);
        }
        Ok(())
    }

    fn receive(&mut self, from: NodeId, to: NodeId, msg: Msg) -> Result<(), Box<Failure>> {
        if !self.is_up(to) {
            self.out.dropped += 1;
            return Ok(());
        }
        match msg {
            Msg::Promise(epoch) => {
                self.step_down_below(to, epoch);
                let node = self.node(to);
                let reply = match on_promise(&node.state, epoch) {
                    PromisePlan::Stale { promised } => Msg::Stale(promised),
                    PromisePlan::Promise { promise } => {
                        if let Some(p) = promise {
                            node.state.promised = p;
                        }
                        Msg::Promised(epoch, Promised::of(&node.state))
                    }
                };
                self.send(to, from, reply);
            }
            Msg::Append(append, records, commit) => {
                self.step_down_below(to, append.epoch);
                let reply = self.apply(to, &append, &records)?;
                if let Msg::Appended(_, matched) = reply {
                    // Below what agrees with the leader, its commit point is this node's too.
                    let node = self.node(to);
                    node.commit = node.commit.max(commit.min(matched));
                }
                self.send(to, from, reply);
            }
            Msg::Read(epoch, offset) => {
                let node = self.node(to);
                let reply = if node.state.promised > epoch {
                    Msg::Stale(node.state.promised)
                } else {
                    let append = copy_of(&node.state, epoch, offset, MAX_BATCH);
                    let records = records_of(&node.log, &append);
                    Msg::Copy(append, records)
                };
                self.send(to, from, reply);
            }
            Msg::Promised(epoch, answer) => {
                let node = self.node(to);
                match &mut node.role {
                    Role::Recovering { recovery, .. } if recovery.epoch() == epoch => {
                        recovery.promised(from, answer);
                        self.advance_recovery(to)?;
                    }
                    Role::Leading { leader, .. } if leader.epoch() == epoch => {
                        let mine = node.state.clone();
                        leader.learned(from, &answer, &mine);
                    }
                    _ => {}
                }
            }
            Msg::Copy(append, records) => {
                let node = self.node(to);
                let copying = matches!(&node.role, Role::Recovering { recovery, source: Some((s, _)) }
                    if recovery.epoch() == append.epoch && *s == from);
                if copying {
                    self.apply(to, &append, &records)?;
                    self.advance_recovery(to)?;
                }
            }
            Msg::Appended(epoch, matched) => {
                let node = self.node(to);
                if let Role::Leading { leader, .. } = &mut node.role
                    && leader.epoch() == epoch
                {
                    leader.appended(from, matched);
                    self.event(format!("node {to} hears node {from} holds {matched}"));
                    self.commit(to)?;
                }
            }
            Msg::Mismatch(epoch, answer) => {
                let node = self.node(to);
                let mine = node.state.clone();
                if let Role::Leading { leader, .. } = &mut node.role
                    && leader.epoch() == epoch
                {
                    leader.learned(from, &answer, &mine);
                }
            }
            Msg::Stale(promised) => self.step_down_below(to, promised),
        }
        Ok(())
    }

    /// A node that leads (or recovers for) an epoch below `epoch` stops: a newer leader exists.
    fn step_down_below(&mut self, id: NodeId, epoch: Epoch) {
        let node = self.node(id);
        if node.epoch_led().is_some_and(|led| led < epoch) {
            node.role = Role::Follower;
            self.event(format!("node {id} steps down for epoch {epoch}"));
        }
    }

    /// Applies an append (from a leader, or a copy during recovery) to `id`'s log, in the
    /// order the plan gives, and returns the answer.
    fn apply(&mut self, id: NodeId, append: &Append, records: &[u64]) -> Result<Msg, Box<Failure>> {
        let node = self.node(id);
        let plan = on_append(&node.state, append);
        let (reply, cut) = match plan {
            AppendPlan::Stale { promised } => (Msg::Stale(promised), 0),
            AppendPlan::Mismatch { promise } => {
                if let Some(p) = promise {
                    node.state.promised = p;
                }
                (Msg::Mismatch(append.epoch, Promised::of(&node.state)), 0)
            }
            AppendPlan::Apply(a) => {
                if let Some(p) = a.promise {
                    node.state.promised = p;
                }
                let mut cut = 0;
                let log_start = node.state.log_start;
                if let Some(to) = a.truncate_to.filter(|to| *to < log_start) {
                    return Err(self.fail(format!(
                        "node {id} was to cut its log to {to}, below its start {log_start}"
                    )));
                }
                let node = self.node(id);
                if let Some(to) = a.truncate_to {
                    let keep = usize::try_from(to).unwrap_or(usize::MAX);
                    cut = node.log.len().saturating_sub(keep) as u64;
                    node.log.truncate(keep);
                    node.state.end = to;
                }
                if let Some(h) = a.history {
                    node.state.history = h;
                }
                let skip = usize::try_from(a.append_from - append.start).unwrap_or(usize::MAX);
                for v in records.iter().skip(skip) {
                    node.log.push(*v);
                }
                node.state.end = node.log.len() as u64;
                (Msg::Appended(append.epoch, a.matched), cut)
            }
            AppendPlan::Restart(r) => {
                if let Some(p) = r.promise {
                    node.state.promised = p;
                }
                let held = node.state.end - node.state.log_start;
                node.state.history = r.history;
                node.log = vec![0; usize::try_from(r.start).unwrap_or(usize::MAX)];
                node.log.extend_from_slice(records);
                node.state.log_start = r.start;
                node.state.end = node.log.len() as u64;
                // Everything below the sender's start is committed.
                node.commit = node.commit.max(r.start);
                self.out.restarts += 1;
                self.event(format!(
                    "node {id} dropped its {held} records and starts again at {}",
                    r.start
                ));
                (Msg::Appended(append.epoch, r.matched), 0)
            }
        };
        if cut > 0 {
            self.out.truncated += cut;
            self.event(format!("node {id} cut {cut} records"));
        }
        let end = self.node(id).state.end;
        let answer = match &reply {
            Msg::Appended(_, m) => format!("holds {m}"),
            Msg::Mismatch(..) => "mismatch".to_string(),
            Msg::Stale(p) => format!("refused: promised {p}"),
            other => format!("{other:?}"),
        };
        self.event(format!(
            "node {id} got [{}, {}) of epoch {}: {answer}, end {end}",
            append.start,
            append.start + append.count,
            append.epoch
        ));
        Ok(reply)
    }

    /// Moves a recovering node on: once a majority promised, copy from the best log; once
    /// copied, start the epoch and lead.
    fn advance_recovery(&mut self, id: NodeId) -> Result<(), Box<Failure>> {
        let node = self.node(id);
        let Role::Recovering { recovery, source } = &mut node.role else {
            return Ok(());
        };
        let epoch = recovery.epoch();
        if source.is_none() {
            let Some((best, answer)) = recovery.best() else {
                return Ok(());
            };
            let answer = answer.clone();
            let self_answers = recovery.answers().clone();
            // The tail that diverges from the best log goes first.
            let d = divergence(
                &node.state.history,
                node.state.end,
                &answer.history,
                answer.end,
            );
            let log_start = node.state.log_start;
            if d < log_start {
                return Err(self.fail(format!(
                    "node {id} was to cut its log to {d}, below its start {log_start}, to recover epoch {epoch}"
                )));
            }
            let node = self.node(id);
            if d < node.state.end {
                let keep = usize::try_from(d).unwrap_or(usize::MAX);
                let cut = node.log.len() - keep;
                node.log.truncate(keep);
                node.state.end = d;
                self.out.truncated += cut as u64;
            }
            let node = self.node(id);
            if let Role::Recovering { source, .. } = &mut node.role {
                *source = Some((best, answer.end));
            }
            let seen: Vec<String> = self_answers
                .iter()
                .map(|(n, a)| format!("{n}:({},{})", a.history.last_epoch(a.end), a.end))
                .collect();
            self.event(format!(
                "node {id} recovers epoch {epoch} from node {best} (answers {})",
                seen.join(" ")
            ));
        }
        let node = self.node(id);
        let Role::Recovering { recovery, source } = &mut node.role else {
            return Ok(());
        };
        let Some((from, upto)) = *source else {
            return Ok(());
        };
        if node.state.end < upto {
            let end = node.state.end;
            self.send(id, from, Msg::Read(epoch, end));
            return Ok(());
        }
        // Copied: the epoch starts at this end.
        let answers = recovery.answers().clone();
        let start = node.state.end;
        match node.state.history.begin(epoch, start) {
            Ok(h) => node.state.history = h,
            Err(e) => {
                return Err(self.fail(format!("node {id} could not start epoch {epoch}: {e}")));
            }
        }
        let ids = self.ids.clone();
        let node = self.node(id);
        let mut leader = Leader::new(epoch, id, ids, start);
        for (other, answer) in &answers {
            leader.learned(*other, answer, &node.state);
        }
        node.role = Role::Leading {
            leader,
            waiting: Vec::new(),
        };
        self.out.recoveries += 1;
        self.announced = Some(id);
        self.event(format!("node {id} leads epoch {epoch} from {start}"));
        // The promise of this design: a recovered leader holds every record acknowledged before
        // its epoch. (A leader deposed while it recovered may lack what its successors
        // acknowledged since; it can acknowledge nothing, as a majority promised them.)
        let log = self.node(id).log.clone();
        let log_start = self.node(id).state.log_start;
        for (offset, (value, acked_in)) in &self.acked {
            if *acked_in >= epoch || *offset < log_start {
                continue;
            }
            let have = usize::try_from(*offset).ok().and_then(|o| log.get(o));
            if have != Some(value) {
                return Err(self.fail(format!(
                    "node {id} leads epoch {epoch} without acknowledged record {value} at {offset} (it has {have:?})"
                )));
            }
        }
        self.commit(id)
    }

    /// Acknowledges the produces a leader's commit point reached.
    fn commit(&mut self, id: NodeId) -> Result<(), Box<Failure>> {
        let node = self.node(id);
        let end = node.state.end;
        let Role::Leading { leader, waiting } = &mut node.role else {
            return Ok(());
        };
        let commit = leader.commit(end);
        let epoch = leader.epoch();
        node.commit = node.commit.max(commit);
        let mut done = Vec::new();
        waiting.retain(|(offset, value)| {
            if *offset < commit {
                done.push((*offset, *value));
                false
            } else {
                true
            }
        });
        self.committed = self.committed.max(commit);
        for (offset, value) in done {
            match self.acked.get(&offset) {
                Some((old, _)) if *old != value => {
                    return Err(self.fail(format!(
                        "offset {offset} acknowledged twice: {old}, then {value} by node {id}"
                    )));
                }
                Some(_) => {}
                None => {
                    self.acked.insert(offset, (value, epoch));
                }
            }
            self.unacked.remove(&value);
            self.event(format!("node {id} acknowledged {value} at {offset}"));
        }
        Ok(())
    }
}

/// The records an append carries, from the sender's log.
fn records_of(log: &[u64], append: &Append) -> Vec<u64> {
    let from = usize::try_from(append.start).unwrap_or(usize::MAX);
    let to = usize::try_from(append.start + append.count).unwrap_or(usize::MAX);
    log.get(from..to.min(log.len()))
        .unwrap_or_default()
        .to_vec()
}
