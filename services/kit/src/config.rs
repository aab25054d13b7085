//! Layered configuration: built-in defaults, then an optional `oxbase.toml`,
//! then environment variables (`OXBASE_*`, with `PARSE_SERVER_*` aliases for
//! the settings Parse Server has), then command-line overrides.
//!
//! [`Config`] holds what every process shares. Each service's own settings
//! are a [`Section`] (`[push]`, `[jobs]`...) defined in the crate that owns
//! it; the binary lists them in a [`Sections`] registry so that one file and
//! one set of variables configure everything, checked when the config loads.
//!
//! Environment variables map onto keys by lowercasing the rest of the name;
//! `__` descends into a section, so `OXBASE_LIMITS__MAX_BATCH_SIZE` sets
//! `limits.max_batch_size`. A variable is parsed as the type of the key it
//! sets, and variables that name no key are ignored, so unrelated
//! `OXBASE_TEST_*` variables never break startup.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Name of the optional config file looked up in the working directory.
pub const CONFIG_FILE: &str = "oxbase.toml";

/// Parse Server's environment variables that mean the same as ours.
const PARSE_SERVER_ALIASES: &[(&str, &str)] = &[
    ("PARSE_SERVER_APPLICATION_ID", "app_id"),
    ("PARSE_SERVER_MASTER_KEY", "master_key"),
    ("PARSE_SERVER_CLIENT_KEY", "client_key"),
    ("PARSE_SERVER_JAVASCRIPT_KEY", "javascript_key"),
    ("PARSE_SERVER_REST_API_KEY", "rest_api_key"),
    ("PARSE_SERVER_DOT_NET_KEY", "dotnet_key"),
    ("PARSE_SERVER_DATABASE_URI", "database_uri"),
    ("PARSE_SERVER_MOUNT_PATH", "mount_path"),
    ("PARSE_SERVER_PORT", "port"),
    ("PARSE_SERVER_PUBLIC_SERVER_URL", "public_server_url"),
    (
        "PARSE_SERVER_ALLOW_CLIENT_CLASS_CREATION",
        "allow_client_class_creation",
    ),
    (
        "PARSE_SERVER_ALLOW_CUSTOM_OBJECT_ID",
        "allow_custom_object_id",
    ),
    ("PARSE_SERVER_READ_ONLY_MASTER_KEY", "read_only_master_key"),
    ("PARSE_SERVER_MASTER_KEY_IPS", "master_key_ips"),
    ("PARSE_SERVER_MAINTENANCE_KEY", "maintenance_key"),
    ("PARSE_SERVER_MAINTENANCE_KEY_IPS", "maintenance_key_ips"),
    ("PARSE_SERVER_SESSION_LENGTH", "session_length_secs"),
    (
        "PARSE_SERVER_ENFORCE_PRIVATE_USERS",
        "enforce_private_users",
    ),
    (
        "PARSE_SERVER_REVOKE_SESSION_ON_PASSWORD_RESET",
        "revoke_session_on_password_reset",
    ),
];

