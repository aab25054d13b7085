//! The code providers whose requests differ most from the OAuth 2 shape of
//! the others: Google Play Games (`gpgames`), WeChat, Weibo and QQ, each as
//! Parse Server 9's adapter asks its API, with its messages.
//!
//! Parse 9's Play Games adapter fetches `players/<authData.id>`, which
//! answers any player whose profile is visible, whoever the token is for;
//! oxbase asks `players/me`, the token's own player, and compares ids.
//!
//! Two of Parse 9's adapters cannot sign anyone in as written: WeChat's
//! takes the user id from `sns/auth`, which answers only `errcode`, and
//! QQ's sends its code exchange as a GET with a body and reads an `id`
//! that `oauth2.0/me` does not answer. oxbase does what they mean: the
//! WeChat user is the `openid` the exchange answers, confirmed by
//! `sns/auth`; the QQ user is the `openid` of `oauth2.0/me`, and the code
//! is exchanged with query parameters, as QQ documents.

use serde_json::{Map, Value};

use super::config::ProviderConfig;
use super::oauth::{Answer, Api, ApiClient, id_of, text};
use crate::error::{ParseError, ParseResult, code};

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(code::OBJECT_NOT_FOUND, message)
}

fn validation(message: impl Into<String>) -> ParseError {
    ParseError::new(code::VALIDATION_ERROR, message)
}

/// WeChat's and Weibo's answers are errors when they have an `errcode`
/// (WeChat answers `0` for none).
fn has_errcode(answer: &Answer) -> bool {
    answer
        .body
        .get("errcode")
        .is_some_and(|code| !(code.is_null() || code == &Value::from(0)))
}

/// QQ answers JSONP (`callback( {...} );`), Parse's `parseResponseData`
/// reads what is between the first `(` and the first `)`; a successful
/// code exchange answers a form (`access_token=...&expires_in=...`).
fn qq_body(raw: &str) -> Option<Map<String, Value>> {
    if let (Some(start), Some(end)) = (raw.find('('), raw.find(')'))
        && start < end
    {
        return serde_json::from_str(&raw[start + 1..end]).ok();
    }
    if let Ok(Value::Object(body)) = serde_json::from_str(raw) {
        return Some(body);
    }
    let form: Map<String, Value> = form_urlencoded::parse(raw.trim().as_bytes())
        .map(|(key, value)| (key.into_owned(), Value::String(value.into_owned())))
        .collect();
    (!form.is_empty()).then_some(form)
}

