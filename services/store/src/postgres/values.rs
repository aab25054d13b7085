//! Values between Parse's REST JSON and Parse Server's PostgreSQL columns:
//! bound parameters on the way in, typed row values on the way out.

use std::error::Error;

use bytes::BytesMut;
use serde_json::{Map, Number, Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::error::{StoreError, StoreResult};
use crate::query::Object;
use crate::schema::FieldType;
use crate::sql::quote_ident;

/// A bound parameter. Every placeholder is written with an explicit cast
/// to the type the variant carries (`$1::text`, `$2::float8`, ...), so the
/// server always asks for the type we send.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Text(String),
    Float(f64),
    Bool(bool),
    Json(Value),
    TextArray(Vec<String>),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Text(v) => v.to_sql(ty, out),
            Param::Float(v) => v.to_sql(ty, out),
            Param::Bool(v) => v.to_sql(ty, out),
            Param::Json(v) => v.to_sql(ty, out),
            Param::TextArray(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Parameters of one statement, numbered as they are added.
#[derive(Debug, Default)]
pub(super) struct Params {
    pub values: Vec<Param>,
}

impl Params {
    /// Binds `param` and returns its placeholder with `cast` (`text`,
    /// `float8`, `boolean`, `jsonb`, `text[]`).
    pub fn bind(&mut self, param: Param, cast: &str) -> String {
        self.values.push(param);
        format!("${}::{cast}", self.values.len())
    }

    pub fn text(&mut self, value: impl Into<String>) -> String {
        self.bind(Param::Text(value.into()), "text")
    }

    pub fn float(&mut self, value: f64) -> String {
        self.bind(Param::Float(value), "float8")
    }

    pub fn json(&mut self, value: Value) -> String {
        self.bind(Param::Json(value), "jsonb")
    }

    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|p| p as &(dyn ToSql + Sync))
            .collect()
    }
}

fn bad(field: &str, field_type: &FieldType) -> StoreError {
    StoreError::InvalidUpdate(format!("{field} does not hold a {field_type}"))
}

/// The SQL expression (with its parameters bound) storing `value` in a
/// column of `field_type`.
pub(super) fn encode(
    params: &mut Params,
    field: &str,
    field_type: &FieldType,
    value: &Value,
) -> StoreResult<String> {
    if value.is_null() {
        return Ok("NULL".into());
    }
    let key = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(match field_type {
        FieldType::String => params.text(value.as_str().ok_or_else(|| bad(field, field_type))?),
        FieldType::Number => params.float(value.as_f64().ok_or_else(|| bad(field, field_type))?),
        FieldType::Boolean => params.bind(
            Param::Bool(value.as_bool().ok_or_else(|| bad(field, field_type))?),
            "boolean",
        ),
        FieldType::Date => {
            let iso = key("iso").or_else(|| value.as_str().map(str::to_owned));
            format!(
                "{}::timestamptz",
                params.text(iso.ok_or_else(|| bad(field, field_type))?)
            )
        }
        FieldType::Pointer { .. } => {
            params.text(key("objectId").ok_or_else(|| bad(field, field_type))?)
        }
        FieldType::File => params.text(key("name").ok_or_else(|| bad(field, field_type))?),
        FieldType::Object | FieldType::Array | FieldType::Bytes => params.json(value.clone()),
        FieldType::GeoPoint => {
            let (Some(lat), Some(lng)) = (
                value.get("latitude").and_then(Value::as_f64),
                value.get("longitude").and_then(Value::as_f64),
            ) else {
                return Err(bad(field, field_type));
            };
            format!("point({}, {})", params.float(lng), params.float(lat))
        }
        FieldType::Polygon => {
            let pairs = value
                .get("coordinates")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(field, field_type))?;
            let mut points = Vec::with_capacity(pairs.len());
            for pair in pairs {
                let (Some(lat), Some(lng)) = (
                    pair.get(0).and_then(Value::as_f64),
                    pair.get(1).and_then(Value::as_f64),
                ) else {
                    return Err(bad(field, field_type));
                };
                points.push(format!("({lng},{lat})"));
            }
            format!(
                "{}::polygon",
                params.text(format!("({})", points.join(",")))
            )
        }
        FieldType::Relation { .. } | FieldType::Acl => return Err(bad(field, field_type)),
    })
}

/// The SELECT expression reading a column of `field_type` into a value
/// [`decode`] understands.
pub(super) fn select_expr(alias: &str, column: &str, field_type: &FieldType) -> String {
    let col = format!("{alias}.{}", quote_ident(column));
    match field_type {
        FieldType::GeoPoint | FieldType::Polygon => format!("{col}::text"),
        _ => col,
    }
}

