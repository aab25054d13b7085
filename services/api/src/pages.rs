//! Parse Server 9's public pages under `<mount>/apps/` (its `PagesRouter`),
//! which the mailed links open in a browser: no keys, HTML or redirects.
//!
//! - `GET /apps/<appId>/verify_email?token=`: verifies the email.
//! - `GET /apps/<appId>/request_password_reset?token=` and
//!   `GET /apps/choose_password?appId=&token=`: the form for a new password.
//! - `POST /apps/<appId>/request_password_reset` (`token`, `new_password`):
//!   sets it; with `X-Requested-With: XMLHttpRequest` it answers JSON.
//! - `POST /apps/<appId>/resend_verification_email` (`username` or `token`).
//! - `GET /apps/<page>.html`: the result pages, at Parse's file names.
//!
//! As in Parse, a GET answers the page itself and a POST redirects (303) to
//! it, with the page's parameters in the query and in
//! `x-parse-page-param-*` headers; a page with a URL in `custom_urls` (Parse's
//! `pages.customUrls`) redirects there instead.
//!
//! The pages are oxbase's own, minimal and unstyled, unless `[pages] path`
//! names a directory of the app's: then they are its files, rendered as
//! Mustache templates as Parse renders them (`mustache.rs`), localized by
//! subdirectory and by a JSON of translations, and everything else in the
//! directory is served under `/apps/` too.

mod mustache;

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use oxbase_objects::ResetOutcome;
use serde_json::{Map, Value, json};

use crate::App;
use crate::config::PagesConfig;
use crate::mail::Mailer;
use crate::request::ParseRequest;

/// The app's own pages (`[pages]`), loaded at start.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    /// The pages' directory, resolved.
    root: Option<PathBuf>,
    /// The JSON of translations, when localization uses one.
    translations: Option<Value>,
    config: PagesConfig,
}

