//! Update operators as MongoDB update documents (`MongoTransform.
//! transformUpdate`), and the object an update leaves behind, computed
//! from the one before it.
//!
//! Each operator maps to Mongo's own (`$set`, `$unset`, `$inc`, `$push`,
//! `$addToSet`, `$pullAll`), so one `findOneAndUpdate` applies a whole
//! update atomically on the server, as Parse Server does.

use std::collections::HashSet;

use mongodb::bson::{Bson, Document};
use serde_json::{Map, Value};

use super::filter::top_key;
use super::transform::{
    AUTH_DATA_PREFIX, TopLevel, acl_fields, acl_of, date_value, interior, internal_key,
    is_date_key, is_user_date_key, number_to_bson, top_level, valid_field_name, valid_provider,
};
use crate::error::{StoreError, StoreResult};
use crate::query::{FieldPath, Object};
use crate::schema::{ClassSchema, FieldType};
use crate::write::{UpdateOp, apply_update};

type Change = (FieldPath, UpdateOp);

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidUpdate(message.into())
}

fn is_user(class: &ClassSchema) -> bool {
    class.class_name == "_User"
}

fn is_whole_auth_data(class: &ClassSchema, path: &FieldPath) -> bool {
    is_user(class) && path.field == "authData" && !path.is_nested()
}

/// Whether removing all of a user's auth data needs the providers they
/// have (each is its own `_auth_data_<provider>` key).
pub(super) fn needs_providers(class: &ClassSchema, changes: &[Change]) -> bool {
    changes.iter().any(|(path, op)| {
        is_whole_auth_data(class, path)
            && matches!(op, UpdateOp::Delete | UpdateOp::Set(Value::Null))
    })
}

/// The changes as Parse applies them: the plain password is never stored,
/// `updatedAt` comes from the op, and a user's `authData` is changed per
/// provider (`authData: {facebook: {...}, twitter: null}` links one and
/// unlinks the other, leaving the rest). `providers` are the user's
/// current providers, needed when all auth data is removed.
pub(super) fn normalize(
    class: &ClassSchema,
    changes: &[Change],
    providers: &[String],
) -> StoreResult<Vec<Change>> {
    let mut out = Vec::with_capacity(changes.len());
    for (path, op) in changes {
        match path.field.as_str() {
            "updatedAt" if !path.is_nested() => continue,
            "objectId" => return Err(invalid("objectId cannot be changed")),
            "password" if is_user(class) && !path.is_nested() => continue,
            _ => {}
        }
        if !is_whole_auth_data(class, path) {
            out.push((path.clone(), op.clone()));
            continue;
        }
        let per_provider = |provider: &str, op: UpdateOp| {
            (
                FieldPath {
                    field: "authData".into(),
                    nested: vec![provider.to_owned()],
                },
                op,
            )
        };
        match op {
            UpdateOp::Set(Value::Object(linked)) => {
                for (provider, data) in linked {
                    out.push(per_provider(
                        provider,
                        if data.is_null() {
                            UpdateOp::Delete
                        } else {
                            UpdateOp::Set(data.clone())
                        },
                    ));
                }
            }
            UpdateOp::Set(Value::Null) | UpdateOp::Delete => {
                out.extend(providers.iter().map(|p| per_provider(p, UpdateOp::Delete)));
            }
            _ => return Err(invalid("authData can only be set or deleted")),
        }
    }
    Ok(out)
}

/// Collects an update document, refusing two changes to one key (Mongo
/// refuses them too, less clearly).
#[derive(Default)]
struct UpdateBuilder {
    operators: Vec<(&'static str, Document)>,
    keys: HashSet<String>,
}

impl UpdateBuilder {
    fn add(&mut self, operator: &'static str, key: String, value: Bson) -> StoreResult<()> {
        if !self.keys.insert(key.clone()) {
            return Err(invalid(format!("{key} is changed twice in one update")));
        }
        match self.operators.iter_mut().find(|(op, _)| *op == operator) {
            Some((_, doc)) => {
                doc.insert(key, value);
            }
            None => {
                let mut doc = Document::new();
                doc.insert(key, value);
                self.operators.push((operator, doc));
            }
        }
        Ok(())
    }

