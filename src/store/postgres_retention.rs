//! Retention's batches and `cordon store stats` on PostgreSQL. The rules are the same as sled's
//! (`super::retention`); here each batch is one transaction: the batch's ids are read in key
//! order, then those rows are locked `FOR UPDATE SKIP LOCKED` (a row an ingest or a run is writing
//! at that moment is left for the next pass, so pruning never waits on intake, nor intake on it),
//! checked, and deleted or rewritten with what points at them.

use tokio_postgres::types::Json;

use super::*;
use crate::store::retention::{
    self as rules, KindStats, PruneBatch, PruneKind, PruneRequest, StoreStats,
};

impl PostgresStore {
    pub(super) async fn prune_batch(&self, r: &PruneRequest) -> Result<PruneBatch, StoreError> {
        let table = match r.kind {
            PruneKind::RawPayloads | PruneKind::Alerts => "alerts",
            PruneKind::Incidents | PruneKind::Evidence => "incidents",
            PruneKind::Runs => "runs",
            PruneKind::Outbox => "outbox",
        };
        let limit = i64::try_from(r.limit).unwrap_or(i64::MAX);
        let after = r.after.clone().unwrap_or_default();
        transaction!(self, client, {
            let tx = client.transaction().await?;
            // Not waited for: a pass lost to a crash is done again by the next.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            let ids_sql =
                format!("SELECT id FROM {table} WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3");
            let q = tx.prepare_cached(&ids_sql).await?;
            let ids: Vec<String> = tx
                .query(&q, &[&after, &r.bound, &limit])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let mut batch = PruneBatch {
                examined: ids.len() as u64,
                pruned: 0,
                next: (ids.len() == r.limit)
                    .then(|| ids.last().cloned())
                    .flatten(),
            };
            let lock_sql =
                format!("SELECT id, doc FROM {table} WHERE id = ANY($1) FOR UPDATE SKIP LOCKED");
            let q = tx.prepare_cached(&lock_sql).await?;
            let rows = tx.query(&q, &[&ids]).await?;
            let mut gone: Vec<String> = Vec::new();
            match r.kind {
                PruneKind::RawPayloads => {
                    let update = tx
                        .prepare_cached("UPDATE alerts SET doc = $2 WHERE id = $1")
                        .await?;
                    for row in &rows {
                        let mut alert: Alert = doc(row, 1)?;
                        if rules::raw_expired(&alert, r.cutoff) {
                            rules::clear_raw(&mut alert);
                            tx.execute(&update, &[&alert.id, &Json(&alert)]).await?;
                            batch.pruned += 1;
                        }
                    }
                }
                PruneKind::Alerts => {
                    let incident = tx
                        .prepare_cached("SELECT doc FROM incidents WHERE id = $1")
                        .await?;
                    for row in &rows {
                        let alert: Alert = doc(row, 1)?;
                        let of = match tx.query_opt(&incident, &[&alert.incident_id]).await? {
                            Some(row) => Some(doc::<Incident>(&row, 0)?),
                            None => None,
                        };
                        if rules::alert_expired(&alert, of.as_ref(), r.cutoff) {
                            gone.push(alert.id);
                        }
                    }
                    forget_alerts(&tx, &gone).await?;
                    batch.pruned = gone.len() as u64;
                }
                PruneKind::Incidents => {
                    for row in &rows {
                        let incident: Incident = doc(row, 1)?;
                        if rules::incident_expired(&incident, r.cutoff) {
                            gone.push(incident.id);
                        }
                    }
                    if !gone.is_empty() {
                        let q = tx
                            .prepare_cached("SELECT id FROM alerts WHERE incident_id = ANY($1)")
                            .await?;
                        let alerts: Vec<String> = tx
                            .query(&q, &[&gone])
                            .await?
                            .iter()
                            .map(|row| row.get(0))
                            .collect();
                        forget_alerts(&tx, &alerts).await?;
                        for sql in [
                            "DELETE FROM entities WHERE incident_id = ANY($1)",
                            "DELETE FROM incidents WHERE id = ANY($1)",
                        ] {
                            let q = tx.prepare_cached(sql).await?;
                            tx.execute(&q, &[&gone]).await?;
                        }
                    }
                    batch.pruned = gone.len() as u64;
                }
                PruneKind::Evidence => {
                    for row in &rows {
                        let mut incident: Incident = doc(row, 1)?;
                        let removed = rules::prune_evidence(&mut incident, r.cutoff);
                        if removed > 0 {
                            put_incident(&tx, &incident).await?;
                            batch.pruned += removed;
                        }
                    }
                }
                PruneKind::Runs => {
                    for row in &rows {
                        let run: Run = doc(row, 1)?;
                        if rules::run_expired(&run, r.cutoff) {
                            gone.push(run.id);
                        }
                    }
                    for sql in [
                        "DELETE FROM run_alerts WHERE run_id = ANY($1)",
                        "DELETE FROM run_keys WHERE run_id = ANY($1)",
                        "DELETE FROM runs WHERE id = ANY($1)",
                    ] {
                        let q = tx.prepare_cached(sql).await?;
                        tx.execute(&q, &[&gone]).await?;
                    }
                    batch.pruned = gone.len() as u64;
                }
                PruneKind::Outbox => {
                    for row in &rows {
                        let entry: OutboxEntry = doc(row, 1)?;
                        if rules::outbox_expired(&entry, r.cutoff) {
                            gone.push(entry.id);
                        }
                    }
                    let q = tx
                        .prepare_cached("DELETE FROM outbox WHERE id = ANY($1)")
                        .await?;
                    tx.execute(&q, &[&gone]).await?;
                    batch.pruned = gone.len() as u64;
                }
            }
            tx.commit().await?;
            Ok(batch)
        })
    }

