//! `include` (replacing pointers with the objects they point at, through
//! arrays and several levels deep) and the dotted forms of `keys` and
//! `excludeKeys` that select inside included objects. Backend-neutral: it
//! fetches included objects through [`Store::find`], so any filter a caller
//! applies to reads can apply to them too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::error::StoreResult;
use crate::{Condition, Filter, Object, Query, QueryValue, SchemaView, Store};

/// Most ids fetched in one query.
const CHUNK: usize = 500;

/// Keys an included object always keeps.
const ALWAYS_KEPT: &[&str] = &[
    "__type",
    "className",
    "objectId",
    "createdAt",
    "updatedAt",
    "ACL",
];

/// Replaces the pointers at each path (shortest first) with their objects.
/// `readable` gives, per class, the filter an included object must match
/// (the reader's permissions). Pointers to objects that do not exist or
/// cannot be read are dropped, as Parse Server drops them: the field
/// disappears, or the array loses the entry.
pub async fn resolve(
    store: &dyn Store,
    view: &SchemaView,
    objects: &mut [Object],
    paths: &[Vec<String>],
    readable: &(dyn Fn(&str) -> Filter + Sync),
) -> StoreResult<()> {
    for path in paths {
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for object in objects.iter_mut() {
            visit(object, path, &mut |value| {
                if let Some((class_name, object_id)) = pointer(value) {
                    wanted
                        .entry(class_name.to_owned())
                        .or_default()
                        .insert(object_id.to_owned());
                }
            });
        }
        if wanted.is_empty() {
            continue;
        }
        let mut found: HashMap<(String, String), Object> = HashMap::new();
        for (class_name, ids) in wanted {
            let restriction = readable(&class_name);
            let ids: Vec<String> = ids.into_iter().collect();
            for chunk in ids.chunks(CHUNK) {
                let values = chunk.iter().cloned().map(QueryValue::String).collect();
                let query = Query::new(class_name.clone()).filter(
                    Filter::field("objectId", Condition::In(values)).and(restriction.clone()),
                );
                for object in store.find(view, &query).await? {
                    let id = object["objectId"].as_str().unwrap_or_default().to_owned();
                    found.insert((class_name.clone(), id), object);
                }
            }
        }
        for object in objects.iter_mut() {
            visit(object, path, &mut |value| {
                let Some((class_name, object_id)) = pointer(value) else {
                    return;
                };
                *value = match found.get(&(class_name.to_owned(), object_id.to_owned())) {
                    Some(target) => {
                        let mut included = target.clone();
                        included.insert("__type".into(), Value::from("Object"));
                        included.insert("className".into(), Value::from(class_name));
                        Value::Object(included)
                    }
                    None => Value::Null,
                };
            });
            prune_nulls(object, path);
        }
    }
    Ok(())
}

/// Removes the nulls `resolve` left for dangling pointers at `path`.
fn prune_nulls(object: &mut Object, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match object.get_mut(first) {
        Some(Value::Null) if rest.is_empty() => {
            object.remove(first);
        }
        Some(Value::Array(items)) => {
            if rest.is_empty() {
                items.retain(|item| !item.is_null());
            } else {
                for item in items.iter_mut() {
                    if let Value::Object(map) = item {
                        prune_nulls(map, rest);
                    }
                }
            }
        }
        Some(Value::Object(map)) => prune_nulls(map, rest),
        _ => {}
    }
}

/// `(className, objectId)` of a pointer (not of an already included
/// object).
fn pointer(value: &Value) -> Option<(&str, &str)> {
    let map = value.as_object()?;
    if map.get("__type")?.as_str()? != "Pointer" {
        return None;
    }
    Some((
        map.get("className")?.as_str()?,
        map.get("objectId")?.as_str()?,
    ))
}

/// Calls `f` on every value at `path`, stepping through included objects,
/// nested objects and arrays.
fn visit(object: &mut Object, path: &[String], f: &mut impl FnMut(&mut Value)) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(value) = object.get_mut(first) {
        visit_value(value, rest, f);
    }
}

