//! Parse Server's `/aggregate` (pipelines and `distinct`) evaluated in
//! memory over the objects a store returned, so it answers alike on SQLite,
//! PostgreSQL and MongoDB.
//!
//! Parse Server hands the pipeline to its adapter: MongoDB runs it natively,
//! the PostgreSQL adapter translates a small, quirky subset into SQL. Here
//! stages and operators follow MongoDB's documented semantics (which Parse's
//! docs point to), and results are shaped the way Parse Server answers on
//! PostgreSQL: a group's key comes back as `objectId`, `createdAt` and
//! `updatedAt` as ISO strings, other dates as `{"__type": "Date"}`, a group
//! keyed by a pointer as the pointee's objectId, and top-level nulls and
//! keys Parse hides (`_rperm`, `_hashed_password`, ...) are dropped.
//!
//! Stages: `$match`, `$group`, `$project`, `$sort`, `$limit`, `$skip`,
//! `$count`, `$unwind`. Anything else (`$lookup`, `$geoNear`, `$facet`,
//! `$addFields`, ...) is refused with Parse's code 102.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, Timelike, Utc};
use regex::Regex;
use serde_json::{Map, Number, Value};

use crate::query::{Object, js_truthy};

/// Why a request cannot be evaluated. The text is what Parse Server says
/// where it has a message of its own, MongoDB's wording otherwise (Parse
/// passes MongoDB's message through as an invalid query). The object
/// layer gives each kind its Parse code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    /// A malformed pipeline, stage or operator.
    #[error("{0}")]
    InvalidQuery(String),
    /// A field name Parse does not accept.
    #[error("Invalid field name: {0}")]
    InvalidFieldName(String),
    /// A `where` string that is not JSON.
    #[error("where parameter is not valid JSON")]
    InvalidWhereJson,
}

impl AggregateError {
    fn query(message: impl Into<String>) -> Self {
        AggregateError::InvalidQuery(message.into())
    }
}

pub type AggregateResult<T> = Result<T, AggregateError>;

/// Bounds on what one request may ask for, so a request cannot make the
/// evaluator use unbounded memory or recursion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Stages in a pipeline.
    pub max_stages: usize,
    /// Documents `$unwind` may produce, as it is the one stage that
    /// multiplies them (the others never output more than they take). The
    /// input is the caller's to bound: it fetched it.
    pub max_documents: usize,
    /// Nesting of expressions, projections and `$and`/`$or`/`$nor`.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stages: 32,
            max_documents: 200_000,
            max_depth: 32,
        }
    }
}

/// A parsed `/aggregate` request.
#[derive(Debug, Clone)]
pub struct AggregateRequest {
    pub kind: AggregateKind,
}

#[derive(Debug, Clone)]
pub enum AggregateKind {
    /// `distinct`: the API finds the objects `where_clause` matches (a
    /// Parse where, possibly empty) and calls [`distinct`].
    Distinct {
        field: String,
        where_clause: Map<String, Value>,
    },
    /// A pipeline: the API fetches the class's objects and calls
    /// [`Pipeline::run`]. Parse ignores `where` here.
    Pipeline(Pipeline),
}

/// Keys Parse's middleware strips from a body before any router sees it.
const TRANSPORT_KEYS: &[&str] = &[
    "_method",
    "_ApplicationId",
    "_JavaScriptKey",
    "_ClientKey",
    "_ClientVersion",
    "_InstallationId",
    "_SessionToken",
    "_MasterKey",
    "_context",
    "_RevocableSession",
    "_ContentType",
    "_noBody",
];

impl AggregateRequest {
    /// Parses the request's parameters (body merged with the query string).
    /// A value may still be the JSON text a query parameter carried: as
    /// Parse does, a string that parses as JSON is taken as that JSON.
    pub fn parse(params: &Map<String, Value>) -> AggregateResult<Self> {
        let limits = Limits::default();
        let mut body: Map<String, Value> = params
            .iter()
            .filter(|(k, _)| !TRANSPORT_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), decode_param(v)))
            .collect();
        // Parse takes these out for its adapter before building the
        // pipeline; they only steer MongoDB, so they are ignored here.
        body.retain(|k, v| match k.as_str() {
            "hint" | "explain" | "comment" | "readPreference" => false,
            "rawValues" | "rawFieldNames" => !v.is_boolean(),
            _ => true,
        });
        let distinct = body.get("distinct").filter(|v| js_truthy(v)).map(js_string);

        // Parse builds (and checks the names of) the stages even for a
        // distinct request, so a bad key fails both alike.
        let raw = raw_stages(&body, &limits)?;

        if let Some(field) = distinct {
            let where_clause = match body.get("where") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(Value::String(_)) => return Err(AggregateError::InvalidWhereJson),
                Some(_) => return Err(AggregateError::query("where must be a JSON object")),
            };
            return Ok(Self {
                kind: AggregateKind::Distinct {
                    field,
                    where_clause,
                },
            });
        }
        let mut stages = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            // Parse leaves a hole for `where`/`distinct` keys among the
            // stages, which its adapters then fail on (code 102).
            if name == "where" || name == "distinct" {
                return Err(AggregateError::query(format!(
                    "Invalid aggregate stage '{name}'."
                )));
            }
            stages.push(Stage::parse(&name, value, &limits)?);
        }
        Ok(Self {
            kind: AggregateKind::Pipeline(Pipeline { stages, limits }),
        })
    }
}

/// Parse's `JSONFromQuery`: a string holding JSON becomes that JSON.
fn decode_param(value: &Value) -> Value {
    if let Value::String(s) = value
        && let Ok(decoded) = serde_json::from_str::<Value>(s)
    {
        return decoded;
    }
    value.clone()
}

/// JavaScript's `String(value)` for the values a distinct name can be.
fn js_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => number_text(n),
        other => other.to_string(),
    }
}

fn number_text(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// Parse's `getPipeline`/`transformStage`: the stages as (name, value),
/// with Parse's checks on stage names and on `$group`'s `_id`.
fn raw_stages(body: &Map<String, Value>, limits: &Limits) -> AggregateResult<Vec<(String, Value)>> {
    let source = match body.get("pipeline") {
        Some(p) if js_truthy(p) => p,
        _ => &Value::Object(body.clone()),
    };
    let stages: Vec<(String, Value)> = match source {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(m) if m.len() == 1 => {
                    let (k, v) = m
                        .iter()
                        .next()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .unwrap_or_default();
                    Ok((k, v))
                }
                Value::Object(m) => Err(AggregateError::query(format!(
                    "Pipeline stages should only have one key but found {}.",
                    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                ))),
                _ => Err(AggregateError::query(
                    "Pipeline stages should only have one key but found .",
                )),
            })
            .collect::<AggregateResult<_>>()?,
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => {
            return Err(AggregateError::query(
                "pipeline must be an array of stages or an object",
            ));
        }
    };
    if stages.len() > limits.max_stages {
        return Err(AggregateError::query(format!(
            "the pipeline has {} stages; at most {} are allowed",
            stages.len(),
            limits.max_stages
        )));
    }
    for (name, value) in &stages {
        if name == "where" || name == "distinct" {
            continue;
        }
        if !name.starts_with('$') {
            return Err(AggregateError::query(format!(
                "Invalid aggregate stage '{name}'."
            )));
        }
        if name == "$group" {
            if value
                .as_object()
                .is_some_and(|g| g.contains_key("objectId"))
            {
                return Err(AggregateError::query(
                    "Cannot use 'objectId' in aggregation stage $group.",
                ));
            }
            if !value.as_object().is_some_and(|g| g.contains_key("_id")) {
                return Err(AggregateError::query(
                    "Invalid parameter for query: group. Missing key _id",
                ));
            }
        }
    }
    Ok(stages)
}

/// A checked pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    stages: Vec<Stage>,
    limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Stage {
    raw: Value,
    kind: StageKind,
}

#[derive(Debug, Clone)]
enum StageKind {
    /// A `$match` that failed to compile keeps its error until the stage
    /// runs, so the API can still take a leading `$match` with Parse-only
    /// operators (`$inQuery`, `$relatedTo`, ...) into its store query.
    Match(Result<Filter, AggregateError>),
    Group(Group),
    Project(Projection),
    Sort(Vec<(Path, bool)>),
    Limit(usize),
    Skip(usize),
    Count(String),
    Unwind(Unwind),
}

impl Stage {
    fn parse(name: &str, value: Value, limits: &Limits) -> AggregateResult<Self> {
        let kind = match name {
            "$match" => StageKind::Match(match &value {
                Value::Object(m) => Filter::parse(m, limits.max_depth),
                _ => Err(AggregateError::query(
                    "the match filter must be an expression in an object",
                )),
            }),
            "$group" => StageKind::Group(Group::parse(&value, limits)?),
            "$project" => StageKind::Project(Projection::parse(&value, limits)?),
            "$sort" => StageKind::Sort(parse_sort(&value)?),
            "$limit" => match whole_number(&value) {
                Some(n) if n > 0 => StageKind::Limit(n as usize),
                _ => return Err(AggregateError::query("the limit must be positive")),
            },
            "$skip" => match whole_number(&value) {
                Some(n) if n >= 0 => StageKind::Skip(n as usize),
                _ => {
                    return Err(AggregateError::query(
                        "invalid argument to $skip stage: expected a non-negative integer",
                    ));
                }
            },
            "$count" => StageKind::Count(parse_count(&value)?),
            "$unwind" => StageKind::Unwind(Unwind::parse(&value)?),
            _ => {
                return Err(AggregateError::query(format!(
                    "Unrecognized pipeline stage name: '{name}'"
                )));
            }
        };
        Ok(Self { raw: value, kind })
    }
}

