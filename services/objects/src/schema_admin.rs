//! Reading and changing class schemas, as `/schemas` does (master key
//! only), with the checks, error codes and messages of Parse Server's
//! `SchemasRouter` and `SchemaController`.

use std::collections::BTreeMap;

use oxbase_store::query::js_truthy;
use oxbase_store::schema::{
    DEFAULT_FIELDS, VOLATILE_CLASSES, default_class_level_permissions, system_fields,
};
use oxbase_store::{ClassSchema, FieldSpec, FieldType, Query, SchemaChange, StoreError};
use serde_json::{Map, Value, json};

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::values::{SYSTEM_CLASSES, normalize_value};

/// Classes Parse Server creates when it starts, so its clients always see
/// them; here they exist with their default schema until first stored.
const IMPLICIT_CLASSES: &[&str] = &["_User", "_Role"];

/// The keys class-level permissions may have.
const CLP_OPERATIONS: &[&str] = &[
    "find",
    "count",
    "get",
    "create",
    "update",
    "delete",
    "addField",
    "readUserFields",
    "writeUserFields",
    "protectedFields",
];

/// The operations Parse Server fills in, empty (closed), when it reads
/// class-level permissions that do not name them.
const FILLED_CLP_OPERATIONS: &[&str] = &[
    "find",
    "get",
    "count",
    "create",
    "update",
    "delete",
    "addField",
    "protectedFields",
];

impl ObjectLayer {
    /// `GET /schemas`: every stored class, plus `_User` and `_Role`. Parse
    /// Server's internal classes (`_PushStatus`, `_Audience`, ...) are not
    /// listed, as Parse Server never stores their schemas.
    pub async fn all_schemas(&self) -> ParseResult<Value> {
        let view = self.schema_cache().reload().await?;
        let mut classes: Vec<ClassSchema> = view
            .classes()
            .filter(|c| !VOLATILE_CLASSES.contains(&c.class_name.as_str()))
            .map(|c| (**c).clone())
            .collect();
        for name in IMPLICIT_CLASSES {
            if view.get(name).is_none() {
                classes.push(base_schema(name));
            }
        }
        classes.sort_by(|a, b| a.class_name.cmp(&b.class_name));
        let results: Vec<Value> = classes.iter().map(display).collect();
        Ok(json!({ "results": results }))
    }

    /// `GET /schemas/{class}`.
    pub async fn one_schema(&self, class_name: &str) -> ParseResult<Value> {
        if VOLATILE_CLASSES.contains(&class_name) {
            return Ok(volatile_display(class_name));
        }
        let view = self.schema_cache().reload().await?;
        match view.get(class_name) {
            Some(schema) => Ok(display(schema)),
            None if IMPLICIT_CLASSES.contains(&class_name) => Ok(display(&base_schema(class_name))),
            None => Err(class_missing(class_name)),
        }
    }

    /// `POST /schemas` and `POST /schemas/{class}`: creates a class.
    pub async fn create_schema(
        &self,
        auth: &Auth,
        path_class: Option<&str>,
        body: &Map<String, Value>,
    ) -> ParseResult<Value> {
        if auth.read_only {
            return Err(read_only("create"));
        }
        let body_class = body.get("className").filter(|v| js_truthy(v)).map(js);
        if let (Some(path), Some(given)) = (path_class, &body_class)
            && path != given
        {
            return Err(mismatch(given, path));
        }
        let class_name = match (path_class, body_class) {
            (Some(path), _) => path.to_owned(),
            (None, Some(given)) => given,
            (None, None) => {
                return Err(ParseError::new(
                    code::MISSING_REQUIRED_FIELD,
                    "POST /schemas needs a class name.",
                ));
            }
        };
        let class_name = class_name.as_str();

        let view = self.schema_cache().reload().await?;
        if view.get(class_name).is_some()
            || VOLATILE_CLASSES.contains(&class_name)
            || IMPLICIT_CLASSES.contains(&class_name)
        {
            return Err(StoreError::ClassExists(class_name.to_owned()).into());
        }
        // Parse also accepts `_Join:` names here; they name relation join
        // tables, which are not classes in this store.
        if !class_name_is_valid(class_name) || is_join_class(class_name) {
            return Err(invalid_class_name(class_name));
        }

        let mut schema = base_schema(class_name);
        let mut added = Vec::new();
        for (name, raw) in entries_of(body.get("fields"))? {
            check_field_name(class_name, name, "added")?;
            let spec = parse_field(class_name, name, raw)?;
            schema.fields.insert(name.clone(), spec);
            added.push(name.as_str());
        }
        check_geo_points(&schema, &added)?;
        if let Some(clp) = body.get("classLevelPermissions").filter(|v| !v.is_null()) {
            validate_clp(clp, &schema.fields)?;
            schema.class_level_permissions = filled_clp(clp);
        }
        let (indexes, _) =
            plan_indexes(class_name, body.get("indexes"), &Map::new(), &schema.fields)?;
        schema.indexes = indexes;

        let created = self.store().create_class(&schema).await?;
        self.schema_cache().install(created.clone());
        Ok(display(&created))
    }

