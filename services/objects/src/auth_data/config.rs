//! `[auth]`: who may sign in with `authData`, as Parse Server's `auth`
//! option and `enableAnonymousUsers` say it.

use std::collections::BTreeMap;

use oxbase_kit::Section;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::oauth::Api;

pub(crate) const APPLE_ISSUER: &str = "https://appleid.apple.com";
pub(crate) const APPLE_JWKS: &str = "https://appleid.apple.com/auth/keys";
pub(crate) const GOOGLE_ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];
pub(crate) const GOOGLE_JWKS: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// Sign-in with `authData`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Parse's `enableAnonymousUsers`: `authData.anonymous` signs up and
    /// logs in without any check.
    pub enable_anonymous_users: bool,
    /// How long a fetched JWKS is trusted before it is fetched again.
    pub jwks_cache_secs: u64,
    /// Clock skew allowed on a token's `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Providers by the name clients use in `authData`
    /// (`[auth.providers.apple]`).
    pub providers: BTreeMap<String, ProviderConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let builtin = |kind| ProviderConfig {
            kind: Some(kind),
            ..ProviderConfig::default()
        };
        Self {
            enable_anonymous_users: true,
            jwks_cache_secs: 3600,
            leeway_secs: 60,
            providers: [
                ("apple".to_owned(), builtin(ProviderKind::Apple)),
                ("google".to_owned(), builtin(ProviderKind::Google)),
            ]
            .into(),
        }
    }
}

/// How a provider's tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Sign in with Apple: `authData.apple = {id, token}`.
    Apple,
    /// Google: `{id, id_token}`.
    Google,
    /// Keycloak access tokens: `{id, access_token, roles?, groups?}`,
    /// authorized for `client_ids` through `azp`.
    Keycloak,
    /// Any OpenID Connect provider: `{id, id_token}` (or `token`).
    Oidc,
}

/// One provider (`[auth.providers.<name>]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Parse's `enabled: false` turns a provider off.
    pub enabled: bool,
    /// How tokens are checked; `apple`, `google` and `keycloak` go without
    /// saying for providers of those names.
    #[serde(rename = "type")]
    pub kind: Option<ProviderKind>,
    /// The accepted audiences (Parse's `clientId`): the app's client or
    /// service ids. Tokens for any other audience are refused. Facebook's
    /// `appIds`; for providers that exchange codes, the first is the client
    /// id.
    #[serde(alias = "app_ids")]
    pub client_ids: Vec<String>,
    /// The accepted `iss` values; Apple's and Google's by default. A
    /// Keycloak issuer is `<auth-server-url>/realms/<realm>`.
    pub issuers: Vec<String>,
    /// Where the signing keys are; Apple's and Google's by default, and
    /// `<issuer>/protocol/openid-connect/certs` for Keycloak.
    pub jwks_url: Option<String>,
    /// The app's secret at the provider: Parse's `clientSecret`, Facebook's
    /// `appSecret` (which signs Graph calls with `appsecret_proof`) and
    /// Twitter's consumer secret. The first of `client_ids` (`app_ids`,
    /// `consumer_key`) goes with it.
    #[serde(alias = "app_secret", alias = "consumer_secret")]
    pub client_secret: Option<String>,
    /// Where the provider's API is (`https://api.github.com`, ...): set it
    /// to point a provider at a proxy or a test double.
    pub api_url: Option<String>,
    /// Where authorization codes are exchanged for access tokens.
    pub token_url: Option<String>,
    /// Parse's `enableInsecureAuth`: an access token the client got itself
    /// signs in (`{id, access_token}`), with no code exchanged. Any app's
    /// token for the user passes, which is why Parse deprecates it.
    pub enable_insecure_auth: bool,
    /// `mfa`: Parse's `options`, the second factors offered. Only `TOTP`
    /// is supported; `SMS` is refused at start-up.
    pub options: Vec<String>,
    /// `mfa`: digits of a one-time password, 4 to 10.
    pub digits: u32,
    /// `mfa`: seconds a one-time password lasts, at least 10.
    pub period: u64,
    /// `mfa`: the TOTP's HMAC: `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    /// Game Center: the app's bundle id (Parse's `bundleId`), part of what
    /// Apple signs. Required unless `enable_insecure_auth`, where the
    /// client's `authData.bundleId` stands in.
    pub bundle_id: Option<String>,
    /// Game Center: the PEM certificate of the CA that issues Apple's
    /// signing certificates (Parse's `rootCertificateUrl`).
    pub root_certificate_url: Option<String>,
    /// Game Center: where a player's `publicKeyUrl` may point, as URL
    /// prefixes; Apple's rule (`https://` on `apple.com` or a subdomain)
    /// when empty. The URL must end in `.cer` either way.
    pub public_key_url_prefixes: Vec<String>,
    /// LDAP: the server, `ldap://host:port` (Parse's `url`).
    pub url: Option<String>,
    /// LDAP: the users' base DN; a user binds as `uid=<id>,<suffix>` and
    /// groups are searched under it.
    pub suffix: Option<String>,
    /// LDAP: the DN to bind as instead, `{{id}}` standing for the user id
    /// (Parse's `dn`).
    pub dn: Option<String>,
    /// LDAP: the `cn` of the group a user must be in (Parse's `groupCn`),
    /// found with `group_filter`, e.g. `(memberUid={{id}})`.
    pub group_cn: Option<String>,
    pub group_filter: Option<String>,
    /// LDAP over `ldaps://`: a PEM file of the CA certificates that may
    /// sign the directory's (Parse's `tlsOptions.ca`); the system's roots
    /// when unset.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            kind: None,
            client_ids: Vec::new(),
            issuers: Vec::new(),
            jwks_url: None,
            client_secret: None,
            api_url: None,
            token_url: None,
            enable_insecure_auth: false,
            options: Vec::new(),
            digits: 6,
            period: 30,
            algorithm: "SHA1".to_owned(),
            bundle_id: None,
            root_certificate_url: None,
            public_key_url_prefixes: Vec::new(),
            url: None,
            suffix: None,
            dn: None,
            group_cn: None,
            group_filter: None,
            tls_ca_file: None,
        }
    }
}

