//! Apple Game Center: the test is its own CA (an RSA root, as DigiCert's
//! is) and issues a player-signing certificate, served over HTTP as Apple
//! serves `publicKeyUrl`s; the client's signature is made as GameKit makes
//! it, over id, bundle id, timestamp and salt.

use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oxbase_objects::{AuthConfig, ProviderConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error};

const ROOT_KEY: &str = include_str!("fixtures/gcenter-root.key.pem");
const PLAYER_KEY: &str = include_str!("fixtures/gcenter-player.key.pem");
const BUNDLE_ID: &str = "com.example.game";
const PLAYER: &str = "G:1965586982";
const TIMESTAMP: u64 = 1_460_981_421_303;
const SALT: &[u8] = b"salt-from-apple";

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
}

/// The certificates the fake serves: the root (PEM), the player key's
/// certificate issued by it, and one for the same key signed by another
/// key under the root's name (both DER, as Apple serves them).
struct Certificates {
    root_pem: String,
    player_der: Vec<u8>,
    forged_der: Vec<u8>,
}

fn certificates() -> Certificates {
    let root_key = KeyPair::from_pem(ROOT_KEY).unwrap();
    let player_key = KeyPair::from_pem(PLAYER_KEY).unwrap();
    let root = ca_params("Test Game Center CA")
        .self_signed(&root_key)
        .unwrap();
    let issuer = Issuer::new(ca_params("Test Game Center CA"), root_key);
    let mut player = CertificateParams::new(Vec::<String>::new()).unwrap();
    player
        .distinguished_name
        .push(DnType::CommonName, "Test Game Center player key");
    let player_der = player.signed_by(&player_key, &issuer).unwrap();
    // An RSA CA with the root's name but not its key: the player's own.
    let forger = Issuer::new(
        ca_params("Test Game Center CA"),
        KeyPair::from_pem(PLAYER_KEY).unwrap(),
    );
    let forged_der = player.signed_by(&player_key, &forger).unwrap();
    Certificates {
        root_pem: root.pem(),
        player_der: player_der.der().to_vec(),
        forged_der: forged_der.der().to_vec(),
    }
}

async fn serve(certs: Certificates) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let Certificates {
        root_pem,
        player_der,
        forged_der,
    } = certs;
    let cer = |der: Vec<u8>| {
        move || async move {
            (
                [
                    (header::CONTENT_TYPE, "application/pkix-cert"),
                    (header::CACHE_CONTROL, "max-age=3600"),
                ],
                der,
            )
                .into_response()
        }
    };
    let router = axum::Router::new()
        .route(
            "/root.pem",
            axum::routing::get(move || async move {
                ([(header::CONTENT_TYPE, "application/x-pem-file")], root_pem).into_response()
            }),
        )
        .route("/gc/player.cer", axum::routing::get(cer(player_der)))
        .route("/gc/forged.cer", axum::routing::get(cer(forged_der)));
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// What GameKit's `fetchItems` gives a player, signed with `key`.
fn auth_data(base: &str, cer: &str, bundle_id: &str) -> Value {
    let key = KeyPair::from_pem(PLAYER_KEY).unwrap().serialize_der();
    let key = RsaKeyPair::from_pkcs8(&key).unwrap();
    let mut signed = PLAYER.as_bytes().to_vec();
    signed.extend_from_slice(bundle_id.as_bytes());
    signed.extend_from_slice(&TIMESTAMP.to_be_bytes());
    signed.extend_from_slice(SALT);
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        &signed,
        &mut signature,
    )
    .unwrap();
    json!({
        "id": PLAYER,
        "publicKeyUrl": format!("{base}/gc/{cer}"),
        "timestamp": TIMESTAMP,
        "salt": STANDARD.encode(SALT),
        "signature": STANDARD.encode(signature),
    })
}

#[track_caller]
fn assert_message(response: &(u16, Value), message: &str) {
    assert_error(response, 404, 101);
    assert_eq!(response.1["error"], message, "{}", response.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcenter_checks_apples_signature_and_certificate() {
    let base = serve(certificates()).await;
    let provider = ProviderConfig {
        bundle_id: Some(BUNDLE_ID.into()),
        root_certificate_url: Some(format!("{base}/root.pem")),
        public_key_url_prefixes: vec![format!("{base}/gc/")],
        ..ProviderConfig::default()
    };
    let server = TestServer::start_with(move |config| {
        config.update_section(|auth: &mut AuthConfig| {
            auth.providers.insert("gcenter".into(), provider);
        });
    })
    .await;
    let sign_in = |data: Value| {
        let server = &server;
        async move {
            server
                .post("users", json!({"authData": {"gcenter": data}}))
                .await
        }
    };

    let good = auth_data(&base, "player.cer", BUNDLE_ID);
    let (status, created) = sign_in(good.clone()).await;
    assert_eq!(status, 201, "{created}");
    let (status, again) = sign_in(good.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["objectId"], created["objectId"]);

    // Signed for another app.
    assert_message(
        &sign_in(auth_data(&base, "player.cer", "com.other.app")).await,
        "Invalid signature.",
    );
    let mut tampered = good.clone();
    tampered["timestamp"] = json!(TIMESTAMP + 1);
    assert_message(&sign_in(tampered).await, "Invalid signature.");
    // The player's key, certified by someone else than the root.
    let forged = auth_data(&base, "forged.cer", BUNDLE_ID);
    assert_message(
        &sign_in(forged).await,
        &format!("Invalid publicKeyUrl: {base}/gc/forged.cer"),
    );
    let mut elsewhere = good.clone();
    elsewhere["publicKeyUrl"] = json!("https://static.gc.example.com/key.cer");
    assert_message(
        &sign_in(elsewhere).await,
        "Invalid publicKeyUrl: https://static.gc.example.com/key.cer",
    );
    let mut unsalted = good;
    unsalted.as_object_mut().unwrap().remove("salt");
    assert_message(&sign_in(unsalted).await, "AuthData salt is missing.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcenter_needs_a_root_certificate_it_can_use() {
    let base = serve(certificates()).await;
    // The player's certificate is not a PEM root file.
    let provider = ProviderConfig {
        bundle_id: Some(BUNDLE_ID.into()),
        root_certificate_url: Some(format!("{base}/gc/player.cer")),
        public_key_url_prefixes: vec![format!("{base}/gc/")],
        ..ProviderConfig::default()
    };
    let server = TestServer::start_with(move |config| {
        config.update_section(|auth: &mut AuthConfig| {
            auth.providers.insert("gcenter".into(), provider);
        });
    })
    .await;
    let data = auth_data(&base, "player.cer", BUNDLE_ID);
    assert_message(
        &server
            .post("users", json!({"authData": {"gcenter": data}}))
            .await,
        "Invalid rootCertificateURL.",
    );

    let unconfigured = TestServer::start().await;
    let data = auth_data(&base, "player.cer", BUNDLE_ID);
    assert_message(
        &unconfigured
            .post("users", json!({"authData": {"gcenter": data}}))
            .await,
        "Game center auth options are required.",
    );
}
