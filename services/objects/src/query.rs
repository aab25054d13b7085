//! Parse's query language: the `where` JSON and the find options, parsed
//! and validated into the store's query model.

use crate::config::Limits;
use chrono::{DateTime, Duration, Utc};
use oxbase_store::geo::{EARTH_RADIUS_KM, EARTH_RADIUS_MILES};
use oxbase_store::query::{ElementMatch, GeoPoint, RegexSpec, SubQuery, TextSearch};
use oxbase_store::{Condition, FieldPath, Filter, QueryValue, SortKey};
use serde_json::{Map, Value};

use crate::error::{ParseError, ParseResult, code};
use crate::values::{format_date, geo_point, normalize_date};

/// Parses `where` objects against the limits of one deployment.
pub struct WhereParser<'a> {
    limits: &'a Limits,
    now: DateTime<Utc>,
}

fn bad(message: impl Into<String>) -> ParseError {
    ParseError::json(message)
}

impl<'a> WhereParser<'a> {
    pub fn new(limits: &'a Limits) -> Self {
        Self {
            limits,
            now: Utc::now(),
        }
    }

    /// Parses a `where` value (an object, or JSON text of one).
    pub fn parse(&self, where_: &Value) -> ParseResult<Filter> {
        match where_ {
            Value::Object(map) => self.object(map, 0),
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => self.object(&map, 0),
                _ => Err(bad("where parameter is not valid JSON")),
            },
            Value::Null => Ok(Filter::All),
            _ => Err(ParseError::query("where must be an object")),
        }
    }

    fn deeper(&self, depth: usize) -> ParseResult<usize> {
        let depth = depth + 1;
        if depth > self.limits.max_query_depth {
            return Err(ParseError::query(format!(
                "Query condition nesting depth exceeds maximum allowed depth of {}",
                self.limits.max_query_depth
            )));
        }
        Ok(depth)
    }

    fn object(&self, map: &Map<String, Value>, depth: usize) -> ParseResult<Filter> {
        let mut parts = Vec::with_capacity(map.len());
        for (key, value) in map {
            let part = match key.as_str() {
                "$or" | "$and" | "$nor" => {
                    let name = &key[1..];
                    let items = value.as_array().ok_or_else(|| {
                        ParseError::query(format!("Bad {key} format - use an array value."))
                    })?;
                    if key == "$nor" && items.is_empty() {
                        return Err(ParseError::query(
                            "Bad $nor format - use an array of at least 1 value.",
                        ));
                    }
                    let inner = self.deeper(depth)?;
                    let children = items
                        .iter()
                        .map(|item| match item {
                            Value::Object(map) => self.object(map, inner),
                            _ => Err(ParseError::query(format!(
                                "Bad ${name} format - use an array of objects."
                            ))),
                        })
                        .collect::<ParseResult<Vec<_>>>()?;
                    match key.as_str() {
                        "$or" => Filter::Or(children),
                        "$and" => Filter::And(children),
                        _ => Filter::Nor(children),
                    }
                }
                "$relatedTo" => related_to(value)?,
                "ACL" => return Err(ParseError::query("Cannot query on ACL.")),
                // Other top-level keys, `$where` among them, must be field
                // names; field_path refuses them with Parse's 105.
                _ => {
                    let path = field_path(key)?;
                    self.constraint(path, value, depth)?
                }
            };
            parts.push(part);
        }
        Ok(match parts.len() {
            0 => Filter::All,
            1 => parts.pop().unwrap_or(Filter::All),
            _ => Filter::And(parts),
        })
    }

    /// The conditions on one field: an equality, or an object of operators.
    fn constraint(&self, path: FieldPath, value: &Value, depth: usize) -> ParseResult<Filter> {
        let ops = match value {
            Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => map,
            _ => return Ok(Filter::Field(path, Condition::Eq(decode(value)?))),
        };
        if let Some(key) = ops.keys().find(|k| !k.starts_with('$')) {
            return Err(ParseError::query(format!("bad constraint: {key}")));
        }
        let mut conditions = Vec::new();
        for (op, arg) in ops {
            let condition = match op.as_str() {
                "$eq" => Condition::Eq(decode(arg)?),
                "$ne" => Condition::Ne(decode(arg)?),
                "$lt" => Condition::Lt(self.comparable(op, arg)?),
                "$lte" => Condition::Lte(self.comparable(op, arg)?),
                "$gt" => Condition::Gt(self.comparable(op, arg)?),
                "$gte" => Condition::Gte(self.comparable(op, arg)?),
                "$in" => Condition::In(self.list(op, arg)?),
                "$nin" => Condition::Nin(self.list(op, arg)?),
                "$containedBy" => match arg {
                    Value::Array(_) => Condition::ContainedBy(self.list(op, arg)?),
                    _ => return Err(bad("bad $containedBy: should be an array")),
                },
                "$exists" => match arg {
                    Value::Bool(b) => Condition::Exists(*b),
                    Value::Number(n) => Condition::Exists(n.as_f64() != Some(0.0)),
                    _ => return Err(bad("bad $exists value")),
                },
                "$all" => Condition::All(self.all(arg)?),
                "$regex" => Condition::Regex(self.regex(arg, ops.get("$options"))?),
                "$options" => {
                    if !ops.contains_key("$regex") {
                        return Err(ParseError::query("$options requires $regex"));
                    }
                    continue;
                }
                "$inQuery" | "$notInQuery" => {
                    let sub = self.subquery(arg, depth, "$inQuery")?;
                    if op == "$inQuery" {
                        Condition::InQuery(Box::new(sub))
                    } else {
                        Condition::NotInQuery(Box::new(sub))
                    }
                }
                "$select" | "$dontSelect" => {
                    let improper = || ParseError::query("improper usage of $select");
                    let spec = arg.as_object().ok_or_else(improper)?;
                    let key = spec
                        .get("key")
                        .and_then(Value::as_str)
                        .ok_or_else(improper)?;
                    let query = spec.get("query").ok_or_else(improper)?;
                    let sub = self.subquery(query, depth, "$select")?;
                    let key = field_path(key)?;
                    if op == "$select" {
                        Condition::Select {
                            query: Box::new(sub),
                            key,
                        }
                    } else {
                        Condition::DontSelect {
                            query: Box::new(sub),
                            key,
                        }
                    }
                }
                "$nearSphere" => {
                    let point = point_value(arg).ok_or_else(|| bad("bad $nearSphere value"))?;
                    Condition::NearSphere {
                        point,
                        max_distance: max_distance(ops)?,
                    }
                }
                "$maxDistance"
                | "$maxDistanceInRadians"
                | "$maxDistanceInMiles"
                | "$maxDistanceInKilometers" => {
                    if !ops.contains_key("$nearSphere") {
                        return Err(ParseError::query(format!("{op} requires $nearSphere")));
                    }
                    continue;
                }
                "$within" => {
                    let corners = arg
                        .get("$box")
                        .and_then(Value::as_array)
                        .filter(|b| b.len() == 2)
                        .ok_or_else(|| bad("malformatted $within arg"))?;
                    let (Some(south_west), Some(north_east)) =
                        (point_value(&corners[0]), point_value(&corners[1]))
                    else {
                        return Err(bad("malformatted $within arg"));
                    };
                    if south_west.latitude > north_east.latitude
                        || south_west.longitude > north_east.longitude
                    {
                        return Err(bad(
                            "bad $within $box: the south-west corner must be below and left of the north-east one",
                        ));
                    }
                    Condition::WithinBox {
                        south_west,
                        north_east,
                    }
                }
                "$geoWithin" => geo_within(arg)?,
                "$geoIntersects" => {
                    let point = arg
                        .get("$point")
                        .and_then(point_value)
                        .ok_or_else(|| bad("bad $geoIntersect value; $point should be GeoPoint"))?;
                    Condition::GeoIntersects(point)
                }
                "$text" => Condition::Text(text_search(arg)?),
                "$relativeTime" => {
                    return Err(bad(
                        "$relativeTime can only be used with the $lt, $lte, $gt, and $gte operators",
                    ));
                }
                other => return Err(ParseError::query(format!("bad constraint: {other}"))),
            };
            conditions.push(Filter::Field(path.clone(), condition));
        }
        Ok(match conditions.len() {
            1 => conditions.pop().unwrap_or(Filter::All),
            _ => Filter::And(conditions),
        })
    }

    fn comparable(&self, op: &str, arg: &Value) -> ParseResult<QueryValue> {
        if let Some(relative) = arg.get("$relativeTime") {
            let text = relative.as_str().ok_or_else(|| {
                bad(format!(
                    "bad $relativeTime ({op}) value. should be a string"
                ))
            })?;
            let date = relative_time(text, self.now)
                .map_err(|info| bad(format!("bad $relativeTime ({op}) value. {info}")))?;
            return Ok(QueryValue::Date(format_date(date)));
        }
        match decode(arg)? {
            value @ (QueryValue::Number(_) | QueryValue::String(_) | QueryValue::Date(_)) => {
                Ok(value)
            }
            _ => Err(ParseError::query(format!("bad {op} value"))),
        }
    }

    /// The values of a list operator, at most `max_in_values` of them.
    fn list(&self, op: &str, arg: &Value) -> ParseResult<Vec<QueryValue>> {
        self.check_list_size(op, arg)?;
        decode_list(op, arg)
    }

    fn check_list_size(&self, op: &str, arg: &Value) -> ParseResult<()> {
        let max = self.limits.max_in_values;
        match arg.as_array() {
            Some(items) if items.len() > max => Err(ParseError::query(format!(
                "{op} has {} values, over the maximum of {max}",
                items.len()
            ))),
            _ => Ok(()),
        }
    }

    fn all(&self, arg: &Value) -> ParseResult<Vec<ElementMatch>> {
        self.check_list_size("$all", arg)?;
        let items = arg.as_array().ok_or_else(|| bad("bad $all value"))?;
        let is_regex = |v: &Value| v.get("$regex").is_some();
        let regexes = items.iter().filter(|v| is_regex(v)).count();
        if regexes != 0 && regexes != items.len() {
            return Err(bad(format!(
                "All $all values must be of regex type or none: {arg}"
            )));
        }
        items
            .iter()
            .map(|item| {
                if is_regex(item) {
                    Ok(ElementMatch::Regex(
                        self.regex(&item["$regex"], item.get("$options"))?,
                    ))
                } else {
                    Ok(ElementMatch::Equals(decode(item)?))
                }
            })
            .collect()
    }

    fn regex(&self, pattern: &Value, options: Option<&Value>) -> ParseResult<RegexSpec> {
        let pattern = pattern
            .as_str()
            .ok_or_else(|| ParseError::query("$regex value must be a string"))?;
        if pattern.len() > self.limits.max_regex_length {
            return Err(ParseError::query(format!(
                "$regex is longer than the maximum of {} bytes",
                self.limits.max_regex_length
            )));
        }
        let options = match options {
            None => String::new(),
            Some(Value::String(o)) => {
                if !o.chars().all(|c| "imxsu".contains(c)) {
                    return Err(ParseError::query(format!(
                        "Bad $options value for query: {o}"
                    )));
                }
                // Unicode is always on in our engine.
                let mut kept: Vec<char> = o.chars().filter(|c| *c != 'u').collect();
                kept.sort_unstable();
                kept.dedup();
                kept.into_iter().collect()
            }
            Some(_) => return Err(ParseError::query("$options value must be a string")),
        };
        let spec = RegexSpec {
            pattern: unquote(pattern),
            options,
        };
        oxbase_store::pattern::compile(&spec.inline()).map_err(|e| {
            ParseError::query(format!("invalid $regex: {}", first_line(&e.to_string())))
        })?;
        Ok(spec)
    }

    fn subquery(&self, arg: &Value, depth: usize, op: &str) -> ParseResult<SubQuery> {
        let improper = || ParseError::query(format!("improper usage of {op}"));
        let spec = arg.as_object().ok_or_else(improper)?;
        let class_name = spec
            .get("className")
            .and_then(Value::as_str)
            .ok_or_else(improper)?;
        let inner = self.deeper(depth)?;
        let filter = match spec.get("where") {
            None | Some(Value::Null) if op == "$select" => Filter::All,
            Some(Value::Object(map)) => self.object(map, inner)?,
            _ => return Err(improper()),
        };
        Ok(SubQuery {
            class_name: class_name.to_owned(),
            filter,
        })
    }
}

