//! The transactional outbox on MongoDB, in collections beside Parse
//! Server's (which ignores collections it does not know):
//!
//! - `_oxbase_outbox`: one row per event, `{_id: seq, event_id, subject,
//!   payload, created_at, sent, sent_at}`;
//! - `_oxbase_relay`: the relay lease, `{_id: 1, owner, expires_at}`;
//! - `_oxbase_counters`: `{_id: "outbox", seq}`, which hands out seqs.
//!
//! On a replica set or a sharded cluster an op's events are inserted in
//! the op's transaction, so a committed write always has its event and an
//! aborted one never does.
//!
//! A standalone server has no transactions. There the object is written
//! first and its event right after, and the write is answered only once
//! the event is stored. What still holds:
//!
//! - an acknowledged write always has its event, since the response waits
//!   for the outbox insert;
//! - a crash between the object write and the outbox insert (or a failed
//!   insert, which the client gets as an error) can lose that one event,
//!   for a write the client never saw acknowledged; the write itself stays;
//! - the reverse, an event for a write that did not happen, cannot occur:
//!   an event is inserted only after all its batch's writes succeeded, and
//!   nothing undoes a write once its event may exist;
//! - what is lost is per-object order between writes racing on the same
//!   object: without a transaction holding the object while its seq is
//!   handed out, two such writes may leave their events in either order.
//!
//! Lease expiry and sent times are the server's clock (`$$NOW`,
//! `$currentDate`), as PostgreSQL's `now()`, so relays on hosts whose
//! clocks disagree still agree on whose lease it is. That needs MongoDB
//! 4.2 or later.

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::IndexModel;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};

use super::MongoStore;
use super::errors::{DUPLICATE_KEY, OpError, has_code};
use crate::error::{StoreError, StoreResult};
use crate::outbox::{EventContext, OutboxEntry, OutboxRecord, record};
use crate::write::{WriteOp, WriteOutcome};

pub(super) const OUTBOX_COLLECTION: &str = "_oxbase_outbox";
pub(super) const RELAY_COLLECTION: &str = "_oxbase_relay";
pub(super) const COUNTERS_COLLECTION: &str = "_oxbase_counters";
/// Events moved aside: the outbox row with `reason` and `dead_at`.
pub(super) const DEAD_COLLECTION: &str = "_oxbase_outbox_dead";

/// The `_id` of the one lease document, as PostgreSQL's single row.
const LEASE_ID: i32 = 1;
/// The `_id` of the outbox's counter in `_oxbase_counters`.
const OUTBOX_COUNTER: &str = "outbox";

/// How often an upsert that lost a race on `_id` to another process's
/// upsert is tried again (once: the document then exists).
const UPSERT_ATTEMPTS: usize = 2;

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The index the relay reads pending events by, oldest first.
fn pending_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! {"sent": 1, "_id": 1})
        .options(
            IndexOptions::builder()
                .name("_oxbase_outbox_pending".to_owned())
                .build(),
        )
        .build()
}

fn pending_filter() -> Document {
    doc! {"sent": false}
}

/// The outbox row of an event.
fn outbox_row(seq: i64, record: &OutboxRecord, created_at: DateTime) -> Document {
    doc! {
        "_id": seq,
        "event_id": record.event_id.as_str(),
        "subject": record.subject.as_str(),
        "payload": record.payload.as_str(),
        "created_at": created_at,
        "sent": false,
    }
}

fn entry_from_row(row: &Document) -> StoreResult<OutboxEntry> {
    let text = |key: &str| {
        row.get_str(key)
            .map(str::to_owned)
            .map_err(|e| StoreError::backend_context("outbox row", e))
    };
    Ok(OutboxEntry {
        seq: integer(row, "_id")?,
        event_id: text("event_id")?,
        subject: text("subject")?,
        payload: text("payload")?,
    })
}

/// An integer field, whichever width the server stored it in.
fn integer(document: &Document, key: &str) -> StoreResult<i64> {
    match document.get(key) {
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        other => Err(StoreError::backend_message(format!(
            "outbox: {key} is not an integer: {other:?}"
        ))),
    }
}

