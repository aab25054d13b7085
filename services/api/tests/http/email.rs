//! Email verification and password reset through real mail: the server
//! sends over SMTP to a local sink (ops/smtp-sink.py, on aiosmtpd, which
//! `bash ops/test.sh` installs into .oxbase/tools), and the tests follow
//! the mailed links as a browser would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oxbase_objects::{EmailConfig, PasswordPolicy, SmtpTls};
use reqwest::{Method, redirect};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{APP_ID, TestServer, assert_error, read};
use crate::users::as_user;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The SMTP sink: every mail it receives lands in its directory.
struct Sink {
    port: u16,
    dir: tempfile::TempDir,
    seen: usize,
    _child: Child,
}

impl Sink {
    async fn start() -> Self {
        let root = repo_root();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(root.join("ops/smtp-sink.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .env("PYTHONPATH", root.join(".oxbase/tools"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs ops/smtp-sink.py");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
            "the SMTP sink did not start ({ready:?}): run `bash ops/test.sh`, which installs aiosmtpd into .oxbase/tools"
        );
        Sink {
            port,
            dir,
            seen: 0,
            _child: child,
        }
    }

    /// The next mail, as received.
    async fn next_mail(&mut self) -> String {
        let path = self.dir.path().join(format!("{}.eml", self.seen + 1));
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&path) {
                self.seen += 1;
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail arrived at the SMTP sink");
    }

    /// No further mail within a moment.
    async fn assert_no_mail(&self) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let next = self.dir.path().join(format!("{}.eml", self.seen + 1));
        assert!(
            !next.exists(),
            "unexpected mail: {:?}",
            std::fs::read_to_string(next)
        );
    }
}