impl ApiClient {
    /// The access token a code stands for, and WeChat's `openid`.
    pub(super) async fn exchange_code_apart(
        &self,
        api: Api,
        url: &str,
        client_id: &str,
        secret: &str,
        data: &Map<String, Value>,
    ) -> ParseResult<(String, Option<String>)> {
        let code_ = text(data, "code").unwrap_or_default();
        let redirect_uri = text(data, "redirect_uri").unwrap_or_default();
        match api {
            Api::Gpgames => {
                let body = serde_json::json!({
                    "client_id": client_id,
                    "client_secret": secret,
                    "code": code_,
                    // Parse's Play Games adapter reads `redirectUri`.
                    "redirect_uri": data.get("redirectUri"),
                    "grant_type": "authorization_code",
                });
                let request = self
                    .http
                    .post(url)
                    .header("Accept", "application/json")
                    .json(&body);
                let answer = self.send(api, request).await?;
                if !answer.ok() {
                    return Err(validation(format!(
                        "Failed to exchange code for token: {}",
                        answer.reason()
                    )));
                }
                if let Some(error) = answer.text("error_description").or(answer.text("error")) {
                    return Err(invalid(error));
                }
                let token = answer.text("access_token").map(str::to_owned);
                Ok((token.ok_or_else(|| api.invalid_for_user())?, None))
            }
            Api::Wechat => {
                let request = self.http.get(url).query(&[
                    ("appid", client_id),
                    ("secret", secret),
                    ("code", code_),
                    ("grant_type", "authorization_code"),
                ]);
                let answer = self.send(api, request).await?;
                let token = answer.text("access_token").map(str::to_owned);
                let openid = answer.text("openid").map(str::to_owned);
                match (answer.ok() && !has_errcode(&answer), token) {
                    (true, Some(token)) => Ok((token, openid)),
                    _ => Err(api.invalid_for_user()),
                }
            }
            Api::Weibo => {
                if redirect_uri.is_empty() {
                    return Err(invalid(
                        "Weibo auth requires code and redirect_uri to be sent.",
                    ));
                }
                let request = self.http.post(url).form(&[
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("grant_type", "authorization_code"),
                    ("code", code_),
                    ("redirect_uri", redirect_uri),
                ]);
                let answer = self.send(api, request).await?;
                let token = answer.text("access_token").map(str::to_owned);
                match (answer.ok() && !has_errcode(&answer), token) {
                    (true, Some(token)) => Ok((token, None)),
                    _ => Err(api.invalid_for_user()),
                }
            }
            _ => {
                let request = self.http.get(url).query(&[
                    ("grant_type", "authorization_code"),
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("redirect_uri", redirect_uri),
                    ("code", code_),
                ]);
                let answer = self.send(api, request).await?;
                if !answer.ok() {
                    return Err(api.request_failed());
                }
                let token = qq_body(&answer.raw).and_then(|body| {
                    body.get("access_token")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                Ok((token.ok_or_else(|| api.invalid_for_user())?, None))
            }
        }
    }

    /// The id of the user an access token belongs to.
    pub(super) async fn user_id_apart(
        &self,
        api: Api,
        config: &ProviderConfig,
        token: &str,
        data: &Map<String, Value>,
        known_id: Option<&str>,
    ) -> ParseResult<String> {
        let claimed = id_of(data.get("id"));
        match api {
            Api::Gpgames => {
                let no_player =
                    || validation("Invalid Google Play Games Services user data received.");
                let request = self
                    .http
                    .get(api.api_url(config, "/games/v1/players/me"))
                    .bearer_auth(token)
                    .header("Accept", "application/json");
                let answer = self.send(api, request).await?;
                if !answer.ok() {
                    return Err(validation(format!(
                        "Failed to fetch Google Play Games Services user: {}",
                        answer.reason()
                    )));
                }
                let player = answer.text("playerId").ok_or_else(no_player)?;
                if claimed.as_deref().is_some_and(|claimed| claimed != player) {
                    return Err(no_player());
                }
                Ok(player.to_owned())
            }
            Api::Wechat => {
                let openid = known_id
                    .map(str::to_owned)
                    .or(claimed)
                    .ok_or_else(|| api.invalid_for_user())?;
                let request = self
                    .http
                    .get(api.api_url(config, "/sns/auth"))
                    .query(&[("access_token", token), ("openid", &openid)]);
                let answer = self.send(api, request).await?;
                let confirmed = answer.ok() && answer.body.get("errcode") == Some(&Value::from(0));
                if confirmed {
                    Ok(openid)
                } else {
                    Err(api.invalid_for_user())
                }
            }
            Api::Weibo => {
                let request = self
                    .http
                    .post(api.api_url(config, "/oauth2/get_token_info"))
                    .form(&[("access_token", token)]);
                let answer = self.send(api, request).await?;
                if !answer.ok() {
                    return Err(api.invalid_for_user());
                }
                id_of(answer.body.get("uid")).ok_or_else(|| api.invalid_for_user())
            }
            _ => {
                let request = self
                    .http
                    .get(api.api_url(config, "/oauth2.0/me"))
                    .bearer_auth(token)
                    .query(&[("access_token", token)]);
                let answer = self.send(api, request).await?;
                if !answer.ok() {
                    return Err(api.request_failed());
                }
                qq_body(&answer.raw)
                    .and_then(|body| id_of(body.get("openid")))
                    .ok_or_else(|| api.invalid_for_user())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn qq_answers_are_read_in_each_of_their_shapes() {
        let me = qq_body("callback( {\"client_id\":\"app\",\"openid\":\"qq-1\"} );\n").unwrap();
        assert_eq!(me["openid"], json!("qq-1"));
        let token = qq_body("access_token=T0K&expires_in=7776000&refresh_token=R").unwrap();
        assert_eq!(token["access_token"], json!("T0K"));
        let json_token = qq_body("{\"access_token\":\"J\"}").unwrap();
        assert_eq!(json_token["access_token"], json!("J"));
        let refused = qq_body(
            "callback( {\"error\":100019,\"error_description\":\"code to access token error\"} );",
        )
        .unwrap();
        assert!(refused.get("access_token").is_none());
        assert!(qq_body("").is_none());
    }
}
