//! Parse's account lockout. Failed log-ins are counted on the user in
//! Parse Server's own fields, `_failed_login_count` and
//! `_account_lockout_expires_at`, so a lock set by either server holds on
//! the other. The count goes up with an atomic increment, so concurrent
//! attempts each see their own count and none slips past the threshold.

use chrono::{DateTime, Utc};
use oxbase_store::{Condition, FieldPath, Filter, Object, QueryValue, UpdateOp};
use serde_json::{Value, json};

use crate::ObjectLayer;
use crate::config::AccountLockout;
use crate::error::{ParseError, ParseResult, code};
use crate::values::format_date;

const FAILED_COUNT: &str = "_failed_login_count";
const EXPIRES_AT: &str = "_account_lockout_expires_at";

/// A stored date: Parse's `{"__type": "Date"}` or a bare ISO string.
pub(crate) fn stored_date(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let iso = match value? {
        Value::String(iso) => iso.as_str(),
        other => other.get("iso")?.as_str()?,
    };
    DateTime::parse_from_rfc3339(iso)
        .ok()
        .map(|date| date.with_timezone(&Utc))
}

fn failed_count(user: &Object) -> f64 {
    user.get(FAILED_COUNT)
        .and_then(Value::as_f64)
        .unwrap_or_default()
}

pub(crate) fn updated_at(user: &Object) -> &str {
    user.get("updatedAt")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl AccountLockout {
    fn is_on(&self) -> bool {
        self.threshold > 0
    }

    fn is_locked(&self, user: &Object) -> bool {
        failed_count(user) >= f64::from(self.threshold)
            && stored_date(user.get(EXPIRES_AT)).is_some_and(|until| until > Utc::now())
    }

    fn locked(&self) -> ParseError {
        ParseError::new(
            code::OBJECT_NOT_FOUND,
            format!(
                "Your account is locked due to multiple failed login attempts. Please try again after {} minute(s)",
                self.duration
            ),
        )
    }

    fn lock_ends(&self) -> Value {
        // Whole milliseconds, as Parse Server computes it.
        let millis = (self.duration * 60_000.0).round() as i64;
        let until = Utc::now() + chrono::Duration::milliseconds(millis);
        json!({"__type": "Date", "iso": format_date(until)})
    }
}

impl ObjectLayer {
    /// Counts a log-in whose password was checked. A locked account is
    /// refused even with the right password; a success clears the count;
    /// a failure counts, locks the account at the threshold, and past it
    /// answers that the account is locked, as Parse Server does.
    pub(crate) async fn count_log_in(&self, user_id: &str, succeeded: bool) -> ParseResult<()> {
        let lockout = &self.settings().account_lockout;
        if !lockout.is_on() {
            return Ok(());
        }
        // Read again: attempts made while the password was being checked
        // may have locked the account.
        let Some(user) = self.user_by_id(user_id).await? else {
            return Ok(());
        };
        if lockout.is_locked(&user) {
            return Err(lockout.locked());
        }
        if succeeded {
            self.clear_failed_log_ins(user_id, &user).await
        } else {
            self.count_failed_log_in(user_id, &user).await
        }
    }

    async fn clear_failed_log_ins(&self, user_id: &str, user: &Object) -> ParseResult<()> {
        if failed_count(user) == 0.0 {
            return Ok(());
        }
        let reset = (FieldPath::new(FAILED_COUNT), UpdateOp::Set(json!(0)));
        self.write_user_internals(user_id, updated_at(user), vec![reset], Filter::All)
            .await?;
        Ok(())
    }

    async fn count_failed_log_in(&self, user_id: &str, user: &Object) -> ParseResult<()> {
        let lockout = &self.settings().account_lockout;
        let increment = (FieldPath::new(FAILED_COUNT), UpdateOp::Increment(1.into()));
        let Some(after) = self
            .write_user_internals(user_id, updated_at(user), vec![increment], Filter::All)
            .await?
        else {
            return Ok(());
        };
        let count = failed_count(&after);
        let threshold = f64::from(lockout.threshold);
        if count < threshold {
            return Ok(());
        }
        // Only while the count is still at the threshold: a successful
        // log-in may have cleared it since.
        let still_failing = Filter::field(
            FAILED_COUNT,
            Condition::Gte(QueryValue::Number(lockout.threshold.into())),
        );
        let lock = (
            FieldPath::new(EXPIRES_AT),
            UpdateOp::Set(lockout.lock_ends()),
        );
        self.write_user_internals(user_id, updated_at(&after), vec![lock], still_failing)
            .await?;
        if count > threshold {
            return Err(lockout.locked());
        }
        Ok(())
    }

    /// Unlocks a user's account after a password reset, when
    /// `unlock_on_password_reset` says so.
    pub(crate) async fn unlock_after_reset(&self, user_id: &str) -> ParseResult<()> {
        let lockout = &self.settings().account_lockout;
        if !lockout.is_on() || !lockout.unlock_on_password_reset {
            return Ok(());
        }
        let Some(user) = self.user_by_id(user_id).await? else {
            return Ok(());
        };
        let unlock = vec![
            (FieldPath::new(FAILED_COUNT), UpdateOp::Delete),
            (FieldPath::new(EXPIRES_AT), UpdateOp::Delete),
        ];
        self.write_user_internals(user_id, updated_at(&user), unlock, Filter::All)
            .await?;
        Ok(())
    }
}