impl ProviderConfig {
    /// The kind of the provider `name`, if it has one.
    pub(crate) fn kind_for(&self, name: &str) -> Option<ProviderKind> {
        self.kind.or(match name {
            "apple" => Some(ProviderKind::Apple),
            "google" => Some(ProviderKind::Google),
            "keycloak" => Some(ProviderKind::Keycloak),
            _ => None,
        })
    }

    /// The accepted issuers, the defaults filled in.
    pub(crate) fn issuers_for(&self, kind: ProviderKind) -> Vec<String> {
        match (kind, self.issuers.is_empty()) {
            (_, false) => self.issuers.clone(),
            (ProviderKind::Apple, true) => vec![APPLE_ISSUER.to_owned()],
            (ProviderKind::Google, true) => GOOGLE_ISSUERS.map(str::to_owned).to_vec(),
            (ProviderKind::Keycloak | ProviderKind::Oidc, true) => Vec::new(),
        }
    }

    /// The JWKS URL, the defaults filled in.
    pub(crate) fn jwks_url_for(&self, kind: ProviderKind) -> Option<String> {
        if let Some(url) = &self.jwks_url {
            return Some(url.clone());
        }
        match kind {
            ProviderKind::Apple => Some(APPLE_JWKS.to_owned()),
            ProviderKind::Google => Some(GOOGLE_JWKS.to_owned()),
            ProviderKind::Keycloak => self.issuers.first().map(|issuer| {
                format!(
                    "{}/protocol/openid-connect/certs",
                    issuer.trim_end_matches('/')
                )
            }),
            ProviderKind::Oidc => None,
        }
    }
}

impl Section for AuthConfig {
    const KEY: &'static str = "auth";
    const ALIASES: &'static [(&'static str, &'static str)] =
        &[("PARSE_SERVER_ENABLE_ANON_USERS", "enable_anonymous_users")];