impl Templates {
    /// Parse refuses to start when the translations cannot be read; so
    /// does oxbase, and when the pages' directory is not one.
    pub(crate) fn load(config: &PagesConfig) -> Result<Self, String> {
        let root = match &config.path {
            Some(path) => Some(
                path.canonicalize()
                    .ok()
                    .filter(|root| root.is_dir())
                    .ok_or_else(|| format!("pages.path {} is not a directory", path.display()))?,
            ),
            None => None,
        };
        let translations = match &config.localization_json_path {
            Some(path) if config.enable_localization => Some(
                std::fs::read(path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .filter(Value::is_object)
                    .ok_or_else(|| {
                        format!(
                            "pages.localization_json_path {}: failed to load JSON file",
                            path.display()
                        )
                    })?,
            ),
            _ => None,
        };
        Ok(Self {
            root,
            translations,
            config: config.clone(),
        })
    }

    /// The file `relative` (a path below `/apps/`) in the pages'
    /// directory; `None` outside it, as Parse refuses paths that climb out.
    fn file(&self, relative: &str) -> Option<PathBuf> {
        let root = self.root.as_ref()?;
        let relative = Path::new(relative);
        if !relative
            .components()
            .all(|part| matches!(part, Component::Normal(_)))
        {
            return None;
        }
        let path = root.join(relative).canonicalize().ok()?;
        path.starts_with(root).then_some(path)
    }

    /// Where a page's file is for `locale`: in the locale's directory, the
    /// language's, or the base one, with the subdirectory it is in.
    fn localized(&self, file: &str, locale: Option<&str>) -> (Option<PathBuf>, Option<String>) {
        if let Some(locale) = locale.filter(|_| self.config.enable_localization) {
            let language = locale.split('-').next().unwrap_or(locale);
            for subdir in [locale, language] {
                if let Some(path) = self.file(&format!("{subdir}/{file}")) {
                    return (Some(path), Some(subdir.to_owned()));
                }
            }
        }
        (self.file(file), None)
    }

    /// The translation for `locale` (or its language, or the fallback
    /// locale), its texts rendered with `params` as Parse renders them.
    fn translated(&self, locale: Option<&str>, view: &Value) -> Map<String, Value> {
        let Some(translations) = &self.translations else {
            return Map::new();
        };
        let fallback = self.config.localization_fallback_locale.as_str();
        let locale = locale.unwrap_or(fallback);
        let language = locale.split('-').next().unwrap_or(locale);
        let translation = [locale, language, fallback]
            .iter()
            .find_map(|key| translations.get(*key))
            .and_then(|resource| resource.get("translation"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let rendered = mustache::render(&translation.to_string(), view);
        match serde_json::from_str(&rendered) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// A page file rendered with the page's parameters, the configured
    /// placeholders and the translation; `None` when it cannot be read.
    async fn render(&self, path: &Path, params: &Params) -> Option<String> {
        let template = tokio::fs::read_to_string(path).await.ok()?;
        let mut view: Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let locale = params
            .iter()
            .find(|(k, _)| k == "locale")
            .map(|(_, v)| v.as_str());
        let translated = self.translated(locale, &Value::Object(view.clone()));
        for (key, value) in &self.config.placeholders {
            view.insert(key.clone(), Value::from(value.as_str()));
        }
        view.extend(translated);
        Some(mustache::render(&template, &Value::Object(view)))
    }
}

/// What a file other than a page is served as.
fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    PasswordReset,
    PasswordResetSuccess,
    PasswordResetLinkInvalid,
    EmailVerificationSuccess,
    EmailVerificationSendFail,
    EmailVerificationSendSuccess,
    EmailVerificationLinkInvalid,
    EmailVerificationLinkExpired,
}

const PAGES: [Page; 8] = [
    Page::PasswordReset,
    Page::PasswordResetSuccess,
    Page::PasswordResetLinkInvalid,
    Page::EmailVerificationSuccess,
    Page::EmailVerificationSendFail,
    Page::EmailVerificationSendSuccess,
    Page::EmailVerificationLinkInvalid,
    Page::EmailVerificationLinkExpired,
];

impl Page {
    /// Parse's page id, the key of `pages.customUrls`.
    fn id(self) -> &'static str {
        match self {
            Page::PasswordReset => "passwordReset",
            Page::PasswordResetSuccess => "passwordResetSuccess",
            Page::PasswordResetLinkInvalid => "passwordResetLinkInvalid",
            Page::EmailVerificationSuccess => "emailVerificationSuccess",
            Page::EmailVerificationSendFail => "emailVerificationSendFail",
            Page::EmailVerificationSendSuccess => "emailVerificationSendSuccess",
            Page::EmailVerificationLinkInvalid => "emailVerificationLinkInvalid",
            Page::EmailVerificationLinkExpired => "emailVerificationLinkExpired",
        }
    }

    /// Parse's file name, the page's path under `/apps/`.
    fn file(self) -> &'static str {
        match self {
            Page::PasswordReset => "password_reset.html",
            Page::PasswordResetSuccess => "password_reset_success.html",
            Page::PasswordResetLinkInvalid => "password_reset_link_invalid.html",
            Page::EmailVerificationSuccess => "email_verification_success.html",
            Page::EmailVerificationSendFail => "email_verification_send_fail.html",
            Page::EmailVerificationSendSuccess => "email_verification_send_success.html",
            Page::EmailVerificationLinkInvalid => "email_verification_link_invalid.html",
            Page::EmailVerificationLinkExpired => "email_verification_link_expired.html",
        }
    }

    fn text(self) -> (&'static str, &'static str) {
        match self {
            Page::PasswordReset => ("New password", "Choose a new password."),
            Page::PasswordResetSuccess => ("Password changed", "Your password was changed."),
            Page::PasswordResetLinkInvalid => (
                "Invalid link",
                "This password reset link is invalid or was already used.",
            ),
            Page::EmailVerificationSuccess => ("Email verified", "Your email is verified."),
            Page::EmailVerificationSendFail => (
                "Not sent",
                "No new link could be sent: the account is unknown or already verified.",
            ),
            Page::EmailVerificationSendSuccess => (
                "Link sent",
                "If the account exists, a new verification link is on its way.",
            ),
            Page::EmailVerificationLinkInvalid => (
                "Invalid link",
                "This verification link is invalid or was already used.",
            ),
            Page::EmailVerificationLinkExpired => {
                ("Expired link", "This verification link has expired.")
            }
        }
    }
}

/// A page's parameters, in Parse's order.
type Params = Vec<(String, String)>;

fn set(params: &mut Params, key: &str, value: Option<&str>) {
    let Some(value) = value else {
        return;
    };
    match params.iter_mut().find(|(k, _)| k == key) {
        Some((_, slot)) => *slot = value.to_owned(),
        None => params.push((key.to_owned(), value.to_owned())),
    }
}

fn get<'a>(params: &'a Params, key: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

fn html(page: Page, params: &Params) -> String {
    let (title, message) = page.text();
    let app_name = mustache::escape_html(get(params, "appName"));
    let mut body = format!("<h1>{app_name}</h1>\n<p>{message}</p>\n");
    let error = get(params, "error");
    if !error.is_empty() {
        body.push_str(&format!(
            "<p role=\"alert\">{}</p>\n",
            mustache::escape_html(error)
        ));
    }
    let action = |route: &str| {
        mustache::escape_html(&format!(
            "{}/apps/{}/{route}",
            get(params, "publicServerUrl"),
            crate::mail::encode_component(get(params, "appId"))
        ))
    };
    let hidden = |name: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            mustache::escape_html(get(params, name))
        )
    };
    match page {
        Page::PasswordReset => {
            body.push_str(&format!(
                "<form method=\"POST\" action=\"{}\">\n{}{}{}<label>New password <input type=\"password\" name=\"new_password\" autocomplete=\"new-password\" required></label>\n<button type=\"submit\">Change password</button>\n</form>\n",
                action("request_password_reset"),
                hidden("token"),
                hidden("username"),
                hidden("locale"),
            ));
        }
        Page::EmailVerificationLinkExpired => {
            body.push_str(&format!(
                "<form method=\"POST\" action=\"{}\">\n{}{}<button type=\"submit\">Send a new link</button>\n</form>\n",
                action("resend_verification_email"),
                hidden("token"),
                hidden("locale"),
            ));
        }
        _ => {}
    }
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

