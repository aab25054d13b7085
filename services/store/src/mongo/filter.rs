//! The query model as MongoDB filters, sorts and projections over Parse
//! Server's document layout (`MongoTransform.transformWhere`).
//!
//! Every client value is an operand of an explicit operator (`$eq`, `$in`,
//! `$regex`, ...), never a bare value where a document could be read as an
//! operator, and every field name and nested key is checked, so nothing a
//! client sends becomes query syntax. Subqueries, `$relatedTo` and
//! conditions on relations must be resolved (see `resolve`) before they
//! get here: Mongo cannot join.

use std::f64::consts::PI;

use mongodb::bson::{Bson, Document, doc};

use super::transform::{
    AUTH_DATA_PREFIX, TopLevel, interior, is_date_key, is_user_date_key, number_to_bson,
    parse_date, pointer_document, pointer_string, renamed_key, stored_id, top_level,
    valid_field_name, valid_provider,
};
use crate::error::{StoreError, StoreResult};
use crate::query::{
    Condition, ElementMatch, FieldPath, Filter, GeoPoint, QueryValue, RegexSpec, SortKey,
    TextSearch,
};
use crate::schema::{ClassSchema, FieldType};

/// A filter no document matches, answered from the `_id` index without a
/// scan.
pub(super) fn nothing() -> Document {
    doc! {"_id": {"$in": []}}
}

/// Whether a `$nearSphere` may order the results: only a find with no
/// explicit order gets the distance order, and only from one condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum NearOrder {
    /// The first `$nearSphere` outside `$or`/`$nor` orders the results.
    ByDistance,
    /// Every `$nearSphere` is a plain distance filter (`$geoWithin`), as
    /// counts need (Mongo refuses `$nearSphere` there) and as write
    /// preconditions want.
    None,
}

fn query_error(message: impl Into<String>) -> StoreError {
    StoreError::InvalidQuery(message.into())
}

/// The filter of a find (`order` decides whether a `$nearSphere` orders
/// the results) or of a count or precondition.
pub(super) fn filter_document(
    class: &ClassSchema,
    filter: &Filter,
    near: NearOrder,
) -> StoreResult<Document> {
    let mut translator = Translator {
        class,
        near_available: near == NearOrder::ByDistance,
    };
    translator.filter(filter, false)
}

struct Translator<'a> {
    class: &'a ClassSchema,
    near_available: bool,
}

impl Translator<'_> {
    fn filter(&mut self, filter: &Filter, in_disjunction: bool) -> StoreResult<Document> {
        Ok(match filter {
            Filter::All => Document::new(),
            Filter::Nothing => nothing(),
            Filter::And(parts) => {
                let mut docs = Vec::with_capacity(parts.len());
                for part in parts {
                    let doc = self.filter(part, in_disjunction)?;
                    if !doc.is_empty() {
                        docs.push(doc);
                    }
                }
                combine("$and", docs, Document::new())
            }
            Filter::Or(parts) => {
                let mut docs = Vec::with_capacity(parts.len());
                for part in parts {
                    let doc = self.filter(part, true)?;
                    if doc.is_empty() {
                        return Ok(Document::new());
                    }
                    docs.push(doc);
                }
                combine("$or", docs, nothing())
            }
            Filter::Nor(parts) => {
                let mut docs = Vec::with_capacity(parts.len());
                for part in parts {
                    docs.push(self.filter(part, true)?);
                }
                if docs.is_empty() {
                    Document::new()
                } else {
                    doc! {"$nor": docs}
                }
            }
            Filter::Field(path, condition) => {
                let target = Target::new(self.class, path)?;
                self.condition(&target, condition, in_disjunction)?
            }
            Filter::Permission { write, principals } => {
                // `null` matches objects without an ACL, which are public.
                let key = if *write { "_wperm" } else { "_rperm" };
                let mut allowed = vec![Bson::Null];
                allowed.extend(principals.iter().map(|p| Bson::String(p.clone())));
                doc! {key: {"$in": allowed}}
            }
            Filter::RelatedTo { .. } => {
                return Err(StoreError::backend_message(
                    "$relatedTo reached the Mongo filter unresolved",
                ));
            }
        })
    }

    fn condition(
        &mut self,
        target: &Target,
        condition: &Condition,
        in_disjunction: bool,
    ) -> StoreResult<Document> {
        if matches!(target.field_type, Some(FieldType::Relation { .. })) {
            // Relations live in join collections; `resolve` rewrites the
            // conditions it understands into objectId lists.
            return Ok(nothing());
        }
        Ok(match condition {
            Condition::Eq(value) => match target.operand(value)? {
                Some((key, operand)) => doc! {key: {"$eq": operand}},
                None => nothing(),
            },
            Condition::Ne(value) => match target.operand(value)? {
                Some((key, operand)) => doc! {key: {"$ne": operand}},
                None => Document::new(),
            },
            Condition::In(values) => {
                let groups = target.grouped(values)?;
                let docs = groups
                    .into_iter()
                    .map(|(key, list)| doc! {key: {"$in": list}})
                    .collect();
                combine("$or", docs, nothing())
            }
            Condition::Nin(values) => {
                let groups = target.grouped(values)?;
                let docs = groups
                    .into_iter()
                    .map(|(key, list)| doc! {key: {"$nin": list}})
                    .collect();
                combine("$and", docs, Document::new())
            }
            Condition::Lt(v) => target.compare("$lt", v)?,
            Condition::Lte(v) => target.compare("$lte", v)?,
            Condition::Gt(v) => target.compare("$gt", v)?,
            Condition::Gte(v) => target.compare("$gte", v)?,
            Condition::Exists(exists) => target.exists(*exists),
            Condition::All(matchers) => target.all(matchers)?,
            Condition::ContainedBy(values) => target.contained_by(values)?,
            Condition::Regex(spec) => doc! {target.key.clone(): regex_operator(spec)},
            Condition::NearSphere {
                point,
                max_distance,
            } => {
                let order = self.near_available && !in_disjunction;
                if order {
                    self.near_available = false;
                }
                target.near(*point, *max_distance, order)?
            }
            Condition::WithinBox {
                south_west,
                north_east,
            } => {
                let corners = vec![pair(*south_west)?, pair(*north_east)?];
                doc! {target.key.clone(): {"$geoWithin": {"$box": corners}}}
            }
            Condition::WithinPolygon(points) => {
                if points.len() < 3 {
                    return Ok(nothing());
                }
                let points = points
                    .iter()
                    .map(|p| pair(*p))
                    .collect::<StoreResult<Vec<_>>>()?;
                doc! {target.key.clone(): {"$geoWithin": {"$polygon": points}}}
            }
            Condition::WithinCenterSphere { center, radius } => {
                target.within_sphere(*center, *radius)?
            }
            Condition::GeoIntersects(point) => doc! {target.key.clone(): {
                "$geoIntersects": {"$geometry": {"type": "Point", "coordinates": pair(*point)?}}
            }},
            Condition::Text(search) => doc! {"$text": text_operator(search)},
            Condition::InQuery(_)
            | Condition::NotInQuery(_)
            | Condition::Select { .. }
            | Condition::DontSelect { .. } => {
                return Err(StoreError::backend_message(
                    "a subquery reached the Mongo filter unresolved",
                ));
            }
        })
    }
}

