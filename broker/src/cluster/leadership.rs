//! This broker's leadership: following Raft's view of who leads, leading an epoch (recovering
//! every partition, then replicating and serving), the lease, and stepping down.
//!
//! Invariants: at most one leadership at a time, of the latest epoch Raft gave this broker;
//! an epoch that any replica here already holds is never led again; whatever stops a
//! leadership (Raft, a later epoch, the lost lease, shutdown) answers the produces still
//! waiting with `not_leader`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::leader::{
    Contact, LedPartition, RecoverError, commit_on_durable, recover, replicate_to,
};
use super::meta::MetaCommand;
use super::node::{Cluster, Leadership, Serving};
use super::replica::Replica;
use crate::storage::StorageError;

impl Cluster {
    pub(super) fn current_leadership(&self) -> Option<Arc<Leadership>> {
        self.leadership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows Raft's view of who leads: leads each term Raft makes this broker leader of.
    pub(super) async fn follow_leadership(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut lease = tokio::time::interval(self.config.heartbeat);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (state, term) = {
                let m = metrics.borrow_and_update();
                (m.state, m.current_term)
            };
            let led = self.current_leadership();
            let deposed = led.as_ref().is_some_and(|l| l.deposed.is_cancelled());
            match (state, &led) {
                (ServerState::Leader, Some(l)) if l.epoch == term && !deposed => {}
                (ServerState::Leader, _) if !deposed => {
                    let this = Arc::clone(&self);
                    self.tasks.spawn(async move { this.lead(term).await });
                    // `lead` installs its leadership first thing; give it the turn.
                    tokio::task::yield_now().await;
                }
                _ if led.is_some() => {
                    self.stop_leading(if deposed {
                        "a replica promised a later epoch"
                    } else {
                        "raft elected another leader"
                    });
                }
                _ => {}
            }
            if let Some(l) = self.current_leadership() {
                let holds = self.lease_holds(&l);
                let lost = self.serving.send_if_modified(|s| {
                    let ready = s.epoch == l.epoch && s.ready;
                    if ready && !holds {
                        tracing::warn!(
                            epoch = l.epoch,
                            "no contact with a majority within the election timeout: not serving"
                        );
                        s.ready = false;
                        return true;
                    }
                    false
                });
                if lost {
                    // What waits may never be committed by this leader.
                    self.fail_waiting();
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                r = metrics.changed() => if r.is_err() { return },
                _ = lease.tick() => {}
            }
        }
    }

    /// Leads epoch `epoch`: recovers every partition, then replicates and serves.
    async fn lead(self: Arc<Self>, epoch: u64) {
        let leadership = Arc::new(Leadership {
            epoch,
            contact: Arc::new(Contact::new(self.config.peers.len())),
            led: Mutex::new(BTreeMap::new()),
            cancel: self.shutdown.child_token(),
            deposed: CancellationToken::new(),
        });
        {
            let mut slot = self
                .leadership
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|l| l.epoch >= epoch) {
                return;
            }
            if let Some(old) = slot.replace(Arc::clone(&leadership)) {
                old.cancel.cancel();
            }
        }
        self.serving.send_replace(Serving {
            epoch,
            ready: false,
        });
        tracing::info!(
            epoch,
            node = self.config.node_id,
            "raft elected this broker: recovering every partition"
        );
        let started = tokio::time::Instant::now();
        if let Some(r) = self.led_before(epoch).await {
            tracing::error!(
                epoch,
                topic = r.topic_name(),
                partition = r.index(),
                "a replica here already has this epoch or a later one: refusing to lead it (an epoch is never led twice)"
            );
            return;
        }
        self.saw_epoch(epoch);
        self.register_address().await;
        let replicas = self.all_replicas();
        let partitions = replicas.len();
        self.lead_partitions(&leadership, replicas).await;
        if leadership.cancel.is_cancelled() || leadership.deposed.is_cancelled() {
            return;
        }
        if let Err(e) = self.recover_groups(&leadership).await {
            tracing::info!(epoch, error = %e, "deposed while recovering the consumer groups");
            leadership.deposed.cancel();
            return;
        }
        if leadership.cancel.is_cancelled() || leadership.deposed.is_cancelled() {
            return;
        }
        leadership.contact.heard(self.config.node_id);
        self.serving.send_replace(Serving { epoch, ready: true });
        self.broker.metrics().cluster_leaderships.inc();
        tracing::info!(epoch, partitions, took = ?started.elapsed(), "leading: serving clients");
        // Serving again once contact with a majority comes back within the epoch.
        let mut tick = tokio::time::interval(self.config.heartbeat);
        loop {
            tokio::select! {
                () = leadership.cancel.cancelled() => return,
                () = leadership.deposed.cancelled() => return,
                _ = tick.tick() => {}
            }
            let holds = self.lease_holds(&leadership);
            self.serving.send_if_modified(|s| {
                if s.epoch == epoch && holds && !s.ready {
                    tracing::info!(epoch, "contact with a majority is back: serving");
                    s.ready = true;
                    return true;
                }
                false
            });
        }
    }

