//! Apple Game Center, as Parse Server 9's `gcenter` adapter checks it: the
//! client sends what `GKLocalPlayer.fetchItems` gave it (`id`,
//! `publicKeyUrl`, `timestamp`, `signature`, `salt`); the certificate at
//! `publicKeyUrl` must be on Apple's domain and issued by the configured
//! root CA, and its RSA key must have signed `id`, the bundle id, the
//! timestamp (8 bytes, big-endian) and the salt, with SHA-256.
//!
//! Certificates are read with `der` (just the fields a signature check
//! needs) and checked with `ring`; like Parse (node-forge), only RSA keys
//! are accepted, and neither validity dates nor key usage are looked at.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Reader, SliceReader, Tag, Tagged};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{Map, Value};

use super::config::ProviderConfig;
use crate::error::{ParseError, ParseResult, code};

/// Parse's default: the DigiCert CA that issues Apple's Game Center
/// certificates.
const ROOT_CERTIFICATE_URL: &str =
    "https://cacerts.digicert.com/DigiCertTrustedG4CodeSigningRSA4096SHA3842021CA1.crt.pem";
/// Parse refuses a larger root certificate download.
const MAX_ROOT_BYTES: u64 = 10_000;
/// A certificate download that does not end within this fails the sign-in.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Players' certificates kept at most (Apple rotates a handful).
const MAX_CACHED: usize = 64;

const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];

/// Node's base64 decoder takes text with or without padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(code::OBJECT_NOT_FOUND, message)
}

fn invalid_url(url: &str) -> ParseError {
    invalid(format!("Invalid publicKeyUrl: {url}"))
}

/// What a signature check needs of an X.509 certificate.
#[derive(Debug, Clone)]
struct Certificate {
    /// `tbsCertificate` as encoded: what the issuer signed.
    signed: Vec<u8>,
    signature_algorithm: Vec<u8>,
    signature: Vec<u8>,
    /// The encoded issuer and subject names.
    issuer: Vec<u8>,
    subject: Vec<u8>,
    key_algorithm: Vec<u8>,
    /// The subject's key; for RSA, the PKCS#1 `RSAPublicKey` ring takes.
    public_key: Vec<u8>,
}

/// The encodings of the elements of a DER SEQUENCE.
fn elements(encoded: &[u8]) -> Option<Vec<&[u8]>> {
    let any = AnyRef::from_der(encoded).ok()?;
    if any.tag() != Tag::Sequence {
        return None;
    }
    let mut reader = SliceReader::new(any.value()).ok()?;
    let mut items = Vec::new();
    while !reader.is_finished() {
        items.push(reader.tlv_bytes().ok()?);
    }
    Some(items)
}

/// The value of an `AlgorithmIdentifier`'s OID.
fn algorithm(encoded: &[u8]) -> Option<Vec<u8>> {
    let oid = AnyRef::from_der(elements(encoded)?.first()?).ok()?;
    (oid.tag() == Tag::ObjectIdentifier).then(|| oid.value().to_vec())
}

fn bits(encoded: &[u8]) -> Option<Vec<u8>> {
    BitStringRef::from_der(encoded)
        .ok()?
        .as_bytes()
        .map(<[u8]>::to_vec)
}

impl Certificate {
    fn from_der(encoded: &[u8]) -> Option<Self> {
        let [tbs, signature_algorithm, signature] = elements(encoded)?[..] else {
            return None;
        };
        let mut fields = elements(tbs)?;
        // `version` is explicitly tagged [0] and absent in v1 certificates.
        if fields
            .first()
            .is_some_and(|field| field.first() == Some(&0xa0))
        {
            fields.remove(0);
        }
        // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
        let [_, _, issuer, _, subject, key_info, ..] = fields[..] else {
            return None;
        };
        let [key_algorithm, public_key] = elements(key_info)?[..] else {
            return None;
        };
        Some(Self {
            signed: tbs.to_vec(),
            signature_algorithm: algorithm(signature_algorithm)?,
            signature: bits(signature)?,
            issuer: issuer.to_vec(),
            subject: subject.to_vec(),
            key_algorithm: algorithm(key_algorithm)?,
            public_key: bits(public_key)?,
        })
    }

    /// A certificate as Parse fetches it: PEM text or DER bytes.
    fn parse(body: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok();
        match text.filter(|text| text.contains("-----BEGIN CERTIFICATE-----")) {
            Some(pem) => Self::from_der(&pem_body(pem)?),
            None => Self::from_der(body),
        }
    }

    fn rsa_key(&self) -> Option<&[u8]> {
        (self.key_algorithm == RSA_ENCRYPTION).then_some(self.public_key.as_slice())
    }