/// `{op: docs}`, the one document itself, or `empty` when there is none.
fn combine(op: &str, mut docs: Vec<Document>, empty: Document) -> Document {
    match docs.len() {
        0 => empty,
        1 => docs.pop().unwrap_or_default(),
        _ => doc! {op: docs},
    }
}

/// `[lng, lat]`, refusing values Mongo would reject or misread.
fn pair(point: GeoPoint) -> StoreResult<Bson> {
    let GeoPoint {
        latitude,
        longitude,
    } = point;
    if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
        return Err(query_error(format!(
            "GeoPoint out of range: latitude {latitude}, longitude {longitude}"
        )));
    }
    Ok(Bson::Array(vec![
        Bson::Double(longitude),
        Bson::Double(latitude),
    ]))
}

fn regex_operator(spec: &RegexSpec) -> Document {
    let mut operator = doc! {"$regex": spec.pattern.clone()};
    if !spec.options.is_empty() {
        operator.insert("$options", spec.options.clone());
    }
    operator
}

pub(super) fn text_operator(search: &TextSearch) -> Document {
    let mut operator = doc! {"$search": search.term.clone()};
    if let Some(language) = &search.language {
        operator.insert("$language", language.clone());
    }
    if search.case_sensitive {
        operator.insert("$caseSensitive", true);
    }
    if search.diacritic_sensitive {
        operator.insert("$diacriticSensitive", true);
    }
    operator
}

/// What a field path reads in a document.
struct Target {
    /// The stored path: `_id`, `_created_at`, `_p_<field>`, `a.b.c`, ...
    key: String,
    /// Where pointers compare as `"Class$id"`: the `_p_` key of a pointer
    /// field, or of a field the schema does not know.
    pointer_key: Option<String>,
    /// The schema type of a top-level field.
    field_type: Option<FieldType>,
    /// Inside an object or array: values compare as Parse nests them.
    interior: bool,
    /// A top-level field, where a stored null means "absent".
    top: bool,
    /// Strings compare as dates (the default dates, Date fields).
    dates: bool,
    /// The objectIds of Parse's config classes, stored as numbers.
    numeric_ids: bool,
}

/// Checks a nested key: Mongo would read `$` as an operator and `.` as
/// another level.
fn nested_key(segment: &str) -> StoreResult<&str> {
    if valid_field_name(segment) {
        Ok(segment)
    } else {
        Err(query_error(format!(
            "invalid key in a query path: {segment:?}"
        )))
    }
}

