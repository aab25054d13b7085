//! What only Parse's maintenance key may write: the internal fields of
//! `_User` (tokens, lockout and password bookkeeping, the password's hash),
//! and a new object's `createdAt` and `updatedAt`, so that migrations and
//! repairs can move users and their history as they are.

use oxbase_store::{FieldPath, UpdateOp};
use serde_json::{Map, Value};

use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::values::{normalize_date, normalize_value};

/// Parse Server's internal `_User` fields. Parse lets the maintenance key
/// set any field starting with `_`; oxbase keeps to the ones its stores
/// have a place for, in Parse's layout.
const INTERNAL_USER_FIELDS: &[&str] = &[
    "_hashed_password",
    "_email_verify_token",
    "_email_verify_token_expires_at",
    "_perishable_token",
    "_perishable_token_expires_at",
    "_failed_login_count",
    "_account_lockout_expires_at",
    "_password_changed_at",
    "_password_history",
];

/// A maintenance write, split: the body left for the usual checks, and
/// what only the maintenance key may set.
#[derive(Debug, Default)]
pub(crate) struct Maintained {
    pub(crate) body: Option<Map<String, Value>>,
    pub(crate) changes: Vec<(FieldPath, UpdateOp)>,
    pub(crate) created_at: Option<String>,
    pub(crate) updated_at: Option<String>,
}

/// Takes out of `body` what the maintenance key may set beyond the master
/// key; nothing for any other key, whose internal fields are refused as
/// invalid names by the usual checks.
pub(crate) fn split(
    auth: &Auth,
    class_name: &str,
    body: &Map<String, Value>,
    create: bool,
) -> ParseResult<Maintained> {
    let mut out = Maintained::default();
    if !auth.maintenance {
        return Ok(out);
    }
    let mut rest = body.clone();
    if class_name == "_User" {
        for field in INTERNAL_USER_FIELDS {
            let Some(value) = rest.remove(*field) else {
                continue;
            };
            let op = match &value {
                Value::Null => UpdateOp::Delete,
                Value::Object(map) if map.get("__op").and_then(Value::as_str) == Some("Delete") => {
                    UpdateOp::Delete
                }
                other => UpdateOp::Set(normalize_value(other)?.0),
            };
            if !(create && op == UpdateOp::Delete) {
                out.changes.push((FieldPath::new(*field), op));
            }
        }
    }
    // Parse keeps a new object's dates when they are Dates; an update's
    // `updatedAt` is always the server's.
    if create && let Some(created) = rest.get("createdAt").and_then(date) {
        let created = created?;
        let updated = match rest.get("updatedAt").and_then(date) {
            Some(updated) => Some(updated?),
            None => None,
        };
        if updated.as_ref().is_some_and(|updated| *updated < created) {
            return Err(ParseError::new(
                code::VALIDATION_ERROR,
                "updatedAt cannot occur before createdAt",
            ));
        }
        rest.remove("createdAt");
        rest.remove("updatedAt");
        out.updated_at = Some(updated.unwrap_or_else(|| created.clone()));
        out.created_at = Some(created);
    }
    out.body = Some(rest);
    Ok(out)
}

/// A `{"__type": "Date"}` value's instant, in the stored format (which
/// sorts as the dates do); `None` for any other value.
fn date(value: &Value) -> Option<ParseResult<String>> {
    let map = value.as_object()?;
    if map.get("__type").and_then(Value::as_str) != Some("Date") {
        return None;
    }
    Some(
        map.get("iso")
            .and_then(Value::as_str)
            .and_then(normalize_date)
            .ok_or_else(|| ParseError::new(code::INCORRECT_TYPE, "invalid Date")),
    )
}
