//! One call to a hook handler over NATS request/reply: a NATS handler, or
//! the triggers service's proxy in front of a webhook.

use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use oxbase_proto::HookReply;
use oxbase_proto::hooks::HOOK_FAILURE;

/// Why a handler gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no handler is listening")]
    NoHandler,
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("the answer is {0} bytes, more than the limit of {1}")]
    TooLarge(usize, usize),
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    /// The webhook proxy could not get an answer from the webhook.
    #[error("{0}")]
    Webhook(String),
    #[error("NATS: {0}")]
    Nats(String),
}

/// Limits on one call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub timeout: Duration,
    pub max_reply_bytes: usize,
}

/// Sends `body` to `subject` and reads the handler's [`HookReply`]. The
/// request carries the current span's trace context.
pub async fn call(
    client: &async_nats::Client,
    subject: String,
    mut headers: HeaderMap,
    body: Bytes,
    limits: CallLimits,
) -> Result<HookReply, CallError> {
    oxbase_kit::trace_context::inject_current(&mut headers);
    let request = async_nats::Request::new()
        .payload(body)
        .headers(headers)
        .timeout(Some(limits.timeout));
    let reply = client
        .send_request(subject, request)
        .await
        .map_err(|err| match err.kind() {
            RequestErrorKind::NoResponders => CallError::NoHandler,
            RequestErrorKind::TimedOut => CallError::Timeout(limits.timeout.as_millis()),
            _ => CallError::Nats(err.to_string()),
        })?;
    if let Some(failure) = reply.headers.as_ref().and_then(|h| h.get(HOOK_FAILURE)) {
        return Err(CallError::Webhook(failure.as_str().to_owned()));
    }
    parse_reply(&reply.payload, limits.max_reply_bytes)
}

/// A handler's answer, held to the size limit. An answer that is JSON but
/// has neither `success` nor `error` succeeds with no result.
pub fn parse_reply(body: &[u8], max_bytes: usize) -> Result<HookReply, CallError> {
    if body.len() > max_bytes {
        return Err(CallError::TooLarge(body.len(), max_bytes));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| CallError::NotJson(err.to_string()))?;
    if !value.is_object() {
        return Err(CallError::NotJson(
            "expected an object with \"success\" or \"error\"".into(),
        ));
    }
    serde_json::from_value(value).map_err(|err| CallError::NotJson(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_held_to_json_objects_within_the_limit() {
        assert!(parse_reply(br#"{"success": 1}"#, 100).is_ok());
        assert_eq!(
            parse_reply(br#"{"success": 1}"#, 5),
            Err(CallError::TooLarge(14, 5))
        );
        assert!(matches!(
            parse_reply(b"<html>", 100),
            Err(CallError::NotJson(_))
        ));
        assert!(matches!(
            parse_reply(b"[1]", 100),
            Err(CallError::NotJson(_))
        ));
        let empty = parse_reply(b"{}", 100).unwrap();
        assert!(empty.success.is_none() && empty.error.is_none());
    }
}
