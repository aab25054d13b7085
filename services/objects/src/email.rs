//! Email verification and password reset, on Parse Server's own `_User`
//! fields: `_email_verify_token` (and `_email_verify_token_expires_at`)
//! and `_perishable_token` (and `_perishable_token_expires_at`). A link
//! mailed by either server works on the other. This is where tokens are
//! issued, checked and spent; the API builds the links and sends the mails
//! ([`AccountMail`]).

use chrono::Utc;
use oxbase_store::{Condition, FieldPath, Filter, Object, QueryValue, UpdateOp};
use serde_json::{Map, Value, json};

use crate::ObjectLayer;
use crate::PreparedWrite;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::lockout::{stored_date, updated_at};
use crate::values::{ParsedWrite, format_date};

const VERIFY_TOKEN: &str = "_email_verify_token";
const VERIFY_EXPIRES: &str = "_email_verify_token_expires_at";
const RESET_TOKEN: &str = "_perishable_token";
const RESET_EXPIRES: &str = "_perishable_token_expires_at";

/// What a mail is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    VerifyEmail,
    PasswordReset,
}

/// A mail to send: the API turns the token into Parse's link.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountMail {
    pub kind: MailKind,
    pub to: String,
    pub username: Option<String>,
    pub token: String,
}

/// A user whose email verification link was opened (see
/// [`ObjectLayer::email_verification`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EmailVerification {
    pub user_id: String,
    token: String,
    /// Tokens expire, so the expiry date goes with the token.
    expires: bool,
}

/// Whom a `/requestPasswordReset` names: the address to mail, and the
/// user, when one was found, that its `beforePasswordResetRequest` trigger
/// is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ResetRequest {
    pub email: String,
    pub user: Option<Object>,
}

/// How a password reset by link ended; a refusal carries Parse's message,
/// which the reset page shows.
#[derive(Debug, Clone, PartialEq)]
pub enum ResetOutcome {
    Done,
    Refused(String),
}

const INVALID_RESET: &str = "Failed to reset password: username / email / token is invalid";
const EXPIRED_RESET: &str = "The password reset link has expired";

/// A token as Parse's `randomString(25)` makes them: 25 letters and
/// digits from a cryptographic generator.
fn new_token() -> String {
    crate::layer::random_string(25)
}

/// A token's lifetime in seconds; 0 is none (it never expires).
fn lifetime(secs: f64) -> Option<f64> {
    (secs > 0.0).then_some(secs)
}

fn expires_in(secs: f64) -> Value {
    let at = Utc::now() + chrono::Duration::milliseconds((secs * 1000.0).round() as i64);
    json!({"__type": "Date", "iso": format_date(at)})
}

fn text<'a>(user: &'a Object, field: &str) -> Option<&'a str> {
    user.get(field).and_then(Value::as_str)
}

fn eq(field: &str, value: &str) -> Filter {
    Filter::field(field, Condition::Eq(QueryValue::String(value.to_owned())))
}

/// The user a reset request names, as Parse looks it up: by email, or by
/// username for a user without one.
fn by_email_or_username(email: &str) -> Filter {
    Filter::Or(vec![
        eq("email", email),
        eq("username", email).and(Filter::field("email", Condition::Exists(false))),
    ])
}

fn mail_of(kind: MailKind, user: &Object, token: &str) -> Option<AccountMail> {
    let email = text(user, "email");
    let to = match kind {
        MailKind::VerifyEmail => email?,
        // Parse mails a user without an email at its username.
        MailKind::PasswordReset => email.or_else(|| text(user, "username"))?,
    };
    Some(AccountMail {
        kind,
        to: to.to_owned(),
        username: text(user, "username").map(str::to_owned),
        token: token.to_owned(),
    })
}

/// Parse's answer to an email route when no mail can be sent (its
/// `_throwOnBadEmailConfig`).
pub fn email_not_configured() -> ParseError {
    ParseError::new(
        code::INTERNAL_SERVER_ERROR,
        "An appName, publicServerURL, and emailAdapter are required for password reset and email verification functionality.",
    )
}

/// A body field as JavaScript's truthiness sees it: absent, `null` and
/// `""` are not given.
fn given(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null() && v.as_str() != Some(""))
}

