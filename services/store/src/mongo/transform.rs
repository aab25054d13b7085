//! Values and objects between Parse's REST JSON and the documents Parse
//! Server's MongoDB adapter stores (`MongoTransform.js`): `_id` for the
//! objectId, `_created_at`/`_updated_at` as BSON dates, pointers as
//! `_p_<field>: "Class$id"`, GeoPoints as `[lng, lat]`, Polygons as GeoJSON,
//! Bytes as Binary, Files as their name, the ACL as `_rperm`/`_wperm` plus
//! the legacy `_acl`, and `_User`'s auth data as `_auth_data_<provider>`.
//!
//! Everything here is pure, so it is pinned by unit tests against the
//! documents Parse Server produces.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use serde_json::{Map, Number, Value, json};

use crate::error::{StoreError, StoreResult};
use crate::query::Object;
use crate::schema::{ClassSchema, FieldType};

/// A REST value that has no stored form, worded for whoever sent it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(super) enum ConvError {
    #[error("Nested keys should not contain the '$' or '.' characters: {0:?}")]
    NestedKey(String),
    #[error("invalid Date: iso must be an ISO-8601 date")]
    Date,
    #[error("invalid Pointer: className and objectId must be strings")]
    Pointer,
    #[error("invalid Bytes: base64 must be base64 text")]
    Bytes,
    #[error("invalid GeoPoint: latitude and longitude must be numbers")]
    GeoPoint,
    #[error("invalid Polygon: coordinates must be [latitude, longitude] pairs")]
    Polygon,
    #[error("GeoJSON: Loop must have at least 3 different vertices")]
    PolygonVertices,
    #[error("invalid File: name must be a string")]
    File,
}

/// A value the client sent that cannot be stored is an invalid update.
impl From<ConvError> for StoreError {
    fn from(err: ConvError) -> Self {
        StoreError::InvalidUpdate(err.to_string())
    }
}

/// A conversion of a REST value to its stored form.
pub(super) type Conv<T> = Result<T, ConvError>;

/// Parse's own keys on `_User` documents, stored under these names and read
/// back under them; Parse throws on any other unknown `_` key.
pub(super) const USER_INTERNAL_KEYS: &[&str] = &[
    "_hashed_password",
    "_email_verify_token",
    "_perishable_token",
    "_failed_login_count",
    "_password_history",
    "_tombstone",
    "_email_verify_token_expires_at",
    "_perishable_token_expires_at",
    "_password_changed_at",
    "_account_lockout_expires_at",
];

/// The internal `_User` keys that hold dates.
const USER_INTERNAL_DATES: &[&str] = &[
    "_email_verify_token_expires_at",
    "_perishable_token_expires_at",
    "_password_changed_at",
    "_account_lockout_expires_at",
];

/// Prefix of the key each auth provider of a `_User` is stored under.
pub(super) const AUTH_DATA_PREFIX: &str = "_auth_data_";

/// The `_id` of an object: its objectId, except that Parse keeps the one
/// `_GlobalConfig` and `_GraphQLConfig` document under the number 1
/// (`parseInt(objectId)`).
pub(super) fn stored_id(class_name: &str, object_id: &str) -> Bson {
    if matches!(class_name, "_GlobalConfig" | "_GraphQLConfig")
        && let Ok(number) = object_id.parse::<i32>()
    {
        return Bson::Int32(number);
    }
    Bson::String(object_id.to_owned())
}

/// A top-level field name Mongo stores as given: not empty, and neither a
/// path (`.`) nor an operator (`$`). NUL cannot appear in BSON keys.
pub(super) fn valid_field_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['.', '$', '\0'])
}

/// An auth provider name, as Parse's `_auth_data_([a-zA-Z0-9_]+)` reads it.
pub(super) fn valid_provider(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn is_user_date_key(key: &str) -> bool {
    USER_INTERNAL_DATES.contains(&key)
}

/// A date string in the ISO-8601 form Parse writes.
pub(super) fn parse_date(iso: &str) -> Option<DateTime> {
    let parsed = chrono::DateTime::parse_from_rfc3339(iso).ok()?;
    Some(DateTime::from_millis(parsed.timestamp_millis()))
}

/// Parse's `Date.toISOString()`: UTC, always three fractional digits.
pub(super) fn format_date(date: DateTime) -> String {
    match chrono::DateTime::from_timestamp_millis(date.timestamp_millis()) {
        Some(date) => date.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        // Outside chrono's range (±262,000 years): no ISO form exists.
        None => String::new(),
    }
}

/// A date given either as a REST `{"__type": "Date", "iso"}` or as the
/// bare ISO string Parse also accepts for `createdAt` and friends.
pub(super) fn date_value(value: &Value) -> Option<DateTime> {
    match value {
        Value::String(iso) => parse_date(iso),
        Value::Object(map) if map.get("__type").and_then(Value::as_str) == Some("Date") => {
            parse_date(map.get("iso")?.as_str()?)
        }
        _ => None,
    }
}

/// The BSON number the Node driver would write for a JSON number: int32
/// when it fits, then int64, then double.
pub(super) fn number_to_bson(number: &Number) -> Bson {
    if let Some(i) = number.as_i64() {
        return match i32::try_from(i) {
            Ok(small) => Bson::Int32(small),
            Err(_) => Bson::Int64(i),
        };
    }
    Bson::Double(number.as_f64().unwrap_or(f64::NAN))
}

/// A double as JavaScript prints it: whole values without a fraction, so
/// what reads back compares equal to what Parse would show.
pub(super) fn double_to_json(value: f64) -> Value {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 9.007_199_254_740_992e15 {
        Value::from(value as i64)
    } else {
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

fn number_of(value: &Bson) -> Option<f64> {
    match value {
        Bson::Double(d) => Some(*d),
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        _ => None,
    }
}

/// JSON to BSON with no Parse conversion at all, for `_SCHEMA` metadata
/// (class-level permissions, index specs, default values) that Parse keeps
/// as plain JSON.
pub(super) fn plain_to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => number_to_bson(n),
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(plain_to_bson).collect()),
        Value::Object(map) => Bson::Document(
            map.iter()
                .map(|(k, v)| (k.clone(), plain_to_bson(v)))
                .collect(),
        ),
    }
}

