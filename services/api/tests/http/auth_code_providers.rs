//! Google Play Games, WeChat, Weibo and QQ, which sign in by exchanging
//! authorization codes: each pointed at a local double of its API that
//! knows one code, one token and one user, and answers anything else in
//! the shape the real API refuses it (Google's 400, WeChat's `errcode`,
//! Weibo's `error_code`, QQ's JSONP errors).

use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use oxbase_objects::{AuthConfig, ProviderConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error};
use crate::users::as_user;

const CODE: &str = "good-code";
const TOKEN: &str = "good-token";
const APP: &str = "app-id";
const SECRET: &str = "app-secret";
const REDIRECT: &str = "https://app.example.com/callback";

fn pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn has(params: &[(String, String)], key: &str, value: &str) -> bool {
    params.iter().any(|(k, v)| k == key && v == value)
}

fn bearer(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn text_answer(body: &str) -> Response {
    ([("content-type", "text/html")], body.to_owned()).into_response()
}

fn answer(method: HttpMethod, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let query = pairs(uri.query().unwrap_or_default());
    let form = pairs(&body);
    let ok = |value: Value| json_answer(StatusCode::OK, value);
    match (method, uri.path()) {
        // Google's token endpoint takes JSON.
        (HttpMethod::POST, "/token/gpgames") => {
            let sent: Value = serde_json::from_str(&body).unwrap_or_default();
            let good = sent["code"] == CODE
                && sent["client_id"] == APP
                && sent["client_secret"] == SECRET
                && sent["grant_type"] == "authorization_code";
            if good {
                ok(json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
            } else {
                json_answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_grant", "error_description": "Bad Request"}),
                )
            }
        }
        // The token's own player; any other player's public profile too.
        (HttpMethod::GET, path) if path.starts_with("/gpgames/games/v1/players/") => {
            if !bearer(&headers) {
                return json_answer(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}),
                );
            }
            let player = match &path["/gpgames/games/v1/players/".len()..] {
                "me" => "gp-1",
                other => other,
            };
            ok(json!({"kind": "games#player", "playerId": player}))
        }
        // WeChat answers 200 whatever happens, with an `errcode`.
        (HttpMethod::GET, "/token/wechat") => {
            if has(&query, "code", CODE)
                && has(&query, "appid", APP)
                && has(&query, "secret", SECRET)
            {
                ok(
                    json!({"access_token": TOKEN, "expires_in": 7200, "openid": "wx-1", "scope": "snsapi_login"}),
                )
            } else {
                ok(json!({"errcode": 40029, "errmsg": "invalid code"}))
            }
        }
        (HttpMethod::GET, "/wechat/sns/auth") => {
            if has(&query, "access_token", TOKEN) && has(&query, "openid", "wx-1") {
                ok(json!({"errcode": 0, "errmsg": "ok"}))
            } else {
                ok(json!({"errcode": 40003, "errmsg": "invalid openid"}))
            }
        }
        (HttpMethod::POST, "/token/weibo") => {
            if has(&form, "code", CODE)
                && has(&form, "redirect_uri", REDIRECT)
                && has(&form, "client_secret", SECRET)
            {
                ok(json!({"access_token": TOKEN, "expires_in": 157_679_999, "uid": "1404376560"}))
            } else {
                json_answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_grant", "error_code": 21325, "error_description": "invalid authorization code"}),
                )
            }
        }
        (HttpMethod::POST, "/weibo/oauth2/get_token_info") => {
            if has(&form, "access_token", TOKEN) {
                // Weibo's uids are numbers.
                ok(json!({"uid": 1_404_376_560_u64, "appkey": APP, "create_at": 1, "expire_in": 2}))
            } else {
                json_answer(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_access_token", "error_code": 21332}),
                )
            }
        }
        // QQ answers forms and JSONP.
        (HttpMethod::GET, "/token/qq") => {
            if has(&query, "code", CODE) && has(&query, "client_secret", SECRET) {
                text_answer(&format!(
                    "access_token={TOKEN}&expires_in=7776000&refresh_token=r"
                ))
            } else {
                text_answer(
                    "callback( {\"error\":100019,\"error_description\":\"code to access token error\"} );\n",
                )
            }
        }
        (HttpMethod::GET, "/qq/oauth2.0/me") => {
            if has(&query, "access_token", TOKEN) {
                text_answer("callback( {\"client_id\":\"app-id\",\"openid\":\"qq-1\"} );\n")
            } else {
                text_answer(
                    "callback( {\"error\":100016,\"error_description\":\"access token check failed\"} );\n",
                )
            }
        }
        _ => json_answer(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

async fn fake() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(
        |method: HttpMethod, uri: Uri, headers: HeaderMap, body: String| async move {
            answer(method, uri, headers, body)
        },
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn server(base: &str) -> TestServer {
    let providers: Vec<(String, ProviderConfig)> = ["gpgames", "wechat", "weibo", "qq"]
        .iter()
        .map(|name| {
            let provider = ProviderConfig {
                client_ids: vec![APP.into()],
                client_secret: Some(SECRET.into()),
                api_url: Some(format!("{base}/{name}")),
                token_url: Some(format!("{base}/token/{name}")),
                ..ProviderConfig::default()
            };
            ((*name).to_owned(), provider)
        })
        .collect();
    TestServer::start_with(move |config| {
        config.update_section(|auth: &mut AuthConfig| auth.providers.extend(providers));
    })
    .await
}

async fn sign_in(server: &TestServer, provider: &str, data: Value) -> (u16, Value) {
    server
        .post("users", json!({"authData": {provider: data}}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_providers_exchange_codes_for_their_users() {
    let base = fake().await;
    let server = server(&base).await;
    // Provider, the data a client sends with a code, the user id it stands
    // for, the refusal of a bad code (status, code, message).
    let cases = [
        (
            "gpgames",
            json!({"id": "gp-1", "code": CODE, "redirectUri": REDIRECT}),
            "gp-1",
            (400, 142, "Failed to exchange code for token: Bad Request"),
        ),
        (
            "wechat",
            json!({"code": CODE}),
            "wx-1",
            (404, 101, "WeChat auth is invalid for this user."),
        ),
        (
            "weibo",
            json!({"code": CODE, "redirect_uri": REDIRECT}),
            "1404376560",
            (404, 101, "Weibo auth is invalid for this user."),
        ),
        (
            "qq",
            json!({"code": CODE, "redirect_uri": REDIRECT}),
            "qq-1",
            (404, 101, "qq auth is invalid for this user."),
        ),
    ];
    for (provider, data, id, (status, code, message)) in cases {
        let (created_status, created) = sign_in(&server, provider, data.clone()).await;
        assert_eq!(created_status, 201, "{provider}: {created}");
        let token = created["sessionToken"].as_str().unwrap();
        let (_, me) = as_user(&server, token, Method::GET, "users/me", None).await;
        // Parse's code adapters answer only the id (their afterFind).
        assert_eq!(
            me["authData"][provider],
            json!({"id": id}),
            "{provider}: {me}"
        );

        let (again_status, again) = sign_in(&server, provider, data.clone()).await;
        assert_eq!(again_status, 200, "{provider}: {again}");
        assert_eq!(again["objectId"], created["objectId"], "{provider}");

        let mut bad = data.clone();
        bad["code"] = json!("stale-code");
        let refused = sign_in(&server, provider, bad).await;
        assert_error(&refused, status, code);
        assert_eq!(refused.1["error"], message, "{provider}: {}", refused.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_providers_refuse_what_is_not_the_users() {
    let base = fake().await;
    let server = server(&base).await;
    let refused = |response: (u16, Value), status: u16, code: i64, message: &str| {
        assert_error(&response, status, code);
        assert_eq!(response.1["error"], message, "{}", response.1);
    };
    // A code for someone else than the id claimed.
    refused(
        sign_in(&server, "wechat", json!({"id": "wx-2", "code": CODE})).await,
        404,
        101,
        "WeChat auth is invalid for this user.",
    );
    refused(
        sign_in(
            &server,
            "gpgames",
            json!({"id": "gp-2", "code": CODE, "redirectUri": REDIRECT}),
        )
        .await,
        400,
        142,
        "Invalid Google Play Games Services user data received.",
    );
    refused(
        sign_in(&server, "weibo", json!({"code": CODE})).await,
        404,
        101,
        "Weibo auth requires code and redirect_uri to be sent.",
    );
    // Without enable_insecure_auth, an access token alone does not do.
    refused(
        sign_in(&server, "qq", json!({"id": "qq-1", "access_token": TOKEN})).await,
        400,
        142,
        "qq code is required.",
    );
}
