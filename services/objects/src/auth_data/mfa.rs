//! Parse Server's `mfa` adapter: time-based one-time passwords (RFC 6238)
//! as a second factor. A signed-in user enrols with
//! `authData.mfa = {secret, token}`; oxbase stores `{secret, recovery}` as
//! Parse does and answers the two recovery codes once, in
//! `authDataResponse`. From then on every log-in of that user needs
//! `authData.mfa = {token}` (Parse's `additional` policy), where a recovery
//! code may stand in for a token once.
//!
//! Parse's adapter throws strings, which it answers as 141 (SCRIPT_FAILED)
//! with the string as message; the messages here are Parse's.

use ring::hmac;
use serde_json::{Map, Value, json};

use super::config::ProviderConfig;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};

/// The provider name clients use in `authData`.
pub(crate) const PROVIDER: &str = "mfa";

/// How many counter steps either side of now a token may be from: the
/// `otpauth` library's default, which Parse's adapter uses.
const WINDOW: i64 = 1;

/// Secrets shorter than this are refused at enrolment, as Parse does.
const MIN_SECRET_LEN: usize = 20;

fn failed(message: impl Into<String>) -> ParseError {
    ParseError::new(code::SCRIPT_FAILED, message)
}

fn invalid_token() -> ParseError {
    failed("Invalid MFA token")
}

fn invalid_data() -> ParseError {
    failed("Invalid MFA data")
}

/// The HMAC of a TOTP; Parse's `algorithm` option names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "SHA1" => Some(Self::Sha1),
            "SHA256" => Some(Self::Sha256),
            "SHA512" => Some(Self::Sha512),
            _ => None,
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// The TOTP settings of `[auth.providers.mfa]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totp {
    pub(crate) digits: u32,
    pub(crate) period: u64,
    pub(crate) algorithm: Algorithm,
}

impl Totp {
    /// The settings of an enabled `mfa` provider, or why they are refused
    /// (Parse's `validateOptions` messages, and SMS, which oxbase cannot
    /// send yet).
    pub(crate) fn of(config: &ProviderConfig) -> Result<Self, String> {
        let sms = config.options.iter().any(|o| o == "SMS");
        let totp = config.options.iter().any(|o| o == "TOTP");
        if sms {
            return Err(
                "mfa.options: SMS is not supported by oxbase yet (Parse's sendSMS callback has no \
                 counterpart); use [\"TOTP\"]"
                    .into(),
            );
        }
        if !totp {
            return Err("mfa.options must include SMS or TOTP".into());
        }
        if !(4..=10).contains(&config.digits) {
            return Err("mfa.digits must be between 4 and 10".into());
        }
        if config.period < 10 {
            return Err("mfa.period must be greater than 10".into());
        }
        let algorithm = Algorithm::parse(&config.algorithm)
            .ok_or("mfa.algorithm must be SHA1, SHA256 or SHA512")?;
        Ok(Self {
            digits: config.digits,
            period: config.period,
            algorithm,
        })
    }

    /// The HOTP value (RFC 4226) of `secret` at `counter`.
    fn hotp(&self, secret: &[u8], counter: u64) -> String {
        let key = hmac::Key::new(self.algorithm.ring(), secret);
        let digest = hmac::sign(&key, &counter.to_be_bytes());
        let digest = digest.as_ref();
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let binary = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        let value = u64::from(binary) % 10u64.pow(self.digits);
        format!("{value:0width$}", width = self.digits as usize)
    }

    /// The TOTP value at `unix_secs`.
    #[cfg(test)]
    fn at(&self, secret: &[u8], unix_secs: u64) -> String {
        self.hotp(secret, unix_secs / self.period)
    }

    /// Whether `token` is the TOTP of `secret` at `unix_secs`, give or take
    /// [`WINDOW`] periods.
    fn accepts(&self, secret: &[u8], token: &str, unix_secs: u64) -> bool {
        if token.len() != self.digits as usize {
            return false;
        }
        let now = i64::try_from(unix_secs / self.period).unwrap_or(i64::MAX);
        (-WINDOW..=WINDOW)
            .filter_map(|delta| u64::try_from(now + delta).ok())
            .any(|counter| same(self.hotp(secret, counter).as_bytes(), token.as_bytes()))
    }

