//! The one path every MongoDB write takes: inserts, `findOneAndUpdate`
//! and `findOneAndDelete` with the precondition in the filter (so the
//! check and the change are one atomic step on the document), and the
//! relation rows in the join collections.
//!
//! Atomic batches run in a multi-document transaction when the server is a
//! replica set or a sharded cluster. A standalone server has no
//! transactions; there, a batch applies its ops one by one while keeping
//! an undo journal, and the first failure undoes what was done, newest
//! first. What that still guarantees: a failed batch leaves no change
//! behind unless the process dies or the server fails mid-batch, and
//! every single op is atomic on its document. What it cannot: other
//! clients may see a batch's earlier ops before it finishes (or before it
//! is undone), and an undo overwrites changes others made to the same
//! documents in between.
//!
//! Events go to the outbox (`outbox`) in the transaction of their writes
//! where the server has transactions, so there every op with events runs
//! in one, even an op on a single document; where it has none, they are
//! inserted right after the writes succeeded.

use std::time::{Duration, Instant};

use mongodb::ClientSession;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT;
use mongodb::options::{ReadPreference, ReturnDocument, SelectionCriteria};

use super::MongoStore;
use super::errors::OpError;
use super::filter::{NearOrder, filter_document};
use super::transform::{AUTH_DATA_PREFIX, document_for_create, object_from_document, stored_id};
use super::update::{needs_providers, normalize, simulate, update_document};
use crate::error::{StoreError, StoreResult};
use crate::outbox::EventContext;
use crate::query::{FieldPath, Filter, Object};
use crate::schema::{SchemaView, join_class_name};
use crate::write::{RelationChange, UpdateOp, WriteBatch, WriteOp, WriteOutcome};

/// How long a transaction that conflicted with another (or could not tell
/// whether it committed) is tried again. The driver's `withTransaction`
/// allows 120 seconds; a client waiting for its answer deserves less.
/// Conflicts are common once every write with events is a transaction: a
/// transaction that writes a document another one has written aborts at
/// once rather than waiting for it.
const TRANSACTION_TIME_LIMIT: Duration = Duration::from_secs(10);

/// The longest pause between attempts of a conflicting transaction.
const MAX_TRANSACTION_PAUSE: Duration = Duration::from_millis(100);

/// Runs a driver action in the session, if there is one.
macro_rules! in_session {
    ($action:expr, $session:expr) => {{
        let action = $action;
        match $session {
            Some(session) => action.session(session).await,
            None => action.await,
        }
    }};
}

/// How to take back one applied step when a batch without a transaction
/// fails.
#[derive(Debug)]
enum Undo {
    Remove {
        collection: String,
        id: Bson,
    },
    Restore {
        collection: String,
        document: Document,
    },
    Reinsert {
        collection: String,
        document: Document,
    },
}

type Journal = Vec<Undo>;

fn op_has_relations(op: &WriteOp) -> bool {
    match op {
        WriteOp::Create { relations, .. } | WriteOp::Update { relations, .. } => relations
            .iter()
            .any(|r| !r.add.is_empty() || !r.remove.is_empty()),
        WriteOp::Delete { .. } => false,
    }
}

/// Join collections are named after the class and key; neither may hold
/// what a collection name cannot.
fn check_relation_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.contains(['$', '\0', ':']) {
        return Err(StoreError::InvalidUpdate(format!(
            "invalid relation key: {key:?}"
        )));
    }
    Ok(())
}

