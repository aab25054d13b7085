//! Parse Server's `_SCHEMA` collection (`MongoSchemaCollection.js`): one
//! document per class, `_id` the class name, each field a top-level key
//! whose value is a type string (`"string"`, `"*_User"`,
//! `"relation<_User>"`, ...), and `_metadata` with `class_permissions`,
//! `indexes` and `fields_options` when they are needed.

use mongodb::bson::{Bson, Document, doc};
use serde_json::{Map, Value};

use super::transform::{plain_to_bson, plain_to_json, valid_field_name};
use crate::error::{BackendError, StoreError, StoreResult};
use crate::schema::{ClassSchema, FieldSpec, FieldType, default_class_level_permissions};

pub(super) const SCHEMA_COLLECTION: &str = "_SCHEMA";

/// Keys of a `_SCHEMA` document that are not fields.
const NON_FIELD_KEYS: &[&str] = &["_id", "_metadata", "_client_permissions"];

/// The type string Parse stores for a field type; `None` for the ACL,
/// which `_SCHEMA` never lists.
pub(super) fn type_string(field_type: &FieldType) -> Option<String> {
    Some(match field_type {
        FieldType::String => "string".into(),
        FieldType::Number => "number".into(),
        FieldType::Boolean => "boolean".into(),
        FieldType::Date => "date".into(),
        FieldType::Object => "object".into(),
        FieldType::Array => "array".into(),
        FieldType::GeoPoint => "geopoint".into(),
        FieldType::File => "file".into(),
        FieldType::Bytes => "bytes".into(),
        FieldType::Polygon => "polygon".into(),
        FieldType::Pointer { target_class } => format!("*{target_class}"),
        FieldType::Relation { target_class } => format!("relation<{target_class}>"),
        FieldType::Acl => return None,
    })
}

/// The field type of a stored type string (`"map"` is Parse's old name
/// for `"object"`).
pub(super) fn parse_type(stored: &str) -> Option<FieldType> {
    if let Some(target) = stored.strip_prefix('*') {
        return Some(FieldType::Pointer {
            target_class: target.to_owned(),
        });
    }
    if let Some(target) = stored
        .strip_prefix("relation<")
        .and_then(|rest| rest.strip_suffix('>'))
    {
        return Some(FieldType::Relation {
            target_class: target.to_owned(),
        });
    }
    Some(match stored {
        "string" => FieldType::String,
        "number" => FieldType::Number,
        "boolean" => FieldType::Boolean,
        "date" => FieldType::Date,
        "object" | "map" => FieldType::Object,
        "array" => FieldType::Array,
        "geopoint" => FieldType::GeoPoint,
        "file" => FieldType::File,
        "bytes" => FieldType::Bytes,
        "polygon" => FieldType::Polygon,
        _ => return None,
    })
}

/// Whether `_SCHEMA` lists a field: never the ACL or its `_rperm`/`_wperm`
/// columns, nor `_User`'s password (the hash is not a schema field either).
pub(super) fn is_stored_field(class_name: &str, name: &str) -> bool {
    let acl_or_hash = matches!(name, "ACL" | "_rperm" | "_wperm" | "_hashed_password");
    let password = class_name == "_User" && name == "password";
    !acl_or_hash && !password
}

/// The `_metadata.fields_options` entry of a field, if it has options.
pub(super) fn field_options(spec: &FieldSpec) -> Option<Document> {
    let mut options = Document::new();
    if let Some(required) = spec.required {
        options.insert("required", required);
    }
    if let Some(default) = &spec.default_value {
        options.insert("defaultValue", plain_to_bson(default));
    }
    (!options.is_empty()).then_some(options)
}

/// Refuses names Mongo would read as paths or operators: field names
/// become keys of the `_SCHEMA` document and of every object.
pub(super) fn check_field_name(name: &str) -> StoreResult<()> {
    if valid_field_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidSchema(format!(
            "invalid field name: {name:?}"
        )))
    }
}

/// Class names become collection names, which cannot hold `$` or NUL.
pub(super) fn check_class_name(name: &str) -> StoreResult<()> {
    if name.is_empty() || name.contains(['$', '\0']) || name.starts_with("system.") {
        return Err(StoreError::InvalidSchema(format!(
            "invalid class name: {name:?}"
        )));
    }
    Ok(())
}

/// Whether a value holds keys Mongo would misread (`$`, `.`), at any depth.
fn has_bad_keys(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| !valid_field_name(k) || has_bad_keys(v)),
        Value::Array(items) => items.iter().any(has_bad_keys),
        _ => false,
    }
}

