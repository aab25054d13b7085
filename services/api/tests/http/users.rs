//! Users and sessions: sign-up, log-in, `me`, log-out, session rules.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, read};

/// A signed-up user: its id and session token.
pub struct User {
    pub id: String,
    pub token: String,
}

pub async fn signup(server: &TestServer, name: &str) -> User {
    let (status, body) = server
        .post(
            "users",
            json!({"username": name, "password": format!("{name}-pw"), "email": format!("{name}@example.com")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    User {
        id: body["objectId"].as_str().unwrap().to_owned(),
        token: body["sessionToken"].as_str().unwrap().to_owned(),
    }
}

/// A request made with a session token.
pub async fn as_user(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .request(method, path)
        .header("X-Parse-Session-Token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

fn code(response: &(u16, Value)) -> i64 {
    response.1["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_log_in_me_and_log_out() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "users",
            json!({"username": "ada", "password": "secret", "email": "ada@example.com", "age": 36}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["sessionToken"].as_str().unwrap().to_owned();
    assert!(token.starts_with("r:") && token.len() == 34, "{token}");
    let id = body["objectId"].as_str().unwrap().to_owned();

    let (status, me) = as_user(&server, &token, Method::GET, "users/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "ada");
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["sessionToken"], token.as_str());
    assert!(me.get("password").is_none() && me.get("_hashed_password").is_none());

    // GET and POST log-in both work, and make a new session each time.
    let (status, login) = read(
        server
            .request(Method::GET, "login")
            .query(&[("username", "ada"), ("password", "secret")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["objectId"], id.as_str());
    assert_eq!(login["age"], 36);
    let second = login["sessionToken"].as_str().unwrap().to_owned();
    assert_ne!(second, token);
    let (status, _) = server
        .post("login", json!({"username": "ada", "password": "secret"}))
        .await;
    assert_eq!(status, 200);

    // The session records how it was made and when it ends.
    let (status, session) = as_user(&server, &second, Method::GET, "sessions/me", None).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["createdWith"]["action"], "login");
    assert_eq!(session["user"]["objectId"], id.as_str());
    assert_eq!(session["expiresAt"]["__type"], "Date");

    // Log-out ends only that session.
    let (status, body) = as_user(&server, &second, Method::POST, "logout", None).await;
    assert_eq!((status, body), (200, json!({})));
    let refused = as_user(&server, &second, Method::GET, "users/me", None).await;
    assert_eq!((refused.0, code(&refused)), (400, 209));
    let (status, _) = as_user(&server, &token, Method::GET, "users/me", None).await;
    assert_eq!(status, 200);
    // Only the user's own sessions are visible to them.
    let (status, sessions) = as_user(&server, &token, Method::GET, "sessions", None).await;
    assert_eq!(status, 200);
    assert_eq!(sessions["results"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_and_log_in_errors() {
    let server = TestServer::start().await;
    signup(&server, "grace").await;
    let cases = [
        (json!({"password": "x"}), 200),
        (json!({"username": "", "password": "x"}), 200),
        (json!({"username": "new"}), 201),
        (json!({"username": "grace", "password": "x"}), 202),
        (json!({"username": "GRACE", "password": "x"}), 202),
        (
            json!({"username": "new", "password": "x", "email": "grace@example.com"}),
            203,
        ),
        (
            json!({"username": "new", "password": "x", "email": "not-an-email"}),
            125,
        ),
        (
            json!({"username": "new", "password": "x", "_hashed_password": "$2b$10$x"}),
            105,
        ),
        (
            json!({"username": "new", "password": "x", "_rperm": ["*"]}),
            105,
        ),
    ];
    for (body, expected) in cases {
        let response = server.post("users", body.clone()).await;
        assert_eq!((response.0, code(&response)), (400, expected), "{body}");
    }
    let wrong = server
        .post("login", json!({"username": "grace", "password": "nope"}))
        .await;
    assert_eq!((wrong.0, code(&wrong)), (404, 101));
    let nobody = server
        .post("login", json!({"username": "nobody", "password": "x"}))
        .await;
    assert_eq!((nobody.0, code(&nobody)), (404, 101));
    assert_eq!(
        wrong.1, nobody.1,
        "a wrong password and an unknown user look alike"
    );
    assert_eq!(
        code(&server.post("login", json!({"password": "x"})).await),
        200
    );
    assert_eq!(
        code(&server.post("login", json!({"username": "grace"})).await),
        201
    );
    // Log-in by email works too.
    let (status, _) = server
        .post(
            "login",
            json!({"email": "grace@example.com", "password": "grace-pw"}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_revoked_tokens_are_refused() {
    let server = TestServer::start_with(|c| c.session_length_secs = 1).await;
    let user = signup(&server, "lin").await;
    let forged = as_user(
        &server,
        "r:00000000000000000000000000000000",
        Method::GET,
        "classes/X",
        None,
    )
    .await;
    assert_eq!((forged.0, code(&forged)), (400, 209));
    let (status, _) = as_user(&server, &user.token, Method::GET, "users/me", None).await;
    assert_eq!(status, 200);
    // The session lasts a second; the token cache must not outlive it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let expired = as_user(&server, &user.token, Method::GET, "users/me", None).await;
    assert_eq!((expired.0, code(&expired)), (400, 209), "{:?}", expired.1);

    // A session deleted through the API stops working at once.
    let (_, login) = server
        .post("login", json!({"username": "lin", "password": "lin-pw"}))
        .await;
    let token = login["sessionToken"].as_str().unwrap().to_owned();
    let (_, session) = as_user(&server, &token, Method::GET, "sessions/me", None).await;
    let path = format!("sessions/{}", session["objectId"].as_str().unwrap());
    let (status, body) = as_user(&server, &token, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    let revoked = as_user(&server, &token, Method::GET, "users/me", None).await;
    assert_eq!((revoked.0, code(&revoked)), (400, 209));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_user_or_the_master_key_changes_a_user() {
    let server = TestServer::start().await;
    let ann = signup(&server, "ann").await;
    let bob = signup(&server, "bob").await;
    let path = format!("users/{}", ann.id);

    let anonymous = server.put(&path, json!({"nick": "x"})).await;
    assert_eq!((anonymous.0, code(&anonymous)), (400, 206));
    let other = as_user(
        &server,
        &bob.token,
        Method::PUT,
        &path,
        Some(json!({"nick": "x"})),
    )
    .await;
    // Ann's ACL refuses Bob, which Parse answers with 206.
    assert_eq!((other.0, code(&other)), (400, 206), "{}", other.1);
    let other = as_user(&server, &bob.token, Method::DELETE, &path, None).await;
    assert_eq!((other.0, code(&other)), (400, 206), "{}", other.1);

    // Users are private, as in Parse Server 9; once Ann opens her ACL,
    // Bob sees her, but not her email.
    let hidden = as_user(&server, &bob.token, Method::GET, &path, None).await;
    assert_eq!((hidden.0, code(&hidden)), (404, 101), "{}", hidden.1);
    let public = json!({"*": {"read": true}, ann.id.as_str(): {"read": true, "write": true}});
    let (status, body) = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &path,
        Some(json!({ "ACL": public })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, seen) = as_user(&server, &bob.token, Method::GET, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(seen["username"], "ann");
    assert!(seen.get("email").is_none(), "{seen}");
    let probe = as_user(
        &server,
        &bob.token,
        Method::GET,
        "users?where=%7B%22email%22%3A%22ann%40example.com%22%7D",
        None,
    )
    .await;
    assert_eq!((probe.0, code(&probe)), (400, 119));

    // Ann changes her password: the old one stops working, and so does
    // her session; the answer carries her new one.
    let (status, body) = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &path,
        Some(json!({"password": "new-pw", "nick": "a"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ended = as_user(&server, &ann.token, Method::GET, "users/me", None).await;
    assert_eq!(code(&ended), 209);
    let ann = User {
        id: ann.id,
        token: body["sessionToken"].as_str().unwrap().to_owned(),
    };
    let old = server
        .post("login", json!({"username": "ann", "password": "ann-pw"}))
        .await;
    assert_eq!(code(&old), 101);
    let (status, _) = server
        .post("login", json!({"username": "ann", "password": "new-pw"}))
        .await;
    assert_eq!(status, 200);
    // She cannot take Bob's name or write the hash herself.
    let taken = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &path,
        Some(json!({"username": "bob"})),
    )
    .await;
    assert_eq!(code(&taken), 202);
    let hash = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &path,
        Some(json!({"_hashed_password": "x"})),
    )
    .await;
    assert_eq!(code(&hash), 105);

    // Deleting a user ends their sessions.
    let (status, _) = as_user(&server, &ann.token, Method::DELETE, &path, None).await;
    assert_eq!(status, 200);
    let gone = as_user(&server, &ann.token, Method::GET, "users/me", None).await;
    assert_eq!(code(&gone), 209);
    let sessions = server.all("_Session").await;
    assert!(
        sessions
            .iter()
            .all(|s| s["user"]["objectId"] != ann.id.as_str()),
        "{sessions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_query_returns_secrets() {
    let server = TestServer::start().await;
    let user = signup(&server, "eve").await;
    for response in [
        server.get("users").await,
        server.get(&format!("users/{}", user.id)).await,
        as_user(&server, &user.token, Method::GET, "users", None).await,
        read(server.master(Method::GET, "users").send().await.unwrap()).await,
    ] {
        let text = response.1.to_string();
        assert!(!text.contains("hashed") && !text.contains("$2"), "{text}");
        assert!(!text.contains("\"password\""), "{text}");
        assert!(!text.contains(&user.token), "{text}");
    }
    // Sessions are only the owner's.
    let (status, body) = server.get("sessions").await;
    assert_eq!(status, 200);
    assert_eq!(body["results"], json!([]));
    let (_, include) = server.get("classes/_Session?include=user").await;
    assert_eq!(include["results"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_users_are_private_unless_that_is_turned_off() {
    let server = TestServer::start().await;
    let ann = signup(&server, "ann").await;
    let (_, stored) = server
        .master_json(Method::GET, &format!("users/{}", ann.id), None)
        .await;
    assert_eq!(
        stored["ACL"],
        json!({ann.id.as_str(): {"read": true, "write": true}})
    );
    // A given ACL keeps the user's own access, as Parse adds it.
    let (_, given) = server
        .post(
            "users",
            json!({"username": "cy", "password": "pw", "ACL": {"*": {"read": true}}}),
        )
        .await;
    let id = given["objectId"].as_str().unwrap();
    let (_, stored) = server
        .master_json(Method::GET, &format!("users/{id}"), None)
        .await;
    assert_eq!(
        stored["ACL"],
        json!({"*": {"read": true}, id: {"read": true, "write": true}})
    );

    let open = TestServer::start_with(|c| c.enforce_private_users = false).await;
    let bob = signup(&open, "bob").await;
    let dan = signup(&open, "dan").await;
    let (status, seen) = as_user(
        &open,
        &dan.token,
        Method::GET,
        &format!("users/{}", bob.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(
        seen["ACL"],
        json!({"*": {"read": true}, bob.id.as_str(): {"read": true, "write": true}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_every_session_of_the_user() {
    let server = TestServer::start().await;
    let ann = signup(&server, "ann").await;
    let (_, phone) = server
        .post("login", json!({"username": "ann", "password": "ann-pw"}))
        .await;
    let phone = phone["sessionToken"].as_str().unwrap().to_owned();
    let path = format!("users/{}", ann.id);
    let (status, body) = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &path,
        Some(json!({"password": "next-pw"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["sessionToken"]
        .as_str()
        .expect("a new session")
        .to_owned();
    for token in [&ann.token, &phone] {
        let ended = as_user(&server, token, Method::GET, "users/me", None).await;
        assert_eq!(code(&ended), 209, "{}", ended.1);
    }
    let (status, me) = as_user(&server, &fresh, Method::GET, "users/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "ann");

    // The master key ends them too, and gets no session.
    let (status, body) = server
        .master_json(Method::PUT, &path, Some(json!({"password": "third-pw"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("sessionToken").is_none(), "{body}");
    let ended = as_user(&server, &fresh, Method::GET, "users/me", None).await;
    assert_eq!(code(&ended), 209);

    // Turned off, other sessions live on.
    let kept = TestServer::start_with(|c| c.revoke_session_on_password_reset = false).await;
    let bob = signup(&kept, "bob").await;
    let (status, body) = as_user(
        &kept,
        &bob.token,
        Method::PUT,
        &format!("users/{}", bob.id),
        Some(json!({"password": "next-pw"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = as_user(&kept, &bob.token, Method::GET, "users/me", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_may_be_the_users_email() {
    let server = TestServer::start().await;
    let bob = signup(&server, "bob").await;
    let log_in = |username: &str, password: &str| {
        server.post("login", json!({"username": username, "password": password}))
    };
    // Parse looks `username` up as `{$or: [{username}, {email: username}]}`.
    let (status, body) = log_in("bob@example.com", "bob-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectId"], bob.id.as_str());
    assert_eq!(code(&log_in("bob@example.com", "wrong").await), 101);
    // When another user's username is that email, that user is meant.
    let (status, other) = server
        .post(
            "users",
            json!({"username": "bob@example.com", "password": "other-pw"}),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let wrong = log_in("bob@example.com", "bob-pw").await;
    assert_eq!((wrong.0, code(&wrong)), (404, 101));
    let (status, body) = log_in("bob@example.com", "other-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectId"], other["objectId"]);
    // Both given: both must match the one user.
    let both = |email: &str| {
        server.post(
            "login",
            json!({"username": "bob", "email": email, "password": "bob-pw"}),
        )
    };
    assert_eq!(both("bob@example.com").await.0, 200);
    assert_eq!(code(&both("nobody@example.com").await), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_acl_locks_the_user_out_of_password_log_ins() {
    let server = TestServer::start().await;
    let dan = signup(&server, "dan").await;
    let (status, body) = server
        .master_json(
            Method::PUT,
            &format!("users/{}", dan.id),
            Some(json!({"ACL": {}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let credentials = json!({"username": "dan", "password": "dan-pw"});
    let refused = server.post("login", credentials.clone()).await;
    assert_eq!(
        refused,
        (
            404,
            json!({"code": 101, "error": "Invalid username/password."})
        )
    );
    let refused = server.post("verifyPassword", credentials.clone()).await;
    assert_eq!((refused.0, code(&refused)), (404, 101));
    // The session the user had still works; the master key still logs in.
    let (status, _) = as_user(&server, &dan.token, Method::GET, "users/me", None).await;
    assert_eq!(status, 200);
    let (status, body) = server
        .master_json(Method::POST, "login", Some(credentials))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectId"], dan.id.as_str());
}