impl MongoStore {
    pub(super) async fn write_batch(
        &self,
        schemas: &SchemaView,
        batch: WriteBatch,
    ) -> StoreResult<Vec<StoreResult<WriteOutcome>>> {
        let events = batch.events.as_ref();
        if events.is_some() {
            self.ensure_outbox().await?;
        }
        if batch.atomic {
            let outcomes = if self.transactions {
                self.in_transaction(schemas, &batch.ops, events).await?
            } else {
                self.with_undo(schemas, &batch.ops, events).await?
            };
            return Ok(outcomes.into_iter().map(Ok).collect());
        }
        let mut out = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let ops = std::slice::from_ref(op);
            // An op touching join collections or the outbox too is
            // all-or-nothing on its own; one touching a single document
            // already is.
            let result = if self.transactions && (events.is_some() || op_has_relations(op)) {
                self.in_transaction(schemas, ops, events).await
            } else {
                self.with_undo(schemas, ops, events).await
            };
            out.push(result.and_then(|mut outcomes| {
                outcomes
                    .pop()
                    .ok_or_else(|| StoreError::backend_message("a write produced no outcome"))
            }));
        }
        Ok(out)
    }

    /// Applies `ops` in order; on the first failure, undoes the ones
    /// before it (see the module comment for what that guarantees). Then
    /// leaves their events, if any.
    async fn with_undo(
        &self,
        schemas: &SchemaView,
        ops: &[WriteOp],
        events: Option<&EventContext>,
    ) -> StoreResult<Vec<WriteOutcome>> {
        // Most refusals are the ops' own (a bad key, an operator that does
        // not fit): find them before anything is written, so fewer batches
        // need undoing.
        if ops.len() > 1 {
            ops.iter().try_for_each(|op| prevalidate(schemas, op))?;
        }
        let mut journal = Journal::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            match self.apply_op(schemas, op, None, &mut journal).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(failure) => {
                    self.undo(journal).await;
                    return Err(failure.error);
                }
            }
        }
        if let Some(context) = events {
            // No undo when this fails: the insert may have landed all the
            // same, and an event must never outlive its write.
            self.insert_events(context, ops, &outcomes, None)
                .await
                .map_err(|failure| failure.error)?;
        }
        Ok(outcomes)
    }

    async fn undo(&self, journal: Journal) {
        for step in journal.into_iter().rev() {
            let result = match &step {
                Undo::Remove { collection, id } => self
                    .primary_collection(collection)
                    .delete_one(doc! {"_id": id.clone()})
                    .await
                    .map(|_| ()),
                Undo::Restore {
                    collection,
                    document,
                } => {
                    let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                    self.primary_collection(collection)
                        .replace_one(doc! {"_id": id}, document.clone())
                        .await
                        .map(|_| ())
                }
                Undo::Reinsert {
                    collection,
                    document,
                } => self
                    .primary_collection(collection)
                    .insert_one(document.clone())
                    .await
                    .map(|_| ()),
            };
            if let Err(err) = result {
                tracing::error!(?step, %err, "could not undo a step of a failed batch");
            }
        }
    }

    /// Applies `ops` and leaves their events in one transaction, trying
    /// again while it conflicts with another (the server labels such
    /// errors transient), with a growing pause so the other can finish.
    async fn in_transaction(
        &self,
        schemas: &SchemaView,
        ops: &[WriteOp],
        events: Option<&EventContext>,
    ) -> StoreResult<Vec<WriteOutcome>> {
        let deadline = Instant::now() + TRANSACTION_TIME_LIMIT;
        let mut pause = Duration::from_millis(2);
        loop {
            match self
                .transaction_attempt(schemas, ops, events, deadline)
                .await
            {
                Err(failure) if failure.transient && Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_TRANSACTION_PAUSE);
                }
                Err(failure) => return Err(failure.error),
                Ok(outcomes) => return Ok(outcomes),
            }
        }
    }

    async fn transaction_attempt(
        &self,
        schemas: &SchemaView,
        ops: &[WriteOp],
        events: Option<&EventContext>,
        deadline: Instant,
    ) -> Result<Vec<WriteOutcome>, OpError> {
        let mut session = self.client.start_session().await.map_err(OpError::write)?;
        // Transactions read from the primary whatever reads elsewhere do.
        session
            .start_transaction()
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .await
            .map_err(OpError::write)?;
        match self
            .apply_in_session(schemas, ops, events, &mut session)
            .await
        {
            Ok(outcomes) => {
                commit(&mut session, deadline).await?;
                Ok(outcomes)
            }
            Err(failure) => {
                if let Err(err) = session.abort_transaction().await {
                    tracing::warn!(%err, "could not abort a transaction");
                }
                Err(failure)
            }
        }
    }

    /// The ops, then their events, in the session's transaction.
    async fn apply_in_session(
        &self,
        schemas: &SchemaView,
        ops: &[WriteOp],
        events: Option<&EventContext>,
        session: &mut ClientSession,
    ) -> Result<Vec<WriteOutcome>, OpError> {
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut unused = Journal::new();
        for op in ops {
            outcomes.push(
                self.apply_op(schemas, op, Some(&mut *session), &mut unused)
                    .await?,
            );
        }
        if let Some(context) = events {
            self.insert_events(context, ops, &outcomes, Some(session))
                .await?;
        }
        Ok(outcomes)
    }

    async fn apply_op(
        &self,
        schemas: &SchemaView,
        op: &WriteOp,
        session: Option<&mut ClientSession>,
        journal: &mut Journal,
    ) -> Result<WriteOutcome, OpError> {
        match op {
            WriteOp::Create {
                class_name,
                object,
                relations,
            } => {
                self.create(class_name, object, relations, session, journal)
                    .await
            }
            WriteOp::Update {
                class_name,
                object_id,
                updated_at,
                changes,
                relations,
                precondition,
            } => {
                let update = Update {
                    class_name,
                    object_id,
                    updated_at,
                    changes,
                    relations,
                    precondition,
                };
                self.update(schemas, update, session, journal).await
            }
            WriteOp::Delete {
                class_name,
                object_id,
                precondition,
            } => {
                self.delete(
                    schemas,
                    class_name,
                    object_id,
                    precondition,
                    session,
                    journal,
                )
                .await
            }
        }
    }

    async fn create(
        &self,
        class_name: &str,
        object: &Object,
        relations: &[RelationChange],
        mut session: Option<&mut ClientSession>,
        journal: &mut Journal,
    ) -> Result<WriteOutcome, OpError> {
        super::schema::check_class_name(class_name)
            .map_err(|e| StoreError::InvalidUpdate(e.to_string()))?;
        let document = document_for_create(class_name, object)?;
        let id = document.get("_id").cloned().unwrap_or(Bson::Null);
        let collection = self.primary_collection(class_name);
        in_session!(collection.insert_one(&document), session.as_deref_mut())
            .map_err(OpError::write)?;
        journal.push(Undo::Remove {
            collection: class_name.to_owned(),
            id: id.clone(),
        });
        let owner = object
            .get("objectId")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.apply_relations(class_name, &owner, relations, session, journal)
            .await?;
        let mut stored = object.clone();
        stored.retain(|_, v| !v.is_null());
        Ok(WriteOutcome::Created(stored))
    }

    /// `{_id: id}` and the precondition, resolved.
    async fn target_filter(
        &self,
        schemas: &SchemaView,
        class: &crate::schema::ClassSchema,
        object_id: &str,
        precondition: &Filter,
    ) -> StoreResult<Document> {
        let precondition = self.resolve(schemas, class, precondition).await?;
        let precondition = filter_document(class, &precondition, NearOrder::None)?;
        let id = doc! {"_id": {"$eq": stored_id(&class.class_name, object_id)}};
        Ok(if precondition.is_empty() {
            id
        } else {
            doc! {"$and": [id, precondition]}
        })
    }

    async fn update(
        &self,
        schemas: &SchemaView,
        op: Update<'_>,
        mut session: Option<&mut ClientSession>,
        journal: &mut Journal,
    ) -> Result<WriteOutcome, OpError> {
        let class = schemas.get(op.class_name).ok_or(StoreError::NotFound)?;
        let filter = self
            .target_filter(schemas, class, op.object_id, op.precondition)
            .await?;
        let providers = if needs_providers(class, op.changes) {
            self.auth_providers(op.object_id, session.as_deref_mut())
                .await?
        } else {
            Vec::new()
        };
        let changes = normalize(class, op.changes, &providers)?;
        let update = update_document(class, &changes, op.updated_at)?;
        let collection = self.primary_collection(op.class_name);
        let before = in_session!(
            collection
                .find_one_and_update(filter, update)
                .return_document(ReturnDocument::Before),
            session.as_deref_mut()
        )
        .map_err(OpError::write)?
        .ok_or(StoreError::NotFound)?;
        journal.push(Undo::Restore {
            collection: op.class_name.to_owned(),
            document: before.clone(),
        });
        let before = object_from_document(class, &before);
        let after = match simulate(class, &before, &changes, op.updated_at) {
            Ok(after) => after,
            // Mongo applied it; memory could not follow. Read what it did.
            Err(_) => {
                let stored = in_session!(
                    collection.find_one(doc! {"_id": stored_id(op.class_name, op.object_id)}),
                    session.as_deref_mut()
                )
                .map_err(OpError::write)?
                .ok_or(StoreError::NotFound)?;
                object_from_document(class, &stored)
            }
        };
        self.apply_relations(op.class_name, op.object_id, op.relations, session, journal)
            .await?;
        Ok(WriteOutcome::Updated { before, after })
    }

    /// The auth providers a user has linked.
    async fn auth_providers(
        &self,
        object_id: &str,
        session: Option<&mut ClientSession>,
    ) -> Result<Vec<String>, OpError> {
        let collection = self.primary_collection("_User");
        let stored = in_session!(collection.find_one(doc! {"_id": object_id}), session)
            .map_err(OpError::write)?;
        Ok(stored
            .map(|doc| {
                doc.keys()
                    .filter_map(|key| key.strip_prefix(AUTH_DATA_PREFIX))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn delete(
        &self,
        schemas: &SchemaView,
        class_name: &str,
        object_id: &str,
        precondition: &Filter,
        session: Option<&mut ClientSession>,
        journal: &mut Journal,
    ) -> Result<WriteOutcome, OpError> {
        let class = schemas.get(class_name).ok_or(StoreError::NotFound)?;
        let filter = self
            .target_filter(schemas, class, object_id, precondition)
            .await?;
        let collection = self.primary_collection(class_name);
        let before = in_session!(collection.find_one_and_delete(filter), session)
            .map_err(OpError::write)?
            .ok_or(StoreError::NotFound)?;
        journal.push(Undo::Reinsert {
            collection: class_name.to_owned(),
            document: before.clone(),
        });
        Ok(WriteOutcome::Deleted(object_from_document(class, &before)))
    }

    /// Rows of the join collections, written as Parse writes them: an
    /// upsert of `{relatedId, owningId}` per added object (so `_id` is a
    /// driver ObjectId) and a `deleteMany` per removed one.
    async fn apply_relations(
        &self,
        class_name: &str,
        owner: &str,
        relations: &[RelationChange],
        mut session: Option<&mut ClientSession>,
        journal: &mut Journal,
    ) -> Result<(), OpError> {
        for change in relations {
            check_relation_key(&change.key)?;
            let name = join_class_name(&change.key, class_name);
            let join = self.primary_collection(&name);
            for related in &change.add {
                let row = doc! {"relatedId": related, "owningId": owner};
                let result = in_session!(
                    join.update_one(row.clone(), doc! {"$set": row})
                        .upsert(true),
                    session.as_deref_mut()
                )
                .map_err(OpError::write)?;
                if let Some(id) = result.upserted_id {
                    journal.push(Undo::Remove {
                        collection: name.clone(),
                        id,
                    });
                }
            }
            for related in &change.remove {
                let row = doc! {"relatedId": related, "owningId": owner};
                let result = in_session!(join.delete_many(row.clone()), session.as_deref_mut())
                    .map_err(OpError::write)?;
                if result.deleted_count > 0 {
                    journal.push(Undo::Reinsert {
                        collection: name.clone(),
                        document: row,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Translates an op without running it, to refuse what would fail
/// translation anyway.
fn prevalidate(schemas: &SchemaView, op: &WriteOp) -> StoreResult<()> {
    match op {
        WriteOp::Create {
            class_name,
            object,
            relations,
        } => {
            super::schema::check_class_name(class_name)
                .map_err(|e| StoreError::InvalidUpdate(e.to_string()))?;
            document_for_create(class_name, object)?;
            relations
                .iter()
                .try_for_each(|r| check_relation_key(&r.key))
        }
        WriteOp::Update {
            class_name,
            updated_at,
            changes,
            relations,
            ..
        } => {
            let Some(class) = schemas.get(class_name) else {
                return Err(StoreError::NotFound);
            };
            // Removing all auth data needs the stored providers; any list
            // translates the same way.
            let changes = normalize(class, changes, &[])?;
            update_document(class, &changes, updated_at)?;
            relations
                .iter()
                .try_for_each(|r| check_relation_key(&r.key))
        }
        WriteOp::Delete { class_name, .. } => match schemas.get(class_name) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound),
        },
    }
}

/// The parts of an update op.
struct Update<'a> {
    class_name: &'a str,
    object_id: &'a str,
    updated_at: &'a str,
    changes: &'a [(FieldPath, UpdateOp)],
    relations: &'a [RelationChange],
    precondition: &'a Filter,
}

/// Commits, retrying until `deadline` while the server cannot say whether
/// it committed (committing again is safe: the server remembers).
async fn commit(session: &mut ClientSession, deadline: Instant) -> Result<(), OpError> {
    loop {
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(err)
                if err.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && Instant::now() < deadline => {}
            Err(err) => return Err(OpError::write(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_checked_before_anything_is_written() {
        let schemas = SchemaView::new([crate::schema::ClassSchema::new("A")]);
        let mut object = Object::new();
        object.insert("objectId".into(), "a".into());
        object.insert("createdAt".into(), "2024-01-01T00:00:00.000Z".into());
        object.insert("updatedAt".into(), "2024-01-01T00:00:00.000Z".into());
        let create = |object: Object| WriteOp::Create {
            class_name: "A".into(),
            object,
            relations: vec![],
        };
        assert!(prevalidate(&schemas, &create(object.clone())).is_ok());
        let mut bad = object.clone();
        bad.insert("$where".into(), "1".into());
        assert!(matches!(
            prevalidate(&schemas, &create(bad)),
            Err(StoreError::InvalidUpdate(_))
        ));
        let update = |class_name: &str, op: UpdateOp| WriteOp::Update {
            class_name: class_name.into(),
            object_id: "a".into(),
            updated_at: "2024-01-02T00:00:00.000Z".into(),
            changes: vec![(FieldPath::new("n"), op)],
            relations: vec![],
            precondition: Filter::All,
        };
        assert!(prevalidate(&schemas, &update("A", UpdateOp::Increment(1.into()))).is_ok());
        assert!(matches!(
            prevalidate(&schemas, &update("Missing", UpdateOp::Delete)),
            Err(StoreError::NotFound)
        ));
        let delete = WriteOp::Delete {
            class_name: "Missing".into(),
            object_id: "a".into(),
            precondition: Filter::All,
        };
        assert!(prevalidate(&schemas, &delete).is_err());
    }

    #[test]
    fn relation_keys_cannot_escape_their_collection_name() {
        assert!(check_relation_key("likes").is_ok());
        for key in ["", "a$b", "a:b", "nul\0"] {
            assert!(check_relation_key(key).is_err(), "{key:?}");
        }
        let op = WriteOp::Delete {
            class_name: "A".into(),
            object_id: "a".into(),
            precondition: Filter::All,
        };
        assert!(!op_has_relations(&op));
        let op = WriteOp::Create {
            class_name: "A".into(),
            object: Object::new(),
            relations: vec![RelationChange {
                key: "k".into(),
                add: vec![],
                remove: vec![],
            }],
        };
        assert!(
            !op_has_relations(&op),
            "empty relation changes need no transaction"
        );
    }
}
