//! Validation of what clients write: class and field names, Parse's typed
//! values (`{"__type": ...}`), update operators (`{"__op": ...}`), and the
//! field types they imply.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use oxbase_store::{FieldPath, FieldType, RelationChange, UpdateOp};
use serde_json::{Map, Value};

use crate::error::{ParseError, ParseResult, code};

/// Parse Server's own classes (`SchemaController.systemClasses`): the
/// underscore names `/schemas` accepts.
pub const SYSTEM_CLASSES: &[&str] = &[
    "_User",
    "_Installation",
    "_Role",
    "_Session",
    "_Product",
    "_PushStatus",
    "_JobStatus",
    "_JobSchedule",
    "_Audience",
    "_Idempotency",
];

/// Classes Parse Server keeps for itself beyond those: no client may
/// create or point at objects of any other underscore name.
const INTERNAL_CLASSES: &[&str] = &["_GlobalConfig", "_GraphQLConfig", "_Hooks"];

/// One of Parse Server's own classes, system or internal.
pub(crate) fn is_parse_class(name: &str) -> bool {
    SYSTEM_CLASSES.contains(&name) || INTERNAL_CLASSES.contains(&name)
}

/// Keys refused anywhere in a body: they mean something to JavaScript or
/// BSON, and Parse Server refuses them too.
pub const PROHIBITED_KEYS: &[&str] = &["__proto__", "constructor", "_bsontype"];

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A class name a client may use through `/classes`.
pub fn validate_class_name(name: &str) -> ParseResult<()> {
    if is_parse_class(name) {
        return Err(ParseError::not_supported(format!(
            "the system class {name}"
        )));
    }
    if is_name(name) {
        Ok(())
    } else {
        Err(ParseError::new(
            code::INVALID_CLASS_NAME,
            format!(
                "Invalid classname: {name}, classnames can only have alphanumeric characters and _, and must start with an alpha character "
            ),
        ))
    }
}

/// A top-level field name.
pub(crate) fn is_field_name(name: &str) -> bool {
    is_name(name)
}

fn invalid_field(name: &str) -> ParseError {
    ParseError::new(
        code::INVALID_KEY_NAME,
        format!("Invalid field name: {name}."),
    )
}

/// Parse's date format: ISO-8601 in UTC with milliseconds, which sorts as
/// the dates do.
pub fn format_date(date: DateTime<Utc>) -> String {
    date.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn now() -> String {
    format_date(Utc::now())
}

/// Reads the date forms clients send (RFC 3339, with or without an offset,
/// or a bare day) and returns Parse's form.
pub(crate) fn normalize_date(raw: &str) -> Option<String> {
    if let Ok(date) = DateTime::parse_from_rfc3339(raw) {
        return Some(format_date(date.with_timezone(&Utc)));
    }
    if let Ok(naive) = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(format_date(naive.and_utc()));
    }
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Some(format_date(day.and_hms_opt(0, 0, 0)?.and_utc()));
    }
    None
}

fn typed<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key)
}

fn bad_type(kind: &str) -> ParseError {
    ParseError::new(code::INCORRECT_TYPE, format!("This is not a valid {kind}"))
}

/// Validates a value being stored and returns it in canonical form with the
/// field type it implies (`None` for null).
pub(crate) fn normalize_value(value: &Value) -> ParseResult<(Value, Option<FieldType>)> {
    Ok(match value {
        Value::Null => (Value::Null, None),
        Value::Bool(_) => (value.clone(), Some(FieldType::Boolean)),
        Value::Number(_) => (value.clone(), Some(FieldType::Number)),
        Value::String(_) => (value.clone(), Some(FieldType::String)),
        Value::Array(items) => {
            let items = items
                .iter()
                .map(|item| normalize_value(item).map(|(v, _)| v))
                .collect::<ParseResult<Vec<_>>>()?;
            (Value::Array(items), Some(FieldType::Array))
        }
        Value::Object(map) => match map.get("__type").and_then(Value::as_str) {
            Some(kind) => normalize_typed(kind, map)?,
            None => {
                let mut out = Map::new();
                for (key, value) in map {
                    if key.contains('$') || key.contains('.') {
                        return Err(ParseError::new(
                            code::INVALID_NESTED_KEY,
                            "Nested keys should not contain the '$' or '.' characters",
                        ));
                    }
                    if PROHIBITED_KEYS.contains(&key.as_str()) {
                        return Err(prohibited(key));
                    }
                    out.insert(key.clone(), normalize_value(value)?.0);
                }
                (Value::Object(out), Some(FieldType::Object))
            }
        },
    })
}

