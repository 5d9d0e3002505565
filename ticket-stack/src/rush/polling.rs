//! Following accepted purchases to their decision for `--verify`: polling every pending one
//! until it is final, or probing the last one in line to time the workers' lag.

use std::time::Duration;

use http::StatusCode;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use ticket_svc::domain::PurchaseStatus;

use super::config::RushConfig;
use super::target::Route;
use super::verify::Observed;

/// The fields of `GET /purchases/{id}` the verify phase reads (the rest is ignored).
#[derive(serde::Deserialize)]
struct StatusAnswer<'a> {
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    reason: Option<std::borrow::Cow<'a, str>>,
}

/// The purchase's status if it is final (`None` when pending or unreadable).
async fn final_status(route: &mut Route, id: &str) -> Option<PurchaseStatus> {
    let Ok((StatusCode::OK, body)) = route.get(&format!("/purchases/{id}")).await else {
        return None;
    };
    let seen: StatusAnswer = serde_json::from_slice(&body).ok()?;
    PurchaseStatus::parse(&seen.status, seen.reason.as_deref())
        .filter(|s| *s != PurchaseStatus::Pending)
}

/// Polls one purchase every 20 ms until it is final: the moment it was seen final, or `None`
/// at the deadline. Used on the last purchase in line, which the ordered workers decide last,
/// so this measures the workers' lag without the cost of polling every purchase.
pub(super) async fn probe_until_final(
    config: &RushConfig,
    id: &str,
    shutdown: &CancellationToken,
) -> Option<Instant> {
    let deadline = Instant::now() + config.verify_timeout;
    let mut route = Route::new(&config.targets, 0, config.request_timeout, config.resends);
    loop {
        if final_status(&mut route, id).await.is_some() {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Polls every purchase until it is final or the deadline passes. Returns the moment the last
/// pending purchase was seen final (an upper bound on when the last one was decided), or `None`
/// when some never were.
pub(super) async fn poll_until_final(
    config: &RushConfig,
    purchases: &mut [Observed],
    shutdown: &CancellationToken,
) -> Option<Instant> {
    let deadline = Instant::now() + config.verify_timeout;
    let mut last_seen_final: Option<Instant> = None;
    loop {
        let pending: Vec<usize> = purchases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.status == PurchaseStatus::Pending)
            .map(|(i, _)| i)
            .collect();
        if pending.is_empty() {
            return Some(last_seen_final.unwrap_or_else(Instant::now));
        }
        if Instant::now() >= deadline || shutdown.is_cancelled() {
            return None;
        }
        let chunk = pending.len().div_ceil(config.concurrency).max(1);
        let mut tasks = JoinSet::new();
        for (k, part) in pending.chunks(chunk).enumerate() {
            let ids: Vec<(usize, String)> = part
                .iter()
                .filter_map(|i| purchases.get(*i).map(|p| (*i, p.purchase_id.clone())))
                .collect();
            let mut route = Route::new(&config.targets, k, config.request_timeout, config.resends);
            tasks.spawn(async move {
                let mut found = Vec::new();
                for (i, id) in ids {
                    if let Some(s) = final_status(&mut route, &id).await {
                        found.push((i, s, Instant::now()));
                    }
                }
                found
            });
        }
        while let Some(done) = tasks.join_next().await {
            for (i, status, seen) in done.unwrap_or_default() {
                if let Some(p) = purchases.get_mut(i) {
                    p.status = status;
                    last_seen_final = last_seen_final.max(Some(seen));
                }
            }
        }
        if purchases
            .iter()
            .any(|p| p.status == PurchaseStatus::Pending)
        {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}
