//! oxbase's NATS connections (`oxbase::nats::connect`, which retries in
//! the background, and `connect_now`) against a nats-server (from PATH;
//! `bash ops/test.sh` installs one) configured for each kind of
//! authentication and for TLS: the right `nats_*` settings connect and
//! carry messages; wrong or missing ones are refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use nkeys::KeyPair;
use oxbase::nats::{connect, connect_now};
use oxbase_kit::{Config, Secret};
use serde_json::{Value, json};

/// A nats-server run with a config file of its own, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts a server on a free port of 127.0.0.1 with `settings` (the
    /// rest of its config file), and waits until it listens.
    fn start(dir: &Path, settings: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("nats.conf");
        std::fs::write(&conf, format!("listen: \"127.0.0.1:{port}\"\n{settings}\n")).unwrap();
        let log = dir.join("nats.log");
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("nats-server on PATH (bash ops/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "nats-server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }

    /// The default config with this server's URL, changed by `change`.
    fn config(&self, change: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config {
            nats_url: self.url.clone(),
            ..Config::default()
        };
        change(&mut config);
        config
    }
}

/// Both kinds of connection made with `config` carry a message to a
/// subscriber of their own.
async fn assert_connects(config: &Config) {
    let background = connect(config).await.unwrap();
    round_trip(&background).await;
    let now = connect_now(config).await.unwrap();
    round_trip(&now).await;
}

async fn round_trip(client: &async_nats::Client) {
    let mut messages = client.subscribe("auth.check").await.unwrap();
    client.flush().await.unwrap();
    client.publish("auth.check", "ping".into()).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the message did not come back")
        .unwrap();
    assert_eq!(message.payload, "ping");
}

/// Why `connect_now` refused `config`, with the causes.
async fn refused(config: &Config) -> String {
    match connect_now(config).await {
        Ok(_) => panic!("connected with {config:?}"),
        Err(err) => format!("{err:#}"),
    }
}

/// Asserts that the server refuses `config` as unauthorized.
async fn assert_unauthorized(config: &Config) {
    let why = refused(config).await;
    assert!(why.contains("authorization violation"), "{why}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_token_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), r#"authorization { token: "s3cret-token" }"#);
    assert_connects(&server.config(|c| c.nats_token = Some(Secret::new("s3cret-token")))).await;
    assert_unauthorized(&server.config(|c| c.nats_token = Some(Secret::new("guess")))).await;
    assert_unauthorized(&server.config(|_| {})).await;
    // An empty variable is no token at all.
    assert_unauthorized(&server.config(|c| c.nats_token = Some(Secret::new("")))).await;
}

#[tokio::test]
async fn a_user_and_password_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        r#"authorization { users: [ { user: "alice", password: "wonder land" } ] }"#,
    );
    let login = |user: &str, password: &str| {
        let (user, password) = (user.to_owned(), Secret::new(password));
        server.config(move |c| {
            c.nats_user = Some(user);
            c.nats_password = Some(password);
        })
    };
    assert_connects(&login("alice", "wonder land")).await;
    assert_unauthorized(&login("alice", "wonderland")).await;
    assert_unauthorized(&login("bob", "wonder land")).await;
    assert_unauthorized(&server.config(|_| {})).await;
    let why = refused(&server.config(|c| c.nats_user = Some("alice".into()))).await;
    assert!(
        why.contains("nats_user and nats_password go together"),
        "{why}"
    );
}

#[tokio::test]
async fn an_nkey_seed_file_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let user = KeyPair::new_user();
    let server = Server::start(
        dir.path(),
        &format!(
            r#"authorization {{ users: [ {{ nkey: "{}" }} ] }}"#,
            user.public_key()
        ),
    );
    // As `nk -gen user -pubout` writes it: the seed, then the public key.
    let seed = write(
        dir.path(),
        "user.nk",
        &format!("{}\n{}\n", user.seed().unwrap(), user.public_key()),
    );
    assert_connects(&server.config(|c| c.nats_nkey_seed = Some(seed))).await;

    let stranger = write(
        dir.path(),
        "stranger.nk",
        &KeyPair::new_user().seed().unwrap(),
    );
    assert_unauthorized(&server.config(|c| c.nats_nkey_seed = Some(stranger))).await;
    assert_unauthorized(&server.config(|_| {})).await;

    let public_only = write(dir.path(), "public.nk", &user.public_key());
    let why = refused(&server.config(|c| c.nats_nkey_seed = Some(public_only))).await;
    assert!(why.contains("holds no nkey seed"), "{why}");
    let missing = dir.path().join("missing.nk");
    let why = refused(&server.config(|c| c.nats_nkey_seed = Some(missing))).await;
    assert!(why.contains("cannot read nats_nkey_seed"), "{why}");
}