    fn accepts_now(&self, secret: &str, token: &str) -> ParseResult<bool> {
        let secret = base32_decode(secret)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Ok(self.accepts(&secret, token, now))
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 4648 base32, read as `otpauth` reads secrets: spaces and trailing
/// `=` ignored, any case; another character is refused with its message.
fn base32_decode(text: &str) -> ParseResult<Vec<u8>> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let text: String = text.chars().filter(|c| *c != ' ').collect();
    let text = text.trim_end_matches('=').to_ascii_uppercase();
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut bits, mut value) = (0u32, 0u32);
    for c in text.chars() {
        let Some(index) = ALPHABET.iter().position(|a| char::from(*a) == c) else {
            return Err(failed(format!("Invalid character found: {c}")));
        };
        value = (value << 5) | index as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Which of Parse's adapter steps a provider's data goes through, as
/// Parse's `authDataValidator` picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The user does not have the provider yet.
    SetUp,
    /// Someone not signed in as the user logs in with it.
    LogIn,
    /// The user (or the master key) changes it.
    Update,
}

impl Step {
    /// `user` is the user the data is for, when Parse knows one;
    /// `signed_in` whether the caller is that user or the master key.
    pub(crate) fn of(provider: &str, user: Option<&Map<String, Value>>, signed_in: bool) -> Self {
        let has_provider = user
            .and_then(|user| user.get("authData"))
            .and_then(|auth_data| auth_data.get(provider))
            .is_some_and(|data| !data.is_null());
        match (signed_in && user.is_some(), has_provider) {
            (true, true) => Step::Update,
            (false, true) => Step::LogIn,
            (_, false) => Step::SetUp,
        }
    }
}

/// What an adapter step says to store, Parse's `save`/`doNotSave`, and what
/// it answers the client (`response`, under `authDataResponse`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checked {
    /// `None`: store nothing for this provider.
    pub(crate) save: Option<Value>,
    pub(crate) response: Option<Value>,
}

impl Checked {
    pub(crate) fn as_given(data: &Map<String, Value>) -> Self {
        Self {
            save: Some(Value::Object(data.clone())),
            response: None,
        }
    }

    pub(crate) fn do_not_save() -> Self {
        Self {
            save: None,
            response: None,
        }
    }
}

impl Totp {
    /// One adapter step on the client's `data`; `stored` is the user's
    /// `authData.mfa` as stored.
    pub(crate) fn check(
        &self,
        step: Step,
        master: bool,
        data: &Map<String, Value>,
        stored: Option<&Value>,
    ) -> ParseResult<Checked> {
        match step {
            Step::SetUp => self.set_up(data),
            Step::LogIn => self.log_in(data.get("token"), stored),
            // The master key changes a user's MFA data unchecked.
            Step::Update if master => Ok(Checked::as_given(data)),
            Step::Update => {
                self.log_in(data.get("old"), stored)?;
                self.set_up(data)
            }
        }
    }

    fn set_up(&self, data: &Map<String, Value>) -> ParseResult<Checked> {
        let secret = data.get("secret").and_then(Value::as_str).unwrap_or("");
        let token = data.get("token").filter(|t| truthy(t));
        let Some(token) = token.filter(|_| secret.chars().count() >= MIN_SECRET_LEN) else {
            return Err(invalid_data());
        };
        let Some(token) = token.as_str() else {
            return Err(invalid_token());
        };
        if !self.accepts_now(secret, token)? {
            return Err(invalid_token());
        }
        let recovery = [
            crate::layer::random_string(30),
            crate::layer::random_string(30),
        ];
        Ok(Checked {
            save: Some(json!({"secret": secret, "recovery": recovery})),
            response: Some(json!({"recovery": recovery.join(", ")})),
        })
    }

    /// Parse's `validateLogin`: the token is the TOTP now, or one of the
    /// recovery codes, which is then used up.
    fn log_in(&self, token: Option<&Value>, stored: Option<&Value>) -> ParseResult<Checked> {
        let Some(Value::String(token)) = token else {
            return Err(invalid_token());
        };
        let Some(secret) = stored.and_then(|s| s.get("secret")).filter(|s| truthy(s)) else {
            return Ok(Checked::do_not_save());
        };
        let recovery = stored
            .and_then(|s| s.get("recovery"))
            .and_then(Value::as_array);
        if let Some(codes) = recovery
            && let Some(index) = codes.iter().position(|c| c.as_str() == Some(token))
        {
            let mut left = codes.clone();
            left.remove(index);
            let mut save = stored
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            save.insert("recovery".into(), Value::Array(left));
            return Ok(Checked {
                save: Some(Value::Object(save)),
                response: None,
            });
        }
        let Some(secret) = secret.as_str() else {
            return Err(invalid_token());
        };
        if !self.accepts_now(secret, token)? {
            return Err(invalid_token());
        }
        Ok(Checked::do_not_save())
    }
}