/// The `_SCHEMA` document Parse's `createClass` inserts for a class.
pub(super) fn schema_document(schema: &ClassSchema) -> StoreResult<Document> {
    check_class_name(&schema.class_name)?;
    // Parse seeds these three first, then overwrites their types.
    let mut doc = doc! {
        "_id": schema.class_name.clone(),
        "objectId": "string",
        "updatedAt": "date",
        "createdAt": "date",
    };
    let mut options = Document::new();
    for (name, spec) in &schema.fields {
        if !is_stored_field(&schema.class_name, name) {
            continue;
        }
        check_field_name(name)?;
        let Some(stored) = type_string(&spec.field_type) else {
            continue;
        };
        doc.insert(name.clone(), stored);
        if let Some(field_options) = field_options(spec) {
            if spec.default_value.as_ref().is_some_and(has_bad_keys) {
                return Err(StoreError::InvalidSchema(format!(
                    "the default value of {name} holds a key with '$' or '.'"
                )));
            }
            options.insert(name.clone(), field_options);
        }
    }
    let mut metadata = Document::new();
    if let Some(clp) = stored_class_level_permissions(&schema.class_level_permissions)? {
        metadata.insert("class_permissions", clp);
    }
    if !schema.indexes.is_empty() {
        metadata.insert("indexes", indexes_document(&schema.indexes)?);
    }
    if !options.is_empty() {
        metadata.insert("fields_options", options);
    }
    if !metadata.is_empty() {
        doc.insert("_metadata", metadata);
    }
    Ok(doc)
}

/// The class-level permissions to store; `None` for Parse's default, which
/// Parse itself leaves out (a missing value reads as the default).
pub(super) fn stored_class_level_permissions(clp: &Value) -> StoreResult<Option<Bson>> {
    if clp.is_null() || *clp == default_class_level_permissions() {
        return Ok(None);
    }
    if !clp.is_object() || has_bad_keys(clp) {
        return Err(StoreError::InvalidSchema(
            "class-level permissions must be an object without '$' or '.' in keys".into(),
        ));
    }
    Ok(Some(plain_to_bson(clp)))
}

/// `_metadata.indexes`: index name → `{field: 1 | -1 | "text" | ...}`.
pub(super) fn indexes_document(indexes: &Map<String, Value>) -> StoreResult<Document> {
    let value = Value::Object(indexes.clone());
    if has_bad_keys(&value) {
        return Err(StoreError::InvalidSchema(
            "index names and keys cannot hold '$' or '.'".into(),
        ));
    }
    match plain_to_bson(&value) {
        Bson::Document(doc) => Ok(doc),
        _ => Ok(Document::new()),
    }
}

