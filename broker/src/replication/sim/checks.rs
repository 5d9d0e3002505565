//! The simulation's checks (`super`): no log starts past the commit point, log matching, and
//! the final convergence of a healed cluster on one leader's log, which holds every
//! acknowledged record once.

use std::collections::BTreeSet;

use super::{Cluster, Failure, NodeId, Role};

/// Rounds the healed cluster gets to converge at the end.
const FINAL_ROUNDS: usize = 400;
/// Messages one of those rounds may take: far more than a tick's appends and their answers.
const MAX_ROUND_MESSAGES: usize = 10_000;

impl Cluster {
    /// No log starts past what is committed: everything retention or a restart deleted was.
    pub(super) fn check_log_starts(&self) -> Result<(), Box<Failure>> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.state.log_start > self.committed {
                return Err(self.fail(format!(
                    "node {}'s log starts at {}, past the commit point {}: it deleted records that were not committed",
                    i + 1,
                    n.state.log_start,
                    self.committed
                )));
            }
        }
        Ok(())
    }

    /// Two logs that label a record alike hold the same record (where both still hold it).
    pub(super) fn check_log_matching(&self) -> Result<(), Box<Failure>> {
        self.check_log_starts()?;
        for (i, a) in self.nodes.iter().enumerate() {
            for (j, b) in self.nodes.iter().enumerate().skip(i + 1) {
                let end = a.log.len().min(b.log.len());
                let from = a.state.log_start.max(b.state.log_start);
                for o in usize::try_from(from).unwrap_or(usize::MAX)..end {
                    let (la, lb) = (
                        a.state.history.label(o as u64),
                        b.state.history.label(o as u64),
                    );
                    if la == lb && a.log[o] != b.log[o] {
                        return Err(self.fail(format!(
                            "nodes {} and {} both label offset {o} epoch {la} but hold {} and {}",
                            i + 1,
                            j + 1,
                            a.log[o],
                            b.log[o]
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Heals everything, elects one last leader and lets the cluster settle: every replica
    /// must end with the leader's log, which holds every acknowledged record.
    pub(super) fn converge(&mut self) -> Result<(), Box<Failure>> {
        self.cut.clear();
        for n in &mut self.nodes {
            n.down_until = None;
        }
        self.p_drop = 0.0;
        self.p_dup = 0.0;
        self.event("final: network healed, every node up".into());
        let leader = self.random_node();
        self.elect(leader)?;
        for _ in 0..FINAL_ROUNDS {
            self.tick(leader)?;
            let mut delivered = 0;
            while !self.inflight.is_empty() {
                delivered += 1;
                if delivered > MAX_ROUND_MESSAGES {
                    return Err(self.fail(format!(
                        "the healed cluster exchanged over {MAX_ROUND_MESSAGES} messages in one round: messages that answer each other for ever"
                    )));
                }
                self.deliver_one()?;
            }
            if self.settled(leader) {
                break;
            }
        }
        if !self.settled(leader) {
            let ends: Vec<u64> = self.nodes.iter().map(|n| n.state.end).collect();
            return Err(self.fail(format!(
                "the healed cluster did not settle under node {leader} in {FINAL_ROUNDS} rounds: ends {ends:?}"
            )));
        }
        self.check_log_matching()?;
        let log = self.node(leader).log.clone();
        let log_start = self.node(leader).state.log_start;
        let mut seen = BTreeSet::new();
        for (offset, value) in log
            .iter()
            .enumerate()
            .skip(usize::try_from(log_start).unwrap_or(usize::MAX))
        {
            if !seen.insert(*value) {
                return Err(self.fail(format!(
                    "record {value} is in the final log twice (again at {offset})"
                )));
            }
        }
        for (offset, (value, _)) in self.acked.range(log_start..) {
            let have = usize::try_from(*offset).ok().and_then(|o| log.get(o));
            if have != Some(value) {
                return Err(self.fail(format!(
                    "acknowledged record {value} at {offset} is not in the final log ({have:?})"
                )));
            }
        }
        Ok(())
    }

    fn settled(&mut self, leader: NodeId) -> bool {
        let node = self.node(leader);
        let end = node.state.end;
        let Role::Leading { leader: l, waiting } = &mut node.role else {
            return false;
        };
        let committed = l.commit(end) == end && waiting.is_empty();
        let (log, log_start) = (node.log.clone(), node.state.log_start);
        // Every replica holds the leader's records, from where both logs start.
        committed
            && self.nodes.iter().all(|n| {
                let from = usize::try_from(n.state.log_start.max(log_start)).unwrap_or(usize::MAX);
                n.log.len() == log.len() && n.log.get(from..) == log.get(from..)
            })
    }
}
