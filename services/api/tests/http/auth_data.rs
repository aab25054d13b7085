//! Signing in with `authData`: anonymous users, and OpenID providers whose
//! tokens the test signs itself, with the keys served from a local JWKS
//! endpoint as Apple's or Google's would be.

use std::sync::Arc;

use axum::Json;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use oxbase_objects::{AuthConfig, ProviderConfig, ProviderKind};
use reqwest::Method;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error};
use crate::users::as_user;

/// A 2048-bit RSA key in PKCS#8, for tests only (ring cannot make RSA keys).
const RSA_PKCS8: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCYpVjaR1NvuRnwTwOVr2JKGHwnh2G4pWWgxRCy5FFHqmeWzJfqpS7queHSsWL1IAJKMXsWx0vBDLq5dsao21i9ilvKACckwd/MdT9fyIh85NGzq+5ia3Q+bJgeWmNCP1SY6uzx6l6MSFwTXDgLFAg7jw2f17e8r70PnHluPwVw36ARV2FIwXAJR5frMXVuGLhZrHGvcbw/RC/iJKhKjRuRpcaCkuB0rj3zF6a7ySA4bcWSYJ+fbeJpxMcyesbvCwFIqEQaf+Ds/WGKjeYbXeXBfEKRdsHYYiRWDm+R7xJice3ujqmhG165FcSYV7W6XsiFCpv/ASSzDicORphCysq1AgMBAAECggEACpYeaUEHcIOnYLWyJh2cP6RJaVpnyhevyoHFod/YzT4XDMEoC2N6XgLB6SFZShkhX4Y6pv6aaotDS0fes5OcKMUMOaBfa/AFi+yua6pWNkc4+JuEybmcaGnn9jmcPFofuAfu9+t3tDCehiSKqdCxWM7CifflgRtfuCdIz/8PQF/T47kLP0e+6FgeNmTl0WTGfGCmKKQWIRi2OT18SP7SJnuBkq6Tf+/9wcfd46LxOJ8dkqMv/buDGesr/1UJxR+z4b0qbI6ts/fz33ugaHlzEpJu0JaOh46/5qJtTTs+0BctWkf6odN3SvVA7/Z0xpbSDVAY3N+R+NkBi+yjWftkrwKBgQDM1t1FXuSBafZH4Oyc9Q+RMPlC80x/WAzVQmaIoYzVzOw2aotfKniGv+4Dfh78P38ucV+2LAOyKdmSbjD0BsbOI2mlRrjmkTMsJJNfMKJkyi4NVsZro9ZiWQD069GQQHSSRvBDU+re1+l29jcvkCAFu8bOtyX1O10wffe6aotchwKBgQC+xU8Wwqvt7pdzefFmURGlVX0EGbaYA9jQzYzUabcvOziIJqpASq4Anv8c+YXIQ7+PAQtHEKuGFzgQebH4QmxW4tYhiqxBrLfT7x39JM9fu+JCw7ZnVwdErzkiKj9pocKgCK7hD3Gj8yDWgZP5VbPn7I/bYcwGOXuteBGz0hEJ4wKBgHpGVIWBdKPv7czQbk3vV2CTPGgDtglaNSbkYTJ0RQ6nKeX9yb6AKrw9O8Yn9jUbbj75/GlRcs9aff8T+fLhTLFmoDzBr8QqrsJN/w7WiEnkCoN55i4A+gtxF8ocLteOMkfTQr7eDBkEB+A0b5Lb1NG3WqCw4V63FhTJTSShTxlnAoGAaswoz5QiDiyA6uu8gcwmtclbGH2QpB+bNKGuEogwPifIKSiELUPhj4VzSnRCOe/7gIJUHu+tJn8/KrIGOPZukmGhANwSPR4FN4do4XvHAFA9haTtK4MkFYaG1KKUJ32gaFkUFfjAZMlKe+vEvFQHSHI9wtJIFr/9hgpu1p1mXoMCgYEAv1r6veHwMZX8QlNa393J3xAYpmk/CvNpMtajMae2VjivQWvVkoLZy2XYYaB9eMY3oAouCol/U6IYid8tW3mKkGKS+mC8EoztfMgw+vK2nLNOJP/DF7xO8n5AX07qCutMwR5ZixfHa0iY2bU25fQvZt38hQAUiXWyrNxjIIo6ZRc=";

