//! Signing in with `authData`, as Parse Server's `RestWrite` and `Auth`
//! do it: `POST /users` with a provider's data logs its user in, or signs
//! up a new user; `PUT /users/<id>` links a provider (`{<provider>: {...}}`)
//! or unlinks it (`{<provider>: null}`). Each provider's data is checked
//! by `providers.rs` before it is trusted, and one provider id belongs to
//! one user only (208, ACCOUNT_ALREADY_LINKED).
//!
//! `authData` is stored as Parse stores it (one `_auth_data_<provider>`
//! key on MongoDB, one JSON column on SQL), and changed one provider at a
//! time, so linking one provider keeps the others.

mod config;
mod jwt;
mod oauth;
mod providers;
mod twitter;

use oxbase_store::{Condition, FieldPath, Filter, Object, QueryValue, UpdateOp};
use serde_json::{Map, Value, json};

pub use self::config::{AuthConfig, ProviderConfig, ProviderKind};
pub(crate) use self::providers::Providers;
use self::providers::unsupported;
use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::layer::PreparedWrite;
use crate::values::ParsedWrite;

/// Providers' data by name; `null` unlinks a provider.
type AuthData = Map<String, Value>;

fn already_linked() -> ParseError {
    ParseError::new(code::ACCOUNT_ALREADY_LINKED, "this auth is already used")
}

/// A username for a user who signed up without one: 25 letters and
/// digits, as Parse's `cryptoUtils.randomString(25)`.
fn random_username() -> String {
    crate::layer::random_string(25)
}

/// Whether any provider has data to sign in with (Parse's `hasAuthData`).
fn signs_in(auth_data: &AuthData) -> bool {
    auth_data
        .values()
        .any(|data| data.as_object().is_some_and(|data| !data.is_empty()))
}

/// The `authData` a REST body sets, checked for shape.
fn auth_data_of(value: &Value) -> ParseResult<AuthData> {
    let Value::Object(auth_data) = value else {
        return Err(unsupported());
    };
    for (provider, data) in auth_data {
        let valid_name = !provider.is_empty()
            && provider
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(unsupported());
        }
        if !(data.is_object() || data.is_null()) {
            return Err(ParseError::new(
                code::INCORRECT_TYPE,
                format!("authData.{provider} must be an object or null"),
            ));
        }
    }
    Ok(auth_data.clone())
}

/// The `authData` a parsed write sets, taken out of its changes.
fn take_auth_data(parsed: &mut ParsedWrite) -> ParseResult<Option<AuthData>> {
    if parsed
        .changes
        .iter()
        .any(|(path, _)| path.field == "authData" && path.is_nested())
    {
        return Err(ParseError::new(
            code::INVALID_KEY_NAME,
            "authData is changed as a whole: {\"authData\": {\"<provider>\": {...}}}",
        ));
    }
    let Some(index) = parsed
        .changes
        .iter()
        .position(|(path, _)| path.field == "authData")
    else {
        return Ok(None);
    };
    let (_, op) = parsed.changes.remove(index);
    match op {
        UpdateOp::Set(value) => auth_data_of(&value).map(Some),
        // Parse refuses saving authData to null the same way.
        _ => Err(unsupported()),
    }
}

/// The providers whose data differs from what the user has; Parse never
/// counts `anonymous` as changed.
fn mutated(requested: &AuthData, stored: Option<&Value>) -> AuthData {
    requested
        .iter()
        .filter(|(provider, _)| *provider != "anonymous")
        .filter(|(provider, data)| {
            let Some(data) = data.as_object() else {
                return true;
            };
            let stored = stored.and_then(|s| s.get(provider.as_str()));
            data.iter()
                .any(|(key, value)| stored.and_then(|s| s.get(key)) != Some(value))
        })
        .map(|(provider, data)| (provider.clone(), data.clone()))
        .collect()
}

/// One change per provider, so that linking one keeps the others; when
/// the last provider goes, `authData` goes, as Parse answers no empty one.
fn auth_data_changes(auth_data: AuthData, stored: Option<&Value>) -> Vec<(FieldPath, UpdateOp)> {
    let kept = stored.and_then(Value::as_object).is_some_and(|stored| {
        stored
            .iter()
            .any(|(provider, data)| !data.is_null() && !auth_data.contains_key(provider))
    });
    if !auth_data.is_empty() && !kept && auth_data.values().all(Value::is_null) {
        return vec![(FieldPath::new("authData"), UpdateOp::Delete)];
    }
    auth_data
        .into_iter()
        .map(|(provider, data)| {
            let path = FieldPath {
                field: "authData".into(),
                nested: vec![provider],
            };
            let op = if data.is_null() {
                UpdateOp::Delete
            } else {
                UpdateOp::Set(data)
            };
            (path, op)
        })
        .collect()
}

