//! `line_load`: what a waiting room's line costs, against a running stack (`ticket-svc up`).
//!
//! ```text
//! line_load --target http://127.0.0.1:8080 --data-dir DATA [--visitors 100000] [--concurrency 256]
//!           [--poll-every-s 2] [--poll-for-s 20]
//! ```
//! It reads the stack's signing key and organizer token from its data dir and signs the
//! visitors' sessions itself (a login per visitor is not what is measured), creates an event
//! behind a waiting room that opens once they have joined and admits 1 a second (so everyone
//! keeps waiting), then:
//! 1. joins every visitor, `--concurrency` at a time: joins per second and their latency (from
//!    each request's send);
//! 2. has every visitor look at its place every `--poll-every-s`, each at its own phase, for
//!    `--poll-for-s` (an open model: each look's latency counts from when it was due, so a slow
//!    line cannot hide its queueing): looks per second achieved and their latency.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::{HeaderValue, Method, StatusCode};
use ticket_stack::rush::client::Conn;
use ticket_stack::rush::{NewEvent, Target};
use ticket_svc::access::{Access, AccessConfig, Email, KeyRing, OrganizerTokens, unix_now};
use ticket_svc::domain::UnixMillis;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Joins and looks at a place in a waiting room's line, timed")]
struct Cli {
    /// The stack's public address.
    #[arg(long)]
    target: String,
    /// The stack's data dir (its `signing-key` and `organizer-token`).
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 100_000)]
    visitors: u64,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[arg(long, default_value_t = 2)]
    poll_every_s: u64,
    #[arg(long, default_value_t = 20)]
    poll_for_s: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let read = |name: &str| {
        std::fs::read_to_string(cli.data_dir.join(name))
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("reading {name} from the data dir"))
    };
    let access = Access::new(AccessConfig::new(
        KeyRing::parse(&[read("signing-key")?])?,
        OrganizerTokens::parse::<&str>(&[])?,
    ));
    let target = Target::resolve(&cli.target).await?;
    let sessions: Vec<HeaderValue> = (0..cli.visitors)
        .map(|i| {
            let email = Email::parse(&format!("visitor-{i}@line.example"))?;
            let token = access.session_for(&email, unix_now()).token;
            Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
        })
        .collect::<anyhow::Result<_>>()?;
    // Opens well after the joins, admits 1 a second: the looks are in-line looks.
    let join_time = Duration::from_millis(5_000 + cli.visitors / 5);
    let opens_at = UnixMillis(UnixMillis::now().0 + i64::try_from(join_time.as_millis())?);
    let event = ticket_stack::rush::create_event(
        std::slice::from_ref(&target),
        &format!("Bearer {}", read("organizer-token")?),
        &NewEvent {
            opens_at: Some(opens_at),
            admit_per_s: Some(1),
            ..NewEvent::new("line bench", 1, 1)
        },
    )
    .await?;
    let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(
        (0..cli.concurrency)
            .map(|_| Conn::new(target.addr, &target.host, Duration::from_secs(30)))
            .collect(),
    ));
    let permits = Arc::new(tokio::sync::Semaphore::new(cli.concurrency));
    let send = {
        let (conns, permits) = (Arc::clone(&conns), Arc::clone(&permits));
        move |method: Method, path: String, auth: Option<HeaderValue>| {
            let (conns, permits) = (Arc::clone(&conns), Arc::clone(&permits));
            async move {
                let _turn = permits.acquire().await.ok()?;
                let mut conn = conns.lock().await.pop()?;
                let headers: Vec<_> = auth
                    .into_iter()
                    .map(|a| (http::header::AUTHORIZATION, a))
                    .collect();
                let sent = Instant::now();
                let answer = conn.send(method, &path, &headers, Bytes::new()).await.ok();
                let took = sent.elapsed();
                conns.lock().await.push(conn);
                answer.map(|a| (a, took))
            }
        }
    };

    // 1. Joins.
    let started = Instant::now();
    let mut joins = tokio::task::JoinSet::new();
    for (i, session) in sessions.into_iter().enumerate() {
        let send = send.clone();
        let path = format!("/events/{event}/line");
        joins.spawn(async move {
            // Latency from the request's send (the crowd's own wait for a connection apart).
            let answer = send(Method::POST, path, Some(session)).await;
            let took = answer.as_ref().map_or(Duration::ZERO, |(_, t)| *t);
            let token = answer
                .filter(|((s, _), _)| *s == StatusCode::CREATED)
                .and_then(|((_, body), _)| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .and_then(|v| v.get("token")?.as_str().map(str::to_owned));
            (i, token, took)
        });
    }
    let mut tokens = vec![None; usize::try_from(cli.visitors)?];
    let mut join_latency = histogram();
    while let Some(done) = joins.join_next().await {
        let (i, token, took) = done?;
        let _ = join_latency.record(u64::try_from(took.as_micros())?.max(1));
        if let Some(slot) = tokens.get_mut(i) {
            *slot = token;
        }
    }
    let join_s = started.elapsed().as_secs_f64();
    let joined = tokens.iter().filter(|t| t.is_some()).count();
    println!(
        "joins: {joined} of {} in {join_s:.2} s ({:.0}/s, {} in flight); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        cli.visitors,
        joined as f64 / join_s,
        cli.concurrency,
        ms(join_latency.value_at_quantile(0.5)),
        ms(join_latency.value_at_quantile(0.99)),
        ms(join_latency.max())
    );

    // 2. Looks at the place, once the line opened: every visitor every --poll-every-s.
    let wait = opens_at.0 - UnixMillis::now().0;
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait)? + 500)).await;
    }
    let every = Duration::from_secs(cli.poll_every_s.max(1));
    let rounds = (cli.poll_for_s / cli.poll_every_s.max(1)).max(1);
    let start = Instant::now() + Duration::from_millis(200);
    let mut looks = tokio::task::JoinSet::new();
    let n = tokens.len().max(1) as u64;
    for (i, token) in tokens.into_iter().enumerate() {
        let Some(token) = token else { continue };
        let send = send.clone();
        let path = format!("/events/{event}/line?token={token}");
        let phase = every.mul_f64(i as f64 / n as f64);
        looks.spawn(async move {
            // Each look's latency in µs, the first round apart (it meets the line's opening: the
            // seal, the draw). Plain numbers per visitor, merged at the end: a histogram per
            // visitor would be gigabytes at 100,000 visitors, and the load generator's own
            // stalls would show as the line's.
            let mut first = None;
            let mut latency = Vec::with_capacity(usize::try_from(rounds).unwrap_or(0));
            let mut failed = 0u64;
            for round in 0..rounds {
                let due = start + phase + every * u32::try_from(round).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due).await;
                match send(Method::GET, path.clone(), None).await {
                    Some(((StatusCode::OK, _), _)) => {
                        let us = u64::try_from(due.elapsed().as_micros())
                            .unwrap_or(u64::MAX)
                            .max(1);
                        if round == 0 {
                            first = Some(us);
                        } else {
                            latency.push(us);
                        }
                    }
                    _ => failed += 1,
                }
            }
            (first, latency, failed)
        });
    }
    let mut first_latency = histogram();
    let mut look_latency = histogram();
    let mut failed = 0;
    while let Some(done) = looks.join_next().await {
        let (first, later, f) = done?;
        if let Some(us) = first {
            let _ = first_latency.record(us);
        }
        for us in later {
            let _ = look_latency.record(us);
        }
        failed += f;
    }
    let look_s = start.elapsed().as_secs_f64();
    println!(
        "first looks (the line's opening): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(first_latency.value_at_quantile(0.5)),
        ms(first_latency.value_at_quantile(0.99)),
        ms(first_latency.max())
    );
    println!(
        "looks after: {} in {look_s:.2} s ({:.0}/s asked {:.0}/s), {failed} failed; latency from when due p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        look_latency.len(),
        (look_latency.len() + first_latency.len()) as f64 / look_s,
        joined as f64 / every.as_secs_f64(),
        ms(look_latency.value_at_quantile(0.5)),
        ms(look_latency.value_at_quantile(0.99)),
        ms(look_latency.value_at_quantile(0.999)),
        ms(look_latency.max())
    );
    Ok(())
}