/// A class from its `_SCHEMA` document, accepting everything Parse writes:
/// the default fields are added back, unknown type strings and non-field
/// keys skipped, and a missing CLP read as Parse's default.
pub(super) fn schema_from_document(doc: &Document) -> StoreResult<ClassSchema> {
    let class_name = doc.get_str("_id").map_err(|e| {
        StoreError::Backend(BackendError::with_message(
            "a _SCHEMA document without a string _id",
            e,
        ))
    })?;
    let mut schema = ClassSchema::new(class_name);
    let metadata = doc.get_document("_metadata").ok();
    let options = metadata.and_then(|m| m.get_document("fields_options").ok());
    for (name, stored) in doc {
        if NON_FIELD_KEYS.contains(&name.as_str())
            || matches!(name.as_str(), "objectId" | "createdAt" | "updatedAt")
            || !is_stored_field(class_name, name)
        {
            continue;
        }
        let Some(field_type) = stored.as_str().and_then(parse_type) else {
            tracing::debug!(class = class_name, field = %name, "skipping a field of unknown type");
            continue;
        };
        let mut spec = FieldSpec::from(field_type);
        if let Some(Bson::Document(field_options)) = options.and_then(|o| o.get(name)) {
            spec.required = field_options.get_bool("required").ok();
            spec.default_value = field_options.get("defaultValue").map(plain_to_json);
        }
        schema.fields.insert(name.clone(), spec);
    }
    if let Some(metadata) = metadata {
        if let Ok(clp) = metadata.get_document("class_permissions") {
            schema.class_level_permissions = plain_to_json(&Bson::Document(clp.clone()));
        }
        if let Ok(indexes) = metadata.get_document("indexes")
            && let Value::Object(map) = plain_to_json(&Bson::Document(indexes.clone()))
        {
            schema.indexes = map;
        }
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointer(target: &str) -> FieldType {
        FieldType::Pointer {
            target_class: target.into(),
        }
    }

    fn relation(target: &str) -> FieldType {
        FieldType::Relation {
            target_class: target.into(),
        }
    }

    #[test]
    fn type_strings_both_ways() {
        let all = [
            (FieldType::String, "string"),
            (FieldType::Number, "number"),
            (FieldType::Boolean, "boolean"),
            (FieldType::Date, "date"),
            (FieldType::Object, "object"),
            (FieldType::Array, "array"),
            (FieldType::GeoPoint, "geopoint"),
            (FieldType::File, "file"),
            (FieldType::Bytes, "bytes"),
            (FieldType::Polygon, "polygon"),
            (pointer("_User"), "*_User"),
            (relation("_User"), "relation<_User>"),
        ];
        for (field_type, stored) in all {
            assert_eq!(type_string(&field_type).as_deref(), Some(stored));
            assert_eq!(parse_type(stored), Some(field_type));
        }
        assert_eq!(parse_type("map"), Some(FieldType::Object));
        assert_eq!(parse_type("acl"), None);
        assert_eq!(type_string(&FieldType::Acl), None);
    }

    /// The `Post` example of the storage notes (B1).
    #[test]
    fn class_documents_follow_parse() {
        let mut schema = ClassSchema::new("Post");
        for (name, field_type) in [
            ("title", FieldType::String),
            ("author", pointer("_User")),
            ("likes", relation("_User")),
            ("loc", FieldType::GeoPoint),
        ] {
            schema.fields.insert(name.into(), field_type.into());
        }
        schema.fields.get_mut("title").unwrap().required = Some(true);
        schema.class_level_permissions = json!({"find": {"*": true}, "get": {}});
        schema
            .indexes
            .insert("by_title".into(), json!({"title": 1}));
        let doc = schema_document(&schema).unwrap();
        assert_eq!(
            doc,
            doc! {
                "_id": "Post", "objectId": "string", "updatedAt": "date", "createdAt": "date",
                "author": "*_User", "likes": "relation<_User>", "loc": "geopoint", "title": "string",
                "_metadata": {
                    "class_permissions": {"find": {"*": true}, "get": {}},
                    "indexes": {"by_title": {"title": 1}},
                    "fields_options": {"title": {"required": true}},
                },
            }
        );
        assert_eq!(
            doc.keys().take(4).collect::<Vec<_>>(),
            ["_id", "objectId", "updatedAt", "createdAt"]
        );
        assert_eq!(schema_from_document(&doc).unwrap(), schema);
    }

    #[test]
    fn users_list_neither_password_nor_hash_nor_acl() {
        let schema = ClassSchema::new("_User");
        let doc = schema_document(&schema).unwrap();
        assert_eq!(
            doc,
            doc! {
                "_id": "_User", "objectId": "string", "updatedAt": "date", "createdAt": "date",
                "authData": "object", "email": "string", "emailVerified": "boolean", "username": "string",
            }
        );
        assert_eq!(schema_from_document(&doc).unwrap(), schema);
    }

    /// `_User` as Parse leaves it at start: indexes synced from Mongo, no
    /// CLP, and keys a reader must skip.
    #[test]
    fn reads_what_parse_writes() {
        let doc = doc! {
            "_id": "_User", "objectId": "string", "updatedAt": "date", "createdAt": "date",
            "username": "string", "email": "string", "emailVerified": "boolean", "authData": "object",
            "_rperm": "array", "legacy": "map", "weird": "acl", "_client_permissions": {},
            "_metadata": {"indexes": {"_id_": {"_id": 1}, "username_1": {"username": 1}},
                          "fields_options": {"email": {"required": false, "defaultValue": "x@y"}}},
        };
        let schema = schema_from_document(&doc).unwrap();
        assert_eq!(schema.field_type("password"), Some(&FieldType::String));
        assert_eq!(schema.field_type("ACL"), Some(&FieldType::Acl));
        assert_eq!(schema.field_type("legacy"), Some(&FieldType::Object));
        assert!(schema.field_type("weird").is_none() && schema.field_type("_rperm").is_none());
        assert_eq!(
            schema.class_level_permissions,
            default_class_level_permissions()
        );
        assert_eq!(
            Value::Object(schema.indexes.clone()),
            json!({"_id_": {"_id": 1}, "username_1": {"username": 1}})
        );
        let email = &schema.fields["email"];
        assert_eq!(
            (email.required, email.default_value.clone()),
            (Some(false), Some(json!("x@y")))
        );
        assert!(schema_from_document(&doc! {"_id": 7}).is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        let mut schema = ClassSchema::new("Post");
        schema.fields.insert("a.b".into(), FieldType::String.into());
        assert!(matches!(
            schema_document(&schema),
            Err(StoreError::InvalidSchema(_))
        ));
        assert!(schema_document(&ClassSchema::new("a$b")).is_err());
        let mut schema = ClassSchema::new("Post");
        schema.class_level_permissions = json!({"find": {"$where": true}});
        assert!(schema_document(&schema).is_err());
        let mut schema = ClassSchema::new("Post");
        let mut spec = FieldSpec::from(FieldType::Object);
        spec.default_value = Some(json!({"$set": 1}));
        schema.fields.insert("o".into(), spec);
        assert!(schema_document(&schema).is_err());
    }
}
