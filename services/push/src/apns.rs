//! Apple Push Notification service, HTTP/2.
//!
//! a2 builds the `aps` payload and reads Apple's answers. Its client only
//! reaches Apple's two hosts and its token signer is private, so requests
//! go through reqwest's HTTP/2 client instead (its endpoint is
//! configurable, and one connection per host carries every request at
//! once), with a provider token signed here: ES256, renewed within Apple's
//! 20 to 60 minute window.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::config::ApnsConfig;
use a2::request::notification::{
    DefaultNotificationBuilder, NotificationBuilder, NotificationOptions,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use oxbase_proto::push::{PushBatch, PushDevice};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Map, Value, json};

use crate::service::Delivery;
use crate::{ATTEMPTS, Backoff, PushError};

/// Apple refuses a provider token older than an hour, and one renewed
/// more often than every 20 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

pub struct Apns {
    http: reqwest::Client,
    endpoint: String,
    topic: Option<String>,
    /// `None` with certificate auth: the TLS client certificate is the
    /// credential.
    signer: Option<Signer>,
}

/// Why the provider token cannot be made.
#[derive(Debug, thiserror::Error)]
enum SignerError {
    #[error("not PEM: {0}")]
    NotPem(#[source] base64::DecodeError),
    // ring's errors carry no cause, and are `std::error::Error` only with
    // its `std` feature: kept for their text.
    #[error("not a P-256 PKCS#8 key: {0}")]
    NotP256(ring::error::KeyRejected),
    #[error("cannot sign the APNs provider token")]
    Sign(ring::error::Unspecified),
}

/// Why a device has no topic to be sent on.
#[derive(Debug, thiserror::Error)]
enum TopicError {
    #[error("no APNs configuration for appIdentifier {0:?}")]
    OtherApp(String),
    #[error("no APNs topic: set push.apns.topic or the installation's appIdentifier")]
    Missing,
}

/// Signs the provider token and reuses it for [`TOKEN_LIFETIME`].
struct Signer {
    key: EcdsaKeyPair,
    key_id: String,
    team_id: String,
    token: RwLock<(String, Instant)>,
}

impl Signer {
    fn new(pem: &[u8], key_id: &str, team_id: &str) -> Result<Self, SignerError> {
        let text = String::from_utf8_lossy(pem);
        let der: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(der.trim()).map_err(SignerError::NotPem)?;
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(SignerError::NotP256)?;
        let token = sign(&key, key_id, team_id)?;
        Ok(Self {
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            token: RwLock::new((token, Instant::now())),
        })
    }