/// `{"object": <pointer>, "key": <relation field>}`: the objects in that
/// object's relation.
fn related_to(value: &Value) -> ParseResult<Filter> {
    let bad = || ParseError::query("Bad $relatedTo format: use {object: <pointer>, key: <field>}.");
    let key = value.get("key").and_then(Value::as_str).ok_or_else(bad)?;
    let object = value.get("object").ok_or_else(bad)?;
    let (Some("Pointer"), Some(owner_class), Some(owner_id)) = (
        object.get("__type").and_then(Value::as_str),
        object.get("className").and_then(Value::as_str),
        object.get("objectId").and_then(Value::as_str),
    ) else {
        return Err(bad());
    };
    if !crate::values::is_field_name(key) {
        return Err(bad());
    }
    Ok(Filter::RelatedTo {
        owner_class: owner_class.to_owned(),
        owner_id: owner_id.to_owned(),
        key: key.to_owned(),
    })
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
}

/// A key in `where` or `keys`: a field name or a dotted path into one.
pub fn field_path(key: &str) -> ParseResult<FieldPath> {
    let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !key.split('.').any(str::is_empty);
    if !valid {
        return Err(ParseError::new(
            code::INVALID_KEY_NAME,
            format!("Invalid key name: {key}"),
        ));
    }
    Ok(FieldPath::parse(key))
}

