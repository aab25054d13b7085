//! Users, sessions and roles: the rules Parse applies to writes on
//! `_User`, `_Session` and `_Role`, log-in and log-out, and what a
//! committed write changes for sessions (a password change ends them).

use chrono::Utc;
use oxbase_store::query::RegexSpec;
use oxbase_store::{Condition, FieldPath, Filter, QueryValue, UpdateOp};
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::auth_data::LogInAuthData;
use crate::error::{ParseError, ParseResult, code};
use crate::layer::PreparedWrite;
use crate::values::{ParsedWrite, format_date};

/// bcrypt's cost factor, as Parse Server uses it, so either server can
/// check the other's hashes at the same price.
pub const BCRYPT_COST: u32 = 10;

/// A revocable session token as Parse Server makes them: `r:` and 32 hex
/// digits.
fn new_session_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("r:{hex}")
}

async fn hash_password(password: String) -> ParseResult<String> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
        .await
        .map_err(ParseError::internal)?
        .map_err(ParseError::internal)
}

/// A bcrypt hash (cost 10) of no one's password. A log-in for an unknown
/// user, or a user without a password, is checked against it, so that it
/// costs what a wrong password costs and timing tells no one which
/// usernames exist.
const DUMMY_HASH: &str = "$2b$10$5ycDmcxbcN9JATS0MiSUMuoJR4ScgPL6OxC2Zhij7i3R9NR9q5E32";

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .unwrap_or(false)
}

/// The value a write sets on a top-level field, if it sets one.
fn set_value<'a>(parsed: &'a ParsedWrite, field: &str) -> Option<&'a UpdateOp> {
    parsed
        .changes
        .iter()
        .find(|(path, _)| path.field == field && !path.is_nested())
        .map(|(_, op)| op)
}

fn set_string(parsed: &ParsedWrite, field: &str) -> ParseResult<Option<String>> {
    match set_value(parsed, field) {
        None => Ok(None),
        Some(UpdateOp::Set(Value::String(s))) => Ok(Some(s.clone())),
        Some(_) => Err(ParseError::new(
            code::INCORRECT_TYPE,
            format!("{field} must be a string"),
        )),
    }
}

fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain.contains('.')
        && !email.chars().any(char::is_whitespace)
        && !domain.contains('@')
}

/// A case-insensitive exact match, as Parse checks usernames and emails
/// for uniqueness.
fn same_text(field: &str, value: &str) -> Filter {
    Filter::field(
        field,
        Condition::Regex(RegexSpec {
            pattern: format!("^{}$", regex::escape(value)),
            options: "i".into(),
        }),
    )
}

impl ObjectLayer {
    /// Sign-up: a username and password are required (a user signing up
    /// with `authData` needs neither), the email must look like one, and
    /// neither may belong to another user. The password is stored only as
    /// its bcrypt hash.
    pub(crate) async fn user_create_rules(
        &self,
        auth: &Auth,
        object_id: &str,
        parsed: &mut ParsedWrite,
    ) -> ParseResult<()> {
        Self::check_email_verified_write(auth, parsed)?;
        let sign_up_with = self.auth_data_create_rules(auth, parsed).await?;
        let username = set_string(parsed, "username")?.filter(|u| !u.is_empty());
        if username.is_none() {
            return Err(ParseError::new(
                code::USERNAME_MISSING,
                "bad or missing username",
            ));
        }
        let password = set_string(parsed, "password")?.filter(|p| !p.is_empty());
        if password.is_none() && !sign_up_with.auth_data {
            return Err(ParseError::new(
                code::PASSWORD_MISSING,
                "password is required",
            ));
        }
        self.check_user_fields(None, parsed).await?;
        self.verify_new_email(parsed);
        // As Parse: the user may always read and change itself, whatever
        // ACL it was given; without one, others may read it only when
        // private users are not enforced.
        let mut acl = match set_value(parsed, "ACL") {
            Some(UpdateOp::Set(Value::Object(acl))) => acl.clone(),
            _ if self.settings().enforce_private_users => Map::new(),
            _ => Map::from_iter([("*".to_owned(), json!({"read": true}))]),
        };
        acl.insert(object_id.to_owned(), json!({"read": true, "write": true}));
        parsed.changes.retain(|(path, _)| path.field != "ACL");
        parsed
            .changes
            .push((FieldPath::new("ACL"), UpdateOp::Set(Value::Object(acl))));
        self.hash_password_change(None, parsed).await
    }

