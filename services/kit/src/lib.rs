//! Plumbing every oxbase service shares: layered config, tracing (and the
//! trace context that crosses NATS), graceful shutdown, health endpoints,
//! the errors services share, and the [`Service`] trait with
//! [`run_services`].

pub mod config;
pub mod error;
pub mod health;
pub mod pull;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;

pub use config::{Config, ConfigError, EventsConfig, LogFormat, Secret, Section, Sections};
pub use error::{BoxError, NatsError, PortError};
pub use health::Readiness;
pub use service::{MetricsSource, Service, ServiceError, ServiceFailed, run_services};
pub use shutdown::Shutdown;
