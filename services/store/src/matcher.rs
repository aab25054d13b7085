//! Evaluates the query model against one object in Parse's REST JSON, as
//! LiveQuery needs for each event: the same answers a backend's find gives
//! for that object. Subqueries (`$inQuery`, `$select`, `$relatedTo` and
//! their negations) need other objects: [`Matcher::lookups`] names them as
//! existence questions for the caller to put to the store, and
//! [`Matcher::matches`] takes the answers.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::Value;

use crate::acl::permissions;
use crate::geo::{distance_radians, polygon_contains};
use crate::query::{
    Condition, ElementMatch, FieldPath, Filter, GeoPoint, Object, QueryValue, SubQuery, canonical,
};
use crate::text::TextQuery;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MatchError {
    #[error("invalid regular expression: {0}")]
    InvalidRegex(String),
}

/// A filter compiled for repeated matching.
#[derive(Debug, Clone)]
pub struct Matcher {
    root: Node,
    /// The subqueries, in a fixed order that [`Matcher::lookups`] and
    /// [`Matcher::matches`] share.
    lookups: Vec<Lookup>,
}

#[derive(Debug, Clone)]
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
    /// The index of a [`Lookup`].
    Lookup(usize),
}

#[derive(Debug, Clone)]
enum Test {
    Eq(QueryValue),
    Ne(QueryValue),
    Order(Ordering, bool, QueryValue),
    In(Vec<QueryValue>),
    Nin(Vec<QueryValue>),
    Exists(bool),
    All(Vec<Element>),
    ContainedBy(Vec<QueryValue>),
    Regex(Regex),
    Near(GeoPoint, Option<f64>),
    WithinBox(GeoPoint, GeoPoint),
    WithinPolygon(Vec<GeoPoint>),
    WithinSphere(GeoPoint, f64),
    Intersects(GeoPoint),
    Text(TextQuery),
}

#[derive(Debug, Clone)]
enum Element {
    Equals(QueryValue),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum Lookup {
    /// The pointer(s) at `path` name an object `query` matches.
    InQuery {
        path: FieldPath,
        query: SubQuery,
        negated: bool,
    },
    /// The value(s) at `path` equal `key` of an object `query` matches.
    Select {
        path: FieldPath,
        query: SubQuery,
        key: FieldPath,
        negated: bool,
    },
    /// The object is in the relation (`$relatedTo`).
    RelatedTo(Filter),
}

impl Matcher {
    pub fn new(filter: &Filter) -> Result<Self, MatchError> {
        let mut lookups = Vec::new();
        let root = compile(filter, &mut lookups)?;
        Ok(Self { root, lookups })
    }

    pub fn needs_lookups(&self) -> bool {
        !self.lookups.is_empty()
    }

    /// The questions the subqueries need answered for `object` (of class
    /// `class_name`): "does some object of this class match this filter?".
    pub fn lookups(&self, class_name: &str, object: &Object) -> Vec<(String, Filter)> {
        self.lookups
            .iter()
            .filter_map(|lookup| lookup.question(class_name, object))
            .collect()
    }