/// A value a field is compared with.
pub fn decode(value: &Value) -> ParseResult<QueryValue> {
    Ok(match value {
        Value::Null => QueryValue::Null,
        Value::Bool(b) => QueryValue::Bool(*b),
        Value::Number(n) => QueryValue::Number(n.clone()),
        Value::String(s) => QueryValue::String(s.clone()),
        Value::Array(_) => QueryValue::Json(value.clone()),
        Value::Object(map) => match map.get("__type").and_then(Value::as_str) {
            Some("Date") => {
                let iso = map
                    .get("iso")
                    .and_then(Value::as_str)
                    .and_then(normalize_date)
                    .ok_or_else(|| bad(format!("bad atom: {value}")))?;
                QueryValue::Date(iso)
            }
            Some("Pointer") | Some("Object") => {
                let (Some(class_name), Some(object_id)) = (
                    map.get("className").and_then(Value::as_str),
                    map.get("objectId").and_then(Value::as_str),
                ) else {
                    return Err(bad(format!("bad atom: {value}")));
                };
                QueryValue::Pointer {
                    class_name: class_name.to_owned(),
                    object_id: object_id.to_owned(),
                }
            }
            Some("File") => QueryValue::File(
                map.get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("bad atom: {value}")))?
                    .to_owned(),
            ),
            _ => {
                if map.contains_key("$relativeTime") {
                    return Err(bad(
                        "$relativeTime can only be used with the $lt, $lte, $gt, and $gte operators",
                    ));
                }
                if map.keys().any(|k| k.starts_with('$')) {
                    return Err(bad(format!("bad atom: {value}")));
                }
                QueryValue::Json(value.clone())
            }
        },
    })
}

