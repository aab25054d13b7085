//! The Files routes, as Parse Server 9 answers them.

use axum::body::Body;
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, HeaderMap, RANGE,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::storage::{FileInfo, StorageError, StoredFile};
use super::{mime, rules, upload};
use crate::App;
use crate::request::{FileUpload, ParseRequest, headers_name_app, percent_decode};
use crate::routes::Reply;
use crate::triggers::SavedFile;
use oxbase_objects::{Auth, ParseError, ParseResult, code};
use oxbase_proto::hooks::FILE_BYTES_SHOWN;
use oxbase_proto::{FileInfo as TriggerFile, TriggerName};

/// Request body read for an upload without an app id header, which may be
/// the JSON form: room for the file in base64 and for the JSON around it.
const JSON_FORM_OVERHEAD: usize = 64 * 1024;

/// Keys Parse Server's default `requestKeywordDenylist` refuses, with the
/// value they are refused with (`None`: any value).
const DENIED: &[(&str, Option<&str>)] = &[
    ("_bsontype", Some("Code")),
    ("constructor", None),
    ("__proto__", None),
];

/// A status with Parse's bare `{"error": ...}` body and no code, as Parse
/// Server answers some refusals on the file routes.
fn bare(status: StatusCode, message: &str) -> Reply {
    Reply {
        status,
        body: json!({ "error": message }),
        location: None,
        headers: Vec::new(),
    }
}

fn too_large_for_stream(max: usize) -> ParseError {
    ParseError::new(
        code::FILE_SAVE_ERROR,
        format!("File size exceeds maximum allowed: {max} bytes."),
    )
}

fn could_not_store(name: &str) -> ParseError {
    ParseError::new(
        code::FILE_SAVE_ERROR,
        format!("Could not store file: {name}."),
    )
}

impl App {
    /// How large an upload's body may be, and the error for more: the
    /// file may reach `files.max_upload_bytes` whatever `max_body_bytes`
    /// says; the JSON form, read whole, gets room for base64.
    pub(crate) fn upload_body_limit(&self, headers: &HeaderMap) -> (usize, ParseError) {
        let max = self.files.config.max_upload_bytes;
        if headers_name_app(headers) {
            let stream = headers
                .get("x-parse-upload-mode")
                .is_some_and(|mode| mode.as_bytes() == b"stream");
            let error = if stream {
                too_large_for_stream(max)
            } else {
                ParseError::TooLarge
            };
            (max, error)
        } else {
            let base64 = max.div_ceil(3).saturating_mul(4);
            let limit = base64
                .saturating_add(JSON_FORM_OVERHEAD)
                .max(self.objects.limits().max_body_bytes);
            (limit, ParseError::TooLarge)
        }
    }

    pub(crate) async fn files_route(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        match (&req.method, s.as_slice()) {
            (&Method::POST, ["files"]) => Err(ParseError::new(
                code::INVALID_FILE_NAME,
                "Filename not provided.",
            )),
            (&Method::POST, ["files", name]) => self.upload_file(auth, req, name).await,
            (&Method::DELETE, ["files", rest @ ..]) if !rest.is_empty() => {
                self.delete_file(auth, req, &rest.join("/")).await
            }
            _ => Err(self.no_route(req)),
        }
    }

