//! Evaluates the query model against one object in memory, as LiveQuery
//! needs for each write. The semantics are the SQLite backend's (which
//! agree with Parse's REST find): an array matches a value when an element
//! does, values of different types never compare, and a top-level `null`
//! counts as missing, since the backends do not store it.
//!
//! What memory cannot answer (subqueries, `$relatedTo`, conditions on a
//! Relation field) becomes a lookup: a filter the caller runs against the
//! store, whose answers `matches` then takes.

use std::borrow::Cow;
use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Number, Value};

use crate::geo;
use crate::query::{
    Condition, ElementMatch, FieldPath, Filter, GeoPoint, Object, QueryValue, RegexSpec, SubQuery,
};
use crate::text::TextQuery;

#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error("invalid regular expression: {0}")]
    InvalidRegex(String),
}

/// A filter compiled for evaluation against objects.
#[derive(Debug)]
pub struct Matcher {
    root: Node,
    /// The parts of the filter that may need the store, in filter order.
    slots: Vec<Slot>,
}

#[derive(Debug)]
enum Node {
    Const(bool),
    And(Vec<Node>),
    Or(Vec<Node>),
    Nor(Vec<Node>),
    Field(FieldPath, Test),
    Permission {
        write: bool,
        principals: Vec<String>,
    },
    Slot(usize),
}

/// A condition on the value at a path, answerable in memory.
#[derive(Debug)]
enum Test {
    Eq(QueryValue),
    Ne(QueryValue),
    Compare {
        value: QueryValue,
        accept: fn(Ordering) -> bool,
    },
    In(Vec<QueryValue>),
    Nin(Vec<QueryValue>),
    Exists(bool),
    All(Vec<Element>),
    ContainedBy(Vec<QueryValue>),
    Regex(Regex),
    Near {
        point: GeoPoint,
        max_distance: Option<f64>,
    },
    WithinBox {
        south_west: GeoPoint,
        north_east: GeoPoint,
    },
    WithinPolygon(Vec<GeoPoint>),
    WithinCenterSphere {
        center: GeoPoint,
        radius: f64,
    },
    GeoIntersects(GeoPoint),
    Text(TextQuery),
}

#[derive(Debug)]
enum Element {
    Equals(QueryValue),
    Regex(Regex),
}

/// A part of the filter whose answer may come from the store.
#[derive(Debug)]
enum Slot {
    /// `$inQuery` (or, negated, `$notInQuery`) on the pointers at `path`.
    InQuery {
        path: FieldPath,
        query: SubQuery,
        negated: bool,
    },
    /// `$select` (or, negated, `$dontSelect`) on the values at `path`.
    Select {
        path: FieldPath,
        query: SubQuery,
        key: FieldPath,
        negated: bool,
    },
    /// `$relatedTo`, asked about the object itself.
    RelatedTo(Filter),
    /// A condition that, on a Relation field, only the join table can
    /// answer; on any other field `test` answers it. A Relation field is
    /// one the object shows as `{"__type": "Relation"}`: callers add those
    /// placeholders from the schema where their objects leave them out.
    Relation {
        path: FieldPath,
        condition: Condition,
        test: Test,
    },
}

impl Matcher {
    /// Compiles `filter` once: regular expressions (within the limits every
    /// backend shares), text searches and lookups.
    pub fn new(filter: &Filter) -> Result<Self, MatchError> {
        let mut slots = Vec::new();
        let root = compile(filter, &mut slots)?;
        Ok(Self { root, slots })
    }

    /// The existence lookups the filter needs answered for this object, in
    /// a fixed order: each is (class name, filter), meaning "does some
    /// object of that class match this filter?". `class_name` is the
    /// object's class.
    pub fn lookups(&self, class_name: &str, object: &Object) -> Vec<(String, Filter)> {
        self.slots
            .iter()
            .filter(|slot| slot.needed(object))
            .map(|slot| slot.lookup(class_name, object))
            .collect()
    }

