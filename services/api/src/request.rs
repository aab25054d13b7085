//! Turns an HTTP request into a [`ParseRequest`]: the method (after the JS
//! SDK's `_method` override), the path below the mount, the credentials from
//! headers or the SDK's body tunnel, the parameters and the JSON body.

use std::net::IpAddr;

use axum::http::{HeaderMap, Method};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::files::UploadBody;
pub use oxbase_objects::Credentials;
use oxbase_objects::{ParseError, ParseResult};

#[derive(Debug, Clone)]
pub struct ParseRequest {
    pub method: Method,
    /// Path segments below the mount path, percent-decoded.
    pub segments: Vec<String>,
    /// Query-string parameters (JSON-decoded where they parse) merged over
    /// the body, as Parse reads find options from either.
    pub params: Map<String, Value>,
    /// The JSON body, with the tunnel's fields removed.
    pub body: Map<String, Value>,
    pub credentials: Credentials,
    pub ip: IpAddr,
    /// `scheme://host` the client reached us at, for `Location` headers.
    pub origin: String,
    /// The file of a `POST /files/{name}`.
    pub upload: Option<FileUpload>,
    /// The HTTP headers, for hooks, which Parse shows them.
    pub headers: std::sync::Arc<HeaderMap>,
    /// Parse's cloud context, which triggers receive: the body's
    /// `_context` (the JS SDK's tunnel) or the `X-Parse-Cloud-Context`
    /// header, a JSON object either way.
    pub context: Map<String, Value>,
}

/// The body of a file upload: the raw bytes, or the JS SDK's JSON form
/// (`{"base64": ..., "_ContentType": ..., "fileData": {...}}` through the
/// tunnel), which Parse Server accepts when no header names the app.
#[derive(Debug, Clone, Default)]
pub struct FileUpload {
    /// The file: the request body, unread, or the JSON form's decoded
    /// `base64` (empty when it is missing or does not decode).
    pub body: UploadBody,
    pub content_type: Option<String>,
    /// The JSON form's `fileData`: `metadata`, `tags`, `directory`.
    pub file_data: Option<Value>,
    /// `X-Parse-Upload-Mode: stream` uploads carry their file data in
    /// headers, and are refused with 130 rather than 413 when too large.
    pub stream: Option<StreamHeaders>,
}

#[derive(Debug, Clone, Default)]
pub struct StreamHeaders {
    pub directory: Option<String>,
    pub metadata: Option<String>,
    pub tags: Option<String>,
}

/// Whether a request is a file upload, `POST /files/{name}` (or `POST
/// /files`, which lacks the name), whose body is the file rather than JSON.
/// `path` is the part below the mount path.
pub fn is_file_upload(method: &Method, path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    method == Method::POST && segments.next() == Some("files") && segments.nth(1).is_none()
}

