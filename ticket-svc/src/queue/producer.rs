//! The API's producing connections, shared by the purchase queue and the waiting room's line:
//! a small pool of broker connections, each with a producer task, all fed from one queue of
//! records. Normally one Produce is in flight: the records that arrive while it is out wait for
//! its answer and then go out together in the next one (natural batching, no linger: an idle
//! API sends a lone record at once). A Produce is answered after the broker's next fsync, and
//! every Produce that reaches a partition during one fsync shares the next, so sending more at
//! once buys no latency; it only multiplies the frames, hand-offs and answers per record.
//! Another connection sends at once only when a full batch is waiting or the records have
//! waited [`STALLED_PRODUCE`] for the Produce in flight (a stuck connection does not hold the
//! line). A broken connection is replaced on next use; every record has a deadline, so a slow
//! or dead broker is a prompt `Unavailable`, never a hang.

use std::sync::Arc;
use std::time::Duration;

use broker::client::{Client, ClientConfig};
use broker::protocol::{ProduceAck, Record};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::error::QueueError;

/// How long a producer waits before sending records again after a retriable failure.
const RESEND_BACKOFF: Duration = Duration::from_millis(50);
/// The most records one Produce carries.
const MAX_PRODUCE_BATCH: usize = 256;
/// How long records wait for the Produce in flight before another connection sends them anyway.
/// A Produce normally takes one or two fsyncs (about a millisecond on a local SSD); past this
/// its connection is probably stuck, and the records behind it should not share its fate.
pub const STALLED_PRODUCE: Duration = Duration::from_millis(10);
/// Records waiting for a free connection before producers wait (their deadline still holds).
const BATCH_QUEUE: usize = 4_096;

/// The error of a broker that cannot take a record now.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable {
        reason: e.to_string(),
    }
}

/// One record waiting for the next free connection's Produce.
struct PendingRecord {
    topic: Arc<str>,
    record: Record,
    reply: oneshot::Sender<Result<ProduceAck, QueueError>>,
}

/// The pool: [`Producer::produce`] hands a record to the next free connection.
#[derive(Debug)]
pub(crate) struct Producer {
    records: mpsc::Sender<PendingRecord>,
    timeout: Duration,
}

impl Producer {
    /// `connections` producing connections to the broker `client` names; each record is given
    /// up (and answered `Unavailable`) after `timeout`.
    pub(crate) fn start(client: ClientConfig, connections: usize, timeout: Duration) -> Self {
        let (records, waiting) = mpsc::channel(BATCH_QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let (in_flight, _) = watch::channel(0usize);
        let in_flight = Arc::new(in_flight);
        for _ in 0..connections.max(1) {
            tokio::spawn(run_producer(
                client.clone(),
                Arc::clone(&waiting),
                Arc::clone(&in_flight),
            ));
        }
        Self { records, timeout }
    }

    /// Appends `record` to `topic` (partition by its key), answered once the broker has it on
    /// disk, or `Unavailable` when it did not within the timeout.
    pub(crate) async fn produce(
        &self,
        topic: Arc<str>,
        record: Record,
    ) -> Result<ProduceAck, QueueError> {
        let attempt = async {
            let (reply, ack) = oneshot::channel();
            let gone = || unavailable("the API's broker producers stopped");
            self.records
                .send(PendingRecord {
                    topic,
                    record,
                    reply,
                })
                .await
                .map_err(|_| gone())?;
            ack.await.map_err(|_| gone())?
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "broker did not acknowledge within {:?}",
                    self.timeout
                ))
            })?
    }
}

/// `slot`'s connection if it is alive, else a new one made with `config`.
pub(crate) async fn live_client(
    config: &ClientConfig,
    slot: &mut Option<Client>,
) -> Result<Client, QueueError> {
    if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
        return Ok(c.clone());
    }
    *slot = None;
    let c = Client::connect(config.clone()).await.map_err(unavailable)?;
    *slot = Some(c.clone());
    Ok(c)
}