    fn finish(self) -> Document {
        self.operators
            .into_iter()
            .map(|(op, doc)| (op.to_owned(), Bson::Document(doc)))
            .collect()
    }
}

/// Where a change lands in the document.
struct Destination {
    /// The stored path of ordinary values.
    key: String,
    /// The `_p_` key pointers go to, for top-level fields that may hold one.
    pointer_key: Option<String>,
    /// The schema type of a top-level field.
    field_type: Option<FieldType>,
    nested: bool,
    /// Values are coerced to dates.
    dates: bool,
}

fn destination(class: &ClassSchema, path: &FieldPath) -> StoreResult<Destination> {
    let field = path.field.as_str();
    let mut suffix = String::new();
    for segment in &path.nested {
        if !valid_field_name(segment) {
            return Err(invalid(format!("invalid key in {path}: {segment:?}")));
        }
        suffix.push('.');
        suffix.push_str(segment);
    }
    if is_user(class) && field == "authData" {
        let provider = path.nested.first().map(String::as_str).unwrap_or_default();
        if !valid_provider(provider) {
            return Err(invalid(format!("invalid auth provider: {provider:?}")));
        }
        return Ok(Destination {
            key: format!("{AUTH_DATA_PREFIX}{}", &suffix[1..]),
            pointer_key: None,
            field_type: None,
            nested: true,
            dates: false,
        });
    }
    let internal = internal_key(&class.class_name, field)?;
    let field_type = match field {
        "createdAt" => Some(FieldType::Date),
        _ => class.field_type(field).cloned(),
    };
    if path.is_nested() {
        if matches!(
            field_type,
            Some(FieldType::Pointer { .. } | FieldType::Relation { .. })
        ) {
            return Err(invalid(format!("{field} has no keys to change")));
        }
        return Ok(Destination {
            key: format!("{}{suffix}", top_key(class, field)),
            pointer_key: None,
            field_type: None,
            nested: true,
            dates: false,
        });
    }
    let pointer_key = match &field_type {
        Some(FieldType::Pointer { .. }) | None if internal.is_none() => Some(format!("_p_{field}")),
        _ => None,
    };
    Ok(Destination {
        key: top_key(class, field),
        pointer_key,
        dates: matches!(field_type, Some(FieldType::Date))
            || is_date_key(field)
            || internal.is_some_and(is_user_date_key),
        field_type,
        nested: false,
    })
}

/// The Mongo update of `changes` (already [`normalize`]d), which also
/// sets `_updated_at`.
pub(super) fn update_document(
    class: &ClassSchema,
    changes: &[Change],
    updated_at: &str,
) -> StoreResult<Document> {
    let mut update = UpdateBuilder::default();
    for (path, op) in changes {
        if path.field == "ACL" {
            acl_change(&mut update, path, op)?;
            continue;
        }
        if matches!(
            class.field_type(&path.field),
            Some(FieldType::Relation { .. })
        ) && !path.is_nested()
        {
            // Relations change through their join collections.
            continue;
        }
        change(&mut update, &destination(class, path)?, op)?;
    }
    let updated = super::transform::parse_date(updated_at)
        .ok_or_else(|| StoreError::backend_message(format!("invalid updatedAt: {updated_at}")))?;
    update.add("$set", "_updated_at".into(), Bson::DateTime(updated))?;
    Ok(update.finish())
}

fn acl_change(update: &mut UpdateBuilder, path: &FieldPath, op: &UpdateOp) -> StoreResult<()> {
    if path.is_nested() {
        return Err(invalid("the ACL is changed as a whole"));
    }
    match op {
        UpdateOp::Set(Value::Null) | UpdateOp::Delete => {
            for key in ["_rperm", "_wperm", "_acl"] {
                update.add("$unset", key.into(), Bson::String(String::new()))?;
            }
        }
        UpdateOp::Set(acl) => {
            let (read, write, legacy) =
                acl_fields(acl).ok_or_else(|| invalid("the ACL must be an object"))?;
            update.add("$set", "_rperm".into(), read.into())?;
            update.add("$set", "_wperm".into(), write.into())?;
            update.add("$set", "_acl".into(), legacy.into())?;
        }
        _ => return Err(invalid("the ACL is changed as a whole")),
    }
    Ok(())
}

fn elements(items: &[Value]) -> StoreResult<Vec<Bson>> {
    items.iter().map(|item| Ok(interior(item)?)).collect()
}

fn change(update: &mut UpdateBuilder, to: &Destination, op: &UpdateOp) -> StoreResult<()> {
    let is_pointer_field = matches!(to.field_type, Some(FieldType::Pointer { .. }));
    let unset = |update: &mut UpdateBuilder| -> StoreResult<()> {
        let empty = || Bson::String(String::new());
        match &to.pointer_key {
            Some(pointer_key) if is_pointer_field => {
                update.add("$unset", pointer_key.clone(), empty())
            }
            Some(pointer_key) => {
                // The schema does not know the field: clear both forms.
                update.add("$unset", to.key.clone(), empty())?;
                update.add("$unset", pointer_key.clone(), empty())
            }
            None => update.add("$unset", to.key.clone(), empty()),
        }
    };
    if is_pointer_field && !matches!(op, UpdateOp::Set(_) | UpdateOp::Delete) {
        return Err(invalid(format!("{} holds a pointer", to.key)));
    }
    match op {
        UpdateOp::Delete => unset(update),
        UpdateOp::Set(Value::Null) if !to.nested => unset(update),
        UpdateOp::Set(value) if to.nested => update.add("$set", to.key.clone(), interior(value)?),
        UpdateOp::Set(value) => set_top_level(update, to, value),
        UpdateOp::Increment(amount) => update.add("$inc", to.key.clone(), number_to_bson(amount)),
        UpdateOp::Add(items) => update.add(
            "$push",
            to.key.clone(),
            mongodb::bson::bson!({"$each": elements(items)?}),
        ),
        UpdateOp::AddUnique(items) => update.add(
            "$addToSet",
            to.key.clone(),
            mongodb::bson::bson!({"$each": elements(items)?}),
        ),
        UpdateOp::Remove(items) => {
            update.add("$pullAll", to.key.clone(), Bson::Array(elements(items)?))
        }
    }
}

fn set_top_level(update: &mut UpdateBuilder, to: &Destination, value: &Value) -> StoreResult<()> {
    if to.dates {
        let date =
            date_value(value).ok_or_else(|| invalid(format!("{} must be a date", to.key)))?;
        return update.add("$set", to.key.clone(), Bson::DateTime(date));
    }
    let is_pointer_field = matches!(to.field_type, Some(FieldType::Pointer { .. }));
    match top_level(value)? {
        TopLevel::Pointer(pointer) => match &to.pointer_key {
            Some(pointer_key) => update.add("$set", pointer_key.clone(), Bson::String(pointer)),
            None => Err(invalid(format!("{} does not hold pointers", to.key))),
        },
        _ if is_pointer_field => Err(invalid(format!("{} holds a pointer", to.key))),
        TopLevel::Value(stored) => update.add("$set", to.key.clone(), stored),
        TopLevel::Skip => Ok(()),
    }
}

fn path_exists(object: &Object, path: &FieldPath) -> bool {
    let Some(mut value) = object.get(&path.field) else {
        return false;
    };
    for segment in &path.nested {
        match value.get(segment) {
            Some(inner) => value = inner,
            None => return false,
        }
    }
    !value.is_null()
}

/// The object after the update, as the store now holds it: the changes
/// applied in memory the way Mongo applied them (`$pullAll` on a missing
/// array leaves it missing; relations are not stored in the object; the
/// ACL reads back without its false entries).
pub(super) fn simulate(
    class: &ClassSchema,
    before: &Object,
    changes: &[Change],
    updated_at: &str,
) -> StoreResult<Object> {
    let applied: Vec<Change> = changes
        .iter()
        .filter(|(path, op)| match op {
            UpdateOp::Remove(_) => path_exists(before, path),
            UpdateOp::Set(Value::Object(map)) if !path.is_nested() => {
                map.get("__type").and_then(Value::as_str) != Some("Relation")
            }
            _ => true,
        })
        .cloned()
        .collect();
    let mut after = before.clone();
    apply_update(&mut after, &applied)?;
    if let Some(acl) = after.get("ACL").and_then(acl_fields) {
        let (read, write, _) = acl;
        if let Some(normalized) = acl_of(Some(&read.into()), Some(&write.into())) {
            after.insert("ACL".into(), normalized);
        }
    }
    if is_user(class)
        && after
            .get("authData")
            .is_some_and(|a| a.as_object().is_some_and(Map::is_empty))
    {
        after.remove("authData");
    }
    after.insert("updatedAt".into(), Value::String(updated_at.to_owned()));
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;
    use serde_json::json;

    const NOW: &str = "2024-05-01T10:00:00.123Z";

    fn schema() -> ClassSchema {
        let mut schema = ClassSchema::new("Post");
        for (name, field_type) in [
            ("title", FieldType::String),
            ("n", FieldType::Number),
            ("tags", FieldType::Array),
            ("meta", FieldType::Object),
            ("when", FieldType::Date),
            (
                "author",
                FieldType::Pointer {
                    target_class: "_User".into(),
                },
            ),
            (
                "likes",
                FieldType::Relation {
                    target_class: "_User".into(),
                },
            ),
        ] {
            schema.fields.insert(name.into(), field_type.into());
        }
        schema
    }

    fn now() -> Bson {
        Bson::DateTime(super::super::transform::parse_date(NOW).unwrap())
    }

    fn update(changes: Vec<(&str, UpdateOp)>) -> StoreResult<Document> {
        update_for(&schema(), changes)
    }

    fn update_for(class: &ClassSchema, changes: Vec<(&str, UpdateOp)>) -> StoreResult<Document> {
        let changes: Vec<Change> = changes
            .into_iter()
            .map(|(path, op)| (FieldPath::parse(path), op))
            .collect();
        let normalized = normalize(class, &changes, &[])?;
        update_document(class, &normalized, NOW)
    }

    #[test]
    fn every_operator() {
        let pointer = json!({"__type": "Pointer", "className": "_User", "objectId": "u1"});
        let doc = update(vec![
            ("title", UpdateOp::Set(json!("hi"))),
            ("author", UpdateOp::Set(pointer.clone())),
            ("when", UpdateOp::Set(json!({"__type": "Date", "iso": NOW}))),
            (
                "meta.k",
                UpdateOp::Set(json!({"at": {"__type": "Date", "iso": NOW}})),
            ),
            ("gone", UpdateOp::Delete),
            ("n", UpdateOp::Increment(2.into())),
            ("tags", UpdateOp::Add(vec![json!(1), pointer.clone()])),
            ("meta.list", UpdateOp::AddUnique(vec![json!("x")])),
            ("meta.old", UpdateOp::Remove(vec![json!("y")])),
            ("meta.count", UpdateOp::Increment((-1).into())),
        ])
        .unwrap();
        assert_eq!(
            doc,
            doc! {
                "$set": {
                    "title": "hi",
                    "_p_author": "_User$u1",
                    "when": now(),
                    "meta.k": {"at": now()},
                    "_updated_at": now(),
                },
                "$unset": {"gone": "", "_p_gone": ""},
                "$inc": {"n": 2, "meta.count": -1},
                "$push": {"tags": {"$each": [1, {"__type": "Pointer", "className": "_User", "objectId": "u1"}]}},
                "$addToSet": {"meta.list": {"$each": ["x"]}},
                "$pullAll": {"meta.old": ["y"]},
            }
        );
    }

    #[test]
    fn nulls_unset_and_pointers_use_their_key() {
        assert_eq!(
            update(vec![
                ("title", UpdateOp::Set(Value::Null)),
                ("author", UpdateOp::Delete),
                ("meta.x", UpdateOp::Set(Value::Null)),
            ])
            .unwrap(),
            doc! {
                "$unset": {"title": "", "_p_author": ""},
                "$set": {"meta.x": null, "_updated_at": now()},
            }
        );
        assert!(update(vec![("author", UpdateOp::Set(json!("u1")))]).is_err());
        assert!(update(vec![("author", UpdateOp::Increment(1.into()))]).is_err());
        assert!(
            update(vec![(
                "title",
                UpdateOp::Set(json!({"__type": "Pointer", "className": "_User", "objectId": "u"}))
            )])
            .is_err()
        );
        // Relation values are not stored in the document.
        assert_eq!(
            update(vec![(
                "likes",
                UpdateOp::Set(json!({"__type": "Relation", "className": "_User"}))
            )])
            .unwrap(),
            doc! {"$set": {"_updated_at": now()}}
        );
    }

    #[test]
    fn acl_changes_set_all_three_keys() {
        let acl = json!({"u1": {"read": true, "write": true}, "*": {"read": true}});
        assert_eq!(
            update(vec![("ACL", UpdateOp::Set(acl))]).unwrap(),
            doc! {"$set": {
                "_rperm": ["u1", "*"], "_wperm": ["u1"],
                "_acl": {"u1": {"w": true, "r": true}, "*": {"r": true}},
                "_updated_at": now(),
            }}
        );
        assert_eq!(
            update(vec![("ACL", UpdateOp::Delete)]).unwrap(),
            doc! {"$unset": {"_rperm": "", "_wperm": "", "_acl": ""}, "$set": {"_updated_at": now()}}
        );
        assert!(update(vec![("ACL.u1", UpdateOp::Set(json!({"read": true})))]).is_err());
    }

    #[test]
    fn users_and_sessions() {
        let user = ClassSchema::new("_User");
        assert_eq!(
            update_for(
                &user,
                vec![
                    ("password", UpdateOp::Set(json!("plain"))),
                    ("_hashed_password", UpdateOp::Set(json!("$2b$10$x"))),
                    ("_perishable_token_expires_at", UpdateOp::Set(json!(NOW))),
                    (
                        "authData",
                        UpdateOp::Set(json!({"facebook": {"id": "1"}, "twitter": null}))
                    ),
                    ("authData.apple.token", UpdateOp::Set(json!("t"))),
                ]
            )
            .unwrap(),
            doc! {
                "$set": {
                    "_hashed_password": "$2b$10$x",
                    "_perishable_token_expires_at": now(),
                    "_auth_data_facebook": {"id": "1"},
                    "_auth_data_apple.token": "t",
                    "_updated_at": now(),
                },
                "$unset": {"_auth_data_twitter": ""},
            }
        );
        let changes = vec![(FieldPath::new("authData"), UpdateOp::Delete)];
        assert!(needs_providers(&user, &changes));
        let normalized = normalize(&user, &changes, &["anonymous".into()]).unwrap();
        assert_eq!(
            update_document(&user, &normalized, NOW).unwrap(),
            doc! {"$unset": {"_auth_data_anonymous": ""}, "$set": {"_updated_at": now()}}
        );
        let session = ClassSchema::new("_Session");
        assert_eq!(
            update_for(
                &session,
                vec![
                    ("sessionToken", UpdateOp::Set(json!("r:1"))),
                    (
                        "expiresAt",
                        UpdateOp::Set(json!({"__type": "Date", "iso": NOW}))
                    ),
                ]
            )
            .unwrap(),
            doc! {"$set": {"_session_token": "r:1", "expiresAt": now(), "_updated_at": now()}}
        );
    }

    #[test]
    fn bad_keys_and_conflicts_are_refused() {
        for path in ["$where", "_secret", "meta.$gt", "objectId"] {
            let changes = vec![(FieldPath::parse(path), UpdateOp::Set(json!(1)))];
            let result = normalize(&schema(), &changes, &[])
                .and_then(|c| update_document(&schema(), &c, NOW));
            assert!(
                matches!(result, Err(StoreError::InvalidUpdate(_))),
                "{path}"
            );
        }
        let dotted = FieldPath {
            field: "meta".into(),
            nested: vec!["a.b".into()],
        };
        assert!(update_document(&schema(), &[(dotted, UpdateOp::Delete)], NOW).is_err());
        assert!(update(vec![("meta", UpdateOp::Set(json!({"$where": "1"})))]).is_err());
        assert!(
            update(vec![
                ("n", UpdateOp::Increment(1.into())),
                ("n", UpdateOp::Delete)
            ])
            .is_err()
        );
        let user = ClassSchema::new("_User");
        assert!(update_for(&user, vec![("authData.a$b", UpdateOp::Delete)]).is_err());
        assert!(update_for(&user, vec![("authData", UpdateOp::Increment(1.into()))]).is_err());
    }

    #[test]
    fn the_after_state_matches_what_mongo_stores() {
        let before = json!({"objectId": "a", "n": 1, "tags": ["x"], "ACL": {"u": {"read": true}},
                            "updatedAt": "2024-01-01T00:00:00.000Z"});
        let before = before.as_object().unwrap().clone();
        let changes = vec![
            (FieldPath::new("n"), UpdateOp::Increment(2.into())),
            (FieldPath::new("missing"), UpdateOp::Remove(vec![json!(1)])),
            (FieldPath::new("tags"), UpdateOp::Remove(vec![json!("x")])),
            (
                FieldPath::new("likes"),
                UpdateOp::Set(json!({"__type": "Relation", "className": "_User"})),
            ),
            (
                FieldPath::new("ACL"),
                UpdateOp::Set(json!({"u": {"read": true, "write": false}})),
            ),
        ];
        let after = simulate(&schema(), &before, &changes, NOW).unwrap();
        assert_eq!(
            Value::Object(after),
            json!({"objectId": "a", "n": 3, "tags": [], "ACL": {"u": {"read": true}}, "updatedAt": NOW})
        );
        let user = ClassSchema::new("_User");
        let before = json!({"objectId": "u", "authData": {"anonymous": {"id": "1"}}})
            .as_object()
            .unwrap()
            .clone();
        let changes = normalize(
            &user,
            &[(FieldPath::new("authData"), UpdateOp::Delete)],
            &["anonymous".into()],
        )
        .unwrap();
        let after = simulate(&user, &before, &changes, NOW).unwrap();
        assert!(after.get("authData").is_none());
    }
}
