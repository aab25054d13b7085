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

mod challenge;
mod code_apis;
mod config;
mod gcenter;
mod jwt;
mod ldap;
mod mfa;
mod oauth;
mod providers;
mod twitter;

use oxbase_store::{Condition, FieldPath, Filter, Object, QueryValue, UpdateOp};
use serde_json::{Map, Value, json};

pub use self::challenge::Challenge;
pub use self::config::{AuthConfig, ProviderConfig, ProviderKind};
pub use self::mfa::redact_auth_data;
use self::mfa::{Checked, Step};
pub(crate) use self::providers::Providers;
use self::providers::{mfa_not_configured, unsupported};
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
    /// Parse's `authDataResponse`: what providers answer the client.
    response: Map<String, Value>,
}

impl AuthDataLogIn {
    /// The user as stored.
    pub fn user(&self) -> &Object {
        &self.user
    }

    pub fn user_id(&self) -> &str {
        id_of(&self.user)
    }

    /// Parse's `authDataResponse`, which its log-in answers.
    pub fn auth_data_response(&self) -> Value {
        Value::Object(self.response.clone())
    }
}

/// The `authData` a password log-in (`/login`) sent, checked: what to
/// store once the log-in goes through (a used-up recovery code), and
/// Parse's `authDataResponse`, answered when the body had `authData`.
#[derive(Debug, Default)]
pub struct LogInAuthData {
    user_id: String,
    stored: Option<Value>,
    changed: AuthData,
    response: Option<Map<String, Value>>,
}

impl LogInAuthData {
    pub fn auth_data_response(&self) -> Option<Value> {
        self.response.clone().map(Value::Object)
    }
}

/// Who providers' data is checked for: Parse hands its adapters the user
/// the data is for, when it knows one, and whether the caller is that
/// user or the master key.
#[derive(Debug, Clone, Copy)]
struct Checking<'a> {
    auth: &'a Auth,
    user: Option<&'a Object>,
    signed_in: bool,
    /// The data comes with a log-in rather than a write to the user.
    logging_in: bool,
}

impl<'a> Checking<'a> {
    fn new(auth: &'a Auth, user: Option<&'a Object>) -> Self {
        let signed_in = user.is_some_and(|user| auth.master || auth.user_id() == Some(id_of(user)));
        Self {
            auth,
            user,
            signed_in,
            logging_in: false,
        }
    }

    fn nobody(auth: &'a Auth) -> Self {
        Self::new(auth, None)
    }

    fn log_in(self) -> Self {
        Self {
            logging_in: true,
            ..self
        }
    }
}

/// Providers' data once checked: what to store (`null` unlinks) and what
/// providers answer (`authDataResponse`).
#[derive(Debug, Default)]
struct Validated {
    auth_data: AuthData,
    response: Map<String, Value>,
}

