//! The backend-neutral query model. The API parses Parse's `where` JSON into
//! it; each backend compiles it into its own query language. Nothing here
//! knows about SQL or MongoDB.

use serde_json::{Map, Number, Value};

/// An object in Parse's REST JSON shape: `objectId`, `createdAt` and
/// `updatedAt` as strings, typed values as `{"__type": ...}` objects, and
/// the `ACL` as Parse's ACL object.
pub type Object = Map<String, Value>;

/// A field, optionally followed by keys into a nested object (`a.b.c`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    pub field: String,
    pub nested: Vec<String>,
}

impl FieldPath {
    pub fn new(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            nested: Vec::new(),
        }
    }

    /// Splits a dotted key. The caller has validated the segments.
    pub fn parse(dotted: &str) -> Self {
        let mut parts = dotted.split('.');
        let field = parts.next().unwrap_or_default().to_owned();
        Self {
            field,
            nested: parts.map(str::to_owned).collect(),
        }
    }

    pub fn is_nested(&self) -> bool {
        !self.nested.is_empty()
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.field)?;
        for part in &self.nested {
            write!(f, ".{part}")?;
        }
        Ok(())
    }
}

/// A value a field is compared with, already decoded from Parse's JSON so
/// backends know which part of a stored value to compare.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    /// A date as Parse's fixed-width ISO-8601 UTC string, which sorts as
    /// the dates do.
    Date(String),
    Pointer {
        class_name: String,
        object_id: String,
    },
    /// A file, compared by name.
    File(String),
    /// Any other JSON (nested objects, arrays, GeoPoints, Bytes): compared
    /// as a whole.
    Json(Value),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub latitude: f64,
    pub longitude: f64,
}

/// A regular expression in Parse's (PCRE-like) syntax, with `\Q...\E`
/// quoting already turned into escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct RegexSpec {
    pub pattern: String,
    /// A subset of `imsx`, as MongoDB's `$options`.
    pub options: String,
}

impl RegexSpec {
    /// The pattern with its options inline, as the `regex` crate takes them.
    pub fn inline(&self) -> String {
        if self.options.is_empty() {
            self.pattern.clone()
        } else {
            format!("(?{}){}", self.options, self.pattern)
        }
    }
}

/// One element test of `$all`.
#[derive(Debug, Clone, PartialEq)]
pub enum ElementMatch {
    Equals(QueryValue),
    Regex(RegexSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextSearch {
    pub term: String,
    pub language: Option<String>,
    pub case_sensitive: bool,
    pub diacritic_sensitive: bool,
}

/// A query on another class, used by `$inQuery`, `$select` and friends.
#[derive(Debug, Clone, PartialEq)]
pub struct SubQuery {
    pub class_name: String,
    pub filter: Filter,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Equal, or, for an array, containing an equal element.
    Eq(QueryValue),
    Ne(QueryValue),
    Lt(QueryValue),
    Lte(QueryValue),
    Gt(QueryValue),
    Gte(QueryValue),
    In(Vec<QueryValue>),
    Nin(Vec<QueryValue>),
    Exists(bool),
    /// An array containing an element matching each entry.
    All(Vec<ElementMatch>),
    /// An array whose every element is in the list.
    ContainedBy(Vec<QueryValue>),
    Regex(RegexSpec),
    /// A pointer (or array of pointers) to an object the subquery matches.
    InQuery(Box<SubQuery>),
    NotInQuery(Box<SubQuery>),
    /// A value equal to `key` of some object the subquery matches.
    Select {
        query: Box<SubQuery>,
        key: FieldPath,
    },
    DontSelect {
        query: Box<SubQuery>,
        key: FieldPath,
    },
    /// Within `max_distance` radians of `point`; results are ordered by
    /// distance unless the query has its own order.
    NearSphere {
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
    /// A Polygon field containing the point.
    GeoIntersects(GeoPoint),
    Text(TextSearch),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches everything.
    All,
    /// Matches nothing.
    Nothing,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Nor(Vec<Filter>),
    Field(FieldPath, Condition),
    /// Objects in the relation `key` of the object `owner_id` of class
    /// `owner_class` (Parse's `$relatedTo`).
    RelatedTo {
        owner_class: String,
        owner_id: String,
        key: String,
    },
    /// Objects whose ACL grants read (or, with `write`, write) access to
    /// any of `principals` (`*`, a user id, `role:Name`), or that have no
    /// ACL at all, which Parse treats as public.
    Permission {
        write: bool,
        principals: Vec<String>,
    },
}

impl Filter {
    pub fn field(path: impl Into<String>, condition: Condition) -> Self {
        Filter::Field(FieldPath::parse(&path.into()), condition)
    }

    /// Both filters, flattening where it can.
    pub fn and(self, other: Filter) -> Filter {
        match (self, other) {
            (Filter::All, f) | (f, Filter::All) => f,
            (Filter::And(mut a), Filter::And(b)) => {
                a.extend(b);
                Filter::And(a)
            }
            (Filter::And(mut a), f) | (f, Filter::And(mut a)) => {
                a.push(f);
                Filter::And(a)
            }
            (a, b) => Filter::And(vec![a, b]),
        }
    }

    /// The top-level fields the filter reads, so callers can tell whether
    /// their schema knows them.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::And(parts) | Filter::Or(parts) | Filter::Nor(parts) => {
                parts.iter().for_each(|p| p.collect_fields(out))
            }
            Filter::Field(path, _) => out.push(&path.field),
            _ => {}
        }
    }

