//! The SQL of a sale, run on the writer thread inside a group's transaction: deciding a batch,
//! the naive baseline's sale, a dead letter, and the pending row.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::{
    Decision, EventId, Ledger, Position, PurchaseId, PurchaseJob, PurchaseStatus, QueuedJob,
    RejectReason, decide_in_order,
};
use crate::store::error::{StoreError, sq};
use crate::store::rows::{i64_of, parse_status, position_of, u32_of};

/// Inserts `job`'s pending row unless its purchase is on record: whether it inserted.
pub(super) fn insert_pending(c: &Connection, job: &QueuedJob) -> Result<bool, StoreError> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO purchases (id, event_id, buyer, quantity, position, status)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending') ON CONFLICT (id) DO NOTHING",
        )
        .map_err(sq("prepare pending write"))?
        .execute(params![
            job.job.purchase_id.to_string(),
            job.job.event_id.0,
            job.job.buyer,
            job.job.quantity,
            i64_of(job.position.0),
        ])
        .map_err(sq("record pending"))?;
    Ok(inserted == 1)
}

/// The position on record for purchase `id`, if it is on record.
pub(super) fn position_on_record(
    c: &Connection,
    id: PurchaseId,
) -> Result<Option<Position>, StoreError> {
    c.prepare_cached("SELECT position FROM purchases WHERE id = ?1")
        .map_err(sq("prepare position read"))?
        .query_row([id.to_string()], |r| r.get::<_, i64>(0))
        .optional()
        .map_err(sq("read position"))?
        .map(position_of)
        .transpose()
}