/// Takes the next batch from the shared queue: at least one job, and then, while another
/// Produce is in flight, whatever else arrives until it is answered, the batch is full, or it
/// has taken [`STALLED_PRODUCE`]. Returns false when the queue is closed and empty.
async fn take_batch(
    queue: &mut mpsc::Receiver<PendingRecord>,
    in_flight: &watch::Sender<usize>,
    batch: &mut Vec<PendingRecord>,
) -> bool {
    if queue.recv_many(batch, MAX_PRODUCE_BATCH).await == 0 {
        return false;
    }
    let mut others = in_flight.subscribe();
    if batch.len() >= MAX_PRODUCE_BATCH || *others.borrow_and_update() == 0 {
        return true;
    }
    let stalled = tokio::time::sleep(STALLED_PRODUCE);
    tokio::pin!(stalled);
    while batch.len() < MAX_PRODUCE_BATCH && *others.borrow_and_update() > 0 {
        tokio::select! {
            biased;
            changed = others.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            more = queue.recv_many(batch, MAX_PRODUCE_BATCH - batch.len()) => {
                if more == 0 {
                    break;
                }
            }
            () = &mut stalled => break,
        }
    }
    true
}

/// Counts a Produce in flight for as long as it lives; waiters hear only when none is left.
struct InFlight<'a>(&'a watch::Sender<usize>);