    fn validate(&self) -> Result<(), String> {
        for (name, provider) in &self.providers {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "providers: {name:?} is not a provider name (ASCII letters, digits and '_', as Parse stores them)"
                ));
            }
            if !provider.enabled {
                continue;
            }
            if name == super::mfa::PROVIDER {
                super::mfa::Totp::of(provider).map_err(|e| format!("providers.{name}: {e}"))?;
                continue;
            }
            let Some(kind) = provider.kind_for(name) else {
                let checked = match name.as_str() {
                    "gcenter" => Some(super::gcenter::check_config(provider)),
                    "ldap" => Some(super::ldap::check_config(provider)),
                    _ => Api::of(name).map(|api| api.check_config(provider)),
                };
                if let Some(checked) = checked {
                    checked.map_err(|e| format!("providers.{name}: {e}"))?;
                    continue;
                }
                // Parse's other built-in providers answer that oxbase does
                // not check them yet; a custom one needs a type.
                if super::providers::is_parse_builtin(name) {
                    continue;
                }
                return Err(format!(
                    "providers.{name}: type must be apple, google, keycloak or oidc"
                ));
            };
            if matches!(kind, ProviderKind::Keycloak | ProviderKind::Oidc) {
                if provider.issuers.is_empty() {
                    return Err(format!("providers.{name}: issuers must name the issuer"));
                }
                if provider.client_ids.is_empty() {
                    return Err(format!(
                        "providers.{name}: client_ids must name the accepted client ids"
                    ));
                }
            }
            match provider.jwks_url_for(kind) {
                Some(url) if url.starts_with("https://") || url.starts_with("http://") => {}
                _ => return Err(format!("providers.{name}: jwks_url must be an http(s) URL")),
            }
        }
        if self.jwks_cache_secs == 0 {
            return Err("jwks_cache_secs must be positive".into());
        }
        Ok(())
    }

    fn entry_default(path: &str) -> Option<Value> {
        match path {
            "providers" => serde_json::to_value(ProviderConfig::default()).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(providers: Value) -> Result<(), String> {
        let config: AuthConfig =
            serde_json::from_value(json!({ "providers": providers })).map_err(|e| e.to_string())?;
        config.validate()
    }

    #[test]
    fn defaults_are_apple_and_google_unconfigured() {
        let config = AuthConfig::default();
        assert!(config.validate().is_ok());
        let apple = &config.providers["apple"];
        assert_eq!(
            apple.jwks_url_for(ProviderKind::Apple).as_deref(),
            Some(APPLE_JWKS)
        );
        assert!(apple.client_ids.is_empty());
    }

    #[test]
    fn custom_providers_need_a_type_issuer_audience_and_keys() {
        let oidc = |extra: Value| {
            let mut provider =
                json!({"type": "oidc", "issuers": ["https://a"], "client_ids": ["x"]});
            provider
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({ "acme": provider })
        };
        assert!(
            check(json!({"acme": {"client_ids": ["x"]}})).is_err(),
            "no type"
        );
        assert!(check(oidc(json!({}))).is_err(), "no JWKS URL");
        assert!(
            check(oidc(json!({"client_ids": []}))).is_err(),
            "no audience"
        );
        assert!(check(oidc(json!({"jwks_url": "https://a/keys"}))).is_ok());
        assert!(
            check(json!({"keycloak": {"issuers": ["https://kc/realms/r"], "client_ids": ["x"]}}))
                .is_ok()
        );
        assert!(check(json!({"facebook": {}})).is_ok());
        // Parse's code adapters need their client id and secret.
        assert!(check(json!({"github": {}})).is_err());
        assert!(check(json!({"github": {"client_ids": ["x"], "client_secret": "s"}})).is_ok());
        assert!(check(json!({"github": {"enable_insecure_auth": true}})).is_ok());
        assert!(check(json!({"twitter": {"consumer_secret": "s"}})).is_err());
        assert!(
            check(json!({"line": {"enable_insecure_auth": true, "api_url": "ftp://x"}})).is_err()
        );
        assert!(check(json!({"a.b": {"enabled": false}})).is_err());
        assert!(check(json!({"mfa": {}})).is_err(), "mfa needs its options");
        assert!(check(json!({"mfa": {"options": ["TOTP"], "algorithm": "SHA256"}})).is_ok());
        assert!(check(json!({"mfa": {"options": ["SMS"]}})).is_err());
        // Game Center signs with the app's bundle id; LDAP needs a server.
        assert!(check(json!({"gcenter": {}})).is_err());
        assert!(check(json!({"gcenter": {"bundle_id": "com.x"}})).is_ok());
        assert!(check(json!({"gcenter": {"enable_insecure_auth": true}})).is_ok());
        assert!(check(json!({"ldap": {"suffix": "dc=x"}})).is_err());
        assert!(check(json!({"ldap": {"url": "ldaps://h", "suffix": "dc=x"}})).is_ok());
        assert!(check(json!({"ldap": {"url": "ldap://h", "suffix": "dc=x"}})).is_ok());
        assert!(check(json!({"weibo": {"client_ids": ["x"], "client_secret": "s"}})).is_ok());
        assert!(check(json!({"qq": {}})).is_err());
    }
}
