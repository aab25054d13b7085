//! The outbox tables of the embedded store, and the relay's claims on them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

use super::engine::WriterState;
use super::sql_err;
use crate::error::{StoreError, StoreResult};
use crate::outbox::{EventContext, OutboxEntry, record};
use crate::write::WriteOutcome;

pub(super) fn ensure_tables(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _oxbase_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            sent_at INTEGER
        );
        CREATE INDEX IF NOT EXISTS _oxbase_outbox_pending ON _oxbase_outbox (seq) WHERE sent_at IS NULL;
        CREATE TABLE IF NOT EXISTS _oxbase_relay (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            owner TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        );",
    )
    .map_err(StoreError::backend)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Writes a committed op's event, in the op's own savepoint.
pub(super) fn insert(
    state: &WriterState,
    context: &EventContext,
    class_name: &str,
    outcome: &WriteOutcome,
) -> StoreResult<()> {
    let record = record(context, class_name, outcome)?;
    state
        .conn
        .prepare_cached(
            "INSERT INTO _oxbase_outbox (event_id, subject, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![record.event_id, record.subject, record.payload, now_ms()])
        })
        .map_err(sql_err)?;
    Ok(())
}

/// Takes or renews the relay lease for `relay`, then returns the oldest
/// pending events; `None` while another relay holds the lease.
pub(super) fn claim(
    state: &WriterState,
    relay: &str,
    lease: Duration,
    limit: usize,
) -> StoreResult<Option<Vec<OutboxEntry>>> {
    let now = now_ms();
    let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let held = state
        .conn
        .prepare_cached(
            "INSERT INTO _oxbase_relay (id, owner, expires_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET owner = ?1, expires_at = ?2
             WHERE _oxbase_relay.owner = ?1 OR _oxbase_relay.expires_at < ?3",
        )
        .and_then(|mut stmt| stmt.execute(params![relay, until, now]))
        .map_err(sql_err)?;
    if held == 0 {
        return Ok(None);
    }
    let mut stmt = state
        .conn
        .prepare_cached(
            "SELECT seq, event_id, subject, payload FROM _oxbase_outbox
             WHERE sent_at IS NULL ORDER BY seq LIMIT ?1",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok(OutboxEntry {
                seq: row.get(0)?,
                event_id: row.get(1)?,
                subject: row.get(2)?,
                payload: row.get(3)?,
            })
        })
        .map_err(sql_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_err)?;
    Ok(Some(rows))
}

pub(super) fn mark_sent(state: &WriterState, seqs: &[i64]) -> StoreResult<()> {
    // One statement for the whole batch: the writer thread is shared with
    // every object write.
    let list = serde_json::to_string(seqs).map_err(StoreError::backend)?;
    state
        .conn
        .prepare_cached(
            "UPDATE _oxbase_outbox SET sent_at = ?1 WHERE seq IN (SELECT value FROM json_each(?2))",
        )
        .and_then(|mut stmt| stmt.execute(params![now_ms(), list]))
        .map_err(sql_err)?;
    Ok(())
}

pub(super) fn prune(state: &WriterState, older_than: Duration) -> StoreResult<u64> {
    let cutoff = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
    let n = state
        .conn
        .prepare_cached("DELETE FROM _oxbase_outbox WHERE sent_at IS NOT NULL AND sent_at < ?1")
        .and_then(|mut stmt| stmt.execute([cutoff]))
        .map_err(sql_err)?;
    Ok(n as u64)
}

pub(super) fn backlog(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM _oxbase_outbox WHERE sent_at IS NULL")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(sql_err)?;
    Ok(n.max(0) as u64)
}
