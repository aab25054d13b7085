use std::error::Error;
use std::fmt;
use std::sync::Arc;

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
    /// The query ran past the configured limit and was stopped.
    #[error("the query took longer than limits.query_timeout_ms allows")]
    QueryTimeout,
    /// The write's event would be larger than the events stream takes
    /// (`max` bytes), so it would never be published.
    #[error("the object is too large: its event would take {size} bytes, over the limit of {max}")]
    EventTooLarge { size: usize, max: usize },
    /// The storage itself failed: I/O, a lost connection, a bug.
    #[error("storage failure: {0}")]
    Backend(#[source] BackendError),
}

impl StoreError {
    /// A storage failure caused by `err`, which stays reachable through
    /// [`Error::source`].
    pub fn backend(err: impl Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(BackendError::new(err))
    }

    /// A storage failure caused by `err` while doing what `context` says;
    /// its text is `<context>: <err>`.
    pub fn backend_context(
        context: impl fmt::Display,
        err: impl Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend(BackendError::context(context, err))
    }

    /// A storage failure with no underlying error (an invariant broken, a
    /// task gone).
    pub fn backend_message(message: impl Into<String>) -> Self {
        StoreError::Backend(BackendError::message(message))
    }

    /// Whether the storage is out of reach or out of room for now (the
    /// database down or restarting, the disk full) rather than failing on
    /// this request: worth answering "try again" rather than "internal
    /// error".
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Backend(backend) = self else {
            return false;
        };
        if let Some(err) = backend.downcast_ref::<rusqlite::Error>() {
            use rusqlite::ErrorCode::*;
            return matches!(
                err.sqlite_error_code(),
                Some(DiskFull | SystemIoFailure | CannotOpen | DatabaseBusy | DatabaseLocked)
            );
        }
        if let Some(err) = backend.downcast_ref::<tokio_postgres::Error>() {
            return match err.as_db_error() {
                // Connection exceptions, the server shutting down or
                // starting, and insufficient resources (disk full, too
                // many connections).
                Some(db) => {
                    let code = db.code().code();
                    code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
                }
                None => err.is_closed() || std::error::Error::source(err).is_some(),
            };
        }
        if backend
            .downcast_ref::<deadpool_postgres::PoolError>()
            .is_some()
        {
            return true;
        }
        if let Some(err) = backend.downcast_ref::<mongodb::error::Error>() {
            use mongodb::error::ErrorKind;
            return matches!(
                *err.kind,
                ErrorKind::Io(_)
                    | ErrorKind::ServerSelection { .. }
                    | ErrorKind::ConnectionPoolCleared { .. }
            );
        }
        false
    }
}

/// Why the storage failed: a message, and the underlying error (a driver's,
/// I/O) when there is one, shared so that [`StoreError`] stays `Clone`.
///
/// The message already includes the underlying error's text (it is what
/// logs show), and [`Error::source`] returns that error too, for callers
/// that inspect or downcast it.
#[derive(Debug, Clone)]
pub struct BackendError {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl BackendError {
    /// The failure `err`, with its text as the message.
    pub fn new(err: impl Error + Send + Sync + 'static) -> Self {
        Self::with_message(err.to_string(), err)
    }

    /// The failure `err` while doing what `context` says:
    /// `<context>: <err>`.
    pub fn context(context: impl fmt::Display, err: impl Error + Send + Sync + 'static) -> Self {
        Self::with_message(format!("{context}: {err}"), err)
    }

    /// The failure `err`, described by `message` alone (logs show only the
    /// message, so it should say what matters of `err`).
    pub fn with_message(
        message: impl Into<String>,
        err: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Arc::new(err)),
        }
    }

    /// A failure with no underlying error.
    pub fn message(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// The underlying error, if any, as the driver reported it.
    pub fn inner(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The underlying error when it is a `T` (such as
    /// `tokio_postgres::Error`, `rusqlite::Error`, `mongodb::error::Error`).
    pub fn downcast_ref<T: Error + 'static>(&self) -> Option<&T> {
        self.inner()?.downcast_ref::<T>()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|err| err as &(dyn Error + 'static))
    }
}

/// A message-only failure, so that `StoreError::Backend("...".into())`
/// reads as it did when the variant held a `String`.
impl From<String> for BackendError {
    fn from(message: String) -> Self {
        Self::message(message)
    }
}

impl From<&str> for BackendError {
    fn from(message: &str) -> Self {
        Self::message(message)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk on fire")]
    struct Cause;

    #[test]
    fn backend_errors_keep_their_text_and_their_source() {
        let err = StoreError::backend(Cause);
        assert_eq!(err.to_string(), "storage failure: disk on fire");
        let StoreError::Backend(backend) = &err else {
            panic!("{err:?}")
        };
        assert!(backend.downcast_ref::<Cause>().is_some());
        let source = err.source().and_then(Error::source).expect("a cause");
        assert!(source.downcast_ref::<Cause>().is_some());

        let err = StoreError::backend_context("outbox row", Cause).clone();
        assert_eq!(err.to_string(), "storage failure: outbox row: disk on fire");
        assert!(err.source().and_then(Error::source).is_some());

        let err = StoreError::backend_message("write task panicked");
        assert_eq!(err.to_string(), "storage failure: write task panicked");
        assert!(err.source().and_then(Error::source).is_none());
        let StoreError::Backend(backend) = StoreError::Backend("no result".into()) else {
            unreachable!()
        };
        assert_eq!(backend.to_string(), "no result");
    }

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        StoreError::backend(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn a_full_or_unreachable_store_is_unavailable_not_broken() {
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_unavailable());
        assert!(sqlite(rusqlite::ffi::SQLITE_IOERR).is_unavailable());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CORRUPT).is_unavailable());
        assert!(!StoreError::backend_message("a bug").is_unavailable());
        assert!(!StoreError::NotFound.is_unavailable());
    }
}
