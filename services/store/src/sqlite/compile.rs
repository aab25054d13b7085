//! Compiles the query model into SQLite SQL over the layout in `mod.rs`:
//! one table per class with `objectId`, `createdAt` and `updatedAt` columns
//! and the rest of the object as JSON in `data`.
//!
//! Every value a client supplies is bound as a parameter. Class names are
//! quoted identifiers; JSON paths are inlined only when every segment is a
//! plain word (so they can match expression indexes) and bound otherwise.

use rusqlite::types::Value as SqlValue;

use super::functions::{GEO_DISTANCE, IN_POLYGON, POLYGON_CONTAINS, REGEXP, TEXT_SCORE, TextSpec};
use crate::error::{StoreError, StoreResult};
use crate::query::{
    Condition, ElementMatch, FieldPath, Filter, GeoPoint, Query, QueryValue, RegexSpec, SortKey,
    SubQuery, TextSearch, canonical,
};
use crate::schema::{ClassSchema, FieldType, SchemaView, join_class_name};
use crate::sql::quote_ident;

/// Columns every class table has besides `data`.
pub(crate) const COLUMNS: [&str; 3] = ["objectId", "createdAt", "updatedAt"];

/// A JSON path segment that can be inlined into SQL text as is.
fn is_plain(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The JSON path of a field path inside `data`.
pub(crate) fn json_path(path: &FieldPath) -> StoreResult<String> {
    let mut out = String::from("$");
    for segment in std::iter::once(&path.field).chain(&path.nested) {
        if is_plain(segment) {
            out.push('.');
            out.push_str(segment);
        } else if !segment.is_empty() && !segment.contains(['"', '\\']) {
            out.push_str(&format!(".\"{segment}\""));
        } else {
            return Err(StoreError::InvalidQuery(format!(
                "unsupported key in path {path}"
            )));
        }
    }
    Ok(out)
}

/// What a condition is evaluated against.
#[derive(Clone)]
enum Target {
    /// A column of the row (`objectId`, `createdAt`, `updatedAt`).
    Column(String),
    /// A JSON path into the row's `data`.
    Path { doc: String, path: String },
    /// The current element of a `json_each` over an array.
    Element(String),
}

/// Whether a target can hold an array whose elements a condition tests.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Scalar,
    Array,
    Unknown,
}

pub(crate) struct Compiler<'a> {
    schemas: &'a SchemaView,
    params: Vec<SqlValue>,
    aliases: usize,
    /// `(class, JSON path)` pairs this query filters or sorts on, worth an
    /// expression index.
    pub index_hints: Vec<(String, String)>,
}

pub(crate) struct Select {
    pub sql: String,
    pub params: Vec<SqlValue>,
    pub index_hints: Vec<(String, String)>,
    /// Whether the last selected column is the `$text` score.
    pub with_score: bool,
}

impl<'a> Compiler<'a> {
    pub fn new(schemas: &'a SchemaView) -> Self {
        Self {
            schemas,
            params: Vec::new(),
            aliases: 0,
            index_hints: Vec::new(),
        }
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("?{}", self.params.len())
    }

    fn bind_text(&mut self, text: &str) -> String {
        self.bind(SqlValue::Text(text.to_owned()))
    }

    fn path_sql(&mut self, path: &str) -> String {
        if path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$')
        {
            format!("'{path}'")
        } else {
            self.bind_text(path)
        }
    }