    /// A replica whose labels already hold `epoch` or a later one: this broker must not lead
    /// `epoch`.
    async fn led_before(&self, epoch: u64) -> Option<Arc<Replica>> {
        for r in self.all_replicas() {
            if r.lock()
                .await
                .history
                .entries()
                .iter()
                .any(|e| e.epoch >= epoch)
            {
                return Some(r);
            }
        }
        None
    }

    /// Recovers `replicas` in `leadership`'s epoch (retrying until it ends) and starts their
    /// replication.
    pub(super) async fn lead_partitions(
        &self,
        leadership: &Arc<Leadership>,
        replicas: Vec<Arc<Replica>>,
    ) {
        let recoveries = replicas.into_iter().map(|replica| {
            let leadership = Arc::clone(leadership);
            let peers = Arc::clone(&self.peers);
            async move {
                let mut backoff = Duration::from_millis(20);
                loop {
                    if leadership.cancel.is_cancelled() || leadership.deposed.is_cancelled() {
                        return None;
                    }
                    match recover(Arc::clone(&replica), leadership.epoch, &peers, &leadership.contact).await {
                        Ok(led) => return Some(Arc::new(led)),
                        Err(RecoverError::Deposed(promised)) => {
                            tracing::info!(epoch = leadership.epoch, promised, "deposed during recovery");
                            leadership.deposed.cancel();
                            return None;
                        }
                        Err(e) => {
                            tracing::warn!(topic = replica.topic_name(), partition = replica.index(), error = %e, "recovery failed; retrying");
                            tokio::select! {
                                () = leadership.cancel.cancelled() => return None,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_millis(500));
                        }
                    }
                }
            }
        });
        let led: Vec<Arc<LedPartition>> = futures_util::future::join_all(recoveries)
            .await
            .into_iter()
            .flatten()
            .collect();
        for l in led {
            let key = (l.replica().topic_name().to_string(), l.replica().index());
            for node in self.peers.ids() {
                self.tasks.spawn(replicate_to(
                    Arc::clone(&l),
                    node,
                    Arc::clone(&self.peers),
                    Arc::clone(&leadership.contact),
                    self.config.heartbeat,
                    leadership.deposed.clone(),
                    leadership.cancel.clone(),
                ));
            }
            self.tasks
                .spawn(commit_on_durable(Arc::clone(&l), leadership.cancel.clone()));
            leadership
                .led
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, l);
        }
    }

    /// Whether `leadership`'s lease holds: a majority answered its replication within the
    /// election timeout (with no partition to replicate, Raft's own heartbeats count).
    fn lease_holds(&self, leadership: &Leadership) -> bool {
        let lease = self.config.election_timeout;
        if leadership.contact.holds(lease) {
            return true;
        }
        let idle = leadership
            .led
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        idle && self
            .raft
            .metrics()
            .borrow()
            .millis_since_quorum_ack
            .is_some_and(|ms| u128::from(ms) < lease.as_millis())
    }

    /// Stops leading: no more serving, and every waiting produce is answered `not_leader`.
    pub(super) fn stop_leading(&self, why: &str) {
        let old = self
            .leadership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(old) = old else { return };
        old.cancel.cancel();
        self.serving.send_replace(Serving::default());
        self.fail_waiting();
        tracing::info!(epoch = old.epoch, why, "stopped leading");
    }

    /// Answers every produce waiting for a commit point with `not_leader`.
    fn fail_waiting(&self) {
        for topic in self.broker.topics() {
            for p in topic.partitions() {
                p.fail_waiting(&StorageError::NotLeader);
            }
        }
    }

    /// Records this broker's client address in the metadata, for clients that ask who leads.
    async fn register_address(&self) {
        let addr = self.config.advertise.clone();
        if self.metadata.borrow().addresses.get(&self.config.node_id) == Some(&addr) {
            return;
        }
        let cmd = MetaCommand::SetAddress {
            node: self.config.node_id,
            address: addr,
        };
        if let Err(e) = self.raft.client_write(cmd).await {
            tracing::warn!(error = %e, "cannot record this broker's address");
        }
    }

    /// A request from a leader of `epoch`: a later epoch than the one this broker leads ends
    /// its leadership before the request changes anything.
    pub(super) fn step_down_for(&self, epoch: u64) {
        if self.current_leadership().is_some_and(|l| l.epoch < epoch) {
            self.stop_leading("another broker leads a later epoch");
        }
    }
}
