//! The HTTP front: mount path, CORS, body limits, and turning replies and
//! errors into responses.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use oxbase_kit::trace_context;
use oxbase_objects::{ParseError, ParseResult};
use serde_json::json;
use tracing::Instrument;

use crate::App;
use crate::files::UploadBody;
use crate::request::{ParseRequest, headers_name_app, is_file_upload};
use crate::routes::Reply;

const ALLOW_HEADERS: &str = "X-Parse-Master-Key, X-Parse-REST-API-Key, X-Parse-Javascript-Key, \
X-Parse-Application-Id, X-Parse-Client-Version, X-Parse-Session-Token, X-Requested-With, \
X-Parse-Revocable-Session, X-Parse-Request-Id, X-Parse-Installation-Id, X-Parse-Client-Key, \
X-Parse-Windows-Key, Content-Type, Pragma, Cache-Control, Authorization, X-Parse-Upload-Mode, \
X-Parse-File-Directory, X-Parse-File-Metadata, X-Parse-File-Tags, Range";

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

/// Serves one request, in a span of its own when traces are exported: the
/// child of the caller's span when the request has a `traceparent`.
async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    if !trace_context::enabled() {
        return handle_within_limits(app, peer, request).await;
    }
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let headers = request.headers();
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    trace_context::continue_from(
        &span,
        header(trace_context::TRACEPARENT),
        header(trace_context::TRACESTATE),
    );
    let response = handle_within_limits(app, peer, request)
        .instrument(span.clone())
        .await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// Serves one request within the process's limits: at most
/// `max_concurrent_requests` at once (more are answered 503 at once, which
/// the Parse SDKs retry, rather than queued to time out), each answered
/// within `request_timeout_ms` (file uploads excepted: their size bounds
/// them, and a slow link is no fault).
async fn handle_within_limits(app: Arc<App>, peer: SocketAddr, request: Request) -> Response {
    let Ok(_permit) = app.in_flight.clone().try_acquire_owned() else {
        let busy = ParseError::Unavailable("The server is busy; try again shortly".into());
        return with_cors(error_response(&busy));
    };
    let limit = app.objects.limits().request_timeout_ms;
    let upload = request
        .uri()
        .path()
        .strip_prefix(app.mount.as_str())
        .is_some_and(|rest| is_file_upload(request.method(), rest));
    if limit == 0 || upload {
        return serve(app, peer, request).await;
    }
    let timeout = std::time::Duration::from_millis(limit);
    match tokio::time::timeout(timeout, serve(app, peer, request)).await {
        Ok(response) => response,
        Err(_) => with_cors(error_response(&ParseError::new(
            oxbase_objects::code::TIMEOUT,
            "Request timed out",
        ))),
    }
}

fn error_response(err: &ParseError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(err.body())).into_response()
}

async fn serve(app: Arc<App>, peer: SocketAddr, request: Request) -> Response {
    // File downloads need no keys: browsers load file URLs directly.
    if let Some(response) = app
        .file_download(request.method(), request.uri().path(), request.headers())
        .await
    {
        return with_cors(response);
    }
    // The pages mailed links open need no keys either.
    if app.is_page(request.uri().path()) {
        return with_cors(app.page(peer.ip(), request).await);
    }
    let mut headers = Vec::new();
    let mut response = match app.handle_http(peer.ip(), request, &mut headers).await {
        Ok(reply) => reply_response(reply),
        Err(err) => {
            // Refused for its size, the body was left unread: the client
            // must not send its next request on this connection.
            let unread_body = matches!(
                err,
                ParseError::TooLarge
                    | ParseError::Parse {
                        code: oxbase_objects::code::FILE_SAVE_ERROR,
                        ..
                    }
            );
            let mut response = error_response(&err);
            if unread_body {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    add_headers(&mut response, headers);
    with_cors(response)
}

fn add_headers(response: &mut Response, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

fn reply_response(reply: Reply) -> Response {
    let body = serde_json::to_vec(&reply.body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(location) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(LOCATION, location);
    }
    add_headers(&mut response, reply.headers);
    response
}

fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET,PUT,POST,DELETE,OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        "access-control-expose-headers",
        // The list names itself too: the Parse SDK reads it to find the
        // status ids, and a browser shows a cross-origin page (Parse
        // Dashboard on its own host) only the headers listed here.
        HeaderValue::from_static(
            "X-Parse-Job-Status-Id, X-Parse-Push-Status-Id, Access-Control-Expose-Headers",
        ),
    );
    response
}

impl App {
    /// Serves one REST request; headers that go on its response whatever
    /// it answers are put in `headers`.
    async fn handle_http(
        &self,
        ip: IpAddr,
        request: Request,
        headers: &mut Vec<(&'static str, String)>,
    ) -> ParseResult<Reply> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let rest = path
            .strip_prefix(self.mount.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .ok_or_else(|| ParseError::NoRoute {
                method: parts.method.to_string(),
                path: path.to_owned(),
            })?;
        if parts.method == Method::OPTIONS {
            return Ok(Reply::ok(json!({})));
        }
        if rest.trim_end_matches('/') == "/health" {
            return Ok(Reply::ok(json!({ "status": "ok" })));
        }

        // A file upload's body is the file, bounded by its own limit.
        let upload = is_file_upload(&parts.method, rest);
        let (limit, too_large) = if upload {
            self.upload_body_limit(&parts.headers)
        } else {
            (self.objects.limits().max_body_bytes, ParseError::TooLarge)
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large);
        }
        // A raw upload's body streams to storage from the files route.
        let streamed = upload && headers_name_app(&parts.headers);
        let (req, unread) = if streamed {
            let body = UploadBody::stream(body);
            let req = ParseRequest::from_upload(
                rest,
                parts.uri.query(),
                &parts.headers,
                body.clone(),
                ip,
            )?;
            (req, Some(body))
        } else {
            let bytes = axum::body::to_bytes(body, limit)
                .await
                .map_err(|_| too_large)?;
            let req = if upload {
                let body = UploadBody::bytes(bytes);
                ParseRequest::from_upload(rest, parts.uri.query(), &parts.headers, body, ip)?
            } else {
                ParseRequest::from_http(
                    parts.method,
                    rest,
                    parts.uri.query(),
                    &parts.headers,
                    &bytes,
                    ip,
                )?
            };
            (req, None)
        };
        let result = self.answer(&req, rest, headers).await;
        if let Some(body) = unread {
            body.drain(limit as u64).await;
        }
        result
    }

    /// Serves a parsed request: its keys, session, rate limit and request
    /// id, then its route.
    async fn answer(
        &self,
        req: &ParseRequest,
        rest: &str,
        headers: &mut Vec<(&'static str, String)>,
    ) -> ParseResult<Reply> {
        let mut auth = self.key_auth(req)?;
        // Parse counts a request before it refuses a bad session token, so
        // that guessing tokens is limited too.
        let session = self.session_of(&auth, req).await;
        auth.user = session.as_ref().ok().cloned().flatten();
        if let Some(refused) = self.rate_limit(&auth, req, rest, headers).await? {
            return Ok(refused);
        }
        session?;
        self.ensure_idempotent(req, rest).await?;
        // A bug must cost one request, not the connection or the process.
        match AssertUnwindSafe(self.dispatch(&auth, req))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(_) => Err(ParseError::internal(format!(
                "panic while handling {} /{}",
                req.method,
                req.segments.join("/")
            ))),
        }
    }
}
