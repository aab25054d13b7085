//! Parse's one error type, for the object layer and the API above it. It
//! knows Parse's error body `{"code": N, "error": "..."}` and HTTP status,
//! and keeps internal details out of them.

use oxbase_store::StoreError;
use oxbase_store::aggregate::AggregateError;
use serde_json::json;

/// Parse's error codes, as the SDKs name them.
pub mod code {
    pub const OTHER_CAUSE: i32 = -1;
    pub const INTERNAL_SERVER_ERROR: i32 = 1;
    pub const CONNECTION_FAILED: i32 = 100;
    pub const OBJECT_NOT_FOUND: i32 = 101;
    pub const INVALID_QUERY: i32 = 102;
    pub const INVALID_CLASS_NAME: i32 = 103;
    pub const MISSING_OBJECT_ID: i32 = 104;
    pub const INVALID_KEY_NAME: i32 = 105;
    pub const INVALID_JSON: i32 = 107;
    pub const COMMAND_UNAVAILABLE: i32 = 108;
    pub const INCORRECT_TYPE: i32 = 111;
    pub const PUSH_MISCONFIGURED: i32 = 115;
    pub const OBJECT_TOO_LARGE: i32 = 116;
    pub const OPERATION_FORBIDDEN: i32 = 119;
    pub const INVALID_NESTED_KEY: i32 = 121;
    pub const INVALID_FILE_NAME: i32 = 122;
    pub const INVALID_ACL: i32 = 123;
    pub const TIMEOUT: i32 = 124;
    pub const INVALID_EMAIL_ADDRESS: i32 = 125;
    pub const FILE_SAVE_ERROR: i32 = 130;
    pub const INVALID_INSTALLATION_ID: i32 = 132;
    pub const MISSING_REQUIRED_FIELD: i32 = 135;
    pub const CHANGED_IMMUTABLE_FIELD: i32 = 136;
    pub const DUPLICATE_VALUE: i32 = 137;
    pub const INVALID_ROLE_NAME: i32 = 139;
    pub const SCRIPT_FAILED: i32 = 141;
    pub const VALIDATION_ERROR: i32 = 142;
    pub const WEBHOOK_ERROR: i32 = 143;
    pub const FILE_DELETE_ERROR: i32 = 153;
    pub const DUPLICATE_REQUEST: i32 = 159;
    pub const INVALID_VALUE: i32 = 162;
    pub const USERNAME_MISSING: i32 = 200;
    pub const PASSWORD_MISSING: i32 = 201;
    pub const USERNAME_TAKEN: i32 = 202;
    pub const EMAIL_TAKEN: i32 = 203;
    pub const EMAIL_MISSING: i32 = 204;
    pub const EMAIL_NOT_FOUND: i32 = 205;
    pub const SESSION_MISSING: i32 = 206;
    pub const ACCOUNT_ALREADY_LINKED: i32 = 208;
    pub const INVALID_SESSION_TOKEN: i32 = 209;
    pub const UNSUPPORTED_SERVICE: i32 = 252;
    pub const INVALID_SCHEMA_OPERATION: i32 = 255;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// A Parse error: status 404 for 101, 500 for 1, 400 otherwise.
    #[error("{code}: {message}")]
    Parse { code: i32, message: String },
    /// A bad application id or client key. Parse answers these with a bare
    /// `{"error": "unauthorized"}` and status 403.
    #[error("unauthorized")]
    Unauthorized,
    /// A master-key-only route without the master key: status 403 and
    /// Parse Server 9's bare body, whose message it sanitizes by default
    /// (`enableSanitizedErrorResponse`).
    #[error("unauthorized: master key is required")]
    MasterKeyRequired,
    /// A body over the configured limit.
    #[error("request entity too large")]
    TooLarge,
    /// No such route.
    #[error("cannot {method} {path}")]
    NoRoute { method: String, path: String },
    /// Something the request needs is not there yet (the hook registry
    /// before its first load): status 503, which the Parse SDKs retry.
    #[error("{0}")]
    Unavailable(String),
}

