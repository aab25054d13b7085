//! The write model. Every create, update and delete reaches a backend as a
//! [`WriteBatch`] through [`crate::Store::write`], the one write path, so
//! whatever must happen with every write (the event outbox) happens there.

use serde_json::{Map, Number, Value};

use crate::error::{StoreError, StoreResult};
use crate::outbox::EventContext;
use crate::query::{FieldPath, Filter, Object};

/// An atomic change to one field.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOp {
    Set(Value),
    Delete,
    Increment(Number),
    Add(Vec<Value>),
    AddUnique(Vec<Value>),
    Remove(Vec<Value>),
}

/// Rows to add to and remove from one relation's join table, keyed by the
/// related objects' ids. The owner is the object being written.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationChange {
    pub key: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Inserts a new object. It carries its `objectId`, `createdAt` and
    /// `updatedAt`.
    Create {
        class_name: String,
        object: Object,
        relations: Vec<RelationChange>,
    },
    /// Applies `changes` to the object, if it exists and matches
    /// `precondition`; otherwise fails with [`StoreError::NotFound`].
    Update {
        class_name: String,
        object_id: String,
        updated_at: String,
        changes: Vec<(FieldPath, UpdateOp)>,
        relations: Vec<RelationChange>,
        precondition: Filter,
    },
    /// Deletes the object, if it exists and matches `precondition`.
    Delete {
        class_name: String,
        object_id: String,
        precondition: Filter,
    },
}

impl WriteOp {
    pub fn class_name(&self) -> &str {
        match self {
            WriteOp::Create { class_name, .. }
            | WriteOp::Update { class_name, .. }
            | WriteOp::Delete { class_name, .. } => class_name,
        }
    }
}

/// What a write did, with the object's states around it.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    Created(Object),
    Updated { before: Object, after: Object },
    Deleted(Object),
}

/// Writes that commit together.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
    /// All-or-nothing: if any op fails, none is applied and every result is
    /// that op's error. Otherwise each op succeeds or fails on its own.
    pub atomic: bool,
    /// When set, each op that commits leaves its event in the outbox, in
    /// the same transaction.
    pub events: Option<EventContext>,
}

impl WriteBatch {
    pub fn one(op: WriteOp) -> Self {
        Self {
            ops: vec![op],
            atomic: false,
            events: None,
        }
    }
}

/// Applies update operators to an object in memory. Backends that cannot
/// express an operator natively read the row, call this, and write it back
/// inside one transaction.
pub fn apply_update(object: &mut Object, changes: &[(FieldPath, UpdateOp)]) -> StoreResult<()> {
    for (path, op) in changes {
        apply_one(object, path, op)?;
    }
    Ok(())
}

fn apply_one(object: &mut Object, path: &FieldPath, op: &UpdateOp) -> StoreResult<()> {
    // Top-level nulls are never stored: a field set to null is gone, as
    // Parse Server's PostgreSQL adapter reads it back.
    if !path.is_nested() && matches!(op, UpdateOp::Set(Value::Null)) {
        object.remove(&path.field);
        return Ok(());
    }
    let (parent, key) = match parent_of(object, path, !matches!(op, UpdateOp::Delete))? {
        Some(found) => found,
        None => return Ok(()),
    };
    match op {
        UpdateOp::Set(value) => {
            parent.insert(key.to_owned(), value.clone());
        }
        UpdateOp::Delete => {
            parent.remove(key);
        }
        UpdateOp::Increment(amount) => {
            let next = match parent.get(key) {
                None | Some(Value::Null) => Value::Number(amount.clone()),
                Some(Value::Number(current)) => Value::Number(add_numbers(current, amount)),
                Some(_) => {
                    return Err(StoreError::InvalidUpdate(format!(
                        "cannot increment {path}: it is not a number"
                    )));
                }
            };
            parent.insert(key.to_owned(), next);
        }
        UpdateOp::Add(items) | UpdateOp::AddUnique(items) | UpdateOp::Remove(items) => {
            let mut array = match parent.remove(key) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(array)) => array,
                Some(other) => {
                    parent.insert(key.to_owned(), other);
                    return Err(StoreError::InvalidUpdate(format!(
                        "cannot change {path} as an array: it is not one"
                    )));
                }
            };
            match op {
                UpdateOp::Add(_) => array.extend(items.iter().cloned()),
                UpdateOp::AddUnique(_) => {
                    for item in items {
                        if !array.iter().any(|existing| same_element(existing, item)) {
                            array.push(item.clone());
                        }
                    }
                }
                _ => {
                    array.retain(|existing| !items.iter().any(|item| same_element(existing, item)))
                }
            }
            parent.insert(key.to_owned(), Value::Array(array));
        }
    }
    Ok(())
}

