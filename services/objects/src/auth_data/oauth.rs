//! Providers checked by asking their API whose an access token is, as
//! Parse Server 9's adapters do: Facebook (`validateAuthData` and
//! `validateAppId` against the Graph API), Twitter (OAuth 1.0a, see
//! `twitter.rs`), and the providers built on Parse's `BaseCodeAuthAdapter`
//! (GitHub, Microsoft, LinkedIn, Instagram, LINE, Spotify).
//!
//! Those last ones do their work before the user is looked up (Parse's
//! `beforeFind`): the client sends an authorization `code`, which oxbase
//! exchanges for an access token with the app's client id and secret, and
//! the provider's user id answered for that token becomes `authData.id`.
//! With `enable_insecure_auth` a client may instead send `{id,
//! access_token}`, which passes when the token is that user's. Google Play
//! Games, WeChat, Weibo and QQ are code providers too, whose requests
//! differ more (`code_apis.rs`).
//!
//! Every URL defaults to the provider's own and can be configured
//! (`api_url`, `token_url`), so that tests point them at a local double.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use ring::hmac;
use serde_json::{Map, Value, json};

use super::config::ProviderConfig;
use super::twitter;
use crate::error::{ParseError, ParseResult, code};

/// A provider's API that does not answer within this fails the sign-in.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A provider checked through its API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Facebook,
    Twitter,
    Github,
    Microsoft,
    Linkedin,
    Instagram,
    Line,
    Spotify,
    Gpgames,
    Wechat,
    Weibo,
    Qq,
}

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(code::OBJECT_NOT_FOUND, message)
}

impl Api {
    pub(crate) fn of(name: &str) -> Option<Self> {
        Some(match name {
            "facebook" => Self::Facebook,
            // Parse validates Digits tokens with its Twitter adapter.
            "twitter" | "digits" => Self::Twitter,
            "github" => Self::Github,
            "microsoft" => Self::Microsoft,
            "linkedin" => Self::Linkedin,
            "instagram" => Self::Instagram,
            "line" => Self::Line,
            "spotify" => Self::Spotify,
            "gpgames" => Self::Gpgames,
            "wechat" => Self::Wechat,
            "weibo" => Self::Weibo,
            "qq" => Self::Qq,
            _ => return None,
        })
    }

