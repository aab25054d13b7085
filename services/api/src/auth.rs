//! Who a request is: the application keys it presents decide whether it
//! gets in at all, and whether it acts with the master key.

use oxbase_kit::{Config, Secret};

use crate::error::{ApiError, ApiResult};
use crate::request::Credentials;

/// The authority a request acts with.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The master key bypasses class creation limits and, later, ACLs and
    /// class-level permissions.
    pub master: bool,
    pub installation_id: Option<String>,
}

/// The keys a deployment accepts.
#[derive(Debug, Clone)]
pub struct Keys {
    app_id: String,
    master_key: Option<Secret>,
    client_keys: Vec<(ClientKey, Secret)>,
}

#[derive(Debug, Clone, Copy)]
enum ClientKey {
    Client,
    Javascript,
    RestApi,
    DotNet,
}

impl Keys {
    pub fn from_config(config: &Config) -> Self {
        let client_keys = [
            (ClientKey::Client, &config.client_key),
            (ClientKey::Javascript, &config.javascript_key),
            (ClientKey::RestApi, &config.rest_api_key),
            (ClientKey::DotNet, &config.dotnet_key),
        ]
        .into_iter()
        .filter_map(|(kind, key)| key.clone().map(|key| (kind, key)))
        .collect();
        Self {
            app_id: config.app_id.clone(),
            master_key: config.master_key.clone(),
            client_keys,
        }
    }

    /// Parse Server's rules: the app id must match; a matching master key
    /// makes the request master; otherwise, when any client key is
    /// configured, one of the configured keys must match.
    pub fn authenticate(&self, credentials: &Credentials) -> ApiResult<Auth> {
        if !credentials
            .app_id
            .as_deref()
            .is_some_and(|id| constant_time_eq(id, &self.app_id))
        {
            return Err(ApiError::Unauthorized);
        }
        let master = match (&self.master_key, &credentials.master_key) {
            (Some(expected), Some(given)) => constant_time_eq(given, expected.expose()),
            _ => false,
        };
        if !master && !self.client_keys.is_empty() {
            let presented = |kind: ClientKey| match kind {
                ClientKey::Client => &credentials.client_key,
                ClientKey::Javascript => &credentials.javascript_key,
                ClientKey::RestApi => &credentials.rest_api_key,
                ClientKey::DotNet => &credentials.dotnet_key,
            };
            let matched = self.client_keys.iter().any(|(kind, expected)| {
                presented(*kind)
                    .as_deref()
                    .is_some_and(|given| constant_time_eq(given, expected.expose()))
            });
            if !matched {
                return Err(ApiError::Unauthorized);
            }
        }
        Ok(Auth {
            master,
            installation_id: credentials.installation_id.clone(),
        })
    }
}

/// Compares secrets without an early exit that would leak how much of a
/// guess was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            app_id: "app".into(),
            master_key: Some(Secret::new("master")),
            ..Config::default()
        }
    }

    fn creds(app: &str) -> Credentials {
        Credentials {
            app_id: Some(app.into()),
            ..Credentials::default()
        }
    }

    #[test]
    fn app_id_is_required() {
        let keys = Keys::from_config(&config());
        assert!(keys.authenticate(&creds("app")).is_ok());
        assert_eq!(
            keys.authenticate(&creds("other")).unwrap_err(),
            ApiError::Unauthorized
        );
        assert_eq!(
            keys.authenticate(&Credentials::default()).unwrap_err(),
            ApiError::Unauthorized
        );
    }

    #[test]
    fn master_key_is_recognised_and_wrong_ones_are_ignored() {
        let keys = Keys::from_config(&config());
        let mut c = creds("app");
        c.master_key = Some("master".into());
        assert!(keys.authenticate(&c).unwrap().master);
        c.master_key = Some("guess".into());
        assert!(!keys.authenticate(&c).unwrap().master);
    }

    #[test]
    fn any_configured_client_key_must_match() {
        let mut config = config();
        config.javascript_key = Some(Secret::new("js"));
        config.rest_api_key = Some(Secret::new("rest"));
        let keys = Keys::from_config(&config);
        assert!(keys.authenticate(&creds("app")).is_err());
        let mut c = creds("app");
        c.rest_api_key = Some("rest".into());
        assert!(keys.authenticate(&c).is_ok());
        c.rest_api_key = Some("wrong".into());
        assert!(keys.authenticate(&c).is_err());
        c.client_key = Some("js".into());
        assert!(
            keys.authenticate(&c).is_err(),
            "a key only counts in its own slot"
        );
        c.master_key = Some("master".into());
        assert!(keys.authenticate(&c).unwrap().master);
    }
}