fn decode_list(op: &str, arg: &Value) -> ParseResult<Vec<QueryValue>> {
    arg.as_array()
        .ok_or_else(|| bad(format!("bad {op} value")))?
        .iter()
        .map(decode)
        .collect()
}

fn point_value(value: &Value) -> Option<GeoPoint> {
    let (latitude, longitude) = geo_point(value.as_object()?)?;
    Some(GeoPoint {
        latitude,
        longitude,
    })
}

/// A point in a `$polygon` or `$centerSphere`: a GeoPoint, or a
/// `[longitude, latitude]` pair as MongoDB writes them.
fn lng_lat_or_point(value: &Value) -> Option<GeoPoint> {
    if let Some([lng, lat]) = value.as_array().map(Vec::as_slice) {
        let point = GeoPoint {
            latitude: lat.as_f64()?,
            longitude: lng.as_f64()?,
        };
        return ((-90.0..=90.0).contains(&point.latitude)
            && (-180.0..=180.0).contains(&point.longitude))
        .then_some(point);
    }
    point_value(value)
}

fn max_distance(ops: &Map<String, Value>) -> ParseResult<Option<f64>> {
    let read = |key: &str, radius: f64| -> ParseResult<Option<f64>> {
        match ops.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|d| *d >= 0.0)
                .map(|d| Some(d / radius))
                .ok_or_else(|| bad(format!("bad {key} value"))),
        }
    };
    Ok(read("$maxDistance", 1.0)?
        .or(read("$maxDistanceInRadians", 1.0)?)
        .or(read("$maxDistanceInMiles", EARTH_RADIUS_MILES)?)
        .or(read("$maxDistanceInKilometers", EARTH_RADIUS_KM)?))
}