/// BSON to JSON with no Parse conversion, the inverse of [`plain_to_bson`].
pub(super) fn plain_to_json(value: &Bson) -> Value {
    match value {
        Bson::Document(doc) => Value::Object(
            doc.iter()
                .map(|(k, v)| (k.clone(), plain_to_json(v)))
                .collect(),
        ),
        Bson::Array(items) => Value::Array(items.iter().map(plain_to_json).collect()),
        other => nested_to_json(other),
    }
}

/// A REST value nested inside an object or array, as Parse stores it
/// (`transformInteriorValue`): Dates become BSON dates, Bytes Binary,
/// pointers `{__type, className, objectId}` sub-documents; Files and
/// GeoPoints stay REST JSON. Keys holding `$` or `.` are refused, since
/// Mongo would read them as operators or paths. Object keys are sorted so
/// that equal objects compare equal in queries whatever order they were
/// written in.
pub(super) fn interior(value: &Value) -> Conv<Bson> {
    Ok(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => number_to_bson(n),
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(interior).collect::<Conv<_>>()?),
        Value::Object(map) => {
            if let Some(special) = interior_atom(map)? {
                return Ok(special);
            }
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut doc = Document::new();
            for (key, item) in entries {
                if !valid_field_name(key) {
                    return Err(ConvError::NestedKey(key.clone()));
                }
                doc.insert(key.clone(), interior(item)?);
            }
            Bson::Document(doc)
        }
    })
}

/// The typed values `interior` converts; `None` for plain objects.
fn interior_atom(map: &Map<String, Value>) -> Conv<Option<Bson>> {
    match map.get("__type").and_then(Value::as_str) {
        Some("Pointer") => {
            let (class_name, object_id) = pointer_parts(map)?;
            Ok(Some(Bson::Document(pointer_document(
                class_name, object_id,
            ))))
        }
        Some("Date") => date_value(&Value::Object(map.clone()))
            .map(|d| Some(Bson::DateTime(d)))
            .ok_or(ConvError::Date),
        Some("Bytes") => bytes(map).map(Some),
        _ => Ok(None),
    }
}

/// A pointer as Parse nests it in objects and arrays.
pub(super) fn pointer_document(class_name: &str, object_id: &str) -> Document {
    doc! {"__type": "Pointer", "className": class_name, "objectId": object_id}
}

fn pointer_parts(map: &Map<String, Value>) -> Conv<(&str, &str)> {
    let class_name = map.get("className").and_then(Value::as_str);
    let object_id = map.get("objectId").and_then(Value::as_str);
    match (class_name, object_id) {
        (Some(c), Some(id)) if !c.is_empty() && !c.contains('$') => Ok((c, id)),
        _ => Err(ConvError::Pointer),
    }
}

/// `"Class$id"`, the form of a top-level pointer field (`_p_<field>`).
pub(super) fn pointer_string(class_name: &str, object_id: &str) -> String {
    format!("{class_name}${object_id}")
}

fn bytes(map: &Map<String, Value>) -> Conv<Bson> {
    let decoded = map
        .get("base64")
        .and_then(Value::as_str)
        .and_then(|b64| BASE64.decode(b64).ok())
        .ok_or(ConvError::Bytes)?;
    Ok(Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: decoded,
    }))
}

fn geo_point(map: &Map<String, Value>) -> Conv<Bson> {
    let lat = map.get("latitude").and_then(Value::as_f64);
    let lng = map.get("longitude").and_then(Value::as_f64);
    match (lat, lng) {
        (Some(lat), Some(lng)) => Ok(Bson::Array(vec![Bson::Double(lng), Bson::Double(lat)])),
        _ => Err(ConvError::GeoPoint),
    }
}