    /// Whether the object matches. `answers` holds the results of
    /// [`Matcher::lookups`] for this object, in order; when their number
    /// differs, nothing matches.
    pub fn matches(&self, object: &Object, answers: &[bool]) -> bool {
        let mut given = answers.iter().copied();
        let mut resolved = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            if slot.needed(object) {
                let Some(answer) = given.next() else {
                    return false;
                };
                resolved.push(Some(answer));
            } else {
                resolved.push(None);
            }
        }
        given.next().is_none() && self.eval(&self.root, object, &resolved)
    }

    /// Whether [`Matcher::lookups`] can return anything, so callers can
    /// skip that step: true for subqueries and `$relatedTo`, and for
    /// conditions a Relation field would answer (`$exists`, or pointers
    /// compared with a top-level field) when the object shows one.
    pub fn needs_lookups(&self) -> bool {
        !self.slots.is_empty()
    }

    fn eval(&self, node: &Node, object: &Object, answers: &[Option<bool>]) -> bool {
        match node {
            Node::Const(value) => *value,
            Node::And(parts) => parts.iter().all(|p| self.eval(p, object, answers)),
            Node::Or(parts) => parts.iter().any(|p| self.eval(p, object, answers)),
            Node::Nor(parts) => !parts.iter().any(|p| self.eval(p, object, answers)),
            Node::Field(path, test) => test.matches(resolve(object, path)),
            Node::Permission { write, principals } => acl_allows(object, principals, *write),
            Node::Slot(i) => self.slots[*i].decide(object, answers[*i]),
        }
    }
}

/// Whether Parse's ACL on `object` grants read (or, with `write`, write) to
/// any of `principals` (`*`, user ids, `role:Name`). An object without an
/// ACL is public, as the store treats it.
pub fn acl_allows(object: &Object, principals: &[String], write: bool) -> bool {
    let Some(Value::Object(entries)) = object.get("ACL") else {
        return true;
    };
    let right = if write { "write" } else { "read" };
    principals.iter().any(|principal| {
        entries
            .get(principal)
            .and_then(|grant| grant.get(right))
            .and_then(Value::as_bool)
            == Some(true)
    })
}

fn compile(filter: &Filter, slots: &mut Vec<Slot>) -> Result<Node, MatchError> {
    let all = |parts: &[Filter], slots: &mut Vec<Slot>| -> Result<Vec<Node>, MatchError> {
        parts.iter().map(|p| compile(p, slots)).collect()
    };
    Ok(match filter {
        Filter::All => Node::Const(true),
        Filter::Nothing => Node::Const(false),
        Filter::And(parts) => Node::And(all(parts, slots)?),
        Filter::Or(parts) => Node::Or(all(parts, slots)?),
        Filter::Nor(parts) => Node::Nor(all(parts, slots)?),
        Filter::Field(path, condition) => compile_field(path, condition, slots)?,
        Filter::RelatedTo { .. } => push(slots, Slot::RelatedTo(filter.clone())),
        Filter::Permission { write, principals } => Node::Permission {
            write: *write,
            principals: principals.clone(),
        },
    })
}

fn push(slots: &mut Vec<Slot>, slot: Slot) -> Node {
    slots.push(slot);
    Node::Slot(slots.len() - 1)
}

fn compile_field(
    path: &FieldPath,
    condition: &Condition,
    slots: &mut Vec<Slot>,
) -> Result<Node, MatchError> {
    let value = |v: &QueryValue| column_value(path, v);
    let values = |vs: &[QueryValue]| vs.iter().map(value).collect();
    let compare = |v: &QueryValue, accept| Test::Compare {
        value: value(v),
        accept,
    };
    let test = match condition {
        Condition::InQuery(query) | Condition::NotInQuery(query) => {
            let slot = Slot::InQuery {
                path: path.clone(),
                query: (**query).clone(),
                negated: matches!(condition, Condition::NotInQuery(_)),
            };
            return Ok(push(slots, slot));
        }
        Condition::Select { query, key } | Condition::DontSelect { query, key } => {
            let slot = Slot::Select {
                path: path.clone(),
                query: (**query).clone(),
                key: key.clone(),
                negated: matches!(condition, Condition::DontSelect { .. }),
            };
            return Ok(push(slots, slot));
        }
        Condition::Eq(v) => Test::Eq(value(v)),
        Condition::Ne(v) => Test::Ne(value(v)),
        Condition::Lt(v) => compare(v, Ordering::is_lt),
        Condition::Lte(v) => compare(v, Ordering::is_le),
        Condition::Gt(v) => compare(v, Ordering::is_gt),
        Condition::Gte(v) => compare(v, Ordering::is_ge),
        Condition::In(vs) => Test::In(values(vs)),
        Condition::Nin(vs) => Test::Nin(values(vs)),
        Condition::Exists(exists) => Test::Exists(*exists),
        Condition::All(matchers) => Test::All(
            matchers
                .iter()
                .map(Element::new)
                .collect::<Result<_, _>>()?,
        ),
        Condition::ContainedBy(vs) => Test::ContainedBy(values(vs)),
        Condition::Regex(spec) => Test::Regex(regex(spec)?),
        Condition::NearSphere {
            point,
            max_distance,
        } => Test::Near {
            point: *point,
            max_distance: *max_distance,
        },
        Condition::WithinBox {
            south_west,
            north_east,
        } => Test::WithinBox {
            south_west: *south_west,
            north_east: *north_east,
        },
        Condition::WithinPolygon(points) => Test::WithinPolygon(points.clone()),
        Condition::WithinCenterSphere { center, radius } => Test::WithinCenterSphere {
            center: *center,
            radius: *radius,
        },
        Condition::GeoIntersects(point) => Test::GeoIntersects(*point),
        Condition::Text(search) => Test::Text(TextQuery::parse(
            &search.term,
            search.case_sensitive,
            search.diacritic_sensitive,
        )),
    };
    Ok(match relation_condition(path, condition) {
        Some(()) => push(
            slots,
            Slot::Relation {
                path: path.clone(),
                condition: condition.clone(),
                test,
            },
        ),
        None => Node::Field(path.clone(), test),
    })
}