impl Target {
    fn new(class: &ClassSchema, path: &FieldPath) -> StoreResult<Self> {
        let field = path.field.as_str();
        if !valid_field_name(field) {
            return Err(query_error(format!("invalid field name: {field:?}")));
        }
        let mut nested = String::new();
        for segment in &path.nested {
            nested.push('.');
            nested.push_str(nested_key(segment)?);
        }
        if class.class_name == "_User" && field == "authData" {
            // `authData.<provider>[...]` lives in `_auth_data_<provider>`.
            let Some((provider, rest)) = path.nested.split_first() else {
                return Err(query_error("authData can only be queried by provider"));
            };
            if !valid_provider(provider) {
                return Err(query_error(format!("invalid auth provider: {provider:?}")));
            }
            let mut key = format!("{AUTH_DATA_PREFIX}{provider}");
            for segment in rest {
                key.push('.');
                key.push_str(segment);
            }
            return Ok(Self::inside(key));
        }
        if path.is_nested() {
            return Ok(Self::inside(format!("{}{nested}", top_key(class, field))));
        }
        let field_type = match field {
            "objectId" => Some(FieldType::String),
            "createdAt" | "updatedAt" => Some(FieldType::Date),
            _ => class.field_type(field).cloned(),
        };
        let pointer_key = match &field_type {
            Some(FieldType::Pointer { .. }) | None => Some(format!("_p_{field}")),
            _ => None,
        };
        let dates = matches!(field_type, Some(FieldType::Date))
            || is_date_key(field)
            || (class.class_name == "_User" && is_user_date_key(field));
        Ok(Self {
            key: top_key(class, field),
            pointer_key,
            interior: matches!(field_type, Some(FieldType::Array)),
            top: true,
            dates,
            numeric_ids: field == "objectId"
                && matches!(
                    class.class_name.as_str(),
                    "_GlobalConfig" | "_GraphQLConfig"
                ),
            field_type,
        })
    }

    fn inside(key: String) -> Self {
        Self {
            key,
            pointer_key: None,
            field_type: None,
            interior: true,
            top: false,
            dates: false,
            numeric_ids: false,
        }
    }

    /// The key and operand a value compares through; `None` when no stored
    /// value can equal it (it holds keys Parse never stores).
    fn operand(&self, value: &QueryValue) -> StoreResult<Option<(String, Bson)>> {
        let key = self.key.clone();
        Ok(Some(match value {
            QueryValue::Null => (key, Bson::Null),
            QueryValue::Bool(b) => (key, Bson::Boolean(*b)),
            QueryValue::Number(n) => (key, number_to_bson(n)),
            QueryValue::String(s) if self.numeric_ids => (key, stored_id("_GlobalConfig", s)),
            QueryValue::String(s) => match parse_date(s).filter(|_| self.dates) {
                Some(date) => (key, Bson::DateTime(date)),
                None => (key, Bson::String(s.clone())),
            },
            QueryValue::Date(iso) => {
                let date =
                    parse_date(iso).ok_or_else(|| query_error(format!("invalid date: {iso}")))?;
                (key, Bson::DateTime(date))
            }
            // Parse keeps nested Files as REST JSON, with a url or not:
            // compare the name only.
            QueryValue::File(name) if self.interior => {
                (format!("{key}.name"), Bson::String(name.clone()))
            }
            QueryValue::File(name) => (key, Bson::String(name.clone())),
            QueryValue::Pointer {
                class_name,
                object_id,
            } => self.pointer(class_name, object_id),
            QueryValue::Json(json) => {
                let converted = if self.interior {
                    interior(json).map(TopLevel::Value)
                } else {
                    top_level(json)
                };
                match converted {
                    Ok(TopLevel::Value(bson)) => (key, bson),
                    Ok(TopLevel::Pointer(pointer)) => match &self.pointer_key {
                        Some(pointer_key) => (pointer_key.clone(), Bson::String(pointer)),
                        None => return Ok(None),
                    },
                    Ok(TopLevel::Skip) | Err(_) => return Ok(None),
                }
            }
        }))
    }

    fn pointer(&self, class_name: &str, object_id: &str) -> (String, Bson) {
        match &self.pointer_key {
            Some(pointer_key) if !self.interior => (
                pointer_key.clone(),
                Bson::String(pointer_string(class_name, object_id)),
            ),
            _ => (
                self.key.clone(),
                Bson::Document(pointer_document(class_name, object_id)),
            ),
        }
    }

    /// The operands of `$in`/`$nin`, grouped by the key they compare
    /// through, in first-seen order.
    fn grouped(&self, values: &[QueryValue]) -> StoreResult<Vec<(String, Vec<Bson>)>> {
        let mut groups: Vec<(String, Vec<Bson>)> = Vec::new();
        for value in values {
            let Some((key, operand)) = self.operand(value)? else {
                continue;
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(operand),
                None => groups.push((key, vec![operand])),
            }
        }
        Ok(groups)
    }

    /// Order comparisons hold between numbers, strings and dates only, as
    /// on the other backends.
    fn compare(&self, op: &str, value: &QueryValue) -> StoreResult<Document> {
        if !matches!(
            value,
            QueryValue::Number(_) | QueryValue::String(_) | QueryValue::Date(_)
        ) {
            return Ok(nothing());
        }
        Ok(match self.operand(value)? {
            Some((key, operand)) => doc! {key: {op: operand}},
            None => nothing(),
        })
    }

    /// A stored null is an absent field: Parse Server writes nulls, oxbase
    /// never does, and both must read the same.
    fn exists(&self, exists: bool) -> Document {
        let key = self.key.clone();
        match (self.top, exists) {
            (true, true) => doc! {key: {"$exists": true, "$ne": null}},
            (true, false) => doc! {key: {"$eq": null}},
            (false, _) => doc! {key: {"$exists": exists}},
        }
    }

