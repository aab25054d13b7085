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
    /// as Parse Server's `maxLimit` does. 0 means no cap.
    pub max_limit: usize,
    /// Largest `skip`: the store walks past every skipped row.
    pub max_skip: usize,
    /// Most `include` paths in one query: each is a lookup.
    pub max_include_paths: usize,
    /// Most values in one `$in`, `$nin`, `$all` or `$containedBy`.
    pub max_in_values: usize,
    /// Longest a query may run in the database (PostgreSQL's
    /// `statement_timeout`, MongoDB's `maxTimeMS`, an interrupt on SQLite),
    /// in milliseconds; 0 means no limit.
    pub query_timeout_ms: u64,
    /// Longest a request may take before it is answered with 124 "Request
    /// timed out", in milliseconds (file uploads excepted: they are bounded
    /// by their size); 0 means no limit.
    pub request_timeout_ms: u64,
    /// Most requests one process serves at once; beyond it a request is
    /// answered at once with 503, which the Parse SDKs retry.
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 * 1024 * 1024,
            max_batch_size: 50,
            max_query_depth: 10,
            max_regex_length: 1024,
            max_include_depth: 10,
            max_limit: 10_000,
            max_skip: 100_000,
            max_include_paths: 50,
            max_in_values: 10_000,
            query_timeout_ms: 30_000,
            request_timeout_ms: 60_000,
            max_concurrent_requests: 1024,
        }
    }
}

impl Section for Limits {
    const KEY: &'static str = "limits";

    fn validate(&self) -> Result<(), String> {
        if self.max_batch_size == 0 || self.max_body_bytes == 0 {
            return Err("max_batch_size and max_body_bytes must be positive".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("max_concurrent_requests must be positive".into());
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Seconds a password reset link stays valid; 0 (the default) means
    /// it never expires, as leaving it out in Parse does.
    #[serde(alias = "resetTokenValidityDuration")]
    pub reset_token_validity_duration: f64,
    /// Another reset request mails the same link while it is still valid,
    /// so the first mail keeps working.
    #[serde(alias = "resetTokenReuseIfValid")]
    pub reset_token_reuse_if_valid: bool,
    /// `/requestPasswordReset` for an unknown email answers `{}` (the
    /// default, so the answer tells no one which emails exist) rather than
    /// 101.
    #[serde(alias = "resetPasswordSuccessOnInvalidEmail")]
    pub reset_password_success_on_invalid_email: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            validator_pattern: None,
            validation_error: None,
            do_not_allow_username: false,
            max_password_age: 0.0,
            max_password_history: 0,
            reset_token_validity_duration: 0.0,
            reset_token_reuse_if_valid: false,
            reset_password_success_on_invalid_email: true,
        }
    }
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
        (
            "PARSE_SERVER_PASSWORD_POLICY_RESET_TOKEN_VALIDITY_DURATION",
            "reset_token_validity_duration",
        ),
        (
            "PARSE_SERVER_PASSWORD_POLICY_RESET_TOKEN_REUSE_IF_VALID",
            "reset_token_reuse_if_valid",
        ),
        (
            "PARSE_SERVER_PASSWORD_POLICY_RESET_PASSWORD_SUCCESS_ON_INVALID_EMAIL",
            "reset_password_success_on_invalid_email",
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
        if !(self.reset_token_validity_duration >= 0.0
            && self.reset_token_validity_duration.is_finite())
        {
            return Err(
                "passwordPolicy.resetTokenValidityDuration must be a positive number".into(),
            );
        }
        if self.reset_token_reuse_if_valid && self.reset_token_validity_duration == 0.0 {
            return Err(
                "You cannot use resetTokenReuseIfValid without resetTokenValidityDuration".into(),
            );
        }
        Ok(())
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same host or network.
    None,
    /// Plain connection upgraded with STARTTLS, which the server must offer
    /// (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[email]`: the account mails (email verification and password reset),
/// sent over SMTP, and Parse's options that govern them. Parse Server
/// takes an email adapter; oxbase speaks SMTP itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server; without it no mail is sent, and Parse's email
    /// routes answer as Parse Server without an email adapter.
    pub smtp_host: Option<String>,
    /// 0 (the default) means 25, 587 or 465 by `tls`.
    pub smtp_port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<oxbase_kit::Secret>,
    /// The sender, `App <no-reply@example.com>` or a bare address.
    pub from: Option<String>,
    /// Parse's `appName`, in the mails and pages.
    #[serde(alias = "appName")]
    pub app_name: Option<String>,
    /// How long one SMTP attempt may take.
    pub timeout_secs: u64,
    /// Parse's `verifyUserEmails`: a user signing up with an email, or
    /// changing it, gets `emailVerified: false` and a mail with a link.
    #[serde(alias = "verifyUserEmails")]
    pub verify_user_emails: bool,
    /// Parse's `preventLoginWithUnverifiedEmail`: no log-in (and no session
    /// on sign-up) until the email is verified.
    #[serde(alias = "preventLoginWithUnverifiedEmail")]
    pub prevent_login_with_unverified_email: bool,
    /// Parse's `preventSignupWithUnverifiedEmail`: with the above, a sign-up
    /// answers 205 instead of a user without a session.
    #[serde(alias = "preventSignupWithUnverifiedEmail")]
    pub prevent_signup_with_unverified_email: bool,
    /// Seconds a verification link stays valid; 0 (the default) means
    /// forever.
    #[serde(alias = "emailVerifyTokenValidityDuration")]
    pub email_verify_token_validity_duration: f64,
    /// Another verification request mails the same link while it is valid.
    #[serde(alias = "emailVerifyTokenReuseIfValid")]
    pub email_verify_token_reuse_if_valid: bool,
    /// `/verificationEmailRequest` for an unknown or verified email answers
    /// `{}` (the default) rather than an error.
    #[serde(alias = "emailVerifySuccessOnInvalidEmail")]
    pub email_verify_success_on_invalid_email: bool,
    /// Parse's `sendUserEmailVerification`: `false` sets the token but
    /// mails nothing (the app sends its own).
    #[serde(alias = "sendUserEmailVerification")]
    pub send_user_email_verification: bool,
    /// Parse's `pages.customUrls`: a page id (`passwordReset`,
    /// `passwordResetSuccess`, `passwordResetLinkInvalid`,
    /// `emailVerificationSuccess`, `emailVerificationLinkInvalid`, ...)
    /// to the URL the page redirects to instead.
    #[serde(alias = "customUrls")]
    pub custom_urls: std::collections::BTreeMap<String, String>,
}

/// Parse's page ids, as `pages.customUrls` names them.
const PAGE_IDS: &[&str] = &[
    "passwordReset",
    "passwordResetSuccess",
    "passwordResetLinkInvalid",
    "emailVerificationSuccess",
    "emailVerificationSendFail",
    "emailVerificationSendSuccess",
    "emailVerificationLinkInvalid",
    "emailVerificationLinkExpired",
];

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 0,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: None,
            app_name: None,
            timeout_secs: 30,
            verify_user_emails: false,
            prevent_login_with_unverified_email: false,
            prevent_signup_with_unverified_email: false,
            email_verify_token_validity_duration: 0.0,
            email_verify_token_reuse_if_valid: false,
            email_verify_success_on_invalid_email: true,
            send_user_email_verification: true,
            custom_urls: std::collections::BTreeMap::new(),
        }
    }
}