    /// `SELECT objectId, createdAt, updatedAt, data [, score] ...` for a find.
    pub fn select(mut self, class: &ClassSchema, query: &Query) -> StoreResult<Select> {
        let alias = "t0".to_owned();
        let filter = self.filter(Some(class), &alias, &query.filter)?;
        let text = query.filter.text_search();
        let with_score = text.is_some()
            && query
                .keys
                .as_ref()
                .is_some_and(|keys| keys.iter().any(|k| k == "$score"));
        // Every bound parameter must appear in the SQL, so the score is
        // only compiled when something uses it.
        let score_used = with_score || query.order.contains(&SortKey::TextScore);
        let score = match text {
            Some((path, search)) if score_used => {
                Some(self.text_score(Some(class), &alias, path, search)?)
            }
            _ => None,
        };
        let mut order = Vec::new();
        for key in &query.order {
            match key {
                SortKey::Field { path, descending } => {
                    let expr = self.sort_expr(class, &alias, path)?;
                    order.push(format!(
                        "{expr} {}",
                        if *descending { "DESC" } else { "ASC" }
                    ));
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
        {
            let target = self.target(Some(class), &alias, path)?.0;
            let distance = self.distance(&target, point);
            order.push(format!("{distance} ASC"));
        }
        let mut sql = format!(
            "SELECT {alias}.objectId, {alias}.createdAt, {alias}.updatedAt, {alias}.data{} FROM {} AS {alias} WHERE {filter}",
            match (&score, with_score) {
                (Some(score), true) => format!(", {score}"),
                _ => String::new(),
            },
            quote_ident(&class.class_name),
        );
        if !order.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&order.join(", "));
        }
        // LIMIT and OFFSET are inlined: bound, they make SQLite re-plan the
        // statement on every execution. They are our own integers.
        match query.limit {
            Some(limit) => sql.push_str(&format!(" LIMIT {}", clamp_i64(limit))),
            None if query.skip > 0 => sql.push_str(" LIMIT -1"),
            None => {}
        }
        if query.skip > 0 {
            sql.push_str(&format!(" OFFSET {}", clamp_i64(query.skip)));
        }
        let (sql, params) = crate::sql::compact_params(&sql, '?', self.params);
        Ok(Select {
            sql,
            params,
            index_hints: self.index_hints,
            with_score,
        })
    }

    /// `SELECT COUNT(*) ...`.
    pub fn count(mut self, class: &ClassSchema, filter: &Filter) -> StoreResult<Select> {
        let filter = self.filter(Some(class), "t0", filter)?;
        let sql = format!(
            "SELECT COUNT(*) FROM {} AS t0 WHERE {filter}",
            quote_ident(&class.class_name)
        );
        let (sql, params) = crate::sql::compact_params(&sql, '?', self.params);
        Ok(Select {
            sql,
            params,
            index_hints: self.index_hints,
            with_score: false,
        })
    }

    /// A WHERE condition on table `alias` (used for write preconditions).
    pub fn condition(
        mut self,
        class: &ClassSchema,
        alias: &str,
        filter: &Filter,
        first_param: Vec<SqlValue>,
    ) -> StoreResult<(String, Vec<SqlValue>)> {
        self.params = first_param;
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
            Filter::All => "1".into(),
            Filter::Nothing => "0".into(),
            Filter::And(parts) => self.join(class, alias, parts, " AND ", "1")?,
            Filter::Or(parts) => self.join(class, alias, parts, " OR ", "0")?,
            Filter::Nor(parts) => {
                let mut out = Vec::new();
                for part in parts {
                    out.push(not(&self.filter(class, alias, part)?));
                }
                if out.is_empty() {
                    "1".into()
                } else {
                    format!("({})", out.join(" AND "))
                }
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
                if is_relation {
                    let id = self.bind_text(owner_id);
                    format!(
                        "{alias}.objectId IN (SELECT relatedId FROM {} WHERE owningId = {id})",
                        quote_ident(&join_class_name(key, owner_class))
                    )
                } else {
                    "0".into()
                }
            }
            Filter::Permission { write, principals } => {
                let column = if *write { "_wperm" } else { "_rperm" };
                if principals.is_empty() {
                    format!("{alias}.{column} IS NULL")
                } else {
                    let list: Vec<String> = principals.iter().map(|p| self.bind_text(p)).collect();
                    format!(
                        "({alias}.{column} IS NULL OR EXISTS (SELECT 1 FROM json_each({alias}.{column}) WHERE value IN ({})))",
                        list.join(", ")
                    )
                }
            }
        })
    }

    /// A condition on a Relation field: whether the object's relation holds
    /// the given pointers, through its join table.
    fn relation(
        &mut self,
        class: &ClassSchema,
        alias: &str,
        field: &str,
        condition: &Condition,
    ) -> String {
        let join = quote_ident(&join_class_name(field, &class.class_name));
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
                let any =
                    format!("EXISTS (SELECT 1 FROM {join} WHERE owningId = {alias}.objectId)");
                return if *exists { any } else { format!("NOT {any}") };
            }
            _ => return "0".into(),
        };
        let matched = if ids.is_empty() {
            "0".to_owned()
        } else {
            let list: Vec<String> = ids.iter().map(|id| self.bind_text(id)).collect();
            format!(
                "{alias}.objectId IN (SELECT owningId FROM {join} WHERE relatedId IN ({}))",
                list.join(", ")
            )
        };
        if negated { not(&matched) } else { matched }
    }

    fn join(
        &mut self,
        class: Option<&ClassSchema>,
        alias: &str,
        parts: &[Filter],
        op: &str,
        empty: &str,
    ) -> StoreResult<String> {
        if parts.is_empty() {
            return Ok(empty.into());
        }
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            out.push(self.filter(class, alias, part)?);
        }
        Ok(format!("({})", out.join(op)))
    }

    /// The target of a field path, its shape, and whether its schema type
    /// is known (so values need no type guards).
    fn target(
        &mut self,
        class: Option<&ClassSchema>,
        alias: &str,
        path: &FieldPath,
    ) -> StoreResult<(Target, Shape, Option<FieldType>)> {
        if !path.is_nested() && COLUMNS.contains(&path.field.as_str()) {
            return Ok((
                Target::Column(format!("{alias}.{}", path.field)),
                Shape::Scalar,
                Some(if path.field == "objectId" {
                    FieldType::String
                } else {
                    FieldType::Date
                }),
            ));
        }
        let field_type = if path.is_nested() {
            None
        } else {
            class.and_then(|c| c.field_type(&path.field)).cloned()
        };
        let shape = match &field_type {
            Some(FieldType::Array) => Shape::Array,
            Some(_) => Shape::Scalar,
            None => Shape::Unknown,
        };
        let target = Target::Path {
            doc: format!("{alias}.data"),
            path: json_path(path)?,
        };
        Ok((target, shape, field_type))
    }

    /// Hints an index on `target`, a field the schema declares (or a key
    /// under one): clients choose paths freely, but not declared fields.
    fn hint(&mut self, class: Option<&ClassSchema>, target: &Target, suffix: Option<&str>) {
        if let (Some(class), Target::Path { path, .. }) = (class, target)
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$')
            && path
                .strip_prefix("$.")
                .and_then(|rest| rest.split('.').next())
                .is_some_and(|field| class.fields.contains_key(field))
        {
            let full = match suffix {
                Some(key) => format!("{path}.{key}"),
                None => path.clone(),
            };
            self.index_hints.push((class.class_name.clone(), full));
        }
    }

    fn scalar(&mut self, target: &Target) -> String {
        match target {
            Target::Column(column) => column.clone(),
            Target::Path { doc, path } => {
                let path = self.path_sql(path);
                format!("json_extract({doc}, {path})")
            }
            Target::Element(j) => format!("{j}.value"),
        }
    }

    fn json_type(&mut self, target: &Target) -> String {
        match target {
            Target::Column(_) => "'text'".into(),
            Target::Path { doc, path } => {
                let path = self.path_sql(path);
                format!("json_type({doc}, {path})")
            }
            Target::Element(j) => format!("{j}.type"),
        }
    }

    /// A key inside an object value (`iso` of a Date, `objectId` of a
    /// Pointer). The date columns are their own `iso`; other keys of a
    /// column do not exist.
    fn sub(&mut self, target: &Target, key: &str) -> String {
        match target {
            Target::Column(column) if key == "iso" && !column.ends_with(".objectId") => {
                column.clone()
            }
            Target::Column(_) => "NULL".into(),
            Target::Path { doc, path } => {
                let path = self.path_sql(&format!("{path}.{key}"));
                format!("json_extract({doc}, {path})")
            }
            Target::Element(j) => {
                format!(
                    "(CASE WHEN {j}.type = 'object' THEN json_extract({j}.value, '$.{key}') END)"
                )
            }
        }
    }

    /// The part of a stored value that compares with `value`.
    fn operand(&mut self, target: &Target, value: &QueryValue) -> String {
        match value {
            QueryValue::Date(_) => self.sub(target, "iso"),
            QueryValue::Pointer { .. } => self.sub(target, "objectId"),
            QueryValue::File(_) => self.sub(target, "name"),
            _ => self.scalar(target),
        }
    }

    /// The comparable part of a field of a known type, for sorting and
    /// `$select`.
    fn typed_operand(&mut self, target: &Target, field_type: Option<&FieldType>) -> String {
        match field_type {
            Some(FieldType::Date) => self.sub(target, "iso"),
            Some(FieldType::Pointer { .. }) => self.sub(target, "objectId"),
            Some(FieldType::File) => self.sub(target, "name"),
            _ => self.scalar(target),
        }
    }

    fn param(&mut self, value: &QueryValue) -> String {
        match value {
            QueryValue::Null => "NULL".into(),
            QueryValue::Bool(b) => if *b { "1" } else { "0" }.into(),
            QueryValue::Number(n) => match n.as_i64() {
                Some(i) => self.bind(SqlValue::Integer(i)),
                None => self.bind(SqlValue::Real(n.as_f64().unwrap_or(f64::NAN))),
            },
            QueryValue::String(s) | QueryValue::Date(s) | QueryValue::File(s) => self.bind_text(s),
            QueryValue::Pointer { object_id, .. } => self.bind_text(object_id),
            QueryValue::Json(json) => self.bind_text(&canonical(json).to_string()),
        }
    }

    fn suffix_of(value: &QueryValue) -> Option<&'static str> {
        match value {
            QueryValue::Date(_) => Some("iso"),
            QueryValue::Pointer { .. } => Some("objectId"),
            QueryValue::File(_) => Some("name"),
            _ => None,
        }
    }

    fn eq(&mut self, target: &Target, value: &QueryValue, typed: bool) -> String {
        match value {
            QueryValue::Null => match target {
                Target::Column(_) => "0".into(),
                _ => format!("IFNULL({}, 'null') = 'null'", self.json_type(target)),
            },
            QueryValue::Bool(b) => format!("{} = '{b}'", self.json_type(target)),
            QueryValue::Number(_) | QueryValue::String(_) if typed => {
                let e = self.scalar(target);
                format!("{e} = {}", self.param(value))
            }
            QueryValue::Number(_) => {
                let (t, e) = (self.json_type(target), self.scalar(target));
                format!(
                    "({t} IN ('integer', 'real') AND {e} = {})",
                    self.param(value)
                )
            }
            QueryValue::String(_) => {
                let (t, e) = (self.json_type(target), self.scalar(target));
                format!("({t} = 'text' AND {e} = {})", self.param(value))
            }
            QueryValue::Date(_) | QueryValue::Pointer { .. } | QueryValue::File(_) => {
                let e = self.operand(target, value);
                format!("{e} = {}", self.param(value))
            }
            QueryValue::Json(_) => {
                let (t, e) = (self.json_type(target), self.scalar(target));
                format!(
                    "({t} IN ('object', 'array') AND {e} = {})",
                    self.param(value)
                )
            }
        }
    }

    fn is_in(&mut self, target: &Target, values: &[QueryValue], typed: bool) -> String {
        // Values that compare through one expression become one IN list;
        // the rest are single equalities.
        let mut lists: Vec<(Option<&'static str>, Vec<&QueryValue>)> = Vec::new();
        let mut singles = Vec::new();
        for value in values {
            let listable = match value {
                QueryValue::Number(_) | QueryValue::String(_) => typed,
                QueryValue::Date(_) | QueryValue::Pointer { .. } | QueryValue::File(_) => true,
                _ => false,
            };
            if !listable {
                singles.push(value);
                continue;
            }
            let suffix = Self::suffix_of(value);
            match lists.iter_mut().find(|(s, _)| *s == suffix) {
                Some((_, list)) => list.push(value),
                None => lists.push((suffix, vec![value])),
            }
        }
        let mut parts = Vec::new();
        for (_, list) in lists {
            let e = self.operand(target, list[0]);
            let params: Vec<String> = list.iter().map(|v| self.param(v)).collect();
            parts.push(format!("{e} IN ({})", params.join(", ")));
        }
        for value in singles {
            parts.push(self.eq(target, value, typed));
        }
        match parts.len() {
            0 => "0".into(),
            1 => parts.pop().unwrap_or_default(),
            _ => format!("({})", parts.join(" OR ")),
        }
    }

    fn compare(&mut self, target: &Target, op: &str, value: &QueryValue, typed: bool) -> String {
        match value {
            QueryValue::Number(_) | QueryValue::String(_) => {
                let e = self.scalar(target);
                let p = self.param(value);
                if typed {
                    format!("{e} {op} {p}")
                } else {
                    let t = self.json_type(target);
                    let types = if matches!(value, QueryValue::Number(_)) {
                        "('integer', 'real')"
                    } else {
                        "('text')"
                    };
                    format!("({t} IN {types} AND {e} {op} {p})")
                }
            }
            QueryValue::Date(_) => {
                let e = self.operand(target, value);
                format!("{e} {op} {}", self.param(value))
            }
            _ => "0".into(),
        }
    }

    fn regex(&mut self, target: &Target, spec: &RegexSpec, typed: bool) -> String {
        let e = self.scalar(target);
        let p = self.bind_text(&spec.inline());
        if typed || matches!(target, Target::Column(_)) {
            format!("{REGEXP}({p}, {e})")
        } else {
            let t = self.json_type(target);
            format!("({t} = 'text' AND {REGEXP}({p}, {e}))")
        }
    }

    /// Applies `test` to the value and, for arrays, to each element.
    fn any_value(
        &mut self,
        target: &Target,
        shape: Shape,
        typed: bool,
        mut test: impl FnMut(&mut Self, &Target, bool) -> StoreResult<String>,
    ) -> StoreResult<String> {
        let Target::Path { doc, path } = target else {
            return test(self, target, typed);
        };
        if shape == Shape::Scalar {
            return test(self, target, typed);
        }
        let whole = test(self, target, false)?;
        let j = self.alias("j");
        let element = test(self, &Target::Element(j.clone()), false)?;
        let path_sql = self.path_sql(path);
        Ok(format!(
            "({whole} OR (json_type({doc}, {path_sql}) = 'array' AND EXISTS (SELECT 1 FROM json_each({doc}, {path_sql}) AS {j} WHERE {element})))"
        ))
    }

    /// `EXISTS` over the elements of an array target.
    fn exists_element(
        &mut self,
        target: &Target,
        test: impl FnOnce(&mut Self, &Target) -> StoreResult<String>,
    ) -> StoreResult<String> {
        let Target::Path { doc, path } = target else {
            return Ok("0".into());
        };
        let j = self.alias("j");
        let element = test(self, &Target::Element(j.clone()))?;
        let path_sql = self.path_sql(path);
        Ok(format!(
            "EXISTS (SELECT 1 FROM json_each({doc}, {path_sql}) AS {j} WHERE {element})"
        ))
    }

    fn field(
        &mut self,
        class: Option<&ClassSchema>,
        alias: &str,
        path: &FieldPath,
        condition: &Condition,
    ) -> StoreResult<String> {
        let (target, shape, field_type) = self.target(class, alias, path)?;
        if let (Some(class), Some(FieldType::Relation { .. })) = (class, &field_type) {
            return Ok(self.relation(class, alias, &path.field, condition));
        }
        let typed = shape == Shape::Scalar && field_type.is_some();
        Ok(match condition {
            Condition::Eq(value) => {
                if typed {
                    self.hint(class, &target, Self::suffix_of(value));
                }
                self.any_value(&target, shape, typed, |c, t, typed| {
                    Ok(c.eq(t, value, typed))
                })?
            }
            Condition::Ne(value) => {
                not(&self.any_value(&target, shape, typed, |c, t, typed| {
                    Ok(c.eq(t, value, typed))
                })?)
            }
            Condition::In(values) => {
                if typed && let Some(first) = values.first() {
                    self.hint(class, &target, Self::suffix_of(first));
                }
                self.any_value(&target, shape, typed, |c, t, typed| {
                    Ok(c.is_in(t, values, typed))
                })?
            }
            Condition::Nin(values) => {
                not(&self.any_value(&target, shape, typed, |c, t, typed| {
                    Ok(c.is_in(t, values, typed))
                })?)
            }
            Condition::Lt(v) | Condition::Lte(v) | Condition::Gt(v) | Condition::Gte(v) => {
                let op = match condition {
                    Condition::Lt(_) => "<",
                    Condition::Lte(_) => "<=",
                    Condition::Gt(_) => ">",
                    _ => ">=",
                };
                if typed {
                    self.hint(class, &target, Self::suffix_of(v));
                }
                self.any_value(&target, shape, typed, |c, t, typed| {
                    Ok(c.compare(t, op, v, typed))
                })?
            }
            Condition::Exists(exists) => match &target {
                Target::Column(_) => if *exists { "1" } else { "0" }.into(),
                _ => {
                    let t = self.json_type(&target);
                    format!("{t} IS {}NULL", if *exists { "NOT " } else { "" })
                }
            },
            Condition::Regex(spec) => self.any_value(&target, shape, typed, |c, t, typed| {
                Ok(c.regex(t, spec, typed))
            })?,
            Condition::All(matchers) => {
                if matchers.is_empty() {
                    return Ok("0".into());
                }
                let mut parts = vec![format!("{} = 'array'", self.json_type(&target))];
                for matcher in matchers {
                    parts.push(self.exists_element(&target, |c, element| {
                        Ok(match matcher {
                            ElementMatch::Equals(value) => c.eq(element, value, false),
                            ElementMatch::Regex(spec) => c.regex(element, spec, false),
                        })
                    })?);
                }
                format!("({})", parts.join(" AND "))
            }
            Condition::ContainedBy(values) => {
                let t = self.json_type(&target);
                let outside = self.exists_element(&target, |c, element| {
                    Ok(not(&c.is_in(element, values, false)))
                })?;
                format!("({t} = 'array' AND NOT {outside})")
            }
            Condition::InQuery(sub) => self.in_query(&target, shape, sub)?,
            Condition::NotInQuery(sub) => not(&self.in_query(&target, shape, sub)?),
            Condition::Select { query, key } => {
                self.select_in(&target, shape, field_type.as_ref(), query, key)?
            }
            Condition::DontSelect { query, key } => {
                not(&self.select_in(&target, shape, field_type.as_ref(), query, key)?)
            }
            Condition::NearSphere {
                point,
                max_distance,
            } => match max_distance {
                Some(max) => {
                    let distance = self.distance(&target, *point);
                    let max = self.bind(SqlValue::Real(*max));
                    format!("{distance} <= {max}")
                }
                None => format!("{} IS NOT NULL", self.sub(&target, "latitude")),
            },
            Condition::WithinCenterSphere { center, radius } => {
                let distance = self.distance(&target, *center);
                let radius = self.bind(SqlValue::Real(*radius));
                format!("{distance} <= {radius}")
            }
            Condition::WithinBox {
                south_west,
                north_east,
            } => {
                let (lat, lng) = (
                    self.sub(&target, "latitude"),
                    self.sub(&target, "longitude"),
                );
                let params = [
                    south_west.latitude,
                    north_east.latitude,
                    south_west.longitude,
                    north_east.longitude,
                ]
                .map(|v| self.bind(SqlValue::Real(v)));
                format!(
                    "({lat} BETWEEN {} AND {} AND {lng} BETWEEN {} AND {})",
                    params[0], params[1], params[2], params[3]
                )
            }
            Condition::WithinPolygon(points) => {
                let (lat, lng) = (
                    self.sub(&target, "latitude"),
                    self.sub(&target, "longitude"),
                );
                let pairs: Vec<[f64; 2]> =
                    points.iter().map(|p| [p.latitude, p.longitude]).collect();
                let polygon = self.bind_text(&serde_json::to_string(&pairs).unwrap_or_default());
                format!("IFNULL({IN_POLYGON}({lat}, {lng}, {polygon}), 0)")
            }
            Condition::GeoIntersects(point) => {
                let coordinates = self.sub(&target, "coordinates");
                let lat = self.bind(SqlValue::Real(point.latitude));
                let lng = self.bind(SqlValue::Real(point.longitude));
                format!("IFNULL({POLYGON_CONTAINS}({coordinates}, {lat}, {lng}), 0)")
            }
            Condition::Text(search) => {
                let score = self.text_score(class, alias, path, search)?;
                format!("{score} > 0")
            }
        })
    }

    fn distance(&mut self, target: &Target, point: GeoPoint) -> String {
        let (lat, lng) = (self.sub(target, "latitude"), self.sub(target, "longitude"));
        let plat = self.bind(SqlValue::Real(point.latitude));
        let plng = self.bind(SqlValue::Real(point.longitude));
        format!("{GEO_DISTANCE}({lat}, {lng}, {plat}, {plng})")
    }

    fn text_score(
        &mut self,
        class: Option<&ClassSchema>,
        alias: &str,
        path: &FieldPath,
        search: &TextSearch,
    ) -> StoreResult<String> {
        let (target, _, _) = self.target(class, alias, path)?;
        let e = self.scalar(&target);
        let spec = serde_json::to_string(&TextSpec {
            term: search.term.clone(),
            case_sensitive: search.case_sensitive,
            diacritic_sensitive: search.diacritic_sensitive,
        })
        .map_err(StoreError::backend)?;
        let spec = self.bind_text(&spec);
        Ok(format!("{TEXT_SCORE}({e}, {spec})"))
    }

    fn sort_expr(
        &mut self,
        class: &ClassSchema,
        alias: &str,
        path: &FieldPath,
    ) -> StoreResult<String> {
        let (target, shape, field_type) = self.target(Some(class), alias, path)?;
        if shape == Shape::Scalar && field_type.is_some() {
            let suffix = match field_type {
                Some(FieldType::Date) => Some("iso"),
                Some(FieldType::Pointer { .. }) => Some("objectId"),
                Some(FieldType::File) => Some("name"),
                _ => None,
            };
            self.hint(Some(class), &target, suffix);
        }
        Ok(self.typed_operand(&target, field_type.as_ref()))
    }

    /// `(SELECT <key> FROM <class> WHERE <filter>)`, or `None` when the
    /// class does not exist.
    fn subselect(
        &mut self,
        sub: &SubQuery,
        key: Option<&FieldPath>,
    ) -> StoreResult<Option<(String, Option<FieldType>)>> {
        let Some(class) = self.schemas.get(&sub.class_name).cloned() else {
            return Ok(None);
        };
        let alias = self.alias("t");
        let filter = self.filter(Some(&class), &alias, &sub.filter)?;
        let (column, key_type) = match key {
            None => (format!("{alias}.objectId"), Some(FieldType::String)),
            Some(key) => {
                let (target, _, key_type) = self.target(Some(&class), &alias, key)?;
                (self.typed_operand(&target, key_type.as_ref()), key_type)
            }
        };
        Ok(Some((
            format!(
                "(SELECT {column} FROM {} AS {alias} WHERE {filter})",
                quote_ident(&class.class_name)
            ),
            key_type,
        )))
    }

    fn in_query(&mut self, target: &Target, shape: Shape, sub: &SubQuery) -> StoreResult<String> {
        let Some((subselect, _)) = self.subselect(sub, None)? else {
            return Ok("0".into());
        };
        self.any_value(target, shape, false, |c, t, _| {
            let id = c.sub(t, "objectId");
            Ok(format!("{id} IN {subselect}"))
        })
    }

    fn select_in(
        &mut self,
        target: &Target,
        shape: Shape,
        field_type: Option<&FieldType>,
        sub: &SubQuery,
        key: &FieldPath,
    ) -> StoreResult<String> {
        let Some((subselect, key_type)) = self.subselect(sub, Some(key))? else {
            return Ok("0".into());
        };
        // Compare like with like: the part of our value that matches the
        // selected key's type.
        let compare_type = key_type.or_else(|| field_type.cloned());
        self.any_value(target, shape, false, |c, t, _| {
            let e = match t {
                Target::Element(_) | Target::Path { .. } => {
                    c.typed_operand(t, compare_type.as_ref())
                }
                Target::Column(column) => column.clone(),
            };
            Ok(format!("{e} IN {subselect}"))
        })
    }
}

/// Negation that treats an unknown (NULL) result as "no match", so `$ne`
/// and `$nin` match objects without the field, as Parse does.
fn not(condition: &str) -> String {
    format!("NOT IFNULL({condition}, 0)")
}

fn clamp_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