    /// The current token, renewed once it is [`TOKEN_LIFETIME`] old.
    fn token(&self) -> Result<String, SignerError> {
        {
            let token = self.token.read().unwrap_or_else(|e| e.into_inner());
            if token.1.elapsed() < TOKEN_LIFETIME {
                return Ok(token.0.clone());
            }
        }
        let mut token = self.token.write().unwrap_or_else(|e| e.into_inner());
        if token.1.elapsed() >= TOKEN_LIFETIME {
            *token = (
                sign(&self.key, &self.key_id, &self.team_id)?,
                Instant::now(),
            );
        }
        Ok(token.0.clone())
    }
}

fn sign(key: &EcdsaKeyPair, key_id: &str, team_id: &str) -> Result<String, SignerError> {
    let header = json!({"alg": "ES256", "kid": key_id});
    let claims = json!({"iss": team_id, "iat": chrono::Utc::now().timestamp()});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key
        .sign(&SystemRandom::new(), signed.as_bytes())
        .map_err(SignerError::Sign)?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("endpoint", &self.endpoint)
            .field("topic", &self.topic)
            .field("token_auth", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

fn config_error(what: impl std::fmt::Display) -> PushError {
    PushError::Config(format!("push.apns: {what}"))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, PushError> {
    std::fs::read(path).map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))
}

impl Apns {
    /// The configured client; `None` without a key or a certificate.
    pub fn from_config(config: &ApnsConfig) -> Result<Option<Self>, PushError> {
        let mut http = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(30));
        let signer = match (&config.key, &config.certificate) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(config_error(
                    "set either key (token auth) or certificate, not both",
                ));
            }
            (Some(key), None) => {
                if config.key_id.is_empty() || config.team_id.is_empty() {
                    return Err(config_error("token auth needs key_id and team_id"));
                }
                let signer = Signer::new(&read(key)?, &config.key_id, &config.team_id)
                    .map_err(|e| config_error(format!("{}: {e}", key.display())))?;
                Some(signer)
            }
            (None, Some(certificate)) => {
                let mut pem = read(certificate)?;
                if let Some(key) = &config.certificate_key {
                    pem.push(b'\n');
                    pem.extend(read(key)?);
                }
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    config_error(format!("the certificate and its key are not PEM: {e}"))
                })?;
                http = http.identity(identity);
                None
            }
        };
        if let Some(path) = &config.ca_certificate {
            let ca = reqwest::Certificate::from_pem(&read(path)?)
                .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
            http = http.add_root_certificate(ca);
        }
        let endpoint = match &config.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
            None if config.production => "https://api.push.apple.com".into(),
            None => "https://api.sandbox.push.apple.com".into(),
        };
        Ok(Some(Self {
            http: http.build().map_err(config_error)?,
            endpoint,
            topic: Some(config.topic.clone()).filter(|topic| !topic.is_empty()),
            signer,
        }))
    }

    /// A device's topic: the configured bundle id, or else its app's. As
    /// in Parse Server, a device of another app is not sent to.
    fn topic<'a>(&'a self, device: &'a PushDevice) -> Result<&'a str, TopicError> {
        let app = device
            .app_identifier
            .as_deref()
            .filter(|app| !app.is_empty());
        match (&self.topic, app) {
            (Some(topic), None) => Ok(topic),
            (Some(topic), Some(app)) if app == topic => Ok(topic),
            (Some(_), Some(app)) => Err(TopicError::OtherApp(app.to_owned())),
            (None, Some(app)) => Ok(app),
            (None, None) => Err(TopicError::Missing),
        }
    }

    /// Sends one notification, retrying 429 and 5xx with backoff.
    pub(crate) async fn send(
        &self,
        device: &PushDevice,
        notification: &Notification,
        badge: Option<i64>,
    ) -> Delivery {
        let topic = match self.topic(device) {
            Ok(topic) => topic,
            Err(err) => return Delivery::Failed(err.to_string()),
        };
        let url = format!("{}/3/device/{}", self.endpoint, device.device_token);
        let body = notification.body(badge);
        let mut backoff = Backoff::default();
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let mut request = self
                .http
                .post(&url)
                .header("apns-topic", topic)
                .header("apns-push-type", &notification.push_type)
                .body(body.clone());
            if let Some(priority) = notification.priority {
                request = request.header("apns-priority", priority.to_string());
            }
            if let Some(at) = notification.expiration {
                request = request.header("apns-expiration", at.to_string());
            }
            if let Some(id) = &notification.collapse_id {
                request = request.header("apns-collapse-id", id);
            }
            if let Some(signer) = &self.signer {
                match signer.token() {
                    Ok(token) => {
                        request = request.header("authorization", format!("bearer {token}"))
                    }
                    Err(err) => return Delivery::Failed(err.to_string()),
                }
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    last = format!("APNs: {err}");
                    backoff.wait().await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            if status == 200 {
                return Delivery::Sent;
            }
            let answer = response.bytes().await.unwrap_or_default();
            let reason = match serde_json::from_slice::<a2::ErrorBody>(&answer) {
                Ok(body) => format!("{:?}", body.reason),
                // A reason newer than a2's list.
                Err(_) => serde_json::from_slice::<Value>(&answer)
                    .ok()
                    .and_then(|body| body["reason"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
            };
            last = format!("APNs answered {status} {reason}");
            match status {
                410 => return Delivery::Dead,
                400 if reason == "BadDeviceToken" => return Delivery::Dead,
                429 | 500..=599 if attempt < ATTEMPTS => {
                    backoff.wait().await;
                }
                _ => return Delivery::Failed(last),
            }
        }
        Delivery::Failed(last)
    }
}

/// A batch's notification, as Parse Server's APNs adapter makes it from
/// the push data: the payload is built once, and only a device's
/// incremented badge changes it.
#[derive(Debug)]
pub(crate) struct Notification {
    payload: Map<String, Value>,
    body: Bytes,
    push_type: String,
    priority: Option<u8>,
    collapse_id: Option<String>,
    /// Unix seconds.
    expiration: Option<i64>,
}

impl Notification {
    pub(crate) fn new(batch: &PushBatch) -> Self {
        let payload = payload(&batch.data);
        let body = Bytes::from(Value::Object(payload.clone()).to_string());
        Self {
            payload,
            body,
            push_type: (batch.apns.push_type.clone()).unwrap_or_else(|| "alert".into()),
            priority: batch.apns.priority,
            collapse_id: batch.apns.collapse_id.clone(),
            expiration: batch.expires_at.map(|at| (at + 500) / 1000),
        }
    }

    fn body(&self, badge: Option<i64>) -> Bytes {
        let Some(badge) = badge else {
            return self.body.clone();
        };
        let mut payload = self.payload.clone();
        if let Some(Value::Object(aps)) = payload.get_mut("aps") {
            aps.insert("badge".into(), json!(badge));
        }
        Bytes::from(Value::Object(payload).to_string())
    }
}

/// The APNs payload of Parse push data: its keys for `aps` go there, and
/// every other key is custom data at the root.
fn payload(data: &Map<String, Value>) -> Map<String, Value> {
    let mut builder = DefaultNotificationBuilder::new();
    let mut aps = Map::new();
    let mut alert = None;
    let mut custom = Map::new();
    for (key, value) in data {
        match (key.as_str(), value) {
            ("aps", Value::Object(given)) => aps.extend(given.clone()),
            ("alert", Value::String(body)) => builder = builder.set_body(body),
            ("alert", Value::Object(given)) => alert = Some(given.clone()),
            ("title", Value::String(title)) => builder = builder.set_title(title),
            ("badge", Value::Number(badge)) => {
                builder =
                    builder.set_badge(badge.as_u64().unwrap_or(0).min(u32::MAX.into()) as u32);
            }
            ("sound", Value::String(sound)) => builder = builder.set_sound(sound),
            ("category", Value::String(category)) => builder = builder.set_category(category),
            // Only the number 1 turns these on, as in Parse Server.
            ("content-available", flag) if flag == 1 => builder = builder.set_content_available(),
            ("mutable-content", flag) if flag == 1 => builder = builder.set_mutable_content(),
            ("content-available" | "mutable-content" | "badge", _) => {}
            ("sound", _) => {
                aps.insert("sound".into(), value.clone());
            }
            ("threadId", _) => {
                aps.insert("thread-id".into(), value.clone());
            }
            ("interruptionLevel", _) => {
                aps.insert("interruption-level".into(), value.clone());
            }
            ("targetContentIdentifier", _) => {
                aps.insert("target-content-id".into(), value.clone());
            }
            _ => {
                custom.insert(key.clone(), value.clone());
            }
        }
    }
    let built =
        serde_json::to_value(builder.build("", NotificationOptions::default())).unwrap_or_default();
    if let Value::Object(built) = &built["aps"] {
        // a2 writes `mutable-content: 0` when it is off; Parse leaves it out.
        let off = |key: &str, value: &Value| key == "mutable-content" && *value == 0;
        aps.extend(
            built
                .iter()
                .filter(|(key, value)| !off(key, value))
                .map(|(key, value)| (key.clone(), value.clone())),
        );
    }
    if let Some(mut given) = alert {
        // A title from `title` joins an alert given as an object.
        if let Some(Value::Object(built)) = aps.get("alert") {
            for (key, value) in built {
                given.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        aps.insert("alert".into(), Value::Object(given));
    }
    let mut payload = custom;
    payload.insert("aps".into(), Value::Object(aps));
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = include_bytes!("../../../ops/push-fakes/fixtures/apns-auth-key.p8");

    #[test]
    fn the_provider_token_is_reused_then_renewed_after_its_lifetime() {
        let signer = Signer::new(KEY, "KEY", "TEAM").unwrap();
        let first = signer.token().unwrap();
        assert_eq!(signer.token().unwrap(), first);
        let claims = first.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["iss"], "TEAM");
        // Aged past its lifetime (unless the clock started too recently
        // to go back that far).
        let Some(old) = Instant::now().checked_sub(TOKEN_LIFETIME) else {
            return;
        };
        signer.token.write().unwrap().1 = old;
        assert_ne!(signer.token().unwrap(), first);
        assert!(signer.token.read().unwrap().1.elapsed() < Duration::from_secs(1));
        let renewed = signer.token().unwrap();
        assert_eq!(signer.token().unwrap(), renewed);
    }

    fn of(data: Value) -> Value {
        let Value::Object(data) = data else { panic!() };
        Value::Object(payload(&data))
    }

    #[test]
    fn parse_push_data_becomes_an_aps_payload() {
        assert_eq!(
            of(
                json!({"alert": "hi", "badge": 3, "sound": "ping.caf", "category": "c",
                      "content-available": 1, "mutable-content": 0, "threadId": "t",
                      "custom": {"x": 1}})
            ),
            json!({"aps": {"alert": "hi", "badge": 3, "sound": "ping.caf", "category": "c",
                           "content-available": 1, "thread-id": "t"},
                   "custom": {"x": 1}})
        );
        assert_eq!(
            of(json!({"alert": "body", "title": "head", "uri": "https://x", "badge": 0})),
            json!({"aps": {"alert": {"title": "head", "body": "body"}, "badge": 0}, "uri": "https://x"})
        );
        assert_eq!(
            of(
                json!({"alert": {"loc-key": "K", "loc-args": ["a"]}, "title": "T",
                      "badge": "Increment", "content-available": "1"})
            ),
            json!({"aps": {"alert": {"loc-key": "K", "loc-args": ["a"], "title": "T"}}})
        );
        assert_eq!(
            of(json!({"aps": {"alert": "raw", "sound": "a"}, "sound": "b"})),
            json!({"aps": {"alert": "raw", "sound": "b"}})
        );
    }
}
