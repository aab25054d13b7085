//! Class schemas, in the shape Parse's `/schemas` API shows them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The type of one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum FieldType {
    String,
    Number,
    Boolean,
    Date,
    Object,
    Array,
    Pointer {
        #[serde(rename = "targetClass")]
        target_class: String,
    },
    Relation {
        #[serde(rename = "targetClass")]
        target_class: String,
    },
    File,
    GeoPoint,
    Polygon,
    Bytes,
    #[serde(rename = "ACL")]
    Acl,
}

impl fmt::Display for FieldType {
    /// Parse's own spelling in error messages: `Pointer<Target>` and
    /// `Relation<Target>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::String => f.write_str("String"),
            FieldType::Number => f.write_str("Number"),
            FieldType::Boolean => f.write_str("Boolean"),
            FieldType::Date => f.write_str("Date"),
            FieldType::Object => f.write_str("Object"),
            FieldType::Array => f.write_str("Array"),
            FieldType::Pointer { target_class } => write!(f, "Pointer<{target_class}>"),
            FieldType::Relation { target_class } => write!(f, "Relation<{target_class}>"),
            FieldType::File => f.write_str("File"),
            FieldType::GeoPoint => f.write_str("GeoPoint"),
            FieldType::Polygon => f.write_str("Polygon"),
            FieldType::Bytes => f.write_str("Bytes"),
            FieldType::Acl => f.write_str("ACL"),
        }
    }
}

/// A field's type plus the optional constraints Parse's schema allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    #[serde(flatten)]
    pub field_type: FieldType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(
        default,
        rename = "defaultValue",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_value: Option<Value>,
}

impl From<FieldType> for FieldSpec {
    fn from(field_type: FieldType) -> Self {
        Self {
            field_type,
            required: None,
            default_value: None,
        }
    }
}

/// Fields every class has, stored in their own columns by every backend.
pub const DEFAULT_FIELDS: [&str; 4] = ["objectId", "createdAt", "updatedAt", "ACL"];

/// One class: its fields, permissions and indexes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSchema {
    pub class_name: String,
    pub fields: BTreeMap<String, FieldSpec>,
    #[serde(default)]
    pub class_level_permissions: Value,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub indexes: Map<String, Value>,
    /// Which stored version of the schema this is, where the store can
    /// tell (PostgreSQL: the `_SCHEMA` row's `xmin`), so a read can notice
    /// that another process changed it since. Not part of the schema's
    /// meaning: two schemas that differ only here are equal.
    #[serde(skip)]
    pub stored_version: Option<String>,
}

impl PartialEq for ClassSchema {
    fn eq(&self, other: &Self) -> bool {
        self.class_name == other.class_name
            && self.fields == other.fields
            && self.class_level_permissions == other.class_level_permissions
            && self.indexes == other.indexes
    }
}

/// The fields Parse Server gives its own classes beyond the defaults
/// (`SchemaController.defaultColumns`).
pub fn system_fields(class_name: &str) -> Vec<(&'static str, FieldType)> {
    use FieldType::*;
    let pointer = |target: &str| Pointer {
        target_class: target.to_owned(),
    };
    let relation = |target: &str| Relation {
        target_class: target.to_owned(),
    };
    match class_name {
        "_User" => vec![
            ("username", String),
            ("password", String),
            ("email", String),
            ("emailVerified", Boolean),
            ("authData", Object),
        ],
        "_Installation" => vec![
            ("installationId", String),
            ("deviceToken", String),
            ("channels", Array),
            ("deviceType", String),
            ("pushType", String),
            ("GCMSenderId", String),
            ("timeZone", String),
            ("localeIdentifier", String),
            ("badge", Number),
            ("appVersion", String),
            ("appName", String),
            ("appIdentifier", String),
            ("parseVersion", String),
        ],
        "_Role" => vec![
            ("name", String),
            ("users", relation("_User")),
            ("roles", relation("_Role")),
        ],
        "_Session" => vec![
            ("user", pointer("_User")),
            ("installationId", String),
            ("sessionToken", String),
            ("expiresAt", Date),
            ("createdWith", Object),
        ],
        "_PushStatus" => vec![
            ("pushTime", String),
            ("source", String),
            ("query", String),
            ("payload", String),
            ("title", String),
            ("expiry", Number),
            ("expiration_interval", Number),
            ("status", String),
            ("numSent", Number),
            ("numFailed", Number),
            ("pushHash", String),
            ("errorMessage", Object),
            ("sentPerType", Object),
            ("failedPerType", Object),
            ("sentPerUTCOffset", Object),
            ("failedPerUTCOffset", Object),
            ("count", Number),
        ],
        "_JobStatus" => vec![
            ("jobName", String),
            ("source", String),
            ("status", String),
            ("message", String),
            ("params", Object),
            ("finishedAt", Date),
        ],
        "_JobSchedule" => vec![
            ("jobName", String),
            ("description", String),
            ("params", String),
            ("startAfter", String),
            ("daysOfWeek", Array),
            ("timeOfDay", String),
            ("lastRun", Number),
            ("repeatMinutes", Number),
        ],
        "_Audience" => vec![
            ("name", String),
            ("query", String),
            ("lastUsed", Date),
            ("timesUsed", Number),
        ],
        "_Idempotency" => vec![("reqId", String), ("expire", Date)],
        _ => Vec::new(),
    }
}