impl ParseError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        ParseError::Parse {
            code,
            message: message.into(),
        }
    }

    pub fn query(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_QUERY, message)
    }

    pub fn json(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_JSON, message)
    }

    pub fn not_found() -> Self {
        Self::new(code::OBJECT_NOT_FOUND, "Object not found.")
    }

    pub fn not_supported(what: impl std::fmt::Display) -> Self {
        Self::new(
            code::COMMAND_UNAVAILABLE,
            format!("{what} is not supported yet"),
        )
    }

    /// An internal failure: logged here, and reported to the client only
    /// as Parse's generic internal error.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(code::INTERNAL_SERVER_ERROR, "Internal server error.")
    }

    /// The HTTP status Parse answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Parse { code, .. } => match *code {
                code::OBJECT_NOT_FOUND => 404,
                code::INTERNAL_SERVER_ERROR => 500,
                _ => 400,
            },
            ParseError::Unauthorized | ParseError::MasterKeyRequired => 403,
            ParseError::TooLarge => 413,
            ParseError::NoRoute { .. } => 404,
            ParseError::Unavailable(_) => 503,
        }
    }

    /// The JSON body a client sees.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ParseError::Parse { code, message } => json!({ "code": code, "error": message }),
            ParseError::Unauthorized => json!({ "error": "unauthorized" }),
            ParseError::MasterKeyRequired => json!({ "error": "Permission denied" }),
            ParseError::TooLarge => json!({
                "code": code::OBJECT_TOO_LARGE,
                "error": "request entity too large",
            }),
            ParseError::NoRoute { method, path } => json!({
                "code": code::INVALID_JSON,
                "error": format!("cannot route {method} {path}"),
            }),
            ParseError::Unavailable(message) => json!({
                "code": code::INTERNAL_SERVER_ERROR,
                "error": message,
            }),
        }
    }
}

impl From<AggregateError> for ParseError {
    fn from(err: AggregateError) -> Self {
        let code = match err {
            AggregateError::InvalidQuery(_) => code::INVALID_QUERY,
            AggregateError::InvalidFieldName(_) => code::INVALID_KEY_NAME,
            AggregateError::InvalidWhereJson => code::INVALID_JSON,
        };
        ParseError::new(code, err.to_string())
    }
}

impl From<StoreError> for ParseError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ParseError::not_found(),
            // The unique indexes behind Parse's own checks, for the writes
            // that race past them.
            StoreError::Duplicate {
                field: Some(ref field),
            } if field == "username" => ParseError::new(
                code::USERNAME_TAKEN,
                "Account already exists for this username.",
            ),
            StoreError::Duplicate {
                field: Some(ref field),
            } if field == "email" => ParseError::new(
                code::EMAIL_TAKEN,
                "Account already exists for this email address.",
            ),
            // Parse's `_throwIfAuthDataDuplicate`: a provider id another
            // user linked in the meantime.
            StoreError::Duplicate {
                field: Some(ref field),
            } if field.starts_with("_auth_data_") => {
                ParseError::new(code::ACCOUNT_ALREADY_LINKED, "this auth is already used")
            }
            StoreError::Duplicate { .. } => ParseError::new(
                code::DUPLICATE_VALUE,
                "A duplicate value for a field with unique values was provided",
            ),
            StoreError::SchemaMismatch { .. } => {
                ParseError::new(code::INCORRECT_TYPE, err.to_string())
            }
            StoreError::ClassExists(name) => ParseError::new(
                code::INVALID_CLASS_NAME,
                format!("Class {name} already exists."),
            ),
            StoreError::ClassMissing(name) => ParseError::new(
                code::INVALID_CLASS_NAME,
                format!("Class {name} does not exist."),
            ),
            StoreError::ClassNotEmpty(name) => ParseError::new(
                code::INVALID_SCHEMA_OPERATION,
                format!("Class {name} is not empty, contains objects, cannot drop schema."),
            ),
            StoreError::InvalidSchema(message) => {
                ParseError::new(code::INVALID_SCHEMA_OPERATION, message)
            }
            StoreError::InvalidQuery(message) => ParseError::query(message),
            StoreError::InvalidUpdate(message) => ParseError::new(code::INCORRECT_TYPE, message),
            StoreError::StaleSchema => {
                ParseError::internal("the schema changed during the request")
            }
            StoreError::QueryTimeout => ParseError::new(
                code::TIMEOUT,
                "The query took too long and was stopped; narrow it or add an index",
            ),
            err @ StoreError::EventTooLarge { .. } => {
                ParseError::new(code::OBJECT_TOO_LARGE, err.to_string())
            }
            err if err.is_unavailable() => {
                tracing::warn!(error = %err, "the database is unavailable");
                ParseError::Unavailable("The database is unavailable; try again shortly".into())
            }
            StoreError::Backend(message) => ParseError::internal(message),
        }
    }
}

pub type ParseResult<T> = Result<T, ParseError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_parse() {
        assert_eq!(ParseError::not_found().status(), 404);
        assert_eq!(ParseError::query("x").status(), 400);
        assert_eq!(ParseError::Unauthorized.status(), 403);
        assert_eq!(
            ParseError::Unauthorized.body(),
            json!({"error": "unauthorized"})
        );
        assert_eq!(
            ParseError::internal("disk on fire").body(),
            json!({"code": 1, "error": "Internal server error."})
        );
    }
}