    /// `POST /files/{name}`, with Parse Server 9's checks in its order.
    async fn upload_file(&self, auth: &Auth, req: &ParseRequest, name: &str) -> ParseResult<Reply> {
        if auth.read_only {
            return Ok(bare(
                StatusCode::FORBIDDEN,
                "read-only masterKey isn't allowed to create a file.",
            ));
        }
        check_upload_permission(&self.files.config, auth)?;
        let empty = FileUpload::default();
        let upload = req.upload.as_ref().unwrap_or(&empty);
        let content_type = upload.content_type.as_deref().filter(|ct| !ct.is_empty());
        rules::validate_filename(name)?;
        if !auth.master {
            rules::check_extension(&self.files.extensions, name, content_type)?;
        }
        let data = FileData::of(upload)?;
        if let Some(directory) = &data.directory {
            if !auth.master {
                return Err(ParseError::new(
                    code::OPERATION_FORBIDDEN,
                    "Directory can only be set using the Master Key.",
                ));
            }
            match directory {
                Value::String(directory) => rules::validate_directory(directory)?,
                _ => {
                    return Err(ParseError::new(
                        code::INVALID_FILE_NAME,
                        "Directory must be a string.",
                    ));
                }
            }
        }
        let received = self.receive_upload(upload, name).await?;
        check_denied(&data.metadata)?;
        check_denied(&data.tags)?;

        let given = SavedFile {
            name: name.to_owned(),
            bytes: received.whole().cloned(),
            size: match received.whole() {
                Some(bytes) => Some(bytes.len() as u64),
                None => declared_length(req),
            },
            content_type: content_type.map(str::to_owned),
        };
        let saved = self.before_save_file(auth, req, given).await?;
        if saved.name != name {
            rules::validate_filename(&saved.name)?;
        }
        let (stored_name, content_type) = stored_name(&saved.name, saved.content_type.as_deref());
        let stored_name = match &data.directory {
            Some(Value::String(directory)) => format!("{directory}/{stored_name}"),
            _ => stored_name,
        };
        let info = FileInfo {
            content_type,
            metadata: data.metadata,
            tags: data.tags,
        };
        // The hook's bytes replace the upload's.
        let bytes = match saved.bytes {
            Some(bytes) => upload::single(bytes),
            None => received.into_stream(),
        };
        let size = match self.files.storage.put(&stored_name, info, bytes).await {
            Ok(size) => size,
            Err(StorageError::Source(err)) => return Err(self.body_failed(upload, name, err)),
            Err(err) => {
                tracing::error!(%err, file = %stored_name, "cannot store a file");
                return Err(could_not_store(name));
            }
        };
        let url = super::file_url(&self.files_mount_url(req), &self.app_id, &stored_name);
        let stored = TriggerFile {
            name: Some(stored_name.clone()),
            url: Some(url.clone()),
            ..TriggerFile::default()
        };
        self.file_trigger(auth, req, TriggerName::AfterSaveFile, stored, Some(size))
            .await?;
        Ok(Reply {
            status: StatusCode::CREATED,
            body: json!({ "url": url, "name": stored_name }),
            location: Some(url),
            headers: Vec::new(),
        })
    }

    /// The upload, read as far as it is before it is stored (all of it
    /// when small): refused when larger than `files.max_upload_bytes`, or,
    /// outside stream mode, empty.
    async fn receive_upload(
        &self,
        upload: &FileUpload,
        name: &str,
    ) -> ParseResult<upload::Received> {
        let max = self.files.config.max_upload_bytes as u64;
        let received = upload::receive(&upload.body, max, FILE_BYTES_SHOWN)
            .await
            .map_err(|err| self.body_failed(upload, name, err))?;
        if upload.stream.is_none() && received.whole().is_some_and(Bytes::is_empty) {
            return Err(ParseError::new(
                code::FILE_SAVE_ERROR,
                "Invalid file upload.",
            ));
        }
        Ok(received)
    }

    /// The error for an upload's body that stopped: larger than allowed,
    /// or cut off by the client.
    fn body_failed(&self, upload: &FileUpload, name: &str, err: std::io::Error) -> ParseError {
        if !upload::is_too_large(&err) {
            tracing::warn!(%err, file = %name, "an upload's body failed");
            return could_not_store(name);
        }
        if upload.stream.is_some() {
            too_large_for_stream(self.files.config.max_upload_bytes)
        } else {
            ParseError::TooLarge
        }
    }

    /// `DELETE /files/{name}`: master key only.
    async fn delete_file(&self, auth: &Auth, req: &ParseRequest, name: &str) -> ParseResult<Reply> {
        auth.require_master()?;
        if auth.read_only {
            return Ok(bare(
                StatusCode::FORBIDDEN,
                "read-only masterKey isn't allowed to delete a file.",
            ));
        }
        let file = TriggerFile {
            name: Some(name.to_owned()),
            url: Some(super::file_url(
                &self.files_mount_url(req),
                &self.app_id,
                name,
            )),
            ..TriggerFile::default()
        };
        self.file_trigger(auth, req, TriggerName::BeforeDeleteFile, file.clone(), None)
            .await?;
        match self.files.storage.delete(name).await {
            Ok(()) => {
                self.file_trigger(auth, req, TriggerName::AfterDeleteFile, file, None)
                    .await?;
                Ok(Reply::ok(json!({})))
            }
            // Parse Server's default (GridFS) adapter's words.
            Err(StorageError::NotFound) => {
                Err(ParseError::new(code::FILE_DELETE_ERROR, "FileNotFound"))
            }
            Err(err) => {
                tracing::error!(%err, file = %name, "cannot delete a file");
                Err(ParseError::new(
                    code::FILE_DELETE_ERROR,
                    "Could not delete file.",
                ))
            }
        }
    }

