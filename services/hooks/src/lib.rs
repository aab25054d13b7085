//! Hooks shared by the API and the triggers service: the registry of
//! functions and triggers, and calls to their handlers over NATS.

mod call;
mod config;
mod registry;

pub use call::{CallError, CallLimits, call, parse_reply};
pub use config::TriggersConfig;
pub use registry::{HookRegistry, RegistryError, bucket_name, key_of};