impl EmailConfig {
    /// Whether mails can be sent: Parse's "an email adapter is set".
    pub fn is_configured(&self) -> bool {
        self.smtp_host.is_some()
    }
}

impl Section for EmailConfig {
    const KEY: &'static str = "email";
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("PARSE_SERVER_APP_NAME", "app_name"),
        ("PARSE_SERVER_VERIFY_USER_EMAILS", "verify_user_emails"),
        (
            "PARSE_SERVER_PREVENT_LOGIN_WITH_UNVERIFIED_EMAIL",
            "prevent_login_with_unverified_email",
        ),
        (
            "PARSE_SERVER_PREVENT_SIGNUP_WITH_UNVERIFIED_EMAIL",
            "prevent_signup_with_unverified_email",
        ),
        (
            "PARSE_SERVER_EMAIL_VERIFY_TOKEN_VALIDITY_DURATION",
            "email_verify_token_validity_duration",
        ),
        (
            "PARSE_SERVER_EMAIL_VERIFY_TOKEN_REUSE_IF_VALID",
            "email_verify_token_reuse_if_valid",
        ),
        (
            "PARSE_SERVER_EMAIL_VERIFY_SUCCESS_ON_INVALID_EMAIL",
            "email_verify_success_on_invalid_email",
        ),
        (
            "PARSE_SERVER_SEND_USER_EMAIL_VERIFICATION",
            "send_user_email_verification",
        ),
        ("PARSE_SERVER_PAGES_CUSTOM_URLS", "custom_urls"),
    ];

    fn validate(&self) -> Result<(), String> {
        if self.verify_user_emails && !self.is_configured() {
            // Parse Server refuses to start without an email adapter too.
            return Err("verify_user_emails needs an SMTP server (email.smtp_host)".into());
        }
        if self.is_configured() {
            if self.from.is_none() {
                return Err("email.from is required with email.smtp_host".into());
            }
            if self.app_name.is_none() {
                return Err(
                    "An app name is required for e-mail verification and password resets (email.app_name)"
                        .into(),
                );
            }
        }
        if !(self.email_verify_token_validity_duration >= 0.0
            && self.email_verify_token_validity_duration.is_finite())
        {
            return Err(
                "Email verify token validity duration must be a value greater than 0.".into(),
            );
        }
        if self.email_verify_token_reuse_if_valid
            && self.email_verify_token_validity_duration == 0.0
        {
            return Err(
                "You cannot use emailVerifyTokenReuseIfValid without emailVerifyTokenValidityDuration"
                    .into(),
            );
        }
        if let Some(id) = self
            .custom_urls
            .keys()
            .find(|id| !PAGE_IDS.contains(&id.as_str()))
        {
            return Err(format!("custom_urls: unknown page {id:?}"));
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
    fn email_rules_need_what_parse_needs() {
        let mut email = EmailConfig {
            verify_user_emails: true,
            ..EmailConfig::default()
        };
        assert!(email.validate().is_err(), "no SMTP server");
        email.smtp_host = Some("localhost".into());
        assert!(email.validate().is_err(), "no sender");
        email.from = Some("no-reply@example.com".into());
        email.app_name = Some("App".into());
        assert!(email.validate().is_ok());
        email.email_verify_token_reuse_if_valid = true;
        assert!(email.validate().is_err(), "reuse without a lifetime");
        email.email_verify_token_validity_duration = 3600.0;
        assert!(email.validate().is_ok());
        email.custom_urls.insert("nope".into(), "https://x".into());
        assert!(email.validate().is_err(), "unknown page");

        let policy = PasswordPolicy {
            reset_token_reuse_if_valid: true,
            ..PasswordPolicy::default()
        };
        assert!(policy.validate().is_err());
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
