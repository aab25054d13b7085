//! Layered configuration: built-in defaults, then an optional `oxbase.toml`,
//! then environment variables (`OXBASE_*`, with `PARSE_SERVER_*` aliases for
//! the settings Parse Server has), then command-line overrides.
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
    ("PARSE_SERVER_SESSION_LENGTH", "session_length_secs"),
    (
        "PARSE_SERVER_ENFORCE_PRIVATE_USERS",
        "enforce_private_users",
    ),
    (
        "PARSE_SERVER_REVOKE_SESSION_ON_PASSWORD_RESET",
        "revoke_session_on_password_reset",
    ),
    ("PARSE_SERVER_WEBHOOK_KEY", "triggers.webhook_key"),
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

/// Limits that keep one request from hurting the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most operations in one `/batch` request.
    pub max_batch_size: usize,
    /// Deepest nesting of `$or`/`$and`/`$nor` and subqueries in one query.
    pub max_query_depth: usize,
    /// Longest accepted `$regex` pattern, in bytes.
    pub max_regex_length: usize,
    /// Deepest `include` path (`a.b.c` is 3).
    pub max_include_depth: usize,
    /// Largest `limit` a query may ask for; larger values are lowered to it,
    /// as Parse Server's `maxLimit` does. 0 (the default, as in Parse
    /// Server) means no cap.
    pub max_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 * 1024 * 1024,
            max_batch_size: 50,
            max_query_depth: 10,
            max_regex_length: 1024,
            max_include_depth: 10,
            max_limit: 0,
        }
    }
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
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: oxbase_proto::DEFAULT_PREFIX.into(),
            source: None,
            stream: oxbase_proto::EventStreamSettings::default(),
        }
    }
}

/// Cloud functions and triggers: the hook registry, synchronous calls, and
/// the triggers service's durable after-hook deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggersConfig {
    /// Cloud functions and hooks, which need NATS; off, `/functions` and
    /// `/hooks` answer that they are off and writes run no hooks.
    pub enabled: bool,
    /// Sent to webhooks as `X-Parse-Webhook-Key` (Parse's `webhookKey`), so
    /// they can tell oxbase's calls from anyone else's.
    pub webhook_key: Option<Secret>,
    /// How long a function, a beforeSave or beforeDelete hook, or one
    /// after-hook delivery may take before it counts as failed.
    pub timeout_ms: u64,
    /// Largest reply accepted from a webhook or a NATS handler.
    pub max_reply_bytes: usize,
    /// Attempts at one after-hook delivery before it goes to the dead
    /// letters.
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles, up to
    /// `retry_max_ms`, with random jitter of up to half the delay.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// After-hook deliveries are spread over this many ordered partitions
    /// (by object): the most deliveries in flight at once across every
    /// triggers process. Changing it on a running deployment may reorder
    /// the events of an object that are waiting at that moment.
    pub partitions: u32,
    /// Servers holding a copy of the hook registry and the delivery
    /// streams: 1 on a single server, 3 in a cluster.
    pub replicas: usize,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            webhook_key: None,
            timeout_ms: 10_000,
            max_reply_bytes: 1024 * 1024,
            max_attempts: 8,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            partitions: 16,
            replicas: 1,
        }
    }
}

/// Background jobs (`[jobs]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Off, the jobs routes answer that jobs are off and no jobs process
    /// runs jobs.
    pub enabled: bool,
    /// The queues jobs may be submitted to, by name (letters, digits, `_`
    /// and `-`). `default` always exists.
    pub queues: std::collections::BTreeMap<String, QueueConfig>,
    /// Jobs one jobs process runs at once, over every queue.
    pub concurrency: usize,
    /// Largest payload a job may carry, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// How long an idempotency key is remembered.
    pub idempotency_window_secs: u64,
    /// How long a finished job (succeeded, dead or cancelled) stays
    /// readable. A dead job retried within this time runs again.
    pub retention_secs: u64,
    /// How long a jobs process may go silent on a run before NATS hands the
    /// job to another process. Running jobs are kept alive well within it,
    /// so it bounds how late a job held by a killed process runs again.
    pub ack_wait_ms: u64,
    /// The queue of Parse's `POST /jobs/<name>`.
    pub parse_queue: String,
    /// Servers holding a copy of the job streams: 1 on a single server, 3
    /// in a cluster.
    pub replicas: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queues: [("default".to_owned(), QueueConfig::default())].into(),
            concurrency: 256,
            max_payload_bytes: 256 * 1024,
            idempotency_window_secs: 24 * 3600,
            retention_secs: 7 * 24 * 3600,
            ack_wait_ms: 30_000,
            parse_queue: "default".into(),
            replicas: 1,
        }
    }
}