/// Whether the condition is one a Relation field answers through its join
/// table, as the backends do.
fn relation_condition(path: &FieldPath, condition: &Condition) -> Option<()> {
    if path.is_nested() || is_column(&path.field) {
        return None;
    }
    let pointer = |v: &QueryValue| matches!(v, QueryValue::Pointer { .. });
    match condition {
        Condition::Exists(_) => Some(()),
        Condition::Eq(v) | Condition::Ne(v) if pointer(v) => Some(()),
        Condition::In(vs) | Condition::Nin(vs) if vs.iter().any(pointer) => Some(()),
        _ => None,
    }
}

fn is_column(field: &str) -> bool {
    matches!(field, "objectId" | "createdAt" | "updatedAt")
}

/// `createdAt` and `updatedAt` are plain ISO strings in the object, and a
/// date compares with them as with a Date's `iso`.
fn column_value(path: &FieldPath, value: &QueryValue) -> QueryValue {
    match value {
        QueryValue::Date(iso) if !path.is_nested() && is_column(&path.field) => {
            QueryValue::String(iso.clone())
        }
        other => other.clone(),
    }
}

fn regex(spec: &RegexSpec) -> Result<Regex, MatchError> {
    crate::pattern::compile(&spec.inline()).map_err(|e| MatchError::InvalidRegex(e.to_string()))
}

impl Element {
    fn new(matcher: &ElementMatch) -> Result<Self, MatchError> {
        Ok(match matcher {
            ElementMatch::Equals(value) => Element::Equals(value.clone()),
            ElementMatch::Regex(spec) => Element::Regex(regex(spec)?),
        })
    }

    fn matches(&self, item: &Value) -> bool {
        match self {
            Element::Equals(value) => equals(item, value),
            Element::Regex(re) => regex_matches(re, item),
        }
    }
}

impl Test {
    fn matches(&self, value: Option<&Value>) -> bool {
        match self {
            Test::Eq(q) => equals_any(value, q),
            Test::Ne(q) => !equals_any(value, q),
            Test::Compare { value: q, accept } => value
                .is_some_and(|v| candidates(v).any(|item| compare(item, q).is_some_and(accept))),
            Test::In(qs) => qs.iter().any(|q| equals_any(value, q)),
            Test::Nin(qs) => !qs.iter().any(|q| equals_any(value, q)),
            Test::Exists(exists) => value.is_some() == *exists,
            Test::All(elements) => {
                let items = array(value);
                !elements.is_empty()
                    && items.is_some_and(|items| {
                        elements.iter().all(|e| items.iter().any(|i| e.matches(i)))
                    })
            }
            Test::ContainedBy(qs) => array(value)
                .is_some_and(|items| items.iter().all(|item| qs.iter().any(|q| equals(item, q)))),
            Test::Regex(re) => value.is_some_and(|v| candidates(v).any(|i| regex_matches(re, i))),
            Test::Near {
                point,
                max_distance,
            } => geo_point(value).is_some_and(|p| {
                max_distance.is_none_or(|max| geo::distance_radians(p, *point) <= max)
            }),
            Test::WithinBox {
                south_west,
                north_east,
            } => geo_point(value).is_some_and(|p| {
                (south_west.latitude..=north_east.latitude).contains(&p.latitude)
                    && (south_west.longitude..=north_east.longitude).contains(&p.longitude)
            }),
            Test::WithinPolygon(vertices) => {
                geo_point(value).is_some_and(|p| geo::polygon_contains(vertices, p))
            }
            Test::WithinCenterSphere { center, radius } => {
                geo_point(value).is_some_and(|p| geo::distance_radians(p, *center) <= *radius)
            }
            Test::GeoIntersects(point) => {
                polygon(value).is_some_and(|vertices| geo::polygon_contains(&vertices, *point))
            }
            Test::Text(query) => value
                .and_then(searchable_text)
                .is_some_and(|text| query.score(&text) > 0.0),
        }
    }
}

