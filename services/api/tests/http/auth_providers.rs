//! Signing in with providers oxbase checks through their APIs (Facebook,
//! Twitter, GitHub, Microsoft, LinkedIn, Instagram, LINE, Spotify), each
//! pointed at a local double of its API that knows one user and one token,
//! and answers anything else as the real API refuses it.

use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oxbase_objects::{AuthConfig, ProviderConfig};
use reqwest::Method;
use ring::hmac;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error};
use crate::users::as_user;

const TOKEN: &str = "good-token";
const CODE: &str = "good-code";
const SECRET: &str = "app-secret";
const FB_APP: &str = "fb-app";
const TW_KEY: &str = "tw-consumer";
const TW_TOKEN_SECRET: &str = "tw-token-secret";

/// The providers' APIs, one path prefix each.
struct Fake {
    base: String,
}

fn query_of(uri: &Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn oauth_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Twitter's check of an OAuth 1.0a signature (RFC 5849), made
/// independently of oxbase's.
fn twitter_signed(base: &str, uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(header) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("OAuth "))
    else {
        return false;
    };
    let mut params: Vec<(String, String)> = header
        .split(", ")
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = value.trim_matches('"');
            let value =
                form_urlencoded::parse(format!("v={}", value.replace('+', "%2B")).as_bytes())
                    .next()?
                    .1
                    .into_owned();
            Some((key.to_owned(), value))
        })
        .collect();
    let Some(at) = params.iter().position(|(k, _)| k == "oauth_signature") else {
        return false;
    };
    let (_, signature) = params.remove(at);
    if param(&params, "oauth_consumer_key") != Some(TW_KEY)
        || param(&params, "oauth_token") != Some(TOKEN)
    {
        return false;
    }
    let mut encoded: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", oauth_encode(k), oauth_encode(v)))
        .collect();
    encoded.sort();
    let url = format!("{base}{}", uri.path());
    let text = format!(
        "GET&{}&{}",
        oauth_encode(&url),
        oauth_encode(&encoded.join("&"))
    );
    let key = format!("{}&{}", oauth_encode(SECRET), oauth_encode(TW_TOKEN_SECRET));
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    STANDARD.encode(hmac::sign(&key, text.as_bytes()).as_ref()) == signature
}

fn bearer_ok(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn answer(base: &str, method: HttpMethod, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_token"})),
        )
            .into_response()
    };
    let ok = |value: Value| axum::Json(value).into_response();
    let query = query_of(&uri);
    let path = uri.path();
    if method == HttpMethod::POST && path.starts_with("/token/") {
        let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let sent = serde_json::from_str::<Value>(&body).ok();
        let code = param(&form, "code").map(str::to_owned).or_else(|| {
            sent.as_ref()
                .and_then(|b| b["code"].as_str())
                .map(str::to_owned)
        });
        if code.as_deref() != Some(CODE) {
            if path == "/token/github" {
                // GitHub answers a bad code with 200 and an error.
                return ok(
                    json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}),
                );
            }
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant"})),
            )
                .into_response();
        }
        return ok(json!({"access_token": TOKEN, "token_type": "bearer"}));
    }
    match path {
        "/facebook/app" | "/facebook/me" => {
            let token = param(&query, "access_token").unwrap_or_default();
            let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
            let proof: String = hmac::sign(&key, token.as_bytes())
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if param(&query, "appsecret_proof") != Some(proof.as_str()) {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": {"message": "Invalid appsecret_proof"}})),
                )
                    .into_response();
            }
            match (path, token) {
                ("/facebook/app", TOKEN) => ok(json!({"id": FB_APP})),
                ("/facebook/app", "other-app-token") => ok(json!({"id": "other-app"})),
                ("/facebook/me", TOKEN | "other-app-token") => ok(json!({"id": "fb-1"})),
                _ => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": {"message": "Invalid OAuth access token."}})),
                )
                    .into_response(),
            }
        }
        "/twitter/1.1/account/verify_credentials.json" if twitter_signed(base, &uri, &headers) => {
            ok(json!({"id": 42, "id_str": "tw-1", "screen_name": "tweety"}))
        }
        "/github/user" if bearer_ok(&headers) => ok(json!({"id": 4242, "login": "octo"})),
        "/microsoft/v1.0/me" if bearer_ok(&headers) => ok(json!({"id": "ms-1"})),
        "/linkedin/v2/me" if bearer_ok(&headers) => ok(json!({"id": "li-1"})),
        "/line/v2/profile" if bearer_ok(&headers) => ok(json!({"userId": "line-1"})),
        "/spotify/v1/me" if bearer_ok(&headers) => ok(json!({"id": "sp-1"})),
        "/instagram/me" if param(&query, "access_token") == Some(TOKEN) => {
            ok(json!({"id": "ig-1"}))
        }
        _ => unauthorized(),
    }
}

