//! Parse Server's PostgreSQL layout, so that oxbase and Parse Server read
//! and write the same database.
//!
//! - `_SCHEMA("className", "schema" jsonb, "isParseClass")`. The JSON is
//!   Parse's adapter shape: `_rperm`/`_wperm` listed as String arrays, no
//!   `ACL`, and on `_User` `_hashed_password` instead of `password`. Parse
//!   rewrites rows in the REST shape when it deletes a field, so both are
//!   read.
//! - One table per class, named after it, one column per field: text,
//!   double precision, boolean, timestamptz, jsonb (Object, Array, Bytes),
//!   point (GeoPoint, as lng/lat), polygon; pointers as the objectId, files
//!   as the name; `_rperm`/`_wperm` text[] from the ACL, NULL for public.
//! - Relations: `"_Join:<key>:<Class>"("relatedId", "owningId")`.
//! - `_User` also has Parse's internal columns, not listed in `_SCHEMA`.

use serde_json::{Map, Value, json};

use crate::error::{StoreError, StoreResult};
use crate::schema::{
    ClassSchema, FieldSpec, FieldType, default_class_level_permissions, join_class_name,
    unique_fields,
};
use crate::sql::quote_ident;

/// The column type Parse gives a field type; `None` for fields that are
/// not columns (relations, the ACL).
pub(super) fn column_type(field_type: &FieldType) -> Option<&'static str> {
    Some(match field_type {
        FieldType::String | FieldType::Pointer { .. } | FieldType::File => "text",
        FieldType::Number => "double precision",
        FieldType::Boolean => "boolean",
        FieldType::Date => "timestamp with time zone",
        FieldType::Object | FieldType::Array | FieldType::Bytes => "jsonb",
        FieldType::GeoPoint => "point",
        FieldType::Polygon => "polygon",
        FieldType::Relation { .. } | FieldType::Acl => return None,
    })
}

/// Columns Parse Server adds to `_User` that `_SCHEMA` does not list.
pub(super) const USER_INTERNAL_COLUMNS: &[(&str, FieldType)] = &[
    ("_hashed_password", FieldType::String),
    ("_email_verify_token_expires_at", FieldType::Date),
    ("_email_verify_token", FieldType::String),
    ("_account_lockout_expires_at", FieldType::Date),
    ("_failed_login_count", FieldType::Number),
    ("_perishable_token", FieldType::String),
    ("_perishable_token_expires_at", FieldType::Date),
    ("_password_changed_at", FieldType::Date),
    ("_password_history", FieldType::Array),
];

/// Every column of a class with the type its values have, as stored.
pub(super) fn columns(schema: &ClassSchema) -> Vec<(String, FieldType)> {
    let mut out = Vec::new();
    for (name, spec) in &schema.fields {
        if matches!(name.as_str(), "objectId" | "createdAt" | "updatedAt") {
            continue;
        }
        // `password` is virtual: the hash lives in `_hashed_password`.
        if schema.class_name == "_User" && name == "password" {
            continue;
        }
        if column_type(&spec.field_type).is_some() {
            out.push((name.clone(), spec.field_type.clone()));
        }
    }
    if schema.class_name == "_User" {
        for (name, field_type) in USER_INTERNAL_COLUMNS {
            out.push(((*name).to_owned(), field_type.clone()));
        }
    }
    out
}

/// The `schema` JSON Parse Server's adapter writes for a class.
pub(super) fn to_stored(schema: &ClassSchema) -> Value {
    let string_array = json!({"type": "Array", "contents": {"type": "String"}});
    let mut fields = Map::new();
    for (name, spec) in &schema.fields {
        if name == "ACL" || (schema.class_name == "_User" && name == "password") {
            continue;
        }
        fields.insert(
            name.clone(),
            serde_json::to_value(spec).unwrap_or(Value::Null),
        );
    }
    fields.insert("_rperm".into(), string_array.clone());
    fields.insert("_wperm".into(), string_array);
    if schema.class_name == "_User" {
        fields.insert("_hashed_password".into(), json!({"type": "String"}));
    }
    let mut stored = json!({"className": schema.class_name, "fields": fields});
    if !schema.class_level_permissions.is_null() {
        stored["classLevelPermissions"] = schema.class_level_permissions.clone();
    }
    if !schema.indexes.is_empty() {
        stored["indexes"] = Value::Object(schema.indexes.clone());
    }
    stored
}

/// Reads a `schema` JSON in either of the shapes Parse writes.
pub(super) fn from_stored(class_name: &str, stored: &Value) -> StoreResult<ClassSchema> {
    let mut schema = ClassSchema::new(class_name);
    let fields = stored
        .get("fields")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            StoreError::backend_message(format!("_SCHEMA row of {class_name} has no fields"))
        })?;
    for (name, spec) in fields {
        if matches!(name.as_str(), "_rperm" | "_wperm" | "_hashed_password") {
            continue;
        }
        let spec: FieldSpec = serde_json::from_value(spec.clone()).map_err(|e| {
            StoreError::backend_context(format!("_SCHEMA field {class_name}.{name}"), e)
        })?;
        schema.fields.insert(name.clone(), spec);
    }
    schema.class_level_permissions = match stored.get("classLevelPermissions") {
        Some(Value::Object(clp)) => Value::Object(clp.clone()),
        // Parse Server stores none for the classes it creates, and its
        // PostgreSQL adapter reads them back as these defaults.
        _ => {
            let mut clp = default_class_level_permissions();
            clp["ACL"] = json!({"*": {"read": true, "write": true}});
            clp
        }
    };
    if let Some(Value::Object(indexes)) = stored.get("indexes") {
        schema.indexes = indexes.clone();
    }
    Ok(schema)
}