fn geo_within(arg: &Value) -> ParseResult<Condition> {
    if let Some(polygon) = arg.get("$polygon") {
        let points: Option<Vec<GeoPoint>> = match polygon {
            Value::Object(map) if map.get("__type").and_then(Value::as_str) == Some("Polygon") => {
                // A stored Polygon's coordinates are [latitude, longitude].
                map.get("coordinates")
                    .and_then(Value::as_array)
                    .and_then(|pairs| {
                        pairs
                            .iter()
                            .map(|pair| {
                                let pair = pair.as_array()?;
                                Some(GeoPoint {
                                    latitude: pair.first()?.as_f64()?,
                                    longitude: pair.get(1)?.as_f64()?,
                                })
                            })
                            .collect()
                    })
            }
            Value::Array(items) => items.iter().map(lng_lat_or_point).collect(),
            _ => None,
        };
        let points = points.ok_or_else(|| {
            bad("bad $geoWithin value; $polygon should be Polygon object or Array of Parse.GeoPoint's")
        })?;
        if points.len() < 3 {
            return Err(bad(
                "bad $geoWithin value; $polygon should contain at least 3 GeoPoints",
            ));
        }
        return Ok(Condition::WithinPolygon(points));
    }
    if let Some(center) = arg.get("$centerSphere") {
        let spec = center
            .as_array()
            .filter(|c| c.len() == 2)
            .ok_or_else(|| bad("bad $geoWithin value; $centerSphere should be an array of Parse.GeoPoint and distance"))?;
        let point = lng_lat_or_point(&spec[0])
            .ok_or_else(|| bad("bad $geoWithin value; $centerSphere geo point invalid"))?;
        let radius = spec[1]
            .as_f64()
            .filter(|d| *d >= 0.0)
            .ok_or_else(|| bad("bad $geoWithin value; $centerSphere distance invalid"))?;
        return Ok(Condition::WithinCenterSphere {
            center: point,
            radius,
        });
    }
    Err(bad(
        "bad $geoWithin value; expected $polygon or $centerSphere",
    ))
}

fn text_search(arg: &Value) -> ParseResult<TextSearch> {
    let search = arg
        .get("$search")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("bad $text: $search, should be object"))?;
    let term = search
        .get("$term")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("bad $text: $term, should be string"))?;
    let language = match search.get("$language") {
        None => None,
        Some(Value::String(l)) => Some(l.clone()),
        Some(_) => return Err(bad("bad $text: $language, should be string")),
    };
    let flag = |key: &str| match search.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("bad $text: {key}, should be boolean"))),
    };
    Ok(TextSearch {
        term: term.to_owned(),
        language,
        case_sensitive: flag("$caseSensitive")?.unwrap_or(false),
        diacritic_sensitive: flag("$diacriticSensitive")?.unwrap_or(false),
    })
}

/// Turns the JS SDK's `\Q...\E` literal quoting into escapes the `regex`
/// crate understands.
pub fn unquote(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            Some('Q') => {
                let quoted = &after[1..];
                let (literal, next) = match quoted.find("\\E") {
                    Some(end) => (&quoted[..end], &quoted[end + 2..]),
                    None => (quoted, ""),
                };
                out.push_str(&regex::escape(literal));
                rest = next;
            }
            // A stray \E ends nothing.
            Some('E') => rest = &after[1..],
            Some(c) => {
                out.push('\\');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
            None => {
                out.push('\\');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parse's `$relativeTime`: `"now"`, `"in 2 days 3 hours"`, `"1 week ago"`.
pub(crate) fn relative_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let lower = text.to_lowercase();
    let mut parts: Vec<&str> = lower.split_whitespace().collect();
    if parts == ["now"] {
        return Ok(now);
    }
    let future = parts.first() == Some(&"in");
    let past = parts.last() == Some(&"ago");
    match (future, past) {
        (false, false) => return Err("Time should either start with 'in' or end with 'ago'".into()),
        (true, true) => return Err("Time cannot have both 'in' and 'ago'".into()),
        (true, false) => {
            parts.remove(0);
        }
        (false, true) => {
            parts.pop();
        }
    }
    if parts.is_empty() || !parts.len().is_multiple_of(2) {
        return Err("Invalid time string. Dangling unit or number.".into());
    }
    let mut seconds: i64 = 0;
    for pair in parts.chunks(2) {
        let amount: i64 = pair[0]
            .parse()
            .map_err(|_| format!("'{}' is not an integer.", pair[0]))?;
        let unit = match pair[1] {
            "yr" | "yrs" | "year" | "years" => 365 * 24 * 3600,
            "wk" | "wks" | "week" | "weeks" => 7 * 24 * 3600,
            "d" | "day" | "days" => 24 * 3600,
            "hr" | "hrs" | "hour" | "hours" => 3600,
            "min" | "mins" | "minute" | "minutes" => 60,
            "sec" | "secs" | "second" | "seconds" => 1,
            other => return Err(format!("Invalid interval: '{other}'")),
        };
        seconds = amount
            .checked_mul(unit)
            .and_then(|s| seconds.checked_add(s))
            .ok_or("Invalid time string. The interval is too large.")?;
    }
    let delta =
        Duration::try_seconds(seconds).ok_or("Invalid time string. The interval is too large.")?;
    let date = if future {
        now.checked_add_signed(delta)
    } else {
        now.checked_sub_signed(delta)
    };
    date.ok_or_else(|| "Invalid time string. The interval is too large.".into())
}

/// The options of a find, parsed.
#[derive(Debug, Clone)]
pub struct FindOptions {
    pub filter: Filter,
    pub order: Vec<SortKey>,
    pub skip: usize,
    pub limit: usize,
    pub count: bool,
    /// `keys`, as written (dotted paths select inside included objects).
    pub keys: Option<Vec<String>>,
    pub exclude_keys: Vec<String>,
    /// Include paths, each prefix included, shortest first.
    pub include: Vec<Vec<String>>,
    pub include_all: bool,
}

const FIND_OPTIONS: &[&str] = &[
    "where",
    "limit",
    "skip",
    "order",
    "count",
    "keys",
    "excludeKeys",
    "include",
    "includeAll",
    "redirectClassNameForKey",
    "readPreference",
    "includeReadPreference",
    "subqueryReadPreference",
    "hint",
    "explain",
    "comment",
];

const GET_OPTIONS: &[&str] = &[
    "keys",
    "include",
    "excludeKeys",
    "readPreference",
    "includeReadPreference",
    "subqueryReadPreference",
];

/// A string option; numbers are accepted because query strings are read as
/// JSON (`keys=1` arrives as a number).
fn string_option(params: &Map<String, Value>, key: &str) -> ParseResult<Option<String>> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Array(items)) => Ok(Some(
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
        )),
        Some(_) => Err(ParseError::query(format!("Invalid parameter {key}"))),
    }
}

