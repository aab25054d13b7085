//! Errors every service shares: what NATS answered, and what the other
//! side of a port (a trait one layer defines and another implements)
//! failed with.
//!
//! Both hold the error they were made from and are transparent, as
//! [`std::io::Error`] is for the errors it wraps: their text is that
//! error's, their [`source`](Error::source) that error's source, and
//! [`get_ref`](NatsError::get_ref) or
//! [`downcast_ref`](NatsError::downcast_ref) reach the error itself.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Any error, boxed, that can cross threads.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// What NATS or JetStream answered: a connection, request, publish,
/// stream, consumer or key-value error of the client, kept whole.
///
/// Every `async_nats` error converts with `From`: the typed ones
/// (`async_nats::error::Error<Kind>`) and the boxed `async_nats::Error`
/// that acks and a message's `info()` return. Anything else NATS-related
/// (a watch that ended) takes [`NatsError::new`].
///
/// It clones cheaply (the error is shared), for when one NATS failure
/// fails each item of a batch.
#[derive(Clone)]
pub struct NatsError(Arc<dyn Error + Send + Sync>);

impl NatsError {
    /// From any error, or from a message (`NatsError::new("the watch
    /// ended")`).
    pub fn new(err: impl Into<BoxError>) -> Self {
        Self(Arc::from(err.into()))
    }

    /// The error it was made from.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }

    /// The error it was made from, if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref()
    }
}

impl<K> From<async_nats::error::Error<K>> for NatsError
where
    K: Clone + fmt::Debug + fmt::Display + PartialEq + Send + Sync + 'static,
{
    fn from(err: async_nats::error::Error<K>) -> Self {
        Self(Arc::new(err))
    }
}

/// `async_nats::Error`, what acks and `Message::info` fail with.
impl From<BoxError> for NatsError {
    fn from(err: BoxError) -> Self {
        Self(Arc::from(err))
    }
}

impl fmt::Debug for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NatsError").field(&self.0).finish()
    }
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for NatsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// What the implementation of a port failed with: the error of the layer
/// behind it (the object layer's, say), kept whole.
///
/// The implementor converts its own error with `.map_err(PortError::new)`
/// (each port names this type after itself: `oxbase_push::PushStoreError`,
/// `oxbase_jobs::JobStatusError`, ...), or gives a message:
/// `PortError::from("no such status")`, `Err(format!(...).into())`.
pub struct PortError(BoxError);

impl PortError {
    /// From any error (`std::error::Error + Send + Sync + 'static`), or
    /// from a message.
    pub fn new(err: impl Into<BoxError>) -> Self {
        Self(err.into())
    }

    /// The error it was made from.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }

    /// The error it was made from, if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref()
    }

    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl From<String> for PortError {
    fn from(message: String) -> Self {
        Self(message.into())
    }
}

impl From<&str> for PortError {
    fn from(message: &str) -> Self {
        Self(message.into())
    }
}

impl From<BoxError> for PortError {
    fn from(err: BoxError) -> Self {
        Self(err)
    }
}

impl fmt::Debug for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PortError").field(&self.0).finish()
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for PortError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as the object layer's errors have.
    #[derive(Debug, thiserror::Error)]
    #[error("the store failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn wrappers_keep_the_text_and_the_chain_of_what_they_wrap() {
        let io = || std::io::Error::other("disk full");
        let port = PortError::new(Outer(io()));
        assert_eq!(port.to_string(), "the store failed");
        assert_eq!(port.source().unwrap().to_string(), "disk full");
        assert!(port.downcast_ref::<Outer>().is_some());
        assert_eq!(PortError::from("gone").to_string(), "gone");
        assert!(PortError::from(String::from("gone")).source().is_none());

        let kind = async_nats::jetstream::context::PublishErrorKind::TimedOut;
        let nats = NatsError::from(async_nats::error::Error::with_source(kind, io()));
        assert_eq!(nats.to_string(), format!("{kind}: disk full"));
        assert_eq!(nats.source().unwrap().to_string(), "disk full");
        let inner = nats
            .downcast_ref::<async_nats::jetstream::context::PublishError>()
            .expect("the client's error, whole");
        assert_eq!(inner.kind(), kind);
        assert_eq!(
            NatsError::new("the watch ended").to_string(),
            "the watch ended"
        );
    }
}