    /// The relations a `$relatedTo` reads, as (owning class, key), so
    /// callers can tell whether their schema knows them.
    pub fn relations_read(&self) -> Vec<(&str, &str)> {
        match self {
            Filter::And(parts) | Filter::Or(parts) | Filter::Nor(parts) => {
                parts.iter().flat_map(Filter::relations_read).collect()
            }
            Filter::RelatedTo {
                owner_class, key, ..
            } => vec![(owner_class, key)],
            _ => Vec::new(),
        }
    }

    /// The `$nearSphere` condition that orders results, if any: one at the
    /// top level or in a top-level `$and`.
    pub fn near_sphere(&self) -> Option<(&FieldPath, GeoPoint)> {
        match self {
            Filter::Field(path, Condition::NearSphere { point, .. }) => Some((path, *point)),
            Filter::And(parts) => parts.iter().find_map(Filter::near_sphere),
            _ => None,
        }
    }

    /// The `$text` search that `order=$score` ranks by, if any.
    pub fn text_search(&self) -> Option<(&FieldPath, &TextSearch)> {
        match self {
            Filter::Field(path, Condition::Text(search)) => Some((path, search)),
            Filter::And(parts) => parts.iter().find_map(Filter::text_search),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Field {
        path: FieldPath,
        descending: bool,
    },
    /// Relevance of the query's `$text` search, best first.
    TextScore,
}

/// A find or count on one class.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub class_name: String,
    pub filter: Filter,
    pub order: Vec<SortKey>,
    pub skip: usize,
    pub limit: Option<usize>,
    /// Top-level fields to return besides `objectId`, `createdAt` and
    /// `updatedAt`; `None` returns every field.
    pub keys: Option<Vec<String>>,
}

impl Query {
    pub fn new(class_name: impl Into<String>) -> Self {
        Self {
            class_name: class_name.into(),
            filter: Filter::All,
            order: Vec::new(),
            skip: 0,
            limit: None,
            keys: None,
        }
    }

    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// JavaScript's truthiness, for the values Parse Server tests with
/// `if (x)`.
pub fn js_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `value` with every object's keys sorted, so equal objects serialize
/// equally whatever order their keys were written in. (Maps keep insertion
/// order in this workspace: the MongoDB driver turns that on.)
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Keeps only the requested top-level keys, the ones every object returns,
/// and `score` when `$score` (the `$text` relevance) was asked for.
pub fn project(object: &mut Object, keys: &[String]) {
    object.retain(|name, _| {
        matches!(
            name.as_str(),
            "objectId" | "createdAt" | "updatedAt" | "ACL"
        ) || keys
            .iter()
            .any(|key| key == name || (key == "$score" && name == "score"))
    });
}