fn count_option(params: &Map<String, Value>, key: &str) -> ParseResult<Option<usize>> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
            .ok_or_else(|| ParseError::query(format!("Invalid {key} value: {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| ParseError::query(format!("Invalid {key} value: {s}"))),
        Some(other) => Err(ParseError::query(format!("Invalid {key} value: {other}"))),
    }
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty() && s != "0" && s != "false",
        Some(_) => true,
    }
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Options of `GET /classes/{class}` that change what the find answers
/// rather than which objects match.
#[derive(Debug, Default)]
pub struct FindMode {
    /// Answer the store's plan instead of objects (master key only).
    pub explain: bool,
    /// Query the target class of this relation field of the class, as the
    /// SDKs' `relation.query()` does.
    pub redirect_key: Option<String>,
}

impl FindMode {
    /// Takes the mode's parameters out of `params`.
    pub fn take(params: &mut Map<String, Value>) -> ParseResult<Self> {
        let explain = truthy(params.remove("explain").as_ref());
        let redirect_key = match params.remove("redirectClassNameForKey") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => Some(key),
            Some(_) => {
                return Err(ParseError::query(
                    "redirectClassNameForKey must be a field name",
                ));
            }
        };
        Ok(Self {
            explain,
            redirect_key,
        })
    }
}

