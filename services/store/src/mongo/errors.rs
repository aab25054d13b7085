//! MongoDB errors as store errors. Server error codes say whose fault an
//! error is: a query or update the client sent (invalid regex, `$inc` of a
//! string), a unique index (11000), or the storage itself.

use mongodb::error::{Error, ErrorKind, TRANSIENT_TRANSACTION_ERROR, WriteFailure};

use crate::error::StoreError;

/// Duplicate key.
pub(super) const DUPLICATE_KEY: &[i32] = &[11000, 11001, 12582];
/// The collection does not exist (dropping it, or an index on it).
pub(super) const NAMESPACE_NOT_FOUND: i32 = 26;
pub(super) const INDEX_NOT_FOUND: i32 = 27;
/// An index with this name or these keys already exists differently, or a
/// second text index was asked for.
pub(super) const INDEX_CONFLICTS: &[i32] = &[67, 85, 86];

/// Codes of queries Mongo cannot run as sent: bad values, invalid
/// regexes, a `$text` without a text index, geo queries without an index
/// or with bad coordinates.
const BAD_QUERY: &[i32] = &[
    2, 9, 27, 291, 15998, 16755, 17007, 17287, 40352, 51091, 51108,
];

/// Codes of updates that do not fit the stored document: `$inc` of a
/// string, `$push` to a non-array, a path through a scalar, conflicting
/// paths, invalid field names, invalid GeoJSON, a document too large.
const BAD_UPDATE: &[i32] = &[
    2, 9, 14, 28, 40, 52, 55, 56, 57, 66, 10334, 16755, 16756, 17419,
];

/// Codes of index definitions Mongo refuses.
const BAD_INDEX: &[i32] = &[2, 9, 67, 85, 86, 197];

/// The server's error code and message, when the server sent one.
pub(super) fn code_of(error: &Error) -> Option<(i32, &str)> {
    match error.kind.as_ref() {
        ErrorKind::Command(e) => Some((e.code, e.message.as_str())),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some((e.code, e.message.as_str())),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some((e.code, e.message.as_str())),
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|e| (e.code, e.message.as_str())),
        _ => None,
    }
}

pub(super) fn has_code(error: &Error, codes: &[i32]) -> bool {
    code_of(error).is_some_and(|(code, _)| codes.contains(&code))
}

/// The unique field a duplicate-key message names, from its index name:
/// `... index: username_1 dup key: ...` gives `username`, as Parse reads
/// it; `_auth_data_<provider>_id` gives `_auth_data_<provider>`. The
/// objectId (`_id_`) names no field.
pub(super) fn duplicate_field(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("index:")?;
    let index = rest.split_whitespace().next()?;
    // Old servers name the index with its namespace: `db.coll.$name`.
    let index = index.rsplit_once('$').map_or(index, |(_, name)| name);
    let field = index
        .strip_suffix("_1")
        .or_else(|| index.strip_suffix("_-1"))
        .or_else(|| {
            index
                .strip_suffix("_id")
                .filter(|f| f.starts_with("_auth_data_"))
        })?;
    // A compound index is named after every key; the first one is the
    // field the client most likely set.
    let field = field.split("_1_").next().unwrap_or(field);
    (!field.is_empty() && field != "_id").then(|| field.to_owned())
}

fn duplicate(error: &Error) -> Option<StoreError> {
    let (code, message) = code_of(error)?;
    DUPLICATE_KEY
        .contains(&code)
        .then(|| StoreError::Duplicate {
            field: duplicate_field(message),
        })
}

/// MongoDB's `MaxTimeMSExpired`: `maxTimeMS` ran out.
const MAX_TIME_EXPIRED: i32 = 50;

fn classified(error: Error, codes: &[i32], wrap: fn(String) -> StoreError) -> StoreError {
    if let Some(duplicate) = duplicate(&error) {
        return duplicate;
    }
    match code_of(&error) {
        Some((MAX_TIME_EXPIRED, _)) => StoreError::QueryTimeout,
        Some((code, message)) if codes.contains(&code) => wrap(message.to_owned()),
        _ => StoreError::backend(error),
    }
}

/// An error from a find or count.
pub(super) fn query_error(error: Error) -> StoreError {
    classified(error, BAD_QUERY, StoreError::InvalidQuery)
}

/// An error from an insert, update or delete.
pub(super) fn write_error(error: Error) -> StoreError {
    classified(error, BAD_UPDATE, StoreError::InvalidUpdate)
}

/// An error creating an index or changing `_SCHEMA`.
pub(super) fn schema_error(error: Error) -> StoreError {
    classified(error, BAD_INDEX, StoreError::InvalidSchema)
}

/// A failed write op, and whether retrying its whole transaction may
/// succeed (a write conflict with another transaction, a failover).
#[derive(Debug)]
pub(super) struct OpError {
    pub error: StoreError,
    pub transient: bool,
}

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            transient: false,
        }
    }
}

impl OpError {
    /// A driver error from a write, keeping whether it is transient.
    pub(super) fn write(error: Error) -> Self {
        let transient = error.contains_label(TRANSIENT_TRANSACTION_ERROR);
        Self {
            error: write_error(error),
            transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_fields_come_from_index_names() {
        let message = |index: &str| {
            format!(
                "E11000 duplicate key error collection: app._User index: {index} dup key: {{ x: \"ann\" }}"
            )
        };
        assert_eq!(
            duplicate_field(&message("username_1")).as_deref(),
            Some("username")
        );
        assert_eq!(
            duplicate_field(&message("email_1")).as_deref(),
            Some("email")
        );
        assert_eq!(
            duplicate_field(&message("reqId_1")).as_deref(),
            Some("reqId")
        );
        assert_eq!(
            duplicate_field(&message("_auth_data_facebook_id")).as_deref(),
            Some("_auth_data_facebook")
        );
        assert_eq!(
            duplicate_field(&message("name_1_owner_1")).as_deref(),
            Some("name")
        );
        assert_eq!(duplicate_field(&message("_id_")), None);
        assert_eq!(duplicate_field(&message("custom")), None);
        assert_eq!(
            duplicate_field(
                "E11000 duplicate key error index: app._User.$username_1  dup key: { : \"a\" }"
            )
            .as_deref(),
            Some("username")
        );
        assert_eq!(duplicate_field("no index here"), None);
    }
}