    /// `PUT /schemas/{class}`: adds and deletes fields and indexes, and
    /// replaces the class-level permissions.
    pub async fn update_schema(
        &self,
        auth: &Auth,
        class_name: &str,
        body: &Map<String, Value>,
    ) -> ParseResult<Value> {
        if auth.read_only {
            return Err(read_only("update"));
        }
        if let Some(given) = body.get("className").filter(|v| js_truthy(v)) {
            let given = js(given);
            if given != class_name {
                return Err(mismatch(&given, class_name));
            }
        }
        let view = self.schema_cache().reload().await?;
        let (current, stored) = match view.get(class_name) {
            Some(schema) => ((**schema).clone(), true),
            None if IMPLICIT_CLASSES.contains(&class_name) => (base_schema(class_name), false),
            None => return Err(class_missing(class_name)),
        };
        let submitted = entries_of(body.get("fields"))?;

        for (name, raw) in &submitted {
            let delete = is_delete(raw);
            match current.fields.get(*name) {
                Some(existing)
                    if !delete
                        && raw.get("type").and_then(Value::as_str)
                            != Some(type_tag(&existing.field_type)) =>
                {
                    return Err(ParseError::new(
                        code::INVALID_SCHEMA_OPERATION,
                        format!("Field {name} exists, cannot update."),
                    ));
                }
                None if delete => {
                    return Err(ParseError::new(
                        code::INVALID_SCHEMA_OPERATION,
                        format!("Field {name} does not exist, cannot delete."),
                    ));
                }
                _ => {}
            }
        }

        let mut next = current.clone();
        let mut change = SchemaChange::default();
        let mut added = Vec::new();
        let mut resubmitted = Vec::new();
        for (name, raw) in &submitted {
            if is_delete(raw) {
                next.fields.remove(*name);
                change.delete_fields.push((*name).clone());
            } else if let Some(existing) = current.fields.get(*name) {
                resubmitted.push((*name, *raw, existing));
            } else {
                check_field_name(class_name, name, "added")?;
                let spec = parse_field(class_name, name, raw)?;
                next.fields.insert((*name).clone(), spec.clone());
                change.add_fields.insert((*name).clone(), spec);
                added.push(name.as_str());
            }
        }
        check_geo_points(&next, &added)?;
        if let Some(clp) = body.get("classLevelPermissions").filter(|v| !v.is_null()) {
            validate_clp(clp, &next.fields)?;
            change.class_level_permissions = Some(filled_clp(clp));
        }
        for name in &change.delete_fields {
            check_field_name(class_name, name, "changed")?;
        }
        for (name, raw, existing) in resubmitted {
            if serde_json::to_value(existing).ok().as_ref() == Some(raw) {
                continue;
            }
            let spec = parse_field(class_name, name, raw)?;
            if spec.field_type != existing.field_type {
                return Err(ParseError::new(
                    code::INCORRECT_TYPE,
                    format!(
                        "schema mismatch for {class_name}.{name}; expected {} but got {}",
                        existing.field_type, spec.field_type
                    ),
                ));
            }
            if spec != *existing {
                return Err(ParseError::not_supported(format!(
                    "changing the required or defaultValue options of the existing field {name}"
                )));
            }
        }
        let (add_indexes, delete_indexes) = plan_indexes(
            class_name,
            body.get("indexes"),
            &current.indexes,
            &next.fields,
        )?;
        change.add_indexes = add_indexes;
        change.delete_indexes = delete_indexes;

        if change == SchemaChange::default() {
            return Ok(display(&current));
        }
        let store = self.store();
        if !stored {
            match store.create_class(&current).await {
                Ok(_) | Err(StoreError::ClassExists(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let updated = store.update_class(class_name, &change).await?;
        self.schema_cache().install(updated.clone());
        Ok(display(&updated))
    }

    /// `DELETE /schemas/{class}`: drops an empty class and its relations'
    /// join tables. A class that does not exist answers `{}` too.
    pub async fn delete_schema(&self, auth: &Auth, class_name: &str) -> ParseResult<Value> {
        if auth.read_only {
            return Err(read_only("delete"));
        }
        if !class_name_is_valid(class_name) {
            return Err(invalid_class_name(class_name));
        }
        let cache = self.schema_cache();
        let view = cache.reload().await?;
        if view.get(class_name).is_none() {
            cache.remove(class_name);
            return Ok(json!({}));
        }
        let store = self.store();
        let query = Query::new(class_name);
        let count = store.count(&view, &query).await?;
        if count > 0 {
            return Err(not_empty(class_name, count));
        }
        match store.delete_class(class_name).await {
            Ok(()) | Err(StoreError::ClassMissing(_)) => {}
            // An object arrived after the count.
            Err(StoreError::ClassNotEmpty(_)) => {
                let count = store.count(&view, &query).await?;
                return Err(not_empty(class_name, count.max(1)));
            }
            Err(err) => return Err(err.into()),
        }
        cache.remove(class_name);
        Ok(json!({}))
    }
}

fn read_only(action: &str) -> ParseError {
    ParseError::new(
        code::OPERATION_FORBIDDEN,
        format!("read-only masterKey isn't allowed to {action} a schema."),
    )
}

fn class_missing(class_name: &str) -> ParseError {
    StoreError::ClassMissing(class_name.to_owned()).into()
}

fn mismatch(body_class: &str, path_class: &str) -> ParseError {
    ParseError::new(
        code::INVALID_CLASS_NAME,
        format!("Class name mismatch between {body_class} and {path_class}."),
    )
}

fn invalid_class_name(class_name: &str) -> ParseError {
    ParseError::new(
        code::INVALID_CLASS_NAME,
        format!(
            "Invalid classname: {class_name}, classnames can only have alphanumeric characters and _, and must start with an alpha character "
        ),
    )
}

fn not_empty(class_name: &str, count: u64) -> ParseError {
    ParseError::new(
        code::INVALID_SCHEMA_OPERATION,
        format!("Class {class_name} is not empty, contains {count} objects, cannot drop schema."),
    )
}

fn invalid_json() -> ParseError {
    ParseError::json("invalid JSON")
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `^[A-Za-z][A-Za-z0-9_]*$`.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(is_word_char)
}

/// Parse's `fieldNameIsValid`: `length` is never a field, nor `className`
/// outside `_Hooks`.
fn field_name_is_valid(field: &str, class_name: &str) -> bool {
    is_name(field) && field != "length" && !(field == "className" && class_name != "_Hooks")
}

/// Also refuses the fields every class has and a system class's own.
fn field_name_is_valid_for_class(field: &str, class_name: &str) -> bool {
    field_name_is_valid(field, class_name)
        && !DEFAULT_FIELDS.contains(&field)
        && !default_columns(class_name)
            .iter()
            .any(|(name, _)| *name == field)
}

/// `_Join:<field>:<class>`, matched as Parse's unanchored pattern does.
fn is_join_class(name: &str) -> bool {
    let Some((field, class)) = name
        .strip_prefix("_Join:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return false;
    };
    !field.is_empty() && field.chars().all(is_word_char) && class.starts_with(is_word_char)
}

fn class_name_is_valid(name: &str) -> bool {
    SYSTEM_CLASSES.contains(&name) || is_join_class(name) || field_name_is_valid(name, name)
}

/// A field's name, for a field being `action` ("added", "changed"): 105
/// when it is not a field name at all, 136 when Parse defines it.
fn check_field_name(class_name: &str, name: &str, action: &str) -> ParseResult<()> {
    if !field_name_is_valid(name, class_name) {
        return Err(ParseError::new(
            code::INVALID_KEY_NAME,
            format!("invalid field name: {name}"),
        ));
    }
    if !field_name_is_valid_for_class(name, class_name) {
        return Err(ParseError::new(
            code::CHANGED_IMMUTABLE_FIELD,
            format!("field {name} cannot be {action}"),
        ));
    }
    Ok(())
}

/// The fields Parse Server gives its own classes beyond the four every
/// class has (`SchemaController.defaultColumns`).
fn default_columns(class_name: &str) -> Vec<(&'static str, FieldType)> {
    match class_name {
        "_Product" => vec![
            ("productIdentifier", FieldType::String),
            ("download", FieldType::File),
            ("downloadName", FieldType::String),
            ("icon", FieldType::File),
            ("order", FieldType::Number),
            ("title", FieldType::String),
            ("subtitle", FieldType::String),
        ],
        "_Hooks" => vec![
            ("functionName", FieldType::String),
            ("className", FieldType::String),
            ("triggerName", FieldType::String),
            ("url", FieldType::String),
        ],
        "_GlobalConfig" => vec![
            ("params", FieldType::Object),
            ("masterKeyOnly", FieldType::Object),
        ],
        "_GraphQLConfig" => vec![("config", FieldType::Object)],
        other => system_fields(other),
    }
}

/// A class with only the fields Parse gives it, and open permissions.
fn base_schema(class_name: &str) -> ClassSchema {
    let mut schema = ClassSchema::new(class_name);
    for (name, field_type) in default_columns(class_name) {
        schema
            .fields
            .entry(name.to_owned())
            .or_insert_with(|| field_type.into());
    }
    schema
}

fn fields_json(fields: &BTreeMap<String, FieldSpec>) -> Map<String, Value> {
    fields
        .iter()
        .map(|(name, spec)| {
            let spec = serde_json::to_value(spec).unwrap_or(Value::Null);
            (name.clone(), spec)
        })
        .collect()
}

/// A class as `/schemas` shows it: every field Parse gives the class, the
/// class-level permissions with the operations they do not name filled in,
/// and the indexes when there are any.
fn display(schema: &ClassSchema) -> Value {
    let mut fields = base_schema(&schema.class_name).fields;
    fields.extend(
        schema
            .fields
            .iter()
            .map(|(name, spec)| (name.clone(), spec.clone())),
    );
    let mut out = json!({
        "className": schema.class_name,
        "fields": fields_json(&fields),
        "classLevelPermissions": filled_clp(&schema.class_level_permissions),
    });
    if !schema.indexes.is_empty() {
        out["indexes"] = Value::Object(schema.indexes.clone());
    }
    out
}

/// A volatile class as Parse Server shows it: its built-in fields and no
/// class-level permissions.
fn volatile_display(class_name: &str) -> Value {
    json!({
        "className": class_name,
        "fields": fields_json(&base_schema(class_name).fields),
        "classLevelPermissions": {},
    })
}

/// Class-level permissions as Parse Server's adapters read them back: the
/// operations they do not name are present and empty (closed to all but
/// the master key); none at all means the default, open permissions.
fn filled_clp(clp: &Value) -> Value {
    let given = match clp {
        Value::Object(given) => given.clone(),
        Value::Array(items) if items.is_empty() => Map::new(),
        _ => return default_class_level_permissions(),
    };
    let mut out: Map<String, Value> = FILLED_CLP_OPERATIONS
        .iter()
        .map(|op| ((*op).to_owned(), json!({})))
        .collect();
    out.extend(given);
    Value::Object(out)
}

/// A value as JavaScript's template strings print it, for Parse's messages.
fn js(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 => {
                format!("{f:.0}")
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => js(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// The keys and values JavaScript's `for...in` visits: an object's
/// entries, an array's indexes.
fn js_entries(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => Vec::new(),
    }
}

/// The entries of an optional object in the body (`fields`).
fn entries_of(value: Option<&Value>) -> ParseResult<Vec<(&String, &Value)>> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => Ok(map.iter().collect()),
        Some(_) => Err(invalid_json()),
    }
}

fn is_delete(value: &Value) -> bool {
    value.get("__op").and_then(Value::as_str) == Some("Delete")
}

/// The `type` Parse writes for a field type.
fn type_tag(field_type: &FieldType) -> &'static str {
    match field_type {
        FieldType::String => "String",
        FieldType::Number => "Number",
        FieldType::Boolean => "Boolean",
        FieldType::Date => "Date",
        FieldType::Object => "Object",
        FieldType::Array => "Array",
        FieldType::Pointer { .. } => "Pointer",
        FieldType::Relation { .. } => "Relation",
        FieldType::File => "File",
        FieldType::GeoPoint => "GeoPoint",
        FieldType::Polygon => "Polygon",
        FieldType::Bytes => "Bytes",
        FieldType::Acl => "ACL",
    }
}

/// Reads one field definition (`{"type": ..., "targetClass": ...,
/// "required": ..., "defaultValue": ...}`) as Parse validates a new field.
fn parse_field(class_name: &str, name: &str, raw: &Value) -> ParseResult<FieldSpec> {
    let spec = raw.as_object().ok_or_else(invalid_json)?;
    let field_type = match spec.get("type") {
        Some(Value::String(kind)) if kind == "Pointer" || kind == "Relation" => {
            let target = match spec.get("targetClass") {
                Some(Value::String(target)) if !target.is_empty() => target.clone(),
                Some(target) if js_truthy(target) => return Err(invalid_json()),
                _ => {
                    return Err(ParseError::new(
                        code::MISSING_REQUIRED_FIELD,
                        format!("type {kind} needs a class name"),
                    ));
                }
            };
            if !class_name_is_valid(&target) {
                return Err(invalid_class_name(&target));
            }
            if kind == "Pointer" {
                FieldType::Pointer {
                    target_class: target,
                }
            } else {
                FieldType::Relation {
                    target_class: target,
                }
            }
        }
        Some(Value::String(kind)) => match kind.as_str() {
            "Number" => FieldType::Number,
            "String" => FieldType::String,
            "Boolean" => FieldType::Boolean,
            "Date" => FieldType::Date,
            "Object" => FieldType::Object,
            "Array" => FieldType::Array,
            "GeoPoint" => FieldType::GeoPoint,
            "File" => FieldType::File,
            "Bytes" => FieldType::Bytes,
            "Polygon" => FieldType::Polygon,
            other => {
                return Err(ParseError::new(
                    code::INCORRECT_TYPE,
                    format!("invalid field type: {other}"),
                ));
            }
        },
        _ => return Err(invalid_json()),
    };
    let mut out = FieldSpec::from(field_type);
    if let Some(default) = spec.get("defaultValue") {
        out.default_value = Some(check_default(class_name, name, &out.field_type, default)?);
    }
    match spec.get("required") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(required)) => {
            if *required && matches!(out.field_type, FieldType::Relation { .. }) {
                return Err(ParseError::new(
                    code::INCORRECT_TYPE,
                    format!(
                        "The 'required' option is not applicable for {}",
                        out.field_type
                    ),
                ));
            }
            out.required = Some(*required);
        }
        Some(_) => return Err(invalid_json()),
    }
    Ok(out)
}

/// A field's `defaultValue` must be a valid value of the field's type; it
/// is kept in its canonical form.
fn check_default(
    class_name: &str,
    field: &str,
    field_type: &FieldType,
    default: &Value,
) -> ParseResult<Value> {
    if matches!(field_type, FieldType::Relation { .. }) {
        return Err(ParseError::new(
            code::INCORRECT_TYPE,
            format!("The 'default value' option is not applicable for {field_type}"),
        ));
    }
    let mismatch = |got: String| {
        ParseError::new(
            code::INCORRECT_TYPE,
            format!(
                "schema mismatch for {class_name}.{field} default value; expected {field_type} but got {got}"
            ),
        )
    };
    if default.get("__type").and_then(Value::as_str) == Some("Relation") {
        let target = default.get("className").map(js).unwrap_or_default();
        return Err(mismatch(format!("Relation<{target}>")));
    }
    match normalize_value(default)? {
        (value, Some(got)) if got == *field_type => Ok(value),
        (_, Some(got)) => Err(mismatch(got.to_string())),
        (_, None) => Err(mismatch("null".to_owned())),
    }
}

/// Parse allows one GeoPoint field per class. `added` are the new fields,
/// in the order the request names them.
fn check_geo_points(schema: &ClassSchema, added: &[&str]) -> ParseResult<()> {
    let is_geo = |name: &str| {
        schema
            .fields
            .get(name)
            .is_some_and(|spec| spec.field_type == FieldType::GeoPoint)
    };
    let geo: Vec<&str> = schema
        .fields
        .keys()
        .map(String::as_str)
        .filter(|name| !added.contains(name))
        .chain(added.iter().copied())
        .filter(|name| is_geo(name))
        .collect();
    if let [first, second, ..] = geo.as_slice() {
        return Err(ParseError::new(
            code::INCORRECT_TYPE,
            format!(
                "currently, only one GeoPoint field may exist in an object. Adding {second} when {first} already exists."
            ),
        ));
    }
    Ok(())
}

/// A user id in class-level permissions (Parse's default, generated ids).
fn is_user_id(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric())
}

