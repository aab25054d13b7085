//! SQL functions the SQLite backend compiles queries into, so regex, geo
//! and text conditions filter inside the query rather than afterwards.
//! Constant arguments (patterns, polygons, search terms) are parsed once per
//! statement through SQLite's auxiliary-data cache.

use std::sync::Arc;

use regex::Regex;
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

use crate::geo;
use crate::query::GeoPoint;
use crate::text::TextQuery;

pub(crate) const REGEXP: &str = "oxbase_regexp";
pub(crate) const GEO_DISTANCE: &str = "oxbase_geo_distance";
pub(crate) const IN_POLYGON: &str = "oxbase_in_polygon";
pub(crate) const POLYGON_CONTAINS: &str = "oxbase_polygon_contains";
pub(crate) const TEXT_SCORE: &str = "oxbase_text_score";

/// The constant argument of `oxbase_text_score`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TextSpec {
    pub term: String,
    pub case_sensitive: bool,
    pub diacritic_sensitive: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;

    // oxbase_regexp(pattern, value): 1 when the text value matches.
    conn.create_scalar_function(REGEXP, 2, flags, |ctx| {
        let regex: Arc<Regex> = ctx.get_or_create_aux(0, |pattern| -> Result<Regex, BoxError> {
            Ok(crate::pattern::compile(pattern.as_str()?)?)
        })?;
        Ok(match ctx.get_raw(1) {
            ValueRef::Text(text) => regex.is_match(&String::from_utf8_lossy(text)),
            _ => false,
        })
    })?;

    // oxbase_geo_distance(lat1, lng1, lat2, lng2): radians, NULL if any is.
    conn.create_scalar_function(GEO_DISTANCE, 4, flags, |ctx| {
        Ok(point_arg(ctx, 0)?
            .zip(point_arg(ctx, 2)?)
            .map(|(a, b)| geo::distance_radians(a, b)))
    })?;

    // oxbase_in_polygon(lat, lng, '[[lat, lng], ...]')
    conn.create_scalar_function(IN_POLYGON, 3, flags, |ctx| {
        let polygon: Arc<Vec<GeoPoint>> =
            ctx.get_or_create_aux(2, |raw| -> Result<_, BoxError> {
                parse_pairs(raw.as_str()?).ok_or_else(|| "bad polygon".into())
            })?;
        Ok(point_arg(ctx, 0)?.map(|point| geo::polygon_contains(&polygon, point)))
    })?;

    // oxbase_polygon_contains(stored coordinates JSON, lat, lng)
    conn.create_scalar_function(POLYGON_CONTAINS, 3, flags, |ctx| {
        let ValueRef::Text(raw) = ctx.get_raw(0) else {
            return Ok(None);
        };
        let Some(polygon) = std::str::from_utf8(raw).ok().and_then(parse_pairs) else {
            return Ok(None);
        };
        Ok(point_arg(ctx, 1)?.map(|point| geo::polygon_contains(&polygon, point)))
    })?;

    // oxbase_text_score(value, '{"term": .., "caseSensitive": .., "diacriticSensitive": ..}')
    conn.create_scalar_function(TEXT_SCORE, 2, flags, |ctx| {
        let query: Arc<TextQuery> = ctx.get_or_create_aux(1, |spec| -> Result<_, BoxError> {
            let spec: TextSpec = serde_json::from_str(spec.as_str()?)?;
            Ok(TextQuery::parse(
                &spec.term,
                spec.case_sensitive,
                spec.diacritic_sensitive,
            ))
        })?;
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(text) => query.score(&String::from_utf8_lossy(text)),
            _ => 0.0,
        })
    })?;
    Ok(())
}

/// A point from two numeric arguments; anything else (a missing field, a
/// string where a number belongs) is no point rather than an error.
fn point_arg(ctx: &Context<'_>, first: usize) -> rusqlite::Result<Option<GeoPoint>> {
    let number = |i: usize| match ctx.get_raw(i) {
        ValueRef::Integer(n) => Some(n as f64),
        ValueRef::Real(x) => Some(x),
        _ => None,
    };
    Ok(number(first)
        .zip(number(first + 1))
        .map(|(latitude, longitude)| GeoPoint {
            latitude,
            longitude,
        }))
}

/// `[[lat, lng], ...]`, the shape of Parse's Polygon coordinates.
fn parse_pairs(raw: &str) -> Option<Vec<GeoPoint>> {
    let pairs: Vec<[f64; 2]> = serde_json::from_str(raw).ok()?;
    Some(
        pairs
            .into_iter()
            .map(|[latitude, longitude]| GeoPoint {
                latitude,
                longitude,
            })
            .collect(),
    )
}
