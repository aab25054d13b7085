//! Pulling from a JetStream consumer so that a stopping process hands back
//! at once what it was given but had not started.
//!
//! A message JetStream handed to a process stays that process's until it
//! is acked, nak'd or its ack wait runs out. A pull that is still open
//! when the process stops can bring a message after its last look, and a
//! message nobody reads is only handed out again after the ack wait. So
//! this pulls one request at a time, each bounded by `expires`, and on
//! shutdown reads the open one to its end, nak'ing whatever it brings.

use std::time::Duration;

use async_nats::jetstream::consumer::{Consumer, pull};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;

use crate::{NatsError, Shutdown};

/// One consumer's messages, a pull at a time.
pub struct Puller {
    consumer: Consumer<pull::Config>,
    expires: Duration,
    open: Option<pull::Batch>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("expires", &self.expires)
            .field("open", &self.open.is_some())
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// Pulls from `consumer`, each request open at most `expires`: the
    /// longest a stop waits for the open request to end.
    pub fn new(consumer: Consumer<pull::Config>, expires: Duration) -> Self {
        Self {
            consumer,
            expires,
            open: None,
        }
    }

    /// The next message; when no request is open, one asking for up to
    /// `wanted` is sent. `None` once `shutdown` fired, after the open
    /// request ended and what it brought was handed back.
    ///
    /// A pull that fails (NATS unreachable, the consumer's leader moving
    /// in a cluster) is tried again, after a pause that grows with each
    /// failure in a row.
    pub async fn next(&mut self, wanted: usize, shutdown: &Shutdown) -> Option<Message> {
        let mut failures = 0u32;
        loop {
            if shutdown.is_triggered() {
                self.hand_back().await;
                return None;
            }
            let next = match self.pull(wanted, shutdown).await {
                Ok(Some(message)) => return Some(message),
                // Answered in full, or expired: ask again.
                Ok(None) => continue,
                Err(err) => err,
            };
            failures += 1;
            if failures.is_multiple_of(10) {
                tracing::warn!(err = %next, failures, "cannot pull messages; retrying");
            } else {
                tracing::debug!(err = %next, "cannot pull messages; retrying");
            }
            let pause = Duration::from_millis(50) * 2u32.pow(failures.min(5));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.wait() => {}
            }
        }
    }

    /// A message of the open request, opening one if none is: `None` when
    /// it ended without one, or `shutdown` fired.
    async fn pull(
        &mut self,
        wanted: usize,
        shutdown: &Shutdown,
    ) -> Result<Option<Message>, NatsError> {
        let open = match &mut self.open {
            Some(open) => open,
            None => self.open.insert(
                self.consumer
                    .batch()
                    .max_messages(wanted.max(1))
                    .expires(self.expires)
                    .messages()
                    .await
                    .map_err(NatsError::from)?,
            ),
        };
        let next = tokio::select! {
            biased;
            () = shutdown.wait() => return Ok(None),
            next = open.next() => next,
        };
        match next {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(err)) => {
                self.open = None;
                Err(NatsError::from(err))
            }
            None => {
                self.open = None;
                Ok(None)
            }
        }
    }

    /// Reads the open request to its end (its expiry at the latest, or a
    /// little after, should the server's word that it expired be lost),
    /// nak'ing each message it brings so another process takes it now.
    pub async fn hand_back(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let drained = async {
            while let Some(next) = open.next().await {
                let Ok(message) = next else { break };
                if let Err(err) = message.ack_with(AckKind::Nak(None)).await {
                    tracing::debug!(%err, "cannot hand a message back; it returns after its ack wait");
                }
            }
        };
        let _ = tokio::time::timeout(self.expires + Duration::from_secs(1), drained).await;
    }
}
