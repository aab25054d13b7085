//! Parse's object layer over a [`Store`]: the rules Parse applies to every
//! read and write (ACLs, class-level permissions, protected fields, the
//! values and operators of its REST format, the where-parser, schema
//! inference), the rules of its system classes (users, roles, sessions,
//! installations), and the outbox relay that publishes each write's event.
//!
//! The API serves it over HTTP; the jobs, cron and push services read and
//! write Parse's classes through it.

pub mod access;
mod auth;
mod auth_data;
mod config;
mod email;
mod error;
mod global_config;
pub mod installations;
mod jobs;
pub mod keys;
mod layer;
mod live;
mod lockout;
mod maintenance;
mod password_policy;
mod purge;
mod push;
pub mod query;
mod relay;
mod schema_admin;
mod schemas;
mod sessions;
mod users;
pub mod values;

use std::sync::Arc;

use oxbase_kit::Config;
use oxbase_store::Store;

pub use crate::auth::{Auth, SessionUser};
pub use crate::auth_data::{
    AuthConfig, AuthDataLogIn, Challenge, LogInAuthData, ProviderConfig, ProviderKind,
    redact_auth_data,
};
pub use crate::config::{
    AccountLockout, EmailConfig, Limits, PasswordPattern, PasswordPolicy, SmtpTls,
};
pub use crate::email::{
    AccountMail, EmailVerification, MailKind, ResetOutcome, ResetRequest, email_not_configured,
};
pub use crate::error::{ParseError, ParseResult, code};
pub use crate::global_config::config_changes;
pub use crate::jobs::JobStatusChange;
pub use crate::keys::{Credentials, KeyLevel, Keys};
pub use crate::layer::{EventSettings, ObjectLayer, ObjectSettings, PreparedWrite, WriteReply};
pub use crate::live::LiveAccess;
pub use crate::query::{FindMode, FindOptions};
pub use crate::relay::{OutboxRelay, RelayError, RelaySettings, RelaySignals, ensure_stream};
pub use crate::sessions::invalid_token;
pub use crate::users::{LogIn, WriteEffect};

impl ObjectSettings {
    /// The settings `config` gives; `relay`, when events are on, is woken
    /// after each write.
    pub fn from_config(config: &Config, relay: Option<Arc<RelaySignals>>) -> Self {
        let events = relay.as_ref().map(|_| EventSettings {
            source: config
                .events
                .source
                .clone()
                .unwrap_or_else(|| oxbase_proto::Event::source_for_app(&config.app_id)),
            prefix: config.events.prefix.clone(),
            policy: Arc::new(oxbase_store::EventPolicy::new(
                config.events.max_payload_bytes,
                &config.events.redact,
            )),
        });
        Self {
            limits: config.section(),
            events,
            relay,
            allow_client_class_creation: config.allow_client_class_creation,
            allow_custom_object_id: config.allow_custom_object_id,
            enforce_private_users: config.enforce_private_users,
            session_length_secs: config.session_length_secs,
            revoke_session_on_password_reset: config.revoke_session_on_password_reset,
            auth: config.section(),
            account_lockout: config.section(),
            password_policy: config.section(),
            email: config.section(),
        }
    }
}

impl ObjectLayer {
    /// Opens the object layer over `store` as `config` says, loading the
    /// schemas.
    pub async fn from_config(
        config: &Config,
        store: Arc<dyn Store>,
        relay: Option<Arc<RelaySignals>>,
    ) -> ParseResult<Arc<Self>> {
        let settings = ObjectSettings::from_config(config, relay);
        Ok(Arc::new(Self::open(store, settings).await?))
    }
}