/// Body fields the JS SDK's tunnel uses; they are removed from every body.
const TUNNEL_FIELDS: &[&str] = &[
    "_method",
    "_ApplicationId",
    "_JavaScriptKey",
    "_ClientKey",
    "_RESTAPIKey",
    "_MasterKey",
    "_MaintenanceKey",
    "_SessionToken",
    "_InstallationId",
    "_ClientVersion",
    "_RevocableSession",
    "_ContentType",
    "_context",
    "_noBody",
];

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl ParseRequest {
    /// Builds the request. `path` is the part below the mount path.
    pub fn from_http(
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        ip: IpAddr,
    ) -> ParseResult<Self> {
        let mut credentials = header_credentials(headers);

        let mut body = parse_body(body)?;
        let mut method = method;
        if method == Method::POST
            && let Some(Value::String(over)) = body.get("_method")
        {
            method = match over.to_ascii_uppercase().as_str() {
                "GET" => Method::GET,
                "PUT" => Method::PUT,
                "DELETE" => Method::DELETE,
                "POST" => Method::POST,
                _ => return Err(ParseError::json(format!("unsupported _method {over:?}"))),
            };
        }
        let context = cloud_context(headers, &body)?;
        take_tunnel_credentials(&mut body, &mut credentials)?;

        let mut params = body.clone();
        merge_query(&mut params, query);
        Ok(ParseRequest {
            method,
            segments: path_segments(path)?,
            params,
            body,
            credentials,
            ip,
            origin: origin(headers),
            upload: None,
            headers: std::sync::Arc::new(headers.clone()),
            context,
        })
    }

    /// Builds a file upload (see [`is_file_upload`]): the body is the file,
    /// unless no header names the app and the body, read already, is the
    /// JS SDK's JSON form, which also carries the credentials.
    pub fn from_upload(
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        raw: UploadBody,
        ip: IpAddr,
    ) -> ParseResult<Self> {
        let mut credentials = header_credentials(headers);
        let mut upload = FileUpload {
            content_type: header(headers, "content-type"),
            ..FileUpload::default()
        };
        let mut body = Map::new();
        let json_form = match (&credentials.app_id, raw.as_bytes()) {
            (None, Some(read)) => match serde_json::from_slice::<Value>(&read) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            },
            _ => None,
        };
        match json_form {
            Some(mut map) => {
                if let Some(Value::String(content_type)) = map.get("_ContentType")
                    && !content_type.is_empty()
                {
                    upload.content_type = Some(content_type.clone());
                }
                upload.file_data = map.remove("fileData");
                let file = match map.remove("base64") {
                    Some(Value::String(text)) => decode_base64(&text).unwrap_or_default(),
                    _ => Bytes::new(),
                };
                upload.body = UploadBody::bytes(file);
                take_tunnel_credentials(&mut map, &mut credentials)?;
                body = map;
            }
            None => {
                upload.body = raw;
                if header(headers, "x-parse-upload-mode").as_deref() == Some("stream") {
                    upload.stream = Some(StreamHeaders {
                        directory: header(headers, "x-parse-file-directory"),
                        metadata: header(headers, "x-parse-file-metadata"),
                        tags: header(headers, "x-parse-file-tags"),
                    });
                }
            }
        }
        let mut params = Map::new();
        merge_query(&mut params, query);
        Ok(ParseRequest {
            method: Method::POST,
            segments: path_segments(path)?,
            params,
            body,
            credentials,
            ip,
            origin: origin(headers),
            upload: Some(upload),
            headers: std::sync::Arc::new(headers.clone()),
            context: cloud_context(headers, &Map::new())?,
        })
    }

    /// A request of a `/batch`, sharing its parent's credentials.
    pub fn sub_request(
        &self,
        method: Method,
        segments: Vec<String>,
        body: Map<String, Value>,
    ) -> Self {
        ParseRequest {
            method,
            segments,
            params: body.clone(),
            body,
            credentials: self.credentials.clone(),
            ip: self.ip,
            origin: self.origin.clone(),
            upload: None,
            headers: self.headers.clone(),
            context: self.context.clone(),
        }
    }
}

/// The request's cloud context. Parse Server refuses one that is not a
/// JSON object.
fn cloud_context(
    headers: &HeaderMap,
    body: &Map<String, Value>,
) -> ParseResult<Map<String, Value>> {
    let given = match body.get("_context") {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Object(map)) => return Ok(map.clone()),
        Some(Value::Null) | None => header(headers, "x-parse-cloud-context"),
        Some(_) => return Err(invalid_context()),
    };
    match given {
        None => Ok(Map::new()),
        Some(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(invalid_context()),
        },
    }
}

fn invalid_context() -> ParseError {
    ParseError::new(
        oxbase_objects::code::INVALID_JSON,
        "Invalid object for context.",
    )
}

/// Whether the headers name the app (so an upload's body is the file, not
/// the JSON form).
pub fn headers_name_app(headers: &HeaderMap) -> bool {
    header_credentials(headers).app_id.is_some()
}

fn header_credentials(headers: &HeaderMap) -> Credentials {
    let mut credentials = Credentials {
        app_id: header(headers, "x-parse-application-id"),
        master_key: header(headers, "x-parse-master-key"),
        maintenance_key: header(headers, "x-parse-maintenance-key"),
        javascript_key: header(headers, "x-parse-javascript-key"),
        client_key: header(headers, "x-parse-client-key"),
        rest_api_key: header(headers, "x-parse-rest-api-key"),
        dotnet_key: header(headers, "x-parse-windows-key"),
        session_token: header(headers, "x-parse-session-token"),
        installation_id: header(headers, "x-parse-installation-id"),
        client_version: header(headers, "x-parse-client-version"),
        request_id: header(headers, "x-parse-request-id"),
    };
    basic_auth(headers, &mut credentials);
    credentials
}

fn merge_query(params: &mut Map<String, Value>, query: Option<&str>) {
    if let Some(query) = query {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            // Parse reads each parameter as JSON when it is JSON.
            let value = serde_json::from_str(&value).unwrap_or(Value::String(value.into_owned()));
            params.insert(key.into_owned(), value);
        }
    }
}

