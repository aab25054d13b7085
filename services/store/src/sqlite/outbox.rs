//! The outbox tables of the embedded store, and the relay's claims on them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

use super::engine::WriterState;
use super::sql_err;
use crate::error::{StoreError, StoreResult};
use crate::outbox::{EventContext, OutboxEntry, compact_record, expand_payload};
use crate::write::WriteOutcome;

pub(super) fn ensure_tables(conn: &Connection) -> StoreResult<()> {
    // Events are published in `seq` order and SQLite commits one writer at
    // a time, so what has been sent is always a prefix of the outbox: one
    // watermark (`sent_through`) replaces a per-row mark and its index,
    // which keeps the writer thread's cost per event to one append. `seq`
    // is a plain rowid (AUTOINCREMENT costs a second table write per
    // event); pruning always keeps the newest row, so a new event's seq is
    // above every seq handed out before.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _oxbase_outbox (
            seq INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS _oxbase_relay (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            owner TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            sent_through INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS _oxbase_outbox_dead (
            seq INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            payload TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );",
    )
    .map_err(StoreError::backend)?;
    // Outboxes made before the watermark marked each row instead.
    let has_watermark = conn
        .prepare("SELECT 1 FROM pragma_table_info('_oxbase_relay') WHERE name = 'sent_through'")
        .and_then(|mut stmt| stmt.exists([]))
        .map_err(StoreError::backend)?;
    if !has_watermark {
        conn.execute_batch(
            "ALTER TABLE _oxbase_relay ADD COLUMN sent_through INTEGER NOT NULL DEFAULT 0;
             UPDATE _oxbase_relay SET sent_through =
                (SELECT coalesce(max(seq), 0) FROM _oxbase_outbox WHERE sent_at IS NOT NULL);",
        )
        .map_err(StoreError::backend)?;
    }
    Ok(())
}

pub(super) fn now_ms() -> i64 {
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
    let record = compact_record(context, class_name, outcome)?;
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

/// Takes or renews the relay lease for `relay` until `until` (ms); false
/// while another relay holds it.
pub(super) fn take_lease(state: &WriterState, relay: &str, until: i64) -> StoreResult<bool> {
    let held = state
        .conn
        .prepare_cached(
            "INSERT INTO _oxbase_relay (id, owner, expires_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET owner = ?1, expires_at = ?2
             WHERE _oxbase_relay.owner = ?1 OR _oxbase_relay.expires_at < ?3",
        )
        .and_then(|mut stmt| stmt.execute(params![relay, until, now_ms()]))
        .map_err(sql_err)?;
    Ok(held > 0)
}

/// Ends `relay`'s lease now, if it holds it.
pub(super) fn release_lease(state: &WriterState, relay: &str) -> StoreResult<()> {
    state
        .conn
        .prepare_cached("UPDATE _oxbase_relay SET expires_at = 0 WHERE id = 1 AND owner = ?1")
        .and_then(|mut stmt| stmt.execute(params![relay]))
        .map_err(sql_err)?;
    Ok(())
}

/// The oldest events past the watermark.
pub(super) fn pending(conn: &Connection, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, event_id, subject, payload FROM _oxbase_outbox
             WHERE seq > coalesce((SELECT sent_through FROM _oxbase_relay WHERE id = 1), 0)
             ORDER BY seq LIMIT ?1",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(sql_err)?
        .collect::<Result<Vec<(i64, String, String, String)>, _>>()
        .map_err(sql_err)?;
    rows.into_iter()
        .map(|(seq, event_id, subject, payload)| {
            Ok(OutboxEntry {
                seq,
                payload: expand_payload(&event_id, payload)?,
                event_id,
                subject,
            })
        })
        .collect()
}

/// Moves the watermark past `seqs`, which the relay sends as the leading
/// part of what it claimed.
pub(super) fn mark_sent(state: &WriterState, seqs: &[i64]) -> StoreResult<()> {
    let Some(last) = seqs.iter().max() else {
        return Ok(());
    };
    state
        .conn
        .prepare_cached(
            "UPDATE _oxbase_relay SET sent_through = max(sent_through, ?1) WHERE id = 1",
        )
        .and_then(|mut stmt| stmt.execute([last]))
        .map_err(sql_err)?;
    Ok(())
}

/// Deletes sent events recorded longer ago than `older_than`, except the
/// newest one (see `ensure_tables`).
pub(super) fn prune(state: &WriterState, older_than: Duration) -> StoreResult<u64> {
    let cutoff = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
    let n = state
        .conn
        .prepare_cached(
            "DELETE FROM _oxbase_outbox WHERE created_at < ?1
             AND seq <= coalesce((SELECT sent_through FROM _oxbase_relay WHERE id = 1), 0)
             AND seq < (SELECT max(seq) FROM _oxbase_outbox)",
        )
        .and_then(|mut stmt| stmt.execute([cutoff]))
        .map_err(sql_err)?;
    Ok(n as u64)
}

pub(super) fn backlog(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM _oxbase_outbox
             WHERE seq > coalesce((SELECT sent_through FROM _oxbase_relay WHERE id = 1), 0)",
        )
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(sql_err)?;
    Ok(n.max(0) as u64)
}

/// Copies the event `seq` aside and moves the watermark past it: it is
/// the oldest pending event, so what has been passed stays a prefix.
pub(super) fn dead_letter(state: &WriterState, seq: i64, reason: &str) -> StoreResult<()> {
    state
        .conn
        .prepare_cached(
            "INSERT OR IGNORE INTO _oxbase_outbox_dead
                (seq, event_id, subject, payload, reason, created_at)
             SELECT seq, event_id, subject, payload, ?2, ?3 FROM _oxbase_outbox WHERE seq = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![seq, reason, now_ms()]))
        .map_err(sql_err)?;
    mark_sent(state, &[seq])
}

pub(super) fn dead_letters(conn: &Connection) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM _oxbase_outbox_dead")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(sql_err)?;
    Ok(n.max(0) as u64)
}