    /// Only a signed-in user (or the master key) may change a user, and the
    /// user's ACL decides which; usernames and
    /// emails stay unique, and a new password is hashed.
    pub(crate) async fn user_update_rules(
        &self,
        auth: &Auth,
        object_id: &str,
        parsed: &mut ParsedWrite,
    ) -> ParseResult<()> {
        // Another user is refused by the user's ACL, as in Parse Server.
        if !auth.master && auth.user.is_none() {
            return Err(ParseError::new(
                code::SESSION_MISSING,
                format!("Cannot modify user {object_id}."),
            ));
        }
        Self::check_email_verified_write(auth, parsed)?;
        self.auth_data_update_rules(auth, object_id, parsed).await?;
        if let Some(UpdateOp::Delete) = set_value(parsed, "username") {
            return Err(ParseError::new(
                code::USERNAME_MISSING,
                "bad or missing username",
            ));
        }
        if set_string(parsed, "username")?.is_some_and(|u| u.is_empty()) {
            return Err(ParseError::new(
                code::USERNAME_MISSING,
                "bad or missing username",
            ));
        }
        if set_string(parsed, "password")?.is_some_and(|p| p.is_empty()) {
            return Err(ParseError::new(
                code::PASSWORD_MISSING,
                "password is required",
            ));
        }
        self.check_user_fields(Some(object_id), parsed).await?;
        Self::end_reset_on_change(parsed);
        self.verify_new_email(parsed);
        self.hash_password_change(Some(object_id), parsed).await
    }

    async fn check_user_fields(
        &self,
        own_id: Option<&str>,
        parsed: &ParsedWrite,
    ) -> ParseResult<()> {
        let taken = |field: &'static str, value: String| async move {
            let mut filter = same_text(field, &value);
            if let Some(own_id) = own_id {
                filter = filter.and(Filter::field(
                    "objectId",
                    Condition::Ne(QueryValue::String(own_id.to_owned())),
                ));
            }
            let query = oxbase_store::Query::new("_User").filter(filter).limit(1);
            Ok::<bool, ParseError>(!self.find_raw(&query).await?.is_empty())
        };
        if let Some(username) = set_string(parsed, "username")?
            && taken("username", username).await?
        {
            return Err(ParseError::new(
                code::USERNAME_TAKEN,
                "Account already exists for this username.",
            ));
        }
        if let Some(email) = set_string(parsed, "email")? {
            if !is_email(&email) {
                return Err(ParseError::new(
                    code::INVALID_EMAIL_ADDRESS,
                    "Email address format is invalid.",
                ));
            }
            if taken("email", email).await? {
                return Err(ParseError::new(
                    code::EMAIL_TAKEN,
                    "Account already exists for this email address.",
                ));
            }
        }
        Ok(())
    }

    /// Replaces a `password` change by its hash in `_hashed_password`, once
    /// the password policy accepts it. `user_id` is the user whose password
    /// changes, `None` on sign-up.
    async fn hash_password_change(
        &self,
        user_id: Option<&str>,
        parsed: &mut ParsedWrite,
    ) -> ParseResult<()> {
        let Some(index) = parsed
            .changes
            .iter()
            .position(|(path, _)| path.field == "password")
        else {
            return Ok(());
        };
        let (_, op) = parsed.changes.remove(index);
        let UpdateOp::Set(Value::String(password)) = op else {
            return Err(ParseError::new(
                code::INCORRECT_TYPE,
                "password must be a string",
            ));
        };
        let username = set_string(parsed, "username")?;
        let policy_changes = self
            .apply_password_policy(user_id, username.as_deref(), &password)
            .await?;
        let hash = hash_password(password).await?;
        parsed.changes.push((
            FieldPath::new("_hashed_password"),
            UpdateOp::Set(Value::String(hash)),
        ));
        parsed.changes.extend(policy_changes);
        parsed.types.remove("password");
        Ok(())
    }

    /// A new session for a user, valid for the configured session length.
    /// `action` is how it was made (`createdWith`), when Parse records one.
    pub async fn prepare_session(
        &self,
        user_id: &str,
        action: Option<&str>,
        installation_id: Option<&str>,
    ) -> ParseResult<(PreparedWrite, String)> {
        let created_with =
            action.map(|action| json!({"action": action, "authProvider": "password"}));
        self.prepare_session_created_with(user_id, created_with, installation_id)
            .await
    }

    /// [`ObjectLayer::prepare_session`] with Parse's whole `createdWith`.
    pub async fn prepare_session_created_with(
        &self,
        user_id: &str,
        created_with: Option<Value>,
        installation_id: Option<&str>,
    ) -> ParseResult<(PreparedWrite, String)> {
        let session_length_secs = self.settings().session_length_secs;
        let token = new_session_token();
        let expires = Utc::now()
            + chrono::Duration::seconds(i64::try_from(session_length_secs).unwrap_or(i64::MAX / 2));
        let mut body = Map::new();
        body.insert("sessionToken".into(), Value::from(token.clone()));
        body.insert(
            "user".into(),
            json!({"__type": "Pointer", "className": "_User", "objectId": user_id}),
        );
        if let Some(created_with) = created_with {
            body.insert("createdWith".into(), created_with);
        }
        body.insert(
            "expiresAt".into(),
            json!({"__type": "Date", "iso": format_date(expires)}),
        );
        if let Some(installation_id) = installation_id {
            body.insert("installationId".into(), Value::from(installation_id));
        }
        body.insert(
            "ACL".into(),
            json!({user_id: {"read": true, "write": true}}),
        );
        let prepared = self
            .prepare_create(&Auth::master(), "_Session", &body)
            .await?;
        Ok((prepared, token))
    }
}

