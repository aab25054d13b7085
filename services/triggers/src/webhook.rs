//! Calls to webhooks: one pooled keep-alive HTTP client, held to the
//! configured timeout and reply size.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oxbase_kit::{Secret, trace_context};
use oxbase_proto::hooks::WEBHOOK_KEY;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::{Settings, TriggersError};

/// Why a webhook gave no usable answer. The text is what the API shows the
/// client (through the proxy's `Oxbase-Hook-Failure` header) and what a
/// dead letter records, so it says what happened in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookFailure {
    #[error("the webhook URL {0:?} is not an http or https URL")]
    BadUrl(String),
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    #[error("webhook did not answer within {0} ms")]
    Timeout(u128),
    #[error("cannot reach the webhook: {0}")]
    Unreachable(String),
    #[error("the webhook's answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// The HTTP client every webhook call goes through.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    key: Option<Secret>,
    timeout: Duration,
    max_reply_bytes: usize,
}

impl WebhookClient {
    pub fn new(settings: &Settings) -> Result<Self, TriggersError> {
        let http = reqwest::Client::builder()
            // A redirect would turn the POST into a GET on most servers;
            // a webhook that moved is an error to fix, not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| TriggersError::Http(e.to_string()))?;
        Ok(Self {
            http,
            key: settings.webhook_key.clone(),
            timeout: settings.timeout,
            max_reply_bytes: settings.max_reply_bytes,
        })
    }

    /// POSTs `body` (JSON) to `url` with `headers`, the webhook key and the
    /// current span's trace context, and returns the body of a 2xx answer.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Bytes, WebhookFailure> {
        let parsed = reqwest::Url::parse(url).map_err(|_| WebhookFailure::BadUrl(url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(WebhookFailure::BadUrl(url.into()));
        }
        let mut header_map = HeaderMap::with_capacity(headers.len() + 2);
        header_map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &self.key
            && let Ok(value) = HeaderValue::from_str(key.expose())
        {
            header_map.insert(WEBHOOK_KEY, value);
        }
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                header_map.insert(name, value);
            }
        }
        for (name, value) in trace_context::current_headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                header_map.insert(name, value);
            }
        }
        let call = async {
            let mut response = self
                .http
                .post(parsed)
                .headers(header_map)
                .body(body)
                .send()
                .await
                .map_err(unreachable)?;
            let status = response.status();
            if !status.is_success() {
                return Err(WebhookFailure::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|len| len > self.max_reply_bytes as u64)
            {
                return Err(WebhookFailure::TooLarge(self.max_reply_bytes));
            }
            let mut out = BytesMut::new();
            while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
                if out.len() + chunk.len() > self.max_reply_bytes {
                    return Err(WebhookFailure::TooLarge(self.max_reply_bytes));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out.freeze())
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(WebhookFailure::Timeout(self.timeout.as_millis())))
    }
}

/// The innermost cause reads best ("Connection refused (os error 111)");
/// reqwest's own text repeats the URL.
fn unreachable(err: reqwest::Error) -> WebhookFailure {
    let mut cause: &dyn std::error::Error = &err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    WebhookFailure::Unreachable(cause.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn client(timeout_ms: u64, max: usize) -> WebhookClient {
        let settings = Settings {
            timeout: Duration::from_millis(timeout_ms),
            max_reply_bytes: max,
            ..Settings::default()
        };
        WebhookClient::new(&settings).unwrap()
    }

    /// A server that answers each connection's first request with `reply`
    /// (or never, when `None`).
    async fn server(reply: Option<&'static str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    match reply {
                        Some(reply) => {
                            let _ = socket.write_all(reply.as_bytes()).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        format!("http://127.0.0.1:{port}/hook")
    }

    #[tokio::test]
    async fn failures_say_what_went_wrong() {
        let c = client(300, 10);
        let ok = server(Some(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        ))
        .await;
        assert_eq!(c.post(&ok, &[], Bytes::new()).await.unwrap(), "{}");
        let failed = server(Some(
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ))
        .await;
        assert_eq!(
            c.post(&failed, &[], Bytes::new())
                .await
                .unwrap_err()
                .to_string(),
            "webhook answered HTTP 500"
        );
        let big = server(Some(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"success\": \"far too long\"}",
        ))
        .await;
        assert_eq!(
            c.post(&big, &[], Bytes::new()).await.unwrap_err(),
            WebhookFailure::TooLarge(10)
        );
        let silent = server(None).await;
        assert_eq!(
            c.post(&silent, &[], Bytes::new())
                .await
                .unwrap_err()
                .to_string(),
            "webhook did not answer within 300 ms"
        );
        let refused = c
            .post("http://127.0.0.1:9/x", &[], Bytes::new())
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("cannot reach the webhook: "),
            "{refused}"
        );
        for url in ["file:///etc/passwd", "ftp://x/y", "http://", "nope"] {
            assert_eq!(
                c.post(url, &[], Bytes::new()).await.unwrap_err(),
                WebhookFailure::BadUrl(url.into()),
            );
        }
    }
}