    pub(super) async fn stats_now(&self) -> Result<StoreStats, StoreError> {
        const QUERIES: [(&str, &str); 9] = [
            (
                "alerts",
                "SELECT count(*), coalesce(sum(octet_length(doc::text)), 0)::bigint FROM alerts",
            ),
            (
                "raw_payloads",
                "SELECT count(*), coalesce(sum(octet_length((doc->'raw')::text)), 0)::bigint
                 FROM alerts WHERE (doc->'raw')::text <> 'null'",
            ),
            (
                "incidents",
                "SELECT count(*), coalesce(sum(octet_length(doc::text)), 0)::bigint FROM incidents",
            ),
            (
                "evidence",
                "SELECT coalesce(sum(json_array_length(doc->'evidence')), 0)::bigint,
                        coalesce(sum(octet_length((doc->'evidence')::text)), 0)::bigint
                 FROM incidents WHERE json_typeof(doc->'evidence') = 'array'",
            ),
            (
                "runs",
                "SELECT count(*), coalesce(sum(octet_length(doc::text)), 0)::bigint FROM runs",
            ),
            (
                "outbox",
                "SELECT count(*), coalesce(sum(octet_length(doc::text)), 0)::bigint FROM outbox
                 WHERE coalesce((doc->>'dead')::boolean, false) = false",
            ),
            (
                "outbox_dead",
                "SELECT count(*), coalesce(sum(octet_length(doc::text)), 0)::bigint FROM outbox
                 WHERE coalesce((doc->>'dead')::boolean, false)",
            ),
            (
                "audit",
                "SELECT count(*), coalesce(sum(octet_length(entry)), 0)::bigint FROM audit",
            ),
            (
                "meta",
                "SELECT count(*), coalesce(sum(octet_length(value::text)), 0)::bigint FROM meta",
            ),
        ];
        transaction!(self, client, {
            let mut kinds = Vec::new();
            for (kind, sql) in QUERIES {
                let row = client.query_one(sql, &[]).await?;
                let (count, bytes): (i64, i64) = (row.get(0), row.get(1));
                kinds.push(KindStats {
                    kind: kind.into(),
                    count: count.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                });
            }
            let row = client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                    &[],
                )
                .await?;
            let on_disk: i64 = row.get(0);
            Ok(StoreStats {
                backend: "postgres".into(),
                kinds,
                on_disk_bytes: on_disk.max(0) as u64,
            })
        })
    }
}

/// Deletes alerts and what points at them (their dedup keys, their run markers).
async fn forget_alerts(tx: &Transaction<'_>, ids: &[String]) -> Result<(), Fail> {
    if ids.is_empty() {
        return Ok(());
    }
    for sql in [
        "DELETE FROM dedup_keys WHERE alert_id = ANY($1)",
        "DELETE FROM run_alerts WHERE alert_id = ANY($1)",
        "DELETE FROM alerts WHERE id = ANY($1)",
    ] {
        let q = tx.prepare_cached(sql).await?;
        tx.execute(&q, &[&ids]).await?;
    }
    Ok(())
}