    /// `GET` or `HEAD /files/{appId}/{name}` (and `/files/{appId}/metadata/
    /// {name}`): answered without keys, since browsers load file URLs
    /// directly. `None` when the request is not one of these.
    pub(crate) async fn file_download(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let rest = path
            .strip_prefix(self.mount.as_str())
            .filter(|rest| rest.starts_with('/'))?;
        let raw: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if raw.len() < 3 || raw[0] != "files" {
            return None;
        }
        let Some(segments) = raw
            .iter()
            .map(|s| percent_decode(s))
            .collect::<Option<Vec<_>>>()
        else {
            return Some(not_found());
        };
        let metadata = segments[2] == "metadata" && segments.len() > 3;
        if segments[1] != self.app_id {
            if metadata {
                return Some(json_response(StatusCode::OK, &json!({})));
            }
            return Some(json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": "Invalid application ID."}),
            ));
        }
        if metadata {
            let name = segments[3..].join("/");
            let body = match self.files.storage.info(&name).await {
                Ok(info) => json!({ "metadata": info.metadata }),
                Err(_) => json!({}),
            };
            return Some(json_response(StatusCode::OK, &body));
        }
        let name = segments[2..].join("/");
        match self.files.storage.get(&name).await {
            Ok(file) => Some(file_response(method, headers, &name, file).await),
            Err(StorageError::NotFound) => Some(not_found()),
            Err(err) => {
                tracing::error!(%err, file = %name, "cannot read a file");
                Some(not_found())
            }
        }
    }
}

/// Parse Server 9's `fileUpload` options; the master key may always
/// upload.
fn check_upload_permission(config: &crate::config::FilesConfig, auth: &Auth) -> ParseResult<()> {
    if auth.master {
        return Ok(());
    }
    let refused = |who: &str| {
        Err(ParseError::new(
            code::FILE_SAVE_ERROR,
            format!("File upload by {who} is disabled."),
        ))
    };
    match &auth.user {
        Some(user) if user.anonymous && !config.enable_for_anonymous_user => {
            refused("anonymous user")
        }
        Some(user) if !user.anonymous && !config.enable_for_authenticated_user => {
            refused("authenticated user")
        }
        None if !config.enable_for_public => refused("public"),
        _ => Ok(()),
    }
}

/// The metadata, tags and directory an upload carries, from the JSON
/// form's `fileData` or the stream mode's headers.
struct FileData {
    metadata: Map<String, Value>,
    tags: Map<String, Value>,
    directory: Option<Value>,
}

impl FileData {
    fn of(upload: &FileUpload) -> ParseResult<Self> {
        let object = |value: Option<&Value>| match value {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        if let Some(stream) = &upload.stream {
            let header_object = |text: &Option<String>, header: &str| -> ParseResult<_> {
                let Some(text) = text else {
                    return Ok(Map::new());
                };
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(map)) => Ok(map),
                    _ => Err(ParseError::json(format!(
                        "Invalid JSON in {header} header."
                    ))),
                }
            };
            return Ok(Self {
                metadata: header_object(&stream.metadata, "X-Parse-File-Metadata")?,
                tags: header_object(&stream.tags, "X-Parse-File-Tags")?,
                directory: stream.directory.clone().map(Value::String),
            });
        }
        let data = upload.file_data.as_ref();
        Ok(Self {
            metadata: object(data.and_then(|d| d.get("metadata"))),
            tags: object(data.and_then(|d| d.get("tags"))),
            directory: data
                .and_then(|d| d.get("directory"))
                .filter(|d| !d.is_null())
                .cloned(),
        })
    }
}

/// Parse Server's `requestKeywordDenylist` check, with its default list.
fn check_denied(map: &Map<String, Value>) -> ParseResult<()> {
    fn in_map(map: &Map<String, Value>) -> Option<String> {
        for (key, value) in map {
            for (denied, denied_value) in DENIED {
                let hit = key == denied
                    && denied_value.is_none_or(|v| value.as_str().is_some_and(|s| s.contains(v)));
                if hit {
                    return Some(match denied_value {
                        Some(v) => format!("{{\"key\":\"{denied}\",\"value\":\"{v}\"}}"),
                        None => format!("{{\"key\":\"{denied}\"}}"),
                    });
                }
            }
            if let Some(found) = in_value(value) {
                return Some(found);
            }
        }
        None
    }
    fn in_value(value: &Value) -> Option<String> {
        match value {
            Value::Object(map) => in_map(map),
            Value::Array(items) => items.iter().find_map(in_value),
            _ => None,
        }
    }
    match in_map(map) {
        Some(keyword) => Err(ParseError::new(
            code::INVALID_KEY_NAME,
            format!("Prohibited keyword in request data: {keyword}."),
        )),
        None => Ok(()),
    }
}

