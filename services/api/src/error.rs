//! The API's one error type. It renders Parse's error body
//! `{"code": N, "error": "..."}` with Parse's HTTP status, and keeps
//! internal details out of it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use oxbase_store::StoreError;
use serde_json::json;

/// Parse's error codes, as the SDKs name them.
pub mod code {
    pub const INTERNAL_SERVER_ERROR: i32 = 1;
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
    pub const USERNAME_MISSING: i32 = 200;
    pub const PASSWORD_MISSING: i32 = 201;
    pub const USERNAME_TAKEN: i32 = 202;
    pub const EMAIL_TAKEN: i32 = 203;
    pub const SESSION_MISSING: i32 = 206;
    pub const INVALID_SESSION_TOKEN: i32 = 209;
    pub const INVALID_SCHEMA_OPERATION: i32 = 255;
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// A Parse error: status 404 for 101, 500 for 1, 400 otherwise.
    #[error("{code}: {message}")]
    Parse { code: i32, message: String },
    /// A bad application id or client key. Parse answers these with a bare
    /// `{"error": "unauthorized"}` and status 403.
    #[error("unauthorized")]
    Unauthorized,
    /// A master-key-only route without the master key: status 403 and
    /// Parse's bare body.
    #[error("unauthorized: master key is required")]
    MasterKeyRequired,
    /// A body over the configured limit.
    #[error("request entity too large")]
    TooLarge,
    /// No such route.
    #[error("cannot {method} {path}")]
    NoRoute { method: String, path: String },
}

impl ApiError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        ApiError::Parse {
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

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Parse { code, .. } => match *code {
                code::OBJECT_NOT_FOUND => StatusCode::NOT_FOUND,
                code::INTERNAL_SERVER_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            },
            ApiError::Unauthorized | ApiError::MasterKeyRequired => StatusCode::FORBIDDEN,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
        }
    }

    /// The JSON body a client sees.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::Parse { code, message } => json!({ "code": code, "error": message }),
            ApiError::Unauthorized => json!({ "error": "unauthorized" }),
            ApiError::MasterKeyRequired => {
                json!({ "error": "unauthorized: master key is required" })
            }
            ApiError::TooLarge => json!({
                "code": code::OBJECT_TOO_LARGE,
                "error": "request entity too large",
            }),
            ApiError::NoRoute { method, path } => json!({
                "code": code::INVALID_JSON,
                "error": format!("cannot route {method} {path}"),
            }),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found(),
            // The unique indexes behind Parse's own checks, for the writes
            // that race past them.
            StoreError::Duplicate {
                field: Some(ref field),
            } if field == "username" => ApiError::new(
                code::USERNAME_TAKEN,
                "Account already exists for this username.",
            ),
            StoreError::Duplicate {
                field: Some(ref field),
            } if field == "email" => ApiError::new(
                code::EMAIL_TAKEN,
                "Account already exists for this email address.",
            ),
            StoreError::Duplicate { .. } => ApiError::new(
                code::DUPLICATE_VALUE,
                "A duplicate value for a field with unique values was provided",
            ),
            StoreError::SchemaMismatch { .. } => {
                ApiError::new(code::INCORRECT_TYPE, err.to_string())
            }
            StoreError::ClassExists(name) => ApiError::new(
                code::INVALID_CLASS_NAME,
                format!("Class {name} already exists."),
            ),
            StoreError::ClassMissing(name) => ApiError::new(
                code::INVALID_CLASS_NAME,
                format!("Class {name} does not exist."),
            ),
            StoreError::ClassNotEmpty(name) => ApiError::new(
                code::INVALID_SCHEMA_OPERATION,
                format!("Class {name} is not empty, contains objects, cannot drop schema."),
            ),
            StoreError::InvalidSchema(message) => {
                ApiError::new(code::INVALID_SCHEMA_OPERATION, message)
            }
            StoreError::InvalidQuery(message) => ApiError::query(message),
            StoreError::InvalidUpdate(message) => ApiError::new(code::INCORRECT_TYPE, message),
            StoreError::StaleSchema => ApiError::internal("the schema changed during the request"),
            StoreError::Backend(message) => ApiError::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_parse() {
        assert_eq!(ApiError::not_found().status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::query("x").status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Unauthorized.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            ApiError::Unauthorized.body(),
            json!({"error": "unauthorized"})
        );
        assert_eq!(
            ApiError::internal("disk on fire").body(),
            json!({"code": 1, "error": "Internal server error."})
        );
    }
}
