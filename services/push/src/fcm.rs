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

/// The wait after the token endpoint first refuses the key, doubling with
/// each refusal up to [`REFUSED_MAX`]. A refused key stays refused until
/// someone replaces it: asking again for every message would hold each one
/// for a round trip, and flood the endpoint.
const REFUSED_FIRST: Duration = Duration::from_secs(1);
const REFUSED_MAX: Duration = Duration::from_secs(60);

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
    #[error("{refusal} (not asked again for {}s)", left.as_secs().max(1))]
    Waiting { refusal: String, left: Duration },
}

/// The access token, and the last refusal of the key.
#[derive(Debug, Default)]
struct TokenState {
    token: Option<(String, Instant)>,
    refused: Option<Refusal>,
}

#[derive(Debug)]
struct Refusal {
    error: String,
    wait: Duration,
    until: Instant,
}

impl TokenState {
    /// The error to fail with at `now` without asking, while the last
    /// refusal's wait runs.
    fn waiting(&self, now: Instant) -> Option<TokenError> {
        let refused = self.refused.as_ref()?;
        (now < refused.until).then(|| TokenError::Waiting {
            refusal: refused.error.clone(),
            left: refused.until - now,
        })
    }

    /// Notes a refusal of the key at `now`.
    fn refuse(&mut self, error: &TokenError, now: Instant) {
        let wait = self
            .refused
            .as_ref()
            .map_or(REFUSED_FIRST, |last| (last.wait * 2).min(REFUSED_MAX));
        self.refused = Some(Refusal {
            error: error.to_string(),
            wait,
            until: now + wait,
        });
    }

    fn grant(&mut self, token: &str, until: Instant) {
        self.token = Some((token.to_owned(), until));
        self.refused = None;
    }
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
    token: Mutex<TokenState>,
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
            token: Mutex::new(TokenState::default()),
        }))
    }

    /// A valid access token: the cached one, or a new one. After the
    /// endpoint refused the key, fails at once until its wait is over.
    async fn access_token(&self, renew: bool) -> Result<String, TokenError> {
        let mut state = self.token.lock().await;
        if let Some((token, until)) = state.token.as_ref()
            && !renew
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        if let Some(waiting) = state.waiting(Instant::now()) {
            return Err(waiting);
        }
        match self.request_token().await {
            Ok((token, until)) => {
                state.grant(&token, until);
                Ok(token)
            }
            Err(err) => {
                if let TokenError::Refused { status, .. } = &err
                    && status.is_client_error()
                {
                    state.refuse(&err, Instant::now());
                }
                Err(err)
            }
        }
    }

    /// Exchanges a signed assertion for an access token at the key's
    /// `token_uri`; the token and when to renew it.
    async fn request_token(&self) -> Result<(String, Instant), TokenError> {
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
        let answer: Value = match response.json().await {
            Ok(answer) => answer,
            Err(err) if status.is_success() => return Err(TokenError::Endpoint(err)),
            // A refusal is one whatever its body.
            Err(_) => Value::Null,
        };
        let Some(token) = answer["access_token"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            return Err(TokenError::Refused { status, answer });
        };
        let lifetime = answer["expires_in"].as_u64().unwrap_or(3600);
        // Renewed a minute early: a token must not expire in flight.
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        Ok((token.to_owned(), until))
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
    use std::sync::atomic::Ordering;

    use oxbase_push_fakes::{FakeFcm, Options};

    use super::*;

    fn refusal() -> TokenError {
        TokenError::Refused {
            status: reqwest::StatusCode::BAD_REQUEST,
            answer: json!({"error": "invalid_grant"}),
        }
    }

    #[test]
    fn refusals_wait_longer_each_time_up_to_a_minute_until_a_grant() {
        let mut state = TokenState::default();
        let start = Instant::now();
        assert!(state.waiting(start).is_none());
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..9 {
            state.refuse(&refusal(), now);
            let Some(TokenError::Waiting { refusal, left }) = state.waiting(now) else {
                panic!("not waiting after a refusal");
            };
            assert!(refusal.contains("invalid_grant"), "{refusal}");
            waits.push(left.as_secs());
            now += left;
            assert!(state.waiting(now).is_none(), "still waiting once it ran");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        state.refuse(&refusal(), now);
        state.grant("token", now + Duration::from_secs(3000));
        assert!(state.waiting(now).is_none());
        state.refuse(&refusal(), now);
        assert_eq!(state.refused.as_ref().unwrap().wait, REFUSED_FIRST);
    }

    async fn client(fake: &FakeFcm, dir: &tempfile::TempDir) -> Fcm {
        let account = dir.path().join("service-account.json");
        std::fs::write(&account, fake.service_account().to_string()).unwrap();
        let config = FcmConfig {
            service_account: Some(account),
            endpoint: fake.base.clone(),
        };
        Fcm::from_config(&config).unwrap().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_key_is_not_asked_for_again_per_message() {
        const MESSAGES: usize = 500;
        let fake = FakeFcm::start(Options::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let fcm = client(&fake, &dir).await;
        let message = Message::new(Map::new());
        fake.refuse_key.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let deliveries = futures_util::future::join_all((0..MESSAGES).map(|n| {
            let (fcm, message) = (&fcm, &message);
            async move { fcm.send(&format!("t-{n}"), message).await }
        }))
        .await;
        let elapsed = started.elapsed();
        for delivery in &deliveries {
            let Delivery::Failed(error) = delivery else {
                panic!("{delivery:?}");
            };
            assert!(error.contains("invalid_grant"), "{error}");
        }
        // One request, and at most one more per second of backoff gone by.
        let requests = fake.token_requests.load(Ordering::Relaxed);
        assert!(
            requests <= 1 + elapsed.as_secs() as usize,
            "{requests} token requests for {MESSAGES} messages in {elapsed:?}"
        );

        // Once the key is accepted again, the next message after the wait
        // gets a token.
        fake.refuse_key.store(false, Ordering::Relaxed);
        let waiting = fcm.token.lock().await.waiting(Instant::now());
        if let Some(TokenError::Waiting { left, .. }) = waiting {
            tokio::time::sleep(left).await;
        }
        assert_eq!(fcm.send("t", &message).await, Delivery::Sent);
        assert_eq!(fake.tokens_minted.load(Ordering::Relaxed), 1);
    }

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
