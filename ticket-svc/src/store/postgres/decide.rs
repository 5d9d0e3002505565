//! The deciding transaction of the PostgreSQL store: the batch's event rows locked, buyer
//! totals and prior decisions read, the batch decided by [`crate::domain::Ledger`]'s rules, and
//! the new decisions, totals and sold counts written back (see `super` on locking). Shared by
//! [`Store::decide_batch`](super::Store::decide_batch) and `sell_now`.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::domain::{
    Decision, EventId, Ledger, PurchaseId, PurchaseStatus, QueuedJob, RejectReason, decide_in_order,
};
use crate::store::error::StoreError;
use crate::store::pg_pool::{Pooled, pg};
use crate::store::rows::{i32_of, i64_of, parse_status, u32_of};

/// New decisions as column arrays, written with one `INSERT ... SELECT FROM UNNEST`.
#[derive(Default)]
struct DecisionRows {
    ids: Vec<String>,
    events: Vec<i64>,
    buyers: Vec<String>,
    quantities: Vec<i32>,
    positions: Vec<i64>,
    statuses: Vec<String>,
    reasons: Vec<Option<String>>,
}

// The deciding transaction's statements (prepared once per connection).
const SQL_LOCK_EVENTS: &str =
    "SELECT id, tickets, max_per_buyer, sold FROM events WHERE id = ANY($1)
                 ORDER BY id FOR NO KEY UPDATE";
const SQL_BUYER_TOTALS: &str = "SELECT t.event_id, t.buyer, t.confirmed FROM buyer_totals t
                 JOIN UNNEST($1::bigint[], $2::text[]) AS k(event_id, buyer)
                   ON t.event_id = k.event_id AND t.buyer = k.buyer";
const SQL_DECISIONS: &str = "SELECT id, status, reason FROM purchases WHERE id = ANY($1::text[])";
const SQL_UPDATE_SOLD: &str = "UPDATE events AS e SET sold = v.sold
             FROM UNNEST($1::bigint[], $2::int[]) AS v(id, sold)
             WHERE e.id = v.id AND e.sold <> v.sold";
const SQL_WRITE_TOTALS: &str =
    "INSERT INTO buyer_totals (event_id, buyer, confirmed, max_per_buyer)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::int[])
                 ON CONFLICT (event_id, buyer) DO UPDATE SET confirmed = EXCLUDED.confirmed";
const SQL_WRITE_DECISIONS: &str =
    "INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::int[],
                                      $5::bigint[], $6::text[], $7::text[])
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason
                 WHERE purchases.status = 'pending'";

/// The deciding transaction's statements, prepared on one connection.
pub(super) struct DecideStatements {
    /// Locks the batch's event rows (`sell_now` takes the same lock first).
    pub(super) lock_events: tokio_postgres::Statement,
    buyer_totals: tokio_postgres::Statement,
    decisions_read: tokio_postgres::Statement,
    update_sold: tokio_postgres::Statement,
    write_totals: tokio_postgres::Statement,
    write_decisions: tokio_postgres::Statement,
}

impl DecideStatements {
    pub(super) async fn prepare(c: &mut Pooled) -> Result<Self, StoreError> {
        Ok(Self {
            lock_events: c.stmt(SQL_LOCK_EVENTS).await?,
            buyer_totals: c.stmt(SQL_BUYER_TOTALS).await?,
            decisions_read: c.stmt(SQL_DECISIONS).await?,
            update_sold: c.stmt(SQL_UPDATE_SOLD).await?,
            write_totals: c.stmt(SQL_WRITE_TOTALS).await?,
            write_decisions: c.stmt(SQL_WRITE_DECISIONS).await?,
        })
    }
}