const ISSUER: &str = "https://id.example.com";
const CLIENT_ID: &str = "oxbase-tests";
const APPLE_CLIENT_ID: &str = "com.example.app";

/// An OpenID provider's signing keys, and its JWKS served over HTTP.
struct Issuer {
    rng: SystemRandom,
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    jwks_url: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key(rng: &SystemRandom) -> EcdsaKeyPair {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng).unwrap()
}

impl Issuer {
    async fn start() -> Arc<Self> {
        let rng = SystemRandom::new();
        let rsa = RsaKeyPair::from_pkcs8(&STANDARD.decode(RSA_PKCS8).unwrap()).unwrap();
        let ec = ec_key(&rng);
        let public: RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
        let point = ec.public_key().as_ref();
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig", "n": b64(&public.n), "e": b64(&public.e)},
            {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])},
        ]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let router = axum::Router::new().route("/jwks", get(move || async move { Json(jwks) }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Arc::new(Self {
            rng,
            rsa,
            ec,
            jwks_url,
        })
    }

    /// An RS256 token.
    fn token(&self, claims: Value) -> String {
        self.rs256("rsa1", &claims)
    }

    fn rs256(&self, kid: &str, claims: &Value) -> String {
        let signed = signing_input(json!({"alg": "RS256", "kid": kid}), claims);
        let mut signature = vec![0; self.rsa.public().modulus_len()];
        self.rsa
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signed.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{signed}.{}", b64(&signature))
    }

    /// An ES256 token, signed by `key` under the id of the served EC key.
    fn es256(&self, key: &EcdsaKeyPair, claims: &Value) -> String {
        let signed = signing_input(json!({"alg": "ES256", "kid": "ec1"}), claims);
        let signature = key.sign(&self.rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(signature.as_ref()))
    }
}

fn signing_input(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a valid ID token for `sub`.
fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": sub, "iat": now(), "exp": now() + 600})
}

fn acme(issuer: &Issuer, sub: &str) -> Value {
    json!({"acme": {"id": sub, "id_token": issuer.token(claims(sub))}})
}

/// A server whose `acme` provider is the test issuer, and whose `apple`
/// takes its keys from it.
async fn server(issuer: &Issuer, adjust: impl FnOnce(&mut AuthConfig)) -> TestServer {
    let jwks_url = issuer.jwks_url.clone();
    TestServer::start_with(move |config| {
        config.update_section(|auth: &mut AuthConfig| {
            auth.providers.insert(
                "acme".into(),
                ProviderConfig {
                    kind: Some(ProviderKind::Oidc),
                    client_ids: vec![CLIENT_ID.into()],
                    issuers: vec![ISSUER.into()],
                    jwks_url: Some(jwks_url.clone()),
                    ..ProviderConfig::default()
                },
            );
            let apple = auth.providers.entry("apple".into()).or_default();
            apple.client_ids = vec![APPLE_CLIENT_ID.into()];
            apple.jwks_url = Some(jwks_url);
            adjust(auth);
        });
    })
    .await
}

async fn session_created_with(server: &TestServer, token: &str) -> Value {
    let (status, session) = as_user(server, token, Method::GET, "sessions/me", None).await;
    assert_eq!(status, 200, "{session}");
    session["createdWith"].clone()
}