/// Push notifications (`[push]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Off, `/push` answers that push is off and no push process runs.
    pub enabled: bool,
    /// Installations per batch.
    pub batch_size: usize,
    /// Notifications in flight at once per push process.
    pub concurrency: usize,
    /// Batches a push process sends at once: while one waits on its last
    /// notifications, the others keep the senders busy. A process killed
    /// mid-send can send these batches twice.
    pub batches_in_flight: usize,
    /// How long a push process may stay silent on the request or batch it
    /// holds before another process takes it over; a live process says it
    /// is still working three times per period.
    pub ack_wait_ms: u64,
    /// Servers holding a copy of the push stream.
    pub replicas: usize,
    /// Firebase Cloud Messaging (HTTP v1), for `android` installations.
    pub fcm: FcmConfig,
    /// Apple Push Notification service, for `ios`, `osx`, `tvos` and
    /// `watchos` installations.
    pub apns: ApnsConfig,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 500,
            concurrency: 256,
            batches_in_flight: 4,
            ack_wait_ms: 30_000,
            replicas: 1,
            fcm: FcmConfig::default(),
            apns: ApnsConfig::default(),
        }
    }
}

/// `[push.fcm]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmConfig {
    /// The service account's JSON key file, from the Firebase console;
    /// without it, pushes to `android` installations fail.
    pub service_account: Option<std::path::PathBuf>,
    /// Where messages are sent; Google's by default.
    pub endpoint: String,
}

impl Default for FcmConfig {
    fn default() -> Self {
        Self {
            service_account: None,
            endpoint: "https://fcm.googleapis.com".into(),
        }
    }
}

/// `[push.apns]`: token auth (`key`, `key_id`, `team_id`) or certificate
/// auth (`certificate`, `certificate_key`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` signing key from Apple's developer account.
    pub key: Option<std::path::PathBuf>,
    pub key_id: String,
    pub team_id: String,
    /// The push certificate and its private key, PEM (a `.p12` converts
    /// with `openssl pkcs12 -nodes`); both may be in one file.
    pub certificate: Option<std::path::PathBuf>,
    pub certificate_key: Option<std::path::PathBuf>,
    /// The app's bundle id. Empty, each installation's `appIdentifier` is
    /// the topic; set, only installations of this app (or with no
    /// `appIdentifier`) are sent to, as in Parse Server.
    pub topic: String,
    /// Apple's production host rather than its sandbox.
    pub production: bool,
    /// Where notifications are sent, over HTTP/2; Apple's host for
    /// `production` by default.
    pub endpoint: Option<String>,
    /// A PEM certificate authority trusted beside the system's, for an
    /// endpoint with its own certificate (a proxy, a test server).
    pub ca_certificate: Option<std::path::PathBuf>,
}

/// Schedules (`[cron]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CronConfig {
    /// Off, no cron process fires anything and the schedule routes answer
    /// that cron is off.
    pub enabled: bool,
    /// Schedules written to the schedule bucket when a cron process starts,
    /// by name (`[cron.schedules.<name>]`, the same fields as the HTTP API).
    pub schedules: std::collections::BTreeMap<String, oxbase_proto::cron::CronSchedule>,
    /// Runs kept per schedule.
    pub history: i64,
    /// How long a tick claimed by a process may stay unsettled before
    /// another process takes it over.
    pub lease_ms: u64,
    /// How long a tick's claim is remembered. It must exceed any clock
    /// skew between cron processes: a process whose clock is later by more
    /// would fire the tick again.
    pub slot_ttl_secs: u64,
    /// A tick first seen later than this after its time is a misfire, and
    /// its schedule's misfire policy decides it.
    pub misfire_grace_ms: u64,
    /// Missed ticks looked at per schedule on return; older ones are
    /// neither fired nor recorded.
    pub max_catch_up: usize,
    /// Servers holding a copy of the cron buckets and stream.
    pub replicas: usize,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedules: Default::default(),
            history: 100,
            lease_ms: 5_000,
            slot_ttl_secs: 3_600,
            misfire_grace_ms: 1_000,
            max_catch_up: 1_000,
            replicas: 1,
        }
    }
}

