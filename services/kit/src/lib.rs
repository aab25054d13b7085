//! Plumbing every oxbase service shares: layered config, tracing, graceful
//! shutdown and health endpoints.

pub mod config;
pub mod health;
pub mod shutdown;
pub mod telemetry;

pub use config::{
    ApnsConfig, Config, ConfigError, CronConfig, FcmConfig, FilesConfig, JobsConfig, Limits,
    LogFormat, PushConfig, QueueConfig, Secret, TriggersConfig,
};
pub use health::Readiness;
pub use shutdown::Shutdown;
