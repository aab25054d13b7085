//! JSON Web Tokens signed by an OpenID provider: the token is split and
//! decoded, its signature checked (RS256 or ES256) against the provider's
//! JWKS, and its lifetime checked. Which issuer, audience and subject a
//! provider accepts is `providers.rs`'s business.
//!
//! Messages are those Parse Server's adapters pass on from `jsonwebtoken`
//! and `jwks-rsa`, all with Parse's code 101 (OBJECT_NOT_FOUND).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ParseError, ParseResult, code};

/// An unknown `kid` fetches the keys again (the provider rotated them),
/// but not more often than this, so that made-up ids cannot make oxbase
/// hammer the provider.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// A JWKS endpoint that does not answer within this fails the sign-in.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(code::OBJECT_NOT_FOUND, message)
}

/// A decoded, not yet trusted, token.
#[derive(Debug)]
pub(crate) struct Token {
    alg: String,
    kid: Option<String>,
    /// `header.payload`, what the signature signs.
    signed: String,
    signature: Vec<u8>,
    pub(crate) claims: Map<String, Value>,
}

fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

impl Token {
    pub(crate) fn decode(token: &str) -> ParseResult<Self> {
        let not_jwt = || invalid("provided token does not decode as JWT");
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(not_jwt());
        };
        let head = decode_part(header).ok_or_else(not_jwt)?;
        let claims = decode_part(payload).ok_or_else(not_jwt)?;
        let alg = head
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(not_jwt)?
            .to_owned();
        let signature = URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .map_err(|_| invalid("invalid signature"))?;
        Ok(Self {
            alg,
            kid: head.get("kid").and_then(Value::as_str).map(str::to_owned),
            signed: format!("{header}.{payload}"),
            signature,
            claims,
        })
    }

    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// `exp` (required: a token without one would never expire) and
    /// `nbf`, give or take `leeway`.
    pub(crate) fn check_lifetime(&self, leeway: Duration) -> ParseResult<()> {
        let now = chrono::Utc::now().timestamp() as f64;
        let leeway = leeway.as_secs_f64();
        let exp = self
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or_else(|| invalid("invalid exp value"))?;
        if now >= exp + leeway {
            return Err(invalid("jwt expired"));
        }
        if let Some(nbf) = self.claims.get("nbf")
            && nbf.as_f64().is_none_or(|nbf| nbf > now + leeway)
        {
            return Err(invalid("jwt not active"));
        }
        Ok(())
    }
}

/// One key of a JWKS, as RFC 7517 writes it.
#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl Jwk {
    fn signs(&self) -> bool {
        self.usage.as_deref().is_none_or(|usage| usage == "sig")
            && matches!(self.kty.as_str(), "RSA" | "EC")
    }

    fn verify(&self, token: &Token) -> ParseResult<()> {
        let bad_signature = || invalid("invalid signature");
        if self.alg.as_deref().is_some_and(|alg| alg != token.alg) {
            return Err(invalid("invalid algorithm"));
        }
        let part = |value: &Option<String>| {
            value
                .as_deref()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
                .ok_or_else(bad_signature)
        };
        let message = token.signed.as_bytes();
        let checked = match (token.alg.as_str(), self.kty.as_str()) {
            ("RS256", "RSA") => RsaPublicKeyComponents {
                n: part(&self.n)?,
                e: part(&self.e)?,
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message, &token.signature),
            ("ES256", "EC") if self.crv.as_deref() == Some("P-256") => {
                // An uncompressed SEC1 point: 0x04, x, y.
                let mut point = vec![4];
                point.extend(part(&self.x)?);
                point.extend(part(&self.y)?);
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, &token.signature)
            }
            _ => return Err(invalid("invalid algorithm")),
        };
        checked.map_err(|_| bad_signature())
    }
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Value>,
}

struct Fetched {
    at: Instant,
    keys: Arc<Vec<Jwk>>,
}

/// Providers' signing keys, fetched from their JWKS URLs and cached per URL.
pub(crate) struct JwksCache {
    http: reqwest::Client,
    ttl: Duration,
    fetched: Mutex<HashMap<String, Fetched>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").field("ttl", &self.ttl).finish()
    }
}