fn clp_error(message: String) -> ParseError {
    ParseError::json(message)
}

/// A field that pointer permissions may name: a pointer to `_User`, or an
/// array (of such pointers).
fn check_pointer_permission(
    field: &str,
    fields: &BTreeMap<String, FieldSpec>,
    operation: &str,
) -> ParseResult<()> {
    let ok = fields
        .get(field)
        .is_some_and(|spec| match &spec.field_type {
            FieldType::Pointer { target_class } => target_class == "_User",
            FieldType::Array => true,
            _ => false,
        });
    if ok {
        Ok(())
    } else {
        Err(clp_error(format!(
            "'{field}' is not a valid column for class level pointer permissions {operation}"
        )))
    }
}

/// Parse's `validateCLP`, against the class's fields after the change.
fn validate_clp(perms: &Value, fields: &BTreeMap<String, FieldSpec>) -> ParseResult<()> {
    if !matches!(perms, Value::Object(_) | Value::Array(_)) {
        return Err(clp_error(format!(
            "'{}' is not a valid value for class level permissions",
            js(perms)
        )));
    }
    for (op_key, operation) in js_entries(perms) {
        if !CLP_OPERATIONS.contains(&op_key.as_str()) {
            return Err(clp_error(format!(
                "{op_key} is not a valid operation for class level permissions"
            )));
        }
        if op_key == "readUserFields" || op_key == "writeUserFields" {
            let Value::Array(names) = operation else {
                return Err(clp_error(format!(
                    "'{}' is not a valid value for class level permissions {op_key} - must be an array",
                    js(operation)
                )));
            };
            for name in names {
                check_pointer_permission(&js(name), fields, &op_key)?;
            }
            continue;
        }
        if !matches!(operation, Value::Object(_) | Value::Array(_)) {
            return Err(clp_error(format!(
                "'{}' is not a valid value for class level permissions {op_key} - must be an object",
                js(operation)
            )));
        }
        if op_key == "protectedFields" {
            for (entity, protected) in js_entries(operation) {
                let valid_key = entity.starts_with("userField:")
                    || entity == "*"
                    || entity == "authenticated"
                    || entity.starts_with("role:")
                    || is_user_id(&entity);
                if !valid_key {
                    return Err(clp_error(format!(
                        "'{entity}' is not a valid key for class level permissions"
                    )));
                }
                let Value::Array(list) = protected else {
                    return Err(clp_error(format!(
                        "'{}' is not a valid value for protectedFields[{entity}] - expected an array.",
                        js(protected)
                    )));
                };
                for field in list {
                    let field = js(field);
                    if DEFAULT_FIELDS.contains(&field.as_str()) {
                        return Err(clp_error(format!(
                            "Default field '{field}' can not be protected"
                        )));
                    }
                    if !fields.contains_key(&field) {
                        return Err(clp_error(format!(
                            "Field '{field}' in protectedFields:{entity} does not exist"
                        )));
                    }
                }
            }
            continue;
        }
        for (entity, permit) in js_entries(operation) {
            let valid_key = entity == "pointerFields"
                || entity == "*"
                || entity == "requiresAuthentication"
                || entity.starts_with("role:")
                || is_user_id(&entity);
            if !valid_key {
                return Err(clp_error(format!(
                    "'{entity}' is not a valid key for class level permissions"
                )));
            }
            if entity == "pointerFields" {
                let Value::Array(names) = permit else {
                    return Err(clp_error(format!(
                        "'{}' is not a valid value for {op_key}[{entity}] - expected an array.",
                        js(permit)
                    )));
                };
                for name in names {
                    // Parse names the operation's object here, as
                    // JavaScript prints it.
                    check_pointer_permission(&js(name), fields, "[object Object]")?;
                }
                continue;
            }
            if *permit != Value::Bool(true) {
                let permit = js(permit);
                return Err(clp_error(format!(
                    "'{permit}' is not a valid value for class level permissions {op_key}:{entity}:{permit}"
                )));
            }
        }
    }
    Ok(())
}