/// Parse Server's classes whose schema it never stores in `_SCHEMA`: it
/// answers for them from their built-in definition
/// (`SchemaController.volatileClasses`).
pub const VOLATILE_CLASSES: &[&str] = &[
    "_JobStatus",
    "_PushStatus",
    "_Hooks",
    "_GlobalConfig",
    "_GraphQLConfig",
    "_JobSchedule",
    "_Audience",
    "_Idempotency",
];

/// Unique fields Parse Server indexes on its own classes.
pub fn unique_fields(class_name: &str) -> &'static [&'static str] {
    match class_name {
        "_User" => &["username", "email"],
        "_Role" => &["name"],
        "_Idempotency" => &["reqId"],
        _ => &[],
    }
}

/// The class holding relation `key` of `class_name` (a join table on the
/// SQL backends, a collection on MongoDB): `_Join:<key>:<class_name>`, as
/// Parse Server names it.
pub fn join_class_name(key: &str, class_name: &str) -> String {
    format!("_Join:{key}:{class_name}")
}

impl ClassSchema {
    /// A new class with the default fields (and a system class's own), and
    /// Parse's default, open class-level permissions.
    pub fn new(class_name: &str) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert("objectId".into(), FieldType::String.into());
        fields.insert("createdAt".into(), FieldType::Date.into());
        fields.insert("updatedAt".into(), FieldType::Date.into());
        fields.insert("ACL".into(), FieldType::Acl.into());
        for (name, field_type) in system_fields(class_name) {
            fields.insert(name.into(), field_type.into());
        }
        Self {
            class_name: class_name.to_owned(),
            fields,
            class_level_permissions: default_class_level_permissions(),
            indexes: Map::new(),
            stored_version: None,
        }
    }

    pub fn field_type(&self, name: &str) -> Option<&FieldType> {
        self.fields.get(name).map(|spec| &spec.field_type)
    }

    /// The class's GeoPoint field, if it has one (Parse allows only one).
    pub fn geo_point_field(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(_, spec)| spec.field_type == FieldType::GeoPoint)
            .map(|(name, _)| name.as_str())
    }
}

pub fn default_class_level_permissions() -> Value {
    json!({
        "find": {"*": true},
        "count": {"*": true},
        "get": {"*": true},
        "create": {"*": true},
        "update": {"*": true},
        "delete": {"*": true},
        "addField": {"*": true},
        "protectedFields": {"*": []},
    })
}

/// A consistent snapshot of every class's schema, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SchemaView {
    classes: Arc<HashMap<String, Arc<ClassSchema>>>,
}