fn path_segments(path: &str) -> ParseResult<Vec<String>> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode(s).ok_or_else(|| ParseError::json(format!("bad path segment {s:?}")))
        })
        .collect()
}

fn origin(headers: &HeaderMap) -> String {
    let scheme = header(headers, "x-forwarded-proto").unwrap_or_else(|| "http".into());
    let host = header(headers, "host").unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

/// Base64 as Node's `Buffer.from(text, "base64")` reads it: padding
/// optional, whitespace ignored, the URL-safe alphabet accepted.
fn decode_base64(text: &str) -> Option<Bytes> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    GeneralPurpose::new(&base64::alphabet::STANDARD, config)
        .decode(cleaned.trim_end_matches('='))
        .ok()
        .map(Bytes::from)
}

fn parse_body(bytes: &[u8]) -> ParseResult<Map<String, Value>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ParseError::json("request body must be a JSON object")),
        Err(err) if err.to_string().contains("recursion limit") => {
            Err(ParseError::json("request body is nested too deeply"))
        }
        Err(_) => Err(ParseError::json("invalid JSON")),
    }
}

fn take_tunnel_credentials(
    body: &mut Map<String, Value>,
    credentials: &mut Credentials,
) -> ParseResult<()> {
    let take = |field: &str, slot: &mut Option<String>| -> ParseResult<()> {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(value)) => {
                if slot.is_none() && !value.is_empty() {
                    *slot = Some(value.clone());
                }
            }
            Some(_) => return Err(ParseError::Unauthorized),
        }
        Ok(())
    };
    take("_ApplicationId", &mut credentials.app_id)?;
    take("_JavaScriptKey", &mut credentials.javascript_key)?;
    take("_ClientKey", &mut credentials.client_key)?;
    take("_RESTAPIKey", &mut credentials.rest_api_key)?;
    take("_MasterKey", &mut credentials.master_key)?;
    take("_SessionToken", &mut credentials.session_token)?;
    take("_InstallationId", &mut credentials.installation_id)?;
    take("_ClientVersion", &mut credentials.client_version)?;
    for field in TUNNEL_FIELDS {
        body.remove(*field);
    }
    Ok(())
}

/// `Authorization: Basic base64(appId:masterKey)` or
/// `base64(appId:javascript-key=KEY)`, as Parse Server accepts.
fn basic_auth(headers: &HeaderMap, credentials: &mut Credentials) {
    let Some(value) = header(headers, "authorization") else {
        return;
    };
    let Some(encoded) = value
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("basic "))
        .map(|_| &value[6..])
    else {
        return;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return;
    };
    let Some((app_id, key)) = decoded.split_once(':') else {
        return;
    };
    credentials.app_id.get_or_insert_with(|| app_id.to_owned());
    match key.strip_prefix("javascript-key=") {
        Some(js) => credentials
            .javascript_key
            .get_or_insert_with(|| js.to_owned()),
        None => credentials.master_key.get_or_insert_with(|| key.to_owned()),
    };
}