#[track_caller]
fn assert_message(response: &(u16, Value), status: u16, code: i64, message: &str) {
    assert_error(response, status, code);
    assert_eq!(response.1["error"], message, "{}", response.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_users_sign_up_and_log_in_again() {
    let issuer = Issuer::start().await;
    let server = server(&issuer, |_| {}).await;
    let anonymous =
        json!({"authData": {"anonymous": {"id": "0c6b7f52-7d0a-4f57-9d4a-0c2f1f3e9a11"}}});

    let (status, created) = server.post("users", anonymous.clone()).await;
    assert_eq!(status, 201, "{created}");
    let id = created["objectId"].as_str().unwrap().to_owned();
    let username = created["username"].as_str().unwrap();
    assert_eq!(
        username.len(),
        25,
        "a random username, as Parse makes: {username}"
    );
    let token = created["sessionToken"].as_str().unwrap().to_owned();
    assert_eq!(
        session_created_with(&server, &token).await,
        json!({"action": "signup", "authProvider": "anonymous"})
    );

    let (status, again) = server.post("users", anonymous).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["objectId"], id.as_str());
    assert_eq!(
        again["authData"]["anonymous"]["id"],
        "0c6b7f52-7d0a-4f57-9d4a-0c2f1f3e9a11"
    );
    let second = again["sessionToken"].as_str().unwrap();
    assert_ne!(second, token);
    assert_eq!(
        session_created_with(&server, second).await,
        json!({"action": "login", "authProvider": "anonymous"})
    );

    // Others never see a user's authData; the user does.
    let (_, seen) = server.get(&format!("users/{id}")).await;
    assert!(seen.get("authData").is_none(), "{seen}");
    let (_, me) = as_user(&server, &token, Method::GET, "users/me", None).await;
    assert!(me["authData"]["anonymous"].is_object(), "{me}");

    // Setting a username and password keeps the user and, with the SDK's
    // `anonymous: null`, drops the anonymous link.
    let (status, body) = as_user(
        &server,
        &token,
        Method::PUT,
        &format!("users/{id}"),
        Some(json!({"username": "kept", "password": "pw", "authData": {"anonymous": null}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, login) = server
        .post("login", json!({"username": "kept", "password": "pw"}))
        .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["objectId"], id.as_str());
    assert!(login.get("authData").is_none(), "{login}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tokens_sign_up_log_in_link_and_unlink() {
    let issuer = Issuer::start().await;
    let server = server(&issuer, |_| {}).await;

    // Sign-up, then log-in with a later token (RS256, then ES256).
    let (status, created) = server
        .post("users", json!({"authData": acme(&issuer, "sub-1")}))
        .await;
    assert_eq!(status, 201, "{created}");
    let first = created["objectId"].as_str().unwrap().to_owned();
    let token = created["sessionToken"].as_str().unwrap().to_owned();
    assert_eq!(
        session_created_with(&server, &token).await,
        json!({"action": "signup", "authProvider": "acme"})
    );
    let es256 = issuer.es256(&issuer.ec, &claims("sub-1"));
    let (status, again) = server
        .post(
            "users",
            json!({"authData": {"acme": {"id": "sub-1", "id_token": es256}}}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["objectId"], first.as_str());
    assert_eq!(
        again["authData"]["acme"]["id_token"],
        es256.as_str(),
        "the new token is stored"
    );

    // Link to a user who signed up with a password, then log in with it.
    let (status, body) = server
        .post("users", json!({"username": "ada", "password": "pw"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let ada = body["objectId"].as_str().unwrap().to_owned();
    let ada_token = body["sessionToken"].as_str().unwrap().to_owned();
    let link = json!({"authData": acme(&issuer, "sub-ada")});
    let (status, body) = as_user(
        &server,
        &ada_token,
        Method::PUT,
        &format!("users/{ada}"),
        Some(link.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, login) = server.post("users", link).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["objectId"], ada.as_str());
    assert_eq!(login["username"], "ada");

    // Linking a second provider keeps the first.
    let apple_token = issuer.token(json!({
        "iss": "https://appleid.apple.com", "aud": APPLE_CLIENT_ID, "sub": "apple-ada", "exp": now() + 600,
    }));
    let (status, body) = as_user(
        &server,
        &ada_token,
        Method::PUT,
        &format!("users/{ada}"),
        Some(json!({"authData": {"apple": {"id": "apple-ada", "token": apple_token}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, me) = as_user(&server, &ada_token, Method::GET, "users/me", None).await;
    assert_eq!(me["authData"]["acme"]["id"], "sub-ada", "{me}");
    assert_eq!(me["authData"]["apple"]["id"], "apple-ada", "{me}");

    // Unlink: the provider goes, the user stays, and its id signs up anew.
    let (status, body) = as_user(
        &server,
        &ada_token,
        Method::PUT,
        &format!("users/{ada}"),
        Some(json!({"authData": {"acme": null}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, me) = as_user(&server, &ada_token, Method::GET, "users/me", None).await;
    assert!(me["authData"].get("acme").is_none(), "{me}");
    assert_eq!(me["authData"]["apple"]["id"], "apple-ada", "{me}");
    let (status, fresh) = server
        .post("users", json!({"authData": acme(&issuer, "sub-ada")}))
        .await;
    assert_eq!(status, 201, "{fresh}");
    assert_ne!(fresh["objectId"], ada.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_belongs_to_one_user() {
    let issuer = Issuer::start().await;
    let server = server(&issuer, |_| {}).await;
    let (_, owner) = server
        .post("users", json!({"authData": acme(&issuer, "taken")}))
        .await;
    let (status, other) = server
        .post("users", json!({"username": "bob", "password": "pw"}))
        .await;
    assert_eq!(status, 201, "{other}");
    let bob = other["objectId"].as_str().unwrap();
    let bob_token = other["sessionToken"].as_str().unwrap();

    let link = json!({"authData": acme(&issuer, "taken")});
    let linked = as_user(
        &server,
        bob_token,
        Method::PUT,
        &format!("users/{bob}"),
        Some(link.clone()),
    )
    .await;
    assert_message(&linked, 400, 208, "this auth is already used");
    let signed_in_as_bob = as_user(&server, bob_token, Method::POST, "users", Some(link)).await;
    assert_message(&signed_in_as_bob, 400, 208, "this auth is already used");

    // Nor Bob in a batch; without a session, a batch item logs the owner
    // in, as Parse does.
    let batch = json!({"requests": [{"method": "POST", "path": "/parse/users", "body": {"authData": acme(&issuer, "taken")}}]});
    let (status, as_bob) = as_user(
        &server,
        bob_token,
        Method::POST,
        "batch",
        Some(batch.clone()),
    )
    .await;
    assert_eq!(status, 200, "{as_bob}");
    assert_eq!(as_bob[0]["error"]["code"], 208, "{as_bob}");
    let (status, batch) = server.post("batch", batch).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        batch[0]["success"]["objectId"], owner["objectId"],
        "{batch}"
    );
    assert!(batch[0]["success"]["sessionToken"].is_string(), "{batch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_parse_errors() {
    let issuer = Issuer::start().await;
    let server = server(&issuer, |_| {}).await;
    let sign_in = |token: String| {
        let server = &server;
        async move {
            server
                .post(
                    "users",
                    json!({"authData": {"acme": {"id": "sub-1", "id_token": token}}}),
                )
                .await
        }
    };
    let with = |change: Value| {
        let mut claims = claims("sub-1");
        claims
            .as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        claims
    };

    let forged = issuer.es256(&ec_key(&issuer.rng), &claims("sub-1"));
    assert_message(&sign_in(forged).await, 404, 101, "invalid signature");
    assert_message(
        &sign_in(issuer.token(with(json!({"iss": "https://evil.example.com"})))).await,
        404,
        101,
        "id token not issued by correct OpenID provider - expected: https://id.example.com | from: https://evil.example.com",
    );
    assert_message(
        &sign_in(issuer.token(with(json!({"aud": "someone-else"})))).await,
        404,
        101,
        "jwt audience invalid. expected: oxbase-tests",
    );
    assert_message(
        &sign_in(issuer.token(with(json!({"exp": now() - 3600})))).await,
        404,
        101,
        "jwt expired",
    );
    assert_message(
        &sign_in(issuer.token(with(json!({"sub": "sub-2"})))).await,
        404,
        101,
        "auth data is invalid for this user.",
    );
    assert_message(
        &sign_in(issuer.rs256("rotated", &claims("sub-1"))).await,
        404,
        101,
        "Unable to find matching key for Key ID: rotated",
    );
    assert_message(
        &sign_in("not-a-jwt".into()).await,
        404,
        101,
        "provided token does not decode as JWT",
    );
    let no_token = server
        .post("users", json!({"authData": {"acme": {"id": "sub-1"}}}))
        .await;
    assert_message(&no_token, 404, 101, "id token is invalid for this user.");
    let apple = server
        .post(
            "users",
            json!({"authData": {"apple": {"id": "sub-1", "token": issuer.token(claims("sub-1"))}}}),
        )
        .await;
    assert_message(
        &apple,
        404,
        101,
        "jwt audience invalid. expected: com.example.app",
    );
    assert!(
        server.all("_User").await.is_empty(),
        "nothing was signed up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_oxbase_does_not_check_are_refused() {
    let issuer = Issuer::start().await;
    let server = server(&issuer, |auth| {
        auth.enable_anonymous_users = false;
        auth.providers.get_mut("google").unwrap().enabled = false;
    })
    .await;
    let sign_in = |auth_data: Value| server.post("users", json!({ "authData": auth_data }));

    let vkontakte = sign_in(json!({"vkontakte": {"id": "1", "access_token": "t"}})).await;
    assert_error(&vkontakte, 400, 252);
    let message = vkontakte.1["error"].as_str().unwrap();
    assert!(
        message.contains("vkontakte") && message.contains("oxbase"),
        "{message}"
    );
    for refused in [
        json!({"myspace": {"id": "1"}}),
        json!({"anonymous": {"id": "1"}}),
        json!({"google": {"id": "1", "id_token": "t"}}),
    ] {
        assert_message(
            &sign_in(refused).await,
            400,
            252,
            "This authentication method is unsupported.",
        );
    }
    let null = server
        .post(
            "users",
            json!({"username": "x", "password": "y", "authData": null}),
        )
        .await;
    assert_message(
        &null,
        400,
        252,
        "This authentication method is unsupported.",
    );
    assert!(server.all("_User").await.is_empty());
}

/// The users holding this anonymous id, by master key.
async fn users_with_anonymous_id(server: &TestServer, id: &str) -> Vec<Value> {
    server
        .all("_User")
        .await
        .into_iter()
        .filter(|user| user["authData"]["anonymous"]["id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_data_log_ins_in_batches_and_with_the_users_own_session() {
    let issuer = Issuer::start().await;
    let server = server(&issuer, |_| {}).await;
    let anonymous =
        json!({"authData": {"anonymous": {"id": "5b0e4c1e-1111-4a57-9d4a-0c2f1f3e9a11"}}});
    let (status, created) = server.post("users", anonymous.clone()).await;
    assert_eq!(status, 201, "{created}");
    let id = created["objectId"].as_str().unwrap().to_owned();
    let token = created["sessionToken"].as_str().unwrap().to_owned();

    // In a batch, as alone: the user is logged in, with a new session.
    let (status, batch) = server
        .post(
            "batch",
            json!({"requests": [{"method": "POST", "path": "/parse/users", "body": anonymous}]}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let logged_in = &batch[0]["success"];
    assert_eq!(logged_in["objectId"], id.as_str(), "{batch}");
    let second = logged_in["sessionToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{batch}"));
    assert_ne!(second, token);
    let (status, me) = as_user(&server, second, Method::GET, "users/me", None).await;
    assert_eq!((status, me["objectId"].clone()), (200, json!(id)), "{me}");

    // With the user's own session, Parse Server 9 answers the user without
    // a sessionToken, and opens no session.
    let sessions = || async {
        server
            .all("_Session")
            .await
            .into_iter()
            .filter(|s| s["user"]["objectId"] == id.as_str())
            .count()
    };
    let before = sessions().await;
    let (status, again) = as_user(&server, &token, Method::POST, "users", Some(anonymous)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["objectId"], id.as_str());
    assert!(again.get("sessionToken").is_none(), "{again}");
    assert_eq!(sessions().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_sign_ups_with_one_provider_id_make_one_user() {
    let issuer = Issuer::start().await;
    let server = server(&issuer, |_| {}).await;
    // `_User` exists, as in any app with users.
    let (status, body) = server
        .post("users", json!({"username": "first", "password": "pw"}))
        .await;
    assert_eq!(status, 201, "{body}");
    for round in 0..3 {
        let uuid = format!("7d1e4c1e-2222-4a57-9d4a-0c2f1f3e9a1{round}");
        let body = json!({"authData": {"anonymous": {"id": uuid}}});
        let answers =
            futures_util::future::join_all((0..8).map(|_| server.post("users", body.clone())))
                .await;
        // One signs up; the others log in, or lose the race with Parse's
        // 208, as on Parse Server with its unique index.
        let created = answers.iter().filter(|(status, _)| *status == 201).count();
        assert_eq!(created, 1, "{answers:?}");
        for (status, answer) in &answers {
            assert!(
                *status == 201 || *status == 200 || (*status == 400 && answer["code"] == 208),
                "{answers:?}"
            );
        }
        assert_eq!(users_with_anonymous_id(&server, &uuid).await.len(), 1);
    }
}
