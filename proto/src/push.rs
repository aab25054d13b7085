//! Push notifications: `POST <mount>/push` hands a push to the push
//! service, which resolves its audience and sends it through the
//! providers.
//!
//! The API creates the push's `_PushStatus` object and publishes a
//! [`PushRequest`] on `<prefix>.push.requests` in the work-queue stream
//! `<PREFIX>_PUSH` (as a JetStream message schedule when `push_time` is
//! later). A push process takes the request, reads the installations its
//! query matches by objectId cursor, a page at a time, and publishes each
//! page as a [`PushBatch`] on `<prefix>.push.batches` (`Nats-Msg-Id`
//! `<statusId>.<page>`, so a request taken again publishes no batch
//! twice). Every push process takes batches from the same stream, so one
//! big push is shared by all of them; a batch is acknowledged once it is
//! sent and counted, and one whose process died is delivered again.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A push the API accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRequest {
    /// The objectId of its `_PushStatus`.
    pub status_id: String,
    /// The `_Installation` query (Parse's `where`); `channels` are folded
    /// in as `{"channels": {"$in": [...]}}`.
    #[schemars(with = "Map<String, Value>")]
    pub query: Map<String, Value>,
    /// Parse's push `data`: `alert`, `badge`, `sound`, `content-available`,
    /// `category`, `title`, `uri` and custom keys.
    #[schemars(with = "Map<String, Value>")]
    pub data: Map<String, Value>,
    /// Not sent after this (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "ApnsOptions::is_empty")]
    pub apns: ApnsOptions,
}

/// The APNs request headers Parse takes from the push body (or its
/// `data`): `push_type`, `priority` and `collapse_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApnsOptions {
    /// `apns-push-type`; `alert` when unset, as Parse Server sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_type: Option<String>,
    /// `apns-priority`: 10, 5 or 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// `apns-collapse-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_id: Option<String>,
}

impl ApnsOptions {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// One page of a push's audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushBatch {
    pub status_id: String,
    /// 0 for the first page.
    pub page: u64,
    #[schemars(with = "Map<String, Value>")]
    pub data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "ApnsOptions::is_empty")]
    pub apns: ApnsOptions,
    pub devices: Vec<PushDevice>,
}

/// An installation a batch sends to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushDevice {
    pub installation_id: String,
    pub device_type: String,
    pub device_token: String,
    /// Its `badge` when the batch was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<i64>,
    /// Its app's bundle id: the APNs topic, unless one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_identifier: Option<String>,
}