    /// Whether this CA issued `child`: its subject is the child's issuer
    /// and its key signed the child.
    fn issued(&self, child: &Self) -> bool {
        let algorithm: &dyn VerificationAlgorithm = match child.signature_algorithm.as_slice() {
            SHA256_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA256,
            SHA384_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA384,
            SHA512_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA512,
            _ => return false,
        };
        let Some(key) = self.rsa_key() else {
            return false;
        };
        self.subject == child.issuer
            && UnparsedPublicKey::new(algorithm, key)
                .verify(&child.signed, &child.signature)
                .is_ok()
    }
}

/// The DER inside the first PEM certificate of `text`.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let body: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .flat_map(|line| line.trim().chars())
        .collect();
    LENIENT_BASE64.decode(body).ok()
}

/// Apple's rule, Parse's `verifyPublicKeyUrl`: `https://`, a host that is
/// `apple.com` or under it, a path ending in `.cer`.
fn on_apple_domain(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let Some((host, _)) = rest.split_once('/') else {
        return false;
    };
    let Some(labels) = host.strip_suffix("apple.com") else {
        return false;
    };
    // Each label before `apple.com` is letters, digits, `-` or `_`.
    labels.is_empty()
        || labels.strip_suffix('.').is_some_and(|labels| {
            labels.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
        })
}

fn allowed_url(config: &ProviderConfig, url: &str) -> bool {
    if config.public_key_url_prefixes.is_empty() {
        return on_apple_domain(url) && url.ends_with(".cer");
    }
    url.ends_with(".cer")
        && config
            .public_key_url_prefixes
            .iter()
            .any(|prefix| url.starts_with(prefix.as_str()))
}

/// The configuration Parse's `validateOptions` requires.
pub(crate) fn check_config(config: &ProviderConfig) -> Result<(), String> {
    if !config.enable_insecure_auth && config.bundle_id.is_none() {
        return Err("bundle_id is required for secure auth".into());
    }
    let urls = config
        .root_certificate_url
        .iter()
        .chain(&config.public_key_url_prefixes);
    for url in urls {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("{url:?} is not an http(s) URL"));
        }
    }
    Ok(())
}

/// Whether a value counts as given, as JavaScript's `!value` sees it.
fn given(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => false,
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Number(number)) => number.as_f64() != Some(0.0),
        Some(_) => true,
    }
}