impl FindOptions {
    /// The options of `GET /classes/{class}`.
    pub fn for_find(params: &Map<String, Value>, limits: &Limits) -> ParseResult<Self> {
        if let Some(key) = params.keys().find(|k| !FIND_OPTIONS.contains(&k.as_str())) {
            return Err(ParseError::query(format!(
                "Invalid parameter for query: {key}"
            )));
        }
        if truthy(params.get("explain")) {
            return Err(ParseError::not_supported("explain"));
        }
        if params
            .get("redirectClassNameForKey")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ParseError::not_supported("redirectClassNameForKey"));
        }
        let filter = match params.get("where") {
            Some(where_) => WhereParser::new(limits).parse(where_)?,
            None => Filter::All,
        };
        let mut limit = count_option(params, "limit")?.unwrap_or(100);
        if limits.max_limit > 0 {
            limit = limit.min(limits.max_limit);
        }
        let mut options = Self::base(params, limits)?;
        options.filter = filter;
        options.limit = limit;
        options.skip = count_option(params, "skip")?.unwrap_or(0);
        if options.skip > limits.max_skip {
            return Err(ParseError::query(format!(
                "skip of {} is over the maximum of {}: page with a constraint on a sorted field instead",
                options.skip, limits.max_skip
            )));
        }
        options.count = truthy(params.get("count"));
        options.include_all |= truthy(params.get("includeAll"));
        if let Some(order) = string_option(params, "order")? {
            options.order = parse_order(&order)?;
        }
        Ok(options)
    }

    /// The options of `GET /classes/{class}/{id}`.
    pub fn for_get(params: &Map<String, Value>, limits: &Limits) -> ParseResult<Self> {
        if params.keys().any(|k| !GET_OPTIONS.contains(&k.as_str())) {
            return Err(ParseError::query("Improper encode of parameter"));
        }
        let mut options = Self::base(params, limits)?;
        options.limit = 1;
        Ok(options)
    }

    fn base(params: &Map<String, Value>, limits: &Limits) -> ParseResult<Self> {
        let mut options = FindOptions {
            filter: Filter::All,
            order: Vec::new(),
            skip: 0,
            limit: 100,
            count: false,
            keys: None,
            exclude_keys: Vec::new(),
            include: Vec::new(),
            include_all: false,
        };
        let mut include_paths: Vec<Vec<String>> = Vec::new();
        if let Some(keys) = string_option(params, "keys")? {
            let mut list = Vec::new();
            for key in split_list(&keys) {
                if key != "$score" {
                    let path = field_path(key)?;
                    // `a.b.c` selects inside `a.b`, which must be included.
                    if !path.nested.is_empty() {
                        let mut prefix = vec![path.field.clone()];
                        prefix.extend(path.nested[..path.nested.len() - 1].iter().cloned());
                        include_paths.push(prefix);
                    }
                }
                list.push(key.to_owned());
            }
            options.keys = Some(list);
        }
        if let Some(exclude) = string_option(params, "excludeKeys")? {
            for key in split_list(&exclude) {
                field_path(key)?;
                options.exclude_keys.push(key.to_owned());
            }
        }
        if let Some(include) = string_option(params, "include")? {
            for path in split_list(&include) {
                if path == "*" {
                    options.include_all = true;
                    continue;
                }
                let path = field_path(path)?;
                let mut segments = vec![path.field];
                segments.extend(path.nested);
                include_paths.push(segments);
            }
        }
        if include_paths.len() > limits.max_include_paths {
            return Err(ParseError::query(format!(
                "{} include paths are over the maximum of {}",
                include_paths.len(),
                limits.max_include_paths
            )));
        }
        let mut expanded: Vec<Vec<String>> = Vec::new();
        for path in include_paths {
            if path.len() > limits.max_include_depth {
                return Err(ParseError::query(format!(
                    "Include depth of {} exceeds maximum allowed depth of {}",
                    path.len(),
                    limits.max_include_depth
                )));
            }
            for end in 1..=path.len() {
                let prefix = path[..end].to_vec();
                if !expanded.contains(&prefix) {
                    expanded.push(prefix);
                }
            }
        }
        expanded.sort_by_key(Vec::len);
        options.include = expanded;
        Ok(options)
    }
}