/// OpenTelemetry's standard variables, read for the settings they mean
/// when ours leave them unset.
const OTEL_FALLBACKS: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_endpoint"),
    ("OTEL_SERVICE_NAME", "otel_service_name"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A credential. It never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Keys such as `12345` arrive from TOML or the environment as numbers.
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Secret(s)),
            Value::Number(n) => Ok(Secret(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, got {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The event backbone: every write's event goes through the outbox to
/// JetStream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Writes leave events and the relay publishes them; off, nothing is
    /// published and `/ready` does not wait for NATS.
    pub enabled: bool,
    /// The prefix of every subject and stream name.
    pub prefix: String,
    /// The CloudEvents `source`; empty means `oxbase://<app_id>`.
    pub source: Option<String>,
    /// The events stream's limits, replicas and duplicate window.
    pub stream: oxbase_proto::EventStreamSettings,
    /// The largest message the NATS servers take (their `max_payload`,
    /// 1 MiB unless configured): a write whose event would not fit is
    /// refused with Parse's 116.
    pub max_payload_bytes: usize,
    /// Fields events never carry, as `Class.field` or `field` (every
    /// class); `_Session.sessionToken` is always left out.
    pub redact: Vec<String>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: oxbase_proto::DEFAULT_PREFIX.into(),
            source: None,
            stream: oxbase_proto::EventStreamSettings::default(),
            max_payload_bytes: 1024 * 1024,
            redact: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Parse application id every request must carry.
    pub app_id: String,
    pub master_key: Option<Secret>,
    /// A key that reads like the master key but may not write.
    pub read_only_master_key: Option<Secret>,
    /// Addresses (or CIDR ranges) the master keys are accepted from.
    pub master_key_ips: Vec<String>,
    /// Parse's maintenance key (`X-Parse-Maintenance-Key`): reads and
    /// writes past ACLs like the master key, and also sees and sets the
    /// internal fields, for migrations and repairs. It opens no
    /// master-key-only route.
    pub maintenance_key: Option<Secret>,
    /// Addresses (or CIDR ranges) the maintenance key is accepted from.
    pub maintenance_key_ips: Vec<String>,
    /// How long a new session lasts, in seconds (Parse's `sessionLength`).
    pub session_length_secs: u64,
    /// Parse's optional client keys: when any is set, a non-master request
    /// must present one that matches.
    pub client_key: Option<Secret>,
    pub javascript_key: Option<Secret>,
    pub rest_api_key: Option<Secret>,
    pub dotnet_key: Option<Secret>,
    /// Address the HTTP server binds.
    pub host: String,
    pub port: u16,
    /// URL path the Parse API is served under.
    pub mount_path: String,
    /// The URL clients reach the server at, when it differs from the bind
    /// address (behind a proxy).
    pub public_server_url: Option<String>,
    /// Where the embedded store and local tools live.
    pub data_dir: PathBuf,
    /// `sqlite://path`, `postgres://...` or `mongodb://...`; empty means
    /// `<data_dir>/oxbase.db`.
    pub database_uri: Option<String>,
    /// Connections in the database pool.
    pub database_pool_size: usize,
    /// A PostgreSQL read replica for queries. Replicas lag: a client may
    /// not see its own latest write in a query served there.
    pub database_read_uri: Option<String>,
    /// MongoDB read preference (`primary`, `secondaryPreferred`, ...).
    pub database_read_preference: Option<String>,
    pub nats_url: String,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed).
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`), for nkey authentication.
    pub nats_nkey_seed: Option<PathBuf>,
    pub nats_token: Option<Secret>,
    /// A NATS user name, with `nats_password`.
    pub nats_user: Option<String>,
    pub nats_password: Option<Secret>,
    /// A PEM file of the CA certificates the NATS server's certificate is
    /// checked against, instead of the system's.
    pub nats_tls_ca: Option<PathBuf>,
    /// A PEM client certificate and its key, for servers that verify
    /// clients (mutual TLS).
    pub nats_tls_cert: Option<PathBuf>,
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse a NATS connection without TLS. A `tls://` URL, `nats_tls_ca`
    /// and a client certificate imply it.
    pub nats_tls_required: bool,
    /// Let clients without the master key create classes by saving objects.
    pub allow_client_class_creation: bool,
    /// Let clients choose the objectId of new objects.
    pub allow_custom_object_id: bool,
    /// A user signed up without an ACL may be read only by itself (Parse
    /// Server 9's `enforcePrivateUsers`); `false` makes it public-read.
    pub enforce_private_users: bool,
    /// A password change ends every session of the user (Parse's
    /// `revokeSessionOnPasswordReset`); the user gets a new one.
    pub revoke_session_on_password_reset: bool,
    pub events: EventsConfig,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `oxbase_api=debug,info`.
    pub log_level: String,
    /// The OTLP/HTTP collector traces go to, as a base URL
    /// (`http://collector:4318`): spans are sent as protobuf to
    /// `<url>/v1/traces`. When neither this nor the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, no spans are made or sent.
    pub otel_endpoint: Option<String>,
    /// The `service.name` of the spans; unset means `OTEL_SERVICE_NAME`,
    /// else `oxbase-<command>` (`oxbase-api`, `oxbase-triggers`...).
    pub otel_service_name: Option<String>,
    /// The share of the traces starting here that are recorded, 0 to 1. A
    /// trace continued from a caller's `traceparent` keeps the caller's
    /// decision.
    pub otel_sample_ratio: f64,
    /// How long a stopping service waits for in-flight work.
    pub shutdown_timeout_secs: u64,
    /// How long a stopping API process keeps serving after `/ready` turned
    /// 503, so that load balancers take it out before it stops taking
    /// connections (each answer then carries `Connection: close`). Match
    /// the load balancer's deregistration delay; the in-flight grace
    /// (`shutdown_timeout_secs`) follows it.
    pub drain_delay_ms: u64,
    /// The sections of the services, by key, as checked JSON.
    #[serde(skip)]
    pub sections: SectionValues,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            app_id: "oxbase-dev".into(),
            master_key: None,
            read_only_master_key: None,
            master_key_ips: vec!["127.0.0.1".into(), "::1".into()],
            maintenance_key: None,
            maintenance_key_ips: vec!["127.0.0.1".into(), "::1".into()],
            session_length_secs: 365 * 24 * 3600,
            client_key: None,
            javascript_key: None,
            rest_api_key: None,
            dotnet_key: None,
            host: "0.0.0.0".into(),
            port: 1337,
            mount_path: "/parse".into(),
            public_server_url: None,
            data_dir: PathBuf::from(".oxbase"),
            database_uri: None,
            database_pool_size: 10,
            database_read_uri: None,
            database_read_preference: None,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_nkey_seed: None,
            nats_token: None,
            nats_user: None,
            nats_password: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_tls_required: false,
            allow_client_class_creation: false,
            allow_custom_object_id: false,
            enforce_private_users: true,
            revoke_session_on_password_reset: true,
            events: EventsConfig::default(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            otel_endpoint: None,
            otel_service_name: None,
            otel_sample_ratio: 1.0,
            shutdown_timeout_secs: 10,
            drain_delay_ms: 5000,
            sections: SectionValues::default(),
        }
    }
}