/// The first of the `n` seqs an `$inc` by `n` handed out, from the counter
/// it returned.
fn first_seq(counter: &Document, n: i64) -> StoreResult<i64> {
    Ok(integer(counter, "seq")? - n + 1)
}

/// The lease update: `relay` takes the lease when it holds it already or
/// the lease has expired, and otherwise nothing changes. The condition is
/// in the update, not the filter, because an upsert's filter cannot use
/// `$expr`, and only `$expr` reads the server's clock. On the upsert's
/// fresh document `expires_at` is missing, which sorts before any date,
/// so the first relay takes it.
fn lease_update(relay: &str, lease: Duration) -> Vec<Document> {
    let take = doc! {"$or": [
        {"$eq": ["$owner", {"$literal": relay}]},
        {"$lt": ["$expires_at", "$$NOW"]},
    ]};
    vec![doc! {"$set": {
        "owner": {"$cond": [take.clone(), {"$literal": relay}, "$owner"]},
        "expires_at": {"$cond": [take, {"$add": ["$$NOW", millis(lease)]}, "$expires_at"]},
    }}]
}

fn sent_filter(seqs: &[i64]) -> Document {
    doc! {"_id": {"$in": seqs}, "sent": false}
}

fn sent_update() -> Document {
    doc! {"$set": {"sent": true}, "$currentDate": {"sent_at": true}}
}

fn prune_filter(older_than: Duration) -> Document {
    doc! {
        "sent": true,
        "$expr": {"$lt": ["$sent_at", {"$subtract": ["$$NOW", millis(older_than)]}]},
    }
}

impl MongoStore {
    /// Creates the outbox and its pending index once per process, before
    /// anything reads it or a transaction inserts into it (servers before
    /// 4.4, and cross-shard transactions, cannot create a collection inside
    /// a transaction).
    pub(super) async fn ensure_outbox(&self) -> StoreResult<()> {
        self.outbox_ready
            .get_or_try_init(|| async {
                self.primary_collection(OUTBOX_COLLECTION)
                    .create_index(pending_index())
                    .await
                    .map(|_| ())
                    .map_err(StoreError::backend)
            })
            .await
            .map(|_| ())
    }

    /// Leaves the events of applied `ops` in the outbox, in `session`'s
    /// transaction when there is one.
    ///
    /// Seqs come from a counter document, `$inc`ed outside the transaction
    /// and after the ops' writes. Outside, because every event would
    /// otherwise write the same document inside its transaction, and
    /// concurrent transactions writing one document abort each other:
    /// every write with events would conflict with every other. After the
    /// writes, because the transaction then holds the objects it wrote
    /// until it ends, so a later write to the same object (which must wait
    /// for that, or conflict and start over) takes its seq later: seqs
    /// follow commit order for each object, which is the order the relay
    /// must keep. Across objects they may not, which does not matter;
    /// aborted transactions leave gaps, which the relay does not mind.
    pub(super) async fn insert_events(
        &self,
        context: &EventContext,
        ops: &[WriteOp],
        outcomes: &[WriteOutcome],
        session: Option<&mut ClientSession>,
    ) -> Result<(), OpError> {
        let records = ops
            .iter()
            .zip(outcomes)
            .map(|(op, outcome)| record(context, op.class_name(), outcome))
            .collect::<StoreResult<Vec<_>>>()?;
        if records.is_empty() {
            return Ok(());
        }
        let count = i64::try_from(records.len()).unwrap_or(i64::MAX);
        let first = self.reserve_seqs(count).await?;
        let created_at = DateTime::now();
        let rows: Vec<Document> = (first..)
            .zip(&records)
            .map(|(seq, record)| outbox_row(seq, record, created_at))
            .collect();
        let outbox = self.primary_collection(OUTBOX_COLLECTION);
        let insert = outbox.insert_many(rows);
        match session {
            Some(session) => insert.session(session).await,
            None => insert.await,
        }
        .map_err(OpError::write)?;
        Ok(())
    }

