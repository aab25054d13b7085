//! The contract between oxbase services and with outside subscribers in any
//! language: subject names, stream names, and the messages that travel on
//! them. Everything here is plain data so other languages can mirror it.

/// The default prefix of every NATS subject and stream oxbase uses.
pub const DEFAULT_PREFIX: &str = "oxbase";
