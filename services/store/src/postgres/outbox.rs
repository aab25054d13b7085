//! The outbox tables beside Parse Server's, and the relay's claims on them.
//! Parse Server ignores tables it does not know.

use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::pg_err;
use crate::error::StoreResult;
use crate::outbox::{EventContext, OutboxEntry, record};
use crate::write::WriteOutcome;

pub(super) const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS "_oxbase_outbox" (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    subject text NOT NULL,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX IF NOT EXISTS "_oxbase_outbox_pending" ON "_oxbase_outbox" (seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS "_oxbase_relay" (
    id int PRIMARY KEY CHECK (id = 1),
    owner text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS "_oxbase_outbox_dead" (
    seq bigint PRIMARY KEY,
    event_id text NOT NULL,
    subject text NOT NULL,
    payload text NOT NULL,
    reason text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"#;

/// Writes a committed op's event in the op's transaction.
pub(super) async fn insert(
    client: &impl GenericClient,
    context: &EventContext,
    class_name: &str,
    outcome: &WriteOutcome,
) -> StoreResult<()> {
    let record = record(context, class_name, outcome)?;
    let statement = client
        .prepare_cached(
            r#"INSERT INTO "_oxbase_outbox" (event_id, subject, payload) VALUES ($1, $2, $3)"#,
        )
        .await
        .map_err(pg_err)?;
    client
        .execute(
            &statement,
            &[&record.event_id, &record.subject, &record.payload],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn claim(
    client: &impl GenericClient,
    relay: &str,
    lease: Duration,
    limit: usize,
) -> StoreResult<Option<Vec<OutboxEntry>>> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let held = client
        .execute(
            r#"INSERT INTO "_oxbase_relay" (id, owner, expires_at)
               VALUES (1, $1, now() + $2 * interval '1 millisecond')
               ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
               WHERE "_oxbase_relay".owner = EXCLUDED.owner OR "_oxbase_relay".expires_at < now()"#,
            &[&relay, &(lease_ms as f64)],
        )
        .await
        .map_err(pg_err)?;
    if held == 0 {
        return Ok(None);
    }
    let rows = client
        .query(
            r#"SELECT seq, event_id, subject, payload FROM "_oxbase_outbox"
               WHERE sent_at IS NULL ORDER BY seq LIMIT $1"#,
            &[&i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            Ok(OutboxEntry {
                seq: row.try_get(0).map_err(pg_err)?,
                event_id: row.try_get(1).map_err(pg_err)?,
                subject: row.try_get(2).map_err(pg_err)?,
                payload: row.try_get(3).map_err(pg_err)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()
        .map(Some)
}

pub(super) async fn release(client: &impl GenericClient, relay: &str) -> StoreResult<()> {
    client
        .execute(
            r#"UPDATE "_oxbase_relay" SET expires_at = '-infinity' WHERE id = 1 AND owner = $1"#,
            &[&relay],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn mark_sent(client: &impl GenericClient, seqs: &[i64]) -> StoreResult<()> {
    client
        .execute(
            r#"UPDATE "_oxbase_outbox" SET sent_at = now() WHERE seq = ANY($1)"#,
            &[&seqs],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn prune(client: &impl GenericClient, older_than: Duration) -> StoreResult<u64> {
    let ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX) as f64;
    client
        .execute(
            r#"DELETE FROM "_oxbase_outbox" WHERE sent_at < now() - $1 * interval '1 millisecond'"#,
            &[&ms],
        )
        .await
        .map_err(pg_err)
}

pub(super) async fn backlog(client: &impl GenericClient) -> StoreResult<u64> {
    let row = client
        .query_one(
            r#"SELECT count(*) FROM "_oxbase_outbox" WHERE sent_at IS NULL"#,
            &[],
        )
        .await
        .map_err(pg_err)?;
    let n: i64 = row.try_get(0).map_err(pg_err)?;
    Ok(n.max(0) as u64)
}

/// Copies the event `seq` aside and marks it sent, in one statement so the
/// copy and the mark cannot part.
pub(super) async fn dead_letter(
    client: &impl GenericClient,
    seq: i64,
    reason: &str,
) -> StoreResult<()> {
    client
        .execute(
            r#"WITH moved AS (
                   UPDATE "_oxbase_outbox" SET sent_at = now() WHERE seq = $1
                   RETURNING seq, event_id, subject, payload
               )
               INSERT INTO "_oxbase_outbox_dead" (seq, event_id, subject, payload, reason)
               SELECT seq, event_id, subject, payload, $2 FROM moved
               ON CONFLICT (seq) DO NOTHING"#,
            &[&seq, &reason],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn dead_letters(client: &impl GenericClient) -> StoreResult<u64> {
    let row = client
        .query_one(r#"SELECT count(*) FROM "_oxbase_outbox_dead""#, &[])
        .await
        .map_err(pg_err)?;
    let n: i64 = row.try_get(0).map_err(pg_err)?;
    Ok(n.max(0) as u64)
}