    /// Whether `object` matches, given the answers to
    /// [`lookups`](Self::lookups) in order. A missing answer counts as no.
    pub fn matches(&self, object: &Object, answers: &[bool]) -> bool {
        let mut given = answers.iter().copied();
        let resolved: Vec<bool> = self
            .lookups
            .iter()
            .map(|lookup| match lookup.without_question(object) {
                Some(known) => known,
                None => lookup.apply(given.next().unwrap_or(false)),
            })
            .collect();
        eval(&self.root, object, &resolved)
    }
}

/// Whether the ACL of `object` grants read (or write) to one of
/// `principals`. An object without an ACL is public, as the store treats
/// it.
pub fn acl_allows(object: &Object, principals: &[String], write: bool) -> bool {
    let (read, written) = permissions(object.get("ACL"));
    match if write { written } else { read } {
        None => true,
        Some(granted) => granted.iter().any(|id| principals.contains(id)),
    }
}

fn compile(filter: &Filter, lookups: &mut Vec<Lookup>) -> Result<Node, MatchError> {
    let all = |parts: &[Filter], lookups: &mut Vec<Lookup>| {
        parts
            .iter()
            .map(|p| compile(p, lookups))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match filter {
        Filter::All => Node::Const(true),
        Filter::Nothing => Node::Const(false),
        Filter::And(parts) => Node::And(all(parts, lookups)?),
        Filter::Or(parts) => Node::Or(all(parts, lookups)?),
        Filter::Nor(parts) => Node::Nor(all(parts, lookups)?),
        Filter::Permission { write, principals } => Node::Permission {
            write: *write,
            principals: principals.clone(),
        },
        Filter::RelatedTo { .. } => {
            lookups.push(Lookup::RelatedTo(filter.clone()));
            Node::Lookup(lookups.len() - 1)
        }
        Filter::Field(path, condition) => {
            let lookup = match condition {
                Condition::InQuery(query) | Condition::NotInQuery(query) => Some(Lookup::InQuery {
                    path: path.clone(),
                    query: (**query).clone(),
                    negated: matches!(condition, Condition::NotInQuery(_)),
                }),
                Condition::Select { query, key } | Condition::DontSelect { query, key } => {
                    Some(Lookup::Select {
                        path: path.clone(),
                        query: (**query).clone(),
                        key: key.clone(),
                        negated: matches!(condition, Condition::DontSelect { .. }),
                    })
                }
                _ => None,
            };
            match lookup {
                Some(lookup) => {
                    lookups.push(lookup);
                    Node::Lookup(lookups.len() - 1)
                }
                None => Node::Field(path.clone(), test(condition)?),
            }
        }
    })
}

fn regex(spec: &crate::query::RegexSpec) -> Result<Regex, MatchError> {
    crate::pattern::compile(&spec.inline()).map_err(|err| MatchError::InvalidRegex(err.to_string()))
}

fn test(condition: &Condition) -> Result<Test, MatchError> {
    Ok(match condition {
        Condition::Eq(v) => Test::Eq(v.clone()),
        Condition::Ne(v) => Test::Ne(v.clone()),
        Condition::Lt(v) => Test::Order(Ordering::Less, false, v.clone()),
        Condition::Lte(v) => Test::Order(Ordering::Less, true, v.clone()),
        Condition::Gt(v) => Test::Order(Ordering::Greater, false, v.clone()),
        Condition::Gte(v) => Test::Order(Ordering::Greater, true, v.clone()),
        Condition::In(vs) => Test::In(vs.clone()),
        Condition::Nin(vs) => Test::Nin(vs.clone()),
        Condition::Exists(b) => Test::Exists(*b),
        Condition::All(items) => Test::All(
            items
                .iter()
                .map(|item| match item {
                    ElementMatch::Equals(v) => Ok(Element::Equals(v.clone())),
                    ElementMatch::Regex(spec) => regex(spec).map(Element::Regex),
                })
                .collect::<Result<_, _>>()?,
        ),
        Condition::ContainedBy(vs) => Test::ContainedBy(vs.clone()),
        Condition::Regex(spec) => Test::Regex(regex(spec)?),
        Condition::NearSphere {
            point,
            max_distance,
        } => Test::Near(*point, *max_distance),
        Condition::WithinBox {
            south_west,
            north_east,
        } => Test::WithinBox(*south_west, *north_east),
        Condition::WithinPolygon(points) => Test::WithinPolygon(points.clone()),
        Condition::WithinCenterSphere { center, radius } => Test::WithinSphere(*center, *radius),
        Condition::GeoIntersects(point) => Test::Intersects(*point),
        Condition::Text(search) => Test::Text(TextQuery::parse(
            &search.term,
            search.case_sensitive,
            search.diacritic_sensitive,
        )),
        Condition::InQuery(_)
        | Condition::NotInQuery(_)
        | Condition::Select { .. }
        | Condition::DontSelect { .. } => unreachable!("subqueries compile to lookups"),
    })
}

impl Lookup {
    /// The answer when no question is needed: no pointer or value at the
    /// path, or no id on the object.
    fn without_question(&self, object: &Object) -> Option<bool> {
        let empty = match self {
            Lookup::InQuery { path, .. } => pointer_ids(value_at(object, path)).is_empty(),
            Lookup::Select { path, .. } => stored_values(value_at(object, path)).is_empty(),
            Lookup::RelatedTo(_) => object.get("objectId").and_then(Value::as_str).is_none(),
        };
        empty.then(|| self.apply(false))
    }

    fn apply(&self, found: bool) -> bool {
        match self {
            Lookup::InQuery { negated, .. } | Lookup::Select { negated, .. } => found != *negated,
            Lookup::RelatedTo(_) => found,
        }
    }