/// The name a file is stored under and the type it is served with, as
/// Parse Server's files controller derives them: a name without an
/// extension gets its type's; a known extension decides the type; the
/// name is prefixed with 32 random hex digits.
fn stored_name(name: &str, content_type: Option<&str>) -> (String, Option<String>) {
    let mut name = name.to_owned();
    let mut content_type = content_type.map(str::to_owned);
    match mime::extension(&name) {
        None => {
            if let Some(ext) = content_type.as_deref().and_then(mime::extension_for_type) {
                if !name.ends_with('.') {
                    name.push('.');
                }
                name.push_str(ext);
            }
        }
        Some(_) => {
            if let Some(known) = mime::type_for_name(&name) {
                content_type = Some(known.to_owned());
            }
        }
    }
    let prefix = format!("{:032x}", rand::rng().random::<u128>());
    (format!("{prefix}_{name}"), content_type)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn not_found() -> Response {
    let mut response = Response::new(Body::from("File not found."));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The file, or the one byte range a `Range` header asks for, streamed
/// from storage. A file a browser could run script in is a download, in a
/// sandbox, so it cannot act as the API's origin.
async fn file_response(
    method: &Method,
    headers: &HeaderMap,
    name: &str,
    file: StoredFile,
) -> Response {
    let (content_type, active) = served_type(file.info.content_type.as_deref(), name);
    let total = file.size;
    let range = headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| byte_range(v, total));
    let (status, start, length, content_range) = match range {
        None | Some(Range::Ignored) => (StatusCode::OK, 0, total, None),
        Some(Range::Unsatisfiable) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(CONTENT_RANGE, value);
            }
            safe_headers(response.headers_mut(), active);
            return response;
        }
        Some(Range::Bytes(start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            start,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{total}")),
        ),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match file.read(start, length).await {
            Ok(stream) => Body::from_stream(stream),
            Err(err) => {
                tracing::error!(%err, file = %name, "cannot read a file");
                return not_found();
            }
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(CONTENT_TYPE, content_type);
    out.insert(CONTENT_LENGTH, HeaderValue::from(length));
    out.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(value) = content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        out.insert(CONTENT_RANGE, value);
    }
    safe_headers(out, active);
    response
}

/// The type a file is served with, and whether it is active content: the
/// stored type when it is a valid one (one that is not would be sniffed,
/// so it is replaced and the file counts as active), else its name's.
fn served_type(stored: Option<&str>, name: &str) -> (HeaderValue, bool) {
    let valid = stored
        .filter(|ct| mime::essence(ct).is_some())
        .and_then(|ct| HeaderValue::from_str(ct).ok());
    let active = mime::is_active(stored, name) || (stored.is_some() && valid.is_none());
    let served = valid
        .or_else(|| mime::type_for_name(name).map(HeaderValue::from_static))
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    (served, active)
}

/// `nosniff` on every file, so no browser guesses HTML into one; for
/// active content, a download in a sandbox with no rights to anything.
fn safe_headers(headers: &mut HeaderMap, active: bool) {
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if active {
        headers.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; sandbox"),
        );
    }
}

