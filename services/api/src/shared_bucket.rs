//! A JetStream key-value bucket the API processes share (rate-limit counts,
//! request ids), opened on first use so the API starts while NATS is down.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use oxbase_kit::NatsError;
use oxbase_proto::Subjects;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

pub(crate) struct SharedBucket {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: kv::Config,
    store: OnceCell<kv::Store>,
}

impl SharedBucket {
    /// `<PREFIX>_<role>`, whose entries expire `max_age` after their last
    /// write. Each NATS call waits at most `timeout`: these calls sit in
    /// the path of a request.
    pub(crate) fn new(
        client: &async_nats::Client,
        subjects: &Subjects,
        role: &str,
        description: &str,
        max_age: Duration,
        timeout: Duration,
    ) -> Self {
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(timeout);
        Self {
            client: client.clone(),
            jetstream,
            config: kv::Config {
                bucket: oxbase_proto::stream_name(subjects, role),
                description: description.into(),
                history: 1,
                // JetStream refuses a max_age under 100 ms.
                max_age: max_age.max(Duration::from_secs(1)),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
            store: OnceCell::new(),
        }
    }

    /// The bucket, created (or its max_age brought to the configured one)
    /// the first time. Fails at once while NATS is disconnected, rather
    /// than holding the request for the whole timeout.
    pub(crate) async fn get(&self) -> Result<&kv::Store, NatsError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(NatsError::new("NATS is not connected"));
        }
        self.store
            .get_or_try_init(|| async {
                match self
                    .jetstream
                    .create_or_update_key_value(self.config.clone())
                    .await
                {
                    Ok(store) => Ok(store),
                    // Another process created it at the same moment.
                    Err(_) => self
                        .jetstream
                        .get_key_value(&self.config.bucket)
                        .await
                        .map_err(NatsError::from),
                }
            })
            .await
    }
}

/// A key-value key for any text: hex, which the key charset allows, of a
/// digest, so that session tokens and request ids are not stored readable
/// by whoever can read the bucket.
pub(crate) fn digest_key(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_hex_digests() {
        let key = super::digest_key("r:abc/ü.*>");
        assert_eq!(key.len(), 32);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(key, super::digest_key("r:abd/ü.*>"));
    }
}
