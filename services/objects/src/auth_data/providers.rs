//! Each provider's check of its `authData`, as Parse Server's adapters
//! (`apple`, `google`, `keycloak`, `facebook`'s Limited Login tokens, the
//! anonymous one) make it, with their messages; a plain OpenID Connect
//! check for providers configured with `type = "oidc"`; the providers
//! asked through their API (`oauth.rs`); Game Center (`gcenter.rs`) and
//! LDAP (`ldap.rs`).

use std::time::Duration;

use serde_json::{Map, Value};

use super::config::{AuthConfig, ProviderConfig, ProviderKind};
use super::gcenter::GameCenter;
use super::jwt::{JwksCache, Token, invalid};
use super::ldap;
use super::mfa::{self, Totp};
use super::oauth::{Api, ApiClient};
use crate::error::{ParseError, ParseResult, code};

/// Parse Server's adapters that oxbase does not check yet. Their names are
/// answered with a clear refusal rather than Parse's "unsupported", which
/// would suggest a misspelt provider. Parse 9 deprecates all of them but
/// `mfa` and `janraincapture` (they log a deprecation when used).
const NOT_YET: &[&str] = &[
    "meetup",
    "vkontakte",
    "phantauth",
    "janraincapture",
    "janrainengage",
];

/// Built-in providers checked by their own module rather than an API.
const OWN_CHECKS: &[&str] = &["gcenter", "ldap"];

/// Facebook's Limited Login tokens.
const FACEBOOK_ISSUER: &str = "https://www.facebook.com";
const FACEBOOK_JWKS: &str = "https://www.facebook.com/.well-known/oauth/openid/jwks/";

pub(crate) fn is_parse_builtin(name: &str) -> bool {
    NOT_YET.contains(&name) || OWN_CHECKS.contains(&name) || Api::of(name).is_some()
}

pub(crate) fn unsupported() -> ParseError {
    ParseError::new(
        code::UNSUPPORTED_SERVICE,
        "This authentication method is unsupported.",
    )
}

fn not_yet(name: &str) -> ParseError {
    ParseError::new(
        code::UNSUPPORTED_SERVICE,
        format!(
            "Signing in with {name} is not supported by oxbase yet; configure it as an \
             `oidc` provider if it issues OpenID Connect tokens."
        ),
    )
}

/// Parse Server crashes on MFA data when its `mfa` adapter has no
/// options; oxbase refuses it, and refuses to log in an enrolled user
/// whose second factor it cannot check.
pub(crate) fn mfa_not_configured() -> ParseError {
    ParseError::new(
        code::UNSUPPORTED_SERVICE,
        "Multi-factor authentication (mfa) is not configured on this server \
         ([auth.providers.mfa] options = [\"TOTP\"]).",
    )
}

/// The configured providers and their keys.
#[derive(Debug)]
pub(crate) struct Providers {
    config: AuthConfig,
    jwks: JwksCache,
    api: ApiClient,
    gcenter: GameCenter,
    ldap_tls: ldap::TlsSettings,
    /// The settings of a built-in provider that has none.
    unconfigured: ProviderConfig,
}

