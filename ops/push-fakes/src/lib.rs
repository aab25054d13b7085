//! Local stand-ins for Google's FCM HTTP v1 and Apple's APNs, which cannot
//! be reached from the tests: each checks credentials and answers the way
//! its provider documents, so oxbase's push service is tested against the
//! protocols it will meet.
//!
//! Both answer by device token:
//! - `dead-*`: the token is gone (FCM 404 `UNREGISTERED`, APNs 410
//!   `Unregistered`);
//! - `bad-*`: APNs 400 `BadDeviceToken`;
//! - `flaky-*`: the first attempt is refused for now (FCM 503, APNs 429);
//! - anything else is delivered.

mod apns;
mod fcm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

pub use apns::{ApnsAuth, FakeApns};
pub use fcm::FakeFcm;

pub const FCM_PROJECT: &str = "oxbase-test";
pub const FCM_ACCOUNT: &str = "push@oxbase-test.iam.gserviceaccount.com";
pub const APNS_KEY_ID: &str = "OXBASEKEY1";
pub const APNS_TEAM_ID: &str = "OXBASETEAM";
/// The bundle id the fake APNs accepts, and the test client certificate's.
pub const APNS_TOPIC: &str = "com.example.app";

/// A file in `fixtures/`: test keys and certificates, made for these fakes
/// and trusted nowhere else.
///
/// - `fcm-service-account-key.pem`: the service account's RSA key;
/// - `apns-auth-key.p8`: the APNs token signing key;
/// - `ca.pem`: the authority that signed `apns-server.pem` (for
///   `localhost` and 127.0.0.1) and `apns-client.pem`, the certificate
///   for certificate auth, with their `.key`s.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// How a fake behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long each message takes to answer.
    pub delay: Duration,
    /// Keeps every accepted message, by token; off, only counts them (a
    /// million messages are not kept).
    pub record: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            record: true,
        }
    }
}

/// What a fake was sent.
#[derive(Debug, Default)]
pub struct Received {
    /// Accepted messages by token, when recording.
    pub delivered: Mutex<HashMap<String, Vec<Value>>>,
    /// Attempts at `flaky-*` tokens.
    pub attempts: Mutex<HashMap<String, usize>>,
    accepted: AtomicU64,
}

impl Received {
    /// Messages accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// How the fake answers `token` on this attempt.
    fn answer(&self, token: &str) -> Answer {
        if token.starts_with("dead-") {
            return Answer::Gone;
        }
        if token.starts_with("bad-") {
            return Answer::BadToken;
        }
        if token.starts_with("flaky-") {
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let count = attempts.entry(token.to_owned()).or_default();
            *count += 1;
            if *count == 1 {
                return Answer::Later;
            }
        }
        Answer::Deliver
    }

    fn accept(&self, token: &str, message: Value, options: &Options) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if options.record {
            self.delivered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(token.to_owned())
                .or_default()
                .push(message);
        }
    }

    /// The last message each token was sent.
    pub fn last(&self) -> HashMap<String, Value> {
        let delivered = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
        delivered
            .iter()
            .filter_map(|(token, messages)| Some((token.clone(), messages.last()?.clone())))
            .collect()
    }
}

enum Answer {
    Deliver,
    Gone,
    BadToken,
    Later,
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .expect("a fixture is PEM")
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("the fixtures are present")
}