impl Slot {
    /// Whether this object needs the store's answer.
    fn needed(&self, object: &Object) -> bool {
        match self {
            Slot::InQuery { path, query, .. } => {
                pointer_ids(resolve(object, path), &query.class_name)
                    .next()
                    .is_some()
            }
            Slot::Select { path, .. } => !selectable(path, resolve(object, path)).is_empty(),
            Slot::RelatedTo(_) => object_id(object).is_some(),
            Slot::Relation { path, .. } => {
                resolve(object, path).is_some_and(|v| typed(v, "Relation", "className").is_some())
                    && object_id(object).is_some()
            }
        }
    }

    /// The lookup, for an object that [`Slot::needed`] it.
    fn lookup(&self, class_name: &str, object: &Object) -> (String, Filter) {
        let this_object = || {
            let id = object_id(object).unwrap_or_default().to_owned();
            Filter::field("objectId", Condition::Eq(QueryValue::String(id)))
        };
        match self {
            Slot::InQuery { path, query, .. } => {
                let ids = pointer_ids(resolve(object, path), &query.class_name)
                    .map(|id| QueryValue::String(id.to_owned()))
                    .collect();
                let filter = query
                    .filter
                    .clone()
                    .and(Filter::field("objectId", Condition::In(ids)));
                (query.class_name.clone(), filter)
            }
            Slot::Select {
                path, query, key, ..
            } => {
                let values = selectable(path, resolve(object, path));
                let filter = query
                    .filter
                    .clone()
                    .and(Filter::Field(key.clone(), Condition::In(values)));
                (query.class_name.clone(), filter)
            }
            Slot::RelatedTo(filter) => (class_name.to_owned(), filter.clone().and(this_object())),
            Slot::Relation {
                path, condition, ..
            } => {
                let filter = Filter::Field(path.clone(), condition.clone()).and(this_object());
                (class_name.to_owned(), filter)
            }
        }
    }

    /// The slot's result, given the store's answer when it was needed.
    fn decide(&self, object: &Object, answer: Option<bool>) -> bool {
        match self {
            Slot::InQuery { negated, .. } | Slot::Select { negated, .. } => {
                answer.unwrap_or(false) != *negated
            }
            Slot::RelatedTo(_) => answer.unwrap_or(false),
            Slot::Relation { path, test, .. } => {
                answer.unwrap_or_else(|| test.matches(resolve(object, path)))
            }
        }
    }
}

fn object_id(object: &Object) -> Option<&str> {
    object.get("objectId").and_then(Value::as_str)
}

/// The value at `path`. A top-level `null` is missing, as the backends
/// store it; a nested one is a value. Arrays are not searched for keys.
fn resolve<'a>(object: &'a Object, path: &FieldPath) -> Option<&'a Value> {
    let mut value = object.get(&path.field).filter(|v| !v.is_null())?;
    for key in &path.nested {
        value = value.as_object()?.get(key)?;
    }
    Some(value)
}

/// The value itself, then, for an array, its elements: what a condition
/// with Mongo's array semantics tests.
fn candidates(value: &Value) -> impl Iterator<Item = &Value> {
    std::iter::once(value).chain(value.as_array().into_iter().flatten())
}

fn array(value: Option<&Value>) -> Option<&Vec<Value>> {
    value.and_then(Value::as_array)
}

/// `key` of a typed value (`{"__type": type_name, ...}`).
fn typed<'a>(value: &'a Value, type_name: &str, key: &str) -> Option<&'a Value> {
    let map = value.as_object()?;
    (map.get("__type")?.as_str()? == type_name)
        .then(|| map.get(key))
        .flatten()
}

fn typed_str<'a>(value: &'a Value, type_name: &str, key: &str) -> Option<&'a str> {
    typed(value, type_name, key)?.as_str()
}