    /// An array with an element equal to (or matching) each matcher.
    /// Regexes become `$elemMatch` clauses, which every server runs,
    /// rather than BSON regexes inside `$all`.
    fn all(&self, matchers: &[ElementMatch]) -> StoreResult<Document> {
        if matchers.is_empty() {
            return Ok(nothing());
        }
        let key = self.key.clone();
        let mut equal = Vec::new();
        let mut clauses = Vec::new();
        for matcher in matchers {
            match matcher {
                ElementMatch::Regex(spec) => {
                    clauses.push(doc! {key.clone(): {"$elemMatch": regex_operator(spec)}});
                }
                ElementMatch::Equals(value) => match element(value)? {
                    Some(bson) => equal.push(bson),
                    // Every element must match; this one cannot.
                    None => return Ok(nothing()),
                },
            }
        }
        if !equal.is_empty() {
            clauses.insert(0, doc! {key: {"$type": "array", "$all": equal}});
        }
        Ok(combine("$and", clauses, nothing()))
    }

    /// An array whose every element is listed (Parse's `$containedBy`,
    /// which also requires the array to exist, as on PostgreSQL).
    fn contained_by(&self, values: &[QueryValue]) -> StoreResult<Document> {
        let mut allowed = Vec::with_capacity(values.len());
        for value in values {
            if let Some(bson) = element(value)? {
                allowed.push(bson);
            }
        }
        let key = self.key.clone();
        Ok(doc! {"$and": [
            {key.clone(): {"$type": "array"}},
            {"$nor": [{key: {"$elemMatch": {"$nin": allowed}}}]},
        ]})
    }

    fn near(
        &self,
        point: GeoPoint,
        max_distance: Option<f64>,
        order: bool,
    ) -> StoreResult<Document> {
        if !order {
            return match max_distance {
                Some(max) => self.within_sphere(point, max),
                None => Ok(self.exists(true)),
            };
        }
        let mut operator = doc! {"$nearSphere": pair(point)?};
        if let Some(max) = max_distance {
            if max.is_nan() || max < 0.0 {
                return Ok(nothing());
            }
            operator.insert("$maxDistance", max);
        }
        Ok(doc! {self.key.clone(): operator})
    }

    fn within_sphere(&self, center: GeoPoint, radius: f64) -> StoreResult<Document> {
        if radius.is_nan() || radius < 0.0 {
            return Ok(nothing());
        }
        // A radius of half the circumference covers the sphere; Mongo
        // refuses larger ones.
        let radius = radius.min(PI);
        Ok(doc! {self.key.clone(): {
            "$geoWithin": {"$centerSphere": [pair(center)?, radius]}
        }})
    }
}

/// An array element operand (`$all`, `$containedBy`), converted as Parse
/// nests values; `None` when no stored element can equal it.
fn element(value: &QueryValue) -> StoreResult<Option<Bson>> {
    let target = Target::inside(String::new());
    Ok(match value {
        QueryValue::File(name) => Some(Bson::Document(doc! {"__type": "File", "name": name})),
        other => target.operand(other)?.map(|(_, bson)| bson),
    })
}

/// The stored name of a top-level field.
pub(super) fn top_key(class: &ClassSchema, field: &str) -> String {
    match field {
        "objectId" => "_id".into(),
        "createdAt" => "_created_at".into(),
        "updatedAt" => "_updated_at".into(),
        _ => match class.field_type(field) {
            Some(FieldType::Pointer { .. }) => format!("_p_{field}"),
            _ => renamed_key(field).to_owned(),
        },
    }
}

/// The stored path of a field path, for sorting.
pub(super) fn stored_path(class: &ClassSchema, path: &FieldPath) -> StoreResult<String> {
    Ok(Target::new(class, path)?.key)
}

/// The sort document; `None` when nothing orders the results (a
/// `$nearSphere` then orders them by distance).
pub(super) fn sort_document(
    class: &ClassSchema,
    order: &[SortKey],
    has_text: bool,
) -> StoreResult<Option<Document>> {
    let mut sort = Document::new();
    for key in order {
        match key {
            SortKey::Field { path, descending } => {
                let stored = stored_path(class, path)?;
                if !sort.contains_key(&stored) {
                    sort.insert(stored, if *descending { -1 } else { 1 });
                }
            }
            SortKey::TextScore if has_text && !sort.contains_key("score") => {
                sort.insert("score", doc! {"$meta": "textScore"});
            }
            SortKey::TextScore => {}
        }
    }
    Ok((!sort.is_empty()).then_some(sort))
}