/// One job queue (`[jobs.queues.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue one jobs process runs at once.
    pub concurrency: usize,
    /// At most this many jobs of the queue start per `rate_period_ms`,
    /// across every jobs process; 0 means no limit.
    pub rate_limit: u32,
    pub rate_period_ms: u64,
    /// A job waiting this long at one priority moves up one; 0 turns aging
    /// off.
    pub aging_ms: u64,
    /// Defaults of the queue's jobs.
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// A run fails when its worker is silent this long (no answer, no
    /// progress message).
    pub heartbeat_ms: u64,
    /// The default backoff: exponential from `backoff_ms`, doubling up to
    /// `backoff_max_ms`, with jitter.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// Keep a record of each succeeded job (for `jobs.retention_secs`).
    /// Off, a succeeded job is forgotten once done, as Sidekiq and
    /// BullMQ's `removeOnComplete` do: one write fewer per job, and a job
    /// id that is no longer found once its job succeeded.
    pub keep_succeeded: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            rate_limit: 0,
            rate_period_ms: 1000,
            aging_ms: 0,
            max_attempts: 3,
            timeout_ms: 5 * 60 * 1000,
            heartbeat_ms: 60 * 1000,
            backoff_ms: 1000,
            backoff_max_ms: 5 * 60 * 1000,
            keep_succeeded: true,
        }
    }
}

/// Who may upload files, as Parse Server's `fileUpload` option.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Where the local file storage keeps files; empty means
    /// `<data_dir>/files`.
    pub dir: Option<PathBuf>,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: usize,
    /// Uploads by requests without a session token.
    pub enable_for_public: bool,
    /// Uploads by anonymous users (signed in through `authData.anonymous`).
    pub enable_for_anonymous_user: bool,
    /// Uploads by signed-in users.
    pub enable_for_authenticated_user: bool,
    /// Regexes a file's extension must match; the default refuses HTML,
    /// which a browser would run from the file's URL.
    pub file_extensions: Vec<String>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_upload_bytes: 20 * 1024 * 1024,
            enable_for_public: false,
            enable_for_anonymous_user: false,
            enable_for_authenticated_user: true,
            file_extensions: vec!["^(?![xXsS]?[hH][tT][mM][lL]?$)".into()],
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
    pub limits: Limits,
    pub files: FilesConfig,
    pub events: EventsConfig,
    pub triggers: TriggersConfig,
    pub jobs: JobsConfig,
    pub cron: CronConfig,
    pub push: PushConfig,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `oxbase_api=debug,info`.
    pub log_level: String,
    /// How long a stopping service waits for in-flight work.
    pub shutdown_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            app_id: "oxbase-dev".into(),
            master_key: None,
            read_only_master_key: None,
            master_key_ips: vec!["127.0.0.1".into(), "::1".into()],
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
            allow_client_class_creation: false,
            allow_custom_object_id: false,
            enforce_private_users: true,
            revoke_session_on_password_reset: true,
            limits: Limits::default(),
            files: FilesConfig::default(),
            events: EventsConfig::default(),
            triggers: TriggersConfig::default(),
            jobs: JobsConfig::default(),
            cron: CronConfig::default(),
            push: PushConfig::default(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_timeout_secs: 10,
        }
    }
}

