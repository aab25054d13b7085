//! `POST /challenge`, as Parse Server 9's `handleChallenge`: the client
//! names the user (username or email and password, or the `authData` of
//! one provider with an id), and each provider named in `challengeData`
//! answers its challenge before the real log-in (a WebAuthn nonce, say).
//! None of Parse's built-in adapters, and so none of oxbase's providers,
//! has a challenge step, so a client that identified itself gets
//! `{"challengeData": {}}`, as from Parse Server.

use serde_json::{Map, Value, json};

use super::mfa::truthy;
use super::{AuthData, Checking};
use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};

fn other(message: impl Into<String>) -> ParseError {
    ParseError::new(code::OTHER_CAUSE, message)
}

fn user_not_found() -> ParseError {
    ParseError::new(code::OBJECT_NOT_FOUND, "User not found.")
}

/// A `/challenge` request's way of naming its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// Username (or email) and password, to check as a log-in's first.
    Password,
    /// `authData`, or nobody.
    AuthData,
}

impl Challenge {
    /// How the body names its user: a username or email needs a password.
    pub fn of(body: &Map<String, Value>) -> ParseResult<Self> {
        let given = |key: &str| body.get(key).is_some_and(truthy);
        if !(given("username") || given("email")) {
            return Ok(Self::AuthData);
        }
        if !given("password") {
            return Err(other(
                "You provided username or email, you need to also provide password.",
            ));
        }
        Ok(Self::Password)
    }
}

impl ObjectLayer {
    /// The rest of `/challenge` once a username and password, if given,
    /// checked out (`by_password`): the reply.
    pub async fn challenge(
        &self,
        auth: &Auth,
        body: &Map<String, Value>,
        by_password: bool,
    ) -> ParseResult<Value> {
        let challenge_data = body
            .get("challengeData")
            .filter(|data| truthy(data))
            .ok_or_else(|| other("Nothing to challenge."))?;
        // An array is an object to Parse's check.
        if !(challenge_data.is_object() || challenge_data.is_array()) {
            return Err(other("challengeData should be an object."));
        }
        if let Some(auth_data) = body.get("authData").filter(|data| truthy(data)) {
            let auth_data = match auth_data {
                Value::Object(data) => data.clone(),
                Value::Array(items) => indexed(items),
                _ => return Err(other("authData should be an object.")),
            };
            if by_password {
                return Err(other(
                    "You cannot provide username/email and authData, only use one identification method.",
                ));
            }
            self.challenged_user(auth, &auth_data).await?;
        }
        // Parse then asks each provider named in `challengeData` for its
        // `challenge`, in name order; no provider oxbase checks has that
        // step, so none contributes an answer.
        Ok(json!({ "challengeData": {} }))
    }

    /// The user the `authData` names by one provider's id, whose data must
    /// check out; every failure is "User not found.", so that ids cannot
    /// be guessed.
    async fn challenged_user(&self, auth: &Auth, auth_data: &AuthData) -> ParseResult<()> {
        for (provider, data) in auth_data {
            if !(data.is_null() || data.is_object()) {
                return Err(other(format!("authData.{provider} should be an object.")));
            }
        }
        let with_id: Vec<&String> = auth_data
            .iter()
            .filter(|(_, data)| data.get("id").is_some_and(truthy))
            .map(|(provider, _)| provider)
            .collect();
        if with_id.len() > 1 {
            return Err(other(
                "You cannot provide more than one authData provider with an id.",
            ));
        }
        let found = self.users_with_auth_data(auth_data).await?;
        let (Some(provider), [user]) = (with_id.first(), found.as_slice()) else {
            return Err(user_not_found());
        };
        let data = AuthData::from_iter([((*provider).clone(), auth_data[*provider].clone())]);
        match self
            .validate_auth_data(&data, Checking::new(auth, Some(user)))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                tracing::info!(%err, provider, "a challenge's authData did not check out");
                Err(user_not_found())
            }
        }
    }
}

/// A JavaScript array seen as the object Parse's checks see: its indexes
/// are its keys.
fn indexed(items: &[Value]) -> Map<String, Value> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| (index.to_string(), item.clone()))
        .collect()
}