/// The projection of `keys`, with what every object returns (ids, dates,
/// the ACL) and the `$text` score as `score` when `$score` is asked for.
/// `None` returns whole documents.
pub(super) fn projection(
    class: &ClassSchema,
    keys: Option<&[String]>,
    has_text: bool,
) -> Option<Document> {
    let keys = keys?;
    let mut projection =
        doc! {"_id": 1, "_created_at": 1, "_updated_at": 1, "_rperm": 1, "_wperm": 1};
    for key in keys {
        if key == "$score" {
            if has_text {
                projection.insert("score", doc! {"$meta": "textScore"});
            }
            continue;
        }
        if !valid_field_name(key)
            || matches!(key.as_str(), "objectId" | "createdAt" | "updatedAt" | "ACL")
        {
            continue;
        }
        if class.class_name == "_User" && key == "authData" {
            // Auth data is spread over `_auth_data_*` keys, which a
            // projection cannot name by prefix.
            return None;
        }
        let stored = top_key(class, key);
        let field_type = class.field_type(key);
        if field_type.is_none() {
            projection.insert(format!("_p_{key}"), 1);
        }
        // Parse reads both spellings of these.
        match key.as_str() {
            "expiresAt" => {
                projection.insert("_expiresAt", 1);
            }
            "lastUsed" | "timesUsed" => {
                projection.insert(key.clone(), 1);
            }
            _ => {}
        }
        if !projection.contains_key(&stored) {
            projection.insert(stored, 1);
        }
    }
    Some(projection)
}

/// The fields `$text` conditions search, wherever they are in the filter.
pub(super) fn text_fields(filter: &Filter) -> Vec<&FieldPath> {
    let mut out = Vec::new();
    collect_text(filter, &mut out);
    out
}

