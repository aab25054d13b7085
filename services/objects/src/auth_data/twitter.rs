//! Twitter: the client's OAuth 1.0a user token and secret (`auth_token`,
//! `auth_token_secret`, as Parse's SDKs send them) are checked by calling
//! `account/verify_credentials` signed with the app's consumer key and
//! secret (RFC 5849, HMAC-SHA1); the account it answers must be
//! `authData.id`. This is what Parse Server's Twitter adapter did before
//! version 7; Parse 9's exchanges `oauth_verifier`s instead, with a request
//! Twitter refuses unsigned, so oxbase keeps the check that works.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use ring::hmac;
use serde_json::{Map, Value};

use super::config::ProviderConfig;

pub(crate) const VERIFY_PATH: &str = "/1.1/account/verify_credentials.json";

/// RFC 3986 percent-encoding of everything but the unreserved characters,
/// as OAuth 1.0a signs it.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The base64 HMAC-SHA1 signature of a request: `params` are all the
/// request's parameters, the `oauth_*` ones included.
pub(crate) fn signature(
    method: &str,
    url: &str,
    params: &[(String, String)],
    consumer_secret: &str,
    token_secret: &str,
) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(key, value)| (encode(key), encode(value)))
        .collect();
    encoded.sort();
    let joined = encoded
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!("{method}&{}&{}", encode(url), encode(&joined));
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    STANDARD.encode(hmac::sign(&key, base.as_bytes()).as_ref())
}

fn nonce() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The account the client's token belongs to, as Twitter answers it; an
/// empty object when the token is refused or missing.
pub(crate) async fn verify_credentials(
    http: &reqwest::Client,
    url: &str,
    config: &ProviderConfig,
    data: &Map<String, Value>,
) -> Result<Value, reqwest::Error> {
    let text = |keys: [&str; 2]| {
        keys.iter()
            .find_map(|key| data.get(*key).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned()
    };
    let token = text(["auth_token", "oauth_token"]);
    let token_secret = text(["auth_token_secret", "oauth_token_secret"]);
    let (Some(consumer_key), Some(consumer_secret)) =
        (config.client_ids.first(), &config.client_secret)
    else {
        return Ok(Value::Null);
    };
    if token.is_empty() {
        return Ok(Value::Null);
    }
    let mut oauth = vec![
        ("oauth_consumer_key".to_owned(), consumer_key.clone()),
        ("oauth_nonce".to_owned(), nonce()),
        ("oauth_signature_method".to_owned(), "HMAC-SHA1".to_owned()),
        (
            "oauth_timestamp".to_owned(),
            chrono::Utc::now().timestamp().to_string(),
        ),
        ("oauth_token".to_owned(), token),
        ("oauth_version".to_owned(), "1.0".to_owned()),
    ];
    let signed = signature("GET", url, &oauth, consumer_secret, &token_secret);
    oauth.push(("oauth_signature".to_owned(), signed));
    let header = oauth
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", encode(value)))
        .collect::<Vec<_>>()
        .join(", ");
    let response = http
        .get(url)
        .header("Authorization", format!("OAuth {header}"))
        .send()
        .await?;
    if !response.status().is_success() {
        return Ok(Value::Null);
    }
    Ok(response.json().await.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twitter's "Creating a signature" guide.
    #[test]
    fn signs_as_twitter_documents() {
        let params: Vec<(String, String)> = [
            (
                "status",
                "Hello Ladies + Gentlemen, a signed OAuth request!",
            ),
            ("include_entities", "true"),
            ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            (
                "oauth_token",
                "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            ),
            ("oauth_version", "1.0"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let signed = signature(
            "POST",
            "https://api.twitter.com/1.1/statuses/update.json",
            &params,
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        );
        assert_eq!(signed, "hCtSmYh+iHYCEqBWrE7C7hYmtUk=");
    }
}