fn id_of(user: &Object) -> &str {
    user.get("objectId")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A log-in with `authData` whose checks passed; the session is not open
/// yet, so that a `beforeLogin` hook can still refuse it.
#[derive(Debug)]
pub struct AuthDataLogIn {
    user: Object,
    /// The providers the client signed in with, as `createdWith` names them.
    providers: String,
    /// Providers' data that changed since the user last signed in.
    changed: AuthData,
}

impl AuthDataLogIn {
    /// The user as stored.
    pub fn user(&self) -> &Object {
        &self.user
    }

    pub fn user_id(&self) -> &str {
        id_of(&self.user)
    }
}

/// What sign-up rules let a new user go without.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SignUpWith {
    /// The user signs up with a provider, so needs no password.
    pub(crate) auth_data: bool,
}

impl ObjectLayer {
    /// `POST /users` with the `authData` of an existing user: that user,
    /// once every provider given checked out (Parse's log-in with
    /// `authData`). `None` when the body signs up a new user instead.
    pub async fn auth_data_log_in(
        &self,
        auth: &Auth,
        body: &Map<String, Value>,
    ) -> ParseResult<Option<AuthDataLogIn>> {
        let Some(requested) = body.get("authData") else {
            return Ok(None);
        };
        let mut requested = auth_data_of(requested)?;
        if !signs_in(&requested) {
            return Ok(None);
        }
        self.before_find(&mut requested, None).await?;
        let mut found = self.users_with_auth_data(&requested).await?;
        if !auth.master {
            // Parse's lock-out: a user whose ACL is empty cannot log in.
            found.retain(|user| {
                user.get("ACL")
                    .and_then(Value::as_object)
                    .is_none_or(|acl| !acl.is_empty())
            });
        }
        let Some(user) = found.first() else {
            return Ok(None);
        };
        let someone_else = auth.user_id().is_some_and(|me| me != id_of(user));
        if found.len() > 1 || someone_else {
            // Checked first so that the refusal tells nothing to a client
            // who cannot sign in as that user.
            self.validate_auth_data(&requested).await?;
            return Err(already_linked());
        }
        let user = user.clone();
        self.validate_auth_data(&requested).await?;
        refuse_unchecked_mfa(&user)?;
        let changed = mutated(&requested, user.get("authData"));
        Ok(Some(AuthDataLogIn {
            providers: requested.keys().cloned().collect::<Vec<_>>().join(","),
            user,
            changed,
        }))
    }

    /// Opens the session of a checked log-in, storing the providers' data
    /// that changed: the session token. A user who sent their own session
    /// gets none (`None`): as in Parse Server 9, no session is made and the
    /// answer has no `sessionToken`.
    pub async fn open_auth_data_session(
        &self,
        auth: &Auth,
        login: &AuthDataLogIn,
    ) -> ParseResult<Option<String>> {
        auth.require_writable("create")?;
        let user_id = login.user_id();
        if !login.changed.is_empty() {
            let changes = auth_data_changes(login.changed.clone(), login.user.get("authData"));
            let update = self.prepare_system_update("_User", user_id, changes);
            self.commit_one(update).await?;
        }
        if auth.user_id() == Some(user_id) {
            return Ok(None);
        }
        let (mut session, token) = self
            .prepare_session(user_id, Some("login"), auth.installation_id.as_deref())
            .await?;
        session.set_on_create(
            "createdWith",
            json!({"action": "login", "authProvider": login.providers}),
        );
        self.commit_one(session).await?;
        Ok(Some(token))
    }

    /// Parse Server 9's `createIndexAuthDataUniqueness`: a unique index on
    /// each provider's id in `_User` (the configured providers, and
    /// `anonymous` when it is on), so that of two sign-ups racing with one
    /// id only one succeeds (the other is 208, as in Parse). Made at start
    /// once `_User` exists, and when it is created. As in Parse, an index
    /// that cannot be built (the data already holds duplicates) is logged
    /// and the server carries on without it.
    pub(crate) async fn ensure_auth_data_indexes(&self) {
        let auth = &self.settings().auth;
        let mut providers: Vec<&str> = auth
            .providers
            .iter()
            .filter(|(_, provider)| provider.enabled)
            .map(|(name, _)| name.as_str())
            .collect();
        if auth.enable_anonymous_users && !providers.contains(&"anonymous") {
            providers.push("anonymous");
        }
        for provider in providers {
            if let Err(err) = self.store().ensure_auth_data_uniqueness(provider).await {
                tracing::warn!(provider, %err, "cannot make authData ids of this provider unique");
            }
        }
    }