fn role_name_error(message: &str) -> ParseError {
    ParseError::new(code::INVALID_ROLE_NAME, message)
}

/// A role needs a name of letters, digits, `_`, `-` and spaces.
pub(crate) fn role_create_rules(parsed: &ParsedWrite) -> ParseResult<()> {
    let name =
        set_string(parsed, "name")?.ok_or_else(|| role_name_error("Roles must have a name."))?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' '));
    if !valid {
        return Err(role_name_error(
            "A role's name can be only contain alphanumeric characters, _, -, and spaces.",
        ));
    }
    Ok(())
}

/// A role's name is fixed once saved.
pub(crate) fn role_update_rules(parsed: &ParsedWrite) -> ParseResult<()> {
    if set_value(parsed, "name").is_some() {
        return Err(role_name_error(
            "A role's name can only be set before it has been saved.",
        ));
    }
    Ok(())
}

/// A client may not move a session to another user or change its token.
pub(crate) fn session_update_rules(auth: &Auth, parsed: &ParsedWrite) -> ParseResult<()> {
    if auth.master {
        return Ok(());
    }
    for field in [
        "user",
        "sessionToken",
        "installationId",
        "expiresAt",
        "createdWith",
        "restricted",
    ] {
        if set_value(parsed, field).is_some() {
            return Err(ParseError::new(
                code::INVALID_KEY_NAME,
                format!("Cannot change a session's {field}."),
            ));
        }
    }
    Ok(())
}

/// What [`ObjectLayer::after_writes`] needs to know of a committed write.
#[derive(Debug)]
pub struct WriteEffect {
    pub class_name: String,
    /// The object it deleted.
    pub deleted: Option<String>,
    /// The installations it duplicates.
    pub duplicates: Vec<String>,
    /// The user whose password it changed.
    pub password_changed_for: Option<String>,
    /// The user it gave a new email verification token, to be mailed.
    pub verify_email_of: Option<String>,
}

impl WriteEffect {
    pub fn of(write: &PreparedWrite) -> Self {
        let deleted = write
            .is_delete()
            .then(|| write.object_id().map(str::to_owned))
            .flatten();
        WriteEffect {
            class_name: write.class_name().to_owned(),
            deleted,
            duplicates: write.duplicates().to_vec(),
            password_changed_for: write.password_changed_for().map(str::to_owned),
            verify_email_of: write.verifies_email_of().map(str::to_owned),
        }
    }
}

/// Who logs in: by username (which may also be the user's email), by
/// email, or by both.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogIn<'a> {
    pub username: Option<&'a str>,
    pub email: Option<&'a str>,
    pub password: Option<&'a str>,
    /// The request carries the master key (not the maintenance key, as in
    /// Parse): a user whose ACL is empty (locked out by the master key) may
    /// still log in.
    pub master: bool,
    /// Parse's `ignoreEmailVerification`, sent with the master or the
    /// maintenance key: log in although
    /// `prevent_login_with_unverified_email` would refuse the unverified
    /// email.
    pub ignore_email_verification: bool,
}

