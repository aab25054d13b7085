//! FCM HTTP v1 with its OAuth2 token endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::{Answer, FCM_ACCOUNT, FCM_PROJECT, Options, Received, pem_der, read_fixture};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const ACCESS_TOKEN: &str = "ya29.oxbase-fake-access-token";

/// The token endpoint checks the service account's signed JWT;
/// `messages:send` checks the access token it minted.
#[derive(Debug)]
pub struct FakeFcm {
    pub received: Received,
    /// Access tokens minted.
    pub tokens_minted: AtomicUsize,
    /// Requests to the token endpoint, answered or refused.
    pub token_requests: AtomicUsize,
    /// While set, the token endpoint refuses the key (400
    /// `invalid_grant`), as Google does once a key is deleted or disabled.
    pub refuse_key: AtomicBool,
    /// `http://127.0.0.1:<port>`: the `[push.fcm] endpoint`.
    pub base: String,
    public_key: Vec<u8>,
    options: Options,
}

impl FakeFcm {
    pub async fn start(options: Options) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let key = RsaKeyPair::from_pkcs8(&pem_der(&read_fixture("fcm-service-account-key.pem")))
            .expect("the fixture is an RSA key");
        let fcm = Arc::new(Self {
            received: Received::default(),
            tokens_minted: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            refuse_key: AtomicBool::new(false),
            base,
            public_key: key.public().as_ref().to_vec(),
            options,
        });
        let app = Router::new()
            .route("/token", post(token))
            .route(
                &format!("/v1/projects/{FCM_PROJECT}/messages:send"),
                post(send),
            )
            .with_state(Arc::clone(&fcm));
        tokio::spawn(async move { axum::serve(listener, app).await });
        fcm
    }

    /// A service account key file's contents for this fake: the
    /// `[push.fcm] service_account`.
    pub fn service_account(&self) -> Value {
        json!({
            "type": "service_account",
            "project_id": FCM_PROJECT,
            "private_key_id": "test",
            "private_key": read_fixture("fcm-service-account-key.pem"),
            "client_email": FCM_ACCOUNT,
            "token_uri": self.token_uri(),
        })
    }

    fn token_uri(&self) -> String {
        format!("{}/token", self.base)
    }

    /// The push data each token was last sent, decoded from the message's
    /// `data.data` string, as the Parse Android SDK reads it.
    pub fn payloads(&self) -> HashMap<String, Value> {
        self.received
            .last()
            .into_iter()
            .filter_map(|(token, message)| {
                let data = message["data"]["data"].as_str()?;
                Some((token, serde_json::from_str(data).ok()?))
            })
            .collect()
    }
}

async fn token(State(fcm): State<Arc<FakeFcm>>, form: String) -> Response {
    fcm.token_requests.fetch_add(1, Ordering::Relaxed);
    let pairs: HashMap<String, String> = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect();
    let assertion = pairs.get("assertion").cloned().unwrap_or_default();
    let parts: Vec<&str> = assertion.split('.').collect();
    let verified = parts.len() == 3
        && pairs.get("grant_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        && URL_SAFE_NO_PAD.decode(parts[2]).is_ok_and(|signature| {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &fcm.public_key)
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .is_ok()
        });
    let claims: Value = parts
        .get(1)
        .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|c| serde_json::from_slice(&c).ok())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    if fcm.refuse_key.load(Ordering::Relaxed)
        || !verified
        || claims["iss"] != FCM_ACCOUNT
        || claims["aud"] != fcm.token_uri().as_str()
        || claims["scope"] != SCOPE
        || claims["exp"].as_i64().is_none_or(|exp| exp <= now)
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        )
            .into_response();
    }
    fcm.tokens_minted.fetch_add(1, Ordering::Relaxed);
    Json(json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn google_error(status: StatusCode, name: &str, code: Option<&str>) -> Response {
    let details: Vec<Value> = code
        .map(|code| json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}))
        .into_iter()
        .collect();
    let body = json!({"error": {"code": status.as_u16(), "message": name, "status": name, "details": details}});
    (status, Json(body)).into_response()
}

async fn send(
    State(fcm): State<Arc<FakeFcm>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if bearer != format!("Bearer {ACCESS_TOKEN}") {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", None);
    }
    let message = &body["message"];
    let Some(token) = message["token"].as_str() else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        );
    };
    if !fcm.options.delay.is_zero() {
        tokio::time::sleep(fcm.options.delay).await;
    }
    match fcm.received.answer(token) {
        Answer::Gone => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", Some("UNREGISTERED")),
        Answer::BadToken => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        ),
        Answer::Later => google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
        ),
        Answer::Deliver => {
            let name = format!(
                "projects/{FCM_PROJECT}/messages/{}",
                fcm.received.accepted()
            );
            fcm.received.accept(token, message.clone(), &fcm.options);
            Json(json!({ "name": name })).into_response()
        }
    }
}