pub(super) fn decide_batch_sync(
    tx: &Connection,
    jobs: &[QueuedJob],
) -> Result<Vec<Decision>, StoreError> {
    let mut ledger = Ledger::new();
    let events: BTreeSet<EventId> = jobs.iter().map(|j| j.job.event_id).collect();
    let mut max_per_buyer = HashMap::new();
    // Each job's purchase row, when it has one (its pending row): the decision then updates it
    // by rowid, one b-tree seek, where an upsert by id seeks the id index and then the row.
    let mut rows: Vec<Option<i64>> = Vec::with_capacity(jobs.len());
    {
        let mut ev = tx
            .prepare_cached("SELECT tickets, max_per_buyer, sold FROM events WHERE id = ?1")
            .map_err(sq("prepare event read"))?;
        for id in &events {
            let row: Option<(i64, i64, i64)> = ev
                .query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(sq("read event"))?;
            if let Some((t, m, s)) = row {
                let m = u32_of(m, "events.max_per_buyer")?;
                ledger.add_event(
                    *id,
                    u32_of(t, "events.tickets")?,
                    m,
                    u32_of(s, "events.sold")?,
                );
                max_per_buyer.insert(*id, m);
            }
        }
        let mut bt = tx
            .prepare_cached("SELECT confirmed FROM buyer_totals WHERE event_id = ?1 AND buyer = ?2")
            .map_err(sq("prepare buyer total read"))?;
        let pairs: HashSet<(EventId, &str)> = jobs
            .iter()
            .map(|j| (j.job.event_id, j.job.buyer.as_str()))
            .collect();
        for (e, b) in pairs {
            let n: Option<i64> = bt
                .query_row(params![e.0, b], |r| r.get(0))
                .optional()
                .map_err(sq("read buyer total"))?;
            if let Some(n) = n {
                ledger.add_buyer_total(e, b, u32_of(n, "buyer_totals.confirmed")?);
            }
        }
        let mut ps = tx
            .prepare_cached("SELECT rowid, status, reason FROM purchases WHERE id = ?1")
            .map_err(sq("prepare purchase read"))?;
        for j in jobs {
            let row: Option<(i64, String, Option<String>)> = ps
                .query_row([j.job.purchase_id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(sq("read purchase"))?;
            rows.push(row.as_ref().map(|(rowid, ..)| *rowid));
            if let Some((_, s, r)) = row {
                ledger.add_decided(j.job.purchase_id, parse_status(&s, r.as_deref())?);
            }
        }
    }

    let decisions = decide_in_order(&mut ledger, jobs);

    {
        let mut up = tx
            .prepare_cached("UPDATE events SET sold = ?2 WHERE id = ?1 AND sold <> ?2")
            .map_err(sq("prepare sold update"))?;
        for (id, sold) in ledger.sold_counts() {
            up.execute(params![id.0, sold]).map_err(sq("update sold"))?;
        }
        let mut bt = tx
            .prepare_cached(
                "INSERT INTO buyer_totals (event_id, buyer, confirmed, max_per_buyer)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (event_id, buyer) DO UPDATE SET confirmed = excluded.confirmed",
            )
            .map_err(sq("prepare buyer total write"))?;
        let mut written = HashSet::new();
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason
                 WHERE purchases.status = 'pending'",
            )
            .map_err(sq("prepare decision write"))?;
        let mut upd = tx
            .prepare_cached(
                "UPDATE purchases SET status = ?2, reason = ?3 WHERE rowid = ?1 AND status = 'pending'",
            )
            .map_err(sq("prepare decision update"))?;
        for ((j, d), row) in jobs.iter().zip(&decisions).zip(&rows) {
            if !d.is_new {
                continue;
            }
            let e = j.job.event_id;
            if d.status == PurchaseStatus::Confirmed && written.insert((e, j.job.buyer.as_str())) {
                let max = max_per_buyer.get(&e).copied().unwrap_or(0);
                bt.execute(params![
                    e.0,
                    j.job.buyer,
                    ledger.buyer_total(e, &j.job.buyer),
                    max
                ])
                .map_err(sq("write buyer total"))?;
            }
            let reason = d.status.reason().map(RejectReason::as_str);
            match row {
                Some(rowid) => upd
                    .execute(params![rowid, d.status.as_str(), reason])
                    .map_err(sq("write decision"))?,
                // No pending row (its write failed, or the job came from elsewhere): the
                // decision makes the row.
                None => ins
                    .execute(params![
                        j.job.purchase_id.to_string(),
                        e.0,
                        j.job.buyer,
                        j.job.quantity,
                        i64_of(j.position.0),
                        d.status.as_str(),
                        reason,
                    ])
                    .map_err(sq("write decision"))?,
            };
        }
    }
    Ok(decisions)
}

/// The naive baseline's sale (see [`SqliteStore::sell_now`]): inside the writer's transaction,
/// so the position taken here is the order SQLite serialized the sales in.
pub(super) fn sell_now_sync(
    tx: &Connection,
    job: &PurchaseJob,
) -> Result<(Position, Decision), StoreError> {
    let id = job.purchase_id.to_string();
    let recorded: Option<i64> = tx
        .prepare_cached("SELECT position FROM purchases WHERE id = ?1")
        .map_err(sq("prepare position read"))?
        .query_row([&id], |r| r.get(0))
        .optional()
        .map_err(sq("read position"))?;
    let position = match recorded {
        Some(p) => p,
        None => tx
            .prepare_cached(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM purchases WHERE event_id = ?1",
            )
            .map_err(sq("prepare next position"))?
            .query_row([job.event_id.0], |r| r.get(0))
            .map_err(sq("read next position"))?,
    };
    let position = position_of(position)?;
    let queued = QueuedJob {
        job: job.clone(),
        position,
    };
    let decision = decide_batch_sync(tx, std::slice::from_ref(&queued))?
        .pop()
        .ok_or_else(|| StoreError::Corrupt {
            what: "no decision for a one-job batch".into(),
        })?;
    Ok((position, decision))
}

pub(super) fn mark_failed_sync(
    tx: &Connection,
    job: &QueuedJob,
) -> Result<PurchaseStatus, StoreError> {
    let row: Option<(String, Option<String>)> = tx
        .query_row(
            "SELECT status, reason FROM purchases WHERE id = ?1",
            [job.job.purchase_id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sq("read purchase"))?;
    let current = row
        .map(|(s, r)| parse_status(&s, r.as_deref()))
        .transpose()?;
    if let Some(status) = current.filter(|s| s.is_final()) {
        return Ok(status);
    }
    let failed = PurchaseStatus::Rejected(RejectReason::Failed);
    let has_event: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE id = ?1)",
            [job.job.event_id.0],
            |r| r.get(0),
        )
        .map_err(sq("read event"))?;
    if has_event {
        tx.execute(
            "INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, 'rejected', 'failed')
             ON CONFLICT (id) DO UPDATE SET status = 'rejected', reason = 'failed'
             WHERE purchases.status = 'pending'",
            params![
                job.job.purchase_id.to_string(),
                job.job.event_id.0,
                job.job.buyer,
                job.job.quantity.max(1),
                i64_of(job.position.0),
            ],
        )
        .map_err(sq("mark failed"))?;
    }
    Ok(failed)
}