fn collect_text<'a>(filter: &'a Filter, out: &mut Vec<&'a FieldPath>) {
    match filter {
        Filter::And(parts) | Filter::Or(parts) | Filter::Nor(parts) => {
            parts.iter().for_each(|part| collect_text(part, out));
        }
        Filter::Field(path, Condition::Text(_)) => out.push(path),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::SubQuery;
    use serde_json::json;

    fn schema() -> ClassSchema {
        let mut schema = ClassSchema::new("Player");
        for (name, field_type) in [
            ("name", FieldType::String),
            ("score", FieldType::Number),
            ("tags", FieldType::Array),
            ("meta", FieldType::Object),
            ("born", FieldType::Date),
            ("pic", FieldType::File),
            ("loc", FieldType::GeoPoint),
            ("area", FieldType::Polygon),
            (
                "team",
                FieldType::Pointer {
                    target_class: "Team".into(),
                },
            ),
            (
                "fans",
                FieldType::Relation {
                    target_class: "_User".into(),
                },
            ),
        ] {
            schema.fields.insert(name.into(), field_type.into());
        }
        schema
    }

    fn f(path: &str, condition: Condition) -> Filter {
        Filter::field(path, condition)
    }

    fn s(v: &str) -> QueryValue {
        QueryValue::String(v.into())
    }

    fn team(id: &str) -> QueryValue {
        QueryValue::Pointer {
            class_name: "Team".into(),
            object_id: id.into(),
        }
    }

    fn date(iso: &str) -> Bson {
        Bson::DateTime(parse_date(iso).unwrap())
    }

    fn find(filter: Filter) -> Document {
        filter_document(&schema(), &filter, NearOrder::ByDistance).unwrap()
    }

    fn count(filter: Filter) -> Document {
        filter_document(&schema(), &filter, NearOrder::None).unwrap()
    }

    #[test]
    fn equality_and_comparisons() {
        assert_eq!(
            find(f("name", Condition::Eq(s("a")))),
            doc! {"name": {"$eq": "a"}}
        );
        assert_eq!(
            find(f("objectId", Condition::Eq(s("x")))),
            doc! {"_id": {"$eq": "x"}}
        );
        assert_eq!(
            find(f("score", Condition::Ne(QueryValue::Number(2.into())))),
            doc! {"score": {"$ne": 2}}
        );
        assert_eq!(
            find(f("score", Condition::Lt(QueryValue::Number(2.into())))),
            doc! {"score": {"$lt": 2}}
        );
        assert_eq!(
            find(f("name", Condition::Lte(s("m")))),
            doc! {"name": {"$lte": "m"}}
        );
        assert_eq!(
            find(f(
                "born",
                Condition::Gt(QueryValue::Date("2024-01-01T00:00:00.000Z".into()))
            )),
            doc! {"born": {"$gt": date("2024-01-01T00:00:00.000Z")}}
        );
        // Parse turns date strings on the default dates into dates.
        assert_eq!(
            find(f(
                "createdAt",
                Condition::Gte(s("2024-01-02T00:00:00.000Z"))
            )),
            doc! {"_created_at": {"$gte": date("2024-01-02T00:00:00.000Z")}}
        );
        // Only numbers, strings and dates have an order.
        assert_eq!(
            find(f("score", Condition::Gt(QueryValue::Bool(true)))),
            nothing()
        );
        assert_eq!(
            find(f("name", Condition::Eq(QueryValue::Null))),
            doc! {"name": {"$eq": null}}
        );
        assert_eq!(
            find(f(
                "loc",
                Condition::Eq(QueryValue::Json(
                    json!({"__type": "GeoPoint", "latitude": 1, "longitude": 2})
                ))
            )),
            doc! {"loc": {"$eq": [2.0, 1.0]}}
        );
    }

    #[test]
    fn pointers_files_and_dates_compare_in_their_stored_form() {
        assert_eq!(
            find(f("team", Condition::Eq(team("t1")))),
            doc! {"_p_team": {"$eq": "Team$t1"}}
        );
        assert_eq!(
            find(f("team", Condition::In(vec![team("t1"), team("t2")]))),
            doc! {"_p_team": {"$in": ["Team$t1", "Team$t2"]}}
        );
        assert_eq!(
            find(f("team", Condition::Nin(vec![team("t1")]))),
            doc! {"_p_team": {"$nin": ["Team$t1"]}}
        );
        // In arrays, pointers are Parse's nested sub-documents, in its key
        // order (Mongo compares documents key by key).
        let in_array = find(f("tags", Condition::Eq(team("t1"))));
        let operand = in_array
            .get_document("tags")
            .unwrap()
            .get_document("$eq")
            .unwrap();
        assert_eq!(
            operand.keys().collect::<Vec<_>>(),
            ["__type", "className", "objectId"]
        );
        assert_eq!(
            find(f("pic", Condition::Eq(QueryValue::File("a.png".into())))),
            doc! {"pic": {"$eq": "a.png"}}
        );
        assert_eq!(
            find(f(
                "meta.pic",
                Condition::Eq(QueryValue::File("a.png".into()))
            )),
            doc! {"meta.pic.name": {"$eq": "a.png"}}
        );
        // A field the schema does not know may hold a pointer.
        assert_eq!(
            find(f("other", Condition::Eq(team("t1")))),
            doc! {"_p_other": {"$eq": "Team$t1"}}
        );
        assert_eq!(
            find(f("other", Condition::In(vec![team("t1"), s("x")]))),
            doc! {"$or": [{"_p_other": {"$in": ["Team$t1"]}}, {"other": {"$in": ["x"]}}]}
        );
    }

    #[test]
    fn existence_treats_null_as_absent_at_the_top_level() {
        assert_eq!(
            find(f("name", Condition::Exists(true))),
            doc! {"name": {"$exists": true, "$ne": null}}
        );
        assert_eq!(
            find(f("name", Condition::Exists(false))),
            doc! {"name": {"$eq": null}}
        );
        assert_eq!(
            find(f("meta.size", Condition::Exists(false))),
            doc! {"meta.size": {"$exists": false}}
        );
        assert_eq!(
            find(f("team", Condition::Exists(true))),
            doc! {"_p_team": {"$exists": true, "$ne": null}}
        );
    }

    #[test]
    fn arrays() {
        let regex = |options: &str| {
            ElementMatch::Regex(RegexSpec {
                pattern: "^b".into(),
                options: options.into(),
            })
        };
        assert_eq!(
            find(f(
                "tags",
                Condition::All(vec![
                    ElementMatch::Equals(s("a")),
                    regex("i"),
                    ElementMatch::Equals(QueryValue::Number(1.into())),
                ])
            )),
            doc! {"$and": [
                {"tags": {"$type": "array", "$all": ["a", 1]}},
                {"tags": {"$elemMatch": {"$regex": "^b", "$options": "i"}}},
            ]}
        );
        assert_eq!(
            find(f("tags", Condition::All(vec![regex("")]))),
            doc! {"tags": {"$elemMatch": {"$regex": "^b"}}}
        );
        assert_eq!(find(f("tags", Condition::All(vec![]))), nothing());
        assert_eq!(
            find(f(
                "tags",
                Condition::ContainedBy(vec![s("a"), QueryValue::Number(1.into())])
            )),
            doc! {"$and": [
                {"tags": {"$type": "array"}},
                {"$nor": [{"tags": {"$elemMatch": {"$nin": ["a", 1]}}}]},
            ]}
        );
        assert_eq!(
            find(f("tags", Condition::In(vec![s("a"), s("b")]))),
            doc! {"tags": {"$in": ["a", "b"]}}
        );
        assert_eq!(find(f("tags", Condition::In(vec![]))), nothing());
        assert_eq!(find(f("tags", Condition::Nin(vec![]))), doc! {});
    }

    #[test]
    fn nested_paths_and_objects() {
        assert_eq!(
            find(f(
                "meta.size.w",
                Condition::Gt(QueryValue::Number(15.into()))
            )),
            doc! {"meta.size.w": {"$gt": 15}}
        );
        // Nested objects compare with sorted keys, as they are stored, and
        // nested dates as dates.
        let value = QueryValue::Json(
            json!({"w": 1, "a": {"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"}}),
        );
        let doc = find(f("meta.size", Condition::Eq(value)));
        let operand = doc
            .get_document("meta.size")
            .unwrap()
            .get_document("$eq")
            .unwrap();
        assert_eq!(operand.keys().collect::<Vec<_>>(), ["a", "w"]);
        assert_eq!(operand.get("a"), Some(&date("2024-01-01T00:00:00.000Z")));
        // Parse's `_auth_data_<provider>` keys on `_User`.
        let user = ClassSchema::new("_User");
        let path = Filter::field("authData.facebook.id", Condition::Eq(s("123")));
        assert_eq!(
            filter_document(&user, &path, NearOrder::None).unwrap(),
            doc! {"_auth_data_facebook.id": {"$eq": "123"}}
        );
        let config = ClassSchema::new("_GlobalConfig");
        let one = Filter::field("objectId", Condition::Eq(s("1")));
        assert_eq!(
            filter_document(&config, &one, NearOrder::None).unwrap(),
            doc! {"_id": {"$eq": 1}}
        );
        let session = ClassSchema::new("_Session");
        let token = Filter::field("sessionToken", Condition::Eq(s("r:1")));
        assert_eq!(
            filter_document(&session, &token, NearOrder::None).unwrap(),
            doc! {"_session_token": {"$eq": "r:1"}}
        );
    }

    #[test]
    fn regex_and_logic() {
        let re = |options: &str| {
            Condition::Regex(RegexSpec {
                pattern: "^he".into(),
                options: options.into(),
            })
        };
        assert_eq!(find(f("name", re(""))), doc! {"name": {"$regex": "^he"}});
        assert_eq!(
            find(f("name", re("im"))),
            doc! {"name": {"$regex": "^he", "$options": "im"}}
        );
        let a = f("score", Condition::Eq(QueryValue::Number(1.into())));
        let b = f("name", Condition::Eq(s("x")));
        assert_eq!(
            find(Filter::Or(vec![a.clone(), b.clone()])),
            doc! {"$or": [{"score": {"$eq": 1}}, {"name": {"$eq": "x"}}]}
        );
        assert_eq!(
            find(Filter::And(vec![a.clone(), b.clone()])),
            doc! {"$and": [{"score": {"$eq": 1}}, {"name": {"$eq": "x"}}]}
        );
        assert_eq!(
            find(Filter::Nor(vec![a.clone()])),
            doc! {"$nor": [{"score": {"$eq": 1}}]}
        );
        assert_eq!(
            find(Filter::And(vec![Filter::All, a.clone()])),
            doc! {"score": {"$eq": 1}}
        );
        assert_eq!(find(Filter::Or(vec![])), nothing());
        assert_eq!(find(Filter::Or(vec![Filter::All, a])), doc! {});
        assert_eq!(find(Filter::Nor(vec![])), doc! {});
        assert_eq!(find(Filter::All), doc! {});
        assert_eq!(find(Filter::Nothing), nothing());
    }

    #[test]
    fn permissions_match_missing_acls_too() {
        let read = Filter::Permission {
            write: false,
            principals: vec!["*".into(), "u1".into(), "role:Admin".into()],
        };
        assert_eq!(
            find(read),
            doc! {"_rperm": {"$in": [null, "*", "u1", "role:Admin"]}}
        );
        let write = Filter::Permission {
            write: true,
            principals: vec![],
        };
        assert_eq!(find(write), doc! {"_wperm": {"$in": [null]}});
    }

    #[test]
    fn geo_conditions() {
        let sj = GeoPoint {
            latitude: 37.0,
            longitude: -121.5,
        };
        let near = |max| {
            f(
                "loc",
                Condition::NearSphere {
                    point: sj,
                    max_distance: max,
                },
            )
        };
        assert_eq!(
            find(near(Some(0.1))),
            doc! {"loc": {"$nearSphere": [-121.5, 37.0], "$maxDistance": 0.1}}
        );
        assert_eq!(
            find(near(None)),
            doc! {"loc": {"$nearSphere": [-121.5, 37.0]}}
        );
        // Counts cannot use $nearSphere: Parse's `$centerSphere` form.
        assert_eq!(
            count(near(Some(0.1))),
            doc! {"loc": {"$geoWithin": {"$centerSphere": [[-121.5, 37.0], 0.1]}}}
        );
        assert_eq!(
            count(near(None)),
            doc! {"loc": {"$exists": true, "$ne": null}}
        );
        // Only one condition orders, and never one inside $or.
        assert_eq!(
            find(Filter::And(vec![near(None), near(Some(0.2))])),
            doc! {"$and": [
                {"loc": {"$nearSphere": [-121.5, 37.0]}},
                {"loc": {"$geoWithin": {"$centerSphere": [[-121.5, 37.0], 0.2]}}},
            ]}
        );
        assert_eq!(
            find(Filter::Or(vec![near(Some(0.1)), Filter::Nothing])),
            doc! {"$or": [
                {"loc": {"$geoWithin": {"$centerSphere": [[-121.5, 37.0], 0.1]}}},
                nothing(),
            ]}
        );
        let p = |latitude, longitude| GeoPoint {
            latitude,
            longitude,
        };
        assert_eq!(
            find(f(
                "loc",
                Condition::WithinBox {
                    south_west: p(30.0, -125.0),
                    north_east: p(38.0, -115.0)
                }
            )),
            doc! {"loc": {"$geoWithin": {"$box": [[-125.0, 30.0], [-115.0, 38.0]]}}}
        );
        assert_eq!(
            find(f(
                "loc",
                Condition::WithinPolygon(vec![p(0.0, 0.0), p(0.0, 1.0), p(1.0, 1.0)])
            )),
            doc! {"loc": {"$geoWithin": {"$polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]}}}
        );
        assert_eq!(
            find(f("loc", Condition::WithinPolygon(vec![p(0.0, 0.0)]))),
            nothing()
        );
        assert_eq!(
            find(f(
                "loc",
                Condition::WithinCenterSphere {
                    center: sj,
                    radius: 9.0
                }
            )),
            doc! {"loc": {"$geoWithin": {"$centerSphere": [[-121.5, 37.0], PI]}}}
        );
        assert_eq!(
            find(f("area", Condition::GeoIntersects(p(5.0, 6.0)))),
            doc! {"area": {"$geoIntersects": {"$geometry": {"type": "Point", "coordinates": [6.0, 5.0]}}}}
        );
        assert!(matches!(
            filter_document(
                &schema(),
                &f("loc", Condition::GeoIntersects(p(95.0, 0.0))),
                NearOrder::None
            ),
            Err(StoreError::InvalidQuery(_))
        ));
    }

    #[test]
    fn text_search() {
        let search = TextSearch {
            term: "coffee".into(),
            language: Some("french".into()),
            case_sensitive: true,
            diacritic_sensitive: false,
        };
        let filter = f("name", Condition::Text(search));
        assert_eq!(
            find(filter.clone()),
            doc! {"$text": {"$search": "coffee", "$language": "french", "$caseSensitive": true}}
        );
        assert_eq!(text_fields(&Filter::And(vec![filter])).len(), 1);
    }

    #[test]
    fn client_input_never_becomes_an_operator() {
        // An object holding operators is data: no stored value can equal
        // it, since Parse refuses such keys.
        let hostile = QueryValue::Json(json!({"$where": "sleep(1000)"}));
        assert_eq!(find(f("meta", Condition::Eq(hostile.clone()))), nothing());
        assert_eq!(find(f("meta", Condition::Ne(hostile.clone()))), doc! {});
        assert_eq!(find(f("meta", Condition::In(vec![hostile]))), nothing());
        // Strings are always `$eq` operands, whatever they hold.
        assert_eq!(
            find(f("name", Condition::Eq(s("{\"$gt\": \"\"}")))),
            doc! {"name": {"$eq": "{\"$gt\": \"\"}"}}
        );
        for path in [
            FieldPath {
                field: "$where".into(),
                nested: vec![],
            },
            FieldPath {
                field: "a.b".into(),
                nested: vec![],
            },
            FieldPath {
                field: "meta".into(),
                nested: vec!["$gt".into()],
            },
            FieldPath {
                field: "meta".into(),
                nested: vec!["x.y".into()],
            },
            FieldPath {
                field: "meta".into(),
                nested: vec!["".into()],
            },
        ] {
            let filter = Filter::Field(path.clone(), Condition::Exists(true));
            assert!(
                matches!(
                    filter_document(&schema(), &filter, NearOrder::None),
                    Err(StoreError::InvalidQuery(_))
                ),
                "{path}"
            );
        }
        let user = ClassSchema::new("_User");
        let injected = Filter::field("authData.a$b.id", Condition::Eq(s("1")));
        assert!(filter_document(&user, &injected, NearOrder::None).is_err());
    }

    #[test]
    fn relations_and_subqueries_must_be_resolved_first() {
        let fan = QueryValue::Pointer {
            class_name: "_User".into(),
            object_id: "u".into(),
        };
        assert_eq!(find(f("fans", Condition::Eq(fan))), nothing());
        let sub = || {
            Box::new(SubQuery {
                class_name: "Team".into(),
                filter: Filter::All,
            })
        };
        let key = FieldPath::new("city");
        for condition in [
            Condition::InQuery(sub()),
            Condition::NotInQuery(sub()),
            Condition::Select {
                query: sub(),
                key: key.clone(),
            },
            Condition::DontSelect { query: sub(), key },
        ] {
            let filter = f("team", condition);
            assert!(matches!(
                filter_document(&schema(), &filter, NearOrder::None),
                Err(StoreError::Backend(_))
            ));
        }
        let related = Filter::RelatedTo {
            owner_class: "Team".into(),
            owner_id: "t".into(),
            key: "players".into(),
        };
        assert!(filter_document(&schema(), &related, NearOrder::None).is_err());
    }

    #[test]
    fn sorts_and_projections() {
        let by = |path: &str, descending| SortKey::Field {
            path: FieldPath::parse(path),
            descending,
        };
        assert_eq!(
            sort_document(
                &schema(),
                &[
                    by("name", true),
                    by("createdAt", false),
                    by("team", false),
                    by("meta.w", false),
                    SortKey::TextScore,
                    by("name", false)
                ],
                true
            )
            .unwrap(),
            Some(
                doc! {"name": -1, "_created_at": 1, "_p_team": 1, "meta.w": 1, "score": {"$meta": "textScore"}}
            )
        );
        assert_eq!(
            sort_document(&schema(), &[SortKey::TextScore], false).unwrap(),
            None
        );
        assert!(sort_document(&schema(), &[by("$natural", false)], false).is_err());
        let keys = vec![
            "name".to_owned(),
            "team".to_owned(),
            "$score".to_owned(),
            "ACL".to_owned(),
            "a.b".to_owned(),
        ];
        assert_eq!(
            projection(&schema(), Some(&keys), true),
            Some(
                doc! {"_id": 1, "_created_at": 1, "_updated_at": 1, "_rperm": 1, "_wperm": 1,
                "name": 1, "_p_team": 1, "score": {"$meta": "textScore"}}
            )
        );
        assert_eq!(projection(&schema(), None, true), None);
        assert_eq!(
            projection(
                &ClassSchema::new("_User"),
                Some(&["authData".to_owned()]),
                false
            ),
            None
        );
    }
}
