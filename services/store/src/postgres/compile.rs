//! Compiles the query model into PostgreSQL over Parse Server's layout.
//! Every client value is a bound parameter with an explicit cast;
//! identifiers are quoted. A condition whose value cannot apply to the
//! column's type (a string against a number column, a field the schema
//! does not know) compiles to a constant rather than a type error, so
//! queries behave as they do on the other backends.

use serde_json::{Value, json};

use super::values::{Param, Params, iso_expr};
use crate::error::{StoreError, StoreResult};
use crate::query::{
    Condition, ElementMatch, FieldPath, Filter, GeoPoint, Query, QueryValue, RegexSpec, SortKey,
    SubQuery, TextSearch,
};
use crate::schema::{ClassSchema, FieldType, SchemaView, join_class_name};
use crate::sql::quote_ident;
use crate::text::TextQuery;

const TRUE: &str = "TRUE";
const FALSE: &str = "FALSE";

/// What a condition is evaluated against.
#[derive(Clone)]
enum Target {
    /// A column of a scalar type.
    Column { sql: String, field_type: FieldType },
    /// A jsonb array column: conditions test its elements.
    Array(String),
    /// A jsonb value: an Object column, a path inside one, or an element.
    Json(String),
    /// A field the schema does not know: always NULL.
    Missing,
}

/// A compiled SELECT and where its result columns are.
pub(super) struct Select {
    pub sql: String,
    pub params: Params,
    /// The columns after the five default ones, in order.
    pub columns: Vec<(String, FieldType)>,
    pub with_score: bool,
    /// The version of the schema the statement was compiled for.
    pub stored_version: Option<String>,
}

impl Select {
    /// The column holding the version of the stored schema.
    pub fn stored_version_column(&self) -> usize {
        5 + self.columns.len() + usize::from(self.with_score)
    }
}

pub(super) struct Compiler<'a> {
    schemas: &'a SchemaView,
    pub params: Params,
    aliases: usize,
}

/// Drops parameters the finished statement does not use.
pub(super) fn compact(sql: &str, params: Params) -> (String, Params) {
    let (sql, values) = crate::sql::compact_params(sql, '$', params.values);
    (sql, Params { values })
}

fn not(condition: &str) -> String {
    format!("NOT COALESCE({condition}, FALSE)")
}

fn join(parts: Vec<String>, op: &str, empty: &str) -> String {
    match parts.len() {
        0 => empty.to_owned(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(op)),
    }
}

/// `[value]` as stored in a jsonb array, for containment tests.
fn element_json(value: &QueryValue) -> Value {
    match value {
        QueryValue::Null => Value::Null,
        QueryValue::Bool(b) => Value::Bool(*b),
        QueryValue::Number(n) => Value::Number(n.clone()),
        QueryValue::String(s) => Value::String(s.clone()),
        QueryValue::Date(iso) => json!({"__type": "Date", "iso": iso}),
        QueryValue::Pointer {
            class_name,
            object_id,
        } => json!({"__type": "Pointer", "className": class_name, "objectId": object_id}),
        QueryValue::File(name) => json!({"__type": "File", "name": name}),
        QueryValue::Json(v) => v.clone(),
    }
}

/// PostgreSQL's embedded options for a regex with MongoDB-style options:
/// by default `.` does not match a newline and `^`/`$` match the whole
/// string (`p`); `m` makes `^`/`$` match lines (`n`), `s` lets `.` match a
/// newline, both together are `w`.
fn regex_pattern(spec: &RegexSpec) -> String {
    let mut options: String = spec.options.clone();
    let mut pattern = spec.pattern.as_str();
    // Leading inline flags join the options: PostgreSQL allows them only
    // at the very start, where ours go.
    if let Some(rest) = pattern.strip_prefix("(?")
        && let Some(end) = rest.find(')')
        && rest[..end].chars().all(|c| "imsx".contains(c))
    {
        options.push_str(&rest[..end]);
        pattern = &rest[end + 1..];
    }
    let (multi_line, dot_all) = (options.contains('m'), options.contains('s'));
    let mut flags = String::from(match (multi_line, dot_all) {
        (false, false) => "p",
        (true, false) => "n",
        (false, true) => "s",
        (true, true) => "w",
    });
    if options.contains('i') {
        flags.push('i');
    }
    if options.contains('x') {
        flags.push('x');
    }
    // Rust's word boundary `\b` is `\y` in PostgreSQL, where `\b` is a
    // backspace.
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('b') => out.push_str("\\y"),
                Some('B') => out.push_str("\\Y"),
                Some('z') => out.push_str("\\Z"),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    format!("(?{flags}){out}")
}