/// A timestamp as Parse writes dates: UTC, milliseconds, `Z`.
pub(super) fn iso(date: chrono::DateTime<chrono::Utc>) -> String {
    date.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A timestamptz as Parse's ISO text, milliseconds and `Z`, for comparing
/// inside SQL.
pub(super) fn iso_expr(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// JavaScript prints whole doubles without a fraction; so do we, so values
/// read back compare equal to what was written.
pub(super) fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.007_199_254_740_992e15 {
        Value::from(value as i64)
    } else {
        Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn parse_points(text: &str) -> Vec<(f64, f64)> {
    text.split(['(', ')'])
        .filter_map(|part| {
            let (x, y) = part.split_once(',')?;
            Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
        })
        .collect()
}

/// Reads column `idx` of `row`, of `field_type`, as REST JSON.
pub(super) fn decode(row: &Row, idx: usize, field_type: &FieldType) -> StoreResult<Option<Value>> {
    let get_err = |e: tokio_postgres::Error| StoreError::backend(e);
    Ok(match field_type {
        FieldType::String => row.try_get::<_, Option<String>>(idx).map_err(get_err)?.map(Value::String),
        FieldType::Number => row.try_get::<_, Option<f64>>(idx).map_err(get_err)?.map(number),
        FieldType::Boolean => row.try_get::<_, Option<bool>>(idx).map_err(get_err)?.map(Value::Bool),
        FieldType::Date => row
            .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(idx)
            .map_err(get_err)?
            .map(|date| json!({"__type": "Date", "iso": iso(date)})),
        FieldType::Pointer { target_class } => row
            .try_get::<_, Option<String>>(idx)
            .map_err(get_err)?
            .map(|id| json!({"__type": "Pointer", "className": target_class, "objectId": id})),
        FieldType::File => row
            .try_get::<_, Option<String>>(idx)
            .map_err(get_err)?
            .map(|name| json!({"__type": "File", "name": name})),
        FieldType::Object | FieldType::Array | FieldType::Bytes => {
            row.try_get::<_, Option<Value>>(idx).map_err(get_err)?
        }
        FieldType::GeoPoint => row
            .try_get::<_, Option<String>>(idx)
            .map_err(get_err)?
            .and_then(|text| parse_points(&text).first().copied())
            .map(|(lng, lat)| json!({"__type": "GeoPoint", "latitude": number(lat), "longitude": number(lng)})),
        FieldType::Polygon => row.try_get::<_, Option<String>>(idx).map_err(get_err)?.map(|text| {
            let coordinates: Vec<Value> = parse_points(&text)
                .into_iter()
                .map(|(lng, lat)| json!([number(lat), number(lng)]))
                .collect();
            json!({"__type": "Polygon", "coordinates": coordinates})
        }),
        FieldType::Relation { .. } | FieldType::Acl => None,
    })
}

/// The REST ACL rebuilt from `_rperm`/`_wperm`; `None` when both are NULL
/// (public, no ACL key), as Parse Server reads it.
pub(super) fn acl_from(read: Option<Vec<String>>, write: Option<Vec<String>>) -> Option<Value> {
    if read.is_none() && write.is_none() {
        return None;
    }
    let mut acl = Map::new();
    for (list, right) in [(read, "read"), (write, "write")] {
        for id in list.unwrap_or_default() {
            let entry = acl.entry(id).or_insert_with(|| json!({}));
            entry[right] = Value::Bool(true);
        }
    }
    Some(Value::Object(acl))
}

/// The three default fields of a stored object.
pub(super) fn put_defaults(object: &mut Object, id: String, created: String, updated: String) {
    object.insert("objectId".into(), Value::String(id));
    object.insert("createdAt".into(), Value::String(created));
    object.insert("updatedAt".into(), Value::String(updated));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_each_type_with_a_cast() {
        let mut p = Params::default();
        let date = json!({"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"});
        assert_eq!(
            encode(&mut p, "d", &FieldType::Date, &date).unwrap(),
            "$1::text::timestamptz"
        );
        let geo = json!({"__type": "GeoPoint", "latitude": 48.85, "longitude": 2.35});
        assert_eq!(
            encode(&mut p, "g", &FieldType::GeoPoint, &geo).unwrap(),
            "point($2::float8, $3::float8)"
        );
        assert_eq!(p.values[1], Param::Float(2.35));
        let poly = json!({"__type": "Polygon", "coordinates": [[0, 1], [2, 3], [0, 1]]});
        assert_eq!(
            encode(&mut p, "p", &FieldType::Polygon, &poly).unwrap(),
            "$4::text::polygon"
        );
        assert_eq!(p.values[3], Param::Text("((1,0),(3,2),(1,0))".into()));
        assert!(encode(&mut p, "n", &FieldType::Number, &json!("1")).is_err());
    }

    #[test]
    fn reads_points_numbers_and_acls() {
        assert_eq!(
            parse_points("((1.5,2),(3,-4))"),
            vec![(1.5, 2.0), (3.0, -4.0)]
        );
        assert_eq!(number(3.0), json!(3));
        assert_eq!(number(2.5), json!(2.5));
        let acl = acl_from(Some(vec!["*".into(), "u1".into()]), Some(vec!["u1".into()])).unwrap();
        assert_eq!(
            acl,
            json!({"*": {"read": true}, "u1": {"read": true, "write": true}})
        );
        assert_eq!(acl_from(None, None), None);
    }
}