fn equals_any(value: Option<&Value>, query: &QueryValue) -> bool {
    match value {
        None => matches!(query, QueryValue::Null),
        Some(v) => candidates(v).any(|item| equals(item, query)),
    }
}

fn equals(value: &Value, query: &QueryValue) -> bool {
    match query {
        QueryValue::Null => value.is_null(),
        QueryValue::Bool(b) => value.as_bool() == Some(*b),
        QueryValue::Number(_) | QueryValue::String(_) | QueryValue::Date(_) => {
            compare(value, query) == Some(Ordering::Equal)
        }
        QueryValue::Pointer {
            class_name,
            object_id,
        } => {
            typed_str(value, "Pointer", "className") == Some(class_name)
                && typed_str(value, "Pointer", "objectId") == Some(object_id)
        }
        QueryValue::File(name) => typed_str(value, "File", "name") == Some(name),
        // Map equality ignores key order, as `canonical` storage does.
        QueryValue::Json(json) => (value.is_object() || value.is_array()) && value == json,
    }
}

/// How `value` orders against `query`; `None` across types, and for types
/// with no order.
fn compare(value: &Value, query: &QueryValue) -> Option<Ordering> {
    match query {
        QueryValue::Number(n) => compare_numbers(value.as_number()?, n),
        QueryValue::String(s) => Some(value.as_str()?.cmp(s)),
        QueryValue::Date(iso) => Some(typed_str(value, "Date", "iso")?.cmp(iso)),
        _ => None,
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn regex_matches(re: &Regex, value: &Value) -> bool {
    value.as_str().is_some_and(|s| re.is_match(s))
}

fn geo_point(value: Option<&Value>) -> Option<GeoPoint> {
    let value = value?;
    Some(GeoPoint {
        latitude: typed(value, "GeoPoint", "latitude")?.as_f64()?,
        longitude: typed(value, "GeoPoint", "longitude")?.as_f64()?,
    })
}

/// A Polygon's vertices (`coordinates` are `[lat, lng]` pairs).
fn polygon(value: Option<&Value>) -> Option<Vec<GeoPoint>> {
    typed(value?, "Polygon", "coordinates")?
        .as_array()?
        .iter()
        .map(|pair| match pair.as_array()?.as_slice() {
            [lat, lng] => Some(GeoPoint {
                latitude: lat.as_f64()?,
                longitude: lng.as_f64()?,
            }),
            _ => None,
        })
        .collect()
}

/// The text `$text` searches: a string, or an array's strings.
fn searchable_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Array(items) => {
            let strings: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            Some(Cow::Owned(strings.join(" ")))
        }
        _ => None,
    }
}

/// The ids of the pointers to `class_name` at a path (the value, or an
/// array's elements).
fn pointer_ids<'a>(value: Option<&'a Value>, class_name: &'a str) -> impl Iterator<Item = &'a str> {
    value
        .into_iter()
        .flat_map(candidates)
        .filter(move |v| typed_str(v, "Pointer", "className") == Some(class_name))
        .filter_map(|v| typed_str(v, "Pointer", "objectId"))
}

/// The values at a path as `$select` compares them with the selected key:
/// the value and, for an array, its elements. `createdAt` and `updatedAt`
/// are offered as strings and as dates, since the key may be either.
fn selectable(path: &FieldPath, value: Option<&Value>) -> Vec<QueryValue> {
    let mut out: Vec<QueryValue> = value
        .into_iter()
        .flat_map(candidates)
        .filter_map(query_value)
        .collect();
    if !path.is_nested()
        && is_column(&path.field)
        && let Some(Value::String(iso)) = value
    {
        out.push(QueryValue::Date(iso.clone()));
    }
    out
}

/// A stored value as the query model writes it.
fn query_value(value: &Value) -> Option<QueryValue> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => QueryValue::Bool(*b),
        Value::Number(n) => QueryValue::Number(n.clone()),
        Value::String(s) => QueryValue::String(s.clone()),
        Value::Array(_) => QueryValue::Json(value.clone()),
        Value::Object(map) => match map.get("__type").and_then(Value::as_str) {
            Some("Date") => QueryValue::Date(typed_str(value, "Date", "iso")?.to_owned()),
            Some("Pointer") => QueryValue::Pointer {
                class_name: typed_str(value, "Pointer", "className")?.to_owned(),
                object_id: typed_str(value, "Pointer", "objectId")?.to_owned(),
            },
            Some("File") => QueryValue::File(typed_str(value, "File", "name")?.to_owned()),
            _ => QueryValue::Json(value.clone()),
        },
    })
}
