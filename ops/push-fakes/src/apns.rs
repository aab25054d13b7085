//! APNs: HTTP/2 only, over TLS, with provider-token or client-certificate
//! auth, answering like Apple's documented `/3/device/<token>`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::{
    APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, Answer, Options, Received, fixture, pem_der,
    read_fixture,
};

/// How the fake authenticates providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsAuth {
    /// A JWT signed with `apns-auth-key.p8`, for [`APNS_KEY_ID`] and
    /// [`APNS_TEAM_ID`], in `authorization: bearer`.
    Token,
    /// A TLS client certificate signed by `ca.pem`.
    Certificate,
}

#[derive(Debug)]
pub struct FakeApns {
    pub received: Received,
    /// `https://localhost:<port>`: the `[push.apns] endpoint`; its
    /// certificate is signed by `ca.pem`.
    pub base: String,
    /// Distinct provider tokens that verified.
    pub provider_tokens: Mutex<HashSet<String>>,
    /// TLS connections accepted.
    pub connections: AtomicUsize,
    auth: ApnsAuth,
    public_key: Vec<u8>,
    options: Options,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, body: Option<Value>) -> Reply {
    let mut response = Response::builder().status(status);
    if status == 200 {
        response = response.header("apns-id", "00000000-0000-0000-0000-000000000001");
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    response
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::default()))
}

fn refuse(status: u16, reason: &str) -> Reply {
    reply(status, Some(json!({ "reason": reason })))
}

impl FakeApns {
    pub async fn start(auth: ApnsAuth, options: Options) -> Arc<Self> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(fixture("apns-server.pem"))
                .and_then(|certs| certs.collect())
                .expect("the server certificate fixture");
        let key = PrivateKeyDer::from_pem_file(fixture("apns-server.key"))
            .expect("the server key fixture");
        let builder = rustls::ServerConfig::builder();
        let builder = match auth {
            ApnsAuth::Token => builder.with_no_client_auth(),
            ApnsAuth::Certificate => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_file_iter(fixture("ca.pem")).expect("ca.pem") {
                    roots.add(ca.expect("ca.pem")).expect("a CA certificate");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut tls = builder
            .with_single_cert(certs, key)
            .expect("a TLS configuration");
        // Apple speaks HTTP/2 only.
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("an address").port();
        let signing = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pem_der(&read_fixture("apns-auth-key.p8")),
            &ring::rand::SystemRandom::new(),
        )
        .expect("the fixture is a P-256 key");
        let apns = Arc::new(Self {
            received: Received::default(),
            base: format!("https://localhost:{port}"),
            provider_tokens: Mutex::default(),
            connections: AtomicUsize::new(0),
            auth,
            public_key: ring::signature::KeyPair::public_key(&signing)
                .as_ref()
                .to_vec(),
            options,
        });
        let server = Arc::clone(&apns);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, apns) = (acceptor.clone(), Arc::clone(&server));
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    apns.connections.fetch_add(1, Ordering::Relaxed);
                    let service = hyper::service::service_fn(move |request| {
                        let apns = Arc::clone(&apns);
                        async move { Ok::<_, Infallible>(apns.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1000)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        apns
    }

    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Reply {
        let (parts, body) = request.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if parts.method != hyper::Method::POST {
            return refuse(405, "MethodNotAllowed");
        }
        let Some(token) = parts
            .uri
            .path()
            .strip_prefix("/3/device/")
            .map(str::to_owned)
        else {
            return refuse(404, "BadPath");
        };
        if self.auth == ApnsAuth::Token {
            let Some(bearer) = header("authorization") else {
                return refuse(403, "MissingProviderToken");
            };
            if let Err(reason) = self.verify(bearer.strip_prefix("bearer ").unwrap_or("")) {
                return refuse(403, reason);
            }
        }
        match header("apns-topic").as_deref() {
            None if self.auth == ApnsAuth::Token => return refuse(400, "MissingTopic"),
            Some(topic) if topic != APNS_TOPIC => return refuse(400, "TopicDisallowed"),
            _ => {}
        }
        if let Some(kind) = header("apns-push-type") {
            const KINDS: [&str; 9] = [
                "alert",
                "background",
                "location",
                "voip",
                "complication",
                "fileprovider",
                "mdm",
                "liveactivity",
                "pushtotalk",
            ];
            if !KINDS.contains(&kind.as_str()) {
                return refuse(400, "InvalidPushType");
            }
        }
        if header("apns-priority").is_some_and(|p| !["10", "5", "1"].contains(&p.as_str())) {
            return refuse(400, "BadPriority");
        }
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return refuse(400, "BadPayload");
        };
        if body.len() > 4096 {
            return refuse(413, "PayloadTooLarge");
        }
        let payload: Value = match serde_json::from_slice(&body) {
            Ok(payload @ Value::Object(_)) if payload["aps"].is_object() => payload,
            _ if body.is_empty() => return refuse(400, "PayloadEmpty"),
            _ => return refuse(400, "BadPayload"),
        };
        if !self.options.delay.is_zero() {
            tokio::time::sleep(self.options.delay).await;
        }
        match self.received.answer(&token) {
            Answer::Gone => reply(
                410,
                Some(
                    json!({"reason": "Unregistered", "timestamp": chrono::Utc::now().timestamp_millis()}),
                ),
            ),
            Answer::BadToken => refuse(400, "BadDeviceToken"),
            Answer::Later => refuse(429, "TooManyRequests"),
            Answer::Deliver => {
                let headers: serde_json::Map<String, Value> = [
                    "apns-topic",
                    "apns-push-type",
                    "apns-priority",
                    "apns-expiration",
                    "apns-collapse-id",
                ]
                .into_iter()
                .filter_map(|name| Some((name.to_owned(), Value::String(header(name)?))))
                .collect();
                let message = json!({"headers": headers, "payload": payload});
                self.received.accept(&token, message, &self.options);
                reply(200, None)
            }
        }
    }

    /// Checks a provider token as Apple does: ES256 by the team's key,
    /// issued within the hour. A token that verified once is remembered.
    fn verify(&self, jwt: &str) -> Result<(), &'static str> {
        let mut known = self
            .provider_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if known.contains(jwt) {
            return Ok(());
        }
        let parts: Vec<&str> = jwt.split('.').collect();
        let decode = |part: &str| -> Option<Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        let [header, claims, signature] = parts[..] else {
            return Err("InvalidProviderToken");
        };
        let (Some(head), Some(body)) = (decode(header), decode(claims)) else {
            return Err("InvalidProviderToken");
        };
        let signed = URL_SAFE_NO_PAD.decode(signature).is_ok_and(|signature| {
            ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public_key)
                .verify(format!("{header}.{claims}").as_bytes(), &signature)
                .is_ok()
        });
        if !signed
            || head["alg"] != "ES256"
            || head["kid"] != APNS_KEY_ID
            || body["iss"] != APNS_TEAM_ID
        {
            return Err("InvalidProviderToken");
        }
        let age = chrono::Utc::now().timestamp() - body["iat"].as_i64().unwrap_or(0);
        if !(-60..3600).contains(&age) {
            return Err("ExpiredProviderToken");
        }
        known.insert(jwt.to_owned());
        Ok(())
    }

    /// The payload each token was last sent.
    pub fn payloads(&self) -> std::collections::HashMap<String, Value> {
        self.received
            .last()
            .into_iter()
            .map(|(token, message)| (token, message["payload"].clone()))
            .collect()
    }
}