impl<'a> Compiler<'a> {
    pub fn new(schemas: &'a SchemaView) -> Self {
        Self {
            schemas,
            params: Params::default(),
            aliases: 0,
        }
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    /// The SELECT of a find.
    pub fn select(mut self, class: &ClassSchema, query: &Query) -> StoreResult<Select> {
        let alias = "t0";
        let filter = self.filter(Some(class), alias, &query.filter)?;
        let with_score = query.filter.text_search().is_some()
            && query
                .keys
                .as_ref()
                .is_some_and(|keys| keys.iter().any(|k| k == "$score"));
        let score_used = with_score || query.order.contains(&SortKey::TextScore);
        let score = match query.filter.text_search() {
            Some((path, search)) if score_used => self.text_score(class, alias, path, search)?,
            _ => None,
        };
        let mut order = Vec::new();
        for key in &query.order {
            match key {
                SortKey::Field { path, descending } => {
                    // Points and polygons have no order, and a missing
                    // field sorts every object alike.
                    let Some(expr) = self.sort_expr(class, alias, path)? else {
                        continue;
                    };
                    order.push(match (*descending, is_object_id(path)) {
                        (true, false) => format!("{expr} DESC NULLS LAST"),
                        (false, false) => format!("{expr} ASC NULLS FIRST"),
                        // Never null: in the primary key's own order.
                        (true, true) => format!("{expr} DESC"),
                        (false, true) => format!("{expr} ASC"),
                    });
                }
                SortKey::TextScore => {
                    if let Some(score) = &score {
                        order.push(format!("{score} DESC"));
                    }
                }
            }
        }
        if order.is_empty()
            && let Some((path, point)) = query.filter.near_sphere()
            && let Target::Column {
                sql,
                field_type: FieldType::GeoPoint,
            } = self.target(Some(class), alias, path)?
        {
            order.push(format!("{} ASC", self.distance(&sql, point)));
        }

        let columns = super::layout::columns(class);
        let mut list = super::select_list(alias, class);
        if with_score {
            list.push(format!("{}::float8", score.as_deref().unwrap_or("0")));
        }
        // Parse Server adds columns without telling anyone (schema hooks
        // are off by default), so each read also answers the version of
        // the class's `_SCHEMA` row (one index lookup per statement); when
        // it is not the version of this schema, the caller reloads and
        // reads again.
        list.push(format!(
            "(SELECT s.xmin::text FROM \"_SCHEMA\" AS s WHERE s.\"className\" = {})",
            self.params.text(class.class_name.clone()),
        ));
        let mut sql = format!(
            "SELECT {} FROM {} AS {alias} WHERE {filter}",
            list.join(", "),
            quote_ident(&class.class_name)
        );
        if !order.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&order.join(", "));
        }
        if let Some(limit) = query.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        if query.skip > 0 {
            sql.push_str(&format!(" OFFSET {}", query.skip));
        }
        let (sql, params) = compact(&sql, self.params);
        Ok(Select {
            sql,
            params,
            columns,
            with_score,
            stored_version: class.stored_version.clone(),
        })
    }

    pub fn count(mut self, class: &ClassSchema, filter: &Filter) -> StoreResult<(String, Params)> {
        let filter = self.filter(Some(class), "t0", filter)?;
        let sql = format!(
            "SELECT count(*) FROM {} AS t0 WHERE {filter}",
            quote_ident(&class.class_name)
        );
        Ok(compact(&sql, self.params))
    }

    /// A condition on table `alias`, for write preconditions. `params`
    /// continue numbering after the caller's own.
    /// The caller's statement must be compacted with [`compact`] once it
    /// is complete.
    pub fn condition(
        mut self,
        class: &ClassSchema,
        alias: &str,
        filter: &Filter,
        params: Params,
    ) -> StoreResult<(String, Params)> {
        self.params = params;
        let sql = self.filter(Some(class), alias, filter)?;
        Ok((sql, self.params))
    }

    fn filter(
        &mut self,
        class: Option<&ClassSchema>,
        alias: &str,
        filter: &Filter,
    ) -> StoreResult<String> {
        Ok(match filter {
            Filter::All => TRUE.into(),
            Filter::Nothing => FALSE.into(),
            Filter::And(parts) => {
                let parts = parts
                    .iter()
                    .map(|p| self.filter(class, alias, p))
                    .collect::<StoreResult<_>>()?;
                join(parts, " AND ", TRUE)
            }
            Filter::Or(parts) => {
                let parts = parts
                    .iter()
                    .map(|p| self.filter(class, alias, p))
                    .collect::<StoreResult<_>>()?;
                join(parts, " OR ", FALSE)
            }
            Filter::Nor(parts) => {
                let parts = parts
                    .iter()
                    .map(|p| self.filter(class, alias, p).map(|c| not(&c)))
                    .collect::<StoreResult<_>>()?;
                join(parts, " AND ", TRUE)
            }
            Filter::Field(path, condition) => self.field(class, alias, path, condition)?,
            Filter::RelatedTo {
                owner_class,
                owner_id,
                key,
            } => {
                let is_relation = self
                    .schemas
                    .get(owner_class)
                    .and_then(|c| c.field_type(key))
                    .is_some_and(|t| matches!(t, FieldType::Relation { .. }));
                if !is_relation {
                    return Ok(FALSE.into());
                }
                let id = self.params.text(owner_id.clone());
                format!(
                    "{alias}.\"objectId\" IN (SELECT \"relatedId\" FROM {} WHERE \"owningId\" = {id})",
                    quote_ident(&join_class_name(key, owner_class))
                )
            }
            Filter::Permission { write, principals } => {
                let column = if *write { "_wperm" } else { "_rperm" };
                let list = self
                    .params
                    .bind(Param::TextArray(principals.clone()), "text[]");
                format!("({alias}.\"{column}\" IS NULL OR {alias}.\"{column}\" && {list})")
            }
        })
    }

    fn target(
        &mut self,
        class: Option<&ClassSchema>,
        alias: &str,
        path: &FieldPath,
    ) -> StoreResult<Target> {
        let field_type = match path.field.as_str() {
            "objectId" => Some(FieldType::String),
            "createdAt" | "updatedAt" => Some(FieldType::Date),
            name => class.and_then(|c| c.field_type(name)).cloned().or_else(|| {
                // Parse's internal `_User` columns are queryable too.
                class.filter(|c| c.class_name == "_User").and_then(|_| {
                    super::layout::USER_INTERNAL_COLUMNS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, t)| t.clone())
                })
            }),
        };
        let Some(field_type) = field_type else {
            return Ok(Target::Missing);
        };
        let column = format!("{alias}.{}", quote_ident(&path.field));
        if path.is_nested() {
            return Ok(match field_type {
                FieldType::Object | FieldType::Array => {
                    let segments = self
                        .params
                        .bind(Param::TextArray(path.nested.clone()), "text[]");
                    Target::Json(format!("({column} #> {segments})"))
                }
                _ => Target::Missing,
            });
        }
        Ok(match field_type {
            FieldType::Array => Target::Array(column),
            FieldType::Object | FieldType::Bytes => Target::Json(column),
            field_type => Target::Column {
                sql: column,
                field_type,
            },
        })
    }

    /// The placeholder comparing with a column of `field_type`, or `None`
    /// when the value cannot equal anything such a column holds.
    fn operand(&mut self, field_type: &FieldType, value: &QueryValue) -> Option<String> {
        Some(match (field_type, value) {
            (FieldType::String, QueryValue::String(s)) => self.params.text(s.clone()),
            (FieldType::Number, QueryValue::Number(n)) => self.params.float(n.as_f64()?),
            (FieldType::Boolean, QueryValue::Bool(b)) => {
                self.params.bind(Param::Bool(*b), "boolean")
            }
            (FieldType::Date, QueryValue::Date(iso)) => {
                format!("{}::timestamptz", self.params.text(iso.clone()))
            }
            (FieldType::Pointer { .. }, QueryValue::Pointer { object_id, .. }) => {
                self.params.text(object_id.clone())
            }
            (FieldType::File, QueryValue::File(name)) => self.params.text(name.clone()),
            _ => return None,
        })
    }

    /// Equality of a jsonb value with a query value.
    fn json_eq(&mut self, x: &str, value: &QueryValue) -> String {
        match value {
            QueryValue::Null => format!("({x} IS NULL OR jsonb_typeof({x}) = 'null')"),
            QueryValue::Date(iso) => format!("({x} ->> 'iso') = {}", self.params.text(iso.clone())),
            QueryValue::Pointer { object_id, .. } => {
                format!(
                    "({x} ->> 'objectId') = {}",
                    self.params.text(object_id.clone())
                )
            }
            QueryValue::File(name) => {
                format!("({x} ->> 'name') = {}", self.params.text(name.clone()))
            }
            other => format!("{x} = {}", self.params.json(element_json(other))),
        }
    }

    /// Equality on a jsonb value that may be an array whose elements count.
    fn json_eq_any(&mut self, x: &str, value: &QueryValue) -> String {
        let whole = self.json_eq(x, value);
        if matches!(value, QueryValue::Null) {
            return whole;
        }
        let contains = self.params.json(json!([element_json(value)]));
        format!("({whole} OR (jsonb_typeof({x}) = 'array' AND {x} @> {contains}))")
    }

    fn json_compare(&mut self, x: &str, op: &str, value: &QueryValue) -> String {
        match value {
            QueryValue::Number(n) => match n.as_f64() {
                Some(f) => format!(
                    "(CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x} #>> '{{}}')::float8 END) {op} {}",
                    self.params.float(f)
                ),
                None => FALSE.into(),
            },
            QueryValue::String(s) => format!(
                "(CASE WHEN jsonb_typeof({x}) = 'string' THEN {x} #>> '{{}}' END) {op} {} COLLATE \"C\"",
                self.params.text(s.clone())
            ),
            QueryValue::Date(iso) => {
                format!("({x} ->> 'iso') {op} {}", self.params.text(iso.clone()))
            }
            _ => FALSE.into(),
        }
    }

    fn json_text(x: &str) -> String {
        format!("(CASE WHEN jsonb_typeof({x}) = 'string' THEN {x} #>> '{{}}' END)")
    }

    /// `EXISTS` over the elements of a jsonb array (any other value has
    /// none).
    fn exists_element(&mut self, x: &str, test: impl FnOnce(&mut Self, &str) -> String) -> String {
        let e = self.alias("e");
        let element = format!("{e}.value");
        let condition = test(self, &element);
        format!(
            "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({x}) = 'array' THEN {x} ELSE '[]'::jsonb END) AS {e}(value) WHERE {condition})"
        )
    }

    fn field(
        &mut self,
        class: Option<&ClassSchema>,
        alias: &str,
        path: &FieldPath,
        condition: &Condition,
    ) -> StoreResult<String> {
        if let Some(class) = class
            && !path.is_nested()
            && let Some(FieldType::Relation { .. }) = class.field_type(&path.field)
        {
            return Ok(self.relation(class, alias, &path.field, condition));
        }
        let target = self.target(class, alias, path)?;
        Ok(match target {
            Target::Missing => missing(condition),
            Target::Column { sql, field_type } => {
                self.column(&sql, &field_type, condition, class, alias, path)?
            }
            Target::Array(x) => self.array(&x, condition)?,
            Target::Json(x) => self.json(&x, condition)?,
        })
    }

    fn column(
        &mut self,
        col: &str,
        field_type: &FieldType,
        condition: &Condition,
        class: Option<&ClassSchema>,
        alias: &str,
        path: &FieldPath,
    ) -> StoreResult<String> {
        let text_like = matches!(
            field_type,
            FieldType::String | FieldType::Pointer { .. } | FieldType::File
        );
        let collate = if *field_type == FieldType::String && !is_object_id(path) {
            " COLLATE \"C\""
        } else {
            ""
        };
        Ok(match condition {
            Condition::Eq(QueryValue::Null) => format!("{col} IS NULL"),
            Condition::Ne(QueryValue::Null) => format!("{col} IS NOT NULL"),
            Condition::Eq(value) => match self.operand(field_type, value) {
                Some(p) => format!("{col} = {p}"),
                None => FALSE.into(),
            },
            Condition::Ne(value) => match self.operand(field_type, value) {
                Some(p) => format!("{col} IS DISTINCT FROM {p}"),
                None => TRUE.into(),
            },
            Condition::In(values) | Condition::Nin(values) => {
                let mut parts = Vec::new();
                let mut list = Vec::new();
                for value in values {
                    if matches!(value, QueryValue::Null) {
                        parts.push(format!("{col} IS NULL"));
                    } else if let Some(p) = self.operand(field_type, value) {
                        list.push(p);
                    }
                }
                if !list.is_empty() {
                    parts.push(format!("{col} IN ({})", list.join(", ")));
                }
                let matched = join(parts, " OR ", FALSE);
                if matches!(condition, Condition::Nin(_)) {
                    not(&matched)
                } else {
                    matched
                }
            }
            Condition::Lt(v) | Condition::Lte(v) | Condition::Gt(v) | Condition::Gte(v) => {
                let op = comparison(condition);
                match self.operand(field_type, v) {
                    Some(p) if !matches!(field_type, FieldType::Boolean) => {
                        format!("{col}{collate} {op} {p}")
                    }
                    _ => FALSE.into(),
                }
            }
            Condition::Exists(exists) => {
                format!("{col} IS {}NULL", if *exists { "NOT " } else { "" })
            }
            Condition::Regex(spec) if text_like => {
                format!("{col} ~ {}", self.params.text(regex_pattern(spec)))
            }
            Condition::InQuery(sub) | Condition::NotInQuery(sub) => {
                let matched = match (field_type, self.subselect_ids(sub)?) {
                    (FieldType::Pointer { .. } | FieldType::String, Some(ids)) => {
                        format!("{col} IN {ids}")
                    }
                    _ => FALSE.into(),
                };
                if matches!(condition, Condition::NotInQuery(_)) {
                    not(&matched)
                } else {
                    matched
                }
            }
            Condition::Select { query, key } | Condition::DontSelect { query, key } => {
                let matched = match self.subselect_key(query, key)? {
                    Some((sub, _)) => format!("{} IN {sub}", canonical_column(col, field_type)),
                    None => FALSE.into(),
                };
                if matches!(condition, Condition::DontSelect { .. }) {
                    not(&matched)
                } else {
                    matched
                }
            }
            Condition::NearSphere {
                point,
                max_distance,
            } if *field_type == FieldType::GeoPoint => match max_distance {
                Some(max) => format!(
                    "{} <= {}",
                    self.distance(col, *point),
                    self.params.float(*max)
                ),
                None => format!("{col} IS NOT NULL"),
            },
            Condition::WithinCenterSphere { center, radius }
                if *field_type == FieldType::GeoPoint =>
            {
                format!(
                    "{} <= {}",
                    self.distance(col, *center),
                    self.params.float(*radius)
                )
            }
            Condition::WithinBox {
                south_west,
                north_east,
            } if *field_type == FieldType::GeoPoint => {
                let [a, b, c, d] = [
                    south_west.longitude,
                    south_west.latitude,
                    north_east.longitude,
                    north_east.latitude,
                ]
                .map(|v| self.params.float(v));
                format!("{col} <@ box(point({a}, {b}), point({c}, {d}))")
            }
            Condition::WithinPolygon(points) if *field_type == FieldType::GeoPoint => {
                let ring: Vec<String> = points
                    .iter()
                    .map(|p| format!("({},{})", p.longitude, p.latitude))
                    .collect();
                let polygon = self.params.text(format!("({})", ring.join(",")));
                format!("{col} <@ {polygon}::polygon")
            }
            Condition::GeoIntersects(point) if *field_type == FieldType::Polygon => {
                let (lng, lat) = (
                    self.params.float(point.longitude),
                    self.params.float(point.latitude),
                );
                format!("{col} @> point({lng}, {lat})")
            }
            Condition::Text(search) if *field_type == FieldType::String => {
                let class =
                    class.ok_or_else(|| StoreError::InvalidQuery("$text needs a class".into()))?;
                match self.text_match(class, alias, path, search)? {
                    Some(m) => m,
                    None => FALSE.into(),
                }
            }
            _ => FALSE.into(),
        })
    }

    fn array(&mut self, x: &str, condition: &Condition) -> StoreResult<String> {
        Ok(match condition {
            Condition::Eq(QueryValue::Null) => format!("{x} IS NULL"),
            Condition::Ne(QueryValue::Null) => format!("{x} IS NOT NULL"),
            Condition::Eq(value) => self.array_eq(x, value),
            Condition::Ne(value) => not(&self.array_eq(x, value)),
            Condition::In(values) | Condition::Nin(values) => {
                let parts = values
                    .iter()
                    .map(|v| match v {
                        QueryValue::Null => format!("{x} IS NULL"),
                        v => self.array_eq(x, v),
                    })
                    .collect();
                let matched = join(parts, " OR ", FALSE);
                if matches!(condition, Condition::Nin(_)) {
                    not(&matched)
                } else {
                    matched
                }
            }
            Condition::Lt(v) | Condition::Lte(v) | Condition::Gt(v) | Condition::Gte(v) => {
                let op = comparison(condition);
                self.exists_element(x, |c, e| c.json_compare(e, op, v))
            }
            Condition::Exists(exists) => {
                format!("{x} IS {}NULL", if *exists { "NOT " } else { "" })
            }
            Condition::Regex(spec) => {
                let pattern = self.params.text(regex_pattern(spec));
                self.exists_element(x, |_, e| format!("{} ~ {pattern}", Self::json_text(e)))
            }
            Condition::All(matchers) => {
                if matchers.is_empty() {
                    return Ok(FALSE.into());
                }
                let mut parts = Vec::new();
                let values: Vec<Value> = matchers
                    .iter()
                    .filter_map(|m| match m {
                        ElementMatch::Equals(v) => Some(element_json(v)),
                        ElementMatch::Regex(_) => None,
                    })
                    .collect();
                if !values.is_empty() {
                    parts.push(format!("{x} @> {}", self.params.json(Value::Array(values))));
                }
                for matcher in matchers {
                    if let ElementMatch::Regex(spec) = matcher {
                        let pattern = self.params.text(regex_pattern(spec));
                        parts.push(self.exists_element(x, |_, e| {
                            format!("{} ~ {pattern}", Self::json_text(e))
                        }));
                    }
                }
                join(parts, " AND ", TRUE)
            }
            Condition::ContainedBy(values) => {
                let list = self
                    .params
                    .json(Value::Array(values.iter().map(element_json).collect()));
                format!("(jsonb_typeof({x}) = 'array' AND {x} <@ {list})")
            }
            Condition::InQuery(sub) | Condition::NotInQuery(sub) => {
                let matched = match self.subselect_ids(sub)? {
                    Some(ids) => {
                        self.exists_element(x, |_, e| format!("({e} ->> 'objectId') IN {ids}"))
                    }
                    None => FALSE.into(),
                };
                if matches!(condition, Condition::NotInQuery(_)) {
                    not(&matched)
                } else {
                    matched
                }
            }
            Condition::Select { query, key } | Condition::DontSelect { query, key } => {
                let matched = match self.subselect_key(query, key)? {
                    Some((sub, key_type)) => self.exists_element(x, |_, e| {
                        format!("{} IN {sub}", canonical_json(e, key_type.as_ref()))
                    }),
                    None => FALSE.into(),
                };
                if matches!(condition, Condition::DontSelect { .. }) {
                    not(&matched)
                } else {
                    matched
                }
            }
            _ => FALSE.into(),
        })
    }

    fn array_eq(&mut self, x: &str, value: &QueryValue) -> String {
        match value {
            QueryValue::Json(Value::Array(_)) => {
                let whole = self.params.json(element_json(value));
                format!("({x} = {whole} OR {x} @> jsonb_build_array({whole}))")
            }
            v => format!("{x} @> {}", self.params.json(json!([element_json(v)]))),
        }
    }

    fn json(&mut self, x: &str, condition: &Condition) -> StoreResult<String> {
        Ok(match condition {
            Condition::Eq(value) => self.json_eq_any(x, value),
            Condition::Ne(value) => not(&self.json_eq_any(x, value)),
            Condition::In(values) | Condition::Nin(values) => {
                let parts = values.iter().map(|v| self.json_eq_any(x, v)).collect();
                let matched = join(parts, " OR ", FALSE);
                if matches!(condition, Condition::Nin(_)) {
                    not(&matched)
                } else {
                    matched
                }
            }
            Condition::Lt(v) | Condition::Lte(v) | Condition::Gt(v) | Condition::Gte(v) => {
                self.json_compare(x, comparison(condition), v)
            }
            Condition::Exists(exists) => {
                format!("{x} IS {}NULL", if *exists { "NOT " } else { "" })
            }
            Condition::Regex(spec) => {
                format!(
                    "{} ~ {}",
                    Self::json_text(x),
                    self.params.text(regex_pattern(spec))
                )
            }
            Condition::All(_) | Condition::ContainedBy(_) => self.array(x, condition)?,
            Condition::InQuery(sub) | Condition::NotInQuery(sub) => {
                let matched = match self.subselect_ids(sub)? {
                    Some(ids) => format!("({x} ->> 'objectId') IN {ids}"),
                    None => FALSE.into(),
                };
                if matches!(condition, Condition::NotInQuery(_)) {
                    not(&matched)
                } else {
                    matched
                }
            }
            Condition::Select { query, key } | Condition::DontSelect { query, key } => {
                let matched = match self.subselect_key(query, key)? {
                    Some((sub, key_type)) => {
                        format!("{} IN {sub}", canonical_json(x, key_type.as_ref()))
                    }
                    None => FALSE.into(),
                };
                if matches!(condition, Condition::DontSelect { .. }) {
                    not(&matched)
                } else {
                    matched
                }
            }
            _ => FALSE.into(),
        })
    }

    /// A condition on a Relation field, through its join table.
    fn relation(
        &mut self,
        class: &ClassSchema,
        alias: &str,
        field: &str,
        condition: &Condition,
    ) -> String {
        let table = quote_ident(&join_class_name(field, &class.class_name));
        let ids = |values: &[QueryValue]| -> Vec<String> {
            values
                .iter()
                .filter_map(|v| match v {
                    QueryValue::Pointer { object_id, .. } => Some(object_id.clone()),
                    _ => None,
                })
                .collect()
        };
        let (ids, negated) = match condition {
            Condition::Eq(v) => (ids(std::slice::from_ref(v)), false),
            Condition::In(values) => (ids(values), false),
            Condition::Ne(v) => (ids(std::slice::from_ref(v)), true),
            Condition::Nin(values) => (ids(values), true),
            Condition::Exists(exists) => {
                let any = format!(
                    "EXISTS (SELECT 1 FROM {table} WHERE \"owningId\" = {alias}.\"objectId\")"
                );
                return if *exists { any } else { format!("NOT {any}") };
            }
            _ => return FALSE.into(),
        };
        let matched = if ids.is_empty() {
            FALSE.to_owned()
        } else {
            let list = self.params.bind(Param::TextArray(ids), "text[]");
            format!(
                "{alias}.\"objectId\" IN (SELECT \"owningId\" FROM {table} WHERE \"relatedId\" = ANY({list}))"
            )
        };
        if negated { not(&matched) } else { matched }
    }

    /// `(SELECT "objectId" FROM <class> WHERE ...)`, or `None` for a class
    /// that does not exist.
    fn subselect_ids(&mut self, sub: &SubQuery) -> StoreResult<Option<String>> {
        let Some(class) = self.schemas.get(&sub.class_name).cloned() else {
            return Ok(None);
        };
        let alias = self.alias("t");
        let filter = self.filter(Some(&class), &alias, &sub.filter)?;
        Ok(Some(format!(
            "(SELECT {alias}.\"objectId\" FROM {} AS {alias} WHERE {filter})",
            quote_ident(&class.class_name)
        )))
    }

    /// `(SELECT <key as canonical jsonb text> FROM ...)` and the key's type.
    fn subselect_key(
        &mut self,
        sub: &SubQuery,
        key: &FieldPath,
    ) -> StoreResult<Option<(String, Option<FieldType>)>> {
        let Some(class) = self.schemas.get(&sub.class_name).cloned() else {
            return Ok(None);
        };
        let alias = self.alias("t");
        let filter = self.filter(Some(&class), &alias, &sub.filter)?;
        let (value, key_type) = match self.target(Some(&class), &alias, key)? {
            Target::Missing => return Ok(None),
            Target::Column { sql, field_type } => {
                (canonical_column(&sql, &field_type), Some(field_type))
            }
            Target::Array(x) | Target::Json(x) => (format!("{x}::text"), None),
        };
        Ok(Some((
            format!(
                "(SELECT {value} FROM {} AS {alias} WHERE {filter})",
                quote_ident(&class.class_name)
            ),
            key_type,
        )))
    }

    /// Great-circle distance in radians from a point column, in core SQL
    /// (no PostGIS): the haversine formula on `point` (x = lng, y = lat).
    fn distance(&mut self, col: &str, point: GeoPoint) -> String {
        let lat = self.params.float(point.latitude);
        let lng = self.params.float(point.longitude);
        format!(
            "(2 * asin(sqrt(LEAST(1, power(sin(radians({col}[1] - {lat}) / 2), 2) + cos(radians({lat})) * cos(radians({col}[1])) * power(sin(radians({col}[0] - {lng}) / 2), 2)))))"
        )
    }

    fn text_parts(
        &mut self,
        class: &ClassSchema,
        alias: &str,
        path: &FieldPath,
        search: &TextSearch,
    ) -> StoreResult<Option<(String, String)>> {
        let Target::Column {
            sql,
            field_type: FieldType::String,
        } = self.target(Some(class), alias, path)?
        else {
            return Ok(None);
        };
        let Some(query) = TextQuery::parse(&search.term, false, true).to_tsquery() else {
            return Ok(None);
        };
        let language = self
            .params
            .text(search.language.clone().unwrap_or_else(|| "english".into()));
        let query = self.params.text(query);
        Ok(Some((
            format!("to_tsvector({language}::regconfig, COALESCE({sql}, ''))"),
            format!("to_tsquery({language}::regconfig, {query})"),
        )))
    }

    fn text_match(
        &mut self,
        class: &ClassSchema,
        alias: &str,
        path: &FieldPath,
        search: &TextSearch,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .text_parts(class, alias, path, search)?
            .map(|(vector, query)| format!("{vector} @@ {query}")))
    }

    /// The relevance of a `$text` search, or `None` when the search can
    /// match nothing (then there is nothing to rank).
    fn text_score(
        &mut self,
        class: &ClassSchema,
        alias: &str,
        path: &FieldPath,
        search: &TextSearch,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .text_parts(class, alias, path, search)?
            .map(|(vector, query)| format!("ts_rank_cd({vector}, {query}, 32)")))
    }

    fn sort_expr(
        &mut self,
        class: &ClassSchema,
        alias: &str,
        path: &FieldPath,
    ) -> StoreResult<Option<String>> {
        Ok(match self.target(Some(class), alias, path)? {
            Target::Column {
                sql,
                field_type: FieldType::String,
            } if !is_object_id(path) => Some(format!("{sql} COLLATE \"C\"")),
            Target::Column {
                field_type: FieldType::GeoPoint | FieldType::Polygon,
                ..
            }
            | Target::Missing => None,
            Target::Column { sql, .. } | Target::Array(sql) | Target::Json(sql) => Some(sql),
        })
    }
}