/// The `Content-Length` the client declared, which a hook sees as a large
/// upload's size before the body is read, as in Parse's stream mode.
fn declared_length(req: &ParseRequest) -> Option<u64> {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[derive(Debug, PartialEq)]
enum Range {
    /// Not a single byte range this server reads: the whole file answers.
    Ignored,
    Unsatisfiable,
    /// First and last byte, inclusive.
    Bytes(u64, u64),
}

fn byte_range(header: &str, total: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let (start, end) = (start.trim(), end.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (first, last) = match (start.is_empty(), end.is_empty()) {
        (true, true) => return Range::Ignored,
        (true, false) => match parse(end) {
            Some(0) => return Range::Unsatisfiable,
            Some(suffix) => (total.saturating_sub(suffix), total.saturating_sub(1)),
            None => return Range::Ignored,
        },
        (false, _) => {
            let Some(first) = parse(start) else {
                return Range::Ignored;
            };
            let last = if end.is_empty() {
                total.saturating_sub(1)
            } else {
                match parse(end) {
                    Some(last) if last >= first => last.min(total.saturating_sub(1)),
                    _ => return Range::Ignored,
                }
            };
            (first, last)
        }
    };
    if total == 0 || first >= total {
        return Range::Unsatisfiable;
    }
    Range::Bytes(first, last)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use oxbase_objects::SessionUser;

    fn user(anonymous: bool) -> Auth {
        Auth {
            user: Some(Arc::new(SessionUser {
                id: "u1".into(),
                session_token: "r:x".into(),
                anonymous,
                roles: Vec::new(),
            })),
            ..Auth::default()
        }
    }

    fn message(result: ParseResult<()>) -> Option<String> {
        match result {
            Ok(()) => None,
            Err(ParseError::Parse { code: 130, message }) => Some(message),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn upload_permissions_follow_parse_file_upload_options() {
        let mut config = crate::config::FilesConfig::default();
        let public = Auth::default();
        let (anonymous, signed_in) = (user(true), user(false));
        // The defaults: signed-in users only.
        assert_eq!(
            message(check_upload_permission(&config, &public)).as_deref(),
            Some("File upload by public is disabled.")
        );
        assert_eq!(
            message(check_upload_permission(&config, &anonymous)).as_deref(),
            Some("File upload by anonymous user is disabled.")
        );
        assert_eq!(message(check_upload_permission(&config, &signed_in)), None);
        assert_eq!(
            message(check_upload_permission(&config, &Auth::master())),
            None
        );

        config.enable_for_public = true;
        config.enable_for_anonymous_user = true;
        config.enable_for_authenticated_user = false;
        assert_eq!(message(check_upload_permission(&config, &public)), None);
        assert_eq!(message(check_upload_permission(&config, &anonymous)), None);
        assert_eq!(
            message(check_upload_permission(&config, &signed_in)).as_deref(),
            Some("File upload by authenticated user is disabled.")
        );
        config.enable_for_public = false;
        config.enable_for_anonymous_user = false;
        assert_eq!(
            message(check_upload_permission(&config, &Auth::master())),
            None
        );
    }

    #[test]
    fn stored_names_follow_parse() {
        let (name, ct) = stored_name("hello", Some("text/plain"));
        assert!(name.ends_with("_hello.txt"), "{name}");
        assert_eq!(name.find('_'), Some(32));
        assert!(name[..32].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(ct.as_deref(), Some("text/plain"));
        let (name, ct) = stored_name("photo.JPG", Some("application/octet-stream"));
        assert!(name.ends_with("_photo.JPG"));
        assert_eq!(ct.as_deref(), Some("image/jpeg"));
        let (name, ct) = stored_name("data.zz", Some("application/x-zz"));
        assert!(name.ends_with("_data.zz"));
        assert_eq!(ct.as_deref(), Some("application/x-zz"));
        let (name, _) = stored_name("dot.", Some("image/png"));
        assert!(name.ends_with("_dot.png"), "{name}");
        let (name, ct) = stored_name("plain", None);
        assert!(name.ends_with("_plain"));
        assert_eq!(ct, None);
        assert_ne!(stored_name("a", None).0, stored_name("a", None).0);
    }

    #[test]
    fn denied_keywords() {
        let ok = json!({"a": {"b": [1, {"c": "Code"}]}});
        assert!(check_denied(ok.as_object().unwrap()).is_ok());
        for (bad, text) in [
            (json!({"constructor": 1}), r#"{"key":"constructor"}"#),
            (json!({"a": [{"__proto__": {}}]}), r#"{"key":"__proto__"}"#),
            (
                json!({"x": {"_bsontype": "Code"}}),
                r#"{"key":"_bsontype","value":"Code"}"#,
            ),
        ] {
            match check_denied(bad.as_object().unwrap()) {
                Err(ParseError::Parse { code: 105, message }) => {
                    assert_eq!(
                        message,
                        format!("Prohibited keyword in request data: {text}.")
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(check_denied(json!({"_bsontype": "Other"}).as_object().unwrap()).is_ok());
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("bytes=0-3", 10), Range::Bytes(0, 3));
        assert_eq!(byte_range("bytes=5-", 10), Range::Bytes(5, 9));
        assert_eq!(byte_range("bytes=-4", 10), Range::Bytes(6, 9));
        assert_eq!(byte_range("bytes=-40", 10), Range::Bytes(0, 9));
        assert_eq!(byte_range("bytes=8-100", 10), Range::Bytes(8, 9));
        assert_eq!(byte_range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 10), Range::Unsatisfiable);
        assert_eq!(byte_range("bytes=0-1,3-4", 10), Range::Ignored);
        assert_eq!(byte_range("bytes=4-2", 10), Range::Ignored);
        assert_eq!(byte_range("items=0-1", 10), Range::Ignored);
        assert_eq!(byte_range("bytes=x-1", 10), Range::Ignored);
    }
}
