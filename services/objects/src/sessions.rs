//! Session tokens: who a request is, beyond its keys. Tokens resolve to
//! the user and all their roles, cached briefly so that a signed-in
//! request costs no more than an anonymous one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxbase_store::{Condition, Filter, Object, Query, QueryValue};
use serde_json::Value;

use crate::ObjectLayer;
use crate::auth::SessionUser;
use crate::error::{ParseError, ParseResult, code};

/// How long a resolved token is trusted before the store is asked again.
/// A session revoked by another process stops working within this time;
/// one revoked here stops at once. Parse Server's default cache has the
/// same lifetime.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries kept before expired ones are swept.
const CACHE_SWEEP_AT: usize = 10_000;
/// Roles nest at most this deep; deeper chains (or loops) stop here.
const MAX_ROLE_DEPTH: usize = 20;

#[derive(Default)]
pub struct SessionCache {
    /// Each entry with the instant it stops being trusted.
    entries: Mutex<HashMap<String, (Instant, Arc<SessionUser>)>>,
}

impl SessionCache {
    fn get(&self, token: &str) -> Option<Arc<SessionUser>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(token)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, user)| user.clone())
    }

    /// Trusts a resolved token for `CACHE_TTL`, or until its session
    /// expires if that is sooner.
    fn put(&self, user: Arc<SessionUser>, expires_in: Option<Duration>) {
        let now = Instant::now();
        let until = now + expires_in.map_or(CACHE_TTL, |left| left.min(CACHE_TTL));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_SWEEP_AT {
            entries.retain(|_, (until, _)| now < *until);
        }
        entries.insert(user.session_token.clone(), (until, user));
    }

    /// Forgets one token (logout, session deleted).
    pub(crate) fn forget(&self, token: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(token);
    }

    /// Forgets every token of a user (user deleted, password changed).
    pub(crate) fn forget_user(&self, user_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (_, user)| user.id != user_id);
    }

    /// Forgets everything: roles changed, so any user's roles may have.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

pub fn invalid_token() -> ParseError {
    ParseError::new(code::INVALID_SESSION_TOKEN, "Invalid session token")
}

fn pointer(class_name: &str, object_id: &str) -> QueryValue {
    QueryValue::Pointer {
        class_name: class_name.to_owned(),
        object_id: object_id.to_owned(),
    }
}

impl ObjectLayer {
    /// Forgets every resolved session token, so the next lookups see
    /// role and session changes made by any process.
    pub fn forget_sessions(&self) {
        self.sessions.clear();
    }

    /// The user behind a session token, with their roles.
    pub async fn session_user(&self, token: &str) -> ParseResult<Arc<SessionUser>> {
        if let Some(user) = self.sessions.get(token) {
            return Ok(user);
        }
        let session = self
            .find_one(
                "_Session",
                Filter::field(
                    "sessionToken",
                    Condition::Eq(QueryValue::String(token.to_owned())),
                ),
            )
            .await?
            .ok_or_else(invalid_token)?;
        let expires_at = session
            .get("expiresAt")
            .and_then(|d| d.get("iso"))
            .and_then(Value::as_str)
            .and_then(|iso| chrono::DateTime::parse_from_rfc3339(iso).ok());
        // `None` once the expiry has passed.
        let expires_in = expires_at.and_then(|at| {
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        });
        if expires_at.is_some() && expires_in.is_none() {
            return Err(ParseError::new(
                code::INVALID_SESSION_TOKEN,
                "Session token is expired.",
            ));
        }
        let user_id = session
            .get("user")
            .and_then(|u| u.get("objectId"))
            .and_then(Value::as_str)
            .ok_or_else(invalid_token)?;
        let user = self.user_by_id(user_id).await?.ok_or_else(invalid_token)?;
        let anonymous = user
            .get("authData")
            .and_then(|a| a.get("anonymous"))
            .is_some_and(|a| !a.is_null());
        let resolved = Arc::new(SessionUser {
            id: user_id.to_owned(),
            session_token: token.to_owned(),
            anonymous,
            roles: self.roles_of(user_id).await?,
        });
        self.sessions.put(resolved.clone(), expires_in);
        Ok(resolved)
    }

    /// One object of a system class, read with master rights.
    pub async fn find_one(&self, class_name: &str, filter: Filter) -> ParseResult<Option<Object>> {
        Ok(self
            .find_all(Query::new(class_name).filter(filter).limit(1))
            .await?
            .into_iter()
            .next())
    }

    /// A user as stored, internal fields included.
    pub(crate) async fn user_by_id(&self, user_id: &str) -> ParseResult<Option<Object>> {
        let by_id = Condition::Eq(QueryValue::String(user_id.to_owned()));
        self.find_one("_User", Filter::field("objectId", by_id))
            .await
    }

    pub async fn find_all(&self, query: Query) -> ParseResult<Vec<Object>> {
        self.find_raw(&query).await
    }

    /// `role:Name` of the roles whose `users` hold the user, and of the
    /// roles whose `roles` hold those, to any depth.
    async fn roles_of(&self, user_id: &str) -> ParseResult<Vec<String>> {
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        let mut frontier = Filter::field("users", Condition::Eq(pointer("_User", user_id)));
        for _ in 0..MAX_ROLE_DEPTH {
            let mut query = Query::new("_Role").filter(frontier);
            query.keys = Some(vec!["name".into()]);
            let found = self.find_all(query).await?;
            let mut next = Vec::new();
            for role in found {
                let (Some(id), Some(name)) = (
                    role.get("objectId").and_then(Value::as_str),
                    role.get("name").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if seen.insert(id.to_owned()) {
                    names.push(format!("role:{name}"));
                    next.push(pointer("_Role", id));
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = Filter::field("roles", Condition::In(next));
        }
        Ok(names)
    }
}
