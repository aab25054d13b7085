//! The application keys a request presents (over HTTP or a LiveQuery
//! `connect`): they decide whether it gets in at all, and whether it acts
//! with the master key.

use std::net::IpAddr;

use oxbase_kit::{Config, Secret};

use crate::auth::Auth;
use crate::error::{ParseError, ParseResult};

/// The credentials a request carries.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub app_id: Option<String>,
    pub master_key: Option<String>,
    /// `X-Parse-Maintenance-Key`; Parse reads it from the header only.
    pub maintenance_key: Option<String>,
    pub javascript_key: Option<String>,
    pub client_key: Option<String>,
    pub rest_api_key: Option<String>,
    pub dotnet_key: Option<String>,
    pub session_token: Option<String>,
    pub installation_id: Option<String>,
    pub client_version: Option<String>,
    /// `X-Parse-Request-Id`, which events carry so a subscriber can tie
    /// one back to the request that caused it.
    pub request_id: Option<String>,
}

/// The keys a deployment accepts.
#[derive(Debug, Clone)]
pub struct Keys {
    app_id: String,
    master_key: Option<Secret>,
    read_only_master_key: Option<Secret>,
    master_key_ips: Vec<IpNet>,
    maintenance_key: Option<Secret>,
    maintenance_key_ips: Vec<IpNet>,
    client_keys: Vec<(ClientKey, Secret)>,
}

/// An address or CIDR range.
#[derive(Debug, Clone, Copy, PartialEq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr.parse().ok()?, Some(prefix.parse().ok()?)),
            None => (text.parse().ok()?, None),
        };
        let max = if matches!(addr, IpAddr::V4(_)) {
            32
        } else {
            128
        };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client reached over an IPv6 socket shows up mapped.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |a: IpAddr| match a {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, true),
            IpAddr::V6(a) => (u128::from(a), false),
        };
        let ((net, net_v4), (ip, ip_v4)) = (bits(self.addr), bits(ip));
        if net_v4 != ip_v4 {
            return false;
        }
        // IPv4 addresses sit in the top 32 bits, so one mask fits both.
        let shift = 128 - u32::from(self.prefix);
        let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
        net & mask == ip & mask
    }
}

/// The master-key level the keys of a request grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLevel {
    Client,
    Master,
    ReadOnlyMaster,
    Maintenance,
}

fn networks(setting: &str, entries: &[String]) -> Vec<IpNet> {
    entries
        .iter()
        .filter_map(|ip| {
            let net = IpNet::parse(ip);
            if net.is_none() {
                tracing::warn!(setting, entry = %ip, "ignoring an entry that is not an address or CIDR range");
            }
            net
        })
        .collect()
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
            read_only_master_key: config.read_only_master_key.clone(),
            master_key_ips: networks("master_key_ips", &config.master_key_ips),
            maintenance_key: config.maintenance_key.clone(),
            maintenance_key_ips: networks("maintenance_key_ips", &config.maintenance_key_ips),
            client_keys,
        }
    }

    /// Parse Server's rules: the app id must match; a matching master key
    /// makes the request master, but only from `master_key_ips`; otherwise,
    /// when any client key is configured, one of the configured keys must
    /// match.
    pub fn authenticate(&self, credentials: &Credentials, ip: IpAddr) -> ParseResult<KeyLevel> {
        if !credentials
            .app_id
            .as_deref()
            .is_some_and(|id| constant_time_eq(id, &self.app_id))
        {
            return Err(ParseError::Unauthorized);
        }
        // Parse looks at the maintenance key first, and refuses it from
        // elsewhere than its addresses whatever the other keys say.
        if let (Some(expected), Some(given)) = (&self.maintenance_key, &credentials.maintenance_key)
            && constant_time_eq(given, expected.expose())
        {
            if !self.maintenance_key_ips.iter().any(|net| net.contains(ip)) {
                tracing::warn!(%ip, "refused a maintenance key request from an address not in maintenance_key_ips");
                return Err(ParseError::Unauthorized);
            }
            return Ok(KeyLevel::Maintenance);
        }
        let matches = |expected: &Option<Secret>| match (expected, &credentials.master_key) {
            (Some(expected), Some(given)) => constant_time_eq(given, expected.expose()),
            _ => false,
        };
        let level = if matches(&self.master_key) {
            KeyLevel::Master
        } else if matches(&self.read_only_master_key) {
            KeyLevel::ReadOnlyMaster
        } else {
            KeyLevel::Client
        };
        if level != KeyLevel::Client {
            if !self.master_key_ips.iter().any(|net| net.contains(ip)) {
                tracing::warn!(%ip, "refused a master key request from an address not in master_key_ips");
                return Err(ParseError::Unauthorized);
            }
            return Ok(level);
        }
        if !self.client_keys.is_empty() {
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
                return Err(ParseError::Unauthorized);
            }
        }
        Ok(level)
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