/// A REST Polygon (`[lat, lng]` pairs) as the GeoJSON Parse stores: pairs
/// swapped to `[lng, lat]` and the ring closed, with at least three
/// distinct vertices (`PolygonCoder.JSONToDatabase`).
fn polygon(map: &Map<String, Value>) -> Conv<Bson> {
    let pairs = map
        .get("coordinates")
        .and_then(Value::as_array)
        .ok_or(ConvError::Polygon)?;
    let mut ring = Vec::with_capacity(pairs.len() + 1);
    for pair in pairs {
        let pair = pair
            .as_array()
            .filter(|p| p.len() == 2)
            .ok_or(ConvError::Polygon)?;
        match (pair[0].as_f64(), pair[1].as_f64()) {
            (Some(lat), Some(lng)) => ring.push((lat, lng)),
            _ => return Err(ConvError::Polygon),
        }
    }
    if let (Some(first), Some(last)) = (ring.first().copied(), ring.last().copied())
        && first != last
    {
        ring.push(first);
    }
    let mut distinct: Vec<(f64, f64)> = Vec::new();
    for point in &ring {
        if !distinct.contains(point) {
            distinct.push(*point);
        }
    }
    if distinct.len() < 3 {
        return Err(ConvError::PolygonVertices);
    }
    let coordinates: Vec<Bson> = ring
        .into_iter()
        .map(|(lat, lng)| Bson::Array(vec![Bson::Double(lng), Bson::Double(lat)]))
        .collect();
    Ok(Bson::Document(
        doc! {"type": "Polygon", "coordinates": [Bson::Array(coordinates)]},
    ))
}

/// What a top-level REST value becomes in a document.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TopLevel {
    /// Stored under `_p_<field>` as `"Class$id"`.
    Pointer(String),
    Value(Bson),
    /// Not stored in the document (Relation values live in join
    /// collections).
    Skip,
}

/// A top-level field value as Parse stores it (`transformTopLevelAtom`,
/// then `transformInteriorValue` for objects and arrays).
pub(super) fn top_level(value: &Value) -> Conv<TopLevel> {
    let Value::Object(map) = value else {
        return interior(value).map(TopLevel::Value);
    };
    let stored = match map.get("__type").and_then(Value::as_str) {
        Some("Pointer") => {
            let (class_name, object_id) = pointer_parts(map)?;
            return Ok(TopLevel::Pointer(pointer_string(class_name, object_id)));
        }
        Some("Relation") => return Ok(TopLevel::Skip),
        Some("GeoPoint") => geo_point(map)?,
        Some("Polygon") => polygon(map)?,
        Some("File") => Bson::String(
            map.get("name")
                .and_then(Value::as_str)
                .ok_or(ConvError::File)?
                .to_owned(),
        ),
        _ => interior(value)?,
    };
    Ok(TopLevel::Value(stored))
}

/// `_rperm`, `_wperm` and the legacy `_acl` of a REST ACL; `None` when
/// there is no ACL (public, no keys at all). The `_acl` lists write
/// entries first, as Parse's `addLegacyACL` builds it.
pub(super) fn acl_fields(acl: &Value) -> Option<(Vec<String>, Vec<String>, Document)> {
    let (Some(read), Some(write)) = crate::acl::permissions(Some(acl)) else {
        return None;
    };
    let mut legacy = Document::new();
    for id in &write {
        legacy.insert(id.clone(), doc! {"w": true});
    }
    for id in &read {
        match legacy.get_mut(id) {
            Some(Bson::Document(entry)) => {
                entry.insert("r", true);
            }
            _ => {
                legacy.insert(id.clone(), doc! {"r": true});
            }
        }
    }
    Some((read, write, legacy))
}

