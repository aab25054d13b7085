//! LDAP: a small directory server speaking LDAPv3's wire protocol (BER
//! over TCP: simple binds, subtree searches with an equality filter, and
//! unbinds), holding two users and two groups, so that oxbase's client is
//! checked against the protocol rather than a mock of its own calls.

use oxbase_objects::{AuthConfig, ProviderConfig};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{TestServer, assert_error};
use crate::users::as_user;

const SUFFIX: &str = "ou=users,dc=example,dc=com";
const USERS: &[(&str, &str)] = &[("alice", "alice-pw"), ("bob", "bob-pw")];
/// Groups by `cn`, with their `memberUid`s.
const GROUPS: &[(&str, &[&str])] = &[("admins", &["alice"]), ("staff", &["alice", "bob"])];

// LDAPv3 (RFC 4511) tags.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OCTET_STRING: u8 = 0x04;
const ENUMERATED: u8 = 0x0a;
const BIND_REQUEST: u8 = 0x60;
const BIND_RESPONSE: u8 = 0x61;
const UNBIND_REQUEST: u8 = 0x42;
const SEARCH_REQUEST: u8 = 0x63;
const SEARCH_ENTRY: u8 = 0x64;
const SEARCH_DONE: u8 = 0x65;
const SIMPLE_AUTH: u8 = 0x80;
const EQUALITY_MATCH: u8 = 0xa3;

const SUCCESS: u8 = 0;
const NO_SUCH_OBJECT: u8 = 32;
const INVALID_CREDENTIALS: u8 = 49;
const INSUFFICIENT_ACCESS: u8 = 50;
const UNWILLING_TO_PERFORM: u8 = 53;

/// One BER element: its tag, its content, and what follows it.
fn read_tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count > rest.len() || count > 4 {
            return None;
        }
        let (digits, rest) = rest.split_at(count);
        let length = digits.iter().fold(0, |n, d| (n << 8) | usize::from(*d));
        (length, rest)
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// The elements of a constructed value.
fn children(mut content: &[u8]) -> Vec<(u8, &[u8])> {
    let mut items = Vec::new();
    while let Some((tag, value, rest)) = read_tlv(content) {
        items.push((tag, value));
        content = rest;
    }
    items
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n <= 0xff => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

fn octets(text: &str) -> Vec<u8> {
    tlv(OCTET_STRING, text.as_bytes())
}

/// An LDAPResult with `op`'s tag.
fn result(op: u8, code: u8) -> Vec<u8> {
    let mut content = tlv(ENUMERATED, &[code]);
    content.extend(octets(""));
    content.extend(octets(""));
    tlv(op, &content)
}

/// An LDAPMessage answering the request whose message id was `id`.
fn message(id: &[u8], op: Vec<u8>) -> Vec<u8> {
    let mut content = tlv(0x02, id);
    content.extend(op);
    tlv(SEQUENCE, &content)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The answers to one request, and whether the connection goes on.
fn answer(bound: &mut bool, id: &[u8], op: u8, body: &[u8]) -> (Vec<Vec<u8>>, bool) {
    match op {
        BIND_REQUEST => {
            let fields = children(body);
            let dn = fields.get(1).map(|(_, dn)| text(dn)).unwrap_or_default();
            let password = fields
                .get(2)
                .filter(|(tag, _)| *tag == SIMPLE_AUTH)
                .map(|(_, pw)| text(pw));
            *bound = USERS.iter().any(|(uid, pw)| {
                dn == format!("uid={uid},{SUFFIX}") && password.as_deref() == Some(*pw)
            });
            let code = if *bound { SUCCESS } else { INVALID_CREDENTIALS };
            (vec![message(id, result(BIND_RESPONSE, code))], true)
        }
        SEARCH_REQUEST => {
            let fields = children(body);
            let base = fields
                .first()
                .map(|(_, base)| text(base))
                .unwrap_or_default();
            let done = |code| vec![message(id, result(SEARCH_DONE, code))];
            if !*bound {
                return (done(INSUFFICIENT_ACCESS), true);
            }
            if !base.ends_with("dc=example,dc=com") {
                return (done(NO_SUCH_OBJECT), true);
            }
            // The filter: only `(memberUid=<uid>)` is understood.
            let Some((EQUALITY_MATCH, filter)) = fields.get(6).copied() else {
                return (done(UNWILLING_TO_PERFORM), true);
            };
            let assertion = children(filter);
            let (Some((_, attribute)), Some((_, value))) = (assertion.first(), assertion.get(1))
            else {
                return (done(UNWILLING_TO_PERFORM), true);
            };
            if !text(attribute).eq_ignore_ascii_case("memberUid") {
                return (done(UNWILLING_TO_PERFORM), true);
            }
            let uid = text(value);
            let mut replies: Vec<Vec<u8>> = GROUPS
                .iter()
                .filter(|(_, members)| members.contains(&uid.as_str()))
                .map(|(cn, _)| {
                    let cn_attribute =
                        tlv(SEQUENCE, &[octets("cn"), tlv(SET, &octets(cn))].concat());
                    let entry = [
                        octets(&format!("cn={cn},ou=groups,dc=example,dc=com")),
                        tlv(SEQUENCE, &cn_attribute),
                    ]
                    .concat();
                    message(id, tlv(SEARCH_ENTRY, &entry))
                })
                .collect();
            replies.extend(done(SUCCESS));
            (replies, true)
        }
        UNBIND_REQUEST => (Vec::new(), false),
        _ => (Vec::new(), false),
    }
}

async fn session(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buffer = Vec::new();
    let mut bound = false;
    let mut chunk = [0; 4096];
    loop {
        while let Some((SEQUENCE, content, rest)) = read_tlv(&buffer) {
            let consumed = buffer.len() - rest.len();
            let fields = children(content);
            let (Some((0x02, id)), Some((op, body))) = (fields.first(), fields.get(1)) else {
                return;
            };
            let (replies, go_on) = answer(&mut bound, id, *op, body);
            for reply in replies {
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
            if !go_on {
                return;
            }
            buffer.drain(..consumed);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Starts the directory behind TLS, with a certificate for 127.0.0.1
/// signed by a CA of its own: its `ldaps://` URL and the CA's PEM.
async fn tls_directory() -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldaps://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    session(stream).await;
                }
            });
        }
    });
    (url, ca.pem())
}