/// `objectId` compares and sorts in the database's collation, as Parse
/// Server's adapter does, rather than byte order: the primary key's index
/// then serves `objectId > x ORDER BY objectId` (keyset paging, as a push
/// pages `_Installation`), where `COLLATE "C"` would scan the table.
fn is_object_id(path: &FieldPath) -> bool {
    path.field == "objectId" && path.nested.is_empty()
}

fn comparison(condition: &Condition) -> &'static str {
    match condition {
        Condition::Lt(_) => "<",
        Condition::Lte(_) => "<=",
        Condition::Gt(_) => ">",
        _ => ">=",
    }
}

/// A field the schema does not know is NULL everywhere: only conditions a
/// missing value satisfies match.
fn missing(condition: &Condition) -> String {
    let matches = match condition {
        Condition::Eq(v) => matches!(v, QueryValue::Null),
        Condition::Ne(v) => !matches!(v, QueryValue::Null),
        Condition::In(values) => values.iter().any(|v| matches!(v, QueryValue::Null)),
        Condition::Nin(values) => !values.iter().any(|v| matches!(v, QueryValue::Null)),
        Condition::Exists(exists) => !exists,
        Condition::NotInQuery(_) | Condition::DontSelect { .. } => true,
        _ => false,
    };
    if matches { TRUE } else { FALSE }.into()
}