fn strings(value: Option<&Bson>) -> Option<Vec<String>> {
    match value? {
        Bson::Array(items) => Some(
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// The REST ACL of `_rperm`/`_wperm`; `None` when both are absent (or
/// null), which Parse reads as "no ACL".
pub(super) fn acl_of(rperm: Option<&Bson>, wperm: Option<&Bson>) -> Option<Value> {
    let (read, write) = (strings(rperm), strings(wperm));
    if read.is_none() && write.is_none() {
        return None;
    }
    let mut acl = Map::new();
    for (ids, right) in [(read, "read"), (write, "write")] {
        for id in ids.unwrap_or_default() {
            let entry = acl.entry(id).or_insert_with(|| json!({}));
            entry[right] = Value::Bool(true);
        }
    }
    Some(Value::Object(acl))
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidUpdate(message.into())
}

/// The document Parse Server would insert for a new object
/// (`parseObjectToMongoObjectForCreate`). Top-level nulls are not stored,
/// so a field set to null reads back absent, as on the other backends.
pub(super) fn document_for_create(class_name: &str, object: &Object) -> StoreResult<Document> {
    let object_id = object
        .get("objectId")
        .and_then(Value::as_str)
        .ok_or_else(|| StoreError::backend_message("object without objectId"))?;
    let mut doc = doc! {"_id": stored_id(class_name, object_id)};
    for (key, value) in object {
        if value.is_null() || matches!(key.as_str(), "objectId" | "createdAt" | "updatedAt" | "ACL")
        {
            continue;
        }
        for (stored_key, stored) in stored_pairs(class_name, key, value)? {
            doc.insert(stored_key, stored);
        }
    }
    if let Some((read, write, legacy)) = object.get("ACL").and_then(acl_fields) {
        doc.insert("_rperm", read);
        doc.insert("_wperm", write);
        doc.insert("_acl", legacy);
    }
    for (rest, stored) in [("createdAt", "_created_at"), ("updatedAt", "_updated_at")] {
        let date = object
            .get(rest)
            .and_then(date_value)
            .ok_or_else(|| StoreError::backend_message(format!("object without a valid {rest}")))?;
        doc.insert(stored, date);
    }
    Ok(doc)
}

/// The stored key(s) and value(s) of one non-null top-level REST field.
fn stored_pairs(class_name: &str, key: &str, value: &Value) -> StoreResult<Vec<(String, Bson)>> {
    let user = class_name == "_User";
    if user && key == "password" {
        // The plain password is never stored; `_hashed_password` is.
        return Ok(Vec::new());
    }
    if user && key == "authData" {
        return auth_data_pairs(value);
    }
    if let Some(internal) = internal_key(class_name, key)? {
        let stored = if is_user_date_key(internal) {
            Bson::DateTime(
                date_value(value).ok_or_else(|| invalid(format!("{key} must be a date")))?,
            )
        } else {
            interior(value)?
        };
        return Ok(vec![(internal.to_owned(), stored)]);
    }
    let stored_key = renamed_key(key);
    if is_date_key(key) {
        let date = date_value(value).ok_or_else(|| invalid(format!("{key} must be a date")))?;
        return Ok(vec![(stored_key.to_owned(), Bson::DateTime(date))]);
    }
    Ok(match top_level(value)? {
        TopLevel::Pointer(pointer) => vec![(format!("_p_{key}"), Bson::String(pointer))],
        TopLevel::Value(stored) => vec![(stored_key.to_owned(), stored)],
        TopLevel::Skip => Vec::new(),
    })
}

/// Checks a top-level key a client may write. `Some` for Parse's internal
/// `_User` keys (stored as they are); `None` for ordinary fields.
pub(super) fn internal_key<'k>(class_name: &str, key: &'k str) -> StoreResult<Option<&'k str>> {
    if !valid_field_name(key) {
        return Err(invalid(format!("invalid field name: {key:?}")));
    }
    if !key.starts_with('_') {
        return Ok(None);
    }
    // Parse throws on unknown `_` keys when it reads a document, so none
    // may be written.
    if class_name == "_User" && USER_INTERNAL_KEYS.contains(&key) {
        return Ok(Some(key));
    }
    Err(invalid(format!("invalid field name: {key}")))
}

/// Parse's renames of REST keys that are not pointers or defaults.
pub(super) fn renamed_key(key: &str) -> &str {
    match key {
        "sessionToken" => "_session_token",
        "lastUsed" => "_last_used",
        "timesUsed" => "times_used",
        other => other,
    }
}

/// Keys whose values Parse coerces to dates whatever the schema says.
pub(super) fn is_date_key(key: &str) -> bool {
    matches!(key, "expiresAt" | "lastUsed")
}

fn auth_data_pairs(value: &Value) -> StoreResult<Vec<(String, Bson)>> {
    let providers = value
        .as_object()
        .ok_or_else(|| invalid("authData must be an object"))?;
    let mut out = Vec::new();
    for (provider, data) in providers {
        if !valid_provider(provider) {
            return Err(invalid(format!("invalid auth provider name: {provider:?}")));
        }
        if !data.is_null() {
            out.push((format!("{AUTH_DATA_PREFIX}{provider}"), interior(data)?));
        }
    }
    Ok(out)
}

/// A nested BSON value as REST JSON (`nestedMongoObjectToNestedParseObject`):
/// dates become `{__type: Date}`, Binary `{__type: Bytes}`, numbers of any
/// width JSON numbers.
pub(super) fn nested_to_json(value: &Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => Value::String(s.clone()),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(d) => double_to_json(*d),
        Bson::Decimal128(d) => d
            .to_string()
            .parse::<f64>()
            .map_or(Value::Null, double_to_json),
        Bson::DateTime(date) => json!({"__type": "Date", "iso": format_date(*date)}),
        Bson::Binary(binary) => json!({"__type": "Bytes", "base64": BASE64.encode(&binary.bytes)}),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::Timestamp(ts) => Value::from(ts.time),
        Bson::RegularExpression(regex) => Value::String(regex.pattern.clone()),
        Bson::JavaScriptCodeWithScope(code) => Value::String(code.code.clone()),
        Bson::DbPointer(_) => Value::Null,
        Bson::Array(items) => Value::Array(items.iter().map(nested_to_json).collect()),
        Bson::Document(doc) => {
            let mut map: Map<String, Value> = doc
                .iter()
                .map(|(k, v)| (k.clone(), nested_to_json(v)))
                .collect();
            // Parse once wrote nested dates as `{__type: Date, iso: <date>}`.
            if map.get("__type").and_then(Value::as_str) == Some("Date")
                && let Some(Value::Object(iso)) = map.get("iso")
                && let Some(Value::String(text)) = iso.get("iso")
            {
                let text = text.clone();
                map.insert("iso".into(), Value::String(text));
            }
            Value::Object(map)
        }
    }
}