    /// The name Parse's messages give the provider.
    fn label(self) -> &'static str {
        match self {
            Self::Facebook => "Facebook",
            Self::Twitter => "Twitter",
            Self::Github => "GitHub",
            Self::Microsoft => "Microsoft",
            Self::Linkedin => "LinkedIn",
            Self::Instagram => "Instagram",
            Self::Line => "Line",
            // Parse's Spotify, Play Games and QQ adapters name themselves
            // in lower case.
            Self::Spotify => "spotify",
            Self::Gpgames => "gpgames",
            Self::Wechat => "WeChat",
            Self::Weibo => "Weibo",
            Self::Qq => "qq",
        }
    }

    fn default_api_url(self) -> &'static str {
        match self {
            Self::Facebook => "https://graph.facebook.com",
            Self::Twitter => "https://api.twitter.com",
            Self::Github => "https://api.github.com",
            Self::Microsoft => "https://graph.microsoft.com",
            Self::Linkedin => "https://api.linkedin.com",
            Self::Instagram => "https://graph.instagram.com",
            Self::Line => "https://api.line.me",
            Self::Spotify => "https://api.spotify.com",
            Self::Gpgames => "https://www.googleapis.com",
            Self::Wechat => "https://api.weixin.qq.com",
            Self::Weibo => "https://api.weibo.com",
            Self::Qq => "https://graph.qq.com",
        }
    }

    /// Where codes are exchanged; `None` for providers that take no code.
    fn default_token_url(self) -> Option<&'static str> {
        Some(match self {
            Self::Facebook | Self::Twitter => return None,
            Self::Github => "https://github.com/login/oauth/access_token",
            Self::Microsoft => "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            Self::Linkedin => "https://www.linkedin.com/oauth/v2/accessToken",
            Self::Instagram => "https://api.instagram.com/oauth/access_token",
            Self::Line => "https://api.line.me/oauth2/v2.1/token",
            Self::Spotify => "https://accounts.spotify.com/api/token",
            Self::Gpgames => "https://oauth2.googleapis.com/token",
            Self::Wechat => "https://api.weixin.qq.com/sns/oauth2/access_token",
            Self::Weibo => "https://api.weibo.com/oauth2/access_token",
            Self::Qq => "https://graph.qq.com/oauth2.0/token",
        })
    }

    /// Whether the provider signs in with authorization codes, checked
    /// before the user is looked up.
    pub(crate) fn exchanges_codes(self) -> bool {
        self.default_token_url().is_some()
    }

    /// The configuration Parse's `validateOptions` requires, checked when
    /// oxbase starts rather than at the first sign-in.
    pub(crate) fn check_config(self, config: &ProviderConfig) -> Result<(), String> {
        for url in [&config.api_url, &config.token_url, &config.jwks_url]
            .into_iter()
            .flatten()
        {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!("{url:?} is not an http(s) URL"));
            }
        }
        let has_secret = !config.client_ids.is_empty() && config.client_secret.is_some();
        match self {
            Self::Facebook => Ok(()),
            Self::Twitter if !has_secret => {
                Err("client_ids (the consumer key) and client_secret are required".into())
            }
            _ if self.exchanges_codes() && !has_secret && !config.enable_insecure_auth => Err(
                "client_ids (the client id) and client_secret are required, unless enable_insecure_auth"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    pub(super) fn api_url(self, config: &ProviderConfig, path: &str) -> String {
        let base = config.api_url.as_deref().unwrap_or(self.default_api_url());
        format!("{}{path}", base.trim_end_matches('/'))
    }

    fn not_configured(self) -> ParseError {
        invalid(format!("{} auth is not configured.", self.label()))
    }

    pub(super) fn invalid_for_user(self) -> ParseError {
        invalid(format!("{} auth is invalid for this user.", self.label()))
    }

    pub(super) fn request_failed(self) -> ParseError {
        // Spotify's adapter capitalises its name here only.
        let label = match self {
            Self::Spotify => "Spotify",
            _ => self.label(),
        };
        invalid(format!("{label} API request failed."))
    }
}

/// What a provider answered: its status, body, and the body as JSON
/// (`Null` when it is not JSON).
pub(super) struct Answer {
    status: StatusCode,
    pub(super) raw: String,
    pub(super) body: Value,
}

impl Answer {
    pub(super) fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The status text, as `fetch`'s `statusText` in Parse's messages.
    pub(super) fn reason(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or_default()
    }

    pub(super) fn text(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }
}

/// A user id as providers write it: GitHub's are numbers, which Parse
/// would then refuse as ids, so they are kept as strings.
pub(super) fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

pub(super) fn text<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    data.get(key)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// Calls providers' APIs.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    pub(super) http: reqwest::Client,
}