/// `timestamp` as the 8 big-endian bytes Apple signed; Parse takes a
/// number or a string of digits.
fn timestamp_bytes(value: &Value) -> Option<[u8; 8]> {
    let timestamp = match value {
        Value::Number(number) => number.as_u64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    Some(timestamp.to_be_bytes())
}

/// Checks Game Center `authData`, keeping the certificates it fetches.
#[derive(Debug)]
pub(crate) struct GameCenter {
    http: reqwest::Client,
    /// The root CA, by the URL it came from.
    root: tokio::sync::Mutex<Option<(String, Certificate)>>,
    /// Players' certificates Apple said could be cached, until when.
    leaves: Mutex<HashMap<String, (Certificate, Instant)>>,
}

impl GameCenter {
    pub(crate) fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            http,
            root: tokio::sync::Mutex::new(None),
            leaves: Mutex::new(HashMap::new()),
        }
    }

    /// Parse's `validateAuthData`.
    pub(crate) async fn validate(
        &self,
        config: &ProviderConfig,
        data: &Map<String, Value>,
    ) -> ParseResult<()> {
        let mut required = vec!["id", "publicKeyUrl", "timestamp", "signature", "salt"];
        if config.enable_insecure_auth {
            required.push("bundleId");
        }
        for key in required {
            if !given(data.get(key)) {
                return Err(invalid(format!("AuthData {key} is missing.")));
            }
        }
        let root = self.root(config).await?;
        let url = data
            .get("publicKeyUrl")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let leaf = self.player_certificate(config, url, &root).await?;
        let text = |key: &str| data.get(key).and_then(Value::as_str);
        let bundle_id = config.bundle_id.as_deref().or(config
            .enable_insecure_auth
            .then(|| text("bundleId"))
            .flatten());
        let signed = (|| {
            let mut signed = text("id")?.as_bytes().to_vec();
            signed.extend_from_slice(bundle_id?.as_bytes());
            signed.extend_from_slice(&timestamp_bytes(data.get("timestamp")?)?);
            signed.extend(LENIENT_BASE64.decode(text("salt")?).ok()?);
            let signature = LENIENT_BASE64.decode(text("signature")?).ok()?;
            Some((signed, signature))
        })();
        let verified = signed
            .zip(leaf.rsa_key())
            .is_some_and(|((signed, sig), key)| {
                UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
                    .verify(&signed, &sig)
                    .is_ok()
            });
        if verified {
            Ok(())
        } else {
            Err(invalid("Invalid signature."))
        }
    }

    /// The root CA, fetched once per URL; a failed fetch is tried again
    /// at the next sign-in.
    async fn root(&self, config: &ProviderConfig) -> ParseResult<Certificate> {
        let url = config
            .root_certificate_url
            .as_deref()
            .unwrap_or(ROOT_CERTIFICATE_URL);
        let mut root = self.root.lock().await;
        if let Some((loaded, certificate)) = root.as_ref()
            && loaded == url
        {
            return Ok(certificate.clone());
        }
        let refused = || invalid("Invalid rootCertificateURL.");
        let response = self.http.get(url).send().await.map_err(|err| {
            tracing::warn!(%err, url, "Game Center's root certificate could not be fetched");
            refused()
        })?;
        // Parse takes only a small PEM file.
        let pem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/x-pem-file");
        let small = response
            .content_length()
            .is_some_and(|length| length <= MAX_ROOT_BYTES);
        if !response.status().is_success() || !pem || !small {
            return Err(refused());
        }
        let body = response.bytes().await.map_err(|_| refused())?;
        let certificate = Certificate::parse(&body)
            .ok_or_else(|| invalid("Root certificate is invalid or missing."))?;
        *root = Some((url.to_owned(), certificate.clone()));
        Ok(certificate)
    }

    /// The certificate at a player's `publicKeyUrl`, once the root issued
    /// it; kept as long as the answer's `Cache-Control: max-age` says.
    async fn player_certificate(
        &self,
        config: &ProviderConfig,
        url: &str,
        root: &Certificate,
    ) -> ParseResult<Certificate> {
        if !allowed_url(config, url) {
            return Err(invalid_url(url));
        }
        if let Some(cached) = self.cached(url) {
            return Ok(cached);
        }
        let response = self.http.get(url).send().await.map_err(|err| {
            tracing::warn!(%err, url, "a Game Center certificate could not be fetched");
            invalid_url(url)
        })?;
        if !response.status().is_success() {
            return Err(invalid_url(url));
        }
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = response.bytes().await.map_err(|_| invalid_url(url))?;
        let certificate = Certificate::parse(&body).ok_or_else(|| invalid_url(url))?;
        if !root.issued(&certificate) {
            return Err(invalid_url(url));
        }
        if let Some(max_age) = max_age {
            self.keep(url, &certificate, max_age);
        }
        Ok(certificate)
    }

    fn cached(&self, url: &str) -> Option<Certificate> {
        let leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        leaves
            .get(url)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(certificate, _)| certificate.clone())
    }

    fn keep(&self, url: &str, certificate: &Certificate, max_age: Duration) {
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        leaves.retain(|_, (_, until)| *until > now);
        if leaves.len() < MAX_CACHED {
            leaves.insert(url.to_owned(), (certificate.clone(), now + max_age));
        }
    }
}

fn max_age(cache_control: &str) -> Option<Duration> {
    let at = cache_control.find("max-age=")?;
    let digits: String = cache_control[at + "max-age=".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn public_key_urls_must_be_apples() {
        let config = ProviderConfig::default();
        for good in [
            "https://static.gc.apple.com/public-key/gc-prod-10.cer",
            "https://apple.com/a.cer",
            "https://sand_box.gc.apple.com/x/y.cer",
        ] {
            assert!(allowed_url(&config, good), "{good}");
        }
        for bad in [
            "http://static.gc.apple.com/public-key/gc-prod-10.cer",
            "https://static.gc.apple.com/public-key/gc-prod-10.pem",
            "https://evilapple.com/a.cer",
            "https://apple.com.evil.com/a.cer",
            "https://a..apple.com/a.cer",
            "https://apple.com",
        ] {
            assert!(!allowed_url(&config, bad), "{bad}");
        }
        let local = ProviderConfig {
            public_key_url_prefixes: vec!["http://127.0.0.1:9/gc/".into()],
            ..ProviderConfig::default()
        };
        assert!(allowed_url(&local, "http://127.0.0.1:9/gc/k.cer"));
        assert!(!allowed_url(&local, "http://127.0.0.1:9/other/k.cer"));
    }

    #[test]
    fn values_are_read_as_parse_reads_them() {
        assert!(!given(Some(&json!(""))));
        assert!(!given(Some(&json!(0))));
        assert!(given(Some(&json!(1_460_981_421_303_u64))));
        assert_eq!(
            timestamp_bytes(&json!("1460981421303")),
            Some(1_460_981_421_303_u64.to_be_bytes())
        );
        assert_eq!(timestamp_bytes(&json!(-1)), None);
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("no-store"), None);
        assert!(Certificate::parse(b"not a certificate").is_none());
    }
}