/// A stored date as Parse's ISO text; strings pass through.
fn iso_of(value: &Bson) -> Option<String> {
    match value {
        Bson::DateTime(date) => Some(format_date(*date)),
        Bson::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn rest_date(value: &Bson) -> Option<Value> {
    iso_of(value).map(|iso| json!({"__type": "Date", "iso": iso}))
}

/// The REST object of a stored document (`mongoObjectToParseObject`).
/// Unknown `_` keys, pointers to a class the schema does not expect and
/// nulls are left out rather than failing the whole read.
pub(super) fn object_from_document(class: &ClassSchema, doc: &Document) -> Object {
    let mut object = Object::new();
    let user = class.class_name == "_User";
    let mut auth_data = Map::new();
    for (key, value) in doc {
        if matches!(value, Bson::Null | Bson::Undefined) {
            continue;
        }
        match key.as_str() {
            "_id" => {
                let id = match value {
                    Bson::String(s) => s.clone(),
                    other => match nested_to_json(other) {
                        Value::String(s) => s,
                        json => json.to_string(),
                    },
                };
                object.insert("objectId".into(), Value::String(id));
            }
            "_created_at" | "createdAt" | "_updated_at" | "updatedAt" => {
                let rest = if key.contains("created") {
                    "createdAt"
                } else {
                    "updatedAt"
                };
                if let Some(iso) = iso_of(value) {
                    object.insert(rest.into(), Value::String(iso));
                }
            }
            "_rperm" | "_wperm" | "_acl" => {}
            "_session_token" => {
                object.insert("sessionToken".into(), nested_to_json(value));
            }
            "expiresAt" | "_expiresAt" => insert_date(&mut object, "expiresAt", value),
            "lastUsed" | "_last_used" => insert_date(&mut object, "lastUsed", value),
            "timesUsed" | "times_used" => {
                object.insert("timesUsed".into(), nested_to_json(value));
            }
            // A stray `authData` on `_User` is ignored, as Parse does: the
            // `_auth_data_*` keys are the truth.
            "authData" if user => {}
            _ if user && is_user_date_key(key) => insert_date(&mut object, key, value),
            _ if user && USER_INTERNAL_KEYS.contains(&key.as_str()) => {
                object.insert(key.clone(), nested_to_json(value));
            }
            _ if user && key.starts_with(AUTH_DATA_PREFIX) => {
                let provider = &key[AUTH_DATA_PREFIX.len()..];
                if valid_provider(provider) {
                    auth_data.insert(provider.to_owned(), nested_to_json(value));
                }
            }
            _ if key.starts_with("_p_") => {
                let field = &key[3..];
                if let Some(pointer) = pointer_of(class, field, value) {
                    object.insert(field.to_owned(), pointer);
                }
            }
            _ if key.starts_with('_') => {
                tracing::debug!(class = %class.class_name, %key, "skipping an unknown internal key");
            }
            _ => {
                object.insert(key.clone(), field_value(class.field_type(key), value));
            }
        }
    }
    if !auth_data.is_empty() {
        object.insert("authData".into(), Value::Object(auth_data));
    }
    if let Some(acl) = acl_of(doc.get("_rperm"), doc.get("_wperm")) {
        object.insert("ACL".into(), acl);
    }
    object
}

fn insert_date(object: &mut Object, key: &str, value: &Bson) {
    if let Some(date) = rest_date(value) {
        object.insert(key.to_owned(), date);
    }
}

/// A `_p_<field>` value as a REST pointer, if the schema says the field is
/// a pointer to the class it names (Parse throws otherwise; a read must
/// not fail for one bad document, so it is left out).
fn pointer_of(class: &ClassSchema, field: &str, value: &Bson) -> Option<Value> {
    let Some(FieldType::Pointer { target_class }) = class.field_type(field) else {
        return None;
    };
    let (class_name, object_id) = value.as_str()?.split_once('$')?;
    if class_name != target_class {
        tracing::debug!(class = %class.class_name, %field, "skipping a pointer to an unexpected class");
        return None;
    }
    Some(json!({"__type": "Pointer", "className": class_name, "objectId": object_id}))
}

/// A top-level stored value as REST JSON, by the field's schema type.
fn field_value(field_type: Option<&FieldType>, value: &Bson) -> Value {
    match (field_type, value) {
        (Some(FieldType::File), Bson::String(name)) => json!({"__type": "File", "name": name}),
        (Some(FieldType::GeoPoint), Bson::Array(pair)) if pair.len() == 2 => {
            match (number_of(&pair[0]), number_of(&pair[1])) {
                (Some(lng), Some(lat)) => json!({
                    "__type": "GeoPoint",
                    "latitude": double_to_json(lat),
                    "longitude": double_to_json(lng),
                }),
                _ => nested_to_json(value),
            }
        }
        (Some(FieldType::Polygon), Bson::Document(geo)) => {
            polygon_of(geo).unwrap_or_else(|| nested_to_json(value))
        }
        (Some(FieldType::Bytes), Bson::String(b64)) => json!({"__type": "Bytes", "base64": b64}),
        _ => nested_to_json(value),
    }
}

/// GeoJSON back to REST `[lat, lng]` pairs, the closing point included.
fn polygon_of(geo: &Document) -> Option<Value> {
    if geo.get_str("type").ok()? != "Polygon" {
        return None;
    }
    let ring = match geo.get_array("coordinates").ok()?.first()? {
        Bson::Array(ring) => ring,
        _ => return None,
    };
    let mut coordinates = Vec::with_capacity(ring.len());
    for point in ring {
        let Bson::Array(pair) = point else {
            return None;
        };
        let (lng, lat) = (number_of(pair.first()?)?, number_of(pair.get(1)?)?);
        coordinates.push(json!([double_to_json(lat), double_to_json(lng)]));
    }
    Some(json!({"__type": "Polygon", "coordinates": coordinates}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldType;

    fn obj(value: Value) -> Object {
        value.as_object().unwrap().clone()
    }

    fn post_schema() -> ClassSchema {
        let mut schema = ClassSchema::new("Post");
        for (name, field_type) in [
            ("title", FieldType::String),
            (
                "author",
                FieldType::Pointer {
                    target_class: "_User".into(),
                },
            ),
            ("loc", FieldType::GeoPoint),
            ("area", FieldType::Polygon),
            ("pic", FieldType::File),
            ("data", FieldType::Bytes),
            ("tags", FieldType::Array),
            ("meta", FieldType::Object),
            ("when", FieldType::Date),
        ] {
            schema.fields.insert(name.into(), field_type.into());
        }
        schema
    }

    fn date(iso: &str) -> Bson {
        Bson::DateTime(parse_date(iso).unwrap())
    }

    /// The example document of the storage notes (B2), field by field.
    #[test]
    fn objects_become_parse_documents() {
        let object = obj(json!({
            "objectId": "xWMyZ4YEGZ",
            "title": "hi",
            "author": {"__type": "Pointer", "className": "_User", "objectId": "k8Jd0aZ1q2"},
            "loc": {"__type": "GeoPoint", "latitude": 48.85, "longitude": 2.35},
            "pic": {"__type": "File", "name": "a1b2c3_photo.png", "url": "http://x/y"},
            "tags": ["a", "b"],
            "meta": {"n": 1, "when": {"__type": "Date", "iso": "2024-05-01T10:00:00.123Z"}},
            "area": {"__type": "Polygon", "coordinates": [[48.8, 2.3], [48.8, 2.4], [48.9, 2.4]]},
            "data": {"__type": "Bytes", "base64": "aGVsbG8="},
            "when": {"__type": "Date", "iso": "2024-05-02T00:00:00.000Z"},
            "likes": {"__type": "Relation", "className": "_User"},
            "gone": null,
            "ACL": {"k8Jd0aZ1q2": {"read": true, "write": true}, "*": {"read": true}},
            "createdAt": "2024-05-01T10:00:00.123Z",
            "updatedAt": {"__type": "Date", "iso": "2024-05-01T10:00:00.123Z"},
        }));
        let doc = document_for_create("Post", &object).unwrap();
        let expected = doc! {
            "_id": "xWMyZ4YEGZ",
            "title": "hi",
            "_p_author": "_User$k8Jd0aZ1q2",
            "loc": [2.35, 48.85],
            "pic": "a1b2c3_photo.png",
            "tags": ["a", "b"],
            "meta": {"n": 1, "when": date("2024-05-01T10:00:00.123Z")},
            "area": {"type": "Polygon", "coordinates": [[[2.3, 48.8], [2.4, 48.8], [2.4, 48.9], [2.3, 48.8]]]},
            "data": Binary {subtype: BinarySubtype::Generic, bytes: b"hello".to_vec()},
            "when": date("2024-05-02T00:00:00.000Z"),
            "_rperm": ["k8Jd0aZ1q2", "*"],
            "_wperm": ["k8Jd0aZ1q2"],
            "_acl": {"k8Jd0aZ1q2": {"w": true, "r": true}, "*": {"r": true}},
            "_created_at": date("2024-05-01T10:00:00.123Z"),
            "_updated_at": date("2024-05-01T10:00:00.123Z"),
        };
        assert_eq!(doc, expected);
    }

    #[test]
    fn documents_read_back_as_rest_objects() {
        let doc = doc! {
            "_id": "xWMyZ4YEGZ",
            "title": "hi",
            "_p_author": "_User$k8Jd0aZ1q2",
            "loc": [2.35, 48.85],
            "pic": "a1b2c3_photo.png",
            "tags": ["a", "b"],
            "meta": {"n": Bson::Int64(1), "x": 2.0, "when": date("2024-05-01T10:00:00.123Z"),
                     "p": {"__type": "Pointer", "className": "A", "objectId": "b"}},
            "area": {"type": "Polygon", "coordinates": [[[2.3, 48.8], [2.4, 48.8], [2.4, 48.9], [2.3, 48.8]]]},
            "data": Binary {subtype: BinarySubtype::Generic, bytes: b"hello".to_vec()},
            "when": date("2024-05-02T00:00:00Z"),
            "gone": Bson::Null,
            "_rperm": ["k8Jd0aZ1q2", "*"],
            "_wperm": ["k8Jd0aZ1q2"],
            "_acl": {"k8Jd0aZ1q2": {"w": true, "r": true}, "*": {"r": true}},
            "_created_at": date("2024-05-01T10:00:00.123Z"),
            "_updated_at": date("2024-05-01T10:00:00.1Z"),
        };
        let object = object_from_document(&post_schema(), &doc);
        assert_eq!(
            Value::Object(object),
            json!({
                "objectId": "xWMyZ4YEGZ",
                "title": "hi",
                "author": {"__type": "Pointer", "className": "_User", "objectId": "k8Jd0aZ1q2"},
                "loc": {"__type": "GeoPoint", "latitude": 48.85, "longitude": 2.35},
                "pic": {"__type": "File", "name": "a1b2c3_photo.png"},
                "tags": ["a", "b"],
                "meta": {"n": 1, "x": 2, "when": {"__type": "Date", "iso": "2024-05-01T10:00:00.123Z"},
                         "p": {"__type": "Pointer", "className": "A", "objectId": "b"}},
                "area": {"__type": "Polygon", "coordinates": [[48.8, 2.3], [48.8, 2.4], [48.9, 2.4], [48.8, 2.3]]},
                "data": {"__type": "Bytes", "base64": "aGVsbG8="},
                "when": {"__type": "Date", "iso": "2024-05-02T00:00:00.000Z"},
                "ACL": {"k8Jd0aZ1q2": {"read": true, "write": true}, "*": {"read": true}},
                "createdAt": "2024-05-01T10:00:00.123Z",
                "updatedAt": "2024-05-01T10:00:00.100Z",
            })
        );
    }

    #[test]
    fn acl_round_trips_and_public_objects_have_no_acl_keys() {
        let acl =
            json!({"role:Admin": {"read": true}, "u_bob": {"write": true}, "x": {"read": false}});
        let (read, write, legacy) = acl_fields(&acl).unwrap();
        assert_eq!(read, vec!["role:Admin"]);
        assert_eq!(write, vec!["u_bob"]);
        assert_eq!(
            legacy,
            doc! {"u_bob": {"w": true}, "role:Admin": {"r": true}}
        );
        let back = acl_of(
            Some(&Bson::from(read.clone())),
            Some(&Bson::from(write.clone())),
        );
        assert_eq!(
            back,
            Some(json!({"role:Admin": {"read": true}, "u_bob": {"write": true}}))
        );
        assert_eq!(acl_of(None, Some(&Bson::Null)), None);
        assert_eq!(
            acl_of(Some(&Bson::Array(vec![])), None),
            Some(json!({})),
            "an empty ACL is private, not public"
        );
        let public = obj(
            json!({"objectId": "a", "createdAt": "2024-01-01T00:00:00.000Z",
                                "updatedAt": "2024-01-01T00:00:00.000Z"}),
        );
        let doc = document_for_create("Item", &public).unwrap();
        assert!(!doc.contains_key("_rperm") && !doc.contains_key("_acl"));
    }

    #[test]
    fn users_store_hashes_and_auth_data_under_internal_keys() {
        let user = obj(json!({
            "objectId": "k8Jd0aZ1q2",
            "username": "alice",
            "password": "plain",
            "_hashed_password": "$2y$10$abc",
            "authData": {"facebook": {"id": "123", "access_token": "t"}, "twitter": null},
            "_email_verify_token_expires_at": {"__type": "Date", "iso": "2024-05-01T10:00:00.000Z"},
            "_failed_login_count": 2,
            "createdAt": "2024-05-01T10:00:00.000Z",
            "updatedAt": "2024-05-01T10:00:00.000Z",
        }));
        let doc = document_for_create("_User", &user).unwrap();
        assert_eq!(
            doc,
            doc! {
                "_id": "k8Jd0aZ1q2",
                "username": "alice",
                "_hashed_password": "$2y$10$abc",
                "_auth_data_facebook": {"access_token": "t", "id": "123"},
                "_email_verify_token_expires_at": date("2024-05-01T10:00:00.000Z"),
                "_failed_login_count": 2,
                "_created_at": date("2024-05-01T10:00:00.000Z"),
                "_updated_at": date("2024-05-01T10:00:00.000Z"),
            }
        );
        let mut schema = ClassSchema::new("_User");
        schema.class_name = "_User".into();
        let mut stored = doc.clone();
        stored.insert("authData", doc! {"ignored": true});
        let back = object_from_document(&schema, &stored);
        assert_eq!(back["_hashed_password"], "$2y$10$abc");
        assert_eq!(
            back["authData"],
            json!({"facebook": {"access_token": "t", "id": "123"}})
        );
        assert_eq!(
            back["_email_verify_token_expires_at"],
            json!({"__type": "Date", "iso": "2024-05-01T10:00:00.000Z"})
        );
        assert!(back.get("password").is_none());
    }

    #[test]
    fn auth_data_outside_users_is_an_ordinary_object() {
        let mut schema = ClassSchema::new("Thing");
        schema
            .fields
            .insert("authData".into(), FieldType::Object.into());
        let doc = doc! {"_id": "a", "authData": {"x": 1}, "_auth_data_x": {"id": 1}};
        let back = object_from_document(&schema, &doc);
        assert_eq!(back["authData"], json!({"x": 1}));
        assert!(back.get("_auth_data_x").is_none());
    }

    #[test]
    fn sessions_use_parse_key_names() {
        let session = obj(json!({
            "objectId": "pQ3",
            "sessionToken": "r:3f9c",
            "user": {"__type": "Pointer", "className": "_User", "objectId": "k8"},
            "expiresAt": {"__type": "Date", "iso": "2025-05-01T10:00:00.123Z"},
            "createdWith": {"action": "login", "authProvider": "password"},
            "createdAt": "2024-05-01T10:00:00.123Z",
            "updatedAt": "2024-05-01T10:00:00.123Z",
        }));
        let doc = document_for_create("_Session", &session).unwrap();
        assert_eq!(doc.get_str("_session_token").unwrap(), "r:3f9c");
        assert_eq!(doc.get_str("_p_user").unwrap(), "_User$k8");
        assert_eq!(
            doc.get("expiresAt"),
            Some(&date("2025-05-01T10:00:00.123Z"))
        );
        let schema = ClassSchema::new("_Session");
        let back = object_from_document(&schema, &doc);
        assert_eq!(back["sessionToken"], "r:3f9c");
        assert_eq!(
            back["expiresAt"],
            json!({"__type": "Date", "iso": "2025-05-01T10:00:00.123Z"})
        );
        assert_eq!(back["user"]["objectId"], "k8");
        let legacy = doc! {"_id": "s", "_expiresAt": date("2025-05-01T10:00:00.123Z")};
        assert!(object_from_document(&schema, &legacy).contains_key("expiresAt"));
    }

    #[test]
    fn unknown_internal_keys_are_never_written_and_skipped_on_read() {
        let bad = obj(json!({"objectId": "a", "_secret": 1,
            "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}));
        assert!(matches!(
            document_for_create("Item", &bad),
            Err(StoreError::InvalidUpdate(_))
        ));
        // Internal `_User` keys belong to `_User` only.
        let bad = obj(json!({"objectId": "a", "_hashed_password": "x",
            "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}));
        assert!(document_for_create("Item", &bad).is_err());
        let schema = ClassSchema::new("Item");
        let read = object_from_document(&schema, &doc! {"_id": "a", "_weird": 1, "_p_nope": "X$y"});
        assert_eq!(Value::Object(read), json!({"objectId": "a"}));
    }

    #[test]
    fn keys_with_dollar_or_dot_are_refused_at_every_depth() {
        for value in [
            json!({"ok": {"$where": "1"}}),
            json!({"a.b": 1}),
            json!([{"$gt": 1}]),
        ] {
            assert!(interior(&value).is_err(), "{value}");
        }
        for key in ["$where", "a.b", "", "nul\0"] {
            let mut object = obj(json!({"objectId": "a",
                "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}));
            object.insert(key.into(), json!(1));
            assert!(document_for_create("Item", &object).is_err(), "{key:?}");
        }
        let bad_provider = obj(json!({"objectId": "a", "authData": {"a.b": {"id": 1}},
            "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}));
        assert!(document_for_create("_User", &bad_provider).is_err());
    }

    #[test]
    fn pointers_to_other_classes_are_dropped_on_read() {
        let doc = doc! {"_id": "a", "_p_author": "Other$x", "_p_title": "_User$y"};
        let read = object_from_document(&post_schema(), &doc);
        assert!(read.get("author").is_none() && read.get("title").is_none());
    }

    #[test]
    fn bytes_and_geo_values() {
        assert_eq!(
            top_level(&json!({"__type": "Bytes", "base64": "aGVsbG8="})).unwrap(),
            TopLevel::Value(Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: b"hello".to_vec()
            }))
        );
        assert!(top_level(&json!({"__type": "Bytes", "base64": "!!"})).is_err());
        // A plain base64 string in a Bytes field is read as Bytes too.
        assert_eq!(
            field_value(Some(&FieldType::Bytes), &Bson::String("aGk=".into())),
            json!({"__type": "Bytes", "base64": "aGk="})
        );
        // A closed ring stays as it is; too few distinct points are refused.
        let closed = json!({"__type": "Polygon", "coordinates": [[0, 0], [0, 1], [1, 1], [0, 0]]});
        let TopLevel::Value(Bson::Document(geo)) = top_level(&closed).unwrap() else {
            panic!()
        };
        assert_eq!(
            geo.get_array("coordinates").unwrap()[0]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        let flat = json!({"__type": "Polygon", "coordinates": [[0, 0], [0, 1], [0, 0]]});
        assert!(top_level(&flat).is_err());
        assert!(top_level(&json!({"__type": "GeoPoint", "latitude": "x"})).is_err());
        // Nested Files and GeoPoints stay REST JSON, as Parse keeps them.
        let nested = json!({"f": {"__type": "File", "name": "n"}, "g": {"__type": "GeoPoint", "latitude": 1, "longitude": 2}});
        assert_eq!(
            interior(&nested).unwrap(),
            Bson::Document(doc! {
                "f": {"__type": "File", "name": "n"},
                "g": {"__type": "GeoPoint", "latitude": 1, "longitude": 2},
            })
        );
    }

    #[test]
    fn config_objects_have_numeric_ids() {
        let config = obj(json!({"objectId": "1", "params": {"a": 1},
            "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}));
        let doc = document_for_create("_GlobalConfig", &config).unwrap();
        assert_eq!(doc.get("_id"), Some(&Bson::Int32(1)));
        assert_eq!(stored_id("Post", "1"), Bson::String("1".into()));
        let read = object_from_document(&ClassSchema::new("_GlobalConfig"), &doc);
        assert_eq!(read["objectId"], "1");
    }

    #[test]
    fn numbers_dates_and_odd_bson() {
        assert_eq!(number_to_bson(&Number::from(7)), Bson::Int32(7));
        assert_eq!(
            number_to_bson(&Number::from(1i64 << 40)),
            Bson::Int64(1 << 40)
        );
        assert_eq!(
            number_to_bson(&Number::from_f64(2.5).unwrap()),
            Bson::Double(2.5)
        );
        assert_eq!(double_to_json(3.0), json!(3));
        assert_eq!(double_to_json(f64::NAN), Value::Null);
        assert_eq!(
            format_date(parse_date("2024-01-02T03:04:05.678901+01:00").unwrap()),
            "2024-01-02T02:04:05.678Z"
        );
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(format_date(DateTime::MAX), "");
        let schema = ClassSchema::new("Odd");
        let doc = doc! {"_id": 1, "oid": mongodb::bson::oid::ObjectId::from_bytes([1; 12]),
        "re": Bson::RegularExpression(mongodb::bson::Regex { pattern: "a".into(), options: String::new() })};
        let read = object_from_document(&schema, &doc);
        assert_eq!(read["objectId"], "1");
        assert_eq!(read["oid"], "010101010101010101010101");
        assert_eq!(read["re"], "a");
    }
}
