use crate::schema::FieldType;

/// What can go wrong in a store call. Variants a client caused carry enough
/// for the API to give Parse's error; `Backend` is for everything else and
/// its text must never reach a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("object not found")]
    NotFound,
    /// A unique field (or the objectId) already has this value. `field`
    /// names the unique field when the backend can tell.
    #[error("a duplicate value for a field with unique values was provided")]
    Duplicate { field: Option<String> },
    #[error("schema mismatch for {class_name}.{field}; expected {expected} but got {actual}")]
    SchemaMismatch {
        class_name: String,
        field: String,
        expected: FieldType,
        actual: FieldType,
    },
    #[error("class {0} already exists")]
    ClassExists(String),
    #[error("class {0} does not exist")]
    ClassMissing(String),
    #[error("class {0} is not empty")]
    ClassNotEmpty(String),
    /// A schema change that contradicts the stored schema, such as adding a
    /// field that exists or deleting one that does not.
    #[error("{0}")]
    InvalidSchema(String),
    /// A query the backend cannot run, such as a regex it cannot compile.
    #[error("{0}")]
    InvalidQuery(String),
    /// An update operator that does not fit the stored value.
    #[error("{0}")]
    InvalidUpdate(String),
    /// The storage no longer matches the schema the caller passed (another
    /// process changed it): reload the schema and retry.
    #[error("the schema changed; reload it and retry")]
    StaleSchema,
    /// The storage itself failed: I/O, a lost connection, a bug.
    #[error("storage failure: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn backend(err: impl std::fmt::Display) -> Self {
        StoreError::Backend(err.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