/// The user a password log-in names, as Parse's
/// `_authenticateUserFromRequest` looks it up: by username and email when
/// both are given, by email alone, or by a username that may be either
/// (`{$or: [{username}, {email: username}]}`).
fn log_in_filter(login: &LogIn<'_>) -> Option<Filter> {
    let eq = |field: &str, value: &str| {
        Filter::field(field, Condition::Eq(QueryValue::String(value.to_owned())))
    };
    match (login.username, login.email) {
        (Some(username), Some(email)) => Some(eq("username", username).and(eq("email", email))),
        (None, Some(email)) => Some(eq("email", email)),
        (Some(username), None) => Some(Filter::Or(vec![
            eq("username", username),
            eq("email", username),
        ])),
        (None, None) => None,
    }
}

/// Of the users a log-in matched, the one it means: when one user's
/// username is another's email, Parse logs in the one with that username.
fn chosen_user(
    mut found: Vec<oxbase_store::Object>,
    username: Option<&str>,
) -> Option<oxbase_store::Object> {
    if found.len() <= 1 {
        return found.pop();
    }
    found
        .into_iter()
        .find(|user| user.get("username").and_then(Value::as_str) == username)
}

/// A user whose ACL is `{}` was locked out by the master key, and no one
/// else logs in as them (Parse answers it as a wrong password).
fn locked_by_empty_acl(user: &oxbase_store::Object) -> bool {
    user.get("ACL")
        .and_then(Value::as_object)
        .is_some_and(|acl| acl.is_empty())
}

impl ObjectLayer {
    /// Checks a log-in's username (or email) and password, the `authData`
    /// sent with them (an enrolled user's second factor), then the
    /// password's age: the user's id, the user as stored and what the
    /// `authData` changes. No session exists yet, so that a `beforeLogin`
    /// hook can still refuse it.
    pub async fn check_log_in(
        &self,
        auth: &Auth,
        login: LogIn<'_>,
        auth_data: Option<&Value>,
    ) -> ParseResult<(String, oxbase_store::Object, LogInAuthData)> {
        let (user_id, user) = self.verify_log_in(login).await?;
        let auth_data = self.check_log_in_auth_data(auth, &user, auth_data).await?;
        self.check_password_age(&user_id, &user).await?;
        Ok((user_id, user, auth_data))
    }

    /// Checks a username (or email) and password, as `/login` and
    /// `/verifyPassword` do, counting failures for the account lockout.
    pub async fn verify_log_in(
        &self,
        login: LogIn<'_>,
    ) -> ParseResult<(String, oxbase_store::Object)> {
        let filter = log_in_filter(&login).ok_or_else(|| {
            ParseError::new(code::USERNAME_MISSING, "username/email is required.")
        })?;
        let password = login
            .password
            .ok_or_else(|| ParseError::new(code::PASSWORD_MISSING, "password is required."))?;
        let wrong = || ParseError::new(code::OBJECT_NOT_FOUND, "Invalid username/password.");
        let query = oxbase_store::Query::new("_User").filter(filter).limit(2);
        let user = chosen_user(self.find_raw(&query).await?, login.username);
        let field = |key| user.as_ref()?.get(key)?.as_str();
        let user_id = field("objectId").map(str::to_owned);
        let hash = field("_hashed_password");
        let checked = hash.unwrap_or(DUMMY_HASH).to_owned();
        let correct = verify_password(password.to_owned(), checked).await && hash.is_some();
        let (Some(user), Some(user_id)) = (user, user_id) else {
            return Err(wrong());
        };
        self.count_log_in(&user_id, correct).await?;
        if !correct || (!login.master && locked_by_empty_acl(&user)) {
            return Err(wrong());
        }
        if !login.ignore_email_verification {
            self.check_email_verified(&user)?;
        }
        Ok((user_id, user))
    }

    /// Opens a session for a user whose log-in was checked: the new
    /// session token.
    pub async fn open_log_in_session(&self, auth: &Auth, user_id: &str) -> ParseResult<String> {
        auth.require_writable("create")?;
        let (session, token) = self
            .prepare_session(user_id, Some("login"), auth.installation_id.as_deref())
            .await?;
        self.commit_one(session).await?;
        Ok(token)
    }

    /// `/loginAs`: a session for any user, opened by the master key
    /// without the user's password.
    pub async fn open_session_as(&self, auth: &Auth, user_id: &str) -> ParseResult<String> {
        if self.user_by_id(user_id).await?.is_none() {
            return Err(ParseError::new(code::OBJECT_NOT_FOUND, "user not found"));
        }
        let created_with = json!({"action": "login", "authProvider": "masterkey"});
        self.open_session(auth, user_id, created_with).await
    }