impl Fake {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let served = base.clone();
        let router = axum::Router::new().fallback(
            move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: String| {
                let base = served.clone();
                async move { answer(&base, method, uri, headers, body) }
            },
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base }
    }

    /// A provider's settings pointing at this double.
    fn provider(&self, name: &str, insecure: bool) -> ProviderConfig {
        ProviderConfig {
            client_ids: vec![if name == "facebook" { FB_APP } else { TW_KEY }.into()],
            client_secret: Some(SECRET.into()),
            api_url: Some(format!("{}/{name}", self.base)),
            token_url: Some(format!("{}/token/{name}", self.base)),
            enable_insecure_auth: insecure,
            ..ProviderConfig::default()
        }
    }
}

/// A server whose providers all point at `fake`; GitHub exchanges codes,
/// the others (but Facebook and Twitter) take access tokens.
async fn server(fake: &Fake) -> TestServer {
    let providers: Vec<(String, ProviderConfig)> = [
        "facebook",
        "twitter",
        "github",
        "microsoft",
        "linkedin",
        "instagram",
        "line",
        "spotify",
    ]
    .iter()
    .map(|name| ((*name).to_owned(), fake.provider(name, *name != "github")))
    .collect();
    TestServer::start_with(move |config| {
        config.update_section(|auth: &mut AuthConfig| auth.providers.extend(providers));
    })
    .await
}

#[track_caller]
fn assert_message(response: &(u16, Value), status: u16, code: i64, message: &str) {
    assert_error(response, status, code);
    assert_eq!(response.1["error"], message, "{}", response.1);
}

