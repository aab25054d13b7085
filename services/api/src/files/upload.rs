//! An upload's bytes on their way to storage. The request body streams
//! through a size limit, so an upload holds at most its first bytes in
//! memory (what a `beforeSaveFile` hook is shown of a small file), however
//! large it is or claims to be. Only the JS SDK's JSON form, whose file is
//! base64 inside the JSON, is read whole.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};

use super::storage::ByteStream;

/// The file of an upload: bytes already read, or a request body the
/// upload route reads once. Clones share the body.
#[derive(Clone)]
pub struct UploadBody(Arc<Mutex<Option<Source>>>);

enum Source {
    Bytes(Bytes),
    Body(Body),
}

impl Default for UploadBody {
    fn default() -> Self {
        Self::bytes(Bytes::new())
    }
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(Source::Bytes(bytes)) => write!(f, "UploadBody({} bytes)", bytes.len()),
            Some(Source::Body(_)) => f.write_str("UploadBody(unread)"),
            None => f.write_str("UploadBody(taken)"),
        }
    }
}

impl UploadBody {
    pub fn bytes(bytes: Bytes) -> Self {
        Self(Arc::new(Mutex::new(Some(Source::Bytes(bytes)))))
    }

    /// A request body, left unread until the upload route streams it.
    pub fn stream(body: Body) -> Self {
        Self(Arc::new(Mutex::new(Some(Source::Body(body)))))
    }

    fn take(&self) -> Option<Source> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// The bytes, when they were read before the route.
    pub fn as_bytes(&self) -> Option<Bytes> {
        match &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(Source::Bytes(bytes)) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Reads and drops a request body no route read (the upload was
    /// refused first), as Parse Server does, so the client sees the answer
    /// rather than a reset connection. Past `limit` bytes it gives up, and
    /// the connection closes.
    pub async fn drain(&self, limit: u64) {
        let Some(Source::Body(body)) = self.take() else {
            return;
        };
        let mut rest = limited(body_stream(body), limit);
        while let Some(Ok(_)) = rest.next().await {}
    }
}

/// An upload's bytes stopped for going past the limit.
#[derive(Debug, thiserror::Error)]
#[error("the upload is larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// Whether a stream error is [`limited`]'s.
pub fn is_too_large(err: &std::io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<TooLarge>())
}

/// The stream, failing with [`TooLarge`] once more than `max` bytes came;
/// nothing after that is read.
fn limited(stream: ByteStream, max: u64) -> ByteStream {
    // (bytes so far, whether the stream failed)
    stream
        .scan((0u64, false), move |(total, failed), chunk| {
            if *failed {
                return std::future::ready(None);
            }
            let item = chunk.and_then(|chunk| {
                *total += chunk.len() as u64;
                if *total > max {
                    return Err(std::io::Error::other(TooLarge(max)));
                }
                Ok(chunk)
            });
            *failed = item.is_err();
            std::future::ready(Some(item))
        })
        .boxed()
}

fn body_stream(body: Body) -> ByteStream {
    body.into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other))
        .boxed()
}

/// An upload as far as it was read before the file is stored.
pub enum Received {
    /// The whole file, small enough to hold.
    Whole(Bytes),
    /// A large file: its first bytes and the stream of the rest.
    Large { head: Bytes, rest: ByteStream },
}

impl Received {
    /// The file's bytes, when all of them were read.
    pub fn whole(&self) -> Option<&Bytes> {
        match self {
            Received::Whole(bytes) => Some(bytes),
            Received::Large { .. } => None,
        }
    }

    /// All of the file's bytes, as a stream.
    pub fn into_stream(self) -> ByteStream {
        match self {
            Received::Whole(bytes) => single(bytes),
            Received::Large { head, rest } => single(head).chain(rest).boxed(),
        }
    }
}

/// One chunk as a stream.
pub fn single(bytes: Bytes) -> ByteStream {
    stream::once(std::future::ready(Ok(bytes))).boxed()
}

/// Reads the upload's first `hold` bytes, or all of it when it is no
/// larger; fails with [`TooLarge`] past `max` bytes, and with the
/// client's error when its body fails.
pub async fn receive(body: &UploadBody, max: u64, hold: usize) -> std::io::Result<Received> {
    let body = match body.take() {
        Some(Source::Body(body)) => body,
        Some(Source::Bytes(bytes)) if bytes.len() as u64 > max => {
            return Err(std::io::Error::other(TooLarge(max)));
        }
        Some(Source::Bytes(bytes)) => return Ok(Received::Whole(bytes)),
        None => return Err(std::io::Error::other("the upload was read already")),
    };
    let mut stream = limited(body_stream(body), max);
    let mut head = BytesMut::new();
    while head.len() <= hold {
        match stream.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => return Ok(Received::Whole(head.freeze())),
        }
    }
    Ok(Received::Large {
        head: head.freeze(),
        rest: stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> UploadBody {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        UploadBody::stream(Body::from_stream(stream::iter(parts)))
    }

    async fn collect(stream: ByteStream) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn small_uploads_are_whole_and_large_ones_stream() {
        let small = receive(&body(&[b"ab", b"cd"]), 10, 4).await.unwrap();
        assert_eq!(small.whole().map(|b| &b[..]), Some(&b"abcd"[..]));

        let large = receive(&body(&[b"abc", b"def", b"gh"]), 10, 4)
            .await
            .unwrap();
        assert!(large.whole().is_none());
        assert_eq!(collect(large.into_stream()).await.unwrap(), b"abcdefgh");

        let read = UploadBody::bytes(Bytes::from_static(b"whole"));
        let whole = receive(&read, 10, 2).await.unwrap();
        assert_eq!(whole.whole().map(|b| &b[..]), Some(&b"whole"[..]));
        assert!(receive(&read, 10, 2).await.is_err());
    }

    #[tokio::test]
    async fn the_limit_stops_the_stream() {
        let over_early = receive(&body(&[b"abcdef"]), 5, 100).await;
        assert!(over_early.is_err_and(|e| is_too_large(&e)));
        let over_late = receive(&body(&[b"abc", b"def", b"gh"]), 7, 2)
            .await
            .unwrap();
        let err = collect(over_late.into_stream()).await.unwrap_err();
        assert!(is_too_large(&err), "{err}");
        let read = UploadBody::bytes(Bytes::from_static(b"abcdef"));
        assert!(
            receive(&read, 5, 100)
                .await
                .is_err_and(|e| is_too_large(&e))
        );
        assert!(receive(&body(&[b"abcde"]), 5, 100).await.is_ok());

        // A body that fails is not taken for one that is too large.
        let failing = UploadBody::stream(Body::from_stream(stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("reset")),
        ])));
        let err = receive(&failing, 100, 100).await.err().unwrap();
        assert!(!is_too_large(&err));
    }
}