/// DDL creating a class's table, its join tables and Parse's unique
/// indexes; every statement tolerates existing objects.
pub(super) fn create_statements(schema: &ClassSchema) -> Vec<String> {
    let class = &schema.class_name;
    let table = quote_ident(class);
    let mut defs = vec![
        "\"objectId\" text".to_owned(),
        "PRIMARY KEY (\"objectId\")".to_owned(),
        "\"createdAt\" timestamp with time zone".to_owned(),
        "\"updatedAt\" timestamp with time zone".to_owned(),
        "\"_rperm\" text[]".to_owned(),
        "\"_wperm\" text[]".to_owned(),
    ];
    for (name, field_type) in columns(schema) {
        if let Some(sql_type) = column_type(&field_type) {
            defs.push(format!("{} {sql_type}", quote_ident(&name)));
        }
    }
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {table} ({})",
        defs.join(", ")
    )];
    for field in unique_fields(class) {
        out.push(format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {table} ({})",
            quote_ident(&format!("{class}_unique_{field}")),
            quote_ident(field)
        ));
    }
    for (name, spec) in &schema.fields {
        if matches!(spec.field_type, FieldType::Relation { .. }) {
            out.push(join_table_ddl(class, name));
        }
    }
    for (name, spec) in &schema.indexes {
        if let Some(sql) = index_ddl(class, name, spec) {
            out.push(sql);
        }
    }
    out
}

pub(super) fn join_table_ddl(class_name: &str, key: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\"relatedId\" varChar(120), \"owningId\" varChar(120), PRIMARY KEY(\"relatedId\", \"owningId\"))",
        quote_ident(&join_class_name(key, class_name))
    )
}

/// DDL adding one field (a column, or a relation's join table).
pub(super) fn add_field_ddl(
    class_name: &str,
    name: &str,
    field_type: &FieldType,
) -> Option<String> {
    match field_type {
        FieldType::Relation { .. } => Some(join_table_ddl(class_name, name)),
        other => column_type(other).map(|sql_type| {
            format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {sql_type}",
                quote_ident(class_name),
                quote_ident(name)
            )
        }),
    }
}

/// A declared index, as Parse Server creates it (directions are ignored).
pub(super) fn index_ddl(class_name: &str, name: &str, spec: &Value) -> Option<String> {
    let keys = spec.as_object()?;
    if name == "_id_" || keys.is_empty() {
        return None;
    }
    let columns: Vec<String> = keys.keys().map(|k| quote_ident(k)).collect();
    Some(format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
        quote_ident(name),
        quote_ident(class_name),
        columns.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_round_trip_through_parse_shapes() {
        let mut schema = ClassSchema::new("_User");
        schema.fields.insert(
            "team".into(),
            FieldType::Pointer {
                target_class: "Team".into(),
            }
            .into(),
        );
        let stored = to_stored(&schema);
        assert_eq!(
            stored["fields"]["_rperm"],
            json!({"type": "Array", "contents": {"type": "String"}})
        );
        assert_eq!(
            stored["fields"]["_hashed_password"],
            json!({"type": "String"})
        );
        assert!(
            stored["fields"].get("password").is_none() && stored["fields"].get("ACL").is_none()
        );
        assert_eq!(
            stored["fields"]["team"],
            json!({"type": "Pointer", "targetClass": "Team"})
        );
        assert_eq!(from_stored("_User", &stored).unwrap(), schema);

        // The shape Parse writes after deleting a field.
        let rest_shape = json!({"className": "Post", "fields": {
            "objectId": {"type": "String"}, "createdAt": {"type": "Date"}, "updatedAt": {"type": "Date"},
            "ACL": {"type": "ACL"}, "title": {"type": "String", "required": true}},
            "classLevelPermissions": {"find": {"*": true}}});
        let schema = from_stored("Post", &rest_shape).unwrap();
        assert_eq!(schema.field_type("ACL"), Some(&FieldType::Acl));
        assert_eq!(schema.fields["title"].required, Some(true));
        assert_eq!(schema.class_level_permissions, json!({"find": {"*": true}}));
    }

    #[test]
    fn user_tables_have_parse_internal_columns_and_unique_indexes() {
        let ddl = create_statements(&ClassSchema::new("_User")).join(";\n");
        assert!(ddl.contains("\"_hashed_password\" text"));
        assert!(ddl.contains("\"_failed_login_count\" double precision"));
        assert!(!ddl.contains("\"password\""));
        assert!(ddl.contains("\"_User_unique_username\" ON \"_User\" (\"username\")"));
        let role = create_statements(&ClassSchema::new("_Role")).join(";\n");
        assert!(role.contains("\"_Join:users:_Role\""));
        assert!(role.contains("\"_Role_unique_name\""));
    }
}
