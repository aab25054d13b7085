//! Account rules as Parse Server 9 applies them: the account lockout, the
//! password policy, `/verifyPassword`, `/loginAs` and
//! `/upgradeToRevocableSession`.

use std::time::Duration;

use futures_util::future::join_all;
use oxbase_objects::{AccountLockout, PasswordPattern, PasswordPolicy};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, read};
use crate::users::{as_user, signup};

const INVALID_LOGIN: &str = "Invalid username/password.";

/// Locks after `threshold` failures, for `duration` minutes.
async fn with_lockout(threshold: u32, duration: f64) -> TestServer {
    TestServer::start_with(|config| {
        config.set_section(&AccountLockout {
            threshold,
            duration,
            unlock_on_password_reset: false,
        });
    })
    .await
}

async fn with_policy(policy: PasswordPolicy) -> TestServer {
    TestServer::start_with(|config| config.set_section(&policy)).await
}

async fn log_in(server: &TestServer, username: &str, password: &str) -> (u16, Value) {
    server
        .post("login", json!({"username": username, "password": password}))
        .await
}

fn locked_message(duration: &str) -> String {
    format!(
        "Your account is locked due to multiple failed login attempts. Please try again after {duration} minute(s)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_log_ins_lock_the_account_until_the_lock_ends() {
    // 0.02 minutes: 1.2 seconds.
    let server = with_lockout(3, 0.02).await;
    signup(&server, "eve").await;
    for _ in 0..3 {
        let refused = log_in(&server, "eve", "wrong").await;
        assert_eq!(refused, (404, json!({"code": 101, "error": INVALID_LOGIN})));
    }
    let locked = json!({"code": 101, "error": locked_message("0.02")});
    assert_eq!(log_in(&server, "eve", "wrong").await, (404, locked.clone()));
    // Locked means locked: the right password too, and /verifyPassword.
    assert_eq!(
        log_in(&server, "eve", "eve-pw").await,
        (404, locked.clone())
    );
    let verify = server
        .post(
            "verifyPassword",
            json!({"username": "eve", "password": "eve-pw"}),
        )
        .await;
    assert_eq!(verify, (404, locked));

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, body) = log_in(&server, "eve", "eve-pw").await;
    assert_eq!(status, 200, "{body}");
    // The success cleared the count: one failure is only a failure.
    let refused = log_in(&server, "eve", "wrong").await;
    assert_eq!(refused.1["error"], INVALID_LOGIN);
    // Unknown users are refused as a wrong password is, and never locked.
    for _ in 0..4 {
        let unknown = log_in(&server, "nobody", "wrong").await;
        assert_eq!(unknown, (404, json!({"code": 101, "error": INVALID_LOGIN})));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failed_log_ins_are_each_counted() {
    let server = with_lockout(5, 10.0).await;
    signup(&server, "mallory").await;
    let attempts = (0..12).map(|_| log_in(&server, "mallory", "guess"));
    let answers = join_all(attempts).await;
    let refused = answers
        .iter()
        .filter(|(_, body)| body["error"] == INVALID_LOGIN)
        .count();
    let locked = answers
        .iter()
        .filter(|(_, body)| body["error"] == locked_message("10").as_str())
        .count();
    // Each failure saw its own count: exactly the threshold got through
    // to "invalid", every other attempt found the account locked.
    assert_eq!((refused, locked), (5, 7), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_policy_refuses_weak_passwords() {
    let server = with_policy(PasswordPolicy {
        validator_pattern: Some(PasswordPattern::new("^(?=.*[0-9]).{6,}$").unwrap()),
        do_not_allow_username: true,
        ..PasswordPolicy::default()
    })
    .await;
    let weak = server
        .post("users", json!({"username": "bob", "password": "short"}))
        .await;
    let policy = "Password does not meet the Password Policy requirements.";
    assert_eq!(weak, (400, json!({"code": 142, "error": policy})));
    let named = server
        .post("users", json!({"username": "bob", "password": "bob12345"}))
        .await;
    let contains = "Password cannot contain your username.";
    assert_eq!(named, (400, json!({"code": 142, "error": contains})));
    let (status, body) = server
        .post("users", json!({"username": "bob", "password": "s3cret!"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["objectId"].as_str().unwrap();
    let token = body["sessionToken"].as_str().unwrap();

    // A change is checked too, against the stored username.
    let path = format!("users/{id}");
    let change = |password: &str| json!({ "password": password });
    let named = as_user(&server, token, Method::PUT, &path, Some(change("xbob99"))).await;
    assert_eq!(named, (400, json!({"code": 142, "error": contains})));
    let weak = as_user(&server, token, Method::PUT, &path, Some(change("nodigits"))).await;
    assert_eq!(weak.1["error"], policy);
    let (status, body) = as_user(&server, token, Method::PUT, &path, Some(change("n3w-one"))).await;
    assert_eq!(status, 200, "{body}");

    let server = with_policy(PasswordPolicy {
        validator_pattern: Some(PasswordPattern::new("^.{8,}$").unwrap()),
        validation_error: Some("At least 8 characters.".into()),
        ..PasswordPolicy::default()
    })
    .await;
    let short = server
        .post("users", json!({"username": "carol", "password": "short"}))
        .await;
    assert_eq!(
        short,
        (400, json!({"code": 142, "error": "At least 8 characters."}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_passwords_may_not_repeat_recent_ones() {
    let server = with_policy(PasswordPolicy {
        max_password_history: 2,
        ..PasswordPolicy::default()
    })
    .await;
    let user = signup(&server, "dan").await;
    let path = format!("users/{}", user.id);
    let mut token = user.token;
    let repeated = "New password should not be the same as last 2 passwords.";
    for (password, accepted) in [
        ("second", true),
        ("dan-pw", false),
        ("second", false),
        ("third", true),
        ("dan-pw", true),
    ] {
        let body = json!({ "password": password });
        let answer = as_user(&server, &token, Method::PUT, &path, Some(body)).await;
        if accepted {
            assert_eq!(answer.0, 200, "{password}: {}", answer.1);
            // A changed password ends the sessions; the answer has a new one.
            token = answer.1["sessionToken"].as_str().unwrap().to_owned();
        } else {
            assert_eq!(
                answer,
                (400, json!({"code": 142, "error": repeated})),
                "{password}"
            );
        }
    }
    // History is kept out of every answer.
    let (_, me) = as_user(&server, &token, Method::GET, "users/me", None).await;
    assert!(
        me.as_object()
            .unwrap()
            .keys()
            .all(|key| !key.starts_with('_')),
        "{me}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_password_refuses_log_ins() {
    // About 1.7 seconds.
    let server = with_policy(PasswordPolicy {
        max_password_age: 0.00002,
        ..PasswordPolicy::default()
    })
    .await;
    let user = signup(&server, "fay").await;
    let (status, body) = log_in(&server, "fay", "fay-pw").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let expired = "Your password has expired. Please reset your password.";
    let refused = log_in(&server, "fay", "fay-pw").await;
    assert_eq!(refused, (404, json!({"code": 101, "error": expired})));
    // /verifyPassword checks the password only, as in Parse Server.
    let (status, _) = server
        .post(
            "verifyPassword",
            json!({"username": "fay", "password": "fay-pw"}),
        )
        .await;
    assert_eq!(status, 200);
    // A new password starts the clock again.
    let (status, body) = server
        .master_json(
            Method::PUT,
            &format!("users/{}", user.id),
            Some(json!({"password": "renewed"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = log_in(&server, "fay", "renewed").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_password_answers_the_user_without_a_session() {
    let server = TestServer::start().await;
    let user = signup(&server, "gil").await;
    let (status, body) = read(
        server
            .request(Method::GET, "verifyPassword")
            .query(&[("username", "gil"), ("password", "gil-pw")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectId"], user.id.as_str());
    assert_eq!(body["username"], "gil");
    assert!(
        body.get("sessionToken").is_none() && body.get("password").is_none(),
        "{body}"
    );
    let (status, body) = server
        .post(
            "verifyPassword",
            json!({"email": "gil@example.com", "password": "gil-pw"}),
        )
        .await;
    assert_eq!((status, &body["objectId"]), (200, &json!(user.id)));

    let wrong = server
        .post(
            "verifyPassword",
            json!({"username": "gil", "password": "nope"}),
        )
        .await;
    assert_eq!(wrong, (404, json!({"code": 101, "error": INVALID_LOGIN})));
    let no_name = server
        .post("verifyPassword", json!({"password": "gil-pw"}))
        .await;
    assert_error(&no_name, 400, 200);
    let no_password = server
        .post("verifyPassword", json!({"username": "gil"}))
        .await;
    assert_error(&no_password, 400, 201);
    // No session came of it.
    let (_, sessions) = server
        .master_json(Method::GET, "classes/_Session", None)
        .await;
    assert_eq!(sessions["results"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_as_opens_a_session_for_the_master_key_only() {
    let server = TestServer::start().await;
    let user = signup(&server, "hal").await;
    let body = json!({ "userId": user.id });
    let refused = server.post("loginAs", body.clone()).await;
    assert_eq!(
        refused,
        (400, json!({"code": 119, "error": "Permission denied"}))
    );
    let refused = as_user(
        &server,
        &user.token,
        Method::POST,
        "loginAs",
        Some(body.clone()),
    )
    .await;
    assert_eq!(refused.1["code"], 119);
    let empty = server
        .master_json(Method::POST, "loginAs", Some(json!({})))
        .await;
    let message = "userId must not be empty, null, or undefined";
    assert_eq!(empty, (400, json!({"code": 162, "error": message})));
    let unknown = server
        .master_json(Method::POST, "loginAs", Some(json!({"userId": "nobody"})))
        .await;
    assert_eq!(
        unknown,
        (404, json!({"code": 101, "error": "user not found"}))
    );

    let (status, logged_in) = server
        .master_json(Method::POST, "loginAs", Some(body))
        .await;
    assert_eq!(status, 200, "{logged_in}");
    assert_eq!(logged_in["objectId"], user.id.as_str());
    assert_eq!(logged_in["username"], "hal");
    let token = logged_in["sessionToken"].as_str().unwrap();
    assert!(token.starts_with("r:") && token != user.token, "{token}");
    let (status, session) = as_user(&server, token, Method::GET, "sessions/me", None).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        session["createdWith"],
        json!({"action": "login", "authProvider": "masterkey"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_revocable_session_gives_a_new_session() {
    let server = TestServer::start().await;
    let user = signup(&server, "ivy").await;
    let anonymous = server.post("upgradeToRevocableSession", json!({})).await;
    assert_eq!(
        anonymous,
        (404, json!({"code": 101, "error": "invalid session"}))
    );
    let legacy = as_user(
        &server,
        "legacy-token",
        Method::POST,
        "upgradeToRevocableSession",
        None,
    )
    .await;
    assert_eq!(
        legacy,
        (
            400,
            json!({"code": 209, "error": "invalid legacy session token"})
        )
    );

    let (status, session) = as_user(
        &server,
        &user.token,
        Method::POST,
        "upgradeToRevocableSession",
        None,
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["createdWith"], json!({"action": "upgrade"}));
    assert_eq!(session["user"]["objectId"], user.id.as_str());
    let token = session["sessionToken"].as_str().unwrap();
    assert!(token.starts_with("r:") && token != user.token, "{token}");
    let (status, me) = as_user(&server, token, Method::GET, "users/me", None).await;
    assert_eq!((status, &me["objectId"]), (200, &json!(user.id)));
}
