//! Firebase Cloud Messaging, HTTP v1: an OAuth2 access token minted from
//! the service account's key (a JWT signed RS256, exchanged at its
//! `token_uri`) and cached until shortly before it expires, then one
//! `POST /v1/projects/<project>/messages:send` per device. The legacy
//! endpoint the `fcm` crate speaks was shut down in 2024.

use std::time::{Duration, Instant};

use crate::config::FcmConfig;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::service::Delivery;
use crate::{ATTEMPTS, Backoff, PushError};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    // ring's error carries no cause, and is `std::error::Error` only with
    // its `std` feature.
    #[error("cannot sign the FCM token request")]
    Sign(ring::error::Unspecified),
    #[error("FCM token endpoint: {0}")]
    Endpoint(#[source] reqwest::Error),
    #[error("FCM token endpoint answered {status}: {answer}")]
    Refused {
        status: reqwest::StatusCode,
        answer: Value,
    },
}

#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    token_uri: String,
}

pub struct Fcm {
    http: reqwest::Client,
    project_id: String,
    client_email: String,
    token_uri: String,
    key: RsaKeyPair,
    endpoint: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("project_id", &self.project_id)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn config_error(what: impl std::fmt::Display) -> PushError {
    PushError::Config(format!("push.fcm: {what}"))
}

impl Fcm {
    /// The configured client; `None` without a service account.
    pub fn from_config(config: &FcmConfig) -> Result<Option<Self>, PushError> {
        let Some(path) = &config.service_account else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
        let account: ServiceAccount = serde_json::from_str(&text).map_err(|e| {
            config_error(format!(
                "{} is not a service account key: {e}",
                path.display()
            ))
        })?;
        let der: String = account
            .private_key
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(der.trim())
            .map_err(|e| config_error(format!("the private key is not PEM: {e}")))?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| config_error(format!("the private key is not a PKCS#8 RSA key: {e}")))?;
        Ok(Some(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(config_error)?,
            project_id: account.project_id,
            client_email: account.client_email,
            token_uri: account.token_uri,
            key,
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
            token: Mutex::new(None),
        }))
    }

    /// A valid access token: the cached one, or a new one.
    async fn access_token(&self, renew: bool) -> Result<String, TokenError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && !renew
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let assertion = self.assertion()?;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let response = self
            .http
            .post(&self.token_uri)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(TokenError::Endpoint)?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(TokenError::Endpoint)?;
        let Some(token) = answer["access_token"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            return Err(TokenError::Refused { status, answer });
        };
        let lifetime = answer["expires_in"].as_u64().unwrap_or(3600);
        // Renewed a minute early: a token must not expire in flight.
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        *cached = Some((token.to_owned(), until));
        Ok(token.to_owned())
    }

    /// The signed JWT the token endpoint exchanges for an access token.
    fn assertion(&self) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(TokenError::Sign)?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// Sends one message, retrying 429 and 5xx with backoff.
    pub(crate) async fn send(&self, token: &str, message: &Message) -> Delivery {
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.endpoint, self.project_id
        );
        let body = message.body(token);
        let mut backoff = Backoff::default();
        let mut renew = false;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let access = match self.access_token(renew).await {
                Ok(access) => access,
                Err(err) => return Delivery::Failed(err.to_string()),
            };
            let response = self
                .http
                .post(&url)
                .bearer_auth(access)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(err) => {
                    last = format!("FCM: {err}");
                    backoff.wait().await;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Delivery::Sent;
            }
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let error = &answer["error"];
            let code = error["details"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|detail| detail["errorCode"].as_str())
                .or_else(|| error["status"].as_str())
                .unwrap_or("")
                .to_owned();
            last = format!("FCM answered {status} {code}");
            match status.as_u16() {
                _ if code == "UNREGISTERED" => return Delivery::Dead,
                401 if !renew => renew = true,
                429 | 500..=599 if attempt < ATTEMPTS => {
                    backoff.wait().await;
                }
                _ => return Delivery::Failed(last),
            }
        }
        Delivery::Failed(last)
    }
}

/// A message to every device of a batch, serialized once: each device's
/// body only adds its token.
#[derive(Debug)]
pub(crate) struct Message {
    /// The message object without its opening brace.
    rest: String,
}

impl Message {
    pub(crate) fn new(message: Map<String, Value>) -> Self {
        let text = Value::Object(message).to_string();
        Self {
            rest: text[1..].to_owned(),
        }
    }

    fn body(&self, token: &str) -> bytes::Bytes {
        let token = Value::String(token.to_owned()).to_string();
        let comma = if self.rest == "}" { "" } else { "," };
        format!("{{\"message\":{{\"token\":{token}{comma}{}}}", self.rest).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_body_is_the_message_with_its_token() {
        let Value::Object(message) = json!({"data": {"a": "\"1\""}, "android": {}}) else {
            unreachable!()
        };
        let body: Value = serde_json::from_slice(&Message::new(message).body("t\"x")).unwrap();
        assert_eq!(
            body,
            json!({"message": {"token": "t\"x", "data": {"a": "\"1\""}, "android": {}}})
        );
        let body: Value = serde_json::from_slice(&Message::new(Map::new()).body("t")).unwrap();
        assert_eq!(body, json!({"message": {"token": "t"}}));
    }
}
