//! Multi-factor authentication, as Parse Server's `mfa` adapter: a user
//! enrols a TOTP secret, then logs in with the password and a token (or a
//! recovery code); `POST /challenge`. Tokens are computed here with an
//! HMAC of the test's own, as an authenticator app would.

use std::time::{SystemTime, UNIX_EPOCH};

use oxbase_objects::{AuthConfig, ProviderConfig};
use reqwest::Method;
use ring::hmac;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error};
use crate::users::{User, as_user, signup};

/// A base32 secret of 32 characters (20 bytes), as `otpauth` makes them.
const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const OTHER_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn base32(text: &str) -> Vec<u8> {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.chars() {
        value = (value << 5) | alphabet.find(c).unwrap() as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

/// The RFC 6238 token of `secret` `steps` periods of 30 s from now.
fn totp_at(secret: &str, algorithm: hmac::Algorithm, digits: u32, steps: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let counter = (now / 30 + steps) as u64;
    let tag = hmac::sign(
        &hmac::Key::new(algorithm, &base32(secret)),
        &counter.to_be_bytes(),
    );
    let tag = tag.as_ref();
    let offset = (tag[tag.len() - 1] & 0x0f) as usize;
    let code = u32::from_be_bytes(tag[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!(
        "{:0width$}",
        code % 10u32.pow(digits),
        width = digits as usize
    )
}

fn totp(secret: &str) -> String {
    totp_at(secret, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 6, 0)
}

/// A six-digit token that is none of those the server accepts now.
fn wrong_token(secret: &str) -> String {
    let accepted: Vec<String> = (-1..=1)
        .map(|s| totp_at(secret, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 6, s))
        .collect();
    (0..4)
        .map(|n| format!("{n:06}"))
        .find(|t| !accepted.contains(t))
        .unwrap()
}

fn mfa(options: &[&str]) -> ProviderConfig {
    ProviderConfig {
        options: options.iter().map(|o| (*o).to_owned()).collect(),
        ..ProviderConfig::default()
    }
}

async fn server_with(provider: ProviderConfig) -> TestServer {
    TestServer::start_with(move |config| {
        config.update_section(|auth: &mut AuthConfig| {
            auth.providers.insert("mfa".into(), provider.clone());
        });
    })
    .await
}

async fn server() -> TestServer {
    server_with(mfa(&["TOTP"])).await
}

async fn put_user(server: &TestServer, user: &User, body: Value) -> (u16, Value) {
    as_user(
        server,
        &user.token,
        Method::PUT,
        &format!("users/{}", user.id),
        Some(body),
    )
    .await
}

/// Enrols the user with `secret`: the recovery codes the server answers.
async fn enrol(server: &TestServer, user: &User, secret: &str) -> Vec<String> {
    let enrolled = put_user(
        server,
        user,
        json!({"authData": {"mfa": {"secret": secret, "token": totp(secret)}}}),
    )
    .await;
    assert_eq!(enrolled.0, 200, "{}", enrolled.1);
    let recovery = enrolled.1["authDataResponse"]["mfa"]["recovery"]
        .as_str()
        .unwrap_or_else(|| panic!("no recovery codes in {}", enrolled.1));
    recovery.split(", ").map(str::to_owned).collect()
}

async fn log_in(server: &TestServer, name: &str, auth_data: Option<Value>) -> (u16, Value) {
    let mut body = json!({"username": name, "password": format!("{name}-pw")});
    if let Some(auth_data) = auth_data {
        body["authData"] = auth_data;
    }
    server.post("login", body).await
}

async fn stored_mfa(server: &TestServer, user: &User) -> Value {
    let (status, body) = server
        .master_json(Method::GET, &format!("users/{}", user.id), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["authData"]["mfa"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_stores_the_secret_and_answers_recovery_codes() {
    let server = server().await;
    let ada = signup(&server, "ada").await;
    let recovery = enrol(&server, &ada, SECRET).await;
    assert_eq!(recovery.len(), 2);
    for code in &recovery {
        assert_eq!(code.len(), 30);
        assert!(code.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
    }
    // Parse's layout: the secret and the recovery codes, never the token.
    assert_eq!(
        stored_mfa(&server, &ada).await,
        json!({"secret": SECRET, "recovery": recovery})
    );
    // The user reads whether MFA is on, never the secret.
    for path in ["users/me".to_owned(), format!("users/{}", ada.id)] {
        let (status, me) = as_user(&server, &ada.token, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(
            me["authData"],
            json!({"mfa": {"status": "enabled"}}),
            "{path}"
        );
    }
    let (_, found) = as_user(&server, &ada.token, Method::GET, "classes/_User", None).await;
    assert_eq!(
        found["results"][0]["authData"],
        json!({"mfa": {"status": "enabled"}})
    );
    let (_, all) = server.master_json(Method::GET, "classes/_User", None).await;
    assert_eq!(all["results"][0]["authData"]["mfa"]["secret"], SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_needs_the_token_or_a_recovery_code() {
    let server = server().await;
    let bob = signup(&server, "bob").await;
    let recovery = enrol(&server, &bob, SECRET).await;

    let missing = log_in(&server, "bob", None).await;
    assert_eq!(
        missing,
        (
            400,
            json!({"code": -1, "error": "Missing additional authData mfa"})
        )
    );
    let null = log_in(&server, "bob", Some(json!({"mfa": null}))).await;
    assert_eq!(null.1["error"], "Missing additional authData mfa");
    let wrong = log_in(
        &server,
        "bob",
        Some(json!({"mfa": {"token": wrong_token(SECRET)}})),
    )
    .await;
    assert_eq!(
        wrong,
        (400, json!({"code": 141, "error": "Invalid MFA token"}))
    );
    let number = log_in(&server, "bob", Some(json!({"mfa": {"token": 123456}}))).await;
    assert_eq!(number.1, json!({"code": 141, "error": "Invalid MFA token"}));
    let empty = log_in(&server, "bob", Some(json!({"mfa": {}}))).await;
    assert_eq!(empty.1, json!({"code": 141, "error": "Invalid MFA token"}));
    // A wrong password is refused before the token is looked at.
    let (status, body) = server
        .post(
            "login",
            json!({"username": "bob", "password": "nope", "authData": {"mfa": {"token": totp(SECRET)}}}),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!(101)));

    let (status, body) = log_in(
        &server,
        "bob",
        Some(json!({"mfa": {"token": totp(SECRET)}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectId"], bob.id);
    assert_eq!(body["authData"], json!({"mfa": {"status": "enabled"}}));
    assert_eq!(body["authDataResponse"], json!({}));
    let token = body["sessionToken"].as_str().unwrap();
    let (status, me) = as_user(&server, token, Method::GET, "users/me", None).await;
    assert_eq!((status, me["objectId"].clone()), (200, json!(bob.id)));
    // A token of the period before still passes (the `otpauth` window).
    let before = totp_at(SECRET, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 6, -1);
    let (status, body) = log_in(&server, "bob", Some(json!({"mfa": {"token": before}}))).await;
    assert_eq!(status, 200, "{body}");
    // The token is not stored.
    assert_eq!(
        stored_mfa(&server, &bob).await,
        json!({"secret": SECRET, "recovery": recovery})
    );

    // A recovery code logs in once, and is used up.
    let (status, body) = log_in(&server, "bob", Some(json!({"mfa": {"token": recovery[1]}}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stored_mfa(&server, &bob).await,
        json!({"secret": SECRET, "recovery": [recovery[0]]})
    );
    let again = log_in(&server, "bob", Some(json!({"mfa": {"token": recovery[1]}}))).await;
    assert_eq!(again.1, json!({"code": 141, "error": "Invalid MFA token"}));

    // The master key logs the user in unchecked, as in Parse, and sees the
    // stored data; the enrolment stays.
    let (status, body) = server
        .master_json(
            Method::POST,
            "login",
            Some(json!({"username": "bob", "password": "bob-pw", "authData": {"mfa": {"token": "x"}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["authData"]["mfa"]["secret"], SECRET);
    assert_eq!(
        stored_mfa(&server, &bob).await,
        json!({"secret": SECRET, "recovery": [recovery[0]]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_secret_needs_the_old_token_unless_master() {
    let server = server().await;
    let cy = signup(&server, "cy").await;
    enrol(&server, &cy, SECRET).await;
    let new = json!({"secret": OTHER_SECRET, "token": totp(OTHER_SECRET)});

    let without_old = put_user(&server, &cy, json!({"authData": {"mfa": new}})).await;
    assert_eq!(
        without_old,
        (400, json!({"code": 141, "error": "Invalid MFA token"}))
    );
    let mut wrong_old = new.clone();
    wrong_old["old"] = json!(wrong_token(SECRET));
    let refused = put_user(&server, &cy, json!({"authData": {"mfa": wrong_old}})).await;
    assert_eq!(
        refused.1,
        json!({"code": 141, "error": "Invalid MFA token"})
    );
    assert_eq!(stored_mfa(&server, &cy).await["secret"], SECRET);

    let mut with_old = new.clone();
    with_old["old"] = json!(totp(SECRET));
    let (status, body) = put_user(&server, &cy, json!({"authData": {"mfa": with_old}})).await;
    assert_eq!(status, 200, "{body}");
    let recovery = body["authDataResponse"]["mfa"]["recovery"]
        .as_str()
        .unwrap();
    assert_eq!(recovery.split(", ").count(), 2);
    assert_eq!(stored_mfa(&server, &cy).await["secret"], OTHER_SECRET);
    let (status, _) = log_in(
        &server,
        "cy",
        Some(json!({"mfa": {"token": totp(OTHER_SECRET)}})),
    )
    .await;
    assert_eq!(status, 200);

    // The master key sets the data as given, unchecked, as Parse does.
    let (status, body) = server
        .master_json(
            Method::PUT,
            &format!("users/{}", cy.id),
            Some(json!({"authData": {"mfa": {"secret": SECRET, "recovery": ["r1"]}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stored_mfa(&server, &cy).await,
        json!({"secret": SECRET, "recovery": ["r1"]})
    );
    let (status, _) = log_in(&server, "cy", Some(json!({"mfa": {"token": "r1"}}))).await;
    assert_eq!(status, 200);

    // Unlinking turns MFA off: the password alone logs in again.
    let (status, body) = put_user(&server, &cy, json!({"authData": {"mfa": null}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["authDataResponse"], json!({}));
    let (status, body) = log_in(&server, "cy", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("authData").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrolments_get_parse_errors() {
    let server = server().await;
    let dee = signup(&server, "dee").await;
    let invalid_data = json!({"code": 141, "error": "Invalid MFA data"});
    let invalid_token = json!({"code": 141, "error": "Invalid MFA token"});
    let cases = [
        (
            json!({"secret": "JBSWY3DPEHPK3PXP", "token": totp("JBSWY3DPEHPK3PXP")}),
            &invalid_data,
        ),
        (json!({"secret": SECRET}), &invalid_data),
        (json!({"token": totp(SECRET)}), &invalid_data),
        (
            json!({"secret": 12345678901234567890u64, "token": "123456"}),
            &invalid_data,
        ),
        (json!({"secret": SECRET, "token": 123456}), &invalid_token),
        (
            json!({"secret": SECRET, "token": wrong_token(SECRET)}),
            &invalid_token,
        ),
    ];
    for (data, expected) in cases {
        let refused = put_user(&server, &dee, json!({"authData": {"mfa": data}})).await;
        assert_eq!(refused, (400, expected.clone()), "{data}");
    }
    let bad_char = put_user(
        &server,
        &dee,
        json!({"authData": {"mfa": {"secret": "JBSWY3DPEHPK3PXP1BSWY3DP", "token": "123456"}}}),
    )
    .await;
    assert_eq!(
        bad_char.1,
        json!({"code": 141, "error": "Invalid character found: 1"})
    );
    assert!(stored_mfa(&server, &dee).await.is_null());
    // Nothing was enrolled: the password alone still logs in.
    assert_eq!(log_in(&server, "dee", None).await.0, 200);

    // Sign-up may enrol at once, as in Parse.
    let (status, body) = server
        .post(
            "users",
            json!({"username": "eve", "password": "eve-pw", "authData": {"mfa": {"secret": SECRET, "token": totp(SECRET)}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["authDataResponse"]["mfa"]["recovery"].is_string(),
        "{body}"
    );
    assert_eq!(log_in(&server, "eve", None).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_algorithms_and_lengths() {
    let server = server_with(ProviderConfig {
        digits: 8,
        algorithm: "SHA256".into(),
        ..mfa(&["TOTP"])
    })
    .await;
    let fay = signup(&server, "fay").await;
    let token = |steps| totp_at(SECRET, hmac::HMAC_SHA256, 8, steps);
    let sha1 = put_user(
        &server,
        &fay,
        json!({"authData": {"mfa": {"secret": SECRET, "token": totp_at(SECRET, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 8, 0)}}}),
    )
    .await;
    assert_eq!(sha1.1["error"], "Invalid MFA token");
    let (status, body) = put_user(
        &server,
        &fay,
        json!({"authData": {"mfa": {"secret": SECRET, "token": token(0)}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = log_in(&server, "fay", Some(json!({"mfa": {"token": token(1)}}))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_data_log_ins_need_the_second_factor_too() {
    let server = server().await;
    let (status, body) = server
        .post(
            "users",
            json!({"authData": {"anonymous": {"id": "anon-gus"}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["authDataResponse"], json!({}));
    let gus = User {
        id: body["objectId"].as_str().unwrap().to_owned(),
        token: body["sessionToken"].as_str().unwrap().to_owned(),
    };
    let recovery = enrol(&server, &gus, SECRET).await;
    assert_eq!(stored_mfa(&server, &gus).await["secret"], SECRET);

    let anonymous = json!({"anonymous": {"id": "anon-gus"}});
    let refused = server.post("users", json!({"authData": anonymous})).await;
    assert_error(&refused, 400, -1);
    assert_eq!(refused.1["error"], "Missing additional authData mfa");
    let wrong = server
        .post(
            "users",
            json!({"authData": {"anonymous": {"id": "anon-gus"}, "mfa": {"token": wrong_token(SECRET)}}}),
        )
        .await;
    assert_eq!(wrong.1, json!({"code": 141, "error": "Invalid MFA token"}));
    let (status, body) = server
        .post(
            "users",
            json!({"authData": {"anonymous": {"id": "anon-gus"}, "mfa": {"token": recovery[0]}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectId"], gus.id);
    assert_eq!(
        body["authData"],
        json!({"anonymous": {"id": "anon-gus"}, "mfa": {"status": "enabled"}})
    );
    assert_eq!(body["authDataResponse"], json!({}));
    assert_eq!(
        stored_mfa(&server, &gus).await,
        json!({"secret": SECRET, "recovery": [recovery[1]]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mfa_configured_enrolled_users_are_refused() {
    let server = TestServer::start().await;
    let hal = signup(&server, "hal").await;
    let enrol = put_user(
        &server,
        &hal,
        json!({"authData": {"mfa": {"secret": SECRET, "token": totp(SECRET)}}}),
    )
    .await;
    assert_error(&enrol, 400, 252);
    assert!(
        enrol.1["error"]
            .as_str()
            .unwrap()
            .contains("not configured")
    );
    let by_master = server
        .master_json(
            Method::PUT,
            &format!("users/{}", hal.id),
            Some(json!({"authData": {"mfa": {"secret": SECRET, "recovery": []}}})),
        )
        .await;
    assert_error(&by_master, 400, 252);
    let disabled = server_with(ProviderConfig {
        enabled: false,
        ..mfa(&[])
    })
    .await;
    let ivy = signup(&disabled, "ivy").await;
    let refused = put_user(
        &disabled,
        &ivy,
        json!({"authData": {"mfa": {"secret": SECRET, "token": totp(SECRET)}}}),
    )
    .await;
    assert_eq!(
        refused.1,
        json!({"code": 252, "error": "This authentication method is unsupported."})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_checks_who_asks_and_answers_no_challenges() {
    let server = server().await;
    let jo = signup(&server, "jo").await;
    enrol(&server, &jo, SECRET).await;
    let (status, anon) = server
        .post(
            "users",
            json!({"authData": {"anonymous": {"id": "anon-jo"}}}),
        )
        .await;
    assert_eq!(status, 201, "{anon}");

    let other = |error: &str| (400, json!({"code": -1, "error": error}));
    assert_eq!(
        server.post("challenge", json!({})).await,
        other("Nothing to challenge.")
    );
    assert_eq!(
        server.post("challenge", json!({"username": "jo"})).await,
        other("You provided username or email, you need to also provide password.")
    );
    let wrong = server
        .post("challenge", json!({"username": "jo", "password": "nope"}))
        .await;
    assert_eq!(
        wrong,
        (
            404,
            json!({"code": 101, "error": "Invalid username/password."})
        )
    );
    assert_eq!(
        server
            .post("challenge", json!({"username": "jo", "password": "jo-pw"}))
            .await,
        other("Nothing to challenge.")
    );
    assert_eq!(
        server
            .post(
                "challenge",
                json!({"username": "jo", "password": "jo-pw", "challengeData": "x"})
            )
            .await,
        other("challengeData should be an object.")
    );
    // The password alone answers: a challenge comes before the second factor.
    let ok = (200, json!({"challengeData": {}}));
    assert_eq!(
        server
            .post(
                "challenge",
                json!({"username": "jo", "password": "jo-pw", "challengeData": {"mfa": {}}})
            )
            .await,
        ok
    );
    assert_eq!(
        server
            .post("challenge", json!({"challengeData": {"mfa": {}}}))
            .await,
        ok
    );
    let by_auth_data = |auth_data: Value| {
        server.post(
            "challenge",
            json!({"challengeData": {"mfa": {}}, "authData": auth_data}),
        )
    };
    assert_eq!(
        by_auth_data(json!("x")).await,
        other("authData should be an object.")
    );
    assert_eq!(
        by_auth_data(json!({"anonymous": "x"})).await,
        other("authData.anonymous should be an object.")
    );
    assert_eq!(
        by_auth_data(json!({"anonymous": {"id": "a"}, "b": {"id": "c"}})).await,
        other("You cannot provide more than one authData provider with an id.")
    );
    assert_eq!(
        by_auth_data(json!({"anonymous": {"id": "nope"}})).await,
        (404, json!({"code": 101, "error": "User not found."}))
    );
    assert_eq!(
        by_auth_data(json!({"anonymous": {"id": "anon-jo"}})).await,
        ok
    );
    assert_eq!(
        server
            .post(
                "challenge",
                json!({"username": "jo", "password": "jo-pw", "challengeData": {"mfa": {}}, "authData": {"anonymous": {"id": "anon-jo"}}})
            )
            .await,
        other("You cannot provide username/email and authData, only use one identification method.")
    );
}