/// The providers of the `authData` a write sets.
fn auth_data_providers(parsed: &ParsedWrite) -> Vec<String> {
    let mut providers = Vec::new();
    for (path, op) in &parsed.changes {
        if path.field != "authData" {
            continue;
        }
        match (path.nested.first(), op) {
            (Some(provider), _) => providers.push(provider.clone()),
            (None, UpdateOp::Set(Value::Object(map))) => providers.extend(map.keys().cloned()),
            _ => {}
        }
    }
    providers
}

impl ObjectLayer {
    /// Parse's `setEmailVerifyToken`, on a sign-up or update that sets an
    /// email (unless it signs in with a provider other than `anonymous`):
    /// the user gets a new verification token and `emailVerified: false`.
    /// The write is then marked to mail the link once committed.
    pub(crate) fn verify_new_email(&self, parsed: &mut ParsedWrite) {
        let settings = &self.settings().email;
        let sets_email = parsed.changes.iter().any(|(path, op)| {
            path.field == "email" && !path.is_nested() && matches!(op, UpdateOp::Set(_))
        });
        if !settings.verify_user_emails
            || !sets_email
            || auth_data_providers(parsed)
                .iter()
                .any(|provider| provider != "anonymous")
        {
            return;
        }
        parsed
            .changes
            .retain(|(path, _)| path.field != "emailVerified");
        parsed.changes.extend([
            (
                FieldPath::new(VERIFY_TOKEN),
                UpdateOp::Set(new_token().into()),
            ),
            (FieldPath::new("emailVerified"), UpdateOp::Set(false.into())),
        ]);
        parsed
            .types
            .insert("emailVerified".into(), oxbase_store::FieldType::Boolean);
        if let Some(secs) = lifetime(settings.email_verify_token_validity_duration) {
            parsed.changes.push((
                FieldPath::new(VERIFY_EXPIRES),
                UpdateOp::Set(expires_in(secs)),
            ));
        }
    }