impl Config {
    /// Loads the layers in order, with the `sections` the process knows.
    /// `file` is an explicit config file (it must exist); without one,
    /// `./oxbase.toml` is read when present. `overrides` are dotted keys
    /// from the command line, applied last.
    pub fn load(
        sections: &Sections,
        file: Option<&Path>,
        overrides: &[(&str, Value)],
    ) -> Result<Self, ConfigError> {
        Self::load_from(sections, file, std::env::vars(), overrides)
    }

    /// [`Config::load`] with the environment passed in, so tests need not
    /// touch the process environment.
    pub fn load_from(
        sections: &Sections,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, Value)],
    ) -> Result<Self, ConfigError> {
        Self::load_with_defaults(sections, Config::default(), file, env, overrides)
    }

    /// Like [`Config::load_from`], starting from other defaults (`oxbase dev`
    /// has its own).
    pub fn load_with_defaults(
        sections: &Sections,
        defaults: Config,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, Value)],
    ) -> Result<Self, ConfigError> {
        let mut tree = serde_json::to_value(&defaults).expect("config serializes");
        if let Value::Object(map) = &mut tree {
            for kind in &sections.kinds {
                let value = match defaults.sections.0.get(kind.key) {
                    Some(value) => value.clone(),
                    None => (kind.default)(),
                };
                map.insert(kind.key.to_owned(), value);
            }
        }

        let default_file = Path::new(CONFIG_FILE);
        let file = match file {
            Some(path) => Some(path),
            None if default_file.exists() => Some(default_file),
            None => None,
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Toml {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
            let file_tree = serde_json::to_value(table).expect("TOML is JSON-representable");
            merge(&mut tree, file_tree);
        }

        let env: Vec<(String, String)> = env.into_iter().collect();
        // Aliases first, so the OXBASE_ name wins when both are set.
        let section_aliases = sections.kinds.iter().flat_map(|kind| {
            kind.aliases.iter().map(|(alias, key)| match *key {
                "" => (*alias, kind.key.to_owned()),
                key => (*alias, format!("{}.{key}", kind.key)),
            })
        });
        let aliases = PARSE_SERVER_ALIASES
            .iter()
            .map(|(alias, key)| (*alias, (*key).to_owned()))
            .chain(section_aliases);
        for (alias, key) in aliases {
            if let Some((var, value)) = env.iter().find(|(name, _)| name == alias) {
                set_from_env(&mut tree, sections, &key, var, value)?;
            }
        }
        for (var, value) in &env {
            if let Some(rest) = var.strip_prefix("OXBASE_") {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                set_from_env(&mut tree, sections, &key, var, value)?;
            }
        }

        for (key, value) in overrides {
            set_path(&mut tree, key, value.clone());
        }
        for (var, key) in OTEL_FALLBACKS {
            if tree.get(key).is_none_or(Value::is_null)
                && let Some((var, value)) = env.iter().find(|(name, _)| name == var)
            {
                set_from_env(&mut tree, sections, key, var, value)?;
            }
        }

        let mut values = SectionValues::default();
        if let Value::Object(map) = &mut tree {
            for kind in &sections.kinds {
                let value = map.remove(kind.key).unwrap_or_else(kind.default);
                let checked = (kind.check)(value)
                    .map_err(|err| ConfigError::Invalid(format!("{}: {err}", kind.key)))?;
                values.0.insert(kind.key, checked);
            }
        }
        let mut config: Config =
            serde_json::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.sections = values;
        config.normalize()?;
        Ok(config)
    }

    /// The section `T`: as loaded, or its defaults when the config was not
    /// loaded with it.
    pub fn section<T: Section>(&self) -> T {
        match self.sections.0.get(T::KEY) {
            // Checked when loaded or set from a `T`, so it reads back.
            Some(value) => T::deserialize(value).unwrap_or_default(),
            None => T::default(),
        }
    }

    /// Replaces the section `T`.
    pub fn set_section<T: Section>(&mut self, section: &T) {
        let value = serde_json::to_value(section).expect("sections serialize");
        self.sections.0.insert(T::KEY, value);
    }

    /// Changes the section `T` in place.
    pub fn update_section<T: Section>(&mut self, change: impl FnOnce(&mut T)) {
        let mut section = self.section::<T>();
        change(&mut section);
        self.set_section(&section);
    }

    fn normalize(&mut self) -> Result<(), ConfigError> {
        let trimmed = self.mount_path.trim_end_matches('/');
        if !self.mount_path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "mount_path must start with '/', got {:?}",
                self.mount_path
            )));
        }
        self.mount_path = trimmed.to_owned();
        if let Err(err) = oxbase_proto::Subjects::new(self.events.prefix.as_str()) {
            return Err(ConfigError::Invalid(format!("events.prefix: {err}")));
        }
        if let Some(entry) = self.events.redact.iter().find(|entry| {
            let (class, field) = entry.split_once('.').unwrap_or(("-", entry));
            class.is_empty() || field.is_empty() || field.contains('.')
        }) {
            return Err(ConfigError::Invalid(format!(
                "events.redact: {entry:?} is not `Class.field` or `field`"
            )));
        }
        // Below a few KiB no object could be written at all.
        if self.events.max_payload_bytes < 16 * 1024 {
            return Err(ConfigError::Invalid(
                "events.max_payload_bytes must be at least 16384".into(),
            ));
        }
        if self.app_id.is_empty() {
            return Err(ConfigError::Invalid("app_id must not be empty".into()));
        }
        if !(0.0..=1.0).contains(&self.otel_sample_ratio) {
            return Err(ConfigError::Invalid(
                "otel_sample_ratio must be from 0 to 1".into(),
            ));
        }
        // As Parse Server: one key cannot mean both.
        if let (Some(master), Some(maintenance)) = (&self.master_key, &self.maintenance_key)
            && master.expose() == maintenance.expose()
        {
            return Err(ConfigError::Invalid(
                "master_key and maintenance_key must be different".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The store URI, defaulting to the embedded SQLite file in `data_dir`.
    pub fn database_uri(&self) -> String {
        match &self.database_uri {
            Some(uri) if !uri.is_empty() => uri.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("oxbase.db").display()),
        }
    }
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

fn set_path(tree: &mut Value, dotted: &str, value: Value) {
    let mut node = tree;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let map = match node {
            Value::Object(map) => map,
            other => {
                *other = Value::Object(Map::new());
                other.as_object_mut().expect("just made an object")
            }
        };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        node = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Sets `key` from an environment string, typed like the key's current
/// value. Keys that do not exist are ignored.
fn set_from_env(
    tree: &mut Value,
    sections: &Sections,
    key: &str,
    var: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let mut node = &mut *tree;
    let mut path = String::new();
    for part in key.split('.') {
        if node.get(part).is_none()
            && let (Some(entry), Value::Object(map)) = (sections.entry_default(&path), &mut *node)
        {
            map.insert(part.to_owned(), entry);
        }
        match node.get_mut(part) {
            Some(child) => node = child,
            None => return Ok(()),
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
    }
    let bad = |reason: &str| ConfigError::Env {
        var: var.to_owned(),
        reason: reason.to_owned(),
    };
    *node = match node {
        Value::Bool(_) => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Bool(true),
            "0" | "false" | "no" | "off" => Value::Bool(false),
            _ => return Err(bad("expected true or false")),
        },
        Value::Number(_) => {
            if let Ok(n) = raw.parse::<u64>() {
                Value::from(n)
            } else if let Ok(n) = raw.parse::<f64>() {
                Value::from(n)
            } else {
                return Err(bad("expected a number"));
            }
        }
        Value::Object(_) => serde_json::from_str(raw).map_err(|_| bad("expected a JSON value"))?,
        // A JSON array, or a comma-separated list as Parse Server takes.
        Value::Array(_) => serde_json::from_str(raw).unwrap_or_else(|_| {
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(Value::from)
                .collect()
        }),
        // Strings, and optional settings that are unset by default.
        Value::String(_) | Value::Null => Value::String(raw.to_owned()),
    };
    Ok(())
}

/// A service's settings: a table of the config file (`[push]`) and the
/// variables under its key (`OXBASE_PUSH__...`), defined by the crate that
/// owns them.
pub trait Section:
    Serialize + serde::de::DeserializeOwned + Default + fmt::Debug + Send + Sync + 'static
{
    /// The table's name.
    const KEY: &'static str;
    /// Parse Server's environment variables that set keys of this section:
    /// `(variable, key within the section)`. An empty key sets the whole
    /// section from a JSON object, as Parse Server reads its nested options
    /// (`PARSE_SERVER_ACCOUNT_LOCKOUT='{"threshold": 3}'`); list it before
    /// the per-key variables, which then override it.
    const ALIASES: &'static [(&'static str, &'static str)] = &[];

    /// Checks the merged settings.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// The defaults of a new entry of the map setting at `path` (within the
    /// section), when a variable names an entry that does not exist yet
    /// (`OXBASE_JOBS__QUEUES__EMAILS__...`).
    fn entry_default(path: &str) -> Option<Value> {
        let _ = path;
        None
    }
}

/// The sections a process loads: the binary lists every service's.
#[derive(Default)]
pub struct Sections {
    kinds: Vec<SectionKind>,
}

struct SectionKind {
    key: &'static str,
    aliases: &'static [(&'static str, &'static str)],
    default: fn() -> Value,
    /// Parses and validates a section; its settings as JSON again.
    check: fn(Value) -> Result<Value, String>,
    entry_default: fn(&str) -> Option<Value>,
}

impl Sections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the section `T`.
    pub fn with<T: Section>(mut self) -> Self {
        self.kinds.push(SectionKind {
            key: T::KEY,
            aliases: T::ALIASES,
            default: || serde_json::to_value(T::default()).expect("sections serialize"),
            check: |value| {
                let section = T::deserialize(value).map_err(|err| err.to_string())?;
                section.validate()?;
                serde_json::to_value(&section).map_err(|err| err.to_string())
            },
            entry_default: T::entry_default,
        });
        self
    }

    fn entry_default(&self, path: &str) -> Option<Value> {
        let (key, rest) = path.split_once('.')?;
        let kind = self.kinds.iter().find(|kind| kind.key == key)?;
        (kind.entry_default)(rest)
    }
}

impl fmt::Debug for Sections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.kinds.iter().map(|kind| kind.key))
            .finish()
    }
}