impl ApiClient {
    pub(crate) fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { http }
    }

    pub(super) async fn send(&self, api: Api, request: RequestBuilder) -> ParseResult<Answer> {
        let response = request.send().await.map_err(|err| {
            tracing::warn!(%err, provider = api.label(), "a provider's API did not answer");
            api.request_failed()
        })?;
        let status = response.status();
        let raw = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Ok(Answer { status, raw, body })
    }

    /// Parse's `beforeFind` for providers that exchange codes: replaces the
    /// client's `code` with the access token it stands for and the user id
    /// that token belongs to, or checks the client's own access token.
    pub(crate) async fn before_find(
        &self,
        api: Api,
        config: &ProviderConfig,
        data: &mut Map<String, Value>,
    ) -> ParseResult<()> {
        let claimed_id = id_of(data.get("id"));
        if config.enable_insecure_auth && text(data, "code").is_none() {
            let token = text(data, "access_token").ok_or_else(|| api.invalid_for_user())?;
            let user_id = self.user_id(api, config, token, data, None).await?;
            if claimed_id.as_ref() != Some(&user_id) {
                return Err(api.invalid_for_user());
            }
            return Ok(());
        }
        if text(data, "code").is_none() {
            return Err(ParseError::new(
                code::VALIDATION_ERROR,
                format!("{} code is required.", api.label()),
            ));
        }
        let (Some(client_id), Some(secret)) = (config.client_ids.first(), &config.client_secret)
        else {
            return Err(api.not_configured());
        };
        let (token, known_id) = self
            .exchange_code(api, config, client_id, secret, data)
            .await?;
        let user_id = self
            .user_id(api, config, &token, data, known_id.as_deref())
            .await?;
        if claimed_id.is_some_and(|claimed| claimed != user_id) {
            return Err(api.invalid_for_user());
        }
        data.insert("access_token".into(), Value::String(token));
        data.insert("id".into(), Value::String(user_id));
        data.remove("code");
        data.remove("redirect_uri");
        Ok(())
    }

    /// The access token a code stands for, and the user id when the
    /// exchange answers it (WeChat's `openid`).
    async fn exchange_code(
        &self,
        api: Api,
        config: &ProviderConfig,
        client_id: &str,
        secret: &str,
        data: &Map<String, Value>,
    ) -> ParseResult<(String, Option<String>)> {
        let url = config
            .token_url
            .as_deref()
            .or(api.default_token_url())
            .unwrap_or_default();
        if matches!(api, Api::Gpgames | Api::Wechat | Api::Weibo | Api::Qq) {
            return self
                .exchange_code_apart(api, url, client_id, secret, data)
                .await;
        }
        let code_ = text(data, "code").unwrap_or_default();
        let redirect_uri = text(data, "redirect_uri").unwrap_or_default();
        let request = match api {
            Api::Github => self
                .http
                .post(url)
                .header("Accept", "application/json")
                .json(&json!({"client_id": client_id, "client_secret": secret, "code": code_})),
            Api::Spotify => {
                // A PKCE exchange: the verifier stands in for the secret.
                let verifier = text(data, "code_verifier");
                let (Some(verifier), false) = (verifier, redirect_uri.is_empty()) else {
                    return Err(invalid(
                        "Spotify auth configuration authData.code and/or authData.redirect_uri \
                         and/or authData.code_verifier.",
                    ));
                };
                self.http.post(url).form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code_),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", verifier),
                    ("client_id", client_id),
                ])
            }
            _ => self.http.post(url).form(&[
                ("client_id", client_id),
                ("client_secret", secret),
                ("grant_type", "authorization_code"),
                ("redirect_uri", redirect_uri),
                ("code", code_),
            ]),
        };
        let answer = self.send(api, request).await?;
        if !answer.ok() {
            return Err(match api {
                Api::Github => ParseError::new(
                    code::VALIDATION_ERROR,
                    format!("Failed to exchange code for token: {}", answer.reason()),
                ),
                Api::Line => invalid(format!(
                    "Failed to exchange code for token: {}",
                    answer.reason()
                )),
                _ => api.request_failed(),
            });
        }
        if let Some(error) = answer.text("error_description").or(answer.text("error")) {
            return Err(invalid(error));
        }
        answer
            .text("access_token")
            .map(|token| (token.to_owned(), None))
            .ok_or_else(|| api.invalid_for_user())
    }

    /// The id of the user an access token belongs to; `known_id` is the
    /// one the code exchange answered, if any.
    async fn user_id(
        &self,
        api: Api,
        config: &ProviderConfig,
        token: &str,
        data: &Map<String, Value>,
        known_id: Option<&str>,
    ) -> ParseResult<String> {
        if matches!(api, Api::Gpgames | Api::Wechat | Api::Weibo | Api::Qq) {
            return self.user_id_apart(api, config, token, data, known_id).await;
        }
        let bearer = |path: &str| self.http.get(api.api_url(config, path)).bearer_auth(token);
        let request = match api {
            Api::Github => bearer("/user").header("Accept", "application/json"),
            Api::Microsoft => bearer("/v1.0/me"),
            Api::Linkedin => {
                let request = bearer("/v2/me").header("x-li-format", "json");
                if data
                    .get("is_mobile_sdk")
                    .is_some_and(|v| v == &Value::Bool(true))
                {
                    request.header("x-li-src", "msdk")
                } else {
                    request
                }
            }
            Api::Instagram => self
                .http
                .get(api.api_url(config, "/me"))
                .query(&[("fields", "id"), ("access_token", token)]),
            Api::Line => bearer("/v2/profile"),
            Api::Spotify => bearer("/v1/me"),
            _ => return Err(api.invalid_for_user()),
        };
        let answer = self.send(api, request).await?;
        if !answer.ok() {
            return Err(match api {
                Api::Github => ParseError::new(
                    code::VALIDATION_ERROR,
                    format!("Failed to fetch GitHub user: {}", answer.reason()),
                ),
                Api::Line => invalid(format!("Failed to fetch Line user: {}", answer.reason())),
                _ => api.request_failed(),
            });
        }
        let body = &answer.body;
        match api {
            Api::Github if id_of(body.get("id")).is_none() || answer.text("login").is_none() => {
                Err(ParseError::new(
                    code::VALIDATION_ERROR,
                    "Invalid GitHub user data received.",
                ))
            }
            // LINE names the id `userId`.
            Api::Line => id_of(body.get("userId")).ok_or_else(|| {
                ParseError::new(code::VALIDATION_ERROR, "Invalid Line user data received.")
            }),
            _ => id_of(body.get("id")).ok_or_else(|| api.invalid_for_user()),
        }
    }

    /// Parse's `validateAppId` and `validateAuthData` for the providers
    /// that check the client's token when it is used (Facebook, Twitter).
    pub(crate) async fn validate(
        &self,
        api: Api,
        config: &ProviderConfig,
        data: &Map<String, Value>,
    ) -> ParseResult<()> {
        match api {
            Api::Facebook => self.validate_facebook(config, data).await,
            Api::Twitter => {
                let answer = twitter::verify_credentials(
                    &self.http,
                    &api.api_url(config, twitter::VERIFY_PATH),
                    config,
                    data,
                )
                .await
                .map_err(|err| {
                    tracing::warn!(%err, "Twitter's API did not answer");
                    api.request_failed()
                })?;
                let claimed = id_of(data.get("id"));
                if claimed.is_some() && id_of(answer.get("id_str")) == claimed {
                    Ok(())
                } else {
                    Err(api.invalid_for_user())
                }
            }
            // The others were checked before the user was looked up.
            _ => Ok(()),
        }
    }

    /// The token must be the app's (`/app`) and the user's (`/me`).
    async fn validate_facebook(
        &self,
        config: &ProviderConfig,
        data: &Map<String, Value>,
    ) -> ParseResult<()> {
        let api = Api::Facebook;
        if config.client_ids.is_empty() {
            return Err(api.not_configured());
        }
        let token = text(data, "access_token").unwrap_or_default();
        let mut params = vec![("access_token", token.to_owned())];
        if let Some(secret) = &config.client_secret {
            // Graph refuses calls without this proof when the app requires
            // it, and it stops a stolen token being used from elsewhere.
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let proof = hmac::sign(&key, token.as_bytes());
            params.push(("appsecret_proof", hex(proof.as_ref())));
        }
        let app = self
            .send(
                api,
                self.http.get(api.api_url(config, "/app")).query(&params),
            )
            .await?;
        let app_id = id_of(app.body.get("id"));
        if !app_id.is_some_and(|id| config.client_ids.contains(&id)) {
            return Err(api.invalid_for_user());
        }
        params.push(("fields", "id".into()));
        let me = self
            .send(
                api,
                self.http.get(api.api_url(config, "/me")).query(&params),
            )
            .await?;
        let claimed = id_of(data.get("id"));
        if claimed.is_some() && id_of(me.body.get("id")) == claimed {
            Ok(())
        } else {
            Err(api.invalid_for_user())
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