impl<'a> InFlight<'a> {
    fn start(count: &'a watch::Sender<usize>) -> Self {
        count.send_if_modified(|n| {
            *n += 1;
            false
        });
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_if_modified(|n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// Feeds one producing connection: waits its turn at the shared queue, takes a batch (see
/// [`take_batch`]), lets the next producer take the queue, sends the records in one Produce per
/// topic, answers each with its own ack, repeats. Ends when the queue is dropped.
async fn run_producer(
    client: ClientConfig,
    queue: Arc<Mutex<mpsc::Receiver<PendingRecord>>>,
    in_flight: Arc<watch::Sender<usize>>,
) {
    let mut slot = None;
    let mut waiting = Vec::with_capacity(MAX_PRODUCE_BATCH);
    loop {
        // Held only while taking records: the other producers take the queue while this one's
        // Produce is in flight.
        if !take_batch(&mut *queue.lock().await, &in_flight, &mut waiting).await {
            return;
        }
        // A record whose caller already gave up (deadline passed, answered 503) is not sent:
        // the caller was told it was not appended.
        let mut records: Vec<PendingRecord> =
            waiting.drain(..).filter(|p| !p.reply.is_closed()).collect();
        while !records.is_empty() {
            // One Produce per topic, in the order the topics first came (almost always one).
            let topic = Arc::clone(&records[0].topic);
            let (mut these, others): (Vec<PendingRecord>, Vec<PendingRecord>) =
                records.into_iter().partition(|p| p.topic == topic);
            records = others;
            send_until_answered(&client, &mut slot, &in_flight, &topic, &mut these).await;
        }
    }
}

/// Sends `batch` (one topic's records) in one Produce and answers each, sending again after a
/// retriable failure for as long as the callers wait.
async fn send_until_answered(
    client: &ClientConfig,
    slot: &mut Option<Client>,
    in_flight: &watch::Sender<usize>,
    topic: &str,
    batch: &mut Vec<PendingRecord>,
) {
    while !batch.is_empty() {
        let records: Vec<Record> = batch.iter().map(|p| p.record.clone()).collect();
        let producing = InFlight::start(in_flight);
        let sent = match live_client(client, slot).await {
            Ok(c) => c
                .produce_batch(topic, records)
                .await
                .map_err(|e| (e.is_retriable(), unavailable(e))),
            Err(e) => Err((true, e)),
        };
        drop(producing);
        match sent {
            Ok(acks) => {
                for (p, ack) in batch.drain(..).zip(acks) {
                    let _ = p.reply.send(Ok(ack));
                }
            }
            // The broker restarted, or a cluster's leadership moved: send the records again,
            // for as long as their callers wait. Their dedup ids make a record that was
            // appended before the failure answer with its first offset, not be appended twice.
            Err((true, e)) => {
                *slot = None;
                tracing::debug!(error = %e, records = batch.len(), "produce failed; sending again");
                tokio::time::sleep(RESEND_BACKOFF).await;
                batch.retain(|p| !p.reply.is_closed());
            }
            Err((false, e)) => {
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        n: u8,
    ) -> (
        PendingRecord,
        oneshot::Receiver<Result<ProduceAck, QueueError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let record = Record::new(vec![n]);
        (
            PendingRecord {
                topic: Arc::from("t"),
                record,
                reply,
            },
            rx,
        )
    }

    fn payloads(batch: &[PendingRecord]) -> Vec<u8> {
        batch.iter().map(|p| p.record.payload[0]).collect()
    }

    #[tokio::test]
    async fn an_idle_api_sends_a_lone_job_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        let (in_flight, _) = watch::channel(0usize);
        let (j, _r) = job(1);
        tx.send(j).await.unwrap();
        let mut batch = Vec::new();
        assert!(take_batch(&mut rx, &in_flight, &mut batch).await);
        assert_eq!(payloads(&batch), vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_wait_for_the_produce_in_flight_and_then_go_out_together() {
        let (tx, mut rx) = mpsc::channel(16);
        let (in_flight, _) = watch::channel(0usize);
        let producing = InFlight::start(&in_flight);
        let mut replies = Vec::new();
        for n in 1..=3 {
            let (j, r) = job(n);
            tx.send(j).await.unwrap();
            replies.push(r);
        }
        let mut batch = Vec::new();
        {
            let take = take_batch(&mut rx, &in_flight, &mut batch);
            tokio::pin!(take);
            // Held back while the other Produce is out, taking what arrives meanwhile.
            let held = tokio::time::timeout(Duration::from_millis(1), &mut take).await;
            assert!(held.is_err());
            let (j, r) = job(4);
            tx.send(j).await.unwrap();
            replies.push(r);
            let held = tokio::time::timeout(Duration::from_millis(1), &mut take).await;
            assert!(held.is_err());
            drop(producing);
            assert!(take.await);
        }
        assert_eq!(payloads(&batch), vec![1, 2, 3, 4]);
        assert_eq!(*in_flight.borrow(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_produce_does_not_hold_the_line() {
        let (tx, mut rx) = mpsc::channel(16);
        let (in_flight, _) = watch::channel(0usize);
        let _stuck = InFlight::start(&in_flight);
        let (j, _r) = job(7);
        tx.send(j).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        assert!(take_batch(&mut rx, &in_flight, &mut batch).await);
        assert_eq!(payloads(&batch), vec![7]);
        assert_eq!(started.elapsed(), STALLED_PRODUCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_even_with_a_produce_in_flight() {
        let (tx, mut rx) = mpsc::channel(MAX_PRODUCE_BATCH + 1);
        let (in_flight, _) = watch::channel(0usize);
        let _producing = InFlight::start(&in_flight);
        let mut replies = Vec::new();
        for n in 0..=MAX_PRODUCE_BATCH {
            let (j, r) = job(u8::try_from(n % 256).unwrap());
            tx.send(j).await.unwrap();
            replies.push(r);
        }
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        assert!(take_batch(&mut rx, &in_flight, &mut batch).await);
        assert_eq!(batch.len(), MAX_PRODUCE_BATCH);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_closed_empty_queue_ends_the_producer() {
        let (tx, mut rx) = mpsc::channel::<PendingRecord>(1);
        drop(tx);
        let (in_flight, _) = watch::channel(0usize);
        let mut batch = Vec::new();
        assert!(!take_batch(&mut rx, &in_flight, &mut batch).await);
    }
}