impl Keys {
    /// The authority `credentials` give, before any session token is
    /// looked up.
    pub fn auth(&self, credentials: &Credentials, ip: IpAddr) -> ParseResult<Auth> {
        let level = self.authenticate(credentials, ip)?;
        Ok(Auth {
            master: level != KeyLevel::Client,
            read_only: level == KeyLevel::ReadOnlyMaster,
            maintenance: level == KeyLevel::Maintenance,
            installation_id: credentials.installation_id.clone(),
            request_id: credentials.request_id.clone(),
            user: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

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
        assert!(keys.authenticate(&creds("app"), LOCAL).is_ok());
        assert_eq!(
            keys.authenticate(&creds("other"), LOCAL).unwrap_err(),
            ParseError::Unauthorized
        );
        assert_eq!(
            keys.authenticate(&Credentials::default(), LOCAL)
                .unwrap_err(),
            ParseError::Unauthorized
        );
    }

    #[test]
    fn master_key_is_recognised_and_wrong_ones_are_ignored() {
        let keys = Keys::from_config(&config());
        let mut c = creds("app");
        c.master_key = Some("master".into());
        assert_eq!(keys.authenticate(&c, LOCAL).unwrap(), KeyLevel::Master);
        c.master_key = Some("guess".into());
        assert_eq!(keys.authenticate(&c, LOCAL).unwrap(), KeyLevel::Client);
    }

    #[test]
    fn master_keys_only_count_from_allowed_addresses() {
        let mut config = config();
        config.read_only_master_key = Some(Secret::new("reader"));
        let keys = Keys::from_config(&config);
        let mut c = creds("app");
        c.master_key = Some("master".into());
        let remote: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            keys.authenticate(&c, remote).unwrap_err(),
            ParseError::Unauthorized
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(keys.authenticate(&c, mapped).unwrap(), KeyLevel::Master);
        c.master_key = Some("reader".into());
        assert_eq!(
            keys.authenticate(&c, LOCAL).unwrap(),
            KeyLevel::ReadOnlyMaster
        );
        assert!(keys.authenticate(&c, remote).is_err());
        // Without a master key, any address may use the client keys.
        assert!(keys.authenticate(&creds("app"), remote).is_ok());
    }

    #[test]
    fn cidr_ranges() {
        let net = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            IpNet::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(
            !IpNet::parse("::1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
        assert_eq!(IpNet::parse("nonsense"), None);
    }

    #[test]
    fn any_configured_client_key_must_match() {
        let mut config = config();
        config.javascript_key = Some(Secret::new("js"));
        config.rest_api_key = Some(Secret::new("rest"));
        let keys = Keys::from_config(&config);
        assert!(keys.authenticate(&creds("app"), LOCAL).is_err());
        let mut c = creds("app");
        c.rest_api_key = Some("rest".into());
        assert!(keys.authenticate(&c, LOCAL).is_ok());
        c.rest_api_key = Some("wrong".into());
        assert!(keys.authenticate(&c, LOCAL).is_err());
        c.client_key = Some("js".into());
        assert!(
            keys.authenticate(&c, LOCAL).is_err(),
            "a key only counts in its own slot"
        );
        c.master_key = Some("master".into());
        assert_eq!(keys.authenticate(&c, LOCAL).unwrap(), KeyLevel::Master);
    }
}