fn prohibited(key: &str) -> ParseError {
    ParseError::new(
        code::INVALID_KEY_NAME,
        format!("Prohibited keyword in request data: {{\"key\":\"{key}\"}}."),
    )
}

fn normalize_typed(
    kind: &str,
    map: &Map<String, Value>,
) -> ParseResult<(Value, Option<FieldType>)> {
    let text = |key: &str| typed(map, key).and_then(Value::as_str);
    Ok(match kind {
        "Date" => {
            let iso = text("iso")
                .and_then(normalize_date)
                .ok_or_else(|| bad_type("Date"))?;
            (
                serde_json::json!({"__type": "Date", "iso": iso}),
                Some(FieldType::Date),
            )
        }
        "Pointer" => {
            let (Some(class_name), Some(object_id)) = (text("className"), text("objectId")) else {
                return Err(bad_type("Pointer"));
            };
            if !is_name(class_name) && !is_parse_class(class_name) {
                return Err(bad_type("Pointer"));
            }
            (
                serde_json::json!({"__type": "Pointer", "className": class_name, "objectId": object_id}),
                Some(FieldType::Pointer {
                    target_class: class_name.to_owned(),
                }),
            )
        }
        "GeoPoint" => {
            geo_point(map).ok_or_else(|| bad_type("GeoPoint"))?;
            (
                serde_json::json!({"__type": "GeoPoint", "latitude": map["latitude"], "longitude": map["longitude"]}),
                Some(FieldType::GeoPoint),
            )
        }
        "Polygon" => {
            let coordinates = typed(map, "coordinates")
                .and_then(Value::as_array)
                .ok_or_else(|| bad_type("Polygon"))?;
            let mut pairs = Vec::with_capacity(coordinates.len());
            for pair in coordinates {
                let pair = pair
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .ok_or_else(|| bad_type("Polygon"))?;
                let (Some(lat), Some(lng)) = (pair[0].as_f64(), pair[1].as_f64()) else {
                    return Err(bad_type("Polygon"));
                };
                if !valid_point(lat, lng) {
                    return Err(bad_type("Polygon"));
                }
                pairs.push(Value::Array(pair.clone()));
            }
            if pairs.len() < 3 {
                return Err(ParseError::new(
                    code::INCORRECT_TYPE,
                    "Polygon must have at least 3 values",
                ));
            }
            // Stored closed, as Parse Server stores it.
            if pairs.first() != pairs.last() {
                pairs.push(pairs[0].clone());
            }
            (
                serde_json::json!({"__type": "Polygon", "coordinates": pairs}),
                Some(FieldType::Polygon),
            )
        }
        "File" => {
            let name = text("name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad_type("File"))?;
            let mut file = serde_json::json!({"__type": "File", "name": name});
            if let Some(url) = text("url") {
                file["url"] = Value::from(url);
            }
            (file, Some(FieldType::File))
        }
        "Bytes" => {
            let base64 = text("base64").ok_or_else(|| bad_type("Bytes"))?;
            (
                serde_json::json!({"__type": "Bytes", "base64": base64}),
                Some(FieldType::Bytes),
            )
        }
        "Relation" => return Err(ParseError::not_supported("Relation fields")),
        other => return Err(bad_type(other)),
    })
}

fn valid_point(latitude: f64, longitude: f64) -> bool {
    (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude)
}

/// `(latitude, longitude)` of a GeoPoint object, if it is a valid one.
pub fn geo_point(map: &Map<String, Value>) -> Option<(f64, f64)> {
    let latitude = map.get("latitude")?.as_f64()?;
    let longitude = map.get("longitude")?.as_f64()?;
    valid_point(latitude, longitude).then_some((latitude, longitude))
}

/// Validates an ACL object: `{"*" | userId | "role:Name": {"read": bool, "write": bool}}`.
pub(crate) fn validate_acl(acl: &Value) -> ParseResult<Value> {
    let bad = |why: &str| ParseError::new(code::INVALID_ACL, format!("Invalid ACL: {why}"));
    let entries = acl.as_object().ok_or_else(|| bad("it must be an object"))?;
    let mut out = Map::new();
    for (id, grant) in entries {
        if id.is_empty() {
            return Err(bad("empty id"));
        }
        let grant = grant
            .as_object()
            .ok_or_else(|| bad("each entry must be an object"))?;
        let mut clean = Map::new();
        for (right, value) in grant {
            if right != "read" && right != "write" {
                return Err(bad(&format!("unknown permission {right}")));
            }
            let allowed = value
                .as_bool()
                .ok_or_else(|| bad("permissions must be booleans"))?;
            if allowed {
                clean.insert(right.clone(), Value::Bool(true));
            }
        }
        if !clean.is_empty() {
            out.insert(id.clone(), Value::Object(clean));
        }
    }
    Ok(Value::Object(out))
}

/// A client's write, validated.
#[derive(Debug, Default)]
pub struct ParsedWrite {
    pub changes: Vec<(FieldPath, UpdateOp)>,
    /// The types the write gives top-level fields.
    pub types: BTreeMap<String, FieldType>,
    /// Fields whose operators' results Parse returns in the response.
    pub echo: Vec<String>,
    /// The objectId a create asks for (when custom ids are allowed).
    pub object_id: Option<String>,
    /// Fields the response carries besides the object's, such as Parse's
    /// `authDataResponse`.
    pub respond: Map<String, Value>,
    /// `AddRelation`/`RemoveRelation` changes, by field.
    pub relations: Vec<RelationChange>,
}

/// What kind of write a body is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WriteKind<'a> {
    Create { allow_custom_id: bool },
    Update { object_id: &'a str },
}

pub fn parse_write(body: &Map<String, Value>, kind: WriteKind<'_>) -> ParseResult<ParsedWrite> {
    let mut out = ParsedWrite::default();
    let set_type = |out: &mut ParsedWrite, field: &str, t: FieldType| -> ParseResult<()> {
        match out.types.get(field) {
            Some(existing) if *existing != t => Err(ParseError::new(
                code::INCORRECT_TYPE,
                format!("conflicting types for {field}: {existing} and {t}"),
            )),
            _ => {
                out.types.insert(field.to_owned(), t);
                Ok(())
            }
        }
    };
    for (key, value) in body {
        match key.as_str() {
            "objectId" => {
                match kind {
                    WriteKind::Create {
                        allow_custom_id: true,
                    } => {
                        let id = value.as_str().filter(|id| !id.is_empty()).ok_or_else(|| {
                            ParseError::new(
                                code::MISSING_OBJECT_ID,
                                "objectId must not be empty, null or undefined",
                            )
                        })?;
                        out.object_id = Some(id.to_owned());
                    }
                    WriteKind::Update { object_id } if value.as_str() == Some(object_id) => {}
                    _ => {
                        return Err(ParseError::new(
                            code::INVALID_KEY_NAME,
                            "objectId is an invalid field name.",
                        ));
                    }
                }
                continue;
            }
            // The server sets these.
            "createdAt" | "updatedAt" => continue,
            "id" => {
                return Err(ParseError::new(
                    code::INVALID_KEY_NAME,
                    "id is an invalid field name.",
                ));
            }
            "ACL" => {
                let op = if value.is_null() || is_delete_op(value) {
                    UpdateOp::Delete
                } else {
                    UpdateOp::Set(validate_acl(value)?)
                };
                out.changes.push((FieldPath::new("ACL"), op));
                continue;
            }
            _ => {}
        }
        let path = FieldPath::parse(key);
        if !is_field_name(&path.field) || PROHIBITED_KEYS.contains(&path.field.as_str()) {
            return Err(invalid_field(key));
        }
        if path.is_nested() {
            if matches!(kind, WriteKind::Create { .. })
                || path.nested.iter().any(|s| s.is_empty() || s.contains('$'))
            {
                return Err(invalid_field(key));
            }
            set_type(&mut out, &path.field, FieldType::Object)?;
        }
        if let Some((target, change)) = relation_op(&path, value)? {
            set_type(
                &mut out,
                &path.field,
                FieldType::Relation {
                    target_class: target,
                },
            )?;
            out.relations.push(change);
            continue;
        }
        let op = match value {
            Value::Object(map) if map.contains_key("__op") => parse_op(map)?,
            Value::Null => UpdateOp::Delete,
            _ => {
                let (value, field_type) = normalize_value(value)?;
                if let (Some(t), false) = (field_type, path.is_nested()) {
                    set_type(&mut out, &path.field, t)?;
                }
                UpdateOp::Set(value)
            }
        };
        if !path.is_nested() {
            match &op {
                UpdateOp::Increment(_) => {
                    set_type(&mut out, &path.field, FieldType::Number)?;
                    out.echo.push(key.clone());
                }
                UpdateOp::Add(_) | UpdateOp::AddUnique(_) | UpdateOp::Remove(_) => {
                    set_type(&mut out, &path.field, FieldType::Array)?;
                    out.echo.push(key.clone());
                }
                _ => {}
            }
        }
        if matches!(kind, WriteKind::Create { .. }) && op == UpdateOp::Delete {
            continue;
        }
        out.changes.push((path, op));
    }
    Ok(out)
}

/// `AddRelation`, `RemoveRelation`, or a `Batch` of both on one field: the
/// target class and the ids to add and remove.
fn relation_op(path: &FieldPath, value: &Value) -> ParseResult<Option<(String, RelationChange)>> {
    let Some(op) = value.get("__op").and_then(Value::as_str) else {
        return Ok(None);
    };
    let ops: Vec<&Value> = match op {
        "AddRelation" | "RemoveRelation" => vec![value],
        "Batch" => {
            let ops = value
                .get("ops")
                .and_then(Value::as_array)
                .ok_or_else(|| ParseError::json("Batch ops must be an array"))?;
            if !ops.iter().all(|op| {
                matches!(
                    op.get("__op").and_then(Value::as_str),
                    Some("AddRelation" | "RemoveRelation")
                )
            }) {
                return Err(ParseError::new(
                    code::COMMAND_UNAVAILABLE,
                    "A Batch may only hold AddRelation and RemoveRelation.",
                ));
            }
            ops.iter().collect()
        }
        _ => return Ok(None),
    };
    if path.is_nested() {
        return Err(invalid_field(&path.field));
    }
    let mut target: Option<String> = None;
    let mut change = RelationChange {
        key: path.field.clone(),
        add: Vec::new(),
        remove: Vec::new(),
    };
    for op in ops {
        let objects = op
            .get("objects")
            .and_then(Value::as_array)
            .ok_or_else(|| ParseError::json("objects to add must be an array"))?;
        for object in objects {
            let (Some("Pointer"), Some(class_name), Some(object_id)) = (
                object.get("__type").and_then(Value::as_str),
                object.get("className").and_then(Value::as_str),
                object.get("objectId").and_then(Value::as_str),
            ) else {
                return Err(bad_type("Pointer"));
            };
            match &target {
                Some(existing) if existing != class_name => {
                    return Err(ParseError::new(
                        code::INCORRECT_TYPE,
                        format!(
                            "Related object must be of class {existing}, but {class_name} was passed in."
                        ),
                    ));
                }
                _ => target = Some(class_name.to_owned()),
            }
            let list = if op["__op"] == "AddRelation" {
                &mut change.add
            } else {
                &mut change.remove
            };
            list.push(object_id.to_owned());
        }
    }
    match target {
        Some(target) => Ok(Some((target, change))),
        None => Err(ParseError::json("a relation operation needs objects")),
    }
}

fn is_delete_op(value: &Value) -> bool {
    value.get("__op").and_then(Value::as_str) == Some("Delete")
}

fn parse_op(map: &Map<String, Value>) -> ParseResult<UpdateOp> {
    let name = map.get("__op").and_then(Value::as_str).unwrap_or_default();
    let objects = || -> ParseResult<Vec<Value>> {
        map.get("objects")
            .and_then(Value::as_array)
            .ok_or_else(|| ParseError::json("objects to add must be an array"))?
            .iter()
            .map(|item| normalize_value(item).map(|(v, _)| v))
            .collect()
    };
    Ok(match name {
        "Increment" => match map.get("amount") {
            Some(Value::Number(n)) => UpdateOp::Increment(n.clone()),
            None => UpdateOp::Increment(1.into()),
            Some(_) => return Err(ParseError::json("incrementing must provide a number")),
        },
        "Add" => UpdateOp::Add(objects()?),
        "AddUnique" => UpdateOp::AddUnique(objects()?),
        "Remove" => UpdateOp::Remove(objects()?),
        "Delete" => UpdateOp::Delete,
        other => {
            return Err(ParseError::new(
                code::COMMAND_UNAVAILABLE,
                format!("The {other} operator is not supported yet."),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> ParseResult<ParsedWrite> {
        parse_write(
            body.as_object().unwrap(),
            WriteKind::Create {
                allow_custom_id: false,
            },
        )
    }

    fn code_of(err: ParseError) -> i32 {
        match err {
            ParseError::Parse { code, .. } => code,
            other => panic!("not a Parse error: {other:?}"),
        }
    }

    #[test]
    fn types_are_inferred() {
        let parsed = create(json!({
            "s": "x", "n": 1, "b": true, "a": [1], "o": {"k": 1},
            "d": {"__type": "Date", "iso": "2024-05-01T10:00:00Z"},
            "p": {"__type": "Pointer", "className": "Team", "objectId": "abc"},
            "g": {"__type": "GeoPoint", "latitude": 1, "longitude": 2},
            "f": {"__type": "File", "name": "a.txt", "url": "http://x/a.txt"},
            "i": {"__op": "Increment", "amount": 2},
            "nothing": null
        }))
        .unwrap();
        assert_eq!(parsed.types["s"], FieldType::String);
        assert_eq!(parsed.types["d"], FieldType::Date);
        assert_eq!(
            parsed.types["p"],
            FieldType::Pointer {
                target_class: "Team".into()
            }
        );
        assert_eq!(parsed.types["i"], FieldType::Number);
        assert!(!parsed.types.contains_key("nothing"));
        assert_eq!(parsed.echo, ["i"]);
        let date = parsed.changes.iter().find(|(p, _)| p.field == "d").unwrap();
        assert_eq!(
            date.1,
            UpdateOp::Set(json!({"__type": "Date", "iso": "2024-05-01T10:00:00.000Z"}))
        );
    }

    #[test]
    fn bad_names_and_values_get_parse_codes() {
        assert_eq!(code_of(create(json!({"$bad": 1})).unwrap_err()), 105);
        assert_eq!(code_of(create(json!({"a.b": 1})).unwrap_err()), 105);
        assert_eq!(code_of(create(json!({"objectId": "x"})).unwrap_err()), 105);
        assert_eq!(code_of(create(json!({"o": {"a.b": 1}})).unwrap_err()), 121);
        assert_eq!(code_of(create(json!({"o": {"$gt": 1}})).unwrap_err()), 121);
        assert_eq!(
            code_of(create(json!({"o": {"x": {"__proto__": 1}}})).unwrap_err()),
            105
        );
        assert_eq!(
            code_of(create(json!({"d": {"__type": "Date", "iso": "yesterday"}})).unwrap_err()),
            111
        );
        assert_eq!(
            code_of(
                create(json!({"g": {"__type": "GeoPoint", "latitude": 91, "longitude": 0}}))
                    .unwrap_err()
            ),
            111
        );
        assert_eq!(
            code_of(create(json!({"i": {"__op": "Increment", "amount": "1"}})).unwrap_err()),
            107
        );
        assert_eq!(
            code_of(create(json!({"i": {"__op": "Explode"}})).unwrap_err()),
            108
        );
        assert_eq!(
            code_of(create(json!({"ACL": {"*": {"read": "yes"}}})).unwrap_err()),
            123
        );
        assert_eq!(code_of(validate_class_name("1abc").unwrap_err()), 103);
        assert_eq!(code_of(validate_class_name("a-b").unwrap_err()), 103);
        assert!(validate_class_name("Game_Score2").is_ok());
    }

    #[test]
    fn updates_allow_dotted_keys_into_objects() {
        let body = json!({"profile.name": "x", "objectId": "o1", "gone": null});
        let parsed = parse_write(
            body.as_object().unwrap(),
            WriteKind::Update { object_id: "o1" },
        )
        .unwrap();
        assert_eq!(parsed.types["profile"], FieldType::Object);
        assert!(
            parsed
                .changes
                .contains(&(FieldPath::new("gone"), UpdateOp::Delete))
        );
    }

    #[test]
    fn dates_normalize() {
        assert_eq!(
            normalize_date("2024-01-02").unwrap(),
            "2024-01-02T00:00:00.000Z"
        );
        assert_eq!(
            normalize_date("2024-01-02T03:04:05.6+01:00").unwrap(),
            "2024-01-02T02:04:05.600Z"
        );
        assert!(normalize_date("02/01/2024").is_none());
    }
}