/// JavaScript's truthiness, which Parse's checks rely on.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Parse's `afterFind`: a user reading their own object sees whether MFA
/// is on, never the secret or the recovery codes; the master key sees what
/// is stored.
pub fn redact_auth_data(auth: &Auth, user: &mut Map<String, Value>) {
    if auth.master {
        return;
    }
    let Some(mfa) = user
        .get_mut("authData")
        .and_then(Value::as_object_mut)
        .and_then(|auth_data| auth_data.get_mut(PROVIDER))
    else {
        return;
    };
    if mfa.is_null() {
        return;
    }
    // SMS enrolments (a `mobile`) come from Parse Server; they are on too.
    let enabled = ["secret", "mobile"]
        .iter()
        .any(|key| mfa.get(key).is_some_and(truthy));
    let status = if enabled { "enabled" } else { "disabled" };
    *mfa = json!({ "status": status });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totp(digits: u32, algorithm: Algorithm) -> Totp {
        Totp {
            digits,
            period: 30,
            algorithm,
        }
    }

    /// RFC 6238, appendix B: the seeds are the ASCII digits repeated to
    /// the hash's length.
    #[test]
    fn rfc_6238_vectors() {
        let seed =
            |len: usize| -> Vec<u8> { b"1234567890".iter().copied().cycle().take(len).collect() };
        let cases: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in cases {
            assert_eq!(totp(8, Algorithm::Sha1).at(&seed(20), time), sha1);
            assert_eq!(totp(8, Algorithm::Sha256).at(&seed(32), time), sha256);
            assert_eq!(totp(8, Algorithm::Sha512).at(&seed(64), time), sha512);
        }
        // Six digits are the last six of the same value.
        assert_eq!(totp(6, Algorithm::Sha1).at(&seed(20), 59), "287082");
    }

    #[test]
    fn tokens_pass_one_period_either_side() {
        let t = totp(6, Algorithm::Sha1);
        let secret = b"12345678901234567890";
        let now = 1_111_111_111;
        for offset in [0, 30] {
            assert!(t.accepts(secret, &t.at(secret, now - offset), now));
            assert!(t.accepts(secret, &t.at(secret, now + offset), now));
        }
        assert!(!t.accepts(secret, &t.at(secret, now - 60), now));
        assert!(!t.accepts(secret, &t.at(secret, now + 60), now));
        assert!(!t.accepts(secret, "12345", now));
    }

    #[test]
    fn base32_reads_as_otpauth() {
        // RFC 4648's vectors.
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw 6ytb oi").unwrap(), b"foobar");
        assert_eq!(
            base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(),
            b"12345678901234567890"
        );
        let err = base32_decode("ABC1").unwrap_err();
        assert_eq!(err.to_string(), "141: Invalid character found: 1");
    }

    #[test]
    fn options_are_checked() {
        let config = |options: &[&str]| ProviderConfig {
            options: options.iter().map(|o| (*o).to_owned()).collect(),
            ..ProviderConfig::default()
        };
        assert!(Totp::of(&config(&["TOTP"])).is_ok());
        assert!(Totp::of(&config(&[])).is_err());
        assert!(
            Totp::of(&config(&["SMS", "TOTP"]))
                .unwrap_err()
                .contains("not supported")
        );
        let mut bad = config(&["TOTP"]);
        bad.digits = 11;
        assert!(Totp::of(&bad).is_err());
        bad.digits = 6;
        bad.algorithm = "MD5".into();
        assert!(Totp::of(&bad).is_err());
    }

    #[test]
    fn log_in_uses_up_recovery_codes() {
        let t = totp(6, Algorithm::Sha1);
        let stored = json!({"secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "recovery": ["a", "b"]});
        let used = t.log_in(Some(&json!("b")), Some(&stored)).unwrap();
        assert_eq!(used.save.unwrap()["recovery"], json!(["a"]));
        assert!(t.log_in(Some(&json!("c")), Some(&stored)).is_err());
        assert!(t.log_in(Some(&json!(123456)), Some(&stored)).is_err());
        // No secret stored: nothing to check, as in Parse.
        let none = t.log_in(Some(&json!("x")), Some(&json!({}))).unwrap();
        assert_eq!(none.save, None);
    }

    #[test]
    fn after_find_hides_the_secret() {
        let mut user =
            json!({"authData": {"mfa": {"secret": "S", "recovery": ["a"]}, "x": {"id": "1"}}});
        let user = user.as_object_mut().unwrap();
        redact_auth_data(&Auth::master(), user);
        assert_eq!(user["authData"]["mfa"]["secret"], "S");
        redact_auth_data(&Auth::default(), user);
        assert_eq!(user["authData"]["mfa"], json!({"status": "enabled"}));
        assert_eq!(user["authData"]["x"], json!({"id": "1"}));
    }
}