/// Finds the map holding the last segment of `path`, creating intermediate
/// objects when `create` is set. `None` means there is nothing to change.
fn parent_of<'a>(
    object: &'a mut Object,
    path: &'a FieldPath,
    create: bool,
) -> StoreResult<Option<(&'a mut Map<String, Value>, &'a str)>> {
    let Some((last, middle)) = path.nested.split_last() else {
        return Ok(Some((object, path.field.as_str())));
    };
    let mut node = object;
    for key in std::iter::once(&path.field).chain(middle) {
        if !node.contains_key(key) {
            if !create {
                return Ok(None);
            }
            node.insert(key.clone(), Value::Object(Map::new()));
        }
        node = match node.get_mut(key) {
            Some(Value::Object(child)) => child,
            Some(_) if !create => return Ok(None),
            _ => {
                return Err(StoreError::InvalidUpdate(format!(
                    "cannot set {path}: {key} is not an object"
                )));
            }
        };
    }
    Ok(Some((node, last.as_str())))
}

fn add_numbers(a: &Number, b: &Number) -> Number {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return Number::from(sum);
    }
    let sum = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    Number::from_f64(sum).unwrap_or_else(|| Number::from(0))
}

/// Element equality for AddUnique and Remove: pointers are the same when
/// they point at the same object, whatever else they carry.
fn same_element(a: &Value, b: &Value) -> bool {
    match (pointer_identity(a), pointer_identity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn pointer_identity(value: &Value) -> Option<(&str, &str)> {
    let map = value.as_object()?;
    if !matches!(map.get("__type")?.as_str()?, "Pointer" | "Object") {
        return None;
    }
    Some((
        map.get("className")?.as_str()?,
        map.get("objectId")?.as_str()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Object {
        value.as_object().unwrap().clone()
    }

    fn apply(object: &mut Object, field: &str, op: UpdateOp) -> StoreResult<()> {
        apply_update(object, &[(FieldPath::parse(field), op)])
    }

    #[test]
    fn increments_numbers_and_missing_fields() {
        let mut o = obj(json!({"n": 1, "f": 1.5}));
        apply(&mut o, "n", UpdateOp::Increment(2.into())).unwrap();
        apply(&mut o, "f", UpdateOp::Increment(1.into())).unwrap();
        apply(&mut o, "m", UpdateOp::Increment((-3).into())).unwrap();
        assert_eq!(Value::Object(o), json!({"n": 3, "f": 2.5, "m": -3}));
    }

    #[test]
    fn increment_of_a_string_is_refused() {
        let mut o = obj(json!({"s": "x"}));
        assert!(matches!(
            apply(&mut o, "s", UpdateOp::Increment(1.into())),
            Err(StoreError::InvalidUpdate(_))
        ));
    }

    #[test]
    fn array_operators() {
        let p = json!({"__type": "Pointer", "className": "A", "objectId": "x"});
        let mut o = obj(json!({"a": [1, 2]}));
        apply(&mut o, "a", UpdateOp::Add(vec![json!(2), json!(3)])).unwrap();
        apply(
            &mut o,
            "a",
            UpdateOp::AddUnique(vec![json!(3), json!(4), p.clone()]),
        )
        .unwrap();
        apply(&mut o, "a", UpdateOp::Remove(vec![json!(2)])).unwrap();
        let included = json!({"__type": "Object", "className": "A", "objectId": "x", "k": 1});
        apply(&mut o, "a", UpdateOp::AddUnique(vec![included.clone()])).unwrap();
        assert_eq!(o["a"], json!([1, 3, 4, p]));
        apply(&mut o, "a", UpdateOp::Remove(vec![included])).unwrap();
        assert_eq!(o["a"], json!([1, 3, 4]));
        apply(&mut o, "missing", UpdateOp::Remove(vec![json!(1)])).unwrap();
        assert_eq!(o["missing"], json!([]));
    }

    #[test]
    fn nested_paths_set_and_delete() {
        let mut o = obj(json!({"profile": {"name": "a"}}));
        apply(&mut o, "profile.name", UpdateOp::Set(json!("b"))).unwrap();
        apply(&mut o, "profile.stats.wins", UpdateOp::Increment(1.into())).unwrap();
        apply(&mut o, "other.deep", UpdateOp::Delete).unwrap();
        assert_eq!(
            Value::Object(o.clone()),
            json!({"profile": {"name": "b", "stats": {"wins": 1}}})
        );
        apply(&mut o, "profile", UpdateOp::Set(Value::Null)).unwrap();
        assert_eq!(Value::Object(o), json!({}));
    }
}
