//! `[push]`: the push service and its providers.

use oxbase_kit::Section;
use serde::{Deserialize, Serialize};

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

impl Section for PushConfig {
    const KEY: &'static str = "push";
}