/// Whether an index may name this field: it must exist and be stored in a
/// column of its own.
fn indexable(class_name: &str, field: &str, fields: &BTreeMap<String, FieldSpec>) -> bool {
    let stored = fields.get(field).is_some_and(|spec| {
        !matches!(spec.field_type, FieldType::Acl | FieldType::Relation { .. })
    });
    stored && !(class_name == "_User" && field == "password")
}

/// The index kinds the backends know: ascending, descending and MongoDB's
/// special ones (the SQL backends index those fields in order).
fn valid_index_direction(direction: &Value) -> bool {
    match direction {
        Value::Number(n) => matches!(n.as_f64(), Some(d) if d == 1.0 || d == -1.0),
        Value::String(s) => matches!(s.as_str(), "text" | "2d" | "2dsphere" | "hashed"),
        _ => false,
    }
}

/// The indexes a request adds and deletes (`{"name": {"field": 1}}`,
/// `{"name": {"__op": "Delete"}}`), checked against the existing indexes
/// and the fields after the change, with Parse's errors (102).
fn plan_indexes(
    class_name: &str,
    submitted: Option<&Value>,
    existing: &Map<String, Value>,
    fields: &BTreeMap<String, FieldSpec>,
) -> ParseResult<(Map<String, Value>, Vec<String>)> {
    let mut add = Map::new();
    let mut delete = Vec::new();
    let submitted = match submitted {
        None | Some(Value::Null) => return Ok((add, delete)),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid_json()),
    };
    for (name, spec) in submitted {
        let deleting = is_delete(spec);
        let exists = existing.contains_key(name);
        if exists && !deleting {
            return Err(ParseError::query(format!(
                "Index {name} exists, cannot update."
            )));
        }
        if !exists && deleting {
            return Err(ParseError::query(format!(
                "Index {name} does not exist, cannot delete."
            )));
        }
        if deleting {
            delete.push(name.clone());
            continue;
        }
        if name.is_empty() {
            return Err(ParseError::query("An index needs a name."));
        }
        let keys = spec
            .as_object()
            .filter(|keys| !keys.is_empty())
            .ok_or_else(|| {
                ParseError::query(format!("Index {name} must name at least one field."))
            })?;
        for (field, direction) in keys {
            if !indexable(class_name, field, fields) {
                return Err(ParseError::query(format!(
                    "Field {field} does not exist, cannot add index."
                )));
            }
            if !valid_index_direction(direction) {
                return Err(ParseError::query(format!(
                    "Index {name} has an invalid type for {field}: {}",
                    js(direction)
                )));
            }
        }
        add.insert(name.clone(), spec.clone());
    }
    Ok((add, delete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_follow_parse() {
        assert!(class_name_is_valid("GameScore"));
        assert!(class_name_is_valid("_User"));
        assert!(class_name_is_valid("_Join:users:_Role"));
        assert!(!class_name_is_valid("_GlobalConfig"));
        assert!(!class_name_is_valid("_Hooks"));
        assert!(!class_name_is_valid("1abc"));
        assert!(!class_name_is_valid("a-b"));
        assert!(!class_name_is_valid("length"));
        assert!(!class_name_is_valid("className"));
        assert!(!is_join_class("_Join::x"));
        assert!(!is_join_class("_Join:a-b:x"));
    }

    #[test]
    fn values_print_as_javascript_does() {
        assert_eq!(js(&json!(1)), "1");
        assert_eq!(js(&json!(1.0)), "1");
        assert_eq!(js(&json!(1.5)), "1.5");
        assert_eq!(js(&json!("")), "");
        assert_eq!(js(&json!({})), "[object Object]");
        assert_eq!(js(&json!(["a", null, 2])), "a,,2");
        assert!(!js_truthy(&json!(0)) && !js_truthy(&json!("")) && js_truthy(&json!([])));
    }

    #[test]
    fn filled_permissions_close_what_they_do_not_name() {
        let filled = filled_clp(&json!({"find": {"*": true}, "readUserFields": ["owner"]}));
        assert_eq!(filled["find"], json!({"*": true}));
        assert_eq!(filled["create"], json!({}));
        assert_eq!(filled["protectedFields"], json!({}));
        assert_eq!(filled["readUserFields"], json!(["owner"]));
        assert_eq!(filled_clp(&Value::Null), default_class_level_permissions());
    }
}