/// Starts the directory; its `ldap://` URL.
async fn directory() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ldap://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(session(stream));
        }
    });
    url
}

async fn server(provider: ProviderConfig) -> TestServer {
    TestServer::start_with(move |config| {
        config.update_section(|auth: &mut AuthConfig| {
            auth.providers.insert("ldap".into(), provider);
        });
    })
    .await
}

fn provider(url: &str, groups: bool) -> ProviderConfig {
    ProviderConfig {
        url: Some(url.into()),
        suffix: Some(SUFFIX.into()),
        group_cn: groups.then(|| "admins".into()),
        group_filter: groups.then(|| "(memberUid={{id}})".into()),
        ..ProviderConfig::default()
    }
}

async fn sign_in(server: &TestServer, data: Value) -> (u16, Value) {
    server
        .post("users", json!({"authData": {"ldap": data}}))
        .await
}

#[track_caller]
fn assert_message(response: &(u16, Value), status: u16, code: i64, message: &str) {
    assert_error(response, status, code);
    assert_eq!(response.1["error"], message, "{}", response.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_binds_as_the_user_and_checks_the_group() {
    let url = directory().await;
    let server = server(provider(&url, true)).await;

    let alice = json!({"id": "alice", "password": "alice-pw"});
    let (status, created) = sign_in(&server, alice.clone()).await;
    assert_eq!(status, 201, "{created}");
    let token = created["sessionToken"].as_str().unwrap();
    let (_, me) = as_user(&server, token, Method::GET, "users/me", None).await;
    // The password was used to bind, never stored.
    assert_eq!(me["authData"]["ldap"], json!({"id": "alice"}), "{me}");
    let (status, again) = sign_in(&server, alice).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["objectId"], created["objectId"]);

    let wrong = "LDAP: Wrong username or password";
    assert_message(
        &sign_in(&server, json!({"id": "alice", "password": "guess"})).await,
        404,
        101,
        wrong,
    );
    assert_message(
        &sign_in(&server, json!({"id": "mallory", "password": "alice-pw"})).await,
        404,
        101,
        wrong,
    );
    // No password would be an anonymous bind: refused before asking.
    assert_message(
        &sign_in(&server, json!({"id": "alice"})).await,
        404,
        101,
        wrong,
    );
    // Bob's password is right, but he is not an admin.
    assert_message(
        &sign_in(&server, json!({"id": "bob", "password": "bob-pw"})).await,
        500,
        1,
        "LDAP: User not in group",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_without_groups_and_without_a_directory() {
    let url = directory().await;
    let open = server(provider(&url, false)).await;
    let (status, created) = sign_in(&open, json!({"id": "bob", "password": "bob-pw"})).await;
    assert_eq!(status, 201, "{created}");

    // A directory that is not there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("ldap://{}", closed.local_addr().unwrap());
    drop(closed);
    let nowhere = server(provider(&gone, false)).await;
    assert_message(
        &sign_in(&nowhere, json!({"id": "bob", "password": "bob-pw"})).await,
        404,
        101,
        "LDAP: Somthing went wrong (ECONNREFUSED)",
    );

    let unconfigured = TestServer::start().await;
    assert_message(
        &sign_in(&unconfigured, json!({"id": "bob", "password": "bob-pw"})).await,
        500,
        1,
        "LDAP auth configuration missing",
    );
}

/// `ldaps://`: TLS to the directory, whose certificate must come from the
/// configured CA (or the system's roots, which do not know this one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_checks_the_directorys_certificate() {
    let (url, ca_pem) = tls_directory().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    let trusting = server(ProviderConfig {
        tls_ca_file: Some(ca_file),
        ..provider(&url, true)
    })
    .await;
    let (status, created) =
        sign_in(&trusting, json!({"id": "alice", "password": "alice-pw"})).await;
    assert_eq!(status, 201, "{created}");
    assert_message(
        &sign_in(&trusting, json!({"id": "alice", "password": "guess"})).await,
        404,
        101,
        "LDAP: Wrong username or password",
    );

    let system_roots = server(provider(&url, false)).await;
    let (status, body) = sign_in(
        &system_roots,
        json!({"id": "alice", "password": "alice-pw"}),
    )
    .await;
    assert_error(&(status, body.clone()), 404, 101);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("LDAP: Somthing went wrong"),
        "{body}"
    );
}