    /// `/upgradeToRevocableSession`: oxbase's sessions are all revocable,
    /// so, as Parse Server does for a revocable token, the signed-in user
    /// gets a new session. Answers its token.
    pub async fn upgrade_session(&self, auth: &Auth) -> ParseResult<String> {
        let user = auth
            .user
            .as_ref()
            .ok_or_else(|| ParseError::new(code::OBJECT_NOT_FOUND, "invalid session"))?;
        self.open_session(auth, &user.id, json!({"action": "upgrade"}))
            .await
    }

    async fn open_session(
        &self,
        auth: &Auth,
        user_id: &str,
        created_with: Value,
    ) -> ParseResult<String> {
        let (session, token) = self
            .prepare_session_created_with(
                user_id,
                Some(created_with),
                auth.installation_id.as_deref(),
            )
            .await?;
        self.commit_one(session).await?;
        Ok(token)
    }

    /// Ends the signed-in user's session: it is deleted, and its token
    /// stops working. Answers the session it ended.
    pub async fn log_out(&self, auth: &Auth) -> ParseResult<Option<oxbase_store::Object>> {
        let Some(user) = &auth.user else {
            return Ok(None);
        };
        let session = self
            .find_one(
                "_Session",
                Filter::field(
                    "sessionToken",
                    Condition::Eq(QueryValue::String(user.session_token.clone())),
                ),
            )
            .await?;
        if let Some(id) = session
            .as_ref()
            .and_then(|s| s.get("objectId"))
            .and_then(Value::as_str)
        {
            let delete = self.prepare_delete(&Auth::master(), "_Session", id).await?;
            match self.commit_one(delete).await {
                Ok(_)
                | Err(ParseError::Parse {
                    code: code::OBJECT_NOT_FOUND,
                    ..
                }) => {}
                Err(err) => return Err(err),
            }
        }
        self.sessions.forget(&user.session_token);
        Ok(session)
    }

    /// After writes commit: sessions of deleted users go, and cached
    /// tokens and roles that the writes made stale are forgotten.
    pub async fn after_writes<E>(&self, effects: &[E])
    where
        E: std::borrow::Borrow<WriteEffect>,
    {
        for effect in effects {
            let effect = effect.borrow();
            if let Some(user_id) = &effect.password_changed_for
                && self.settings().revoke_session_on_password_reset
            {
                self.sessions.forget_user(user_id);
                if let Err(err) = self.delete_sessions_of(user_id).await {
                    tracing::warn!(%err, user_id, "cannot end sessions after a password change");
                }
            }
            match (effect.class_name.as_str(), &effect.deleted) {
                ("_Role", _) => self.sessions.clear(),
                ("_User", Some(user_id)) => {
                    self.sessions.forget_user(user_id);
                    if let Err(err) = self.delete_sessions_of(user_id).await {
                        tracing::warn!(%err, user_id, "cannot delete a deleted user's sessions");
                    }
                }
                ("_Session", _) => self.sessions.clear(),
                ("_Installation", _) if !effect.duplicates.is_empty() => {
                    self.remove_duplicate_installations(&effect.duplicates)
                        .await;
                }
                _ => {}
            }
        }
    }

    /// After a user changed their own password, Parse answers with a new
    /// session (the old ones are gone); the master key gets none.
    pub async fn renew_session_after(
        &self,
        auth: &Auth,
        effect: &WriteEffect,
        body: &mut Value,
    ) -> ParseResult<()> {
        let Some(user_id) = &effect.password_changed_for else {
            return Ok(());
        };
        if auth.master {
            return Ok(());
        }
        let (session, token) = self
            .prepare_session(user_id, None, auth.installation_id.as_deref())
            .await?;
        self.commit_one(session).await?;
        body["sessionToken"] = Value::from(token);
        Ok(())
    }

    async fn delete_sessions_of(&self, user_id: &str) -> ParseResult<()> {
        let sessions = self
            .find_all(oxbase_store::Query::new("_Session").filter(Filter::field(
                "user",
                Condition::Eq(QueryValue::Pointer {
                    class_name: "_User".into(),
                    object_id: user_id.to_owned(),
                }),
            )))
            .await?;
        let mut deletes = Vec::new();
        for session in &sessions {
            if let Some(id) = session.get("objectId").and_then(Value::as_str) {
                deletes.push(self.prepare_delete(&Auth::master(), "_Session", id).await?);
            }
        }
        if !deletes.is_empty() {
            self.commit(deletes, false).await?;
        }
        Ok(())
    }
}
