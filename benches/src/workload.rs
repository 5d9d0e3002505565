//! The broker workloads, written once against two small traits so that our broker and each peer
//! run exactly the same loop: produce as fast as acknowledgements come back, drain and ack with a
//! few consumers, and produce→delivery latency at a fixed rate.
//!
//! Invariants the figures rely on:
//! - a record counts as produced only when [`Producer::send`] returned, i.e. when the system
//!   acknowledged it at the durability the adapter was set up with;
//! - e2e latency counts from each record's *intended* send time (written into the first 8 bytes
//!   of its payload), so a sender that falls behind the schedule counts against the figure
//!   (no coordinated omission);
//! - every loop stops by itself: at its record count or at its time limit, whichever comes first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

/// Highest latency the histograms hold (60 s, in nanoseconds).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// One producing connection of some system.
pub trait Producer: Send + 'static {
    /// Sends the payloads and returns once the system has acknowledged every one of them at
    /// its configured durability.
    fn send(&mut self, payloads: Vec<Bytes>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// One consuming member of some system's consumer group.
pub trait Receiver: Send + 'static {
    /// Waits a short while (about 100 ms at most) for records and returns their payloads,
    /// possibly none. They stay unacknowledged until [`Receiver::ack`].
    fn fetch(&mut self) -> impl Future<Output = anyhow::Result<Vec<Bytes>>> + Send;
    /// Acknowledges everything the last fetch returned.
    fn ack(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// An empty latency histogram (1 ns to 60 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("fixed, valid histogram bounds")
}

/// The `q` quantile of a nanosecond histogram, in milliseconds.
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// What a produce run did.
#[derive(Debug)]
pub struct ProduceReport {
    /// Records acknowledged.
    pub records: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Latency of each send (request to acknowledgement), nanoseconds.
    pub latency: Histogram<u64>,
}

impl ProduceReport {
    /// Acknowledged records per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

/// Each producer sends `batch` payloads of `payload_bytes` per request, waiting for each
/// acknowledgement, until `records` are claimed in total or `limit` has passed.
pub async fn produce<P: Producer>(
    producers: Vec<P>,
    records: u64,
    batch: usize,
    payload_bytes: usize,
    limit: Duration,
) -> anyhow::Result<ProduceReport> {
    let payload = Bytes::from(vec![b'x'; payload_bytes]);
    let remaining = Arc::new(AtomicU64::new(records));
    let batch = batch.max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut producer in producers {
        let remaining = Arc::clone(&remaining);
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n = 0u64;
            while started.elapsed() < limit {
                let take = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                        r.checked_sub(1).map(|_| r.saturating_sub(batch))
                    })
                    .map(|before| before.min(batch))
                    .unwrap_or(0);
                if take == 0 {
                    break;
                }
                let t0 = Instant::now();
                producer.send(vec![payload.clone(); take as usize]).await?;
                h.record(t0.elapsed().as_nanos() as u64)?;
                n += take;
            }
            anyhow::Ok((n, h))
        }));
    }
    let mut report = ProduceReport {
        records: 0,
        seconds: 0.0,
        latency: histogram(),
    };
    for t in tasks {
        let (n, h) = t.await??;
        report.records += n;
        report.latency.add(h)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What a consume run did.
#[derive(Debug)]
pub struct ConsumeReport {
    /// Records fetched and acknowledged.
    pub records: u64,
    /// Wall time until the last acknowledgement.
    pub seconds: f64,
}

impl ConsumeReport {
    /// Acknowledged records per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

/// The receivers fetch and ack until `records` are acknowledged in total or `limit` has passed.
pub async fn consume<R: Receiver>(
    receivers: Vec<R>,
    records: u64,
    limit: Duration,
) -> anyhow::Result<ConsumeReport> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut receiver in receivers {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut last = started.elapsed();
            while done.load(Ordering::Relaxed) < records && started.elapsed() < limit {
                let got = receiver.fetch().await?;
                if got.is_empty() {
                    continue;
                }
                receiver.ack().await?;
                done.fetch_add(got.len() as u64, Ordering::Relaxed);
                last = started.elapsed();
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = Duration::ZERO;
    for t in tasks {
        last = last.max(t.await??);
    }
    Ok(ConsumeReport {
        records: done.load(Ordering::Relaxed),
        seconds: last.as_secs_f64(),
    })
}

/// What an e2e run measured.
#[derive(Debug)]
pub struct E2eReport {
    /// Records sent (all were acknowledged).
    pub sent: u64,
    /// Records delivered to a receiver (and acknowledged) before the time limit.
    pub delivered: u64,
    /// Intended send time → delivery, nanoseconds.
    pub latency: Histogram<u64>,
}

/// The producers share one schedule of `rate` records/s for `seconds` (each waits for its
/// acknowledgement before taking its next slot, so enough of them must be in flight to keep
/// up); the receivers fetch, timestamp and ack until every record arrived or `seconds` + 10 s
/// have passed.
pub async fn e2e<P: Producer, R: Receiver>(
    producers: Vec<P>,
    receivers: Vec<R>,
    rate: u64,
    seconds: u64,
    payload_bytes: usize,
) -> anyhow::Result<E2eReport> {
    let origin = Instant::now();
    let total = rate * seconds;
    let deadline = Duration::from_secs(seconds + 10);
    let received = Arc::new(AtomicU64::new(0));
    // Lowered to what was really sent once the producers are done, so that receivers do not
    // wait for records a late schedule never sent.
    let expected = Arc::new(AtomicU64::new(total));
    let mut consumers = Vec::new();
    for mut receiver in receivers {
        let received = Arc::clone(&received);
        let expected = Arc::clone(&expected);
        consumers.push(tokio::spawn(async move {
            let mut h = histogram();
            while received.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed)
                && origin.elapsed() < deadline
            {
                let got = receiver.fetch().await?;
                let now = origin.elapsed().as_nanos() as u64;
                for payload in &got {
                    let mut due = [0u8; 8];
                    if let Some(b) = payload.get(..8) {
                        due.copy_from_slice(b);
                    }
                    h.record(now.saturating_sub(u64::from_be_bytes(due)).max(1))?;
                }
                if !got.is_empty() {
                    receiver.ack().await?;
                    received.fetch_add(got.len() as u64, Ordering::Relaxed);
                }
            }
            anyhow::Ok(h)
        }));
    }
    let n = producers.len().max(1) as u64;
    let interval_ns = 1_000_000_000 / rate.max(1);
    let pad = payload_bytes.max(8) - 8;
    let mut tasks = Vec::new();
    for (p, mut producer) in producers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut i = p as u64;
            let mut sent = 0u64;
            while i < total && origin.elapsed() < deadline {
                let due = Duration::from_nanos(i * interval_ns);
                let now = origin.elapsed();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                let mut payload = (due.as_nanos() as u64).to_be_bytes().to_vec();
                payload.resize(8 + pad, b'x');
                producer.send(vec![Bytes::from(payload)]).await?;
                sent += 1;
                i += n;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await??;
    }
    expected.store(sent, Ordering::Relaxed);
    let mut latency = histogram();
    for c in consumers {
        latency.add(c.await??)?;
    }
    Ok(E2eReport {
        sent,
        delivered: received.load(Ordering::Relaxed),
        latency,
    })
}
