//! Parse's password policy: what a new password must be (match a pattern,
//! not contain the username, repeat none of the latest ones) and when it
//! expires. Parse Server's own fields hold its state on `_User`:
//! `_password_changed_at`, and `_password_history`, the bcrypt hashes of
//! the passwords before the current one, so either server enforces what
//! the other recorded.

use chrono::Utc;
use oxbase_store::{FieldPath, Filter, Object, UpdateOp};
use serde_json::{Map, Value, json};

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::config::PasswordPolicy;
use crate::error::{ParseError, ParseResult, code};
use crate::lockout::{stored_date, updated_at};
use crate::values::format_date;

const CHANGED_AT: &str = "_password_changed_at";
const HISTORY: &str = "_password_history";
const DAY_MILLIS: f64 = 86_400_000.0;

fn policy_error(message: &str) -> ParseError {
    ParseError::new(code::VALIDATION_ERROR, message)
}

fn now_date() -> Value {
    json!({"__type": "Date", "iso": format_date(Utc::now())})
}

/// The hashes Parse keeps of a user's passwords: the history, then the
/// current one.
fn stored_hashes(user: &Object) -> (Vec<String>, Option<String>) {
    let history = user
        .get(HISTORY)
        .and_then(Value::as_array)
        .map(|hashes| {
            hashes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let current = user
        .get("_hashed_password")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (history, current)
}

impl PasswordPolicy {
    fn needs_stored_user(&self, username_set: bool) -> bool {
        self.max_password_history > 0 || (self.do_not_allow_username && !username_set)
    }

    /// The pattern, then the username (the one the write sets, else the
    /// stored one).
    fn check_text(&self, password: &str, username: Option<&str>) -> ParseResult<()> {
        if let Some(pattern) = &self.validator_pattern
            && !pattern.matches(password)
        {
            return Err(policy_error(self.validation_error.as_deref().unwrap_or(
                "Password does not meet the Password Policy requirements.",
            )));
        }
        if self.do_not_allow_username
            && username.is_some_and(|name| !name.is_empty() && password.contains(name))
        {
            return Err(policy_error("Password cannot contain your username."));
        }
        Ok(())
    }

    /// The hashes a new password may not match: the first
    /// `max_password_history - 1` of the history, and the current one.
    fn recent_hashes(&self, user: &Object) -> Vec<String> {
        let (mut history, current) = stored_hashes(user);
        history.truncate(self.max_password_history.saturating_sub(1) as usize);
        history.extend(current);
        history
    }

    /// The history once the current password is replaced: the newest
    /// `max(max_password_history - 2, 0)` entries and the current hash, as
    /// Parse Server keeps it.
    fn next_history(&self, user: &Object) -> Value {
        let (mut history, current) = stored_hashes(user);
        history.truncate(self.max_password_history as usize);
        let keep = self.max_password_history.saturating_sub(2) as usize;
        let drop = history.len().saturating_sub(keep);
        history.drain(..drop);
        history.extend(current);
        Value::from(history)
    }

    /// What Parse Server writes beside a new password's hash.
    fn changes(&self, stored: Option<&Object>) -> Vec<(FieldPath, UpdateOp)> {
        let mut changes = Vec::new();
        if self.max_password_age > 0.0 {
            changes.push((FieldPath::new(CHANGED_AT), UpdateOp::Set(now_date())));
        }
        if let Some(user) = stored
            && self.max_password_history > 0
        {
            changes.push((
                FieldPath::new(HISTORY),
                UpdateOp::Set(self.next_history(user)),
            ));
        }
        changes
    }
}

async fn matches_any(password: String, hashes: Vec<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        hashes
            .iter()
            .any(|hash| bcrypt::verify(&password, hash).unwrap_or(false))
    })
    .await
    .unwrap_or(false)
}

impl ObjectLayer {
    /// Checks a new password against the policy and answers the changes to
    /// write with its hash. `user_id` is the user whose password changes,
    /// `None` on sign-up; `username` is the one the same write sets.
    pub(crate) async fn apply_password_policy(
        &self,
        user_id: Option<&str>,
        username: Option<&str>,
        password: &str,
    ) -> ParseResult<Vec<(FieldPath, UpdateOp)>> {
        let policy = &self.settings().password_policy;
        let stored = match user_id {
            Some(id) if policy.needs_stored_user(username.is_some()) => self.user_by_id(id).await?,
            _ => None,
        };
        let stored_name = stored
            .as_ref()
            .and_then(|user| user.get("username"))
            .and_then(Value::as_str);
        policy.check_text(password, username.or(stored_name))?;
        if let Some(user) = &stored
            && policy.max_password_history > 0
            && matches_any(password.to_owned(), policy.recent_hashes(user)).await
        {
            return Err(policy_error(&format!(
                "New password should not be the same as last {} passwords.",
                policy.max_password_history
            )));
        }
        Ok(policy.changes(stored.as_ref()))
    }

    /// Refuses a log-in once the password is older than
    /// `max_password_age`. A user whose password predates the policy starts
    /// the clock now, as in Parse Server.
    pub(crate) async fn check_password_age(&self, user_id: &str, user: &Object) -> ParseResult<()> {
        let max_age = self.settings().password_policy.max_password_age;
        if max_age <= 0.0 {
            return Ok(());
        }
        let Some(changed_at) = stored_date(user.get(CHANGED_AT)) else {
            let start = (FieldPath::new(CHANGED_AT), UpdateOp::Set(now_date()));
            self.write_user_internals(user_id, updated_at(user), vec![start], Filter::All)
                .await?;
            return Ok(());
        };
        let age = chrono::Duration::milliseconds((max_age * DAY_MILLIS).round() as i64);
        if changed_at + age < Utc::now() {
            return Err(ParseError::new(
                code::OBJECT_NOT_FOUND,
                "Your password has expired. Please reset your password.",
            ));
        }
        Ok(())
    }

    /// Sets a user's password by a reset (Parse's `updatePassword`): the
    /// policy applies as to any change, the user's sessions end, and the
    /// account is unlocked when `unlock_on_password_reset` says so. Only
    /// while the user still matches `precondition` (101 otherwise), so
    /// that a reset link is spent once.
    pub(crate) async fn reset_password(
        &self,
        user_id: &str,
        password: &str,
        precondition: Filter,
    ) -> ParseResult<()> {
        let body = Map::from_iter([("password".to_owned(), Value::from(password))]);
        let mut write = self
            .prepare_update(&Auth::master(), "_User", user_id, &body)
            .await?;
        write.require(precondition);
        let effect = crate::users::WriteEffect::of(&write);
        self.commit_one(write).await?;
        self.after_writes(&[effect]).await;
        self.unlock_after_reset(user_id).await
    }
}
