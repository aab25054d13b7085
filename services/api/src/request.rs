//! Turns an HTTP request into a [`ParseRequest`]: the method (after the JS
//! SDK's `_method` override), the path below the mount, the credentials from
//! headers or the SDK's body tunnel, the parameters and the JSON body.

use std::net::IpAddr;

use axum::http::{HeaderMap, Method};
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// The credentials a request carries.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub app_id: Option<String>,
    pub master_key: Option<String>,
    pub javascript_key: Option<String>,
    pub client_key: Option<String>,
    pub rest_api_key: Option<String>,
    pub dotnet_key: Option<String>,
    pub session_token: Option<String>,
    pub installation_id: Option<String>,
    pub client_version: Option<String>,
}

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
    ) -> ApiResult<Self> {
        let mut credentials = Credentials {
            app_id: header(headers, "x-parse-application-id"),
            master_key: header(headers, "x-parse-master-key"),
            javascript_key: header(headers, "x-parse-javascript-key"),
            client_key: header(headers, "x-parse-client-key"),
            rest_api_key: header(headers, "x-parse-rest-api-key"),
            dotnet_key: header(headers, "x-parse-windows-key"),
            session_token: header(headers, "x-parse-session-token"),
            installation_id: header(headers, "x-parse-installation-id"),
            client_version: header(headers, "x-parse-client-version"),
        };
        basic_auth(headers, &mut credentials);

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
                _ => return Err(ApiError::json(format!("unsupported _method {over:?}"))),
            };
        }
        take_tunnel_credentials(&mut body, &mut credentials)?;

        let mut params = body.clone();
        if let Some(query) = query {
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                // Parse reads each parameter as JSON when it is JSON.
                let value =
                    serde_json::from_str(&value).unwrap_or(Value::String(value.into_owned()));
                params.insert(key.into_owned(), value);
            }
        }

        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_decode(s).ok_or_else(|| ApiError::json(format!("bad path segment {s:?}")))
            })
            .collect::<ApiResult<Vec<_>>>()?;

        let scheme = header(headers, "x-forwarded-proto").unwrap_or_else(|| "http".into());
        let host = header(headers, "host").unwrap_or_else(|| "localhost".into());
        Ok(ParseRequest {
            method,
            segments,
            params,
            body,
            credentials,
            ip,
            origin: format!("{scheme}://{host}"),
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
        }
    }
}

fn parse_body(bytes: &[u8]) -> ApiResult<Map<String, Value>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::json("request body must be a JSON object")),
        Err(err) if err.to_string().contains("recursion limit") => {
            Err(ApiError::json("request body is nested too deeply"))
        }
        Err(_) => Err(ApiError::json("invalid JSON")),
    }
}

fn take_tunnel_credentials(
    body: &mut Map<String, Value>,
    credentials: &mut Credentials,
) -> ApiResult<()> {
    let take = |field: &str, slot: &mut Option<String>| -> ApiResult<()> {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(value)) => {
                if slot.is_none() && !value.is_empty() {
                    *slot = Some(value.clone());
                }
            }
            Some(_) => return Err(ApiError::Unauthorized),
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

fn percent_decode(segment: &str) -> Option<String> {
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
    fn bad_bodies_are_invalid_json() {
        for body in [&b"{"[..], b"[1]", b"nope"] {
            let err =
                ParseRequest::from_http(Method::POST, "/", None, &HeaderMap::new(), body, ip())
                    .unwrap_err();
            assert!(matches!(err, ApiError::Parse { code: 107, .. }), "{err:?}");
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
        assert!(matches!(err, ApiError::Parse { code: 107, .. }));
    }
}