fn parse_order(order: &str) -> ParseResult<Vec<SortKey>> {
    let mut keys = Vec::new();
    for item in split_list(order) {
        let (descending, name) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        if name == "$score" {
            keys.push(SortKey::TextScore);
            continue;
        }
        let name = match name {
            "_created_at" => "createdAt",
            "_updated_at" => "updatedAt",
            other => other,
        };
        let path = field_path(name).map_err(|_| {
            ParseError::new(
                code::INVALID_KEY_NAME,
                format!("Invalid field name: {name}."),
            )
        })?;
        keys.push(SortKey::Field { path, descending });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(where_: Value) -> ParseResult<Filter> {
        WhereParser::new(&Limits::default()).parse(&where_)
    }

    fn code_of(result: ParseResult<Filter>) -> i32 {
        match result.unwrap_err() {
            ParseError::Parse { code, .. } => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equality_and_operators() {
        let f = parse(json!({"a": 1, "b": {"$gt": 2, "$lt": 5}})).unwrap();
        let Filter::And(parts) = f else { panic!() };
        assert_eq!(
            parts[0],
            Filter::field("a", Condition::Eq(QueryValue::Number(1.into())))
        );
        assert!(matches!(&parts[1], Filter::And(inner) if inner.len() == 2));
        let f = parse(json!({"d": {"$gte": {"__type": "Date", "iso": "2024-01-01T00:00:00Z"}}}))
            .unwrap();
        assert_eq!(
            f,
            Filter::field(
                "d",
                Condition::Gte(QueryValue::Date("2024-01-01T00:00:00.000Z".into()))
            )
        );
    }

    #[test]
    fn bad_queries_get_parse_codes() {
        assert_eq!(code_of(parse(json!({"$where": "1"}))), 105);
        assert_eq!(code_of(parse(json!({"a": {"$foo": 1}}))), 102);
        assert_eq!(code_of(parse(json!({"$foo": 1}))), 105);
        assert_eq!(code_of(parse(json!({"a b": 1}))), 105);
        assert_eq!(code_of(parse(json!({"a..b": 1}))), 105);
        assert_eq!(code_of(parse(json!({"ACL": 1}))), 102);
        assert_eq!(code_of(parse(json!({"a": {"$in": 1}}))), 107);
        assert_eq!(code_of(parse(json!({"a": {"$regex": 1}}))), 102);
        assert_eq!(
            code_of(parse(json!({"a": {"$regex": "(", "$options": "i"}}))),
            102
        );
        assert_eq!(
            code_of(parse(json!({"a": {"$regex": "a", "$options": "q"}}))),
            102
        );
        assert_eq!(
            code_of(parse(json!({"a": {"$eq": {"$relativeTime": "now"}}}))),
            107
        );
        assert_eq!(
            code_of(parse(json!({"a": {"$inQuery": {"where": {}}}}))),
            102
        );
        assert_eq!(code_of(parse(json!({"$or": {}}))), 102);
        let mut deep = json!({"a": 1});
        for _ in 0..20 {
            deep = json!({"$or": [deep]});
        }
        assert_eq!(code_of(parse(deep)), 102);
        assert_eq!(
            code_of(parse(json!({"a": {"$regex": "a".repeat(5000)}}))),
            102
        );
    }

    #[test]
    fn quoted_regexes_become_literals() {
        assert_eq!(unquote("^\\Qa.b*c\\E"), "^a\\.b\\*c");
        assert_eq!(unquote("\\Qx\\E$"), "x$");
        assert_eq!(unquote("\\Qopen"), "open");
        assert_eq!(unquote("\\d+\\Q.\\E"), "\\d+\\.");
        let f = parse(json!({"name": {"$regex": "^\\Q(hi)\\E", "$options": "iu"}})).unwrap();
        assert_eq!(
            f,
            Filter::field(
                "name",
                Condition::Regex(RegexSpec {
                    pattern: "^\\(hi\\)".into(),
                    options: "i".into()
                })
            )
        );
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(relative_time("now", now).unwrap(), now);
        assert_eq!(
            relative_time("in 2 days", now).unwrap(),
            now + Duration::days(2)
        );
        assert_eq!(
            relative_time("1 week 2 hrs ago", now).unwrap(),
            now - Duration::days(7) - Duration::hours(2)
        );
        assert!(relative_time("2 days", now).is_err());
        assert!(relative_time("in 2 days ago", now).is_err());
        assert!(relative_time("in 2", now).is_err());
        assert!(relative_time("in x days", now).is_err());
        assert!(relative_time("in 2 fortnights", now).is_err());
        assert!(relative_time("in 99999999999999 years", now).is_err());
    }

    #[test]
    fn find_options() {
        let limits = Limits::default();
        let params = json!({
            "where": "{\"a\":1}", "limit": "5", "skip": 2, "order": "-score,name",
            "keys": "name,post.title", "include": "post.author", "count": 1
        });
        let o = FindOptions::for_find(params.as_object().unwrap(), &limits).unwrap();
        assert_eq!(o.limit, 5);
        assert_eq!(o.skip, 2);
        assert!(o.count);
        assert_eq!(o.order.len(), 2);
        assert_eq!(
            o.include,
            vec![
                vec!["post".to_string()],
                vec!["post".into(), "author".into()]
            ]
        );
        let bad = json!({"limit": 1, "bogus": 2});
        assert!(matches!(
            FindOptions::for_find(bad.as_object().unwrap(), &limits),
            Err(ParseError::Parse { code: 102, .. })
        ));
        let bad_where = json!({"where": "{nope"});
        assert!(matches!(
            FindOptions::for_find(bad_where.as_object().unwrap(), &limits),
            Err(ParseError::Parse { code: 107, .. })
        ));
        let get = json!({"limit": 1});
        assert!(FindOptions::for_get(get.as_object().unwrap(), &limits).is_err());
    }
}