/// A column's value as the text of its JSON form, so `$select` compares
/// values of any type across classes (a pointer column holds its objectId,
/// a date its ISO text, matching [`canonical_json`] on the other side).
fn canonical_column(col: &str, field_type: &FieldType) -> String {
    match field_type {
        FieldType::Date => format!("to_jsonb({})::text", iso_expr(col)),
        FieldType::GeoPoint | FieldType::Polygon => format!("{col}::text"),
        _ => format!("to_jsonb({col})::text"),
    }
}

/// A jsonb value's identifying part as JSON text, given the type of the
/// value it is compared with.
fn canonical_json(x: &str, hint: Option<&FieldType>) -> String {
    match hint {
        Some(FieldType::Date) => format!("({x} -> 'iso')::text"),
        Some(FieldType::Pointer { .. }) => format!("({x} -> 'objectId')::text"),
        Some(FieldType::File) => format!("({x} -> 'name')::text"),
        _ => format!("{x}::text"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_options_map_to_postgres_flags() {
        let spec = |pattern: &str, options: &str| RegexSpec {
            pattern: pattern.into(),
            options: options.into(),
        };
        assert_eq!(regex_pattern(&spec("^a.b$", "")), "(?p)^a.b$");
        assert_eq!(regex_pattern(&spec("^a", "mi")), "(?ni)^a");
        assert_eq!(regex_pattern(&spec("a.b", "sm")), "(?w)a.b");
        assert_eq!(
            regex_pattern(&spec("(?i)\\bword\\b", "")),
            "(?pi)\\yword\\y"
        );
        assert_eq!(regex_pattern(&spec("\\\\b", "")), "(?p)\\\\b");
    }

    #[test]
    fn values_a_column_cannot_hold_compile_to_constants() {
        let mut schema = ClassSchema::new("C");
        schema.fields.insert("n".into(), FieldType::Number.into());
        let view = SchemaView::new([schema.clone()]);
        let query = Query::new("C").filter(Filter::field(
            "n",
            Condition::Eq(QueryValue::String("1".into())),
        ));
        let select = Compiler::new(&view).select(&schema, &query).unwrap();
        assert!(select.sql.contains("WHERE FALSE"), "{}", select.sql);
        let query = Query::new("C").filter(Filter::field("nope", Condition::Exists(false)));
        let select = Compiler::new(&view).select(&schema, &query).unwrap();
        assert!(select.sql.contains("WHERE TRUE"), "{}", select.sql);
    }
}