/// Loaded sections by key. Their values may hold secrets, so `Debug` shows
/// the keys only.
#[derive(Clone, Default)]
pub struct SectionValues(std::collections::BTreeMap<&'static str, Value>);

impl fmt::Debug for SectionValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section as a service crate defines one.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Limits {
        max_batch_size: usize,
        max_body_bytes: usize,
    }

    impl Default for Limits {
        fn default() -> Self {
            Self {
                max_batch_size: 50,
                max_body_bytes: 1024,
            }
        }
    }

    impl Section for Limits {
        const KEY: &'static str = "limits";

        fn validate(&self) -> Result<(), String> {
            if self.max_batch_size == 0 {
                return Err("max_batch_size must be positive".into());
            }
            Ok(())
        }
    }

    fn sections() -> Sections {
        Sections::new().with::<Limits>()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxbase.toml");
        std::fs::write(
            &file,
            "app_id = \"from-file\"\nport = 2000\nmount_path = \"/api/\"\n[limits]\nmax_batch_size = 7\n",
        )
        .unwrap();
        let config = Config::load_from(
            &sections(),
            Some(&file),
            env(&[
                ("OXBASE_PORT", "3000"),
                ("OXBASE_LIMITS__MAX_BODY_BYTES", "1234"),
                ("OXBASE_MASTER_KEY", "12345"),
                ("OXBASE_TEST_SOMETHING_ELSE", "ignored"),
                ("PARSE_SERVER_APPLICATION_ID", "from-alias"),
            ]),
            &[("log_level", Value::from("debug"))],
        )
        .unwrap();
        assert_eq!(config.app_id, "from-alias");
        assert_eq!(config.port, 3000);
        assert_eq!(config.mount_path, "/api");
        assert_eq!(config.section::<Limits>().max_batch_size, 7);
        assert_eq!(config.section::<Limits>().max_body_bytes, 1234);
        assert_eq!(config.master_key.unwrap().expose(), "12345");
        assert_eq!(config.log_level, "debug");
    }

    #[test]
    fn oxbase_variable_beats_parse_alias() {
        let config = Config::load_from(
            &sections(),
            None,
            env(&[
                ("OXBASE_APP_ID", "ours"),
                ("PARSE_SERVER_APPLICATION_ID", "theirs"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(config.app_id, "ours");
    }

    /// A section Parse Server configures with one JSON variable.
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Lockout {
        threshold: u32,
        #[serde(alias = "unlockOnReset")]
        unlock_on_reset: bool,
    }

    impl Section for Lockout {
        const KEY: &'static str = "lockout";
        const ALIASES: &'static [(&'static str, &'static str)] = &[
            ("PARSE_SERVER_LOCKOUT", ""),
            ("PARSE_SERVER_LOCKOUT_THRESHOLD", "threshold"),
        ];
    }

    #[test]
    fn a_parse_alias_sets_a_whole_section_from_json() {
        let sections = Sections::new().with::<Lockout>();
        let config = Config::load_from(
            &sections,
            None,
            env(&[(
                "PARSE_SERVER_LOCKOUT",
                r#"{"threshold": 3, "unlockOnReset": true}"#,
            )]),
            &[],
        )
        .unwrap();
        let lockout = config.section::<Lockout>();
        assert_eq!((lockout.threshold, lockout.unlock_on_reset), (3, true));
        // The per-key variable overrides the JSON.
        let config = Config::load_from(
            &sections,
            None,
            env(&[
                ("PARSE_SERVER_LOCKOUT", r#"{"threshold": 3}"#),
                ("PARSE_SERVER_LOCKOUT_THRESHOLD", "5"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(config.section::<Lockout>().threshold, 5);
    }

    #[test]
    fn bad_values_are_reported_with_their_variable() {
        let err = Config::load_from(&sections(), None, env(&[("OXBASE_PORT", "eighty")]), &[])
            .unwrap_err();
        assert!(err.to_string().contains("OXBASE_PORT"), "{err}");
        let err = Config::load_from(
            &sections(),
            None,
            env(&[("OXBASE_MOUNT_PATH", "parse")]),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("mount_path"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxbase.toml");
        std::fs::write(&file, "app_idd = \"typo\"\n").unwrap();
        let err = Config::load_from(&sections(), Some(&file), Vec::new(), &[]).unwrap_err();
        assert!(err.to_string().contains("app_idd"), "{err}");
    }

    #[test]
    fn sections_are_checked_when_loading() {
        let err = Config::load_from(
            &sections(),
            None,
            env(&[("OXBASE_LIMITS__MAX_BATCH_SIZE", "0")]),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_batch_size"), "{err}");
        // A section the process does not load is an unknown key.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxbase.toml");
        std::fs::write(&file, "[limits]\nmax_batch_size = 3\n").unwrap();
        let err = Config::load_from(&Sections::new(), Some(&file), Vec::new(), &[]).unwrap_err();
        assert!(err.to_string().contains("limits"), "{err}");
    }

    #[test]
    fn otel_settings_fall_back_to_the_standard_variables() {
        let standard = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SERVICE_NAME", "checkout"),
        ];
        let config = Config::load_from(&sections(), None, env(&standard), &[]).unwrap();
        assert_eq!(
            config.otel_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(config.otel_service_name.as_deref(), Some("checkout"));
        assert_eq!(config.otel_sample_ratio, 1.0);

        // Ours win, from the file or the environment.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxbase.toml");
        std::fs::write(&file, "otel_service_name = \"from-file\"\n").unwrap();
        let mut vars = standard.to_vec();
        vars.push(("OXBASE_OTEL_ENDPOINT", "http://ours:4318"));
        vars.push(("OXBASE_OTEL_SAMPLE_RATIO", "0.25"));
        let config = Config::load_from(&sections(), Some(&file), env(&vars), &[]).unwrap();
        assert_eq!(config.otel_endpoint.as_deref(), Some("http://ours:4318"));
        assert_eq!(config.otel_service_name.as_deref(), Some("from-file"));
        assert_eq!(config.otel_sample_ratio, 0.25);

        let config = Config::load_from(&sections(), None, Vec::new(), &[]).unwrap();
        assert_eq!(config.otel_endpoint, None);
        let err = Config::load_from(
            &sections(),
            None,
            env(&[("OXBASE_OTEL_SAMPLE_RATIO", "1.5")]),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("otel_sample_ratio"), "{err}");
    }

    #[test]
    fn secrets_do_not_leak_into_debug_output() {
        let config = Config {
            master_key: Some(Secret::new("hunter2")),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