/// Parse's `additional` policy, which its `mfa` adapter has: a user who
/// enrolled must send `authData.mfa` with every log-in.
fn require_additional(
    providers: &Providers,
    user: &Object,
    requested: &AuthData,
) -> ParseResult<()> {
    let enrolled = user
        .get("authData")
        .and_then(|auth_data| auth_data.get(mfa::PROVIDER))
        .is_some_and(|data| !data.is_null());
    if !enrolled {
        return Ok(());
    }
    if providers.mfa().is_err() {
        return Err(mfa_not_configured());
    }
    if requested.get(mfa::PROVIDER).is_some_and(mfa::truthy) {
        return Ok(());
    }
    Err(ParseError::new(
        code::OTHER_CAUSE,
        format!("Missing additional authData {}", mfa::PROVIDER),
    ))
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
            self.validate_auth_data(&requested, Checking::new(auth, Some(user)))
                .await?;
            return Err(already_linked());
        }
        let user = user.clone();
        require_additional(&self.providers, &user, &requested)?;
        let validated = self
            .validate_auth_data(&requested, Checking::new(auth, Some(&user)).log_in())
            .await?;
        let changed = mutated(&validated.auth_data, user.get("authData"));
        Ok(Some(AuthDataLogIn {
            providers: requested.keys().cloned().collect::<Vec<_>>().join(","),
            user,
            changed,
            response: validated.response,
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
        auth: &Auth,
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
        let found = self.users_with_auth_data(&requested).await?;
        if let Some(user) = found.first() {
            self.validate_auth_data(&requested, Checking::new(auth, Some(user)))
                .await?;
            return Err(already_linked());
        }
        let validated = self
            .validate_auth_data(&requested, Checking::nobody(auth))
            .await?;
        parsed
            .respond
            .insert("authDataResponse".into(), Value::Object(validated.response));
        let linked: AuthData = validated
            .auth_data
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
        auth: &Auth,
        object_id: &str,
        parsed: &mut ParsedWrite,
    ) -> ParseResult<()> {
        let Some(mut requested) = take_auth_data(parsed)? else {
            return Ok(());
        };
        let user = self.user_by_id(object_id).await?;
        let stored = user.as_ref().and_then(|user| user.get("authData")).cloned();
        self.before_find(&mut requested, stored.as_ref()).await?;
        let found = self.users_with_auth_data(&requested).await?;
        if let Some(other) = found.iter().find(|user| id_of(user) != object_id) {
            self.validate_auth_data(&requested, Checking::new(auth, Some(other)))
                .await?;
            return Err(already_linked());
        }
        // A provider already linked to this user is checked again only if
        // its data changed (the SDK sends linked data back as it got it).
        let changes = if found.is_empty() {
            requested
        } else {
            mutated(&requested, stored.as_ref())
        };
        if found.is_empty() || !changes.is_empty() {
            // Parse's adapters see the user only when the caller is them
            // or the master key.
            let checking = Checking::new(auth, user.as_ref());
            let checking = if checking.signed_in {
                checking
            } else {
                Checking::nobody(auth)
            };
            let validated = self.validate_auth_data(&changes, checking).await?;
            parsed
                .respond
                .insert("authDataResponse".into(), Value::Object(validated.response));
            parsed
                .changes
                .extend(auth_data_changes(validated.auth_data, stored.as_ref()));
        }
        Ok(())
    }

    /// `/login`'s `authData`, for a user whose password checked out: an
    /// MFA-enrolled user must send `authData.mfa` (Parse's `additional`
    /// policy), and every provider sent is checked as a log-in.
    pub async fn check_log_in_auth_data(
        &self,
        auth: &Auth,
        user: &Object,
        auth_data: Option<&Value>,
    ) -> ParseResult<LogInAuthData> {
        let sent = auth_data.filter(|data| !data.is_null());
        let requested = match sent {
            Some(Value::Object(requested)) => requested.clone(),
            _ => AuthData::new(),
        };
        require_additional(&self.providers, user, &requested)?;
        let mut checked = LogInAuthData {
            user_id: id_of(user).to_owned(),
            stored: user.get("authData").cloned(),
            ..LogInAuthData::default()
        };
        let Some(sent) = sent else {
            return Ok(checked);
        };
        let requested = auth_data_of(sent)?;
        let validated = self
            .validate_auth_data(&requested, Checking::new(auth, Some(user)).log_in())
            .await?;
        let changed = mutated(&validated.auth_data, checked.stored.as_ref());
        if self
            .users_with_auth_data(&changed)
            .await?
            .iter()
            .any(|other| id_of(other) != checked.user_id)
        {
            return Err(already_linked());
        }
        checked.changed = changed;
        checked.response = Some(validated.response);
        Ok(checked)
    }

    /// Stores what a checked `/login`'s `authData` changed, once hooks let
    /// the log-in through.
    pub async fn store_log_in_auth_data(&self, checked: &LogInAuthData) -> ParseResult<()> {
        if checked.changed.is_empty() {
            return Ok(());
        }
        let changes = auth_data_changes(checked.changed.clone(), checked.stored.as_ref());
        let update = self.prepare_system_update("_User", &checked.user_id, changes);
        self.commit_one(update).await?;
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
    /// that errors are the same whatever order the client wrote: what to
    /// store, and what the providers answer.
    async fn validate_auth_data(
        &self,
        auth_data: &AuthData,
        checking: Checking<'_>,
    ) -> ParseResult<Validated> {
        let mut providers: Vec<(&String, &Value)> = auth_data.iter().collect();
        providers.sort_by_key(|(provider, _)| *provider);
        let mut validated = Validated::default();
        for (provider, data) in providers {
            let Value::Object(data) = data else {
                validated.auth_data.insert(provider.clone(), Value::Null);
                continue;
            };
            let checked = if provider == mfa::PROVIDER {
                self.check_mfa(data, checking)?
            } else {
                // A check may take secrets out of what is stored (LDAP's
                // password).
                let mut data = data.clone();
                self.providers.validate(provider, &mut data).await?;
                Checked::as_given(&data)
            };
            if let Some(response) = checked.response {
                validated.response.insert(provider.clone(), response);
            }
            if let Some(save) = checked.save {
                validated.auth_data.insert(provider.clone(), save);
            }
        }
        Ok(validated)
    }

    /// The `mfa` adapter's step for this user (set up, log in or update).
    fn check_mfa(&self, data: &Map<String, Value>, checking: Checking<'_>) -> ParseResult<Checked> {
        let totp = self.providers.mfa()?;
        let step = Step::of(mfa::PROVIDER, checking.user, checking.signed_in);
        if checking.logging_in && checking.auth.master && step == Step::Update {
            // Parse lets the master key log an enrolled user in unchecked,
            // but then stores the log-in's `{token}` as the user's MFA data,
            // which ends their enrolment; oxbase keeps the data.
            return Ok(Checked::do_not_save());
        }
        let stored = checking
            .user
            .and_then(|user| user.get("authData"))
            .and_then(|auth_data| auth_data.get(mfa::PROVIDER));
        totp.check(step, checking.auth.master, data, stored)
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
    fn enrolled_users_need_mfa_to_log_in() {
        let user = map(json!({"authData": {"mfa": {"secret": "S"}, "anonymous": {"id": "a"}}}));
        let plain = map(json!({"authData": {"anonymous": {"id": "a"}}}));
        let sent = map(json!({"mfa": {"token": "123456"}}));
        let unconfigured = Providers::new(AuthConfig::default());
        assert!(require_additional(&unconfigured, &plain, &AuthData::new()).is_ok());
        // A second factor this server cannot check is refused, not skipped.
        let err = require_additional(&unconfigured, &user, &sent).unwrap_err();
        assert!(err.to_string().starts_with("252: "), "{err}");
        let mut config = AuthConfig::default();
        config.providers.insert(
            "mfa".into(),
            ProviderConfig {
                options: vec!["TOTP".into()],
                ..ProviderConfig::default()
            },
        );
        let configured = Providers::new(config);
        assert!(require_additional(&configured, &user, &sent).is_ok());
        let missing =
            require_additional(&configured, &user, &map(json!({"mfa": null}))).unwrap_err();
        assert_eq!(missing.to_string(), "-1: Missing additional authData mfa");
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
