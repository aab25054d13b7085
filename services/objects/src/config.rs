//! The object layer's settings: `[limits]`, the bounds that keep one
//! request from hurting the others, and the account rules Parse Server
//! names `accountLockout` and `passwordPolicy`.

use oxbase_kit::Section;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Limits that keep one request from hurting the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most operations in one `/batch` request.
    pub max_batch_size: usize,
    /// Deepest nesting of `$or`/`$and`/`$nor` and subqueries in one query.
    pub max_query_depth: usize,
    /// Longest accepted `$regex` pattern, in bytes.
    pub max_regex_length: usize,
    /// Deepest `include` path (`a.b.c` is 3).
    pub max_include_depth: usize,
    /// Largest `limit` a query may ask for; larger values are lowered to it,
    /// as Parse Server's `maxLimit` does. 0 (the default, as in Parse
    /// Server) means no cap.
    pub max_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 * 1024 * 1024,
            max_batch_size: 50,
            max_query_depth: 10,
            max_regex_length: 1024,
            max_include_depth: 10,
            max_limit: 0,
        }
    }
}

impl Section for Limits {
    const KEY: &'static str = "limits";

    fn validate(&self) -> Result<(), String> {
        if self.max_batch_size == 0 || self.max_body_bytes == 0 {
            return Err("max_batch_size and max_body_bytes must be positive".into());
        }
        Ok(())
    }
}

/// Parse's `accountLockout`: after `threshold` failed log-ins in a row the
/// account refuses log-ins for `duration` minutes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountLockout {
    /// Failed log-ins that lock the account; 0 (the default) turns lockout
    /// off, as leaving out Parse's `accountLockout` does.
    pub threshold: u32,
    /// Minutes a locked account stays locked. Fractions work, as in Parse.
    pub duration: f64,
    /// A password reset unlocks the account.
    #[serde(alias = "unlockOnPasswordReset")]
    pub unlock_on_password_reset: bool,
}

impl Section for AccountLockout {
    const KEY: &'static str = "account_lockout";
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("PARSE_SERVER_ACCOUNT_LOCKOUT", ""),
        ("PARSE_SERVER_ACCOUNT_LOCKOUT_DURATION", "duration"),
        ("PARSE_SERVER_ACCOUNT_LOCKOUT_THRESHOLD", "threshold"),
        (
            "PARSE_SERVER_ACCOUNT_LOCKOUT_UNLOCK_ON_PASSWORD_RESET",
            "unlock_on_password_reset",
        ),
    ];

    fn validate(&self) -> Result<(), String> {
        if self.threshold == 0 {
            return Ok(());
        }
        if !(self.duration > 0.0 && self.duration <= 99_999.0) {
            return Err(
                "Account lockout duration should be greater than 0 and less than 100000".into(),
            );
        }
        if self.threshold > 999 {
            return Err(
                "Account lockout threshold should be an integer greater than 0 and less than 1000"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Parse's `passwordPolicy`, applied when a password is set: on sign-up,
/// on a change and on a reset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    /// A pattern every new password must match.
    #[serde(alias = "validatorPattern")]
    pub validator_pattern: Option<PasswordPattern>,
    /// The message of a refusal by the pattern; Parse's own by default.
    #[serde(alias = "validationError")]
    pub validation_error: Option<String>,
    /// Refuses a password that contains the username.
    #[serde(alias = "doNotAllowUsername")]
    pub do_not_allow_username: bool,
    /// Days after which a password expires and log-ins are refused; 0
    /// (the default) never.
    #[serde(alias = "maxPasswordAge")]
    pub max_password_age: f64,
    /// How many of the latest passwords a new one may not repeat (0 to 20).
    #[serde(alias = "maxPasswordHistory")]
    pub max_password_history: u32,
}

impl Section for PasswordPolicy {
    const KEY: &'static str = "password_policy";
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("PARSE_SERVER_PASSWORD_POLICY", ""),
        (
            "PARSE_SERVER_PASSWORD_POLICY_VALIDATOR_PATTERN",
            "validator_pattern",
        ),
        (
            "PARSE_SERVER_PASSWORD_POLICY_VALIDATION_ERROR",
            "validation_error",
        ),
        (
            "PARSE_SERVER_PASSWORD_POLICY_DO_NOT_ALLOW_USERNAME",
            "do_not_allow_username",
        ),
        (
            "PARSE_SERVER_PASSWORD_POLICY_MAX_PASSWORD_AGE",
            "max_password_age",
        ),
        (
            "PARSE_SERVER_PASSWORD_POLICY_MAX_PASSWORD_HISTORY",
            "max_password_history",
        ),
    ];

    fn validate(&self) -> Result<(), String> {
        if !(self.max_password_age >= 0.0 && self.max_password_age.is_finite()) {
            return Err("passwordPolicy.maxPasswordAge must be a positive number".into());
        }
        if self.max_password_history > 20 {
            return Err(
                "passwordPolicy.maxPasswordHistory must be an integer ranging 0 - 20".into(),
            );
        }
        Ok(())
    }
}

/// A password pattern. Parse apps write them as JavaScript regular
/// expressions, typically with lookaheads (`^(?=.*[0-9]).{8,}$`), so this
/// engine has lookaround, which `$regex` refuses: the operator writes
/// these patterns, not clients.
#[derive(Debug, Clone)]
pub struct PasswordPattern(fancy_regex::Regex);

impl PasswordPattern {
    pub fn new(pattern: &str) -> Result<Self, String> {
        fancy_regex::Regex::new(pattern)
            .map(Self)
            .map_err(|err| format!("passwordPolicy.validatorPattern: {err}"))
    }

    /// Whether the password matches. A pattern that runs past the engine's
    /// backtracking limit matches nothing, so it refuses rather than lets
    /// a password through.
    pub fn matches(&self, password: &str) -> bool {
        self.0.is_match(password).unwrap_or(false)
    }
}

impl Serialize for PasswordPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for PasswordPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_have_lookaheads_as_in_javascript() {
        let pattern = PasswordPattern::new("^(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9]).{8,}$").unwrap();
        assert!(pattern.matches("Abcdefg1"));
        assert!(!pattern.matches("abcdefg1"));
        assert!(PasswordPattern::new("(").is_err());
    }

    #[test]
    fn lockout_needs_a_duration_once_on() {
        let mut lockout = AccountLockout::default();
        assert!(lockout.validate().is_ok());
        lockout.threshold = 3;
        assert!(lockout.validate().is_err());
        lockout.duration = 0.5;
        assert!(lockout.validate().is_ok());
    }
}
