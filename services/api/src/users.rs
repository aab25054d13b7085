//! Users, sessions and roles: sign-up, log-in and log-out, the rules
//! Parse applies to writes on `_User`, `_Session` and `_Role`, and the
//! routes that are not plain class routes (`/users/me`, `/login`...).

use axum::http::StatusCode;
use chrono::Utc;
use oxbase_store::query::RegexSpec;
use oxbase_store::{Condition, FieldPath, Filter, Object, QueryValue, UpdateOp};
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::App;
use crate::auth::Auth;
use crate::db::{Database, PreparedWrite, WriteReply};
use crate::error::{ApiError, ApiResult, code};
use crate::query::FindOptions;
use crate::request::ParseRequest;
use crate::routes::Reply;
use crate::sessions::invalid_token;
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

async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

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

fn set_string(parsed: &ParsedWrite, field: &str) -> ApiResult<Option<String>> {
    match set_value(parsed, field) {
        None => Ok(None),
        Some(UpdateOp::Set(Value::String(s))) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::new(
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

impl Database {
    /// Sign-up: a username and password are required, the email must look
    /// like one, and neither may belong to another user. The password is
    /// stored only as its bcrypt hash.
    pub(crate) async fn user_create_rules(
        &self,
        object_id: &str,
        parsed: &mut ParsedWrite,
    ) -> ApiResult<()> {
        reject_auth_data(parsed)?;
        let username = set_string(parsed, "username")?.filter(|u| !u.is_empty());
        if username.is_none() {
            return Err(ApiError::new(
                code::USERNAME_MISSING,
                "bad or missing username",
            ));
        }
        let password = set_string(parsed, "password")?.filter(|p| !p.is_empty());
        if password.is_none() {
            return Err(ApiError::new(
                code::PASSWORD_MISSING,
                "password is required",
            ));
        }
        self.check_user_fields(None, parsed).await?;
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
        self.hash_password_change(parsed).await
    }

    /// Only a signed-in user (or the master key) may change a user, and the
    /// user's ACL decides which; usernames and
    /// emails stay unique, and a new password is hashed.
    pub(crate) async fn user_update_rules(
        &self,
        auth: &Auth,
        object_id: &str,
        parsed: &mut ParsedWrite,
    ) -> ApiResult<()> {
        // Another user is refused by the user's ACL, as in Parse Server.
        if !auth.master && auth.user.is_none() {
            return Err(ApiError::new(
                code::SESSION_MISSING,
                format!("Cannot modify user {object_id}."),
            ));
        }
        reject_auth_data(parsed)?;
        if let Some(UpdateOp::Delete) = set_value(parsed, "username") {
            return Err(ApiError::new(
                code::USERNAME_MISSING,
                "bad or missing username",
            ));
        }
        if set_string(parsed, "username")?.is_some_and(|u| u.is_empty()) {
            return Err(ApiError::new(
                code::USERNAME_MISSING,
                "bad or missing username",
            ));
        }
        if set_string(parsed, "password")?.is_some_and(|p| p.is_empty()) {
            return Err(ApiError::new(
                code::PASSWORD_MISSING,
                "password is required",
            ));
        }
        self.check_user_fields(Some(object_id), parsed).await?;
        self.hash_password_change(parsed).await
    }

    async fn check_user_fields(&self, own_id: Option<&str>, parsed: &ParsedWrite) -> ApiResult<()> {
        let taken = |field: &'static str, value: String| async move {
            let mut filter = same_text(field, &value);
            if let Some(own_id) = own_id {
                filter = filter.and(Filter::field(
                    "objectId",
                    Condition::Ne(QueryValue::String(own_id.to_owned())),
                ));
            }
            let query = oxbase_store::Query::new("_User").filter(filter).limit(1);
            Ok::<bool, ApiError>(!self.find_raw(&query).await?.is_empty())
        };
        if let Some(username) = set_string(parsed, "username")?
            && taken("username", username).await?
        {
            return Err(ApiError::new(
                code::USERNAME_TAKEN,
                "Account already exists for this username.",
            ));
        }
        if let Some(email) = set_string(parsed, "email")? {
            if !is_email(&email) {
                return Err(ApiError::new(
                    code::INVALID_EMAIL_ADDRESS,
                    "Email address format is invalid.",
                ));
            }
            if taken("email", email).await? {
                return Err(ApiError::new(
                    code::EMAIL_TAKEN,
                    "Account already exists for this email address.",
                ));
            }
        }
        Ok(())
    }

    /// Replaces a `password` change by its hash in `_hashed_password`.
    async fn hash_password_change(&self, parsed: &mut ParsedWrite) -> ApiResult<()> {
        let Some(index) = parsed
            .changes
            .iter()
            .position(|(path, _)| path.field == "password")
        else {
            return Ok(());
        };
        let (_, op) = parsed.changes.remove(index);
        let UpdateOp::Set(Value::String(password)) = op else {
            return Err(ApiError::new(
                code::INCORRECT_TYPE,
                "password must be a string",
            ));
        };
        let hash = hash_password(password).await?;
        parsed.changes.push((
            FieldPath::new("_hashed_password"),
            UpdateOp::Set(Value::String(hash)),
        ));
        parsed.types.remove("password");
        Ok(())
    }

    /// A new session for a user, valid for the configured session length.
    /// `action` is how it was made (`createdWith`), when Parse records one.
    pub(crate) async fn prepare_session(
        &self,
        user_id: &str,
        action: Option<&str>,
        installation_id: Option<&str>,
        session_length_secs: u64,
    ) -> ApiResult<(PreparedWrite, String)> {
        let token = new_session_token();
        let expires = Utc::now()
            + chrono::Duration::seconds(i64::try_from(session_length_secs).unwrap_or(i64::MAX / 2));
        let mut body = Map::new();
        body.insert("sessionToken".into(), Value::from(token.clone()));
        body.insert(
            "user".into(),
            json!({"__type": "Pointer", "className": "_User", "objectId": user_id}),
        );
        if let Some(action) = action {
            body.insert(
                "createdWith".into(),
                json!({"action": action, "authProvider": "password"}),
            );
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

fn reject_auth_data(parsed: &ParsedWrite) -> ApiResult<()> {
    if set_value(parsed, "authData").is_some() {
        return Err(ApiError::not_supported("Signing in with authData"));
    }
    Ok(())
}

fn role_name_error(message: &str) -> ApiError {
    ApiError::new(code::INVALID_ROLE_NAME, message)
}

/// A role needs a name of letters, digits, `_`, `-` and spaces.
pub fn role_create_rules(parsed: &ParsedWrite) -> ApiResult<()> {
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
pub fn role_update_rules(parsed: &ParsedWrite) -> ApiResult<()> {
    if set_value(parsed, "name").is_some() {
        return Err(role_name_error(
            "A role's name can only be set before it has been saved.",
        ));
    }
    Ok(())
}

/// A client may not move a session to another user or change its token.
pub fn session_update_rules(auth: &Auth, parsed: &ParsedWrite) -> ApiResult<()> {
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
            return Err(ApiError::new(
                code::INVALID_KEY_NAME,
                format!("Cannot change a session's {field}."),
            ));
        }
    }
    Ok(())
}

fn text_param<'a>(req: &'a ParseRequest, key: &str) -> Option<&'a str> {
    req.params
        .get(key)
        .or_else(|| req.body.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl App {
    /// `POST /users` (and `POST /classes/_User`): the user and its first
    /// session are created together.
    pub(crate) async fn signup(&self, auth: &Auth, req: &ParseRequest) -> ApiResult<Reply> {
        let user = self.prepare_create(auth, req, "_User").await?;
        let user_id = user.object_id().unwrap_or_default().to_owned();
        let (session, token) = self
            .db
            .prepare_session(
                &user_id,
                Some("signup"),
                auth.installation_id.as_deref(),
                self.session_length_secs,
            )
            .await?;
        let mut replies = self.db.commit(vec![user, session], true).await?;
        replies.truncate(1);
        let Some(Ok(WriteReply::Created { mut body, .. })) = replies.pop() else {
            return Err(ApiError::internal("sign-up committed without a result"));
        };
        body["sessionToken"] = Value::from(token);
        Ok(Reply {
            status: StatusCode::CREATED,
            body,
            location: Some(format!("{}{}/users/{user_id}", req.origin, self.mount)),
            headers: Vec::new(),
        })
    }

    /// `GET` or `POST /login`.
    pub(crate) async fn login(&self, auth: &Auth, req: &ParseRequest) -> ApiResult<Reply> {
        let username = text_param(req, "username");
        let email = text_param(req, "email");
        let password = req
            .params
            .get("password")
            .or_else(|| req.body.get("password"))
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty());
        let filter = match (username, email) {
            (Some(username), _) => Filter::field(
                "username",
                Condition::Eq(QueryValue::String(username.to_owned())),
            ),
            (None, Some(email)) => {
                Filter::field("email", Condition::Eq(QueryValue::String(email.to_owned())))
            }
            (None, None) => {
                return Err(ApiError::new(
                    code::USERNAME_MISSING,
                    "username/email is required.",
                ));
            }
        };
        let password = password
            .ok_or_else(|| ApiError::new(code::PASSWORD_MISSING, "password is required."))?;
        let wrong = || ApiError::new(code::OBJECT_NOT_FOUND, "Invalid username/password.");
        let user = self.find_one("_User", filter).await?.ok_or_else(wrong)?;
        let hash = user
            .get("_hashed_password")
            .and_then(Value::as_str)
            .ok_or_else(wrong)?;
        if !verify_password(password.to_owned(), hash.to_owned()).await {
            return Err(wrong());
        }
        let user_id = user
            .get("objectId")
            .and_then(Value::as_str)
            .ok_or_else(wrong)?
            .to_owned();
        auth.require_writable("create")?;
        let (session, token) = self
            .db
            .prepare_session(
                &user_id,
                Some("login"),
                auth.installation_id.as_deref(),
                self.session_length_secs,
            )
            .await?;
        self.db.commit_one(session).await?;
        self.user_reply(req, &user_id, token).await
    }

    /// The user's own object with their session token, as `/login` and
    /// `/users/me` answer.
    async fn user_reply(
        &self,
        req: &ParseRequest,
        user_id: &str,
        token: String,
    ) -> ApiResult<Reply> {
        let mut object: Object = self
            .db
            .get(
                &Auth::master(),
                "_User",
                user_id,
                &FindOptions::for_get(&Map::new(), self.db.limits())?,
            )
            .await?;
        object.insert("sessionToken".into(), Value::from(token));
        let mut objects = [object];
        self.expand_files(req, &mut objects);
        let [object] = objects;
        Ok(Reply::ok(Value::Object(object)))
    }

    /// `GET /users/me`.
    pub(crate) async fn me(&self, auth: &Auth, req: &ParseRequest) -> ApiResult<Reply> {
        let user = auth.user.as_ref().ok_or_else(invalid_token)?;
        self.user_reply(req, &user.id, user.session_token.clone())
            .await
    }

    /// `POST /logout`: the session is deleted; its token stops working.
    pub(crate) async fn logout(&self, auth: &Auth) -> ApiResult<Reply> {
        if let Some(user) = &auth.user {
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
                let delete = self
                    .db
                    .prepare_delete(&Auth::master(), "_Session", id)
                    .await?;
                match self.db.commit_one(delete).await {
                    Ok(_)
                    | Err(ApiError::Parse {
                        code: code::OBJECT_NOT_FOUND,
                        ..
                    }) => {}
                    Err(err) => return Err(err),
                }
            }
            self.sessions.forget(&user.session_token);
        }
        Ok(Reply::ok(json!({})))
    }

    /// `GET /sessions/me`.
    pub(crate) async fn session_me(&self, auth: &Auth, req: &ParseRequest) -> ApiResult<Reply> {
        let user = auth.user.as_ref().ok_or_else(invalid_token)?;
        let mut options = FindOptions::for_find(&req.params, self.db.limits())?;
        options.filter = Filter::field(
            "sessionToken",
            Condition::Eq(QueryValue::String(user.session_token.clone())),
        );
        let (mut found, _) = self.db.find(auth, "_Session", &options).await?;
        let session = found.pop().ok_or_else(invalid_token)?;
        Ok(Reply::ok(Value::Object(session)))
    }

    /// After writes commit: sessions of deleted users go, and cached
    /// tokens and roles that the writes made stale are forgotten.
    pub(crate) async fn after_writes<E>(&self, effects: &[E])
    where
        E: std::borrow::Borrow<crate::routes::WriteEffect>,
    {
        for effect in effects {
            let effect = effect.borrow();
            if let Some(user_id) = &effect.password_changed_for
                && self.revoke_session_on_password_reset
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
    pub(crate) async fn renew_session_after(
        &self,
        auth: &Auth,
        effect: &crate::routes::WriteEffect,
        body: &mut Value,
    ) -> ApiResult<()> {
        let Some(user_id) = &effect.password_changed_for else {
            return Ok(());
        };
        if auth.master {
            return Ok(());
        }
        let (session, token) = self
            .db
            .prepare_session(
                user_id,
                None,
                auth.installation_id.as_deref(),
                self.session_length_secs,
            )
            .await?;
        self.db.commit_one(session).await?;
        body["sessionToken"] = Value::from(token);
        Ok(())
    }

    async fn delete_sessions_of(&self, user_id: &str) -> ApiResult<()> {
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
                deletes.push(
                    self.db
                        .prepare_delete(&Auth::master(), "_Session", id)
                        .await?,
                );
            }
        }
        if !deletes.is_empty() {
            self.db.commit(deletes, false).await?;
        }
        Ok(())
    }
}