/// A mail's text with quoted-printable undone (lettre uses it for lines
/// as long as a link).
fn decoded(mail: &str) -> String {
    let joined = mail.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The link a mail carries.
fn link_in(mail: &str) -> String {
    let mail = decoded(mail);
    let start = mail.find("http://").expect("a link in the mail");
    mail[start..].split_whitespace().next().unwrap().to_owned()
}

/// A server that mails through `sink`, its `[email]` as `adjust` leaves it.
async fn server_with(
    sink: &Sink,
    adjust: impl FnOnce(&mut EmailConfig, &mut PasswordPolicy),
) -> TestServer {
    let port = free_port();
    let smtp_port = sink.port;
    TestServer::start_with(move |config| {
        config.port = port;
        config.public_server_url = Some(format!("http://127.0.0.1:{port}/parse"));
        let mut email = EmailConfig {
            smtp_host: Some("127.0.0.1".into()),
            smtp_port,
            tls: SmtpTls::None,
            from: Some("Test App <no-reply@example.com>".into()),
            app_name: Some("Test App".into()),
            ..EmailConfig::default()
        };
        let mut policy = PasswordPolicy::default();
        adjust(&mut email, &mut policy);
        config.set_section(&email);
        config.set_section(&policy);
    })
    .await
}

/// A browser: no Parse headers, redirects left to the test.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

fn page_param(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(format!("x-parse-page-param-{name}"))
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn log_in(server: &TestServer, username: &str, password: &str) -> (u16, Value) {
    server
        .post("login", json!({"username": username, "password": password}))
        .await
}

async fn user(server: &TestServer, id: &str) -> Value {
    let (status, body) = server
        .master_json(Method::GET, &format!("users/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_link_verifies_the_email_and_opens_log_in() {
    let mut sink = Sink::start().await;
    let server = server_with(&sink, |email, _| {
        email.verify_user_emails = true;
        email.prevent_login_with_unverified_email = true;
    })
    .await;
    let (status, body) = server
        .post(
            "users",
            json!({"username": "ann", "password": "pw-1", "email": "ann@example.com"}),
        )
        .await;
    // No session until the email is verified, as Parse answers.
    assert_eq!(status, 201, "{body}");
    assert!(body.get("sessionToken").is_none(), "{body}");
    let id = body["objectId"].as_str().unwrap().to_owned();
    assert_eq!(user(&server, &id).await["emailVerified"], false);
    let refused = log_in(&server, "ann", "pw-1").await;
    assert_error(&refused, 400, 205);
    assert_eq!(refused.1["error"], "User email is not verified.");

    let mail = sink.next_mail().await;
    assert!(mail.contains("To: ann@example.com"), "{mail}");
    let link = link_in(&mail);
    let prefix = format!("{}/apps/{APP_ID}/verify_email?token=", server.base);
    assert!(link.starts_with(&prefix), "{link}");
    let page = browser().get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page_param(&page, "appname").as_deref(), Some("Test App"));
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Your email is verified.")
    );
    assert_eq!(user(&server, &id).await["emailVerified"], true);
    let (status, body) = log_in(&server, "ann", "pw-1").await;
    assert_eq!(status, 200, "{body}");

    // The token is spent: the link shows the invalid-link page.
    let again = browser().get(&link).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains("invalid"));

    // A new email needs verifying again, and gets its own mail.
    let token = body["sessionToken"].as_str().unwrap().to_owned();
    let (status, body) = as_user(
        &server,
        &token,
        Method::PUT,
        &format!("users/{id}"),
        Some(json!({"email": "ann2@example.com"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(user(&server, &id).await["emailVerified"], false);
    assert!(sink.next_mail().await.contains("To: ann2@example.com"));

    // Only the master key sets emailVerified.
    let forbidden = as_user(
        &server,
        &token,
        Method::PUT,
        &format!("users/{id}"),
        Some(json!({"emailVerified": true})),
    )
    .await;
    assert_error(&forbidden, 400, 119);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_email_request_follows_parse() {
    let mut sink = Sink::start().await;
    let server = server_with(&sink, |email, _| {
        email.verify_user_emails = true;
        email.prevent_login_with_unverified_email = true;
        email.prevent_signup_with_unverified_email = true;
    })
    .await;
    // Refused, but saved, as in Parse Server.
    let refused = server
        .post(
            "users",
            json!({"username": "bo", "password": "pw", "email": "bo@example.com"}),
        )
        .await;
    assert_error(&refused, 400, 205);
    let first = link_in(&sink.next_mail().await);

    assert_error(
        &server.post("verificationEmailRequest", json!({})).await,
        400,
        204,
    );
    assert_error(
        &server
            .post("verificationEmailRequest", json!({"email": 7}))
            .await,
        400,
        125,
    );
    // Unknown emails answer as known ones do.
    let unknown = server
        .post(
            "verificationEmailRequest",
            json!({"email": "who@example.com"}),
        )
        .await;
    assert_eq!(unknown, (200, json!({})));
    let again = server
        .post(
            "verificationEmailRequest",
            json!({"email": "bo@example.com"}),
        )
        .await;
    assert_eq!(again, (200, json!({})));
    let second = link_in(&sink.next_mail().await);
    assert_ne!(first, second, "a new token");
    // The first link is void now; the second works.
    let page = browser().get(&first).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("invalid"));
    let page = browser().get(&second).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("verified"));
    let (status, body) = log_in(&server, "bo", "pw").await;
    assert_eq!(status, 200, "{body}");
    // Verified: nothing more to send.
    let verified = server
        .post(
            "verificationEmailRequest",
            json!({"email": "bo@example.com"}),
        )
        .await;
    assert_eq!(verified, (200, json!({})));
    sink.assert_no_mail().await;
}

/// Requests a reset for `email` and answers the mailed link.
async fn reset_link(server: &TestServer, sink: &mut Sink, email: &str) -> String {
    let answer = server
        .post("requestPasswordReset", json!({"email": email}))
        .await;
    assert_eq!(answer, (200, json!({})));
    link_in(&sink.next_mail().await)
}

/// Submits the reset form as a browser does.
async fn submit_reset(server: &TestServer, token: &str, password: &str) -> reqwest::Response {
    browser()
        .post(format!(
            "{}/apps/{APP_ID}/request_password_reset",
            server.base
        ))
        .form(&[("token", token), ("new_password", password)])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_link_resets_the_password_once() {
    let mut sink = Sink::start().await;
    let server = server_with(&sink, |_, _| {}).await;
    let (status, body) = server
        .post(
            "users",
            json!({"username": "cy", "password": "old-pw", "email": "cy@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["sessionToken"].as_str().unwrap().to_owned();

    let link = reset_link(&server, &mut sink, "cy@example.com").await;
    let prefix = format!(
        "{}/apps/{APP_ID}/request_password_reset?token=",
        server.base
    );
    assert!(link.starts_with(&prefix), "{link}");
    let token = link[prefix.len()..].to_owned();
    // The link opens the form, which carries the token.
    let form = browser().get(&link).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert_eq!(page_param(&form, "token").as_deref(), Some(token.as_str()));
    let html = form.text().await.unwrap();
    assert!(html.contains("name=\"new_password\""), "{html}");
    assert!(
        html.contains(&format!(
            "action=\"{}/apps/{APP_ID}/request_password_reset\"",
            server.base
        )),
        "{html}"
    );

    let done = submit_reset(&server, &token, "new-pw").await;
    assert_eq!(done.status(), 200);
    assert!(
        done.text()
            .await
            .unwrap()
            .contains("Your password was changed.")
    );
    let (status, body) = log_in(&server, "cy", "new-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_error(&log_in(&server, "cy", "old-pw").await, 404, 101);
    // The sessions from before the reset are over.
    let me = as_user(&server, &session, Method::GET, "users/me", None).await;
    assert_error(&me, 400, 209);

    // Spent: the link and the form refuse the token.
    let again = browser().get(&link).send().await.unwrap();
    assert!(again.text().await.unwrap().contains("invalid"));
    let refused = submit_reset(&server, &token, "other-pw").await;
    assert_eq!(
        page_param(&refused, "error").as_deref(),
        Some("Failed to reset password: username / email / token is invalid")
    );
    assert_error(&log_in(&server, "cy", "other-pw").await, 404, 101);

    // Scripts ask with X-Requested-With and get JSON.
    let link = reset_link(&server, &mut sink, "cy@example.com").await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let xhr = browser()
        .post(format!(
            "{}/apps/{APP_ID}/request_password_reset",
            server.base
        ))
        .header("X-Requested-With", "XMLHttpRequest")
        .json(&json!({"token": token, "new_password": "third-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(read(xhr).await, (200, json!("Password successfully reset")));
    let xhr = browser()
        .post(format!(
            "{}/apps/{APP_ID}/request_password_reset",
            server.base
        ))
        .header("X-Requested-With", "XMLHttpRequest")
        .json(&json!({"token": token, "new_password": "fourth-pw"}))
        .send()
        .await
        .unwrap();
    assert_error(&read(xhr).await, 400, -1);

    // Without a token or password, a browser is sent to the invalid page.
    let missing = browser()
        .post(format!(
            "{}/apps/{APP_ID}/request_password_reset",
            server.base
        ))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 303);
    let location = missing.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!(
            "{}/apps/password_reset_link_invalid.html?appId=",
            server.base
        )),
        "{location}"
    );
    let invalid = browser().get(&location).send().await.unwrap();
    assert_eq!(invalid.status(), 200);

    // Another app id is refused; an unknown page is not found.
    let other = browser()
        .get(format!(
            "{}/apps/other/request_password_reset?token=x",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(read(other).await, (403, json!({"error": "unauthorized"})));
    let unknown = browser()
        .get(format!("{}/apps/nothing.html", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_requests_answer_as_parse() {
    let mut sink = Sink::start().await;
    let server = server_with(&sink, |_, policy| {
        policy.reset_token_validity_duration = 0.5;
    })
    .await;
    assert_error(
        &server.post("requestPasswordReset", json!({})).await,
        400,
        204,
    );
    assert_error(
        &server
            .post("requestPasswordReset", json!({"token": 5}))
            .await,
        400,
        162,
    );
    // Unknown emails answer {}, as Parse Server 9 does by default.
    let unknown = server
        .post(
            "requestPasswordReset",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(unknown, (200, json!({})));
    sink.assert_no_mail().await;

    // A user without an email is found, and mailed, by its username.
    let (status, body) = server
        .post(
            "users",
            json!({"username": "dee@example.com", "password": "pw"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let link = reset_link(&server, &mut sink, "dee@example.com").await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let (status, body) = server
        .post(
            "users",
            json!({"username": "eve", "password": "pw", "email": "eve@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let eve_link = reset_link(&server, &mut sink, "eve@example.com").await;
    let eve_token = eve_link.split("token=").nth(1).unwrap().to_owned();

    // Past resetTokenValidityDuration the link has expired.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let expired = browser().get(&link).send().await.unwrap();
    assert!(expired.text().await.unwrap().contains("invalid"));
    let refused = submit_reset(&server, &token, "new-pw").await;
    assert_eq!(
        page_param(&refused, "error").as_deref(),
        Some("The password reset link has expired")
    );
    // An expired token asks for a new link, for a user with an email (as
    // in Parse, the token of one without names no address: 125).
    let renewed = server
        .post("requestPasswordReset", json!({"token": eve_token}))
        .await;
    assert_eq!(renewed, (200, json!({})));
    let fresh = link_in(&sink.next_mail().await);
    assert_ne!(fresh, eve_link);
    assert_error(
        &server
            .post("requestPasswordReset", json!({"token": token}))
            .await,
        400,
        125,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_email_the_routes_answer_as_parse_without_an_adapter() {
    let server = TestServer::start().await;
    for route in ["requestPasswordReset", "verificationEmailRequest"] {
        let answer = server.post(route, json!({"email": "a@example.com"})).await;
        assert_error(&answer, 500, 1);
        assert_eq!(
            answer.1["error"],
            "An appName, publicServerURL, and emailAdapter are required for password reset and email verification functionality."
        );
    }
    let page = browser()
        .get(format!(
            "{}/apps/{APP_ID}/verify_email?token=x",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
}

/// `[pages]`: the app's own page files, as Parse Server's `pagesPath`
/// serves them: Mustache templates, localized by subdirectory and by a JSON
/// of translations, other files served as they are, nothing outside the
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_own_pages_are_served_localized() {
    let pages = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = pages.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "password_reset.html",
        "<h1>{{appName}}</h1><p>{{title}}</p><form><input name=token value=\"{{token}}\"></form>{{#error}}<b>{{error}}</b>{{/error}}",
    );
    write("de/password_reset.html", "DE {{title}} {{token}} {{brand}}");
    write(
        "password_reset_success.html",
        "Done, {{appName}} ({{locale}}) {{title}}",
    );
    write("style.css", "h1 { color: red }");
    let translations = pages.path().join("translations.json");
    std::fs::write(
        &translations,
        json!({
            "en": {"translation": {"title": "Reset for {{appName}}"}},
            "de": {"translation": {"title": "Neues Passwort für {{appName}}"}},
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        pages.path().parent().unwrap().join("outside.html"),
        "secret",
    )
    .ok();

    let mut sink = Sink::start().await;
    let port = free_port();
    let smtp_port = sink.port;
    let dir = pages.path().to_owned();
    let server = TestServer::start_with(move |config| {
        config.port = port;
        config.public_server_url = Some(format!("http://127.0.0.1:{port}/parse"));
        config.set_section(&EmailConfig {
            smtp_host: Some("127.0.0.1".into()),
            smtp_port,
            tls: SmtpTls::None,
            from: Some("Test App <no-reply@example.com>".into()),
            app_name: Some("Test App".into()),
            ..EmailConfig::default()
        });
        config.set_section(&oxbase_api::PagesConfig {
            path: Some(dir),
            enable_localization: true,
            localization_json_path: Some(translations),
            placeholders: [("brand".to_owned(), "Acme".to_owned())].into(),
            ..Default::default()
        });
    })
    .await;
    let (status, _) = server
        .post(
            "users",
            json!({"username": "ann", "password": "first-pw", "email": "ann@example.com"}),
        )
        .await;
    assert_eq!(status, 201);
    let link = reset_link(&server, &mut sink, "ann@example.com").await;
    let token = link
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();

    // The mailed link, in German: the de page, with the translation and the
    // configured placeholder.
    let response = browser()
        .get(format!("{link}&locale=de-AT"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(page_param(&response, "locale").as_deref(), Some("de-AT"));
    assert_eq!(
        response.text().await.unwrap(),
        format!("DE Neues Passwort für Test App {token} Acme")
    );
    // Without a locale: the base page, the fallback translation, escaped.
    let response = browser().get(&link).send().await.unwrap();
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with("<h1>Test App</h1><p>Reset for Test App</p>"),
        "{text}"
    );

    // The form's POST answers the success page (the base file: there is
    // no de one) in German, as Parse answers it.
    let response = browser()
        .post(format!(
            "{}/apps/{APP_ID}/request_password_reset",
            server.base
        ))
        .form(&[
            ("token", token.as_str()),
            ("new_password", "second-pw"),
            ("locale", "de"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "Done, Test App (de) Neues Passwort für Test App"
    );
    // A page opened directly takes the locale of its query.
    let page = browser()
        .get(format!(
            "{}/apps/password_reset_success.html?locale=en",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.text().await.unwrap(),
        "Done, Test App (en) Reset for Test App"
    );
    // A redirect to a page goes to its localized file.
    let response = browser()
        .post(format!(
            "{}/apps/{APP_ID}/request_password_reset",
            server.base
        ))
        .form(&[("locale", "de")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!(
            "{}/apps/password_reset_link_invalid.html?",
            server.base
        )),
        "{location}"
    );
    assert_eq!(log_in(&server, "ann", "second-pw").await.0, 200);

    // Other files as they are; nothing outside the directory.
    let css = browser()
        .get(format!("{}/apps/style.css", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.text().await.unwrap(), "h1 { color: red }");
    for path in [
        "../outside.html",
        "%2e%2e/outside.html",
        "de/../../outside.html",
        "missing.html",
    ] {
        let response = browser()
            .get(format!("{}/apps/{path}", server.base))
            .send()
            .await
            .unwrap();
        // A client may resolve `..` itself, leaving a path outside the
        // pages (403 without keys); none of them gets the file.
        assert!([403, 404].contains(&response.status().as_u16()), "{path}");
        assert!(!response.text().await.unwrap().contains("secret"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_may_ignore_email_verification() {
    let sink = Sink::start().await;
    let server = server_with(&sink, |email, _| {
        email.verify_user_emails = true;
        email.prevent_login_with_unverified_email = true;
    })
    .await;
    let (status, body) = server
        .post(
            "users",
            json!({"username": "eve", "password": "pw-1", "email": "eve@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["objectId"].as_str().unwrap().to_owned();
    let ignoring = json!({"username": "eve", "password": "pw-1", "ignoreEmailVerification": true});
    // Parse's rule: the flag counts with the master key only.
    assert_error(&server.post("login", ignoring.clone()).await, 400, 205);
    assert_error(
        &server
            .master_json(
                Method::POST,
                "login",
                Some(json!({"username": "eve", "password": "pw-1"})),
            )
            .await,
        400,
        205,
    );
    let (status, login) = server
        .master_json(Method::POST, "login", Some(ignoring))
        .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["objectId"], id.as_str());
    assert!(login["sessionToken"].is_string(), "{login}");
    // In the query string too, and by email as the username.
    let (status, login) = read(
        server
            .master(Method::GET, "login")
            .query(&[
                ("username", "eve@example.com"),
                ("password", "pw-1"),
                ("ignoreEmailVerification", "true"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, login["objectId"].clone()),
        (200, json!(id)),
        "{login}"
    );
    // /verifyPassword follows the same rule; /loginAs never asks.
    assert_error(
        &server
            .post(
                "verifyPassword",
                json!({"username": "eve", "password": "pw-1"}),
            )
            .await,
        400,
        205,
    );
    let (status, checked) = server
        .master_json(
            Method::POST,
            "verifyPassword",
            Some(json!({"username": "eve", "password": "pw-1", "ignoreEmailVerification": 1})),
        )
        .await;
    assert_eq!(status, 200, "{checked}");
    let (status, as_eve) = server
        .master_json(Method::POST, "loginAs", Some(json!({"userId": id})))
        .await;
    assert_eq!(status, 200, "{as_eve}");
    assert!(as_eve["sessionToken"].is_string(), "{as_eve}");
}