    /// The first session of a new user: `createdWith` names the providers
    /// the user signed up with, or `password`.
    pub async fn prepare_signup_session(
        &self,
        user: &PreparedWrite,
        installation_id: Option<&str>,
    ) -> ParseResult<(PreparedWrite, String)> {
        let user_id = user.object_id().unwrap_or_default();
        let (mut session, token) = self
            .prepare_session(user_id, Some("signup"), installation_id)
            .await?;
        let providers = user
            .created_object()
            .and_then(|object| object.get("authData"))
            .and_then(Value::as_object)
            .map(|auth_data| auth_data.keys().cloned().collect::<Vec<_>>().join(","))
            .filter(|providers| !providers.is_empty());
        if let Some(providers) = providers {
            session.set_on_create(
                "createdWith",
                json!({"action": "signup", "authProvider": providers}),
            );
        }
        Ok((session, token))
    }

    /// Sign-up rules for `authData`: each provider's data is checked, an id
    /// another user has is refused, and a user signing up with a provider
    /// gets a random username when they give none.
    pub(crate) async fn auth_data_create_rules(
        &self,
        parsed: &mut ParsedWrite,
    ) -> ParseResult<SignUpWith> {
        let Some(mut requested) = take_auth_data(parsed)? else {
            return Ok(SignUpWith::default());
        };
        let with_auth_data = signs_in(&requested);
        if !with_auth_data {
            // Only unlinks (`{anonymous: null}`): nothing to store.
            return Ok(SignUpWith::default());
        }
        self.before_find(&mut requested, None).await?;
        if !self.users_with_auth_data(&requested).await?.is_empty() {
            self.validate_auth_data(&requested).await?;
            return Err(already_linked());
        }
        self.validate_auth_data(&requested).await?;
        let linked: AuthData = requested
            .into_iter()
            .filter(|(_, d)| !d.is_null())
            .collect();
        parsed.changes.push((
            FieldPath::new("authData"),
            UpdateOp::Set(Value::Object(linked)),
        ));
        let has_username = parsed.changes.iter().any(|(path, op)| {
            path.field == "username"
                && matches!(op, UpdateOp::Set(Value::String(s)) if !s.is_empty())
        });
        if !has_username {
            parsed.changes.retain(|(path, _)| path.field != "username");
            parsed.changes.push((
                FieldPath::new("username"),
                UpdateOp::Set(Value::String(random_username())),
            ));
            parsed.echo.push("username".into());
        }
        Ok(SignUpWith {
            auth_data: with_auth_data,
        })
    }

    /// Update rules for `authData` (link and unlink): a provider id another
    /// user has is refused; new or changed providers' data is checked.
    pub(crate) async fn auth_data_update_rules(
        &self,
        object_id: &str,
        parsed: &mut ParsedWrite,
    ) -> ParseResult<()> {
        let Some(mut requested) = take_auth_data(parsed)? else {
            return Ok(());
        };
        let stored = self
            .user_by_id(object_id)
            .await?
            .and_then(|mut user| user.remove("authData"));
        self.before_find(&mut requested, stored.as_ref()).await?;
        let found = self.users_with_auth_data(&requested).await?;
        if found.iter().any(|user| id_of(user) != object_id) {
            self.validate_auth_data(&requested).await?;
            return Err(already_linked());
        }
        // A provider already linked to this user is checked again only if
        // its data changed (the SDK sends linked data back as it got it).
        let changes = if found.is_empty() {
            requested
        } else {
            mutated(&requested, stored.as_ref())
        };
        self.validate_auth_data(&changes).await?;
        parsed
            .changes
            .extend(auth_data_changes(changes, stored.as_ref()));
        Ok(())
    }

    /// Parse's `beforeFind` for each provider given, but for those whose
    /// data is what the user has: the SDK sends linked data back as it got
    /// it, with no code to exchange again. Logging in always runs it.
    async fn before_find(
        &self,
        auth_data: &mut AuthData,
        stored: Option<&Value>,
    ) -> ParseResult<()> {
        for (provider, data) in auth_data.iter_mut() {
            let Value::Object(data) = data else {
                continue;
            };
            let stored = stored.and_then(|stored| stored.get(provider.as_str()));
            let unchanged = stored.is_some()
                && !data.is_empty()
                && data
                    .iter()
                    .all(|(key, value)| stored.and_then(|s| s.get(key)) == Some(value));
            if !unchanged {
                self.providers.before_find(provider, data).await?;
            }
        }
        Ok(())
    }