impl JwksCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            http,
            ttl,
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `token`'s signature with the key its `kid` names in the JWKS
    /// at `url`.
    pub(crate) async fn verify(&self, url: &str, token: &Token) -> ParseResult<()> {
        self.key(url, token.kid.as_deref()).await?.verify(token)
    }

    async fn key(&self, url: &str, kid: Option<&str>) -> ParseResult<Jwk> {
        let cached = self.cached(url);
        let keys = match &cached {
            Some((keys, age)) if *age < self.ttl => Some(keys.clone()),
            _ => None,
        };
        if let Some(key) = keys.as_deref().and_then(|keys| pick(keys, kid)) {
            return Ok(key.clone());
        }
        let may_refetch = cached.as_ref().is_none_or(|(_, age)| *age >= MIN_REFETCH);
        let keys = match (may_refetch, keys) {
            (true, _) | (false, None) => match self.fetch(url).await {
                Some(keys) => keys,
                // A provider briefly down: the keys it last served still sign.
                None => cached.map(|(keys, _)| keys).unwrap_or_default(),
            },
            (false, Some(keys)) => keys,
        };
        pick(&keys, kid).cloned().ok_or_else(|| {
            invalid(format!(
                "Unable to find matching key for Key ID: {}",
                kid.unwrap_or("undefined")
            ))
        })
    }

    fn cached(&self, url: &str) -> Option<(Arc<Vec<Jwk>>, Duration)> {
        let fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        fetched
            .get(url)
            .map(|entry| (entry.keys.clone(), entry.at.elapsed()))
    }

    async fn fetch(&self, url: &str) -> Option<Arc<Vec<Jwk>>> {
        let answer = async {
            self.http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        };
        let set = match answer.await {
            Ok(set) => set,
            Err(err) => {
                tracing::warn!(%err, url, "cannot fetch a JWKS");
                return None;
            }
        };
        // Keys of kinds oxbase cannot use are skipped, not fatal.
        let keys: Arc<Vec<Jwk>> = Arc::new(
            set.keys
                .into_iter()
                .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
                .filter(Jwk::signs)
                .collect(),
        );
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        fetched.insert(
            url.to_owned(),
            Fetched {
                at: Instant::now(),
                keys: keys.clone(),
            },
        );
        Some(keys)
    }
}

/// The key `kid` names; without a `kid`, the only key, as `jwks-rsa` picks.
fn pick<'a>(keys: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An ES256 token signed by a fresh key, and that key as a JWK.
    fn signed(claims: Value) -> (String, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("k1".into()),
            alg: None,
            usage: None,
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(b64(&point[1..33])),
            y: Some(b64(&point[33..])),
        };
        let signed = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","kid":"k1"}"#),
            b64(claims.to_string().as_bytes())
        );
        let signature = pair.sign(&rng, signed.as_bytes()).unwrap();
        (format!("{signed}.{}", b64(signature.as_ref())), jwk)
    }

    fn message(err: ParseError) -> String {
        err.body()["error"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn es256_signatures_are_checked() {
        let exp = chrono::Utc::now().timestamp() + 60;
        let (token, jwk) = signed(json!({"sub": "u", "exp": exp}));
        let decoded = Token::decode(&token).unwrap();
        jwk.verify(&decoded).unwrap();
        decoded.check_lifetime(Duration::ZERO).unwrap();

        let (_, other) = signed(json!({}));
        assert_eq!(
            message(other.verify(&decoded).unwrap_err()),
            "invalid signature"
        );
    }

    #[test]
    fn lifetimes_and_garbage_are_refused() {
        let now = chrono::Utc::now().timestamp();
        let (expired, _) = signed(json!({"exp": now - 120}));
        let expired = Token::decode(&expired).unwrap();
        assert_eq!(
            message(expired.check_lifetime(Duration::from_secs(60)).unwrap_err()),
            "jwt expired"
        );
        assert!(expired.check_lifetime(Duration::from_secs(600)).is_ok());
        let (early, _) = signed(json!({"exp": now + 600, "nbf": now + 300}));
        let early = Token::decode(&early).unwrap();
        assert_eq!(
            message(early.check_lifetime(Duration::ZERO).unwrap_err()),
            "jwt not active"
        );
        for garbage in ["", "a.b", "a.b.c", "e30.e30.!!", "x.y.z.w"] {
            assert!(Token::decode(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn keys_are_picked_by_kid_or_alone() {
        let (_, jwk) = signed(json!({}));
        let keys = vec![jwk.clone()];
        assert!(pick(&keys, Some("k1")).is_some());
        assert!(pick(&keys, Some("k2")).is_none());
        assert!(pick(&keys, None).is_some());
        assert!(pick(&[jwk.clone(), jwk], None).is_none());
    }
}