    fn question(&self, class_name: &str, object: &Object) -> Option<(String, Filter)> {
        if self.without_question(object).is_some() {
            return None;
        }
        Some(match self {
            Lookup::InQuery { path, query, .. } => {
                let ids = pointer_ids(value_at(object, path))
                    .into_iter()
                    .map(|id| QueryValue::String(id.to_owned()))
                    .collect();
                (
                    query.class_name.clone(),
                    query.filter.clone().and(Filter::Field(
                        FieldPath::new("objectId"),
                        Condition::In(ids),
                    )),
                )
            }
            Lookup::Select {
                path, query, key, ..
            } => (
                query.class_name.clone(),
                query.filter.clone().and(Filter::Field(
                    key.clone(),
                    Condition::In(stored_values(value_at(object, path))),
                )),
            ),
            Lookup::RelatedTo(related) => {
                let id = object.get("objectId").and_then(Value::as_str)?;
                (
                    class_name.to_owned(),
                    related.clone().and(Filter::field(
                        "objectId",
                        Condition::Eq(QueryValue::String(id.to_owned())),
                    )),
                )
            }
        })
    }
}

fn eval(node: &Node, object: &Object, resolved: &[bool]) -> bool {
    match node {
        Node::Const(b) => *b,
        Node::And(parts) => parts.iter().all(|p| eval(p, object, resolved)),
        Node::Or(parts) => parts.iter().any(|p| eval(p, object, resolved)),
        Node::Nor(parts) => !parts.iter().any(|p| eval(p, object, resolved)),
        Node::Permission { write, principals } => acl_allows(object, principals, *write),
        Node::Lookup(i) => resolved.get(*i).copied().unwrap_or(false),
        Node::Field(path, test) => test_value(test, value_at(object, path)),
    }
}

fn value_at<'a>(object: &'a Object, path: &FieldPath) -> Option<&'a Value> {
    let mut value = object.get(&path.field)?;
    for key in &path.nested {
        value = value.as_object()?.get(key)?;
    }
    Some(value)
}

/// A stored value, or each element of a stored array: what an equality
/// or a range compares with, as MongoDB and the SQL backends do.
fn each(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(value) => vec![value],
        None => Vec::new(),
    }
}

fn test_value(test: &Test, value: Option<&Value>) -> bool {
    match test {
        Test::Eq(q) => equals(value, q),
        Test::Ne(q) => !equals(value, q),
        Test::Order(side, inclusive, q) => each(value).into_iter().any(|v| {
            compare(v, q).is_some_and(|ord| ord == *side || (*inclusive && ord == Ordering::Equal))
        }),
        Test::In(qs) => qs.iter().any(|q| equals(value, q)),
        Test::Nin(qs) => !qs.iter().any(|q| equals(value, q)),
        Test::Exists(wanted) => value.is_some_and(|v| !v.is_null()) == *wanted,
        Test::All(elements) => match value {
            Some(Value::Array(items)) => elements.iter().all(|element| {
                items.iter().any(|item| match element {
                    Element::Equals(q) => same(item, q),
                    Element::Regex(re) => item.as_str().is_some_and(|s| re.is_match(s)),
                })
            }),
            _ => false,
        },
        Test::ContainedBy(qs) => match value {
            Some(Value::Array(items)) => items.iter().all(|item| qs.iter().any(|q| same(item, q))),
            _ => false,
        },
        Test::Regex(re) => value
            .and_then(Value::as_str)
            .is_some_and(|s| re.is_match(s)),
        Test::Near(center, max) => geo_point(value)
            .is_some_and(|p| max.is_none_or(|max| distance_radians(p, *center) <= max)),
        Test::WithinBox(sw, ne) => geo_point(value).is_some_and(|p| {
            p.latitude >= sw.latitude
                && p.latitude <= ne.latitude
                && p.longitude >= sw.longitude
                && p.longitude <= ne.longitude
        }),
        Test::WithinPolygon(vertices) => {
            geo_point(value).is_some_and(|p| polygon_contains(vertices, p))
        }
        Test::WithinSphere(center, radius) => {
            geo_point(value).is_some_and(|p| distance_radians(p, *center) <= *radius)
        }
        Test::Intersects(point) => polygon(value).is_some_and(|v| polygon_contains(&v, *point)),
        Test::Text(query) => value
            .and_then(Value::as_str)
            .is_some_and(|text| query.score(text) > 0.0),
    }
}