async fn sign_in(server: &TestServer, provider: &str, data: Value) -> (u16, Value) {
    server
        .post("users", json!({"authData": {provider: data}}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_exchanges_codes_for_the_user_id() {
    let fake = Fake::start().await;
    let server = server(&fake).await;

    let (status, created) = sign_in(&server, "github", json!({"code": CODE})).await;
    assert_eq!(status, 201, "{created}");
    let token = created["sessionToken"].as_str().unwrap();
    let (_, me) = as_user(&server, token, Method::GET, "users/me", None).await;
    // The code is spent; the access token it stood for is stored but, as
    // Parse's code adapters' afterFind, shown to no one: only the id.
    assert_eq!(me["authData"]["github"], json!({"id": "4242"}), "{me}");
    let id = created["objectId"].as_str().unwrap();
    let (_, seen) = server
        .master_json(Method::GET, &format!("users/{id}"), None)
        .await;
    assert_eq!(seen["authData"]["github"], json!({"id": "4242"}), "{seen}");
    let (_, found) = server.master_json(Method::GET, "users", None).await;
    assert_eq!(
        found["results"][0]["authData"]["github"],
        json!({"id": "4242"}),
        "{found}"
    );

    let (status, again) = sign_in(&server, "github", json!({"code": CODE, "id": "4242"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["objectId"], created["objectId"]);

    assert_message(
        &sign_in(&server, "github", json!({"code": "stale"})).await,
        404,
        101,
        "The code passed is incorrect or expired.",
    );
    assert_message(
        &sign_in(
            &server,
            "github",
            json!({"code": CODE, "id": "someone-else"}),
        )
        .await,
        404,
        101,
        "GitHub auth is invalid for this user.",
    );
    // Without enable_insecure_auth an access token alone does not do.
    assert_message(
        &sign_in(
            &server,
            "github",
            json!({"id": "4242", "access_token": TOKEN}),
        )
        .await,
        400,
        142,
        "GitHub code is required.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_providers_check_whose_token_it_is() {
    let fake = Fake::start().await;
    let server = server(&fake).await;
    let cases = [
        ("microsoft", "ms-1", "Microsoft API request failed."),
        ("linkedin", "li-1", "LinkedIn API request failed."),
        ("instagram", "ig-1", "Instagram API request failed."),
        ("line", "line-1", "Failed to fetch Line user: Unauthorized"),
        ("spotify", "sp-1", "Spotify API request failed."),
    ];
    for (provider, id, refused) in cases {
        let (status, created) =
            sign_in(&server, provider, json!({"id": id, "access_token": TOKEN})).await;
        assert_eq!(status, 201, "{provider}: {created}");
        let (status, again) =
            sign_in(&server, provider, json!({"id": id, "access_token": TOKEN})).await;
        assert_eq!(status, 200, "{provider}: {again}");
        assert_eq!(again["objectId"], created["objectId"]);

        assert_message(
            &sign_in(
                &server,
                provider,
                json!({"id": id, "access_token": "stolen"}),
            )
            .await,
            404,
            101,
            refused,
        );
        let label = match provider {
            "microsoft" => "Microsoft",
            "linkedin" => "LinkedIn",
            "instagram" => "Instagram",
            "line" => "Line",
            _ => "spotify",
        };
        assert_message(
            &sign_in(
                &server,
                provider,
                json!({"id": "not-me", "access_token": TOKEN}),
            )
            .await,
            404,
            101,
            &format!("{label} auth is invalid for this user."),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_checks_the_app_and_the_user() {
    let fake = Fake::start().await;
    let server = server(&fake).await;

    let (status, created) = sign_in(
        &server,
        "facebook",
        json!({"id": "fb-1", "access_token": TOKEN}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    // Facebook's adapter has no afterFind: its user sees the data as stored.
    let session = created["sessionToken"].as_str().unwrap();
    let (_, me) = as_user(&server, session, Method::GET, "users/me", None).await;
    assert_eq!(
        me["authData"]["facebook"],
        json!({"id": "fb-1", "access_token": TOKEN}),
        "{me}"
    );
    let invalid = "Facebook auth is invalid for this user.";
    // The user's token, but another app's.
    assert_message(
        &sign_in(
            &server,
            "facebook",
            json!({"id": "fb-1", "access_token": "other-app-token"}),
        )
        .await,
        404,
        101,
        invalid,
    );
    assert_message(
        &sign_in(
            &server,
            "facebook",
            json!({"id": "fb-2", "access_token": TOKEN}),
        )
        .await,
        404,
        101,
        invalid,
    );
    assert_message(
        &sign_in(
            &server,
            "facebook",
            json!({"id": "fb-1", "access_token": "bad"}),
        )
        .await,
        404,
        101,
        invalid,
    );

    // Linking Facebook to a signed-up user.
    let (status, user) = server
        .post("users", json!({"username": "fay", "password": "pw"}))
        .await;
    assert_eq!(status, 201, "{user}");
    let (id, token) = (
        user["objectId"].as_str().unwrap(),
        user["sessionToken"].as_str().unwrap(),
    );
    let link = json!({"authData": {"facebook": {"id": "fb-1", "access_token": TOKEN}}});
    let linked = as_user(
        &server,
        token,
        Method::PUT,
        &format!("users/{id}"),
        Some(link),
    )
    .await;
    assert_error(&linked, 400, 208);

    let unconfigured = TestServer::start().await;
    assert_message(
        &sign_in(
            &unconfigured,
            "facebook",
            json!({"id": "fb-1", "access_token": TOKEN}),
        )
        .await,
        404,
        101,
        "Facebook auth is not configured.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitter_signs_verify_credentials() {
    let fake = Fake::start().await;
    let server = server(&fake).await;
    let twitter = |secret: &str| json!({"id": "tw-1", "screen_name": "tweety", "auth_token": TOKEN, "auth_token_secret": secret});

    let (status, created) = sign_in(&server, "twitter", twitter(TW_TOKEN_SECRET)).await;
    assert_eq!(status, 201, "{created}");
    let (status, again) = sign_in(&server, "twitter", twitter(TW_TOKEN_SECRET)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["objectId"], created["objectId"]);

    let invalid = "Twitter auth is invalid for this user.";
    assert_message(
        &sign_in(&server, "twitter", twitter("wrong-secret")).await,
        404,
        101,
        invalid,
    );
    let mut someone_else = twitter(TW_TOKEN_SECRET);
    someone_else["id"] = json!("tw-2");
    assert_message(
        &sign_in(&server, "twitter", someone_else).await,
        404,
        101,
        invalid,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_not_built_stay_refused_clearly() {
    let server = TestServer::start().await;
    let (status, body) = sign_in(&server, "vkontakte", json!({"id": "G:1"})).await;
    assert_eq!((status, body["code"].clone()), (400, json!(252)), "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not supported by oxbase yet"),
        "{body}"
    );
    // A provider built but not configured says so.
    assert_message(
        &sign_in(&server, "github", json!({"code": CODE})).await,
        404,
        101,
        "GitHub auth is not configured.",
    );
}