pub(crate) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn ip() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn the_js_sdk_tunnel_is_unwrapped() {
        let body = json!({
            "_method": "GET",
            "_ApplicationId": "app",
            "_JavaScriptKey": "js",
            "_SessionToken": "r:abc",
            "_InstallationId": "inst",
            "_ClientVersion": "js8.6.2",
            "where": {"a": 1},
            "limit": 5
        });
        let req = ParseRequest::from_http(
            Method::POST,
            "/classes/Game",
            None,
            &HeaderMap::new(),
            body.to_string().as_bytes(),
            ip(),
        )
        .unwrap();
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.segments, ["classes", "Game"]);
        assert_eq!(req.credentials.app_id.as_deref(), Some("app"));
        assert_eq!(req.credentials.javascript_key.as_deref(), Some("js"));
        assert_eq!(req.credentials.session_token.as_deref(), Some("r:abc"));
        assert_eq!(req.params["limit"], 5);
        assert!(!req.body.contains_key("_ApplicationId"));
    }

    #[test]
    fn headers_win_and_query_strings_are_json_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert("x-parse-application-id", HeaderValue::from_static("hdr"));
        let req = ParseRequest::from_http(
            Method::GET,
            "/classes/A%20B",
            Some("limit=10&keys=name&where=%7B%22a%22%3A1%7D"),
            &headers,
            b"{\"_ApplicationId\": \"body\"}",
            ip(),
        )
        .unwrap();
        assert_eq!(req.credentials.app_id.as_deref(), Some("hdr"));
        assert_eq!(req.segments, ["classes", "A B"]);
        assert_eq!(req.params["limit"], 10);
        assert_eq!(req.params["keys"], "name");
        assert_eq!(req.params["where"], json!({"a": 1}));
    }

    #[test]
    fn basic_auth_carries_app_id_and_key() {
        let mut headers = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode("app:javascript-key=js");
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        let req = ParseRequest::from_http(Method::GET, "/", None, &headers, b"", ip()).unwrap();
        assert_eq!(req.credentials.app_id.as_deref(), Some("app"));
        assert_eq!(req.credentials.javascript_key.as_deref(), Some("js"));
    }

    #[test]
    fn uploads_are_raw_or_the_sdk_json_form() {
        assert!(is_file_upload(&Method::POST, "/files/a.txt"));
        assert!(is_file_upload(&Method::POST, "/files/"));
        assert!(!is_file_upload(&Method::POST, "/files/a/b"));
        assert!(!is_file_upload(&Method::DELETE, "/files/a.txt"));
        assert!(!is_file_upload(&Method::POST, "/classes/files"));

        // With an app id header, the body is the file, even if it is JSON.
        let mut headers = HeaderMap::new();
        headers.insert("x-parse-application-id", HeaderValue::from_static("app"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-parse-upload-mode", HeaderValue::from_static("stream"));
        headers.insert("x-parse-file-tags", HeaderValue::from_static("{\"a\":1}"));
        let raw = Bytes::from_static(b"{\"base64\": \"aGk=\"}");
        let body = UploadBody::bytes(raw.clone());
        let req = ParseRequest::from_upload("/files/a.json", None, &headers, body, ip()).unwrap();
        let upload = req.upload.unwrap();
        assert_eq!(upload.body.as_bytes(), Some(raw));
        assert_eq!(upload.content_type.as_deref(), Some("application/json"));
        assert_eq!(upload.stream.unwrap().tags.as_deref(), Some("{\"a\":1}"));
        assert_eq!(req.segments, ["files", "a.json"]);

        // Without one, the JS SDK's JSON form carries credentials and file.
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let body = json!({
            "_ApplicationId": "app", "_MasterKey": "mk", "_ContentType": "image/png",
            "base64": "aGkgdGhlcmU", "fileData": {"metadata": {"k": "v"}}
        });
        let req = ParseRequest::from_upload(
            "/files/a%20b",
            None,
            &headers,
            UploadBody::bytes(Bytes::from(body.to_string())),
            ip(),
        )
        .unwrap();
        assert_eq!(req.credentials.app_id.as_deref(), Some("app"));
        assert_eq!(req.credentials.master_key.as_deref(), Some("mk"));
        assert_eq!(req.segments, ["files", "a b"]);
        let upload = req.upload.unwrap();
        assert_eq!(upload.body.as_bytes().as_deref(), Some(&b"hi there"[..]));
        assert_eq!(upload.content_type.as_deref(), Some("image/png"));
        assert_eq!(upload.file_data, Some(json!({"metadata": {"k": "v"}})));
        assert!(upload.stream.is_none());
        assert!(req.body.is_empty());

        // Base64 as Node reads it; what does not decode is no file.
        assert_eq!(decode_base64("aGk=\naGk=").as_deref(), None);
        assert_eq!(decode_base64("aGk\r\n").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode_base64("***"), None);
        // A body that is not JSON stays raw, for the keys check to refuse.
        let req = ParseRequest::from_upload(
            "/files/x",
            None,
            &headers,
            UploadBody::bytes(Bytes::from_static(b"\xff")),
            ip(),
        )
        .unwrap();
        assert_eq!(req.credentials.app_id, None);
        assert_eq!(
            req.upload.unwrap().body.as_bytes().as_deref(),
            Some(&b"\xff"[..])
        );
    }

    #[test]
    fn bad_bodies_are_invalid_json() {
        for body in [&b"{"[..], b"[1]", b"nope"] {
            let err =
                ParseRequest::from_http(Method::POST, "/", None, &HeaderMap::new(), body, ip())
                    .unwrap_err();
            assert!(
                matches!(err, ParseError::Parse { code: 107, .. }),
                "{err:?}"
            );
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        let body = format!("{{\"a\": {deep}}}");
        let err = ParseRequest::from_http(
            Method::POST,
            "/",
            None,
            &HeaderMap::new(),
            body.as_bytes(),
            ip(),
        )
        .unwrap_err();
        assert!(matches!(err, ParseError::Parse { code: 107, .. }));
    }
}
