//! The Files API: uploads (raw and the JS SDK's JSON form), keyless
//! downloads, deletes, and Parse Server 9's rules for names, extensions,
//! sizes and who may upload.

use base64::Engine;
use oxbase_api::{FileStorageKind, FilesConfig, S3Settings};
use oxbase_kit::Secret;
use oxbase_objects::Limits;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::common::{APP_ID, MASTER_KEY, TestServer, assert_error, read};
use crate::users::signup;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A raw upload with the master key.
fn master_upload(
    server: &TestServer,
    name: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> RequestBuilder {
    let mut request = server.master(Method::POST, &format!("files/{name}"));
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    request.body(body)
}

/// Sends an upload and checks Parse's success shape: 201, `name` is
/// `{32 hex}_{expected}`, `url` is its download URL and the `Location`.
async fn created(request: RequestBuilder, server: &TestServer, expected: &str) -> (String, String) {
    let response = request.send().await.unwrap();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read(response).await;
    assert_eq!(status, 201, "{body}");
    let name = body["name"].as_str().unwrap().to_owned();
    let (prefix, rest) = name.rsplit('/').next().unwrap().split_at(32);
    assert!(
        prefix
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{name}"
    );
    assert_eq!(rest, format!("_{expected}"), "{name}");
    let url = body["url"].as_str().unwrap().to_owned();
    let encoded = name.replace(' ', "%20");
    assert_eq!(url, server.url(&format!("files/{APP_ID}/{encoded}")));
    assert_eq!(location.as_deref(), Some(url.as_str()));
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    (name, url)
}

/// A master-key upload sent with chunked transfer encoding (no
/// `Content-Length`): `chunks` chunks of `size` bytes. Returns the status.
async fn chunked_upload(server: &TestServer, name: &str, chunks: usize, size: usize) -> u16 {
    let chunks = (0..chunks).map(|_| vec![b'z'; size]);
    send_chunked(server, name, "", chunks).await.0
}

/// A master-key upload of these chunks, with chunked transfer encoding and
/// the extra header lines (each ending in CRLF). Returns the status and
/// the body.
async fn send_chunked(
    server: &TestServer,
    name: &str,
    extra_headers: &str,
    chunks: impl IntoIterator<Item = Vec<u8>>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = server.base.trim_start_matches("http://");
    let (host, mount) = authority.split_at(authority.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {mount}/files/{name} HTTP/1.1\r\nHost: {host}\r\nX-Parse-Application-Id: {APP_ID}\r\n\
         X-Parse-Master-Key: {MASTER_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\
         {extra_headers}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in chunks {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        // The server may answer and close before reading everything.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, body)
}

/// A download with no Parse headers at all, as a browser makes it.
/// `DELETE /files/{name}` with the master key: its status and body.
async fn delete_file(server: &TestServer, name: &str) -> (u16, Value) {
    read(
        server
            .master(Method::DELETE, &format!("files/{name}"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn download(server: &TestServer, url: &str) -> Response {
    server.client.get(url).send().await.unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_download_and_delete() {
    let server = TestServer::start().await;
    let (name, url) = created(
        master_upload(&server, "hello.txt", Some("text/plain"), "Hello, World!"),
        &server,
        "hello.txt",
    )
    .await;

    let response = download(&server, &url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("text/plain"));
    assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    assert_eq!(response.text().await.unwrap(), "Hello, World!");

    let head = server.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), Some("13"));
    assert_eq!(header(&head, "content-type"), Some("text/plain"));
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    let range = server
        .client
        .get(&url)
        .header("Range", "bytes=7-11")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(header(&range, "content-range"), Some("bytes 7-11/13"));
    assert_eq!(range.text().await.unwrap(), "World");
    let beyond = server
        .client
        .get(&url)
        .header("Range", "bytes=13-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(header(&beyond, "content-range"), Some("bytes */13"));

    // File fields are given this URL when read.
    let (status, object) = server
        .post(
            "classes/Doc",
            json!({"file": {"__type": "File", "name": name}}),
        )
        .await;
    assert_eq!(status, 201, "{object}");
    let (_, read_back) = server
        .get(&format!(
            "classes/Doc/{}",
            object["objectId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        read_back["file"],
        json!({"__type": "File", "name": name, "url": url})
    );

    // Another app's URL, and a file that is not there.
    let other = download(&server, &server.url(&format!("files/other-app/{name}"))).await;
    assert_eq!(other.status(), 403);
    assert_eq!(
        other.json::<Value>().await.unwrap(),
        json!({"error": "Invalid application ID."})
    );
    let missing = download(
        &server,
        &server.url(&format!("files/{APP_ID}/0123_missing.txt")),
    )
    .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(header(&missing, "content-type"), Some("text/plain"));
    assert_eq!(missing.text().await.unwrap(), "File not found.");
    for sneaky in ["..%2F..%2Fetc%2Fpasswd", "..%2Foxbase.db", ".meta/x"] {
        let response = download(&server, &server.url(&format!("files/{APP_ID}/{sneaky}"))).await;
        assert_eq!(response.status(), 404, "{sneaky}");
    }

    // Deleting takes the master key.
    let refused = read(
        server
            .request(Method::DELETE, &format!("files/{name}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(refused, (403, json!({"error": "Permission denied"})));
    assert_eq!(download(&server, &url).await.status(), 200);
    let deleted = delete_file(&server, &name).await;
    assert_eq!(deleted, (200, json!({})));
    assert_eq!(download(&server, &url).await.status(), 404);
    let again = delete_file(&server, &name).await;
    assert_eq!(again, (400, json!({"code": 153, "error": "FileNotFound"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_types_follow_parse() {
    let server = TestServer::start().await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();

    // Without an extension, the type's is added; binary data survives.
    let (_, url) = created(
        master_upload(
            &server,
            "blob",
            Some("application/octet-stream"),
            bytes.clone(),
        ),
        &server,
        "blob.bin",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(
        header(&response, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);

    // A known extension decides the type; otherwise the client's is kept.
    let (_, url) = created(
        master_upload(&server, "pic.png", Some("application/octet-stream"), "png"),
        &server,
        "pic.png",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(header(&response, "content-type"), Some("image/png"));
    let (_, url) = created(
        master_upload(&server, "data", Some("application/x-custom"), "custom"),
        &server,
        "data",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(
        header(&response, "content-type"),
        Some("application/x-custom")
    );
    let (_, url) = created(
        master_upload(&server, "plain", None, "none"),
        &server,
        "plain",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(
        header(&response, "content-type"),
        Some("application/octet-stream")
    );

    // Spaces are allowed, and the URL encodes them.
    let (name, url) = created(
        master_upload(&server, "my%20notes.txt", Some("text/plain"), "spaced"),
        &server,
        "my notes.txt",
    )
    .await;
    assert!(
        url.ends_with(&format!("{}_my%20notes.txt", &name[..32])),
        "{url}"
    );
    assert_eq!(
        download(&server, &url).await.text().await.unwrap(),
        "spaced"
    );

    // Each upload gets its own name.
    let (first, _) = created(
        master_upload(&server, "same.txt", Some("text/plain"), "1"),
        &server,
        "same.txt",
    )
    .await;
    let (second, _) = created(
        master_upload(&server, "same.txt", Some("text/plain"), "2"),
        &server,
        "same.txt",
    )
    .await;
    assert_ne!(first, second);

    // Bad names.
    let long = "a".repeat(129);
    for (name, message) in [
        ("-dash.txt", "Filename contains invalid characters."),
        ("a%24b.txt", "Filename contains invalid characters."),
        ("%C3%A9.txt", "Filename contains invalid characters."),
        (".hidden", "Filename contains invalid characters."),
        ("a%2Fb.txt", "Filename contains invalid characters."),
        (long.as_str(), "Filename too long."),
    ] {
        let result = read(
            master_upload(&server, name, Some("text/plain"), "x")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            result,
            (400, json!({"code": 122, "error": message})),
            "{name}"
        );
    }
    let (status, body) = read(
        server
            .master(Method::POST, "files")
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (400, json!({"code": 122, "error": "Filename not provided."}))
    );

    // An empty body is no file.
    let result = read(
        master_upload(&server, "empty.txt", Some("text/plain"), "")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (400, json!({"code": 130, "error": "Invalid file upload."}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_upload() {
    let server = TestServer::start_with(|c| {
        c.read_only_master_key = Some(Secret::new("read-only"));
    })
    .await;
    let public = |name: &str| {
        server
            .request(Method::POST, &format!("files/{name}"))
            .header(CONTENT_TYPE, "text/plain")
            .body("data")
    };
    // The defaults: no public uploads, signed-in users may upload.
    let refused = read(public("a.txt").send().await.unwrap()).await;
    assert_eq!(
        refused,
        (
            400,
            json!({"code": 130, "error": "File upload by public is disabled."})
        )
    );
    let user = signup(&server, "uploader").await;
    created(
        public("mine.txt").header("X-Parse-Session-Token", &user.token),
        &server,
        "mine.txt",
    )
    .await;
    created(
        master_upload(&server, "master.txt", Some("text/plain"), "m"),
        &server,
        "master.txt",
    )
    .await;

    // The read-only master key neither uploads nor deletes.
    let read_only = |method: Method, path: &str| {
        server
            .request(method, path)
            .header("X-Parse-Master-Key", "read-only")
    };
    let result = read(
        read_only(Method::POST, "files/ro.txt")
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (
            403,
            json!({"error": "read-only masterKey isn't allowed to create a file."})
        )
    );
    let (name, url) = created(
        master_upload(&server, "keep.txt", Some("text/plain"), "kept"),
        &server,
        "keep.txt",
    )
    .await;
    let result = read(
        read_only(Method::DELETE, &format!("files/{name}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (
            403,
            json!({"error": "read-only masterKey isn't allowed to delete a file."})
        )
    );
    assert_eq!(download(&server, &url).await.text().await.unwrap(), "kept");

    // Every flag flipped.
    let open = TestServer::start_with(|c| {
        c.update_section(|files: &mut FilesConfig| {
            files.enable_for_public = true;
            files.enable_for_authenticated_user = false;
        })
    })
    .await;
    created(
        open.request(Method::POST, "files/p.txt")
            .header(CONTENT_TYPE, "text/plain")
            .body("p"),
        &open,
        "p.txt",
    )
    .await;
    let user = signup(&open, "blocked").await;
    let result = read(
        open.request(Method::POST, "files/u.txt")
            .header("X-Parse-Session-Token", &user.token)
            .body("u")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 130, "error": "File upload by authenticated user is disabled."})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_are_checked_for_clients_only() {
    let server = TestServer::start_with(|c| {
        c.update_section(|files: &mut FilesConfig| files.enable_for_public = true)
    })
    .await;
    let public = |name: &str, content_type: &str| {
        server
            .request(Method::POST, &format!("files/{name}"))
            .header(CONTENT_TYPE, content_type)
            .body("<script>alert(1)</script>")
    };
    for (name, content_type, ext) in [
        ("page.html", "text/plain", "html"),
        ("page.HTM", "text/plain", "HTM"),
        ("page", "text/html", "html"),
        ("page.unknownext", "text/html; charset=utf-8", "html"),
    ] {
        let result = read(public(name, content_type).send().await.unwrap()).await;
        assert_eq!(
            result,
            (
                400,
                json!({"code": 130, "error": format!("File upload of extension {ext} is disabled.")})
            ),
            "{name} {content_type}"
        );
    }
    let result = read(public("page", "text/").send().await.unwrap()).await;
    assert_eq!(
        result,
        (400, json!({"code": 130, "error": "Invalid Content-Type."}))
    );
    created(public("page.txt", "text/html"), &server, "page.txt").await;
    // The master key may upload anything.
    let (_, url) = created(
        master_upload(&server, "page.html", Some("text/html"), "<p>hi</p>"),
        &server,
        "page.html",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(header(&response, "content-type"), Some("text/html"));

    let listed = TestServer::start_with(|c| {
        c.update_section(|files: &mut FilesConfig| {
            files.enable_for_public = true;
            files.file_extensions = vec!["^png$".into(), "^jpe?g$".into()];
        })
    })
    .await;
    let upload = |name: &str| {
        listed
            .request(Method::POST, &format!("files/{name}"))
            .body("img")
    };
    created(upload("a.png"), &listed, "a.png").await;
    created(upload("a.jpeg"), &listed, "a.jpeg").await;
    let result = read(upload("a.gif").send().await.unwrap()).await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 130, "error": "File upload of extension gif is disabled."})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sizes_have_their_own_limit() {
    let server = TestServer::start_with(|c| {
        c.update_section(|limits: &mut Limits| limits.max_body_bytes = 512);
        c.update_section(|files: &mut FilesConfig| files.max_upload_bytes = 2048);
    })
    .await;
    // Up to max_upload_bytes, though JSON bodies stop at 512 bytes.
    let (_, url) = created(
        master_upload(&server, "full.bin", None, vec![7u8; 2048]),
        &server,
        "full.bin",
    )
    .await;
    assert_eq!(
        download(&server, &url).await.bytes().await.unwrap().len(),
        2048
    );
    let (status, _) = server
        .post("classes/Big", json!({"s": "x".repeat(1000)}))
        .await;
    assert_eq!(status, 413);

    // Beyond it: 413 for a plain upload, Parse's 130 for a stream-mode one.
    let (status, body) = read(
        master_upload(&server, "over.bin", None, vec![7u8; 2049])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let result = read(
        master_upload(&server, "over.bin", None, vec![7u8; 2049])
            .header("X-Parse-Upload-Mode", "stream")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 130, "error": "File size exceeds maximum allowed: 2048 bytes."})
        )
    );
    // Without a Content-Length, the limit holds as the body streams in.
    assert_eq!(chunked_upload(&server, "chunked.bin", 2, 1500).await, 413);
    assert_eq!(chunked_upload(&server, "chunked.bin", 2, 1000).await, 201);

    // The JSON form's limit is on the decoded file.
    let form = |bytes: usize| {
        json!({"_ApplicationId": APP_ID, "_MasterKey": MASTER_KEY, "base64": b64(&vec![1u8; bytes])})
            .to_string()
    };
    let (_, url) = created(
        server
            .client
            .post(server.url("files/form.bin"))
            .header(CONTENT_TYPE, "text/plain")
            .body(form(2048)),
        &server,
        "form.bin",
    )
    .await;
    assert_eq!(
        download(&server, &url).await.bytes().await.unwrap().len(),
        2048
    );
    let (status, _) = read(
        server
            .client
            .post(server.url("files/form.bin"))
            .header(CONTENT_TYPE, "text/plain")
            .body(form(2049))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_sdk_json_form() {
    let server = TestServer::start().await;
    let form = |name: &str, body: Value| {
        server
            .client
            .post(server.url(&format!("files/{name}")))
            .header(CONTENT_TYPE, "text/plain")
            .body(body.to_string())
    };
    let (name, url) = created(
        form(
            "note.txt",
            json!({
                "_ApplicationId": APP_ID, "_MasterKey": MASTER_KEY, "_ClientVersion": "js8.6.2",
                "_InstallationId": "i-1",
                "base64": b64(b"hi there"), "_ContentType": "text/plain",
                "fileData": {"metadata": {"owner": "me"}, "tags": {"kind": "note"}}
            }),
        ),
        &server,
        "note.txt",
    )
    .await;
    assert_eq!(
        download(&server, &url).await.text().await.unwrap(),
        "hi there"
    );
    let metadata = download(
        &server,
        &server.url(&format!("files/{APP_ID}/metadata/{name}")),
    )
    .await;
    assert_eq!(
        metadata.json::<Value>().await.unwrap(),
        json!({"metadata": {"owner": "me"}})
    );
    let missing = download(
        &server,
        &server.url(&format!("files/{APP_ID}/metadata/nope")),
    )
    .await;
    assert_eq!(missing.json::<Value>().await.unwrap(), json!({}));

    // Without _ContentType, the request's own type counts, as in Parse.
    created(
        form(
            "bytes",
            json!({"_ApplicationId": APP_ID, "_MasterKey": MASTER_KEY, "base64": b64(&[1, 2, 3])}),
        ),
        &server,
        "bytes.txt",
    )
    .await;

    // Refusals.
    let result = read(
        form(
            "bad.txt",
            json!({"_ApplicationId": APP_ID, "_MasterKey": MASTER_KEY, "base64": "***"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (400, json!({"code": 130, "error": "Invalid file upload."}))
    );
    let result = read(
        form(
            "meta.txt",
            json!({"_ApplicationId": APP_ID, "_MasterKey": MASTER_KEY, "base64": b64(b"x"),
                   "fileData": {"metadata": {"a": {"constructor": 1}}}}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 105, "error": "Prohibited keyword in request data: {\"key\":\"constructor\"}."})
        )
    );
    let result = read(
        form("anon.txt", json!({"base64": b64(b"x")}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(result, (403, json!({"error": "unauthorized"})));
    let result = read(
        server
            .client
            .post(server.url("files/raw.bin"))
            .body(vec![0xffu8, 0, 1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(result, (403, json!({"error": "unauthorized"})));
    // Without the master key, the public may not upload by default.
    let result = read(
        form(
            "pub.txt",
            json!({"_ApplicationId": APP_ID, "base64": b64(b"x")}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_error(&result, 400, 130);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_stream_mode_headers() {
    let server = TestServer::start_with(|c| {
        c.update_section(|files: &mut FilesConfig| files.enable_for_public = true)
    })
    .await;
    let form = |name: &str, master: bool, directory: &str| {
        let mut body = json!({"_ApplicationId": APP_ID, "base64": b64(b"in a directory"),
                              "fileData": {"directory": directory}});
        if master {
            body["_MasterKey"] = json!(MASTER_KEY);
        }
        server
            .client
            .post(server.url(&format!("files/{name}")))
            .body(body.to_string())
    };
    let (name, url) = created(form("d.txt", true, "photos/2024"), &server, "d.txt").await;
    assert!(name.starts_with("photos/2024/"), "{name}");
    assert!(
        url.starts_with(&server.url(&format!("files/{APP_ID}/photos/2024/"))),
        "{url}"
    );
    assert_eq!(
        download(&server, &url).await.text().await.unwrap(),
        "in a directory"
    );
    let result = read(form("d.txt", false, "photos").send().await.unwrap()).await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 119, "error": "Directory can only be set using the Master Key."})
        )
    );
    for (directory, message) in [
        ("../up", "Directory must not contain \"..\"."),
        ("/abs", "Directory must not start or end with \"/\"."),
        (
            "metadata/x",
            "Directory must not start with reserved segment \"metadata\".",
        ),
        ("a b", "Directory contains invalid characters."),
    ] {
        let result = read(form("d.txt", true, directory).send().await.unwrap()).await;
        assert_eq!(
            result,
            (400, json!({"code": 122, "error": message})),
            "{directory}"
        );
    }
    let deleted = delete_file(&server, &name).await;
    assert_eq!(deleted, (200, json!({})));
    assert_eq!(download(&server, &url).await.status(), 404);

    // The SDK's binary uploads carry file data in headers.
    let stream = |name: &str| {
        server
            .master(Method::POST, &format!("files/{name}"))
            .header("X-Parse-Upload-Mode", "stream")
            .header(CONTENT_TYPE, "application/octet-stream")
    };
    let (name, _) = created(
        stream("s.bin")
            .header("X-Parse-File-Metadata", r#"{"camera":"x100"}"#)
            .header("X-Parse-File-Directory", "raw")
            .body(vec![9u8; 10]),
        &server,
        "s.bin",
    )
    .await;
    assert!(name.starts_with("raw/"), "{name}");
    let metadata = download(
        &server,
        &server.url(&format!("files/{APP_ID}/metadata/{name}")),
    )
    .await;
    assert_eq!(
        metadata.json::<Value>().await.unwrap(),
        json!({"metadata": {"camera": "x100"}})
    );
    let result = read(
        stream("s.bin")
            .header("X-Parse-File-Tags", "[1]")
            .body(vec![9u8; 10])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 107, "error": "Invalid JSON in X-Parse-File-Tags header."})
        )
    );
    // Parse Server stores an empty stream-mode upload.
    let (_, url) = created(
        stream("empty.bin").body(Vec::<u8>::new()),
        &server,
        "empty.bin",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()),
        Some("0")
    );
}

/// Every regular file below `dir`, at any depth (`.tmp` and `.meta` too).
fn stored_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(stored_files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A server keeping its files in `dir`.
async fn server_with_files(dir: &std::path::Path, max_upload_bytes: usize) -> TestServer {
    let dir = dir.to_owned();
    TestServer::start_with(move |c| {
        c.update_section(|files: &mut FilesConfig| {
            files.dir = Some(dir);
            files.max_upload_bytes = max_upload_bytes;
            files.enable_for_public = true;
        })
    })
    .await
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_content_is_a_sandboxed_download() {
    let server = TestServer::start_with(|c| {
        c.update_section(|files: &mut FilesConfig| files.enable_for_public = true)
    })
    .await;
    let svg =
        r#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>"#;
    // Through the master key, which the extension rules do not stop.
    for (name, content_type, stored) in [
        ("pic.svg", "image/svg+xml", "pic.svg"),
        // Claimed to be a PNG, named an SVG.
        ("disguised.svg", "image/png", "disguised.svg"),
        ("page", "text/html", "page.html"),
        ("doc.xht", "application/xhtml+xml", "doc.xht"),
        ("feed", "application/xml", "feed.xml"),
        ("onto.rdf", "image/png", "onto.rdf"),
        // No valid type: a browser would sniff it.
        ("odd", "text/plain,text/html", "odd"),
    ] {
        let (_, url) = created(
            master_upload(&server, name, Some(content_type), svg),
            &server,
            stored,
        )
        .await;
        let response = download(&server, &url).await;
        assert_eq!(response.status(), 200, "{name}");
        let served = header(&response, "content-type").unwrap_or_default();
        assert_eq!(
            header(&response, "content-disposition"),
            Some("attachment"),
            "{name} as {served}"
        );
        let policy = header(&response, "content-security-policy").unwrap_or_default();
        assert!(
            policy.contains("sandbox") && policy.contains("default-src 'none'"),
            "{name}: {policy:?}"
        );
        assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
        assert_ne!(served, "text/plain,text/html", "{name}");
        assert_eq!(response.text().await.unwrap(), svg, "{name}");

        // HEAD and ranges answer with the same headers.
        let head = server.client.head(&url).send().await.unwrap();
        assert_eq!(header(&head, "content-disposition"), Some("attachment"));
        assert!(header(&head, "content-security-policy").is_some());
        let range = server
            .client
            .get(&url)
            .header("Range", "bytes=0-3")
            .send()
            .await
            .unwrap();
        assert_eq!(range.status(), 206);
        assert_eq!(header(&range, "content-disposition"), Some("attachment"));
        assert_eq!(range.text().await.unwrap(), "<svg");
    }

    // Passive types stay inline, for pages to show.
    let (_, url) = created(
        master_upload(&server, "pic.png", Some("image/png"), "png"),
        &server,
        "pic.png",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(header(&response, "content-type"), Some("image/png"));
    assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&response, "content-disposition"), None);
    assert_eq!(header(&response, "content-security-policy"), None);

    // Clients may not upload them at all, with Parse Server 9's default.
    let public = |name: &str, content_type: &str| {
        server
            .request(Method::POST, &format!("files/{name}"))
            .header(CONTENT_TYPE, content_type)
            .body(svg)
    };
    for (name, content_type, ext) in [
        ("pic.svg", "image/svg+xml", "svg"),
        ("disguised.svg", "image/png", "svg"),
        ("doc.xht", "text/plain", "xht"),
        ("feed.xml", "text/plain", "xml"),
        ("pic", "image/svg+xml", "svg+xml"),
    ] {
        let result = read(public(name, content_type).send().await.unwrap()).await;
        assert_eq!(
            result,
            (
                400,
                json!({"code": 130, "error": format!("File upload of extension {ext} is disabled.")})
            ),
            "{name} {content_type}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_are_refused_as_they_stream_and_leave_nothing() {
    const MAX: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), MAX).await;

    // Without a Content-Length, the body is refused once it passes the
    // limit: 413 for a plain upload, Parse's 130 for a stream-mode one.
    assert_eq!(chunked_upload(&server, "big.bin", 48, 64 * 1024).await, 413);
    let chunks = (0..48).map(|_| vec![5u8; 64 * 1024]);
    let result = send_chunked(
        &server,
        "big.bin",
        "X-Parse-Upload-Mode: stream\r\n",
        chunks,
    )
    .await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 130, "error": format!("File size exceeds maximum allowed: {MAX} bytes.")})
        )
    );
    assert_eq!(stored_files(dir.path()), Vec::<std::path::PathBuf>::new());

    // A refused upload's body is read through, so the client gets the
    // answer rather than a reset connection.
    let result = read(
        server
            .request(Method::POST, "files/big.svg")
            .header(CONTENT_TYPE, "image/svg+xml")
            .body(vec![b' '; MAX - 1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        result,
        (
            400,
            json!({"code": 130, "error": "File upload of extension svg is disabled."})
        )
    );
    assert_eq!(stored_files(dir.path()), Vec::<std::path::PathBuf>::new());

    // Exactly the limit is fine.
    created(
        master_upload(&server, "full.bin", None, vec![1u8; MAX]),
        &server,
        "full.bin",
    )
    .await;
    assert_eq!(
        stored_files(dir.path()).len(),
        2,
        "the file and its sidecar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_to_disk_and_an_aborted_one_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 64 * 1024 * 1024).await;
    let authority = server.base.trim_start_matches("http://");
    let (host, mount) = authority.split_at(authority.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let total = 32 * 1024 * 1024;
    let head = format!(
        "POST {mount}/files/aborted.bin HTTP/1.1\r\nHost: {host}\r\nX-Parse-Application-Id: {APP_ID}\r\n\
         X-Parse-Master-Key: {MASTER_KEY}\r\nContent-Length: {total}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A quarter of the file: its bytes reach the disk while the rest has
    // not been sent, so the server is not holding the file until its end.
    let sent = total / 4;
    stream.write_all(&vec![3u8; sent]).await.unwrap();
    let written_so_far = || {
        stored_files(dir.path())
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while written_so_far() < (sent / 2) as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload's bytes never reached the disk before its end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The client goes away: nothing of the upload stays.
    drop(stream);
    while !stored_files(dir.path()).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an aborted upload left {:?}",
            stored_files(dir.path())
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_round_trip() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 32 * 1024 * 1024).await;
    let mut bytes = vec![0u8; 20 * 1024 * 1024];
    rand::rng().fill(&mut bytes[..]);
    let (_, url) = created(
        master_upload(
            &server,
            "big.bin",
            Some("application/octet-stream"),
            bytes.clone(),
        ),
        &server,
        "big.bin",
    )
    .await;
    let response = download(&server, &url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(bytes.len() as u64));
    let got = response.bytes().await.unwrap();
    assert_eq!(got.len(), bytes.len());
    assert_eq!(sha256(&got), sha256(&bytes));

    let head = server.client.head(&url).send().await.unwrap();
    assert_eq!(header(&head, "content-length"), Some("20971520"));
    let range = server
        .client
        .get(&url)
        .header("Range", "bytes=10000000-10000099")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(
        header(&range, "content-range"),
        Some("bytes 10000000-10000099/20971520")
    );
    assert_eq!(
        range.bytes().await.unwrap().to_vec(),
        bytes[10_000_000..10_000_100].to_vec()
    );

    // The SDK's stream mode, sent in chunks without a length.
    let chunks = bytes.chunks(1024 * 1024).map(<[u8]>::to_vec);
    let headers = "X-Parse-Upload-Mode: stream\r\nContent-Type: application/octet-stream\r\n";
    let (status, body) = send_chunked(&server, "streamed.bin", headers, chunks).await;
    assert_eq!(status, 201, "{body}");
    let url = body["url"].as_str().unwrap();
    let got = download(&server, url).await.bytes().await.unwrap();
    assert_eq!(sha256(&got), sha256(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_start_at_the_public_server_url() {
    let server = TestServer::start_with(|c| {
        c.public_server_url = Some("https://files.example.com/api/".into());
    })
    .await;
    let response = master_upload(&server, "a.txt", Some("text/plain"), "public")
        .send()
        .await
        .unwrap();
    let location = header(&response, "location").map(str::to_owned);
    let (status, body) = read(response).await;
    assert_eq!(status, 201, "{body}");
    let name = body["name"].as_str().unwrap();
    let url = format!("https://files.example.com/api/files/{APP_ID}/{name}");
    assert_eq!(body["url"], json!(url));
    assert_eq!(location.as_deref(), Some(url.as_str()));

    let (status, object) = server
        .post(
            "classes/Doc",
            json!({"file": {"__type": "File", "name": name}}),
        )
        .await;
    assert_eq!(status, 201, "{object}");
    let id = object["objectId"].as_str().unwrap();
    let (_, read_back) = server.get(&format!("classes/Doc/{id}")).await;
    assert_eq!(read_back["file"]["url"], json!(url));
    let (_, found) = server.get("classes/Doc").await;
    assert_eq!(found["results"][0]["file"]["url"], json!(url));

    // The file is still served where the server listens.
    let here = server.url(&format!("files/{APP_ID}/{name}"));
    assert_eq!(
        download(&server, &here).await.text().await.unwrap(),
        "public"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_can_live_in_an_s3_bucket() {
    let moto = tokio::task::spawn_blocking(oxbase_test_support::MotoServer::start)
        .await
        .unwrap();
    moto.create_bucket("parse-files");
    let server = TestServer::start_with(|c| {
        c.update_section(|files: &mut FilesConfig| {
            files.storage = FileStorageKind::S3;
            files.s3 = S3Settings {
                bucket: Some("parse-files".into()),
                region: Some("us-east-1".into()),
                endpoint: Some(moto.url.clone()),
                path_style: true,
                prefix: Some("app".into()),
                access_key_id: Some("test".into()),
                secret_access_key: Some(Secret::new("test")),
                session_token: None,
            };
        })
    })
    .await;
    let (name, url) = created(
        master_upload(&server, "hello.txt", Some("text/plain"), "Hello, S3!"),
        &server,
        "hello.txt",
    )
    .await;
    let listing = moto.send("GET", "/parse-files?list-type=2");
    assert!(
        listing.contains(&format!("<Key>app/{name}</Key>")),
        "{listing}"
    );

    let response = download(&server, &url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some("text/plain"));
    assert_eq!(response.text().await.unwrap(), "Hello, S3!");
    let range = server
        .client
        .get(&url)
        .header("Range", "bytes=7-8")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.text().await.unwrap(), "S3");

    // The JS SDK's form, with metadata.
    let (with_metadata, _) = created(
        server
            .client
            .post(server.url("files/note.txt"))
            .header(CONTENT_TYPE, "text/plain")
            .body(
                json!({
                    "_ApplicationId": APP_ID, "_MasterKey": MASTER_KEY,
                    "base64": b64(b"hi"), "_ContentType": "text/plain",
                    "fileData": {"metadata": {"owner": "Zoë"}, "tags": {"kind": "note"}}
                })
                .to_string(),
            ),
        &server,
        "note.txt",
    )
    .await;
    let metadata = download(
        &server,
        &server.url(&format!("files/{APP_ID}/metadata/{with_metadata}")),
    )
    .await;
    assert_eq!(
        metadata.json::<Value>().await.unwrap(),
        json!({"metadata": {"owner": "Zoë"}})
    );

    let deleted = delete_file(&server, &name).await;
    assert_eq!(deleted, (200, json!({})));
    assert_eq!(download(&server, &url).await.status(), 404);
    let again = delete_file(&server, &name).await;
    assert_eq!(again, (400, json!({"code": 153, "error": "FileNotFound"})));
}