    /// Hands out `n` consecutive seqs and returns the first.
    async fn reserve_seqs(&self, n: i64) -> StoreResult<i64> {
        let counters = self.primary_collection(COUNTERS_COLLECTION);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = counters
                .find_one_and_update(doc! {"_id": OUTBOX_COUNTER}, doc! {"$inc": {"seq": n}})
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match result {
                Ok(Some(counter)) => return first_seq(&counter, n),
                Ok(None) => {
                    return Err(StoreError::backend_message(
                        "the outbox counter upsert returned nothing",
                    ));
                }
                Err(err) if has_code(&err, DUPLICATE_KEY) && attempt < UPSERT_ATTEMPTS => {}
                Err(err) => return Err(StoreError::backend(err)),
            }
        }
    }

    /// Takes or renews the lease for `relay`; false while another relay
    /// holds it.
    async fn take_lease(&self, relay: &str, lease: Duration) -> StoreResult<bool> {
        let relays = self.primary_collection(RELAY_COLLECTION);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = relays
                .find_one_and_update(doc! {"_id": LEASE_ID}, lease_update(relay, lease))
                .upsert(true)
                .return_document(ReturnDocument::After)
                .projection(doc! {"owner": 1})
                .await;
            match result {
                Ok(lease) => {
                    return Ok(lease.is_some_and(|lease| lease.get_str("owner") == Ok(relay)));
                }
                // Another relay's first upsert won; the document exists now.
                Err(err) if has_code(&err, DUPLICATE_KEY) && attempt < UPSERT_ATTEMPTS => {}
                Err(err) => return Err(StoreError::backend(err)),
            }
        }
    }

    /// Ends `relay`'s lease now, if it holds it.
    pub(super) async fn outbox_release_lease(&self, relay: &str) -> StoreResult<()> {
        self.primary_collection(RELAY_COLLECTION)
            .update_one(
                doc! {"_id": LEASE_ID, "owner": relay},
                doc! {"$set": {"expires_at": DateTime::from_millis(0)}},
            )
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    pub(super) async fn outbox_claim_entries(
        &self,
        relay: &str,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Option<Vec<OutboxEntry>>> {
        self.ensure_outbox().await?;
        if !self.take_lease(relay, lease).await? {
            return Ok(None);
        }
        // A limit of 0 means none to Mongo.
        if limit == 0 {
            return Ok(Some(Vec::new()));
        }
        let rows: Vec<Document> = self
            .primary_collection(OUTBOX_COLLECTION)
            .find(pending_filter())
            .sort(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(StoreError::backend)?
            .try_collect()
            .await
            .map_err(StoreError::backend)?;
        rows.iter()
            .map(entry_from_row)
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    pub(super) async fn outbox_mark_sent(&self, seqs: &[i64]) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.primary_collection(OUTBOX_COLLECTION)
            .update_many(sent_filter(seqs), sent_update())
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    /// Copies the event `seq` aside, then marks it sent. Copying first
    /// (an upsert, so a second try is harmless) means a crash between the
    /// two leaves it pending, never lost.
    pub(super) async fn outbox_move_aside(&self, seq: i64, reason: &str) -> StoreResult<()> {
        let Some(mut row) = self
            .primary_collection(OUTBOX_COLLECTION)
            .find_one(doc! {"_id": seq})
            .await
            .map_err(StoreError::backend)?
        else {
            return Ok(());
        };
        row.insert("reason", reason);
        row.insert("dead_at", DateTime::now());
        self.primary_collection(DEAD_COLLECTION)
            .replace_one(doc! {"_id": seq}, row)
            .upsert(true)
            .await
            .map_err(StoreError::backend)?;
        self.outbox_mark_sent(&[seq]).await
    }

    pub(super) async fn outbox_delete_sent(&self, older_than: Duration) -> StoreResult<u64> {
        self.primary_collection(OUTBOX_COLLECTION)
            .delete_many(prune_filter(older_than))
            .await
            .map(|result| result.deleted_count)
            .map_err(StoreError::backend)
    }

    pub(super) async fn outbox_pending_count(&self) -> StoreResult<u64> {
        self.ensure_outbox().await?;
        self.primary_collection(OUTBOX_COLLECTION)
            .count_documents(pending_filter())
            .await
            .map_err(StoreError::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OutboxRecord {
        OutboxRecord {
            event_id: "ev1".into(),
            subject: "ox.events.Ev.created".into(),
            payload: r#"{"id":"ev1"}"#.into(),
        }
    }

    #[test]
    fn rows_are_pending_events_keyed_by_seq() {
        let at = DateTime::from_millis(1_714_557_600_123);
        let row = outbox_row(42, &sample(), at);
        assert_eq!(
            row,
            doc! {
                "_id": 42_i64,
                "event_id": "ev1",
                "subject": "ox.events.Ev.created",
                "payload": r#"{"id":"ev1"}"#,
                "created_at": at,
                "sent": false,
            }
        );
        assert_eq!(row.get("_id"), Some(&Bson::Int64(42)));
        assert_eq!(
            entry_from_row(&row).unwrap(),
            OutboxEntry {
                seq: 42,
                event_id: "ev1".into(),
                subject: "ox.events.Ev.created".into(),
                payload: r#"{"id":"ev1"}"#.into(),
            }
        );
        // The pending filter matches a fresh row, and the index serves it
        // in seq order.
        assert_eq!(pending_filter(), doc! {"sent": false});
        assert_eq!(pending_index().keys, doc! {"sent": 1, "_id": 1});
        let mut narrow = row.clone();
        narrow.insert("_id", 7_i32);
        assert_eq!(entry_from_row(&narrow).unwrap().seq, 7);
        narrow.remove("subject");
        assert!(entry_from_row(&narrow).is_err());
    }

    #[test]
    fn seqs_are_the_range_an_increment_handed_out() {
        assert_eq!(
            first_seq(&doc! {"_id": "outbox", "seq": 10_i64}, 3).unwrap(),
            8
        );
        assert_eq!(
            first_seq(&doc! {"_id": "outbox", "seq": 1_i64}, 1).unwrap(),
            1
        );
        assert_eq!(
            first_seq(&doc! {"_id": "outbox", "seq": 5_i32}, 5).unwrap(),
            1
        );
        assert!(first_seq(&doc! {"_id": "outbox"}, 1).is_err());
    }

    #[test]
    fn the_lease_goes_to_its_holder_or_after_it_expires() {
        let take = doc! {"$or": [
            {"$eq": ["$owner", {"$literal": "relay-a"}]},
            {"$lt": ["$expires_at", "$$NOW"]},
        ]};
        assert_eq!(
            lease_update("relay-a", Duration::from_secs(10)),
            vec![doc! {"$set": {
                "owner": {"$cond": [take.clone(), {"$literal": "relay-a"}, "$owner"]},
                "expires_at": {"$cond": [take, {"$add": ["$$NOW", 10_000_i64]}, "$expires_at"]},
            }}]
        );
        // A relay id that looks like a field path stays a literal.
        let update = lease_update("$expires_at", Duration::ZERO);
        let owner = update[0]
            .get_document("$set")
            .unwrap()
            .get_document("owner")
            .unwrap()
            .get_array("$cond")
            .unwrap();
        assert_eq!(owner[1], Bson::Document(doc! {"$literal": "$expires_at"}));
    }

    #[test]
    fn sent_rows_are_marked_once_and_pruned_by_age() {
        assert_eq!(
            sent_filter(&[3, 4]),
            doc! {"_id": {"$in": [3_i64, 4_i64]}, "sent": false}
        );
        assert_eq!(
            sent_update(),
            doc! {"$set": {"sent": true}, "$currentDate": {"sent_at": true}}
        );
        // Pending rows have no `sent_at`, which `$lt` would take as older
        // than any date: the `sent` test keeps them.
        assert_eq!(
            prune_filter(Duration::from_secs(60)),
            doc! {
                "sent": true,
                "$expr": {"$lt": ["$sent_at", {"$subtract": ["$$NOW", 60_000_i64]}]},
            }
        );
    }
}