fn visit_value(value: &mut Value, rest: &[String], f: &mut impl FnMut(&mut Value)) {
    match value {
        Value::Array(items) => {
            for item in items {
                visit_value(item, rest, f);
            }
        }
        Value::Object(map) if !rest.is_empty() => visit(map, rest, f),
        _ if rest.is_empty() => f(value),
        _ => {}
    }
}

/// Applies dotted `keys` (`post.title`) to included objects: the object at
/// `post` keeps only `title` and the keys every object keeps. A key listed
/// whole (`post`) keeps everything below it.
pub fn select_nested(objects: &mut [Object], keys: &[String]) {
    let tree = KeyTree::from_keys(keys.iter().map(String::as_str));
    for object in objects {
        for (field, subtree) in &tree.children {
            if let Some(value) = object.get_mut(field) {
                subtree.apply(value);
            }
        }
    }
}

#[derive(Default)]
struct KeyTree {
    /// The key itself was listed, so nothing below it is filtered.
    whole: bool,
    children: BTreeMap<String, KeyTree>,
}

impl KeyTree {
    fn from_keys<'a>(keys: impl Iterator<Item = &'a str>) -> Self {
        let mut root = KeyTree::default();
        for key in keys {
            let mut node = &mut root;
            for part in key.split('.') {
                node = node.children.entry(part.to_owned()).or_default();
            }
            node.whole = true;
        }
        root
    }

    fn apply(&self, value: &mut Value) {
        if self.whole || self.children.is_empty() {
            return;
        }
        match value {
            Value::Array(items) => items.iter_mut().for_each(|item| self.apply(item)),
            Value::Object(map) if map.get("__type").and_then(Value::as_str) == Some("Object") => {
                map.retain(|k, _| {
                    ALWAYS_KEPT.contains(&k.as_str()) || self.children.contains_key(k)
                });
                for (field, subtree) in &self.children {
                    if let Some(child) = map.get_mut(field) {
                        subtree.apply(child);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Removes `excludeKeys`; dotted ones remove inside included objects. The
/// keys every object has cannot be excluded.
pub fn exclude(objects: &mut [Object], keys: &[String]) {
    for object in objects {
        for key in keys {
            let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
            remove_path(object, &parts);
        }
    }
}

fn remove_path(object: &mut Object, parts: &[String]) {
    match parts {
        [] => {}
        [last] => {
            if !ALWAYS_KEPT.contains(&last.as_str()) {
                object.remove(last);
            }
        }
        [first, rest @ ..] => match object.get_mut(first) {
            Some(Value::Object(map)) => remove_path(map, rest),
            Some(Value::Array(items)) => {
                for item in items {
                    if let Value::Object(map) = item {
                        remove_path(map, rest);
                    }
                }
            }
            _ => {}
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn nested_keys_select_inside_included_objects() {
        let mut objects = vec![obj(json!({
            "objectId": "a",
            "post": {"__type": "Object", "className": "Post", "objectId": "p", "title": "t", "body": "b",
                     "author": {"__type": "Object", "className": "U", "objectId": "u", "name": "n", "age": 3}},
            "other": 1
        }))];
        select_nested(
            &mut objects,
            &["post.title".into(), "post.author.name".into()],
        );
        assert_eq!(
            objects[0]["post"],
            json!({"__type": "Object", "className": "Post", "objectId": "p", "title": "t",
                   "author": {"__type": "Object", "className": "U", "objectId": "u", "name": "n"}})
        );
    }

    #[test]
    fn exclusions_reach_into_objects_but_spare_ids() {
        let mut objects = vec![obj(
            json!({"objectId": "a", "x": 1, "post": {"y": 2, "z": 3}}),
        )];
        exclude(
            &mut objects,
            &["x".into(), "post.y".into(), "objectId".into()],
        );
        assert_eq!(
            Value::Object(objects[0].clone()),
            json!({"objectId": "a", "post": {"z": 3}})
        );
    }
}