    /// Only the master key sets `emailVerified`, as in Parse Server.
    pub(crate) fn check_email_verified_write(auth: &Auth, parsed: &ParsedWrite) -> ParseResult<()> {
        if !auth.master
            && parsed
                .changes
                .iter()
                .any(|(path, _)| path.field == "emailVerified")
        {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                "Clients aren't allowed to manually update email verification.",
            ));
        }
        Ok(())
    }

    /// A new password or email ends any pending reset link, as in Parse.
    pub(crate) fn end_reset_on_change(parsed: &mut ParsedWrite) {
        let changes = parsed
            .changes
            .iter()
            .any(|(path, _)| matches!(path.field.as_str(), "password" | "email"));
        if changes {
            parsed.changes.extend([
                (FieldPath::new(RESET_TOKEN), UpdateOp::Delete),
                (FieldPath::new(RESET_EXPIRES), UpdateOp::Delete),
            ]);
        }
    }

    /// Log-in refused while the email is unverified, when
    /// `prevent_login_with_unverified_email` says so.
    pub(crate) fn check_email_verified(&self, user: &Object) -> ParseResult<()> {
        let settings = &self.settings().email;
        let verified = user.get("emailVerified").and_then(Value::as_bool) == Some(true);
        if settings.verify_user_emails && settings.prevent_login_with_unverified_email && !verified
        {
            return Err(ParseError::new(
                code::EMAIL_NOT_FOUND,
                "User email is not verified.",
            ));
        }
        Ok(())
    }

    /// Whether a sign-up gets no session until the email is verified: a
    /// sign-up without `authData`, when log-ins need a verified email. As
    /// Parse Server, `prevent_signup_with_unverified_email` then refuses
    /// it with 205 once the user is saved.
    pub fn signup_waits_for_email(&self, user: &crate::PreparedWrite) -> bool {
        let settings = &self.settings().email;
        let with_auth_data = user
            .created_object()
            .is_some_and(|object| object.contains_key("authData"));
        settings.verify_user_emails
            && settings.prevent_login_with_unverified_email
            && !with_auth_data
    }

    /// The verification mail for a user whose write set a new token, once
    /// it is committed (Parse's `sendVerificationEmail`); `None` when
    /// `send_user_email_verification` is off.
    pub async fn verification_mail(&self, user_id: &str) -> ParseResult<Option<AccountMail>> {
        if !self.settings().email.send_user_email_verification {
            return Ok(None);
        }
        let Some(user) = self.user_by_id(user_id).await? else {
            return Ok(None);
        };
        Ok(
            text(&user, VERIFY_TOKEN)
                .and_then(|token| mail_of(MailKind::VerifyEmail, &user, token)),
        )
    }

    /// `GET /apps/<appId>/verify_email` (Parse's `verifyEmail`): the user
    /// holding the token, whose verification the API then writes through
    /// the normal write path (with the user's beforeSave, and afterSave
    /// from its event). `None` when no user holds it (or it expired, or
    /// verification is off).
    pub async fn email_verification(&self, token: &str) -> ParseResult<Option<EmailVerification>> {
        let settings = &self.settings().email;
        if !settings.verify_user_emails {
            return Ok(None);
        }
        let Some(user) = self.find_one("_User", eq(VERIFY_TOKEN, token)).await? else {
            return Ok(None);
        };
        // Dates are checked here rather than in the query: the stores keep
        // Parse's internal fields outside the class schema.
        let expires = lifetime(settings.email_verify_token_validity_duration).is_some();
        if expires {
            let verified = user.get("emailVerified").and_then(Value::as_bool) == Some(true);
            let valid = stored_date(user.get(VERIFY_EXPIRES)).is_some_and(|at| at > Utc::now());
            if verified || !valid {
                return Ok(None);
            }
        }
        let Some(user_id) = text(&user, "objectId") else {
            return Ok(None);
        };
        Ok(Some(EmailVerification {
            user_id: user_id.to_owned(),
            token: token.to_owned(),
            expires,
        }))
    }

    /// The update that verifies the email: `body` (`emailVerified: true`,
    /// and whatever the user's beforeSave changed) written as the server
    /// writes (Parse's maintenance key), and the token spent in the same
    /// write, only while the user still holds it: of two clicks, one
    /// verifies (the other is 101).
    pub async fn prepare_email_verification(
        &self,
        verification: &EmailVerification,
        body: &Map<String, Value>,
    ) -> ParseResult<PreparedWrite> {
        let mut write = self
            .prepare_update(&Auth::master(), "_User", &verification.user_id, body)
            .await?;
        let mut spent = vec![(FieldPath::new(VERIFY_TOKEN), UpdateOp::Delete)];
        if verification.expires {
            spent.push((FieldPath::new(VERIFY_EXPIRES), UpdateOp::Delete));
        }
        write.add_changes(spent);
        write.require(eq(VERIFY_TOKEN, &verification.token));
        Ok(write)
    }

    /// `POST /verificationEmailRequest` (Parse's
    /// `handleVerificationEmailRequest`): a new verification token for the
    /// user with this email, and its mail. `None` when nothing is mailed.
    pub async fn request_verification_email(
        &self,
        email: Option<&Value>,
    ) -> ParseResult<Option<AccountMail>> {
        let settings = &self.settings().email;
        if !settings.is_configured() {
            return Err(email_not_configured());
        }
        let email = given(email)
            .ok_or_else(|| ParseError::new(code::EMAIL_MISSING, "you must provide an email"))?;
        let email = email.as_str().ok_or_else(|| {
            ParseError::new(
                code::INVALID_EMAIL_ADDRESS,
                "you must provide a valid email string",
            )
        })?;
        let quiet = settings.email_verify_success_on_invalid_email;
        let Some(user) = self.find_one("_User", eq("email", email)).await? else {
            if quiet {
                return Ok(None);
            }
            return Err(ParseError::new(
                code::EMAIL_NOT_FOUND,
                format!("No user found with email {email}"),
            ));
        };
        if user.get("emailVerified").and_then(Value::as_bool) == Some(true) {
            if quiet {
                return Ok(None);
            }
            return Err(ParseError::new(
                code::OTHER_CAUSE,
                format!("Email {email} is already verified."),
            ));
        }
        self.renew_verify_token(&user).await
    }

    /// Parse's `regenerateEmailVerifyToken`: keeps a token still valid when
    /// `email_verify_token_reuse_if_valid` says so, else stores a new one.
    async fn renew_verify_token(&self, user: &Object) -> ParseResult<Option<AccountMail>> {
        let settings = &self.settings().email;
        if !settings.verify_user_emails {
            return Ok(None);
        }
        let Some(user_id) = text(user, "objectId") else {
            return Ok(None);
        };
        let still_valid = stored_date(user.get(VERIFY_EXPIRES)).is_some_and(|at| at > Utc::now());
        if let Some(token) = text(user, VERIFY_TOKEN)
            && settings.email_verify_token_reuse_if_valid
            && still_valid
        {
            return Ok(self.mail_if_wanted(mail_of(MailKind::VerifyEmail, user, token)));
        }
        let token = new_token();
        let mut changes = vec![
            (
                FieldPath::new(VERIFY_TOKEN),
                UpdateOp::Set(token.clone().into()),
            ),
            (FieldPath::new("emailVerified"), UpdateOp::Set(false.into())),
        ];
        if let Some(secs) = lifetime(settings.email_verify_token_validity_duration) {
            changes.push((
                FieldPath::new(VERIFY_EXPIRES),
                UpdateOp::Set(expires_in(secs)),
            ));
        }
        let Some(after) = self
            .write_user_internals(user_id, updated_at(user), changes, Filter::All)
            .await?
        else {
            return Ok(None);
        };
        Ok(self.mail_if_wanted(mail_of(MailKind::VerifyEmail, &after, &token)))
    }

    /// The verification page's "send a new link" (Parse's
    /// `resendVerificationEmail`): the user with this username and/or old
    /// token gets a new token, unless already verified. `None` when no
    /// such user is waiting.
    pub async fn resend_verification_email(
        &self,
        username: Option<&str>,
        token: Option<&str>,
    ) -> ParseResult<Option<AccountMail>> {
        let mut filter = Filter::All;
        if let Some(username) = username {
            filter = filter.and(eq("username", username));
        }
        if let Some(token) = token {
            filter = filter.and(eq(VERIFY_TOKEN, token));
        }
        if matches!(filter, Filter::All) {
            return Ok(None);
        }
        let Some(user) = self.find_one("_User", filter).await? else {
            return Ok(None);
        };
        if user.get("emailVerified").and_then(Value::as_bool) == Some(true) {
            return Ok(None);
        }
        self.renew_verify_token(&user).await
    }

    fn mail_if_wanted(&self, mail: Option<AccountMail>) -> Option<AccountMail> {
        mail.filter(|_| self.settings().email.send_user_email_verification)
    }

    /// `POST /requestPasswordReset` (Parse's `handleResetRequest`), up to
    /// its `beforePasswordResetRequest` trigger: the address to mail and
    /// the user the request names, looked up by email (or, for a user
    /// without one, by username), or by an expired link's `token`. The
    /// trigger runs only when a user is found, as in Parse.
    pub async fn password_reset_request(
        &self,
        email: Option<&Value>,
        token: Option<&Value>,
    ) -> ParseResult<ResetRequest> {
        if !self.settings().email.is_configured() {
            return Err(email_not_configured());
        }
        let (mut email, token) = (given(email).cloned(), given(token));
        if email.is_none() && token.is_none() {
            return Err(ParseError::new(
                code::EMAIL_MISSING,
                "you must provide an email",
            ));
        }
        let mut user = None;
        if let Some(token) = token {
            let token = token
                .as_str()
                .ok_or_else(|| ParseError::new(code::INVALID_VALUE, "token must be a string"))?;
            // Parse takes a token only once its link expired.
            user = self
                .find_one("_User", eq(RESET_TOKEN, token))
                .await?
                .filter(|user| {
                    stored_date(user.get(RESET_EXPIRES)).is_some_and(|at| at < Utc::now())
                });
            if let Some(address) = user.as_ref().and_then(|user| user.get("email")) {
                email = Some(address.clone());
            }
        } else if let Some(Value::String(email)) = &email {
            user = self.find_one("_User", by_email_or_username(email)).await?;
        }
        let Some(Value::String(email)) = email else {
            return Err(ParseError::new(
                code::INVALID_EMAIL_ADDRESS,
                "you must provide a valid email string",
            ));
        };
        Ok(ResetRequest { email, user })
    }

    /// The rest of `POST /requestPasswordReset`, once its trigger let it
    /// through: a reset token for the user with this email (or, for a user
    /// without one, this username), and its mail. `None` when no user
    /// matches and `reset_password_success_on_invalid_email` keeps that
    /// quiet.
    pub async fn send_password_reset(&self, email: &str) -> ParseResult<Option<AccountMail>> {
        match self.issue_reset_token(email).await? {
            Some(mail) => Ok(Some(mail)),
            None if self
                .settings()
                .password_policy
                .reset_password_success_on_invalid_email =>
            {
                Ok(None)
            }
            None => Err(ParseError::new(
                code::OBJECT_NOT_FOUND,
                "A user with that email does not exist.",
            )),
        }
    }

    /// Parse's `sendPasswordResetEmail`: the token still valid when
    /// `reset_token_reuse_if_valid` says so, else a new one. `None` when no
    /// user has this email.
    async fn issue_reset_token(&self, email: &str) -> ParseResult<Option<AccountMail>> {
        let policy = &self.settings().password_policy;
        let Some(user) = self.find_one("_User", by_email_or_username(email)).await? else {
            return Ok(None);
        };
        let Some(user_id) = text(&user, "objectId") else {
            return Ok(None);
        };
        let still_valid = stored_date(user.get(RESET_EXPIRES)).is_some_and(|at| at > Utc::now());
        if let Some(token) = text(&user, RESET_TOKEN)
            && policy.reset_token_reuse_if_valid
            && still_valid
        {
            return Ok(mail_of(MailKind::PasswordReset, &user, token));
        }
        let token = new_token();
        let mut changes = vec![(
            FieldPath::new(RESET_TOKEN),
            UpdateOp::Set(token.clone().into()),
        )];
        if let Some(secs) = lifetime(policy.reset_token_validity_duration) {
            changes.push((
                FieldPath::new(RESET_EXPIRES),
                UpdateOp::Set(expires_in(secs)),
            ));
        }
        let Some(after) = self
            .write_user_internals(user_id, updated_at(&user), changes, Filter::All)
            .await?
        else {
            return Ok(None);
        };
        Ok(mail_of(MailKind::PasswordReset, &after, &token))
    }

    /// Parse's `checkResetTokenValidity`: the user holding a reset token,
    /// or the message the reset page shows.
    pub async fn check_reset_token(&self, token: &str) -> ParseResult<Result<Object, String>> {
        let Some(user) = self.find_one("_User", eq(RESET_TOKEN, token)).await? else {
            return Ok(Err(INVALID_RESET.to_owned()));
        };
        if lifetime(
            self.settings()
                .password_policy
                .reset_token_validity_duration,
        )
        .is_some()
            && stored_date(user.get(RESET_EXPIRES)).is_some_and(|at| at < Utc::now())
        {
            return Ok(Err(EXPIRED_RESET.to_owned()));
        }
        Ok(Ok(user))
    }

    /// `POST /apps/<appId>/request_password_reset` (Parse's
    /// `updatePassword`): sets the password of the user holding the
    /// token, under the password policy, which ends the user's sessions
    /// and spends the token in the same write. A refusal carries Parse's
    /// message.
    pub async fn reset_password_by_token(
        &self,
        token: &str,
        password: &str,
    ) -> ParseResult<ResetOutcome> {
        let user = match self.check_reset_token(token).await? {
            Ok(user) => user,
            Err(message) => return Ok(ResetOutcome::Refused(message)),
        };
        let Some(user_id) = text(&user, "objectId") else {
            return Ok(ResetOutcome::Refused(INVALID_RESET.to_owned()));
        };
        match self
            .reset_password(user_id, password, eq(RESET_TOKEN, token))
            .await
        {
            Ok(()) => Ok(ResetOutcome::Done),
            // Another reset spent the token first.
            Err(ParseError::Parse {
                code: code::OBJECT_NOT_FOUND,
                ..
            }) => Ok(ResetOutcome::Refused(INVALID_RESET.to_owned())),
            Err(ParseError::Parse { code, message }) if code != code::INTERNAL_SERVER_ERROR => {
                Ok(ResetOutcome::Refused(message))
            }
            Err(err) => Err(err),
        }
    }
}