    /// Checks every linked provider's data, in name order as Parse does so
    /// that errors are the same whatever order the client wrote.
    async fn validate_auth_data(&self, auth_data: &AuthData) -> ParseResult<()> {
        let mut providers: Vec<(&String, &Map<String, Value>)> = auth_data
            .iter()
            .filter_map(|(provider, data)| data.as_object().map(|data| (provider, data)))
            .collect();
        providers.sort_by_key(|(provider, _)| *provider);
        for (provider, data) in providers {
            self.providers.validate(provider, data).await?;
        }
        Ok(())
    }

    /// Users (at most two) holding one of the provider ids given, as
    /// Parse's `findUsersWithAuthData`.
    async fn users_with_auth_data(&self, auth_data: &AuthData) -> ParseResult<Vec<Object>> {
        let mut ids = Vec::new();
        for (provider, data) in auth_data {
            let Some(id) = data.get("id") else {
                continue;
            };
            if !self.providers.knows(provider) {
                continue;
            }
            let Value::String(id) = id else {
                return Err(ParseError::new(
                    code::INVALID_VALUE,
                    format!("Invalid authData id for provider '{provider}'."),
                ));
            };
            ids.push(Filter::field(
                format!("authData.{provider}.id"),
                Condition::Eq(QueryValue::String(id.clone())),
            ));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = oxbase_store::Query::new("_User")
            .filter(Filter::Or(ids))
            .limit(2);
        self.find_raw(&query).await
    }
}

/// A user who enrolled in multi-factor authentication on Parse Server
/// (`authData.mfa`) must give a second factor on every log-in. oxbase
/// cannot check one yet, so it refuses the log-in rather than let the
/// password (or another provider) alone through.
pub(crate) fn refuse_unchecked_mfa(user: &Object) -> ParseResult<()> {
    let enrolled = user
        .get("authData")
        .and_then(|data| data.get("mfa"))
        .is_some_and(|mfa| !mfa.is_null());
    if enrolled {
        return Err(ParseError::new(
            code::UNSUPPORTED_SERVICE,
            "This account uses multi-factor authentication (mfa), which oxbase does not support yet.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: Value) -> AuthData {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn only_changed_providers_are_mutated() {
        let stored = json!({"acme": {"id": "1", "id_token": "a"}, "anonymous": {"id": "x"}});
        let requested = map(json!({
            "acme": {"id": "1"},
            "anonymous": {"id": "y"},
            "other": {"id": "2"},
            "gone": null,
        }));
        let changed = mutated(&requested, Some(&stored));
        let mut names: Vec<&String> = changed.keys().collect();
        names.sort();
        assert_eq!(names, ["gone", "other"]);
        assert!(
            mutated(&map(json!({"acme": {"id_token": "b"}})), Some(&stored)).contains_key("acme")
        );
    }

    #[test]
    fn unlinking_the_last_provider_removes_auth_data() {
        let stored = json!({"acme": {"id": "1"}, "was": null});
        let whole = auth_data_changes(map(json!({"acme": null})), Some(&stored));
        assert_eq!(whole, [(FieldPath::new("authData"), UpdateOp::Delete)]);
        let one = auth_data_changes(map(json!({"other": null})), Some(&stored));
        assert_eq!(
            one,
            [(FieldPath::parse("authData.other"), UpdateOp::Delete)]
        );
        let both = auth_data_changes(map(json!({"acme": null, "b": {"id": "2"}})), Some(&stored));
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn random_usernames_look_like_parse_ones() {
        let name = random_username();
        assert_eq!(name.len(), 25);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(name, random_username());
    }

    #[test]
    fn shapes_are_checked() {
        assert!(auth_data_of(&json!("x")).is_err());
        assert!(auth_data_of(&json!({"a.b": {}})).is_err());
        assert!(auth_data_of(&json!({"acme": 1})).is_err());
        assert!(auth_data_of(&json!({"acme": null, "x": {"id": "1"}})).is_ok());
        assert!(signs_in(&map(json!({"acme": {"id": "1"}}))));
        assert!(!signs_in(&map(json!({"acme": {}, "b": null}))));
    }
}