/// Decides `jobs` inside `tx` (see the module docs on locking); the caller commits.
pub(super) async fn decide_in(
    tx: &tokio_postgres::Transaction<'_>,
    st: &DecideStatements,
    jobs: &[QueuedJob],
) -> Result<Vec<Decision>, StoreError> {
    let mut ledger = Ledger::new();
    let events: Vec<i64> = jobs
        .iter()
        .map(|j| j.job.event_id.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut max_per_buyer = HashMap::new();
    for r in tx
        .query(&st.lock_events, &[&events])
        .await
        .map_err(pg("lock events"))?
    {
        let id = EventId(r.try_get(0).map_err(pg("read event.id"))?);
        let max = u32_of(
            r.try_get::<_, i32>(2).map_err(pg("read max"))?,
            "events.max_per_buyer",
        )?;
        ledger.add_event(
            id,
            u32_of(
                r.try_get::<_, i32>(1).map_err(pg("read tickets"))?,
                "events.tickets",
            )?,
            max,
            u32_of(
                r.try_get::<_, i32>(3).map_err(pg("read sold"))?,
                "events.sold",
            )?,
        );
        max_per_buyer.insert(id, max);
    }

    let pairs: HashSet<(i64, &str)> = jobs
        .iter()
        .map(|j| (j.job.event_id.0, j.job.buyer.as_str()))
        .collect();
    let (pe, pb): (Vec<i64>, Vec<&str>) = pairs.into_iter().unzip();
    for r in tx
        .query(&st.buyer_totals, &[&pe, &pb])
        .await
        .map_err(pg("read buyer totals"))?
    {
        let e = EventId(r.try_get(0).map_err(pg("read total.event_id"))?);
        let b: &str = r.try_get(1).map_err(pg("read total.buyer"))?;
        let n = u32_of(
            r.try_get::<_, i32>(2).map_err(pg("read total"))?,
            "buyer_totals.confirmed",
        )?;
        ledger.add_buyer_total(e, b, n);
    }

    let ids: Vec<String> = jobs.iter().map(|j| j.job.purchase_id.to_string()).collect();
    for r in tx
        .query(&st.decisions_read, &[&ids])
        .await
        .map_err(pg("read decisions"))?
    {
        let id: String = r.try_get(0).map_err(pg("read purchase.id"))?;
        let status: String = r.try_get(1).map_err(pg("read purchase.status"))?;
        let reason: Option<String> = r.try_get(2).map_err(pg("read purchase.reason"))?;
        let id: PurchaseId = id.parse().map_err(|_| StoreError::Corrupt {
            what: format!("purchases.id = {id:?}"),
        })?;
        ledger.add_decided(id, parse_status(&status, reason.as_deref())?);
    }

    let decisions = decide_in_order(&mut ledger, jobs);

    let (se, ss): (Vec<i64>, Vec<i32>) =
        ledger.sold_counts().map(|(e, s)| (e.0, i32_of(s))).unzip();
    tx.execute(&st.update_sold, &[&se, &ss])
        .await
        .map_err(pg("update sold"))?;

    let mut totals: (Vec<i64>, Vec<String>, Vec<i32>, Vec<i32>) = Default::default();
    let mut seen = HashSet::new();
    let mut rows = DecisionRows::default();
    for (j, d) in jobs.iter().zip(&decisions) {
        if !d.is_new {
            continue;
        }
        let e = j.job.event_id;
        if d.status == PurchaseStatus::Confirmed && seen.insert((e, j.job.buyer.as_str())) {
            totals.0.push(e.0);
            totals.1.push(j.job.buyer.clone());
            totals.2.push(i32_of(ledger.buyer_total(e, &j.job.buyer)));
            totals
                .3
                .push(i32_of(max_per_buyer.get(&e).copied().unwrap_or(0)));
        }
        rows.ids.push(j.job.purchase_id.to_string());
        rows.events.push(e.0);
        rows.buyers.push(j.job.buyer.clone());
        rows.quantities.push(i32_of(j.job.quantity));
        rows.positions.push(i64_of(j.position.0));
        rows.statuses.push(d.status.as_str().to_owned());
        rows.reasons.push(
            d.status
                .reason()
                .map(|r| RejectReason::as_str(r).to_owned()),
        );
    }
    if !totals.0.is_empty() {
        tx.execute(
            &st.write_totals,
            &[&totals.0, &totals.1, &totals.2, &totals.3],
        )
        .await
        .map_err(pg("write buyer totals"))?;
    }
    if !rows.ids.is_empty() {
        tx.execute(
            &st.write_decisions,
            &[
                &rows.ids,
                &rows.events,
                &rows.buyers,
                &rows.quantities,
                &rows.positions,
                &rows.statuses,
                &rows.reasons,
            ],
        )
        .await
        .map_err(pg("write decisions"))?;
    }
    Ok(decisions)
}