/// An integer given as a JSON number (MongoDB takes `2.0` for 2).
fn whole_number(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn parse_sort(value: &Value) -> AggregateResult<Vec<(Path, bool)>> {
    let Value::Object(spec) = value else {
        return Err(AggregateError::query(
            "the $sort key specification must be an object",
        ));
    };
    if spec.is_empty() {
        return Err(AggregateError::query(
            "$sort stage must have at least one sort key",
        ));
    }
    spec.iter()
        .map(|(key, dir)| {
            let descending = match whole_number(dir) {
                Some(1) => false,
                Some(-1) => true,
                _ => {
                    return Err(AggregateError::query(
                        "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                    ));
                }
            };
            Ok((Path::parse(key)?, descending))
        })
        .collect()
}

fn parse_count(value: &Value) -> AggregateResult<String> {
    match value {
        Value::String(s) if s.is_empty() => Err(AggregateError::query(
            "the count field must be a non-empty string",
        )),
        Value::String(s) if s.starts_with('$') => Err(AggregateError::query(
            "the count field cannot be a $-prefixed path",
        )),
        Value::String(s) if s.contains('.') => {
            Err(AggregateError::query("the count field cannot contain '.'"))
        }
        Value::String(s) => Ok(s.clone()),
        _ => Err(AggregateError::query(
            "the count field must be a non-empty string",
        )),
    }
}

impl Pipeline {
    /// Parses bare stages (each a one-key object), as given in `pipeline`.
    pub fn parse(stages: &[Value]) -> AggregateResult<Self> {
        let mut body = Map::new();
        body.insert("pipeline".to_owned(), Value::Array(stages.to_vec()));
        match AggregateRequest::parse(&body)?.kind {
            AggregateKind::Pipeline(p) => Ok(p),
            AggregateKind::Distinct { .. } => Err(AggregateError::query("not a pipeline")),
        }
    }

    /// Takes the leading `$match` stages out, as the clients sent them, so
    /// the API can turn them into its store query (Parse's SDK puts the
    /// query's `where` there) and run the rest here. The maps use MongoDB's
    /// field names where the client did (`_id`, `_p_owner`, `_created_at`).
    pub fn split_leading_matches(mut self) -> (Vec<Map<String, Value>>, Pipeline) {
        let mut matches = Vec::new();
        while let Some(stage) = self.stages.first() {
            match (&stage.kind, &stage.raw) {
                (StageKind::Match(_), Value::Object(m)) => {
                    matches.push(m.clone());
                    self.stages.remove(0);
                }
                _ => break,
            }
        }
        (matches, self)
    }

    /// Runs the pipeline over `objects` (Parse REST JSON, as the store
    /// returns them) and returns the results in Parse's shape.
    pub fn run(&self, objects: Vec<Object>) -> AggregateResult<Vec<Object>> {
        for stage in &self.stages {
            if let StageKind::Match(Err(e)) = &stage.kind {
                return Err(e.clone());
            }
        }
        let mut docs: Vec<Map<String, Value>> = objects.into_iter().map(ingest).collect();
        for stage in &self.stages {
            docs = self.apply(stage, docs)?;
        }
        Ok(docs.into_iter().map(output).collect())
    }

    fn apply(
        &self,
        stage: &Stage,
        mut docs: Vec<Map<String, Value>>,
    ) -> AggregateResult<Vec<Map<String, Value>>> {
        match &stage.kind {
            StageKind::Match(filter) => {
                let filter = filter.as_ref().map_err(Clone::clone)?;
                docs.retain(|doc| filter.matches(doc));
                Ok(docs)
            }
            StageKind::Group(group) => group.run(docs),
            StageKind::Project(projection) => {
                docs.into_iter().map(|d| projection.apply(d)).collect()
            }
            StageKind::Sort(keys) => Ok(sort_docs(docs, keys)),
            StageKind::Limit(n) => {
                docs.truncate(*n);
                Ok(docs)
            }
            StageKind::Skip(n) => Ok(docs.into_iter().skip(*n).collect()),
            StageKind::Count(name) => Ok(if docs.is_empty() {
                Vec::new()
            } else {
                let mut doc = Map::new();
                doc.insert(name.clone(), Value::from(docs.len() as u64));
                vec![doc]
            }),
            StageKind::Unwind(unwind) => unwind.run(docs, self.limits.max_documents),
        }
    }
}

// ---------------------------------------------------------------------------
// Documents in and out.

/// Dates become `{"__type": "Date", "iso": <fixed-width UTC ISO>}`,
/// `createdAt`/`updatedAt` included, so every date compares and sorts as
/// a string, and the ACL goes: Parse's aggregate never returns one.
fn ingest(mut object: Object) -> Map<String, Value> {
    object.retain(|k, _| k != "ACL");
    for (key, value) in object.iter_mut() {
        if (key == "createdAt" || key == "updatedAt")
            && let Value::String(s) = value
            && let Some(iso) = canonical_iso(s)
        {
            *value = date_value(iso);
        } else {
            canonicalize_dates(value);
        }
    }
    object
}

fn canonicalize_dates(value: &mut Value) {
    match value {
        Value::Object(m) => {
            if m.get("__type").and_then(Value::as_str) == Some("Date") {
                if let Some(Value::String(iso)) = m.get_mut("iso")
                    && let Some(canonical) = canonical_iso(iso)
                {
                    *iso = canonical;
                }
            } else {
                m.values_mut().for_each(canonicalize_dates);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonicalize_dates),
        _ => {}
    }
}

/// Parse Server on PostgreSQL: hidden keys and top-level nulls go (an
/// absent group key stays as `objectId: null`), `createdAt`/`updatedAt`
/// are ISO strings, and whole floats print as integers as in JavaScript.
fn output(doc: Map<String, Value>) -> Object {
    doc.into_iter()
        .filter(|(k, v)| visible_key(k) && (!v.is_null() || k == "objectId"))
        .map(|(k, mut v)| {
            if (k == "createdAt" || k == "updatedAt")
                && let Some(iso) = date_iso(&v)
            {
                v = Value::String(iso.to_owned());
            }
            normalize_numbers(&mut v);
            (k, v)
        })
        .collect()
}

/// Parse's `removeHiddenProperties`: keys matching `^[A-Za-z][0-9A-Za-z_]*$`.
fn visible_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn normalize_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                *value = num(f);
            }
        }
        Value::Object(m) => m.values_mut().for_each(normalize_numbers),
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// A JSON number from a computed float: whole values as integers (as
/// JavaScript prints them), non-finite ones as null.
fn num(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    let f = f + 0.0; // -0 prints as 0
    if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

// ---------------------------------------------------------------------------
// Dates.

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s, format) {
            return Some(d.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// Parse's date format, fixed width for years 0 to 9999, so it sorts as
/// the dates do.
fn format_iso(d: &DateTime<Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn canonical_iso(s: &str) -> Option<String> {
    parse_date(s).map(|d| format_iso(&d))
}

fn date_value(iso: String) -> Value {
    let mut m = Map::new();
    m.insert("__type".to_owned(), Value::from("Date"));
    m.insert("iso".to_owned(), Value::String(iso));
    Value::Object(m)
}

fn date_iso(value: &Value) -> Option<&str> {
    let m = value.as_object()?;
    if m.get("__type").and_then(Value::as_str) != Some("Date") {
        return None;
    }
    m.get("iso").and_then(Value::as_str)
}

// ---------------------------------------------------------------------------
// Ordering: MongoDB's order of types, with Parse's typed values placed
// where their stored form sorts (a pointer or file by its objectId or name,
// as both of Parse's layouts store them).

#[derive(Clone, Copy)]
enum Kind<'a> {
    Null,
    Num(f64),
    Str(&'a str),
    Obj(&'a Map<String, Value>),
    Arr(&'a [Value]),
    Bin(&'a str),
    Bool(bool),
    Date(&'a str),
}

impl Kind<'_> {
    fn rank(&self) -> u8 {
        match self {
            Kind::Null => 1,
            Kind::Num(_) => 2,
            Kind::Str(_) => 3,
            Kind::Obj(_) => 4,
            Kind::Arr(_) => 5,
            Kind::Bin(_) => 6,
            Kind::Bool(_) => 7,
            Kind::Date(_) => 8,
        }
    }
}

fn kind(value: &Value) -> Kind<'_> {
    match value {
        Value::Null => Kind::Null,
        Value::Bool(b) => Kind::Bool(*b),
        Value::Number(n) => Kind::Num(n.as_f64().unwrap_or(0.0) + 0.0),
        Value::String(s) => Kind::Str(s),
        Value::Array(items) => Kind::Arr(items),
        Value::Object(m) => {
            let field = |k: &str| m.get(k).and_then(Value::as_str);
            match field("__type") {
                Some("Date") if field("iso").is_some() => Kind::Date(field("iso").unwrap_or("")),
                Some("Pointer") if field("objectId").is_some() => {
                    Kind::Str(field("objectId").unwrap_or(""))
                }
                Some("File") if field("name").is_some() => Kind::Str(field("name").unwrap_or("")),
                Some("Bytes") if field("base64").is_some() => {
                    Kind::Bin(field("base64").unwrap_or(""))
                }
                _ => Kind::Obj(m),
            }
        }
    }
}

/// A total order on JSON values (numbers by value, so 10 and 10.0 are one
/// group key).
fn cmp_values(a: &Value, b: &Value) -> Ordering {
    let (ka, kb) = (kind(a), kind(b));
    match (ka, kb) {
        (Kind::Null, Kind::Null) => Ordering::Equal,
        (Kind::Num(x), Kind::Num(y)) => x.total_cmp(&y),
        (Kind::Str(x), Kind::Str(y))
        | (Kind::Bin(x), Kind::Bin(y))
        | (Kind::Date(x), Kind::Date(y)) => x.cmp(y),
        (Kind::Bool(x), Kind::Bool(y)) => x.cmp(&y),
        (Kind::Arr(x), Kind::Arr(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = cmp_values(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Kind::Obj(x), Kind::Obj(y)) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            for ((xk, xv), (yk, yv)) in xs.iter().zip(&ys) {
                let o = xk.cmp(yk).then_with(|| cmp_values(xv, yv));
                if o != Ordering::Equal {
                    return o;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => ka.rank().cmp(&kb.rank()),
    }
}

/// A value ordered by [`cmp_values`], for sets and group maps.
#[derive(Debug, Clone)]
struct Key(Value);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        cmp_values(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_values(&self.0, &other.0)
    }
}

fn type_name(value: &Value) -> &'static str {
    match kind(value) {
        Kind::Null => "null",
        Kind::Num(_) => "number",
        Kind::Str(_) => "string",
        Kind::Obj(_) => "object",
        Kind::Arr(_) => "array",
        Kind::Bin(_) => "binData",
        Kind::Bool(_) => "bool",
        Kind::Date(_) => "date",
    }
}

// ---------------------------------------------------------------------------
// Field paths.

/// A dotted field path. The first segment takes Parse's MongoDB names for
/// its own fields (`_id`, `_created_at`, `_updated_at`, `_p_<pointer>`), so
/// `$_id` after a `$group` is the group key, as in MongoDB.
#[derive(Debug, Clone, PartialEq)]
struct Path(Vec<String>);

impl Path {
    fn parse(dotted: &str) -> AggregateResult<Self> {
        let mut segments: Vec<String> = dotted.split('.').map(str::to_owned).collect();
        if segments.iter().any(|s| s.is_empty() || s.starts_with('$')) {
            return Err(AggregateError::InvalidFieldName(dotted.to_owned()));
        }
        let first = &mut segments[0];
        let alias = match first.as_str() {
            "_id" => Some("objectId".to_owned()),
            "_created_at" => Some("createdAt".to_owned()),
            "_updated_at" => Some("updatedAt".to_owned()),
            other => other
                .strip_prefix("_p_")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        };
        if let Some(alias) = alias {
            *first = alias;
        }
        Ok(Path(segments))
    }

    fn root(&self) -> &str {
        &self.0[0]
    }

    /// The value an expression `$path` reads: through arrays of objects,
    /// collecting, as MongoDB does. `None` when missing.
    fn resolve(&self, doc: &Map<String, Value>) -> Option<Value> {
        fn walk(value: &Value, rest: &[String]) -> Option<Value> {
            let Some((head, tail)) = rest.split_first() else {
                return Some(value.clone());
            };
            match value {
                Value::Object(m) => m.get(head).and_then(|v| walk(v, tail)),
                Value::Array(items) => Some(Value::Array(
                    items
                        .iter()
                        .filter(|i| i.is_object() || i.is_array())
                        .filter_map(|i| walk(i, rest))
                        .collect(),
                )),
                _ => None,
            }
        }
        doc.get(self.root()).and_then(|v| walk(v, &self.0[1..]))
    }

    /// The values a `$match` condition tests at this path: each value the
    /// path reaches through objects and arrays (and, by index, `a.0`).
    fn leaves<'a>(&self, doc: &'a Map<String, Value>) -> Vec<&'a Value> {
        fn walk<'a>(value: &'a Value, rest: &[String], out: &mut Vec<&'a Value>) {
            let Some((head, tail)) = rest.split_first() else {
                out.push(value);
                return;
            };
            match value {
                Value::Object(m) => {
                    if let Some(v) = m.get(head) {
                        walk(v, tail, out);
                    }
                }
                Value::Array(items) => {
                    if let Ok(i) = head.parse::<usize>()
                        && let Some(v) = items.get(i)
                    {
                        walk(v, tail, out);
                    }
                    for item in items.iter().filter(|i| i.is_object()) {
                        walk(item, rest, out);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        if let Some(v) = doc.get(self.root()) {
            walk(v, &self.0[1..], &mut out);
        }
        out
    }

    /// The value at the path through objects only (`$unwind`'s view).
    fn get_plain<'a>(&self, doc: &'a Map<String, Value>) -> Option<&'a Value> {
        let mut value = doc.get(self.root())?;
        for segment in &self.0[1..] {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }

    fn remove(&self, doc: &mut Map<String, Value>) {
        let (last, parents) = self.0.split_last().unwrap_or((&self.0[0], &[]));
        let mut map = doc;
        for segment in parents {
            match map.get_mut(segment) {
                Some(Value::Object(next)) => map = next,
                _ => return,
            }
        }
        map.retain(|k, _| k != last);
    }

    /// Sets the value, making objects on the way (replacing non-objects).
    fn set(&self, doc: &mut Map<String, Value>, value: Value) {
        let mut map = doc;
        for segment in &self.0[..self.0.len() - 1] {
            let slot = map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(next) = slot else { return };
            map = next;
        }
        map.insert(self.0[self.0.len() - 1].clone(), value);
    }
}

// ---------------------------------------------------------------------------
// $match.

#[derive(Debug, Clone)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Nor(Vec<Filter>),
    Field(Path, Vec<Cond>),
}

/// A value a condition compares with; `date` holds it as a date when it is
/// a string that reads as one, for comparing with date fields (Parse's
/// MongoDB adapter converts such strings; clients send dates as strings).
#[derive(Debug, Clone)]
struct Operand {
    value: Value,
    date: Option<Value>,
}

impl Operand {
    fn new(value: &Value) -> Self {
        let mut value = value.clone();
        canonicalize_dates(&mut value);
        let date = value.as_str().and_then(canonical_iso).map(date_value);
        Self { value, date }
    }

    /// The operand as compared with `doc_value`.
    fn against(&self, doc_value: &Value) -> &Value {
        match &self.date {
            Some(d) if date_iso(doc_value).is_some() => d,
            _ => &self.value,
        }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    Eq(Operand),
    Ne(Operand),
    Cmp(Ordering, bool, Operand),
    In(Vec<Operand>),
    Nin(Vec<Operand>),
    Exists(bool),
    Regex(Regex),
    All(Vec<Operand>),
    Size(usize),
    Not(Vec<Cond>),
}

impl Filter {
    fn parse(spec: &Map<String, Value>, depth: usize) -> AggregateResult<Filter> {
        if depth == 0 {
            return Err(AggregateError::query("$match is nested too deeply"));
        }
        let mut parts = Vec::new();
        for (key, value) in spec {
            match key.as_str() {
                "$and" | "$or" | "$nor" => {
                    let items = match value {
                        Value::Array(items) if !items.is_empty() => items,
                        _ => {
                            return Err(AggregateError::query(format!(
                                "{key} must be a nonempty array"
                            )));
                        }
                    };
                    let subs = items
                        .iter()
                        .map(|item| match item {
                            Value::Object(m) => Filter::parse(m, depth - 1),
                            _ => Err(AggregateError::query(format!(
                                "{key} entries need to be full objects"
                            ))),
                        })
                        .collect::<AggregateResult<Vec<_>>>()?;
                    parts.push(match key.as_str() {
                        "$and" => Filter::And(subs),
                        "$or" => Filter::Or(subs),
                        _ => Filter::Nor(subs),
                    });
                }
                k if k.starts_with('$') => {
                    return Err(AggregateError::query(format!(
                        "unknown top level operator: {k}"
                    )));
                }
                _ => parts.push(Filter::Field(Path::parse(key)?, parse_conds(value, depth)?)),
            }
        }
        Ok(Filter::And(parts))
    }

    fn matches(&self, doc: &Map<String, Value>) -> bool {
        match self {
            Filter::And(parts) => parts.iter().all(|p| p.matches(doc)),
            Filter::Or(parts) => parts.iter().any(|p| p.matches(doc)),
            Filter::Nor(parts) => !parts.iter().any(|p| p.matches(doc)),
            Filter::Field(path, conds) => {
                let leaves = path.leaves(doc);
                conds.iter().all(|c| c.matches(&leaves))
            }
        }
    }
}

fn is_operator_object(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|m| m.keys().next().is_some_and(|k| k.starts_with('$')))
}

fn parse_conds(value: &Value, depth: usize) -> AggregateResult<Vec<Cond>> {
    let Some(spec) = value.as_object().filter(|_| is_operator_object(value)) else {
        return Ok(vec![Cond::Eq(Operand::new(value))]);
    };
    let list = |v: &Value, op: &str| -> AggregateResult<Vec<Operand>> {
        match v {
            Value::Array(items) => Ok(items.iter().map(Operand::new).collect()),
            _ => Err(AggregateError::query(format!("{op} needs an array"))),
        }
    };
    let mut conds = Vec::new();
    for (op, arg) in spec {
        conds.push(match op.as_str() {
            "$eq" => Cond::Eq(Operand::new(arg)),
            "$ne" => Cond::Ne(Operand::new(arg)),
            "$gt" => Cond::Cmp(Ordering::Greater, false, Operand::new(arg)),
            "$gte" => Cond::Cmp(Ordering::Greater, true, Operand::new(arg)),
            "$lt" => Cond::Cmp(Ordering::Less, false, Operand::new(arg)),
            "$lte" => Cond::Cmp(Ordering::Less, true, Operand::new(arg)),
            "$in" => Cond::In(list(arg, op)?),
            "$nin" => Cond::Nin(list(arg, op)?),
            "$all" => Cond::All(list(arg, op)?),
            "$exists" => Cond::Exists(js_truthy(arg)),
            "$size" => match whole_number(arg) {
                Some(n) if n >= 0 => Cond::Size(n as usize),
                _ => return Err(AggregateError::query("$size needs a non-negative integer")),
            },
            "$regex" => {
                let options = spec.get("$options").and_then(Value::as_str).unwrap_or("");
                Cond::Regex(compile_regex(arg, options)?)
            }
            "$options" if spec.contains_key("$regex") => continue,
            "$options" => return Err(AggregateError::query("$options needs a $regex")),
            "$not" => match arg {
                Value::Object(_) if is_operator_object(arg) => {
                    if depth == 0 {
                        return Err(AggregateError::query("$match is nested too deeply"));
                    }
                    Cond::Not(parse_conds(arg, depth - 1)?)
                }
                Value::String(_) => Cond::Not(vec![Cond::Regex(compile_regex(arg, "")?)]),
                _ => return Err(AggregateError::query("$not needs a regex or a document")),
            },
            other => return Err(AggregateError::query(format!("unknown operator: {other}"))),
        });
    }
    Ok(conds)
}

fn compile_regex(pattern: &Value, options: &str) -> AggregateResult<Regex> {
    let Some(pattern) = pattern.as_str() else {
        return Err(AggregateError::query("$regex has to be a string"));
    };
    let flags: String = options.chars().filter(|c| "imsx".contains(*c)).collect();
    if options.chars().any(|c| !"imsxu".contains(c)) {
        return Err(AggregateError::query(format!(
            "invalid flag in regex options: {options}"
        )));
    }
    let body = unquote(pattern);
    let inline = if flags.is_empty() {
        body
    } else {
        format!("(?{flags}){body}")
    };
    crate::pattern::compile(&inline)
        .map_err(|e| AggregateError::query(format!("invalid regex: {e}")))
}

/// Turns PCRE's `\Q...\E` quoting (which Parse's SDKs send for
/// `startsWith` and friends) into escapes the `regex` crate reads.
fn unquote(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("\\Q") {
        out.push_str(&rest[..start]);
        let quoted = &rest[start + 2..];
        let (literal, after) = match quoted.find("\\E") {
            Some(end) => (&quoted[..end], &quoted[end + 2..]),
            None => (quoted, ""),
        };
        out.push_str(&regex::escape(literal));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A leaf and, for an array, its elements: what equality tests.
fn expand<'a>(leaves: &[&'a Value]) -> impl Iterator<Item = &'a Value> {
    leaves.iter().flat_map(|v| {
        std::iter::once(*v).chain(v.as_array().map(|a| a.iter()).into_iter().flatten())
    })
}

fn match_eq(doc_value: &Value, operand: &Operand) -> bool {
    let q = operand.against(doc_value);
    // A pointer equals its objectId, and MongoDB's stored `Class$id`.
    if let (Some(m), Value::String(s)) = (doc_value.as_object(), q)
        && m.get("__type").and_then(Value::as_str) == Some("Pointer")
        && let (Some(class), Some(id)) = (
            m.get("className").and_then(Value::as_str),
            m.get("objectId").and_then(Value::as_str),
        )
    {
        return s == id || s.strip_prefix(class).and_then(|r| r.strip_prefix('$')) == Some(id);
    }
    cmp_values(doc_value, q) == Ordering::Equal
}

fn eq_any(leaves: &[&Value], operand: &Operand) -> bool {
    (operand.value.is_null() && leaves.is_empty()) || expand(leaves).any(|v| match_eq(v, operand))
}

impl Cond {
    fn matches(&self, leaves: &[&Value]) -> bool {
        match self {
            Cond::Eq(q) => eq_any(leaves, q),
            Cond::Ne(q) => !eq_any(leaves, q),
            Cond::In(qs) => qs.iter().any(|q| eq_any(leaves, q)),
            Cond::Nin(qs) => !qs.iter().any(|q| eq_any(leaves, q)),
            Cond::All(qs) => !qs.is_empty() && qs.iter().all(|q| eq_any(leaves, q)),
            Cond::Exists(wanted) => leaves.is_empty() != *wanted,
            Cond::Size(n) => leaves
                .iter()
                .any(|v| v.as_array().is_some_and(|a| a.len() == *n)),
            Cond::Regex(re) => expand(leaves).any(|v| v.as_str().is_some_and(|s| re.is_match(s))),
            Cond::Not(conds) => !conds.iter().all(|c| c.matches(leaves)),
            Cond::Cmp(direction, or_equal, q) => {
                if q.value.is_null() {
                    return *or_equal && eq_any(leaves, q);
                }
                // Only values of the operand's type compare, as in MongoDB.
                expand(leaves).any(|v| {
                    let q = q.against(v);
                    if kind(v).rank() != kind(q).rank() {
                        return false;
                    }
                    let o = cmp_values(v, q);
                    o == *direction || (*or_equal && o == Ordering::Equal)
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Expressions.

#[derive(Debug, Clone)]
enum Expr {
    Field(Path),
    Root,
    Literal(Value),
    Object(Vec<(String, Expr)>),
    Array(Vec<Expr>),
    DatePart(DatePart, Box<Expr>, FixedOffset),
    Op(Op, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatePart {
    Year,
    Month,
    DayOfMonth,
    Hour,
    Minute,
    Second,
    Millisecond,
    DayOfWeek,
    DayOfYear,
    Week,
    IsoWeek,
    IsoWeekYear,
    IsoDayOfWeek,
}

impl DatePart {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "$year" => DatePart::Year,
            "$month" => DatePart::Month,
            "$dayOfMonth" => DatePart::DayOfMonth,
            "$hour" => DatePart::Hour,
            "$minute" => DatePart::Minute,
            "$second" => DatePart::Second,
            "$millisecond" => DatePart::Millisecond,
            "$dayOfWeek" => DatePart::DayOfWeek,
            "$dayOfYear" => DatePart::DayOfYear,
            "$week" => DatePart::Week,
            "$isoWeek" => DatePart::IsoWeek,
            "$isoWeekYear" => DatePart::IsoWeekYear,
            "$isoDayOfWeek" => DatePart::IsoDayOfWeek,
            _ => return None,
        })
    }

    /// MongoDB's definitions (`$dayOfWeek` 1 = Sunday, `$week` as
    /// strftime's `%U`), which Parse's PostgreSQL adapter does not follow.
    fn of(self, d: &NaiveDateTime) -> i64 {
        let sunday_based = i64::from(d.weekday().num_days_from_sunday());
        match self {
            DatePart::Year => i64::from(d.year()),
            DatePart::Month => i64::from(d.month()),
            DatePart::DayOfMonth => i64::from(d.day()),
            DatePart::Hour => i64::from(d.hour()),
            DatePart::Minute => i64::from(d.minute()),
            DatePart::Second => i64::from(d.second().min(59)),
            DatePart::Millisecond => i64::from(d.nanosecond() / 1_000_000 % 1000),
            DatePart::DayOfWeek => sunday_based + 1,
            DatePart::DayOfYear => i64::from(d.ordinal()),
            DatePart::Week => (i64::from(d.ordinal0()) + 7 - sunday_based) / 7,
            DatePart::IsoWeek => i64::from(d.iso_week().week()),
            DatePart::IsoWeekYear => i64::from(d.iso_week().year()),
            DatePart::IsoDayOfWeek => i64::from(d.weekday().number_from_monday()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
    Mod,
    Concat,
    ToLower,
    ToUpper,
    Size,
    IfNull,
}

impl Expr {
    fn parse(value: &Value, depth: usize) -> AggregateResult<Expr> {
        if depth == 0 {
            return Err(AggregateError::query("expression is nested too deeply"));
        }
        Ok(match value {
            Value::String(s) if s == "$$ROOT" || s == "$$CURRENT" => Expr::Root,
            Value::String(s) if s.starts_with("$$") => {
                return Err(AggregateError::query(format!(
                    "Use of undefined variable: {}",
                    &s[2..]
                )));
            }
            Value::String(s) if s.starts_with('$') => Expr::Field(Path::parse(&s[1..])?),
            Value::Array(items) => Expr::Array(
                items
                    .iter()
                    .map(|i| Expr::parse(i, depth - 1))
                    .collect::<AggregateResult<_>>()?,
            ),
            Value::Object(m) if is_operator_object(value) => {
                if m.len() != 1 {
                    return Err(AggregateError::query(format!(
                        "an expression specification must contain exactly one field, the name of the expression. Found {} fields",
                        m.len()
                    )));
                }
                let (name, arg) = m
                    .iter()
                    .next()
                    .map(|(k, v)| (k.as_str(), v))
                    .unwrap_or(("", &Value::Null));
                Expr::parse_operator(name, arg, depth - 1)?
            }
            Value::Object(m) => {
                if let Some(k) = m.keys().find(|k| k.starts_with('$')) {
                    return Err(AggregateError::query(format!(
                        "field path references must be prefixed with a '$' ('{k}')"
                    )));
                }
                Expr::Object(
                    m.iter()
                        .map(|(k, v)| Ok((k.clone(), Expr::parse(v, depth - 1)?)))
                        .collect::<AggregateResult<_>>()?,
                )
            }
            other => Expr::Literal(other.clone()),
        })
    }

    fn parse_operator(name: &str, arg: &Value, depth: usize) -> AggregateResult<Expr> {
        let args = |arg: &Value| -> AggregateResult<Vec<Expr>> {
            match arg {
                Value::Array(items) => items.iter().map(|i| Expr::parse(i, depth)).collect(),
                other => Ok(vec![Expr::parse(other, depth)?]),
            }
        };
        let arity = |exprs: Vec<Expr>, n: usize| -> AggregateResult<Vec<Expr>> {
            if exprs.len() == n {
                Ok(exprs)
            } else {
                Err(AggregateError::query(format!(
                    "Expression {name} takes exactly {n} arguments. {} were passed in.",
                    exprs.len()
                )))
            }
        };
        if name == "$literal" {
            return Ok(Expr::Literal(arg.clone()));
        }
        if let Some(part) = DatePart::from_name(name) {
            let (date, zone) = match arg {
                Value::Object(m) if m.contains_key("date") => {
                    if let Some(k) = m.keys().find(|k| *k != "date" && *k != "timezone") {
                        return Err(AggregateError::query(format!(
                            "unrecognized option to {name}: {k}"
                        )));
                    }
                    let zone = match m.get("timezone") {
                        None => Some(utc()),
                        Some(Value::String(z)) => parse_offset(z),
                        Some(_) => None,
                    }
                    .ok_or_else(|| AggregateError::query(format!("unsupported timezone in {name}: only UTC and fixed offsets such as +05:30 are")))?;
                    (m.get("date").cloned().unwrap_or(Value::Null), zone)
                }
                Value::Array(items) if items.len() == 1 => (items[0].clone(), utc()),
                other => (other.clone(), utc()),
            };
            return Ok(Expr::DatePart(
                part,
                Box::new(Expr::parse(&date, depth)?),
                zone,
            ));
        }
        let (op, exprs) = match name {
            "$add" => (Op::Add, args(arg)?),
            "$multiply" => (Op::Multiply, args(arg)?),
            "$concat" => (Op::Concat, args(arg)?),
            "$subtract" => (Op::Subtract, arity(args(arg)?, 2)?),
            "$divide" => (Op::Divide, arity(args(arg)?, 2)?),
            "$mod" => (Op::Mod, arity(args(arg)?, 2)?),
            "$toLower" => (Op::ToLower, arity(args(arg)?, 1)?),
            "$toUpper" => (Op::ToUpper, arity(args(arg)?, 1)?),
            "$size" => (Op::Size, arity(args(arg)?, 1)?),
            "$ifNull" => {
                let exprs = args(arg)?;
                if exprs.len() < 2 {
                    return Err(AggregateError::query(
                        "$ifNull needs at least two arguments",
                    ));
                }
                (Op::IfNull, exprs)
            }
            _ => {
                return Err(AggregateError::query(format!(
                    "Unrecognized expression '{name}'"
                )));
            }
        };
        Ok(Expr::Op(op, exprs))
    }

    /// The value, `None` when missing (a field the document lacks).
    fn eval(&self, doc: &Map<String, Value>) -> AggregateResult<Option<Value>> {
        Ok(match self {
            Expr::Field(path) => path.resolve(doc),
            Expr::Root => Some(Value::Object(doc.clone())),
            Expr::Literal(v) => Some(v.clone()),
            Expr::Object(fields) => {
                let mut out = Map::new();
                for (k, e) in fields {
                    if let Some(v) = e.eval(doc)? {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Value::Object(out))
            }
            Expr::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .map(|e| Ok(e.eval(doc)?.unwrap_or(Value::Null)))
                    .collect::<AggregateResult<_>>()?,
            )),
            Expr::DatePart(part, date, zone) => match date.eval(doc)? {
                None | Some(Value::Null) => Some(Value::Null),
                Some(v) => {
                    let d = date_iso(&v).and_then(parse_date).ok_or_else(|| {
                        AggregateError::query(format!(
                            "can't convert from BSON type {} to Date",
                            type_name(&v)
                        ))
                    })?;
                    Some(Value::from(part.of(&d.with_timezone(zone).naive_local())))
                }
            },
            Expr::Op(op, args) => {
                let values = args
                    .iter()
                    .map(|e| e.eval(doc))
                    .collect::<AggregateResult<Vec<_>>>()?;
                Some(apply_op(*op, values)?)
            }
        })
    }
}

fn utc() -> FixedOffset {
    FixedOffset::east_opt(0).expect("a zero offset is valid")
}

fn parse_offset(zone: &str) -> Option<FixedOffset> {
    if matches!(zone, "UTC" | "GMT" | "Z" | "Etc/UTC" | "Etc/GMT") {
        return Some(utc());
    }
    let (sign, rest) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

fn date_millis(value: &Value) -> Option<i64> {
    date_iso(value)
        .and_then(parse_date)
        .map(|d| d.timestamp_millis())
}

fn millis_date(ms: f64) -> AggregateResult<Value> {
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
        .filter(|_| ms.is_finite())
        .map(|d| date_value(format_iso(&d)))
        .ok_or_else(|| AggregateError::query("date out of range"))
}

fn apply_op(op: Op, values: Vec<Option<Value>>) -> AggregateResult<Value> {
    let nullish = |v: &Option<Value>| v.as_ref().is_none_or(Value::is_null);
    let numeric = |v: &Value, name: &str| -> AggregateResult<f64> {
        v.as_f64().ok_or_else(|| {
            AggregateError::query(format!(
                "{name} only supports numeric types, not {}",
                type_name(v)
            ))
        })
    };
    match op {
        Op::IfNull => Ok(values
            .iter()
            .find(|v| !nullish(v))
            .or(values.last())
            .cloned()
            .flatten()
            .unwrap_or(Value::Null)),
        Op::ToLower | Op::ToUpper => Ok(match values.into_iter().next().flatten() {
            None | Some(Value::Null) => Value::from(""),
            Some(Value::String(s)) if op == Op::ToLower => Value::String(s.to_lowercase()),
            Some(Value::String(s)) => Value::String(s.to_uppercase()),
            Some(Value::Number(n)) => Value::String(number_text(&n)),
            Some(other) => {
                return Err(AggregateError::query(format!(
                    "can't convert from BSON type {} to String",
                    type_name(&other)
                )));
            }
        }),
        Op::Size => match values.into_iter().next().flatten() {
            Some(Value::Array(items)) => Ok(Value::from(items.len() as u64)),
            other => Err(AggregateError::query(format!(
                "The argument to $size must be an array. Type of argument was {}",
                other.as_ref().map_or("missing", type_name)
            ))),
        },
        _ if values.iter().any(nullish) => Ok(Value::Null),
        Op::Concat => {
            let mut out = String::new();
            for v in values.iter().flatten() {
                match v {
                    Value::String(s) => out.push_str(s),
                    other => {
                        return Err(AggregateError::query(format!(
                            "$concat only supports strings, not {}",
                            type_name(other)
                        )));
                    }
                }
            }
            Ok(Value::String(out))
        }
        Op::Add => {
            let mut total = 0.0;
            let mut date = false;
            for v in values.iter().flatten() {
                if let Some(ms) = date_millis(v) {
                    if date {
                        return Err(AggregateError::query(
                            "only one date allowed in an $add expression",
                        ));
                    }
                    date = true;
                    total += ms as f64;
                } else {
                    total += numeric(v, "$add")?;
                }
            }
            if date {
                millis_date(total)
            } else {
                Ok(num(total))
            }
        }
        Op::Multiply => {
            let mut product = 1.0;
            for v in values.iter().flatten() {
                product *= numeric(v, "$multiply")?;
            }
            Ok(num(product))
        }
        Op::Subtract => {
            let (a, b) = (
                values[0].clone().unwrap_or_default(),
                values[1].clone().unwrap_or_default(),
            );
            match (date_millis(&a), date_millis(&b)) {
                (Some(x), Some(y)) => Ok(Value::from(x - y)),
                (Some(x), None) => millis_date(x as f64 - numeric(&b, "$subtract")?),
                (None, _) => Ok(num(numeric(&a, "$subtract")? - numeric(&b, "$subtract")?)),
            }
        }
        Op::Divide | Op::Mod => {
            let name = if op == Op::Divide { "$divide" } else { "$mod" };
            let a = numeric(values[0].as_ref().unwrap_or(&Value::Null), name)?;
            let b = numeric(values[1].as_ref().unwrap_or(&Value::Null), name)?;
            if b == 0.0 {
                return Err(AggregateError::query(format!("can't {name} by zero")));
            }
            Ok(num(if op == Op::Divide { a / b } else { a % b }))
        }
    }
}

// ---------------------------------------------------------------------------
// $group.

#[derive(Debug, Clone)]
struct Group {
    key: Expr,
    accumulators: Vec<(String, Accumulator, Expr)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accumulator {
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Push,
    AddToSet,
    Count,
}

enum AccState {
    Sum(f64),
    Avg(f64, u64),
    Min(Option<Value>),
    Max(Option<Value>),
    First(Option<Value>),
    Last(Value),
    Push(Vec<Value>),
    Set(BTreeSet<Key>, Vec<Value>),
    Count(u64),
}

impl Group {
    fn parse(value: &Value, limits: &Limits) -> AggregateResult<Self> {
        let Value::Object(spec) = value else {
            return Err(AggregateError::query(
                "a group's fields must be specified in an object",
            ));
        };
        let mut key = None;
        let mut accumulators = Vec::new();
        for (field, arg) in spec {
            if field == "_id" {
                key = Some(Expr::parse(arg, limits.max_depth)?);
                continue;
            }
            if field.starts_with('$') || field.contains('.') {
                return Err(AggregateError::query(format!(
                    "the group aggregate field name '{field}' cannot be used because $group's field names cannot contain '.' or start with '$'"
                )));
            }
            let (name, expr) = match arg {
                Value::Object(m) if m.len() == 1 => m
                    .iter()
                    .next()
                    .map(|(k, v)| (k.as_str(), v))
                    .unwrap_or(("", &Value::Null)),
                _ => {
                    return Err(AggregateError::query(format!(
                        "the group aggregate field '{field}' must be defined as an expression inside an object"
                    )));
                }
            };
            let accumulator = match name {
                "$sum" => Accumulator::Sum,
                "$avg" => Accumulator::Avg,
                "$min" => Accumulator::Min,
                "$max" => Accumulator::Max,
                "$first" => Accumulator::First,
                "$last" => Accumulator::Last,
                "$push" => Accumulator::Push,
                "$addToSet" => Accumulator::AddToSet,
                "$count" => Accumulator::Count,
                other => {
                    return Err(AggregateError::query(format!(
                        "unknown group operator '{other}'"
                    )));
                }
            };
            if accumulator == Accumulator::Count && expr.as_object().is_none_or(|m| !m.is_empty()) {
                return Err(AggregateError::query(
                    "$count takes no arguments, i.e. $count:{}",
                ));
            }
            if accumulator != Accumulator::Count && expr.is_array() {
                return Err(AggregateError::query(format!(
                    "The {name} accumulator is a unary operator"
                )));
            }
            accumulators.push((
                field.clone(),
                accumulator,
                Expr::parse(expr, limits.max_depth)?,
            ));
        }
        let key = key.ok_or_else(|| {
            AggregateError::query("Invalid parameter for query: group. Missing key _id")
        })?;
        Ok(Self { key, accumulators })
    }

    fn run(&self, docs: Vec<Map<String, Value>>) -> AggregateResult<Vec<Map<String, Value>>> {
        let mut index: BTreeMap<Key, usize> = BTreeMap::new();
        let mut groups: Vec<(Value, Vec<AccState>)> = Vec::new();
        for doc in &docs {
            let key = group_key(self.key.eval(doc)?.unwrap_or(Value::Null));
            let slot = match index.get(&Key(key.clone())) {
                Some(i) => *i,
                None => {
                    let states = self
                        .accumulators
                        .iter()
                        .map(|(_, a, _)| AccState::new(*a))
                        .collect();
                    groups.push((key.clone(), states));
                    index.insert(Key(key), groups.len() - 1);
                    groups.len() - 1
                }
            };
            for ((_, _, expr), state) in self.accumulators.iter().zip(groups[slot].1.iter_mut()) {
                state.add(expr.eval(doc)?);
            }
        }
        Ok(groups
            .into_iter()
            .map(|(key, states)| {
                let mut out = Map::new();
                // Parse's MongoDB adapter answers an empty key as null.
                let empty = match &key {
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    Value::Object(m) => m.is_empty(),
                    _ => false,
                };
                out.insert("objectId".to_owned(), if empty { Value::Null } else { key });
                for ((name, _, _), state) in self.accumulators.iter().zip(states) {
                    out.insert(name.clone(), state.finish());
                }
                out
            })
            .collect())
    }
}

/// Group keys hold a pointer as its objectId and a file as its name, as
/// both of Parse's layouts store them (so `_id: "$owner"` answers ids).
fn group_key(value: Value) -> Value {
    match value {
        Value::Object(m) => {
            let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            match field("__type").as_deref() {
                Some("Pointer") if field("objectId").is_some() => Value::from(field("objectId")),
                Some("File") if field("name").is_some() => Value::from(field("name")),
                Some(_) => Value::Object(m),
                None => Value::Object(m.into_iter().map(|(k, v)| (k, group_key(v))).collect()),
            }
        }
        other => other,
    }
}

fn keep_extreme(current: &mut Option<Value>, value: Option<Value>, wanted: Ordering) {
    if let Some(v) = value.filter(|v| !v.is_null())
        && current.as_ref().is_none_or(|c| cmp_values(&v, c) == wanted)
    {
        *current = Some(v);
    }
}

impl AccState {
    fn new(accumulator: Accumulator) -> Self {
        match accumulator {
            Accumulator::Sum => AccState::Sum(0.0),
            Accumulator::Avg => AccState::Avg(0.0, 0),
            Accumulator::Min => AccState::Min(None),
            Accumulator::Max => AccState::Max(None),
            Accumulator::First => AccState::First(None),
            Accumulator::Last => AccState::Last(Value::Null),
            Accumulator::Push => AccState::Push(Vec::new()),
            Accumulator::AddToSet => AccState::Set(BTreeSet::new(), Vec::new()),
            Accumulator::Count => AccState::Count(0),
        }
    }

    fn add(&mut self, value: Option<Value>) {
        match self {
            AccState::Sum(total) => *total += value.as_ref().and_then(Value::as_f64).unwrap_or(0.0),
            AccState::Avg(total, n) => {
                if let Some(x) = value.as_ref().and_then(Value::as_f64) {
                    *total += x;
                    *n += 1;
                }
            }
            AccState::Min(current) => keep_extreme(current, value, Ordering::Less),
            AccState::Max(current) => keep_extreme(current, value, Ordering::Greater),
            AccState::First(first) => {
                if first.is_none() {
                    *first = Some(value.unwrap_or(Value::Null));
                }
            }
            AccState::Last(last) => *last = value.unwrap_or(Value::Null),
            AccState::Push(items) => items.extend(value),
            AccState::Set(seen, items) => {
                if let Some(v) = value
                    && seen.insert(Key(v.clone()))
                {
                    items.push(v);
                }
            }
            AccState::Count(n) => *n += 1,
        }
    }

    fn finish(self) -> Value {
        match self {
            AccState::Sum(total) => num(total),
            AccState::Avg(_, 0) => Value::Null,
            AccState::Avg(total, n) => num(total / n as f64),
            AccState::Min(v) | AccState::Max(v) => v.unwrap_or(Value::Null),
            AccState::First(v) => v.unwrap_or(Value::Null),
            AccState::Last(v) => v,
            AccState::Push(items) | AccState::Set(_, items) => Value::Array(items),
            AccState::Count(n) => Value::from(n),
        }
    }
}

// ---------------------------------------------------------------------------
// $project.

#[derive(Debug, Clone)]
enum ProjNode {
    Keep,
    Drop,
    Set(Expr),
    Sub(Vec<(String, ProjNode)>),
}

#[derive(Debug, Clone)]
struct Projection {
    inclusion: bool,
    /// `objectId` (`_id`): kept unless excluded.
    keep_id: bool,
    tree: Vec<(String, ProjNode)>,
}

impl Projection {
    fn parse(value: &Value, limits: &Limits) -> AggregateResult<Self> {
        let Value::Object(spec) = value else {
            return Err(AggregateError::query(
                "$project specification must be an object",
            ));
        };
        let mut tree = Vec::new();
        let mut keep_id = None;
        add_projection(&mut tree, &mut keep_id, spec, &[], limits.max_depth)?;
        if tree.is_empty() && keep_id.is_none() {
            return Err(AggregateError::query(
                "projection specification must have at least one field",
            ));
        }
        let mut inclusion = None;
        check_mode(&tree, &mut inclusion, "")?;
        let inclusion = inclusion.unwrap_or(keep_id == Some(true));
        Ok(Self {
            inclusion,
            keep_id: keep_id.unwrap_or(true),
            tree,
        })
    }

    fn apply(&self, mut doc: Map<String, Value>) -> AggregateResult<Map<String, Value>> {
        if !self.inclusion {
            exclude(&mut doc, &self.tree);
            if !self.keep_id {
                doc.retain(|k, _| k != "objectId");
            }
            return Ok(doc);
        }
        let mut out = Map::new();
        if self.keep_id
            && let Some(id) = doc.get("objectId")
        {
            out.insert("objectId".to_owned(), id.clone());
        }
        include(&doc, &doc, &self.tree, &mut out)?;
        Ok(out)
    }
}

fn add_projection(
    tree: &mut Vec<(String, ProjNode)>,
    keep_id: &mut Option<bool>,
    spec: &Map<String, Value>,
    prefix: &[String],
    depth: usize,
) -> AggregateResult<()> {
    if depth == 0 {
        return Err(AggregateError::query("$project is nested too deeply"));
    }
    for (key, value) in spec {
        // Only the root takes Parse's aliases (`_id` and friends).
        let own = Path::parse(key)?.0;
        let mut path = prefix.to_vec();
        if prefix.is_empty() {
            path.extend(own);
        } else {
            path.extend(key.split('.').map(str::to_owned));
        }
        let node = match value {
            Value::Bool(b) => {
                if *b {
                    ProjNode::Keep
                } else {
                    ProjNode::Drop
                }
            }
            Value::Number(n) => {
                if n.as_f64().is_some_and(|f| f != 0.0) {
                    ProjNode::Keep
                } else {
                    ProjNode::Drop
                }
            }
            Value::Object(m) if !is_operator_object(value) => {
                if m.is_empty() {
                    return Err(AggregateError::query(
                        "an empty sub-projection is not a valid value",
                    ));
                }
                add_projection(tree, keep_id, m, &path, depth - 1)?;
                continue;
            }
            other => ProjNode::Set(Expr::parse(other, depth)?),
        };
        if path.len() == 1
            && path[0] == "objectId"
            && matches!(node, ProjNode::Keep | ProjNode::Drop)
        {
            *keep_id = Some(matches!(node, ProjNode::Keep));
            continue;
        }
        insert_projection(tree, &path, node)?;
    }
    Ok(())
}

fn insert_projection(
    tree: &mut Vec<(String, ProjNode)>,
    path: &[String],
    node: ProjNode,
) -> AggregateResult<()> {
    let collision = || AggregateError::query(format!("Path collision at {}", path.join(".")));
    let (head, rest) = path.split_first().ok_or_else(collision)?;
    let existing = tree.iter_mut().find(|(k, _)| k == head);
    match (existing, rest.is_empty()) {
        (None, true) => tree.push((head.clone(), node)),
        (None, false) => {
            let mut sub = Vec::new();
            insert_projection(&mut sub, rest, node)?;
            tree.push((head.clone(), ProjNode::Sub(sub)));
        }
        (Some((_, ProjNode::Sub(sub))), false) => insert_projection(sub, rest, node)?,
        _ => return Err(collision()),
    }
    Ok(())
}

/// MongoDB's rule: a projection includes or excludes, not both (`_id`
/// aside).
fn check_mode(
    tree: &[(String, ProjNode)],
    inclusion: &mut Option<bool>,
    prefix: &str,
) -> AggregateResult<()> {
    for (key, node) in tree {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let this = match node {
            ProjNode::Sub(sub) => {
                check_mode(sub, inclusion, &name)?;
                continue;
            }
            ProjNode::Drop => false,
            ProjNode::Keep | ProjNode::Set(_) => true,
        };
        match inclusion {
            Some(mode) if *mode != this => {
                return Err(AggregateError::query(if this {
                    format!("Cannot do inclusion on field {name} in exclusion projection")
                } else {
                    format!("Cannot do exclusion on field {name} in inclusion projection")
                }));
            }
            _ => *inclusion = Some(this),
        }
    }
    Ok(())
}

fn include(
    doc: &Map<String, Value>,
    root: &Map<String, Value>,
    tree: &[(String, ProjNode)],
    out: &mut Map<String, Value>,
) -> AggregateResult<()> {
    for (key, node) in tree {
        match node {
            ProjNode::Keep => {
                if let Some(v) = doc.get(key) {
                    out.insert(key.clone(), v.clone());
                }
            }
            ProjNode::Drop => {}
            ProjNode::Set(expr) => {
                if let Some(v) = expr.eval(root)? {
                    out.insert(key.clone(), v);
                }
            }
            ProjNode::Sub(sub) => match doc.get(key) {
                Some(Value::Object(m)) => {
                    let mut inner = Map::new();
                    include(m, root, sub, &mut inner)?;
                    out.insert(key.clone(), Value::Object(inner));
                }
                Some(Value::Array(items)) => {
                    let mut projected = Vec::new();
                    for item in items {
                        if let Value::Object(m) = item {
                            let mut inner = Map::new();
                            include(m, root, sub, &mut inner)?;
                            projected.push(Value::Object(inner));
                        }
                    }
                    out.insert(key.clone(), Value::Array(projected));
                }
                _ => {
                    // MongoDB makes the object for computed fields even
                    // when they come out missing.
                    let mut inner = Map::new();
                    include(&Map::new(), root, sub, &mut inner)?;
                    if !inner.is_empty() || computes(sub) {
                        out.insert(key.clone(), Value::Object(inner));
                    }
                }
            },
        }
    }
    Ok(())
}

fn computes(tree: &[(String, ProjNode)]) -> bool {
    tree.iter().any(|(_, node)| match node {
        ProjNode::Set(_) => true,
        ProjNode::Sub(sub) => computes(sub),
        ProjNode::Keep | ProjNode::Drop => false,
    })
}

fn exclude(doc: &mut Map<String, Value>, tree: &[(String, ProjNode)]) {
    for (key, node) in tree {
        match node {
            ProjNode::Drop => doc.retain(|k, _| k != key),
            ProjNode::Sub(sub) => match doc.get_mut(key) {
                Some(Value::Object(m)) => exclude(m, sub),
                Some(Value::Array(items)) => {
                    for item in items.iter_mut() {
                        if let Value::Object(m) = item {
                            exclude(m, sub);
                        }
                    }
                }
                _ => {}
            },
            ProjNode::Keep | ProjNode::Set(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// $sort and $unwind.

/// MongoDB sorts an array by its least element ascending and its greatest
/// descending; missing sorts as null.
fn sort_value(value: Option<Value>, descending: bool) -> Value {
    match value {
        Some(Value::Array(items)) => {
            let pick = if descending {
                items.into_iter().max_by(cmp_values)
            } else {
                items.into_iter().min_by(cmp_values)
            };
            pick.unwrap_or(Value::Null)
        }
        Some(v) => v,
        None => Value::Null,
    }
}

fn sort_docs(docs: Vec<Map<String, Value>>, keys: &[(Path, bool)]) -> Vec<Map<String, Value>> {
    let mut keyed: Vec<(Vec<Value>, Map<String, Value>)> = docs
        .into_iter()
        .map(|doc| {
            let values = keys
                .iter()
                .map(|(path, descending)| sort_value(path.resolve(&doc), *descending))
                .collect();
            (values, doc)
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        for ((x, y), (_, descending)) in a.iter().zip(b).zip(keys) {
            let o = cmp_values(x, y);
            if o != Ordering::Equal {
                return if *descending { o.reverse() } else { o };
            }
        }
        Ordering::Equal
    });
    keyed.into_iter().map(|(_, doc)| doc).collect()
}

#[derive(Debug, Clone)]
struct Unwind {
    path: Path,
    index_field: Option<Path>,
    preserve_empty: bool,
}

impl Unwind {
    fn parse(value: &Value) -> AggregateResult<Self> {
        let field_path = |v: &Value| -> AggregateResult<Path> {
            match v.as_str().and_then(|s| s.strip_prefix('$')) {
                Some(p) => Path::parse(p),
                None => Err(AggregateError::query(
                    "path option to $unwind stage should be prefixed with a '$'",
                )),
            }
        };
        match value {
            Value::String(_) => Ok(Self {
                path: field_path(value)?,
                index_field: None,
                preserve_empty: false,
            }),
            Value::Object(m) => {
                if let Some(k) = m.keys().find(|k| {
                    !matches!(
                        k.as_str(),
                        "path" | "includeArrayIndex" | "preserveNullAndEmptyArrays"
                    )
                }) {
                    return Err(AggregateError::query(format!(
                        "unrecognized option to $unwind stage: {k}"
                    )));
                }
                let path = field_path(m.get("path").unwrap_or(&Value::Null))?;
                let index_field = match m.get("includeArrayIndex") {
                    None => None,
                    Some(Value::String(s)) if !s.is_empty() && !s.starts_with('$') => {
                        Some(Path::parse(s)?)
                    }
                    Some(_) => {
                        return Err(AggregateError::query(
                            "includeArrayIndex option to $unwind stage should be a non-empty string not starting with '$'",
                        ));
                    }
                };
                let preserve_empty = match m.get("preserveNullAndEmptyArrays") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(AggregateError::query(
                            "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage",
                        ));
                    }
                };
                Ok(Self {
                    path,
                    index_field,
                    preserve_empty,
                })
            }
            _ => Err(AggregateError::query(
                "expected either a string or an object as specification for $unwind stage",
            )),
        }
    }

    fn run(
        &self,
        docs: Vec<Map<String, Value>>,
        max_documents: usize,
    ) -> AggregateResult<Vec<Map<String, Value>>> {
        let too_many = || {
            AggregateError::query(format!(
                "$unwind would produce more than {max_documents} documents"
            ))
        };
        let mut out = Vec::new();
        for doc in docs {
            let items = match self.path.get_plain(&doc) {
                Some(Value::Array(items)) if !items.is_empty() => items.clone(),
                Some(Value::Array(_)) | Some(Value::Null) | None => {
                    if self.preserve_empty {
                        let mut doc = doc;
                        // MongoDB drops an empty array but keeps a null.
                        if self.path.get_plain(&doc).is_some_and(Value::is_array) {
                            self.path.remove(&mut doc);
                        }
                        if let Some(index) = &self.index_field {
                            index.set(&mut doc, Value::Null);
                        }
                        out.push(doc);
                    }
                    continue;
                }
                Some(_) => {
                    let mut doc = doc;
                    if let Some(index) = &self.index_field {
                        index.set(&mut doc, Value::Null);
                    }
                    out.push(doc);
                    continue;
                }
            };
            if out.len() + items.len() > max_documents {
                return Err(too_many());
            }
            for (i, item) in items.into_iter().enumerate() {
                let mut copy = doc.clone();
                self.path.set(&mut copy, item);
                if let Some(index) = &self.index_field {
                    index.set(&mut copy, Value::from(i as u64));
                }
                out.push(copy);
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// distinct.

/// Parse's `distinct`: the distinct non-null values of `field` (dotted for
/// a nested key) among `objects`, arrays taken element by element, in
/// ascending order. As Parse Server on PostgreSQL answers: a pointer as a
/// Pointer, a top-level Date as its ISO string, a file as its name.
pub fn distinct(field: &str, objects: &[Object]) -> AggregateResult<Vec<Value>> {
    if !field.split('.').all(visible_key) {
        return Err(AggregateError::InvalidFieldName(field.to_owned()));
    }
    let path = Path(field.split('.').map(str::to_owned).collect());
    let nested = path.0.len() > 1;
    let mut seen: BTreeSet<Key> = BTreeSet::new();
    for object in objects {
        for leaf in path.leaves(object) {
            let values: Box<dyn Iterator<Item = &Value>> = match leaf {
                Value::Array(items) => Box::new(items.iter()),
                other => Box::new(std::iter::once(other)),
            };
            for value in values.filter(|v| !v.is_null()) {
                seen.insert(Key(distinct_value(value, nested)));
            }
        }
    }
    Ok(seen.into_iter().map(|k| k.0).collect())
}

fn distinct_value(value: &Value, nested: bool) -> Value {
    let Some(m) = value.as_object().filter(|_| !nested) else {
        return value.clone();
    };
    let field = |k: &str| m.get(k).and_then(Value::as_str);
    match field("__type") {
        Some("Date") if field("iso").is_some() => {
            let iso = field("iso").unwrap_or_default();
            Value::String(canonical_iso(iso).unwrap_or_else(|| iso.to_owned()))
        }
        Some("File") if field("name").is_some() => Value::from(field("name")),
        Some("Pointer") => {
            let mut pointer = Map::new();
            pointer.insert("__type".to_owned(), Value::from("Pointer"));
            pointer.insert(
                "className".to_owned(),
                m.get("className").cloned().unwrap_or_default(),
            );
            pointer.insert(
                "objectId".to_owned(),
                m.get("objectId").cloned().unwrap_or_default(),
            );
            Value::Object(pointer)
        }
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The kinds of error, named after the Parse codes the object layer
    /// answers them with.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Query,
        KeyName,
        Json,
    }

    const INVALID_QUERY: Kind = Kind::Query;
    const INVALID_KEY_NAME: Kind = Kind::KeyName;
    const INVALID_JSON: Kind = Kind::Json;

    impl AggregateError {
        fn code(&self) -> Kind {
            match self {
                AggregateError::InvalidQuery(_) => Kind::Query,
                AggregateError::InvalidFieldName(_) => Kind::KeyName,
                AggregateError::InvalidWhereJson => Kind::Json,
            }
        }
    }

    fn obj(value: Value) -> Object {
        match value {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn params(value: Value) -> Map<String, Value> {
        obj(value)
    }

    /// Parse's spec data (`loadTestData`), as the store returns it.
    fn spec_objects() -> Vec<Object> {
        let rows = [
            ("o1", 10, "foo", "A", 900, json!(["S", "M"])),
            ("o2", 10, "foo", "A", 800, json!(["M", "L"])),
            ("o3", 10, "bar", "B", 700, json!(["S"])),
            ("o4", 20, "dpl", "B", 700, json!(["S"])),
        ];
        rows.into_iter()
            .enumerate()
            .map(|(i, (id, score, name, group, views, size))| {
                obj(json!({
                    "objectId": id,
                    "createdAt": format!("2024-03-0{}T10:00:00.000Z", i + 1),
                    "updatedAt": format!("2024-03-0{}T11:30:00.000Z", i + 1),
                    "score": score,
                    "name": name,
                    "sender": {"group": group},
                    "views": views,
                    "size": size,
                    "ACL": {"*": {"read": true}},
                }))
            })
            .collect()
    }

    fn pipeline(stages: Value) -> Pipeline {
        let Value::Array(stages) = stages else {
            panic!("stages must be an array")
        };
        Pipeline::parse(&stages).expect("pipeline parses")
    }

    fn run(stages: Value, objects: Vec<Object>) -> Vec<Value> {
        pipeline(stages)
            .run(objects)
            .expect("pipeline runs")
            .into_iter()
            .map(Value::Object)
            .collect()
    }

    fn request_error(p: Value) -> AggregateError {
        AggregateRequest::parse(&params(p)).expect_err("request is rejected")
    }

    fn run_error(stages: Value) -> AggregateError {
        let Value::Array(stages) = stages else {
            panic!("stages must be an array")
        };
        match Pipeline::parse(&stages) {
            Err(e) => e,
            Ok(p) => p.run(spec_objects()).expect_err("pipeline fails"),
        }
    }

    fn ids(results: &[Value]) -> Vec<Value> {
        results.iter().map(|r| r["objectId"].clone()).collect()
    }

    fn sorted_ids(results: &[Value]) -> Vec<Value> {
        let mut ids = ids(results);
        ids.sort_by(cmp_values);
        ids
    }

    // --- request parsing -------------------------------------------------

    #[test]
    fn a_pipeline_comes_as_an_array_an_object_or_top_level_stages() {
        let forms = [
            json!({"pipeline": [{"$group": {"_id": "$name"}}]}),
            json!({"pipeline": {"$group": {"_id": "$name"}}}),
            json!({"$group": {"_id": "$name"}}),
            // As query parameters carry them: JSON text.
            json!({"pipeline": "[{\"$group\":{\"_id\":\"$name\"}}]"}),
            json!({"$group": "{\"_id\":\"$name\"}"}),
        ];
        for form in forms {
            let request = AggregateRequest::parse(&params(form.clone())).expect("parses");
            let AggregateKind::Pipeline(p) = request.kind else {
                panic!("{form}: not a pipeline")
            };
            assert_eq!(p.stages.len(), 1, "{form}");
            assert!(matches!(p.stages[0].kind, StageKind::Group(_)), "{form}");
            assert_eq!(p.run(spec_objects()).expect("runs").len(), 3, "{form}");
        }
    }

    #[test]
    fn parse_checks_stage_names_as_parse_server_9_does() {
        let cases = [
            (
                json!({"group": {"_id": null}}),
                "Invalid aggregate stage 'group'.",
            ),
            (json!({"unknown": {}}), "Invalid aggregate stage 'unknown'."),
            (
                json!({"$group": {"objectId": "$name"}}),
                "Cannot use 'objectId' in aggregation stage $group.",
            ),
            (
                json!({"$group": {}}),
                "Invalid parameter for query: group. Missing key _id",
            ),
            (
                json!({"pipeline": [{"$match": {}, "$sort": {"a": 1}}]}),
                "Pipeline stages should only have one key but found $match, $sort.",
            ),
            (
                json!({"pipeline": [5]}),
                "Pipeline stages should only have one key but found .",
            ),
            (
                json!({"$lookup": {}}),
                "Unrecognized pipeline stage name: '$lookup'",
            ),
            (json!({"$limit": 0}), "the limit must be positive"),
            (
                json!({"$skip": -1}),
                "invalid argument to $skip stage: expected a non-negative integer",
            ),
            (
                json!({"$sort": {"a": 2}}),
                "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
            ),
            (
                json!({"$count": ""}),
                "the count field must be a non-empty string",
            ),
            // Parse fails a pipeline with a `where` key among the stages.
            (
                json!({"where": {"a": 1}, "$limit": 1}),
                "Invalid aggregate stage 'where'.",
            ),
            (
                json!({"pipeline": [{"distinct": "a"}]}),
                "Invalid aggregate stage 'distinct'.",
            ),
        ];
        for (request, message) in cases {
            let e = request_error(request.clone());
            assert_eq!(e.code(), INVALID_QUERY, "{request}");
            assert_eq!(e.to_string(), message, "{request}");
        }
    }

    #[test]
    fn the_pipeline_length_is_bounded() {
        let stages: Vec<Value> = (0..33).map(|_| json!({"$skip": 0})).collect();
        let e = request_error(json!({ "pipeline": stages }));
        assert_eq!(e.code(), INVALID_QUERY);
        let stages: Vec<Value> = (0..32).map(|_| json!({"$skip": 0})).collect();
        assert!(AggregateRequest::parse(&params(json!({ "pipeline": stages }))).is_ok());
    }

    #[test]
    fn distinct_takes_the_field_and_where_and_still_checks_stage_names() {
        let request = AggregateRequest::parse(&params(json!({
            "distinct": "score",
            "where": "{\"name\":\"bar\"}",
            "hint": "score_1",
            "_method": "GET",
        })))
        .expect("parses");
        let AggregateKind::Distinct {
            field,
            where_clause,
        } = request.kind
        else {
            panic!("not distinct")
        };
        assert_eq!(field, "score");
        assert_eq!(Value::Object(where_clause), json!({"name": "bar"}));

        // The adapter's options are accepted and ignored; a `rawValues`
        // that is not a boolean is a stage name like any other key.
        let request = AggregateRequest::parse(&params(json!({
            "$limit": 1,
            "hint": "score_1",
            "explain": true,
            "comment": "c",
            "readPreference": "PRIMARY",
            "rawValues": true,
            "rawFieldNames": false,
        })))
        .expect("parses");
        let AggregateKind::Pipeline(p) = request.kind else {
            panic!("not a pipeline")
        };
        assert_eq!(p.stages.len(), 1);
        let e = request_error(json!({"$limit": 1, "rawValues": 1}));
        assert_eq!(e.to_string(), "Invalid aggregate stage 'rawValues'.");

        // A number, as a query parameter decodes it, is a name all the same.
        let request = AggregateRequest::parse(&params(json!({"distinct": 7}))).expect("parses");
        assert!(matches!(request.kind, AggregateKind::Distinct { field, .. } if field == "7"));

        let e = request_error(json!({"distinct": "score", "where": "{nope"}));
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (INVALID_JSON, "where parameter is not valid JSON")
        );
        let e = request_error(json!({"distinct": "score", "other": 1}));
        assert_eq!(e.to_string(), "Invalid aggregate stage 'other'.");
        // An empty distinct is no distinct: the key is then a bad stage.
        let e = request_error(json!({"distinct": ""}));
        assert_eq!(e.code(), INVALID_QUERY);
    }

    #[test]
    fn a_match_parse_cannot_evaluate_fails_when_run_and_can_be_split_off() {
        let stages = json!([
            {"$match": {"owner": {"$inQuery": {"where": {}, "className": "_User"}}}},
            {"$match": {"score": {"$gt": 5}}},
            {"$group": {"_id": null, "n": {"$sum": 1}}},
        ]);
        let p = pipeline(stages);
        let e = p
            .clone()
            .run(spec_objects())
            .expect_err("$inQuery is not evaluated here");
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (INVALID_QUERY, "unknown operator: $inQuery")
        );
        let (matches, rest) = p.split_leading_matches();
        assert_eq!(matches.len(), 2);
        assert_eq!(
            Value::Object(matches[1].clone()),
            json!({"score": {"$gt": 5}})
        );
        assert_eq!(rest.stages.len(), 1);
        let results = rest.run(spec_objects()).expect("runs");
        assert_eq!(
            Value::Object(results[0].clone()),
            json!({"objectId": null, "n": 4})
        );
    }

    // --- $group ------------------------------------------------------------

    #[test]
    fn group_by_field_answers_the_key_as_object_id() {
        let results = run(json!([{"$group": {"_id": "$name"}}]), spec_objects());
        assert_eq!(
            results,
            vec![
                json!({"objectId": "foo"}),
                json!({"objectId": "bar"}),
                json!({"objectId": "dpl"})
            ]
        );
        let results = run(json!([{"$group": {"_id": "$score"}}]), spec_objects());
        assert_eq!(sorted_ids(&results), vec![json!(10), json!(20)]);
    }

    #[test]
    fn group_accumulators_follow_parse_spec_numbers() {
        let results = run(
            json!([{"$group": {
                "_id": null,
                "total": {"$sum": "$score"},
                "count": {"$sum": 1},
                "minScore": {"$min": "$score"},
                "maxScore": {"$max": "$score"},
                "avgScore": {"$avg": "$score"},
                "avgViews": {"$avg": "$views"},
            }}]),
            spec_objects(),
        );
        assert_eq!(
            results,
            vec![
                json!({"objectId": null, "total": 50, "count": 4, "minScore": 10, "maxScore": 20, "avgScore": 12.5, "avgViews": 775})
            ]
        );
        // Whole results print as integers, as JavaScript prints them.
        assert_eq!(
            serde_json::to_string(&results[0]["avgViews"]).expect("json"),
            "775"
        );
    }

    #[test]
    fn group_collect_first_last_and_count() {
        let results = run(
            json!([{"$group": {
                "_id": "$sender.group",
                "names": {"$push": "$name"},
                "distinctNames": {"$addToSet": "$name"},
                "sizes": {"$addToSet": "$size"},
                "first": {"$first": "$views"},
                "last": {"$last": "$views"},
                "n": {"$count": {}},
                "missing": {"$push": "$nothing"},
            }}]),
            spec_objects(),
        );
        assert_eq!(
            results,
            vec![
                json!({"objectId": "A", "names": ["foo", "foo"], "distinctNames": ["foo"], "sizes": [["S", "M"], ["M", "L"]], "first": 900, "last": 800, "n": 2, "missing": []}),
                json!({"objectId": "B", "names": ["bar", "dpl"], "distinctNames": ["bar", "dpl"], "sizes": [["S"]], "first": 700, "last": 700, "n": 2, "missing": []}),
            ]
        );
    }

    #[test]
    fn empty_group_keys_answer_null() {
        for key in [json!({}), json!(""), json!([])] {
            let results = run(json!([{"$group": {"_id": key}}]), spec_objects());
            assert_eq!(results, vec![json!({"objectId": null})], "{key}");
        }
    }

    #[test]
    fn group_by_multiple_columns() {
        let mut objects = spec_objects();
        for id in ["e1", "e2", "e3"] {
            objects.push(obj(
                json!({"objectId": id, "createdAt": "2024-03-09T00:00:00.000Z"}),
            ));
        }
        let results = run(
            json!([{"$group": {"_id": {"score": "$score", "views": "$views"}, "count": {"$sum": 1}}}]),
            objects,
        );
        assert_eq!(results.len(), 5);
        assert!(results.contains(&json!({"objectId": {"score": 10, "views": 900}, "count": 1})));
        assert!(results.contains(&json!({"objectId": null, "count": 3})));
    }

    #[test]
    fn group_by_date_parts_of_created_and_updated_at_under_any_name() {
        for (day, month, year) in [
            ("$_updated_at", "$_created_at", "$_created_at"),
            ("$updatedAt", "$createdAt", "$createdAt"),
        ] {
            let results = run(
                json!([{"$group": {
                    "_id": {"day": {"$dayOfMonth": day}, "month": {"$month": month}, "year": {"$year": year}},
                    "count": {"$sum": 1},
                }}]),
                spec_objects(),
            );
            assert_eq!(results.len(), 4);
            assert_eq!(
                results[0],
                json!({"objectId": {"day": 1, "month": 3, "year": 2024}, "count": 1})
            );
        }
    }

    #[test]
    fn date_parts_follow_mongodb() {
        // 2023-01-01 was a Sunday; 2024-12-30 a Monday in ISO week 1 of 2025.
        let objects = vec![
            obj(
                json!({"objectId": "a", "d": {"__type": "Date", "iso": "2023-01-01T23:59:58.250Z"}}),
            ),
            obj(
                json!({"objectId": "b", "d": {"__type": "Date", "iso": "2024-12-30T00:00:00.000Z"}}),
            ),
            obj(json!({"objectId": "c"})),
        ];
        let results = run(
            json!([{"$project": {
                "dow": {"$dayOfWeek": "$d"},
                "week": {"$week": "$d"},
                "isoWeek": {"$isoWeek": "$d"},
                "isoWeekYear": {"$isoWeekYear": "$d"},
                "isoDow": {"$isoDayOfWeek": "$d"},
                "doy": {"$dayOfYear": "$d"},
                "sec": {"$second": "$d"},
                "ms": {"$millisecond": "$d"},
                "hourThere": {"$hour": {"date": "$d", "timezone": "+05:30"}},
                "dayThere": {"$dayOfMonth": {"date": "$d", "timezone": "+0100"}},
            }}]),
            objects,
        );
        assert_eq!(
            results,
            vec![
                json!({"objectId": "a", "dow": 1, "week": 1, "isoWeek": 52, "isoWeekYear": 2022, "isoDow": 7, "doy": 1, "sec": 58, "ms": 250, "hourThere": 5, "dayThere": 2}),
                json!({"objectId": "b", "dow": 2, "week": 52, "isoWeek": 1, "isoWeekYear": 2025, "isoDow": 1, "doy": 365, "sec": 0, "ms": 0, "hourThere": 5, "dayThere": 30}),
                // A missing date gives null, which Parse leaves out.
                json!({"objectId": "c"}),
            ]
        );
        let e = run_error(json!([{"$project": {"y": {"$year": "$name"}}}]));
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (INVALID_QUERY, "can't convert from BSON type string to Date")
        );
        let e = run_error(
            json!([{"$project": {"y": {"$year": {"date": "$createdAt", "timezone": "Europe/Paris"}}}}]),
        );
        assert_eq!(e.code(), INVALID_QUERY);
    }

    #[test]
    fn group_by_pointer_answers_object_ids() {
        let pointer =
            |id: &str| json!({"__type": "Pointer", "className": "PointerObject", "objectId": id});
        let objects = vec![
            obj(json!({"objectId": "a", "pointer": pointer("p1")})),
            obj(json!({"objectId": "b", "pointer": pointer("p2")})),
            obj(json!({"objectId": "c", "pointer": pointer("p1")})),
            obj(json!({"objectId": "d"})),
        ];
        for key in ["$pointer", "$_p_pointer"] {
            let results = run(
                json!([{"$group": {"_id": key, "n": {"$sum": 1}}}]),
                objects.clone(),
            );
            assert_eq!(
                results,
                vec![
                    json!({"objectId": "p1", "n": 2}),
                    json!({"objectId": "p2", "n": 1}),
                    json!({"objectId": null, "n": 1}),
                ]
            );
        }
    }

    #[test]
    fn a_date_group_key_and_accumulated_dates_come_back_as_parse_dates() {
        let results = run(
            json!([{"$group": {"_id": "$createdAt", "latest": {"$max": "$updatedAt"}, "createdAt": {"$min": "$createdAt"}}}, {"$limit": 1}]),
            spec_objects(),
        );
        assert_eq!(
            results,
            vec![json!({
                "objectId": {"__type": "Date", "iso": "2024-03-01T10:00:00.000Z"},
                "latest": {"__type": "Date", "iso": "2024-03-01T11:30:00.000Z"},
                "createdAt": "2024-03-01T10:00:00.000Z",
            })]
        );
    }

    #[test]
    fn group_errors() {
        let cases = [
            json!([{"$group": {"_id": null, "x": {"$median": "$a"}}}]),
            json!([{"$group": {"_id": null, "x": "$a"}}]),
            json!([{"$group": {"_id": null, "a.b": {"$sum": 1}}}]),
            json!([{"$group": {"_id": null, "x": {"$sum": ["$a", "$b"]}}}]),
            json!([{"$group": {"_id": {"$foo": "$a"}}}]),
            json!([{"$group": {"_id": "$$NOW"}}]),
        ];
        for stages in cases {
            assert_eq!(run_error(stages.clone()).code(), INVALID_QUERY, "{stages}");
        }
        let e = run_error(json!([{"$group": {"_id": "$a..b"}}]));
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            (INVALID_KEY_NAME, "Invalid field name: a..b")
        );
    }

    #[test]
    fn group_over_nothing_gives_nothing() {
        assert_eq!(
            run(
                json!([{"$group": {"_id": null, "n": {"$sum": 1}}}]),
                Vec::new()
            ),
            Vec::<Value>::new()
        );
    }

    // --- $project ----------------------------------------------------------

    #[test]
    fn project_includes_keeping_object_id() {
        let results = run(
            json!([{"$project": {"name": 1, "sender.group": true}}]),
            spec_objects(),
        );
        assert_eq!(
            results[0],
            json!({"objectId": "o1", "name": "foo", "sender": {"group": "A"}})
        );
        let results = run(
            json!([{"$project": {"_id": 0, "updatedAt": 1}}]),
            spec_objects(),
        );
        assert_eq!(results[0], json!({"updatedAt": "2024-03-01T11:30:00.000Z"}));
        let results = run(json!([{"$project": {"objectId": 1}}]), spec_objects());
        assert_eq!(results[0], json!({"objectId": "o1"}));
    }

    #[test]
    fn project_excludes() {
        let results = run(
            json!([{"$project": {"size": 0, "sender": 0, "views": false, "createdAt": 0, "updatedAt": 0}}]),
            spec_objects(),
        );
        assert_eq!(
            results[0],
            json!({"objectId": "o1", "score": 10, "name": "foo"})
        );
        let results = run(
            json!([{"$project": {"_id": 0}}, {"$limit": 1}]),
            spec_objects(),
        );
        assert!(results[0].get("objectId").is_none());
        assert_eq!(results[0]["name"], json!("foo"));
    }

    #[test]
    fn project_computes_and_renames() {
        let objects = vec![
            obj(json!({"objectId": "a", "name": "item a", "quantity": 2, "price": 10})),
            obj(json!({"objectId": "b", "name": "item b", "quantity": 5, "price": 5})),
            obj(json!({"objectId": "c", "name": "no quantity"})),
        ];
        // Parse's "project without objectId transform".
        let results = run(
            json!([
                {"$match": {"quantity": {"$exists": true}}},
                {"$project": {"_id": 0, "total": {"$multiply": ["$quantity", "$price"]}}},
                {"$sort": {"total": 1}},
            ]),
            objects.clone(),
        );
        assert_eq!(results, vec![json!({"total": 20}), json!({"total": 25})]);
        let results = run(
            json!([{"$project": {
                "title": "$name",
                "label": {"$concat": ["$name", "!"]},
                "upper": {"$toUpper": "$name"},
                "half": {"$divide": ["$price", 4]},
                "sum": {"$add": ["$price", "$quantity", 1]},
                "left": {"$subtract": ["$price", "$quantity"]},
                "odd": {"$mod": ["$quantity", 2]},
                "fallback": {"$ifNull": ["$quantity", 0]},
                "const": {"$literal": "$name"},
                "nested.value": "$price",
            }}]),
            objects,
        );
        assert_eq!(
            results[0],
            json!({"objectId": "a", "title": "item a", "label": "item a!", "upper": "ITEM A", "half": 2.5, "sum": 13, "left": 8, "odd": 0, "fallback": 2, "const": "$name", "nested": {"value": 10}})
        );
        // Missing operands give null, which Parse leaves out.
        assert_eq!(
            results[2],
            json!({"objectId": "c", "title": "no quantity", "label": "no quantity!", "upper": "NO QUANTITY", "fallback": 0, "const": "$name", "nested": {}})
        );
        // Parse's "group and multiply transform".
        let results = run(
            json!([{"$group": {"_id": null, "total": {"$sum": {"$multiply": ["$quantity", "$price"]}}}}]),
            vec![
                obj(json!({"objectId": "a", "quantity": 2, "price": 10})),
                obj(json!({"objectId": "b", "quantity": 5, "price": 5})),
            ],
        );
        assert_eq!(results, vec![json!({"objectId": null, "total": 45})]);
    }

    #[test]
    fn project_errors() {
        let cases = [
            (
                json!([{"$project": {}}]),
                "projection specification must have at least one field",
            ),
            (
                json!([{"$project": {"a": 1, "b": 0}}]),
                "Cannot do exclusion on field b in inclusion projection",
            ),
            (
                json!([{"$project": {"a": 0, "b": "$c"}}]),
                "Cannot do inclusion on field b in exclusion projection",
            ),
            (
                json!([{"$project": {"a": 1, "a.b": 1}}]),
                "Path collision at a.b",
            ),
            (
                json!([{"$project": {"x": {"$foo": 1}}}]),
                "Unrecognized expression '$foo'",
            ),
            (
                json!([{"$project": {"x": {"$divide": ["$score", 0]}}}]),
                "can't $divide by zero",
            ),
            (
                json!([{"$project": {"x": {"$multiply": ["$name", 2]}}}]),
                "$multiply only supports numeric types, not string",
            ),
            (
                json!([{"$project": {"x": {"$subtract": ["$score"]}}}]),
                "Expression $subtract takes exactly 2 arguments. 1 were passed in.",
            ),
            (
                json!([{"$project": "name"}]),
                "$project specification must be an object",
            ),
        ];
        for (stages, message) in cases {
            let e = run_error(stages.clone());
            assert_eq!(
                (e.code(), e.to_string().as_str()),
                (INVALID_QUERY, message),
                "{stages}"
            );
        }
    }

    // --- $match ------------------------------------------------------------

    #[test]
    fn match_compares_as_parse_spec_expects() {
        let cases = [
            (json!({"score": {"$gt": 15}}), vec!["o4"]),
            (
                json!({"score": {"$gt": 5, "$lt": 15}}),
                vec!["o1", "o2", "o3"],
            ),
            (
                json!({"score": {"$gt": 5, "$lt": 15}, "views": {"$gt": 850, "$lt": 1000}}),
                vec!["o1"],
            ),
            (
                json!({"score": {"$gt": 5, "$lt": 15}, "views": 900}),
                vec!["o1"],
            ),
            (
                json!({"$or": [{"score": {"$gt": 15, "$lt": 25}}, {"views": {"$gt": 750, "$lt": 850}}]}),
                vec!["o2", "o4"],
            ),
            (
                json!({"$and": [{"score": 10}, {"name": {"$ne": "foo"}}]}),
                vec!["o3"],
            ),
            (json!({"$nor": [{"score": 10}]}), vec!["o4"]),
            (json!({"_id": "o2"}), vec!["o2"]),
            (json!({"objectId": {"$in": ["o2", "o3"]}}), vec!["o2", "o3"]),
            (json!({"name": {"$nin": ["foo", "bar"]}}), vec!["o4"]),
            (json!({"size": "M"}), vec!["o1", "o2"]),
            (json!({"size": ["S"]}), vec!["o3", "o4"]),
            (json!({"size": {"$all": ["S", "M"]}}), vec!["o1"]),
            (json!({"size": {"$size": 2}}), vec!["o1", "o2"]),
            (json!({"sender.group": "B"}), vec!["o3", "o4"]),
            (
                json!({"name": {"$regex": "^\\Qf\\E", "$options": "i"}}),
                vec!["o1", "o2"],
            ),
            (json!({"name": {"$not": {"$regex": "o"}}}), vec!["o3", "o4"]),
            (
                json!({"score": {"$exists": true}}),
                vec!["o1", "o2", "o3", "o4"],
            ),
            (
                json!({"nothing": {"$exists": false}, "score": {"$gte": 20}}),
                vec!["o4"],
            ),
            (json!({"score": {"$gt": "5"}}), vec![]),
            (
                json!({"createdAt": {"$gte": "2024-03-03T00:00:00.000Z"}}),
                vec!["o3", "o4"],
            ),
            (
                json!({"createdAt": {"$lt": {"__type": "Date", "iso": "2024-03-02T10:00:00Z"}}}),
                vec!["o1"],
            ),
            (
                json!({"_created_at": "2024-03-02T10:00:00.000Z"}),
                vec!["o2"],
            ),
            (json!({"updatedAt": {"$gte": "2024-03-04"}}), vec!["o4"]),
            (json!({"createdAt": "2099-01-01T00:00:00.000Z"}), vec![]),
        ];
        for (filter, expected) in cases {
            let results = run(json!([{ "$match": filter }]), spec_objects());
            let expected: Vec<Value> = expected.into_iter().map(Value::from).collect();
            assert_eq!(ids(&results), expected, "{filter}");
        }
    }

    #[test]
    fn match_nulls_pointers_and_dates() {
        let pointer =
            |id: &str| json!({"__type": "Pointer", "className": "PointerObject", "objectId": id});
        let objects = vec![
            obj(
                json!({"objectId": "a", "language": "en", "pointer": pointer("p1"), "when": {"__type": "Date", "iso": "2024-01-01T00:00:00Z"}}),
            ),
            obj(json!({"objectId": "b", "language": null, "pointer": pointer("p2")})),
            obj(
                json!({"objectId": "c", "when": {"__type": "Date", "iso": "2024-06-01T00:00:00.000Z"}}),
            ),
            obj(json!({"objectId": "d", "language": "pt"})),
        ];
        let cases = [
            (
                json!({"language": {"$in": [null, "en"]}}),
                vec!["a", "b", "c"],
            ),
            (
                json!({"$or": [{"language": "en"}, {"language": null}]}),
                vec!["a", "b", "c"],
            ),
            (json!({"language": {"$ne": null}}), vec!["a", "d"]),
            (json!({"pointer": "p1"}), vec!["a"]),
            (json!({"_p_pointer": "PointerObject$p2"}), vec!["b"]),
            (json!({"pointer": pointer("p2")}), vec!["b"]),
            (json!({"pointer": {"$exists": true}}), vec!["a", "b"]),
            (json!({"pointer": {"$in": ["p1", "p2"]}}), vec!["a", "b"]),
            (
                json!({"when": {"$lt": "2024-03-01T00:00:00.000Z"}}),
                vec!["a"],
            ),
            (
                json!({"when": {"$gte": {"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"}}}),
                vec!["a", "c"],
            ),
            (json!({"when": "2024-06-01T00:00:00Z"}), vec!["c"]),
        ];
        for (filter, expected) in cases {
            let results = run(json!([{ "$match": filter }]), objects.clone());
            let expected: Vec<Value> = expected.into_iter().map(Value::from).collect();
            assert_eq!(ids(&results), expected, "{filter}");
        }
        // The matched objects keep their pointers as Parse returns them.
        let results = run(json!([{"$match": {"pointer": "p1"}}]), objects);
        assert_eq!(results[0]["pointer"], pointer("p1"));
    }

    #[test]
    fn match_after_group_sees_the_group_key_as_id() {
        let results = run(
            json!([
                {"$group": {"_id": "$score", "n": {"$sum": 1}}},
                {"$match": {"_id": {"$gte": 15}}},
            ]),
            spec_objects(),
        );
        assert_eq!(results, vec![json!({"objectId": 20, "n": 1})]);
        let results = run(
            json!([{"$group": {"_id": "$name", "n": {"$sum": 1}}}, {"$match": {"n": {"$gt": 1}}}]),
            spec_objects(),
        );
        assert_eq!(results, vec![json!({"objectId": "foo", "n": 2})]);
    }

    #[test]
    fn match_errors() {
        let cases = [
            (
                json!([{"$match": {"a": {"$near": [1, 2]}}}]),
                "unknown operator: $near",
            ),
            (
                json!([{"$match": {"$where": "true"}}]),
                "unknown top level operator: $where",
            ),
            (
                json!([{"$match": {"$or": []}}]),
                "$or must be a nonempty array",
            ),
            (
                json!([{"$match": {"$and": [1]}}]),
                "$and entries need to be full objects",
            ),
            (json!([{"$match": {"a": {"$in": 1}}}]), "$in needs an array"),
            (json!([{"$match": {"a": {"$regex": "("}}}]), ""),
            (
                json!([{"$match": 5}]),
                "the match filter must be an expression in an object",
            ),
        ];
        for (stages, message) in cases {
            let e = run_error(stages.clone());
            assert_eq!(e.code(), INVALID_QUERY, "{stages}");
            if !message.is_empty() {
                assert_eq!(e.to_string(), message, "{stages}");
            }
        }
        let mut deep = json!({"a": 1});
        for _ in 0..40 {
            deep = json!({ "$or": [deep] });
        }
        assert_eq!(run_error(json!([{ "$match": deep }])).code(), INVALID_QUERY);
    }

    // --- $sort, $limit, $skip, $count, $unwind -----------------------------

    #[test]
    fn sort_limit_skip_and_count() {
        let names = |results: &[Value]| {
            results
                .iter()
                .map(|r| r["name"].clone())
                .collect::<Vec<_>>()
        };
        let results = run(json!([{"$sort": {"name": 1}}]), spec_objects());
        assert_eq!(
            names(&results),
            vec![json!("bar"), json!("dpl"), json!("foo"), json!("foo")]
        );
        let results = run(json!([{"$sort": {"name": -1}}]), spec_objects());
        assert_eq!(
            names(&results),
            vec![json!("foo"), json!("foo"), json!("dpl"), json!("bar")]
        );
        let results = run(
            json!([{"$sort": {"score": -1, "views": 1}}]),
            spec_objects(),
        );
        assert_eq!(
            ids(&results),
            vec![json!("o4"), json!("o3"), json!("o2"), json!("o1")]
        );
        let results = run(
            json!([{"$sort": {"_created_at": -1}}, {"$skip": 1}, {"$limit": 2}]),
            spec_objects(),
        );
        assert_eq!(ids(&results), vec![json!("o3"), json!("o2")]);
        assert_eq!(run(json!([{"$limit": 2}]), spec_objects()).len(), 2);
        assert_eq!(run(json!([{"$skip": 2}]), spec_objects()).len(), 2);
        assert_eq!(run(json!([{"$skip": 9}]), spec_objects()).len(), 0);
        assert_eq!(
            run(
                json!([{"$match": {"score": 10}}, {"$count": "total"}]),
                spec_objects()
            ),
            vec![json!({"total": 3})]
        );
        assert_eq!(
            run(
                json!([{"$match": {"score": 99}}, {"$count": "total"}]),
                spec_objects()
            ),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn sort_follows_mongodb_type_order() {
        let values = [
            json!({"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"}),
            json!(true),
            json!([3, 1]),
            json!({"k": 1}),
            json!("b"),
            json!({"__type": "Pointer", "className": "C", "objectId": "a"}),
            json!(2.5),
            json!(-1),
            Value::Null,
        ];
        let mut objects: Vec<Object> = values
            .iter()
            .enumerate()
            .map(|(i, v)| obj(json!({"objectId": format!("{i}"), "v": v})))
            .collect();
        objects.push(obj(json!({"objectId": "missing"})));
        let results = run(json!([{"$sort": {"v": 1}}]), objects);
        // Null and missing, numbers (the array sorts by its least element),
        // strings (a pointer by its objectId), objects, booleans, dates.
        assert_eq!(
            ids(&results),
            ["8", "missing", "7", "2", "6", "5", "4", "3", "1", "0"]
                .map(Value::from)
                .to_vec()
        );
    }

    #[test]
    fn unwind_as_a_path_or_with_options() {
        let mut objects = spec_objects();
        objects.truncate(2);
        objects.push(obj(json!({"objectId": "e", "size": []})));
        objects.push(obj(json!({"objectId": "f", "size": "XL"})));
        objects.push(obj(json!({"objectId": "g"})));
        let results = run(
            json!([{"$unwind": "$size"}, {"$project": {"size": 1}}]),
            objects.clone(),
        );
        assert_eq!(
            results,
            vec![
                json!({"objectId": "o1", "size": "S"}),
                json!({"objectId": "o1", "size": "M"}),
                json!({"objectId": "o2", "size": "M"}),
                json!({"objectId": "o2", "size": "L"}),
                json!({"objectId": "f", "size": "XL"}),
            ]
        );
        let results = run(
            json!([
                {"$unwind": {"path": "$size", "includeArrayIndex": "i", "preserveNullAndEmptyArrays": true}},
                {"$project": {"size": 1, "i": 1}},
            ]),
            objects,
        );
        assert_eq!(results.len(), 7);
        assert_eq!(results[1], json!({"objectId": "o1", "size": "M", "i": 1}));
        assert_eq!(results[4], json!({"objectId": "e"}));
        assert_eq!(results[6], json!({"objectId": "g"}));
        // Parse's README example: count each size.
        let results = run(
            json!([{"$unwind": "$size"}, {"$group": {"_id": "$size", "n": {"$sum": 1}}}, {"$sort": {"n": -1, "_id": 1}}]),
            spec_objects(),
        );
        assert_eq!(
            results,
            vec![
                json!({"objectId": "S", "n": 3}),
                json!({"objectId": "M", "n": 2}),
                json!({"objectId": "L", "n": 1})
            ]
        );
        for bad in [
            json!("size"),
            json!({"path": "$size", "x": 1}),
            json!({"path": "$a", "includeArrayIndex": "$i"}),
            json!(3),
        ] {
            assert_eq!(
                run_error(json!([{ "$unwind": bad }])).code(),
                INVALID_QUERY,
                "{bad}"
            );
        }
    }

    #[test]
    fn unwind_output_is_bounded() {
        let items: Vec<Value> = (0..50).map(Value::from).collect();
        let objects: Vec<Object> = (0..10)
            .map(|i| obj(json!({"objectId": format!("{i}"), "a": items})))
            .collect();
        let mut p = pipeline(json!([{"$unwind": "$a"}, {"$unwind": "$a"}]));
        p.limits.max_documents = 100;
        assert_eq!(p.run(objects).expect_err("too many").code(), INVALID_QUERY);
    }

    // --- composed pipelines and result shape -------------------------------

    #[test]
    fn composed_pipelines() {
        // Parse's "project with group query": stages as top-level keys run
        // in the order given.
        let request = AggregateRequest::parse(&params(json!({
            "$project": {"score": 1},
            "$group": {"_id": "$score", "score": {"$sum": "$score"}},
        })))
        .expect("parses");
        let AggregateKind::Pipeline(p) = request.kind else {
            panic!("not a pipeline")
        };
        let results: Vec<Value> = p
            .run(spec_objects())
            .expect("runs")
            .into_iter()
            .map(Value::Object)
            .collect();
        assert_eq!(
            results,
            vec![
                json!({"objectId": 10, "score": 30}),
                json!({"objectId": 20, "score": 20})
            ]
        );

        // Parse's "project pointer query".
        let mut objects = spec_objects();
        objects[1].insert(
            "pointer".into(),
            json!({"__type": "Pointer", "className": "PointerObject", "objectId": "p"}),
        );
        let results = run(
            json!([{"$match": {"_id": "o2"}}, {"$project": {"pointer": 1, "name": 1, "createdAt": 1}}]),
            objects,
        );
        assert_eq!(
            results,
            vec![
                json!({"objectId": "o2", "pointer": {"__type": "Pointer", "className": "PointerObject", "objectId": "p"}, "name": "foo", "createdAt": "2024-03-02T10:00:00.000Z"})
            ]
        );

        // Views per group of senders, biggest first, from the SDK's form
        // (the query's where as a leading $match).
        let results = run(
            json!([
                {"$match": {"score": {"$lte": 15}}},
                {"$group": {"_id": "$sender.group", "views": {"$sum": "$views"}, "scores": {"$avg": "$score"}}},
                {"$sort": {"views": -1}},
                {"$limit": 1},
            ]),
            spec_objects(),
        );
        assert_eq!(
            results,
            vec![json!({"objectId": "A", "views": 1700, "scores": 10})]
        );
    }

    #[test]
    fn results_take_parse_shape() {
        let objects = vec![obj(json!({
            "objectId": "a",
            "createdAt": "2024-03-01T10:00:00Z",
            "updatedAt": "2024-03-01T10:00:00.000Z",
            "ACL": {"*": {"read": true}},
            "_hashed_password": "secret",
            "_rperm": ["*"],
            "gone": null,
            "when": {"__type": "Date", "iso": "2024-03-01T10:00:00Z"},
            "ratio": 2.0,
        }))];
        let results = run(json!([]), objects);
        assert_eq!(
            results,
            vec![json!({
                "objectId": "a",
                "createdAt": "2024-03-01T10:00:00.000Z",
                "updatedAt": "2024-03-01T10:00:00.000Z",
                "when": {"__type": "Date", "iso": "2024-03-01T10:00:00.000Z"},
                "ratio": 2,
            })]
        );
    }

    // --- distinct ----------------------------------------------------------

    #[test]
    fn distinct_values_in_parse_shape() {
        let objects = spec_objects();
        assert_eq!(
            distinct("score", &objects).expect("ok"),
            vec![json!(10), json!(20)]
        );
        assert_eq!(
            distinct("sender.group", &objects).expect("ok"),
            vec![json!("A"), json!("B")]
        );
        assert_eq!(
            distinct("size", &objects).expect("ok"),
            vec![json!("L"), json!("M"), json!("S")]
        );
        assert_eq!(distinct("objectId", &objects).expect("ok").len(), 4);
        assert_eq!(
            distinct("createdAt", &objects).expect("ok")[0],
            json!("2024-03-01T10:00:00.000Z")
        );
        assert_eq!(
            distinct("unknown", &objects).expect("ok"),
            Vec::<Value>::new()
        );

        let pointer =
            |id: &str| json!({"objectId": id, "className": "PointerObject", "__type": "Pointer"});
        let objects = vec![
            obj(
                json!({"objectId": "a", "p": pointer("p2"), "d": {"__type": "Date", "iso": "2024-01-01T00:00:00Z"}, "f": {"__type": "File", "name": "x.txt", "url": "http://h/x.txt"}, "n": null}),
            ),
            obj(json!({"objectId": "b", "p": pointer("p1"), "n": "one"})),
            obj(json!({"objectId": "c", "p": pointer("p2"), "n": 1.0})),
            obj(json!({"objectId": "d", "n": 1})),
        ];
        let wanted =
            |id: &str| json!({"__type": "Pointer", "className": "PointerObject", "objectId": id});
        let pointers = distinct("p", &objects).expect("ok");
        assert_eq!(pointers, vec![wanted("p1"), wanted("p2")]);
        assert_eq!(
            serde_json::to_string(&pointers[0]).expect("json"),
            serde_json::to_string(&wanted("p1")).expect("json")
        );
        assert_eq!(
            distinct("d", &objects).expect("ok"),
            vec![json!("2024-01-01T00:00:00.000Z")]
        );
        assert_eq!(distinct("f", &objects).expect("ok"), vec![json!("x.txt")]);
        assert_eq!(
            distinct("n", &objects).expect("ok"),
            vec![json!(1.0), json!("one")]
        );
    }

    #[test]
    fn distinct_rejects_bad_field_names() {
        for field in ["_id", "a..b", "$score", "", "a b", "_rperm"] {
            let e = distinct(field, &spec_objects()).expect_err("rejected");
            assert_eq!(
                (e.code(), e.to_string()),
                (INVALID_KEY_NAME, format!("Invalid field name: {field}"))
            );
        }
    }

    // --- odd input never panics ---------------------------------------------

    /// xorshift64*, so the cases are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }

        fn value(&mut self, depth: usize) -> Value {
            const WORDS: &[&str] = &[
                "$score",
                "$name",
                "$size",
                "$sender.group",
                "$createdAt",
                "$_id",
                "$_p_pointer",
                "$$ROOT",
                "$",
                "$a..b",
                "",
                "foo",
                "2024-03-01T10:00:00Z",
                "$sum",
                "$avg",
                "$min",
                "$max",
                "$push",
                "$addToSet",
                "$first",
                "$gt",
                "$in",
                "$exists",
                "$or",
                "$and",
                "$not",
                "$regex",
                "$year",
                "$week",
                "$add",
                "$divide",
                "$concat",
                "_id",
                "objectId",
                "date",
                "timezone",
                "path",
                "__type",
                "Date",
                "Pointer",
                "iso",
                "score",
                "name",
                "size",
                "a.b",
                "$literal",
                "$ifNull",
                "$size",
                "$mod",
                "$subtract",
                "$dayOfWeek",
                "$count",
            ];
            match self.below(if depth == 0 { 6 } else { 9 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => json!(self.below(40) as i64 - 10),
                3 => json!((self.next() % 1000) as f64 / 7.0 - 50.0),
                4 | 5 => Value::from(self.pick(WORDS)),
                6 | 7 => {
                    let n = self.below(4);
                    Value::Object(
                        (0..n)
                            .map(|_| (self.pick(WORDS).to_owned(), self.value(depth - 1)))
                            .collect(),
                    )
                }
                _ => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            }
        }
    }

    #[test]
    fn odd_pipelines_and_objects_never_panic() {
        const STAGES: &[&str] = &[
            "$match", "$group", "$project", "$sort", "$limit", "$skip", "$count", "$unwind",
            "where", "distinct", "group", "pipeline", "$lookup",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut objects = spec_objects();
        for i in 0..12 {
            let mut o = obj(json!({"objectId": format!("x{i}")}));
            for key in [
                "score",
                "name",
                "size",
                "sender",
                "createdAt",
                "pointer",
                "a",
            ] {
                if rng.below(3) > 0 {
                    o.insert(key.to_owned(), rng.value(3));
                }
            }
            objects.push(o);
        }
        let mut ran = 0;
        for _ in 0..4000 {
            let stages: Vec<Value> = (0..rng.below(4))
                .map(|_| {
                    let mut stage = Map::new();
                    stage.insert(rng.pick(STAGES).to_owned(), rng.value(4));
                    Value::Object(stage)
                })
                .collect();
            let body = if rng.below(2) == 0 {
                json!({ "pipeline": stages })
            } else {
                let mut body = Map::new();
                for stage in stages {
                    if let Value::Object(m) = stage {
                        body.extend(m);
                    }
                }
                Value::Object(body)
            };
            let Ok(request) = AggregateRequest::parse(&params(body)) else {
                continue;
            };
            match request.kind {
                AggregateKind::Pipeline(p) => {
                    if p.run(objects.clone()).is_ok() {
                        ran += 1;
                    }
                }
                AggregateKind::Distinct { field, .. } => {
                    let _ = distinct(&field, &objects);
                }
            }
        }
        assert!(ran > 100, "only {ran} random pipelines ran");

        // Sorting and grouping every kind of value together.
        let results = run(
            json!([{"$sort": {"score": 1, "name": -1, "a": 1}}, {"$group": {"_id": "$a", "s": {"$addToSet": "$size"}, "m": {"$max": "$sender"}}}]),
            objects.clone(),
        );
        assert!(!results.is_empty());
        for field in [
            "score",
            "name",
            "size",
            "sender",
            "sender.group",
            "pointer",
            "a",
            "createdAt",
        ] {
            distinct(field, &objects).expect("a valid name");
        }
    }
}