/// Equality as a find has it: null also matches a missing field, and an
/// array matches when one of its elements is equal (or when it is equal as
/// a whole, for a JSON array).
fn equals(value: Option<&Value>, q: &QueryValue) -> bool {
    match (value, q) {
        (None | Some(Value::Null), QueryValue::Null) => true,
        (None, _) => false,
        (Some(Value::Array(items)), _) => {
            same(value.expect("matched Some"), q) || items.iter().any(|item| same(item, q))
        }
        (Some(v), q) => same(v, q),
    }
}

/// One stored value against one query value, types having to agree.
fn same(v: &Value, q: &QueryValue) -> bool {
    match q {
        QueryValue::Json(json) => canonical(v) == canonical(json),
        _ => compare(v, q) == Some(Ordering::Equal),
    }
}

/// Orders a stored value against a query value of the same type; `None`
/// when the types differ, which neither equals nor orders.
fn compare(v: &Value, q: &QueryValue) -> Option<Ordering> {
    match (v, q) {
        (Value::Null, QueryValue::Null) => Some(Ordering::Equal),
        (Value::Bool(a), QueryValue::Bool(b)) => Some(a.cmp(b)),
        (Value::Number(a), QueryValue::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), QueryValue::String(b)) => Some(a.as_str().cmp(b)),
        // `createdAt` and `updatedAt` are plain ISO strings in REST JSON.
        (Value::String(a), QueryValue::Date(b)) => Some(a.as_str().cmp(b)),
        (Value::Object(map), _) => {
            let kind = map.get("__type").and_then(Value::as_str);
            let text = |key: &str| map.get(key).and_then(Value::as_str);
            match (kind, q) {
                (Some("Date"), QueryValue::Date(b)) => Some(text("iso")?.cmp(b)),
                (
                    Some("Pointer" | "Object"),
                    QueryValue::Pointer {
                        class_name,
                        object_id,
                    },
                ) => (text("className")? == class_name && text("objectId")? == object_id)
                    .then_some(Ordering::Equal),
                (Some("File"), QueryValue::File(name)) => {
                    (text("name")? == name).then_some(Ordering::Equal)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn geo_point(value: Option<&Value>) -> Option<GeoPoint> {
    let map = value?.as_object()?;
    if map.get("__type").and_then(Value::as_str) != Some("GeoPoint") {
        return None;
    }
    Some(GeoPoint {
        latitude: map.get("latitude")?.as_f64()?,
        longitude: map.get("longitude")?.as_f64()?,
    })
}

/// A Polygon's vertices; Parse stores `[latitude, longitude]` pairs.
fn polygon(value: Option<&Value>) -> Option<Vec<GeoPoint>> {
    let map = value?.as_object()?;
    if map.get("__type").and_then(Value::as_str) != Some("Polygon") {
        return None;
    }
    map.get("coordinates")?
        .as_array()?
        .iter()
        .map(|pair| {
            let pair = pair.as_array()?;
            Some(GeoPoint {
                latitude: pair.first()?.as_f64()?,
                longitude: pair.get(1)?.as_f64()?,
            })
        })
        .collect()
}

/// The ids of the pointer, or pointers, at a path.
fn pointer_ids(value: Option<&Value>) -> Vec<&str> {
    each(value)
        .into_iter()
        .filter_map(|v| {
            let map = v.as_object()?;
            matches!(
                map.get("__type").and_then(Value::as_str),
                Some("Pointer" | "Object")
            )
            .then(|| map.get("objectId").and_then(Value::as_str))
            .flatten()
        })
        .collect()
}

/// The value, or values, at a path as query values, for `$select`.
fn stored_values(value: Option<&Value>) -> Vec<QueryValue> {
    each(value)
        .into_iter()
        .filter_map(|v| match v {
            Value::Bool(b) => Some(QueryValue::Bool(*b)),
            Value::Number(n) => Some(QueryValue::Number(n.clone())),
            Value::String(s) => Some(QueryValue::String(s.clone())),
            Value::Object(map) => match map.get("__type").and_then(Value::as_str) {
                Some("Pointer") => Some(QueryValue::Pointer {
                    class_name: map.get("className")?.as_str()?.to_owned(),
                    object_id: map.get("objectId")?.as_str()?.to_owned(),
                }),
                Some("Date") => Some(QueryValue::Date(map.get("iso")?.as_str()?.to_owned())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