/// A JWT as nats-server reads them: ed25519-nkey, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = json!({
        "jti": format!("{name}-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An account's JWT, signed by `operator`, without limits.
fn account_jwt(operator: &KeyPair, account: &KeyPair) -> String {
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1
    });
    jwt(
        operator,
        &account.public_key(),
        "account",
        json!({"type": "account", "version": 2, "limits": unlimited}),
    )
}

/// A `.creds` file for a new user of `account`.
fn creds(dir: &Path, name: &str, account: &KeyPair) -> PathBuf {
    let user = KeyPair::new_user();
    let token = jwt(
        account,
        &user.public_key(),
        name,
        json!({
            "type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1
        }),
    );
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    write(dir, &format!("{name}.creds"), &text)
}

#[tokio::test]
async fn a_creds_file_authenticates_under_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "operator",
        json!({"type": "operator", "version": 2}),
    );
    let server = Server::start(
        dir.path(),
        &format!(
            "operator: \"{operator_jwt}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n}}",
            account.public_key(),
            account_jwt(&operator, &account),
        ),
    );
    let good = creds(dir.path(), "good", &account);
    assert_connects(&server.config(|c| c.nats_creds = Some(good.clone()))).await;

    // A user of an account the operator never signed.
    let outsider = creds(dir.path(), "outsider", &KeyPair::new_account());
    assert_unauthorized(&server.config(|c| c.nats_creds = Some(outsider))).await;
    assert_unauthorized(&server.config(|_| {})).await;

    let garbled = write(dir.path(), "garbled.creds", "not a creds file");
    let why = refused(&server.config(|c| c.nats_creds = Some(garbled))).await;
    assert!(why.contains("is not a NATS credentials file"), "{why}");
    let why = refused(&server.config(|c| {
        c.nats_creds = Some(good);
        c.nats_token = Some(Secret::new("t"));
    }))
    .await;
    assert!(
        why.contains("set one way to authenticate to NATS, not nats_creds and nats_token"),
        "{why}"
    );
}