fn html_response(text: String, params: &Params, encode: bool) -> Response {
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    with_param_headers(response, params, encode)
}

/// The `x-parse-page-param-*` headers, so a program can read a page's
/// parameters without parsing its HTML; URI-encoded with `encode`.
fn with_param_headers(mut response: Response, params: &Params, encode: bool) -> Response {
    for (key, value) in params {
        let name = format!("x-parse-page-param-{}", key.to_ascii_lowercase());
        let value = if encode {
            crate::mail::encode_component(value)
        } else {
            value.clone()
        };
        let clean: String = value.chars().filter(|c| !c.is_control()).collect();
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name),
            HeaderValue::from_str(&clean),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn redirect(url: &str, params: &Params, encode: bool) -> Response {
    let mut location = url.to_owned();
    if !params.is_empty() {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        location.push(if url.contains('?') { '&' } else { '?' });
        location.push_str(&query);
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    with_param_headers(response, params, encode)
}

fn not_found() -> Response {
    text_response(StatusCode::NOT_FOUND, "Not found.")
}

fn text_response(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Another app's pages: Parse's bare 403.
fn unauthorized() -> Response {
    json_response(StatusCode::FORBIDDEN, &json!({"error": "unauthorized"}))
}

/// A request's fields: the query, then the form or JSON body.
struct Fields {
    query: Params,
    body: Params,
    xhr: bool,
    /// The `x-parse-page-param-locale` header, Parse's last place to look
    /// for the locale.
    locale_header: Option<String>,
}

impl Fields {
    fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn body(&self, key: &str) -> Option<&str> {
        self.body
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Parse's locale parameter, when it has a locale's shape.
    fn locale(&self) -> Option<&str> {
        let locale = self
            .query("locale")
            .or_else(|| self.body("locale"))
            .or(self.locale_header.as_deref())?;
        let mut parts = locale.split('-');
        let language = parts.next()?;
        let valid = (2..=3).contains(&language.len())
            && language.chars().all(|c| c.is_ascii_alphabetic())
            && parts.all(|part| {
                (2..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric())
            });
        valid.then_some(locale)
    }
}

fn pairs(text: &[u8]) -> Params {
    form_urlencoded::parse(text).into_owned().collect()
}

/// A JSON body's string fields (the SDKs' and scripts' form).
fn json_pairs(bytes: &[u8]) -> Params {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl App {
    /// Whether a path is one of the pages, served without keys.
    pub(crate) fn is_page(&self, path: &str) -> bool {
        path.strip_prefix(self.mount.as_str())
            .and_then(|rest| rest.strip_prefix("/apps"))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Serves a page request (see the module's documentation).
    pub(crate) async fn page(&self, ip: std::net::IpAddr, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let rest = parts
            .uri
            .path()
            .strip_prefix(self.mount.as_str())
            .and_then(|rest| rest.strip_prefix("/apps"))
            .unwrap_or_default()
            .trim_matches('/')
            .to_owned();
        let Some(segments) = rest
            .split('/')
            .map(crate::request::percent_decode)
            .collect::<Option<Vec<String>>>()
        else {
            return not_found();
        };
        let query = pairs(parts.uri.query().unwrap_or_default().as_bytes());
        let body = if parts.method == Method::POST {
            let Ok(bytes) = axum::body::to_bytes(body, self.objects.limits().max_body_bytes).await
            else {
                return text_response(StatusCode::PAYLOAD_TOO_LARGE, "Request entity too large.");
            };
            let is_json = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_json {
                json_pairs(&bytes)
            } else {
                pairs(&bytes)
            }
        } else {
            Vec::new()
        };
        let xhr = parts
            .headers
            .get("x-requested-with")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"));
        let locale_header = parts
            .headers
            .get("x-parse-page-param-locale")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let fields = Fields {
            query,
            body,
            xhr,
            locale_header,
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        // Parse's pages need its app name and public URL; without them
        // (no `[email]`) every page is "Not found.", as there.
        let Some(mailer) = self.mailer.clone() else {
            return not_found();
        };
        let method = parts.method;
        let pages = Pages {
            app: self,
            mailer,
            fields,
            headers: parts.headers,
            ip,
        };
        match (&method, segments.as_slice()) {
            (&Method::GET, [app_id, "verify_email"]) => pages.verify_email(app_id).await,
            (&Method::GET, [app_id, "request_password_reset"]) => {
                pages.password_reset_form(app_id).await
            }
            (&Method::POST, [app_id, "request_password_reset"]) => {
                pages.reset_password(app_id).await
            }
            (&Method::POST, [app_id, "resend_verification_email"]) => pages.resend(app_id).await,
            (&Method::GET, ["choose_password"]) => pages.choose_password().await,
            (&Method::GET | &Method::HEAD, _) if self.pages.root.is_some() => {
                pages.static_file(&segments.join("/")).await
            }
            (&Method::GET | &Method::HEAD, [file]) => {
                match PAGES.iter().find(|p| p.file() == *file) {
                    Some(page) => pages.show(*page, Vec::new(), false).await,
                    None => not_found(),
                }
            }
            _ => not_found(),
        }
    }
}

struct Pages<'a> {
    app: &'a App,
    mailer: Mailer,
    fields: Fields,
    /// The browser's headers and address, which hooks are shown.
    headers: axum::http::HeaderMap,
    ip: std::net::IpAddr,
}

impl Pages<'_> {
    fn is_our_app(&self, app_id: &str) -> bool {
        app_id == self.app.app_id
    }

    /// The parameters every page gets: the app's, and the request's
    /// locale.
    fn add_app_params(&self, params: &mut Params) {
        set(params, "appId", Some(&self.app.app_id));
        set(params, "appName", Some(self.mailer.app_name()));
        set(params, "publicServerUrl", Some(self.mailer.public_url()));
        set(params, "locale", self.fields.locale());
    }

    /// Parse's `goToPage`: the page itself, or a redirect to it (to its
    /// custom URL when there is one), with `params` and the app's.
    async fn show(&self, page: Page, mut params: Params, redirect_to: bool) -> Response {
        self.add_app_params(&mut params);
        let email = &self.app.objects.settings().email;
        let templates = &self.app.pages;
        let encode = templates.config.encode_page_param_headers;
        if let Some(url) = email.custom_urls.get(page.id()) {
            return redirect(url, &params, encode);
        }
        // The app's own file for the locale, when it has pages.
        let own = templates
            .root
            .is_some()
            .then(|| templates.localized(page.file(), self.fields.locale()));
        if redirect_to || templates.config.force_redirect {
            let file = match own.as_ref().and_then(|(_, subdir)| subdir.as_ref()) {
                Some(subdir) => format!("{subdir}/{}", page.file()),
                None => page.file().to_owned(),
            };
            let url = format!("{}/apps/{file}", self.mailer.public_url());
            return redirect(&url, &params, encode);
        }
        let text = match own {
            None => Some(html(page, &params)),
            Some((Some(path), _)) => templates.render(&path, &params).await,
            Some((None, _)) => None,
        };
        text.map_or_else(not_found, |text| html_response(text, &params, encode))
    }

    /// Parse's static route: a file of the app's pages' directory, a page
    /// (`.html`) rendered with the app's parameters and the request's
    /// locale.
    async fn static_file(&self, relative: &str) -> Response {
        let templates = &self.app.pages;
        let Some(path) = templates.file(relative) else {
            return not_found();
        };
        if path.extension().is_some_and(|e| e == "html") {
            let mut params = Vec::new();
            self.add_app_params(&mut params);
            return match templates.render(&path, &params).await {
                Some(text) => {
                    html_response(text, &params, templates.config.encode_page_param_headers)
                }
                None => not_found(),
            };
        }
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let mut response = Response::new(Body::from(bytes));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
                response
            }
            Err(_) => not_found(),
        }
    }

    async fn verify_email(&self, app_id: &str) -> Response {
        if !self.is_our_app(app_id) {
            return unauthorized();
        }
        let Some(token) = self.fields.query("token") else {
            return self
                .show(Page::EmailVerificationLinkInvalid, Vec::new(), false)
                .await;
        };
        let verified =
            match ParseRequest::from_http(Method::GET, "", None, &self.headers, &[], self.ip) {
                Ok(req) => self.app.verify_email(&req, token).await,
                Err(err) => Err(err),
            };
        match verified {
            Ok(true) => {
                self.show(Page::EmailVerificationSuccess, Vec::new(), false)
                    .await
            }
            Ok(false) => {
                self.show(Page::EmailVerificationLinkInvalid, Vec::new(), false)
                    .await
            }
            // As Parse: any failure, a beforeSave's refusal included, is
            // an invalid link to the browser.
            Err(err) => {
                tracing::warn!(error = %err, "an email was not verified");
                self.show(Page::EmailVerificationLinkInvalid, Vec::new(), false)
                    .await
            }
        }
    }

    /// The mailed reset link: the form, while the token is good.
    async fn password_reset_form(&self, app_id: &str) -> Response {
        if !self.is_our_app(app_id) {
            return unauthorized();
        }
        let Some(token) = self.fields.query("token") else {
            return self
                .show(Page::PasswordResetLinkInvalid, Vec::new(), false)
                .await;
        };
        match self.app.objects.check_reset_token(token).await {
            Ok(Ok(_)) => {
                let params = vec![("token".to_owned(), token.to_owned())];
                self.show(Page::PasswordReset, params, false).await
            }
            Ok(Err(_)) => {
                self.show(Page::PasswordResetLinkInvalid, Vec::new(), false)
                    .await
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot check a password reset token");
                self.show(Page::PasswordResetLinkInvalid, Vec::new(), false)
                    .await
            }
        }
    }

    /// `GET /apps/choose_password?appId=&token=&username=`: the form, as
    /// Parse serves it, without checking the token yet.
    async fn choose_password(&self) -> Response {
        if self.fields.query("appId") != Some(self.app.app_id.as_str()) {
            return unauthorized();
        }
        let mut params = Vec::new();
        set(&mut params, "token", self.fields.query("token"));
        set(&mut params, "username", self.fields.query("username"));
        self.show(Page::PasswordReset, params, false).await
    }

    /// The form's POST: the new password, by Parse's `resetPassword`.
    async fn reset_password(&self, app_id: &str) -> Response {
        if !self.is_our_app(app_id) {
            return unauthorized();
        }
        let token = self.fields.body("token");
        let password = self.fields.body("new_password");
        let xhr = self.fields.xhr;
        let (token, password) = match (token, password) {
            (Some(token), Some(password)) => (token, password),
            _ if !xhr => {
                return self
                    .show(Page::PasswordResetLinkInvalid, Vec::new(), true)
                    .await;
            }
            (None, _) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"code": oxbase_objects::code::OTHER_CAUSE, "error": "Missing token"}),
                );
            }
            (Some(_), None) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"code": oxbase_objects::code::PASSWORD_MISSING, "error": "Missing password"}),
                );
            }
        };
        let outcome = match self
            .app
            .objects
            .reset_password_by_token(token, password)
            .await
        {
            Ok(outcome) => outcome,
            Err(err) => ResetOutcome::Refused(match err {
                oxbase_objects::ParseError::Parse { message, .. } => message,
                other => other.to_string(),
            }),
        };
        match (outcome, xhr) {
            (ResetOutcome::Done, true) => {
                json_response(StatusCode::OK, &json!("Password successfully reset"))
            }
            (ResetOutcome::Refused(message), true) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": oxbase_objects::code::OTHER_CAUSE, "error": message}),
            ),
            (ResetOutcome::Done, false) => {
                self.show(Page::PasswordResetSuccess, Vec::new(), false)
                    .await
            }
            (ResetOutcome::Refused(message), false) => {
                let params = vec![
                    ("token".to_owned(), token.to_owned()),
                    ("appId".to_owned(), self.app.app_id.clone()),
                    ("error".to_owned(), message),
                ];
                self.show(Page::PasswordReset, params, false).await
            }
        }
    }

    /// `POST /apps/<appId>/resend_verification_email`: a new link for the
    /// user named by `username` or by an old `token`.
    async fn resend(&self, app_id: &str) -> Response {
        if !self.is_our_app(app_id) {
            return unauthorized();
        }
        let username = self.fields.body("username");
        let token = self.fields.body("token");
        if username.is_none() && token.is_none() {
            return self
                .show(Page::EmailVerificationLinkInvalid, Vec::new(), true)
                .await;
        }
        let sent = match self
            .app
            .objects
            .resend_verification_email(username, token)
            .await
        {
            Ok(Some(mail)) => {
                self.mailer.send(mail);
                true
            }
            Ok(None) => false,
            Err(err) => {
                tracing::error!(error = %err, "cannot renew an email verification token");
                false
            }
        };
        let quiet = self
            .app
            .objects
            .settings()
            .email
            .email_verify_success_on_invalid_email;
        let page = if sent || quiet {
            Page::EmailVerificationSendSuccess
        } else {
            Page::EmailVerificationSendFail
        };
        self.show(page, Vec::new(), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let params = vec![
            ("appName".to_owned(), "<App>".to_owned()),
            ("token".to_owned(), "\"><script>".to_owned()),
        ];
        let page = html(Page::PasswordReset, &params);
        assert!(page.contains("&lt;App&gt;"));
        assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;\""));
        assert!(!page.contains("<script>"));
    }

    #[test]
    fn redirects_carry_the_params_in_the_query() {
        let params = vec![
            ("appId".to_owned(), "a b".to_owned()),
            ("error".to_owned(), "x&y".to_owned()),
        ];
        let response = redirect("https://example.com/done", &params, false);
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[LOCATION],
            "https://example.com/done?appId=a+b&error=x%26y"
        );
        assert_eq!(response.headers()["x-parse-page-param-appid"], "a b");
        let encoded = redirect("https://example.com/done", &params, true);
        assert_eq!(encoded.headers()["x-parse-page-param-appid"], "a%20b");
        assert_eq!(encoded.headers()["x-parse-page-param-error"], "x%26y");
    }
}