/// How one provider name is handled.
enum Validator<'a> {
    Anonymous,
    Token(ProviderKind, &'a ProviderConfig),
    Api(Api, &'a ProviderConfig),
    GameCenter(&'a ProviderConfig),
    Ldap(&'a ProviderConfig),
    /// A Keycloak provider with no settings: Parse's adapter refuses it.
    UnconfiguredKeycloak,
    /// A Game Center provider with no settings (it needs a bundle id).
    UnconfiguredGameCenter,
    NotYet,
    Disabled,
}

impl Providers {
    pub(crate) fn new(config: AuthConfig) -> Self {
        let jwks = JwksCache::new(Duration::from_secs(config.jwks_cache_secs));
        let ldap_tls = config
            .providers
            .get("ldap")
            .map_or(Ok(None), ldap::tls_config);
        Self {
            ldap_tls,
            config,
            jwks,
            api: ApiClient::new(),
            gcenter: GameCenter::new(),
            unconfigured: ProviderConfig::default(),
        }
    }

    /// `None` for a provider Parse knows no adapter for.
    fn validator(&self, name: &str) -> Option<Validator<'_>> {
        if name == "anonymous" {
            return Some(if self.config.enable_anonymous_users {
                Validator::Anonymous
            } else {
                Validator::Disabled
            });
        }
        match self.config.providers.get(name) {
            Some(provider) if !provider.enabled => Some(Validator::Disabled),
            Some(provider) => match (provider.kind_for(name), Api::of(name)) {
                (Some(kind), _) => Some(Validator::Token(kind, provider)),
                (None, Some(api)) => Some(Validator::Api(api, provider)),
                (None, None) if name == "gcenter" => Some(Validator::GameCenter(provider)),
                (None, None) if name == "ldap" => Some(Validator::Ldap(provider)),
                (None, None) => is_parse_builtin(name).then_some(Validator::NotYet),
            },
            None if name == "keycloak" => Some(Validator::UnconfiguredKeycloak),
            None if name == "gcenter" => Some(Validator::UnconfiguredGameCenter),
            // Refused with Parse's "LDAP auth configuration missing".
            None if name == "ldap" => Some(Validator::Ldap(&self.unconfigured)),
            // Refused with the provider's "not configured" message.
            None if Api::of(name).is_some() => {
                Api::of(name).map(|api| Validator::Api(api, &self.unconfigured))
            }
            None if is_parse_builtin(name) => Some(Validator::NotYet),
            None => None,
        }
    }

    /// The TOTP settings of the `mfa` provider; refused as Parse refuses a
    /// disabled provider, or because it is not configured.
    pub(crate) fn mfa(&self) -> ParseResult<Totp> {
        match self.config.providers.get(mfa::PROVIDER) {
            Some(provider) if !provider.enabled => Err(unsupported()),
            Some(provider) => Totp::of(provider).map_err(|_| mfa_not_configured()),
            None => Err(mfa_not_configured()),
        }
    }

    /// Whether Parse would look users up by this provider's id: it skips
    /// providers it has no adapter for (they are refused when checked).
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.validator(name).is_some()
    }

    /// Parse's `beforeFind`: a provider that exchanges codes replaces the
    /// client's code with the user id and access token it stands for, so
    /// that the user can be looked up by that id.
    pub(crate) async fn before_find(
        &self,
        name: &str,
        data: &mut Map<String, Value>,
    ) -> ParseResult<()> {
        match self.validator(name) {
            Some(Validator::Api(api, provider)) if api.exchanges_codes() => {
                self.api.before_find(api, provider, data).await
            }
            _ => Ok(()),
        }
    }

    /// Parse's `afterFind`, for `_User.authData` as it is answered to
    /// anyone, the master key included: providers that exchange codes
    /// (Parse's `BaseCodeAuthAdapter`) show only their user id, never the
    /// access token they stored.
    pub(crate) fn after_find(&self, auth_data: &mut Value) {
        let Some(auth_data) = auth_data.as_object_mut() else {
            return;
        };
        for (name, data) in auth_data.iter_mut() {
            // Whether enabled or not, unless configured as a token provider.
            let code_provider = Api::of(name).is_some_and(Api::exchanges_codes)
                && self
                    .config
                    .providers
                    .get(name.as_str())
                    .is_none_or(|provider| provider.kind_for(name).is_none());
            if code_provider && let Some(fields) = data.as_object_mut() {
                fields.retain(|key, _| key == "id");
            }
        }
    }

    /// Checks one provider's data, as its adapter's `validateAuthData`;
    /// LDAP takes the password out so that it is not stored.
    pub(crate) async fn validate(
        &self,
        name: &str,
        data: &mut Map<String, Value>,
    ) -> ParseResult<()> {
        match self.validator(name) {
            None | Some(Validator::Disabled) => Err(unsupported()),
            Some(Validator::NotYet) => Err(not_yet(name)),
            Some(Validator::UnconfiguredKeycloak) => Err(invalid("Missing keycloak configuration")),
            Some(Validator::UnconfiguredGameCenter) => {
                Err(invalid("Game center auth options are required."))
            }
            Some(Validator::GameCenter(provider)) => self.gcenter.validate(provider, data).await,
            Some(Validator::Ldap(provider)) => ldap::validate(provider, &self.ldap_tls, data).await,
            // Parse checks nothing: the id is the secret.
            Some(Validator::Anonymous) => Ok(()),
            Some(Validator::Token(kind, provider)) => {
                self.check_token(name, kind, provider, data).await
            }
            Some(Validator::Api(Api::Facebook, provider)) if data.contains_key("token") => {
                self.check_facebook_token(provider, data).await
            }
            Some(Validator::Api(api, provider)) => self.api.validate(api, provider, data).await,
        }
    }

    /// A Facebook Limited Login token: an OpenID token for one of the
    /// app's ids.
    async fn check_facebook_token(
        &self,
        provider: &ProviderConfig,
        data: &Map<String, Value>,
    ) -> ParseResult<()> {
        if provider.client_ids.is_empty() {
            return Err(invalid("Facebook auth is not configured."));
        }
        let Some(token) = data.get("token").and_then(Value::as_str) else {
            return Err(invalid("id token is invalid for this user."));
        };
        let token = Token::decode(token)?;
        let url = provider.jwks_url.as_deref().unwrap_or(FACEBOOK_JWKS);
        self.jwks.verify(url, &token).await?;
        token.check_lifetime(Duration::from_secs(self.config.leeway_secs))?;
        check_audience(ProviderKind::Oidc, &provider.client_ids, &token)?;
        let issuer = token.claim_str("iss");
        if issuer != Some(FACEBOOK_ISSUER) {
            return Err(invalid(format!(
                "id token not issued by correct OpenID provider - expected: {FACEBOOK_ISSUER} | from: {}",
                issuer.unwrap_or("undefined")
            )));
        }
        if token.claim_str("sub").is_none()
            || token.claim_str("sub") != data.get("id").and_then(Value::as_str)
        {
            return Err(invalid("auth data is invalid for this user."));
        }
        Ok(())
    }

    async fn check_token(
        &self,
        name: &str,
        kind: ProviderKind,
        provider: &ProviderConfig,
        data: &Map<String, Value>,
    ) -> ParseResult<()> {
        let text = |key: &str| data.get(key).and_then(Value::as_str);
        let token = match kind {
            ProviderKind::Apple => text("token"),
            ProviderKind::Google => text("id_token"),
            ProviderKind::Keycloak => text("access_token"),
            ProviderKind::Oidc => text("id_token").or_else(|| text("token")),
        };
        if provider.client_ids.is_empty() {
            return Err(invalid(match kind {
                ProviderKind::Apple => "Apple auth is not configured.".to_owned(),
                ProviderKind::Google => "Google auth is not configured.".to_owned(),
                ProviderKind::Keycloak => {
                    "Keycloak auth is not configured. Missing client-id.".to_owned()
                }
                ProviderKind::Oidc => format!("{name} auth is not configured."),
            }));
        }
        let token = match (kind, token) {
            (ProviderKind::Keycloak, Some(token)) if text("id").is_some() => token,
            (ProviderKind::Keycloak, _) => {
                return Err(invalid("Missing access token and/or User id"));
            }
            (_, Some(token)) => token,
            (_, None) => return Err(invalid("id token is invalid for this user.")),
        };
        let issuers = provider.issuers_for(kind);
        let url = provider
            .jwks_url_for(kind)
            .ok_or_else(|| invalid("Missing keycloak configuration"))?;
        let token = Token::decode(token)?;
        self.jwks.verify(&url, &token).await?;
        token.check_lifetime(Duration::from_secs(self.config.leeway_secs))?;
        check_audience(kind, &provider.client_ids, &token)?;
        let issuer = token.claim_str("iss");
        if !issuer.is_some_and(|iss| issuers.iter().any(|i| i == iss)) {
            let expected = issuers.join(" or ");
            let from = issuer.unwrap_or("undefined");
            return Err(invalid(match kind {
                ProviderKind::Apple | ProviderKind::Oidc => format!(
                    "id token not issued by correct OpenID provider - expected: {expected} | from: {from}"
                ),
                ProviderKind::Google => format!(
                    "id token not issued by correct provider - expected: {expected} | from: {from}"
                ),
                ProviderKind::Keycloak => format!(
                    "access token not issued by correct provider - expected: {expected} | from: {from}"
                ),
            }));
        }
        if token.claim_str("sub").is_none() || token.claim_str("sub") != text("id") {
            return Err(invalid("auth data is invalid for this user."));
        }
        if kind == ProviderKind::Keycloak {
            check_keycloak_grants(data, &token)?;
        }
        Ok(())
    }
}

/// ID tokens name their audience in `aud`; Keycloak access tokens name the
/// client they were issued to in `azp`.
fn check_audience(kind: ProviderKind, client_ids: &[String], token: &Token) -> ParseResult<()> {
    if kind == ProviderKind::Keycloak {
        let azp = token.claim_str("azp");
        if azp.is_some_and(|azp| client_ids.iter().any(|id| id == azp)) {
            return Ok(());
        }
        return Err(invalid(format!(
            "access token is not authorized for this client - expected: {} | from: {}",
            client_ids.join(" or "),
            azp.unwrap_or("undefined")
        )));
    }
    let accepted = |aud: &Value| {
        aud.as_str()
            .is_some_and(|aud| client_ids.iter().any(|id| id == aud))
    };
    let matches = match token.claims.get("aud") {
        Some(Value::Array(auds)) => auds.iter().any(accepted),
        Some(aud) => accepted(aud),
        None => false,
    };
    if matches {
        Ok(())
    } else {
        Err(invalid(format!(
            "jwt audience invalid. expected: {}",
            client_ids.join(" or ")
        )))
    }
}

/// Parse's Keycloak adapter also requires the roles and groups the client
/// claims to be the token's.
fn check_keycloak_grants(data: &Map<String, Value>, token: &Token) -> ParseResult<()> {
    let same = |key: &str| {
        let sorted = |value: Option<&Value>| {
            value.and_then(Value::as_array).map(|items| {
                let mut items: Vec<String> = items.iter().map(Value::to_string).collect();
                items.sort();
                items
            })
        };
        let (claimed, granted) = (data.get(key), token.claims.get(key));
        claimed == granted || sorted(claimed).is_some_and(|c| Some(c) == sorted(granted))
    };
    if same("roles") && same("groups") {
        Ok(())
    } else {
        Err(invalid("Invalid authentication"))
    }
}