/// A CA and what it signed, as PEM files in a directory.
struct Pki {
    ca: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    /// A new self-signed CA, written to `<dir>/<name>-ca.pem`.
    fn new(dir: &Path, name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = params.self_signed(&key).unwrap();
        Self {
            ca: write(dir, &format!("{name}-ca.pem"), &ca.pem()),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` signed by the CA: its PEM file and its
    /// key's, `<dir>/<file>.pem` and `<dir>/<file>-key.pem`.
    fn sign(&self, dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            write(dir, &format!("{file}.pem"), &cert.pem()),
            write(dir, &format!("{file}-key.pem"), &key.serialize_pem()),
        )
    }
}

/// A server with a certificate for 127.0.0.1 from `pki`, verifying client
/// certificates against the same CA when `verify`.
fn tls_server(dir: &Path, pki: &Pki, verify: bool) -> Server {
    let (cert, key) = pki.sign(dir, "server", &["127.0.0.1", "localhost"]);
    Server::start(
        dir,
        &format!(
            "tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n  ca_file: {ca:?}\n  verify: {verify}\n}}",
            ca = pki.ca,
        ),
    )
}

#[tokio::test]
async fn tls_checks_the_server_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ours");
    let server = tls_server(dir.path(), &pki, false);
    let ca = pki.ca.clone();
    assert_connects(&server.config(|c| c.nats_tls_ca = Some(ca.clone()))).await;
    let tls_url = server.url.replace("nats://", "tls://");
    assert_connects(&server.config(|c| {
        c.nats_url = tls_url;
        c.nats_tls_ca = Some(ca.clone());
    }))
    .await;

    // Without our CA the server's certificate is not trusted.
    let other = Pki::new(dir.path(), "other");
    for config in [
        server.config(|c| c.nats_tls_ca = Some(other.ca.clone())),
        server.config(|_| {}),
    ] {
        let why = refused(&config).await;
        assert!(
            why.contains("invalid peer certificate: UnknownIssuer"),
            "{why}"
        );
    }

    // A plain server is refused once TLS is asked for, by a CA or by
    // `nats_tls_required`, rather than talked to in the clear.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Server::start(plain_dir.path(), "");
    assert_connects(&plain.config(|_| {})).await;
    for config in [
        plain.config(|c| c.nats_tls_ca = Some(ca.clone())),
        plain.config(|c| c.nats_tls_required = true),
    ] {
        // The server's plain-text answer to the TLS handshake.
        let why = refused(&config).await;
        assert!(why.contains("InvalidContentType"), "{why}");
    }

    let not_pem = write(dir.path(), "not.pem", "hello");
    let why = refused(&server.config(|c| c.nats_tls_ca = Some(not_pem))).await;
    assert!(why.contains("holds no PEM certificate"), "{why}");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ours");
    let server = tls_server(dir.path(), &pki, true);
    let (cert, key) = pki.sign(dir.path(), "client", &["oxbase"]);
    let with_cert = |cert: &Path, key: &Path| {
        let (ca, cert, key) = (pki.ca.clone(), cert.to_owned(), key.to_owned());
        server.config(move |c| {
            c.nats_tls_ca = Some(ca);
            c.nats_tls_cert = Some(cert);
            c.nats_tls_key = Some(key);
        })
    };
    assert_connects(&with_cert(&cert, &key)).await;

    let ca = pki.ca.clone();
    let why = refused(&server.config(|c| c.nats_tls_ca = Some(ca.clone()))).await;
    assert!(why.contains("CertificateRequired"), "{why}");
    let other = Pki::new(dir.path(), "other");
    let (foreign_cert, foreign_key) = other.sign(dir.path(), "foreign", &["oxbase"]);
    let why = refused(&with_cert(&foreign_cert, &foreign_key)).await;
    assert!(why.contains("UnknownCA"), "{why}");

    let why = refused(&server.config(|c| {
        c.nats_tls_ca = Some(ca.clone());
        c.nats_tls_cert = Some(cert.clone());
    }))
    .await;
    assert!(
        why.contains("nats_tls_cert is set without nats_tls_key"),
        "{why}"
    );
    let why = refused(&with_cert(&cert, &cert)).await;
    assert!(why.contains("holds no PEM private key"), "{why}");
    let why = refused(&with_cert(&dir.path().join("missing.pem"), &key)).await;
    assert!(why.contains("cannot read nats_tls_cert"), "{why}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let config = Config {
        nats_token: Some(Secret::new("the-token")),
        nats_password: Some(Secret::new("the-password")),
        ..Config::default()
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains("the-token") && !shown.contains("the-password"));
}

#[test]
fn settings_come_from_oxbase_variables() {
    let env = [
        ("OXBASE_NATS_CREDS", "/etc/nats/app.creds"),
        ("OXBASE_NATS_NKEY_SEED", "/etc/nats/app.nk"),
        ("OXBASE_NATS_TOKEN", "tok"),
        ("OXBASE_NATS_USER", "alice"),
        ("OXBASE_NATS_PASSWORD", "pw"),
        ("OXBASE_NATS_TLS_CA", "/etc/nats/ca.pem"),
        ("OXBASE_NATS_TLS_CERT", "/etc/nats/client.pem"),
        ("OXBASE_NATS_TLS_KEY", "/etc/nats/client-key.pem"),
        ("OXBASE_NATS_TLS_REQUIRED", "true"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::load_from(&oxbase::sections(), None, env, &[]).unwrap();
    let path = |p: &str| Some(PathBuf::from(p));
    assert_eq!(config.nats_creds, path("/etc/nats/app.creds"));
    assert_eq!(config.nats_nkey_seed, path("/etc/nats/app.nk"));
    assert_eq!(config.nats_token, Some(Secret::new("tok")));
    assert_eq!(config.nats_user.as_deref(), Some("alice"));
    assert_eq!(config.nats_password, Some(Secret::new("pw")));
    assert_eq!(config.nats_tls_ca, path("/etc/nats/ca.pem"));
    assert_eq!(config.nats_tls_cert, path("/etc/nats/client.pem"));
    assert_eq!(config.nats_tls_key, path("/etc/nats/client-key.pem"));
    assert!(config.nats_tls_required);
}