impl Config {
    /// Loads the layers in order. `file` is an explicit config file (it must
    /// exist); without one, `./oxbase.toml` is read when present.
    /// `overrides` are dotted keys from the command line, applied last.
    pub fn load(file: Option<&Path>, overrides: &[(&str, Value)]) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars(), overrides)
    }

    /// [`Config::load`] with the environment passed in, so tests need not
    /// touch the process environment.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, Value)],
    ) -> Result<Self, ConfigError> {
        Self::load_with_defaults(Config::default(), file, env, overrides)
    }

    /// Like [`Config::load_from`], starting from other defaults (`oxbase dev`
    /// has its own).
    pub fn load_with_defaults(
        defaults: Config,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, Value)],
    ) -> Result<Self, ConfigError> {
        let mut tree = serde_json::to_value(&defaults).expect("config serializes");

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
        for (alias, key) in PARSE_SERVER_ALIASES {
            if let Some((var, value)) = env.iter().find(|(name, _)| name == alias) {
                set_from_env(&mut tree, key, var, value)?;
            }
        }
        for (var, value) in &env {
            if let Some(rest) = var.strip_prefix("OXBASE_") {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                set_from_env(&mut tree, &key, var, value)?;
            }
        }

        for (key, value) in overrides {
            set_path(&mut tree, key, value.clone());
        }

        let mut config: Config =
            serde_json::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.normalize()?;
        Ok(config)
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
        if self.app_id.is_empty() {
            return Err(ConfigError::Invalid("app_id must not be empty".into()));
        }
        let triggers = &self.triggers;
        if triggers.partitions == 0 || triggers.max_attempts == 0 || triggers.timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "triggers.partitions, triggers.max_attempts and triggers.timeout_ms must be at least 1".into(),
            ));
        }
        if self.limits.max_batch_size == 0 || self.limits.max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_batch_size and limits.max_body_bytes must be positive".into(),
            ));
        }
        self.jobs.validate()?;
        let cron = &self.cron;
        if cron.lease_ms < 100 || cron.slot_ttl_secs < 60 || cron.history < 1 {
            return Err(ConfigError::Invalid(
                "cron: lease_ms must be at least 100, slot_ttl_secs at least 60 and history at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl JobsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        for (name, queue) in &self.queues {
            if name.len() > 64 || !oxbase_proto::valid_token(name) {
                return invalid(format!(
                    "jobs.queues: {name:?} is not a queue name (1 to 64 ASCII letters, digits, '_' or '-')"
                ));
            }
            if queue.concurrency == 0 || queue.max_attempts == 0 || queue.heartbeat_ms == 0 {
                return invalid(format!(
                    "jobs.queues.{name}: concurrency, max_attempts and heartbeat_ms must be positive"
                ));
            }
            if queue.rate_limit > 0 && queue.rate_period_ms == 0 {
                return invalid(format!(
                    "jobs.queues.{name}: rate_period_ms must be positive with a rate_limit"
                ));
            }
        }
        if !self.queues.contains_key("default") {
            return invalid("jobs.queues must keep the `default` queue".into());
        }
        if !self.queues.contains_key(&self.parse_queue) {
            return invalid(format!(
                "jobs.parse_queue: there is no queue {:?}",
                self.parse_queue
            ));
        }
        if self.concurrency == 0 || self.ack_wait_ms < 1000 {
            return invalid(
                "jobs.concurrency must be positive and jobs.ack_wait_ms at least 1000".into(),
            );
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
/// Settings that are maps of named entries: an environment variable may
/// name an entry that does not exist yet (`OXBASE_JOBS__QUEUES__EMAILS__...`),
/// which then starts from these defaults.
fn map_entry_default(path: &str) -> Option<Value> {
    match path {
        "jobs.queues" => serde_json::to_value(QueueConfig::default()).ok(),
        _ => None,
    }
}

fn set_from_env(tree: &mut Value, key: &str, var: &str, raw: &str) -> Result<(), ConfigError> {
    let mut node = &mut *tree;
    let mut path = String::new();
    for part in key.split('.') {
        if node.get(part).is_none()
            && let (Some(entry), Value::Object(map)) = (map_entry_default(&path), &mut *node)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.limits.max_batch_size, 7);
        assert_eq!(config.limits.max_body_bytes, 1234);
        assert_eq!(config.master_key.unwrap().expose(), "12345");
        assert_eq!(config.log_level, "debug");
    }

    #[test]
    fn oxbase_variable_beats_parse_alias() {
        let config = Config::load_from(
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

    #[test]
    fn bad_values_are_reported_with_their_variable() {
        let err = Config::load_from(None, env(&[("OXBASE_PORT", "eighty")]), &[]).unwrap_err();
        assert!(err.to_string().contains("OXBASE_PORT"), "{err}");
        let err = Config::load_from(None, env(&[("OXBASE_MOUNT_PATH", "parse")]), &[]).unwrap_err();
        assert!(err.to_string().contains("mount_path"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oxbase.toml");
        std::fs::write(&file, "app_idd = \"typo\"\n").unwrap();
        let err = Config::load_from(Some(&file), Vec::new(), &[]).unwrap_err();
        assert!(err.to_string().contains("app_idd"), "{err}");
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
