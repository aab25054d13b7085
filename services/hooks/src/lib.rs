//! Hooks shared by the API, the triggers service and the LiveQuery server:
//! the registry of functions and triggers, and calls to their handlers
//! over NATS.

mod call;
mod caller;
mod config;
mod registry;

pub use call::{CallError, CallLimits, call, parse_reply};
pub use caller::{HookCaller, HooksNotLoaded};
pub use config::TriggersConfig;
pub use registry::{HookRegistry, RegistryError, bucket_name, key_of};