impl SchemaView {
    pub fn new(classes: impl IntoIterator<Item = ClassSchema>) -> Self {
        Self {
            classes: Arc::new(
                classes
                    .into_iter()
                    .map(|class| (class.class_name.clone(), Arc::new(class)))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, class_name: &str) -> Option<&Arc<ClassSchema>> {
        self.classes.get(class_name)
    }

    pub fn classes(&self) -> impl Iterator<Item = &Arc<ClassSchema>> {
        self.classes.values()
    }

    /// This view with one class replaced or added.
    pub fn with(&self, class: ClassSchema) -> Self {
        let mut classes = (*self.classes).clone();
        classes.insert(class.class_name.clone(), Arc::new(class));
        Self {
            classes: Arc::new(classes),
        }
    }
}

/// A change to a class's schema, as `PUT /schemas/{class}` asks for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemaChange {
    pub add_fields: BTreeMap<String, FieldSpec>,
    pub delete_fields: Vec<String>,
    pub class_level_permissions: Option<Value>,
    /// New indexes: name → `{field: 1 | -1 | "text" | "2dsphere"}`.
    pub add_indexes: Map<String, Value>,
    pub delete_indexes: Vec<String>,
}

impl SchemaChange {
    /// Applies the change to `current`, refusing contradictions: adding a
    /// field that exists, deleting one that does not, indexing a missing
    /// field or dropping a missing index.
    pub fn apply(&self, current: &ClassSchema) -> Result<ClassSchema, crate::StoreError> {
        let invalid = |m: String| Err(crate::StoreError::InvalidSchema(m));
        let mut next = current.clone();
        for name in &self.delete_fields {
            if DEFAULT_FIELDS.contains(&name.as_str()) || next.fields.remove(name).is_none() {
                return invalid(format!("Field {name} does not exist, cannot delete."));
            }
        }
        for (name, spec) in &self.add_fields {
            if next.fields.contains_key(name) {
                return invalid(format!("Field {name} exists, cannot update."));
            }
            next.fields.insert(name.clone(), spec.clone());
        }
        if let Some(clp) = &self.class_level_permissions {
            next.class_level_permissions = clp.clone();
        }
        for name in &self.delete_indexes {
            if next.indexes.remove(name).is_none() {
                return invalid(format!("Index {name} does not exist, cannot delete."));
            }
        }
        for (name, spec) in &self.add_indexes {
            if next.indexes.contains_key(name) {
                return invalid(format!("Index {name} exists, cannot update."));
            }
            let Some(keys) = spec.as_object().filter(|k| !k.is_empty()) else {
                return invalid(format!("Index {name} must name at least one field."));
            };
            if let Some(field) = keys.keys().find(|f| !next.fields.contains_key(*f)) {
                return invalid(format!("Field {field} does not exist, cannot add index."));
            }
            next.indexes.insert(name.clone(), spec.clone());
        }
        Ok(next)
    }
}

/// Merges `additions` into `current` (or a new class), failing on the first
/// field whose type differs from the stored one. Returns the merged schema
/// and whether anything changed. Backends call it inside their schema
/// transaction so concurrent additions of the same field agree.
pub fn merge_fields(
    class_name: &str,
    current: Option<ClassSchema>,
    additions: &BTreeMap<String, FieldType>,
) -> Result<(ClassSchema, bool), crate::StoreError> {
    let mut changed = current.is_none();
    let mut schema = current.unwrap_or_else(|| ClassSchema::new(class_name));
    for (name, field_type) in additions {
        match schema.field_type(name) {
            Some(existing) if existing == field_type => {}
            Some(existing) => {
                return Err(crate::StoreError::SchemaMismatch {
                    class_name: class_name.to_owned(),
                    field: name.clone(),
                    expected: existing.clone(),
                    actual: field_type.clone(),
                });
            }
            None => {
                schema
                    .fields
                    .insert(name.clone(), field_type.clone().into());
                changed = true;
            }
        }
    }
    Ok((schema, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_types_use_parse_json() {
        let pointer = FieldType::Pointer {
            target_class: "_User".into(),
        };
        assert_eq!(
            serde_json::to_value(FieldSpec::from(pointer.clone())).unwrap(),
            json!({"type": "Pointer", "targetClass": "_User"})
        );
        assert_eq!(
            serde_json::from_value::<FieldType>(json!({"type": "ACL"})).unwrap(),
            FieldType::Acl
        );
        assert_eq!(pointer.to_string(), "Pointer<_User>");
    }

    #[test]
    fn join_classes_are_named_as_parse_names_them() {
        assert_eq!(join_class_name("users", "_Role"), "_Join:users:_Role");
    }

    #[test]
    fn merge_adds_new_fields_and_rejects_conflicts() {
        let mut add = BTreeMap::new();
        add.insert("score".to_owned(), FieldType::Number);
        let (schema, changed) = merge_fields("Game", None, &add).unwrap();
        assert!(changed);
        assert_eq!(schema.field_type("score"), Some(&FieldType::Number));
        assert_eq!(schema.field_type("objectId"), Some(&FieldType::String));

        let (_, changed) = merge_fields("Game", Some(schema.clone()), &add).unwrap();
        assert!(!changed);

        add.insert("score".to_owned(), FieldType::String);
        let err = merge_fields("Game", Some(schema), &add).unwrap_err();
        assert_eq!(
            err.to_string(),
            "schema mismatch for Game.score; expected Number but got String"
        );
    }
}
