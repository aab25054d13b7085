//! Which subscriptions an event can concern, without testing each one.
//!
//! Subscriptions with the same query (after permissions narrowed it) share
//! one [`QueryGroup`], tested once per event. A group whose query requires
//! `field == value` at its top level is filed under that pair, so an event
//! reaches it only when the object (or its original) holds that value;
//! the rest are tested on every event of their class.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use oxbase_store::matcher::Matcher;
use oxbase_store::{Condition, Filter, Object, QueryValue};
use serde_json::Value;

use crate::member::Member;

/// The subscriptions of one query on one class.
#[derive(Clone)]
pub struct QueryGroup {
    pub matcher: Arc<Matcher>,
    pub members: Vec<Arc<Member>>,
    /// The `(field, value key)` the group is filed under.
    filed_under: Option<(String, String)>,
}

#[derive(Default)]
struct ClassIndex {
    groups: HashMap<String, Arc<QueryGroup>>,
    /// field -> value key -> group keys.
    by_value: HashMap<String, HashMap<String, HashSet<String>>>,
    /// Groups tested on every event.
    scanned: HashSet<String>,
}

/// Every subscription of a process, by class.
#[derive(Default)]
pub struct SubscriptionIndex {
    classes: HashMap<String, ClassIndex>,
    subscriptions: usize,
}

impl SubscriptionIndex {
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Adds a member to the group of `key`, creating the group from
    /// `filter` and `matcher` when it is the first.
    pub fn insert(
        &mut self,
        class_name: &str,
        key: String,
        filter: &Filter,
        matcher: Matcher,
        member: Arc<Member>,
    ) -> Arc<QueryGroup> {
        let class = self.classes.entry(class_name.to_owned()).or_default();
        let group = class.groups.entry(key.clone()).or_insert_with(|| {
            let filed_under = equality_of(filter);
            match &filed_under {
                Some((field, value)) => {
                    class
                        .by_value
                        .entry(field.clone())
                        .or_default()
                        .entry(value.clone())
                        .or_default()
                        .insert(key.clone());
                }
                None => {
                    class.scanned.insert(key.clone());
                }
            }
            Arc::new(QueryGroup {
                matcher: Arc::new(matcher),
                members: Vec::new(),
                filed_under,
            })
        });
        // Events in flight may hold the group: they keep the old copy.
        Arc::make_mut(group).members.push(member);
        self.subscriptions += 1;
        Arc::clone(group)
    }

    /// Removes one member; the group goes with its last member.
    pub fn remove(&mut self, class_name: &str, key: &str, member: &Arc<Member>) {
        let Some(class) = self.classes.get_mut(class_name) else {
            return;
        };
        let Some(group) = class.groups.get_mut(key) else {
            return;
        };
        let before = group.members.len();
        let group_mut = Arc::make_mut(group);
        group_mut.members.retain(|m| !Arc::ptr_eq(m, member));
        self.subscriptions -= before - group_mut.members.len();
        if !group_mut.members.is_empty() {
            return;
        }
        let filed_under = group_mut.filed_under.take();
        class.groups.remove(key);
        match filed_under {
            Some((field, value)) => {
                if let Some(values) = class.by_value.get_mut(&field) {
                    if let Some(keys) = values.get_mut(&value) {
                        keys.remove(key);
                        if keys.is_empty() {
                            values.remove(&value);
                        }
                    }
                    if values.is_empty() {
                        class.by_value.remove(&field);
                    }
                }
            }
            None => {
                class.scanned.remove(key);
            }
        }
        if class.groups.is_empty() {
            self.classes.remove(class_name);
        }
    }

    /// Every subscription, for the changes of access that concern many.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.classes
            .values()
            .flat_map(|class| class.groups.values())
            .flat_map(|group| group.members.iter())
    }

    /// The groups an event on `object` (and `original`) may concern.
    pub fn candidates(
        &self,
        class_name: &str,
        object: &Object,
        original: Option<&Object>,
    ) -> Vec<Arc<QueryGroup>> {
        let Some(class) = self.classes.get(class_name) else {
            return Vec::new();
        };
        let mut keys: HashSet<&String> = class.scanned.iter().collect();
        for (field, values) in &class.by_value {
            for side in std::iter::once(object).chain(original) {
                let value = side.get(field);
                // A relation's pointers are in the store: any of them may
                // be the one a query names.
                if value.is_some_and(is_relation) {
                    keys.extend(values.values().flatten());
                    continue;
                }
                for value in stored_keys(value) {
                    if let Some(found) = values.get(&value) {
                        keys.extend(found);
                    }
                }
            }
        }
        keys.into_iter()
            .filter_map(|key| class.groups.get(key).cloned())
            .collect()
    }
}

fn is_relation(value: &Value) -> bool {
    value.get("__type").and_then(Value::as_str) == Some("Relation")
}

/// A top-level `field == value` the filter requires, for a value whose
/// stored forms [`stored_keys`] knows.
fn equality_of(filter: &Filter) -> Option<(String, String)> {
    match filter {
        Filter::Field(path, Condition::Eq(value)) if !path.is_nested() => {
            Some((path.field.clone(), query_key(value)?))
        }
        Filter::And(parts) => parts.iter().find_map(equality_of),
        _ => None,
    }
}

fn query_key(value: &QueryValue) -> Option<String> {
    match value {
        QueryValue::String(text) => Some(format!("s:{text}")),
        QueryValue::Bool(b) => Some(format!("b:{b}")),
        QueryValue::Number(n) => Some(format!("n:{}", n.as_f64()?)),
        QueryValue::Pointer {
            class_name,
            object_id,
        } => Some(format!("p:{class_name}:{object_id}")),
        _ => None,
    }
}

/// The keys a stored value is filed under: its own, and each element's
/// for an array (an equality matches an array holding the value).
fn stored_keys(value: Option<&Value>) -> Vec<String> {
    fn one(value: &Value) -> Option<String> {
        match value {
            Value::String(text) => Some(format!("s:{text}")),
            Value::Bool(b) => Some(format!("b:{b}")),
            Value::Number(n) => Some(format!("n:{}", n.as_f64()?)),
            Value::Object(map) if map.get("__type").and_then(Value::as_str) == Some("Pointer") => {
                Some(format!(
                    "p:{}:{}",
                    map.get("className")?.as_str()?,
                    map.get("objectId")?.as_str()?
                ))
            }
            _ => None,
        }
    }
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(value) => one(value).into_iter().collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_values_file_as_queries_do() {
        let pointer = QueryValue::Pointer {
            class_name: "_User".into(),
            object_id: "u1".into(),
        };
        let stored = json!({"__type": "Pointer", "className": "_User", "objectId": "u1"});
        assert_eq!(
            stored_keys(Some(&stored)),
            vec![query_key(&pointer).unwrap()]
        );
        assert_eq!(
            stored_keys(Some(&json!(["a", 2, 2.0]))),
            vec!["s:a".to_owned(), "n:2".into(), "n:2".into()]
        );
        assert_eq!(
            query_key(&QueryValue::Number(serde_json::Number::from(2))),
            Some("n:2".into())
        );
        assert_eq!(stored_keys(Some(&json!({"a": 1}))), Vec::<String>::new());
    }
}
