//! `[files]`: who may upload files, and where they are kept.

use std::path::PathBuf;

use oxbase_kit::{Secret, Section};
pub use oxbase_proto::{RateLimitZone, RequestMethods};
use serde::{Deserialize, Serialize};

/// Who may upload files, as Parse Server's `fileUpload` option.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Where the local file storage keeps files; empty means
    /// `<data_dir>/files`.
    pub dir: Option<PathBuf>,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: usize,
    /// Uploads by requests without a session token.
    pub enable_for_public: bool,
    /// Uploads by anonymous users (signed in through `authData.anonymous`).
    pub enable_for_anonymous_user: bool,
    /// Uploads by signed-in users.
    pub enable_for_authenticated_user: bool,
    /// Regexes a file's extension must match; Parse Server 9's default
    /// refuses the HTML, SVG and XML families, which a browser would run
    /// script in from the file's URL.
    pub file_extensions: Vec<String>,
    /// Where files are kept: `local` (in `dir`), `s3` or `gridfs`.
    pub storage: FileStorageKind,
    /// `[files.s3]`: the bucket, when `storage = "s3"`.
    pub s3: S3Settings,
    /// `[files.gridfs]`: the database, when `storage = "gridfs"`.
    pub gridfs: GridFsSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStorageKind {
    #[default]
    Local,
    S3,
    #[serde(alias = "gridFS")]
    GridFs,
}

/// An S3 bucket, or one of an S3-compatible server. Unset settings come
/// from the usual AWS variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, ...); without keys there either, the instance's or
/// container's role is used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: Option<String>,
    pub region: Option<String>,
    /// The server's URL, for S3-compatible servers (MinIO, Ceph, R2...);
    /// `http://` ones are allowed.
    pub endpoint: Option<String>,
    /// Requests name the bucket in the path (`{endpoint}/{bucket}/{key}`),
    /// as most S3-compatible servers want, rather than in the host
    /// (`{bucket}.s3.{region}.amazonaws.com`). With `endpoint` and without
    /// this, `endpoint` must be the bucket's own URL.
    pub path_style: bool,
    /// Prepended to every file's key: `{prefix}/{name}`.
    pub prefix: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

/// Files in MongoDB's GridFS, as Parse Server's default files adapter
/// (`GridFSBucketAdapter`) keeps them, in the bucket `fs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GridFsSettings {
    /// The MongoDB URI; by default `database_uri`, when that is a
    /// MongoDB one. The database is the URI's (`test` without one), as
    /// Parse Server's.
    pub uri: Option<Secret>,
    /// Parse Server's `encryptionKey`, when its files were stored
    /// encrypted: such files cannot be read or written yet, and saying so
    /// here makes them fail with that reason rather than serve ciphertext.
    #[serde(alias = "encryptionKey")]
    pub encryption_key: Option<Secret>,
}

/// Parse Server 9's default `fileUpload.fileExtensions`: anything but
/// `html`, `htm`, `shtml`, `xhtml`, `xht`, `svg`, `svgz`, `xml`, `xsl`,
/// `xslt`, `xsd`, `rng`, `rdf`, `owl`, `mathml` and their `+xml` forms.
const PARSE_FILE_EXTENSIONS: &str = r"^(?!([xXsS]?[hH][tT][mM][lL]?(\+[xX][mM][lL])?|[xX][hH][tT]|[sS][vV][gG]([zZ]|\+[xX][mM][lL])?|[xX][mM][lL]|[xX][sS][lL][tT]?(\+[xX][mM][lL])?|[xX][sS][dD]|[rR][nN][gG]|[rR][dD][fF](\+[xX][mM][lL])?|[oO][wW][lL]|[mM][aA][tT][hH][mM][lL](\+[xX][mM][lL])?)$)";

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_upload_bytes: 20 * 1024 * 1024,
            enable_for_public: false,
            enable_for_anonymous_user: false,
            enable_for_authenticated_user: true,
            file_extensions: vec![PARSE_FILE_EXTENSIONS.into()],
            storage: FileStorageKind::Local,
            s3: S3Settings::default(),
            gridfs: GridFsSettings::default(),
        }
    }
}

impl Section for FilesConfig {
    const KEY: &'static str = "files";

    /// What can be checked without the rest of the config: the S3 client
    /// is built (no request is made), a GridFS URI parsed.
    fn validate(&self) -> Result<(), String> {
        match self.storage {
            FileStorageKind::Local => Ok(()),
            FileStorageKind::S3 => crate::files::S3FileStorage::new(&self.s3)
                .map(drop)
                .map_err(|err| format!("s3: {err}")),
            FileStorageKind::GridFs => match &self.gridfs.uri {
                Some(uri) => crate::files::GridFsFileStorage::check_uri(uri.expose())
                    .map_err(|err| format!("gridfs.uri: {err}")),
                None => Ok(()),
            },
        }
    }
}

/// `[rate_limit]`: Parse Server's `rateLimit` option, a list of rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Where the counts are kept: `memory` (each process its own) or
    /// `nats` (one count across every API process, in a JetStream
    /// key-value bucket).
    pub store: RateLimitStore,
    pub rules: Vec<RateLimitRule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitStore {
    #[default]
    Memory,
    Nats,
}

/// One rule, as an entry of Parse's `rateLimit`. Parse's camelCase names
/// are accepted too, so its JSON options can be pasted as they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// A path-to-regexp (v8) pattern matched against the path below the
    /// mount path: `/classes/:className`, `/functions/*name`, `/*path`.
    #[serde(alias = "requestPath")]
    pub request_path: String,
    /// The window, in milliseconds.
    #[serde(alias = "requestTimeWindow")]
    pub request_time_window: u64,
    /// Requests allowed per window; the next ones are refused.
    #[serde(alias = "requestCount")]
    pub request_count: u64,
    #[serde(alias = "errorResponseMessage", default = "default_rate_limit_message")]
    pub error_response_message: String,
    /// The methods the rule counts (`["POST", "PUT"]`), or a regex over
    /// the method (`"^(POST|PUT)$"`); unset, every method.
    #[serde(alias = "requestMethods", default)]
    pub request_methods: Option<RequestMethods>,
    /// Count master-key requests too.
    #[serde(alias = "includeMasterKey", default)]
    pub include_master_key: bool,
    /// Count requests from 127.0.0.1 too (Parse skips them: its Cloud
    /// Code calls the API from there).
    #[serde(alias = "includeInternalRequests", default)]
    pub include_internal_requests: bool,
    #[serde(default)]
    pub zone: RateLimitZone,
}

fn default_rate_limit_message() -> String {
    "Too many requests.".into()
}

impl Section for RateLimitConfig {
    const KEY: &'static str = "rate_limit";
    const ALIASES: &'static [(&'static str, &'static str)] =
        &[("PARSE_SERVER_RATE_LIMIT", "rules")];

    fn validate(&self) -> Result<(), String> {
        self.rules
            .iter()
            .try_for_each(|rule| crate::rate_limit::Rule::compile(rule).map(drop))
    }
}

/// `[idempotency]`: Parse Server's `idempotencyOptions`. A request that
/// repeats the `X-Parse-Request-Id` of one made within `ttl_secs` is
/// refused with 159 and runs nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// Regexes matched from the start of the path below the mount path,
    /// without its leading slash: `functions/.*`, `classes/.*`. Empty
    /// turns the feature off.
    pub paths: Vec<String>,
    /// How long a request id is remembered, in seconds.
    pub ttl_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            ttl_secs: 300,
        }
    }
}

impl Section for IdempotencyConfig {
    const KEY: &'static str = "idempotency";
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("PARSE_SERVER_EXPERIMENTAL_IDEMPOTENCY_PATHS", "paths"),
        ("PARSE_SERVER_EXPERIMENTAL_IDEMPOTENCY_TTL", "ttl_secs"),
    ];

    fn validate(&self) -> Result<(), String> {
        if self.ttl_secs == 0 {
            return Err("ttl_secs must be greater than 0".into());
        }
        crate::idempotency::compile_paths(&self.paths).map(drop)
    }
}

/// `[pages]`: Parse Server's `pages` options for the pages under
/// `<mount>/apps/` (`email.custom_urls` is its `customUrls`). Without
/// `path`, oxbase serves its own pages, in English.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagesConfig {
    /// Parse's `pagesPath`: a directory holding the pages as Parse names
    /// them (`password_reset.html`, ...), Mustache templates as Parse
    /// renders them, and whatever else they load (served under `/apps/`).
    #[serde(alias = "pagesPath")]
    pub path: Option<PathBuf>,
    /// Parse's `enableLocalization`: a page is looked for in `<path>/<locale>/`,
    /// then `<path>/<language>/`, then `<path>/`, by the request's `locale`.
    #[serde(alias = "enableLocalization")]
    pub enable_localization: bool,
    /// Parse's `localizationJsonPath`: translations in i18next's layout
    /// (`{"de": {"translation": {"key": "text"}}}`), whose keys become
    /// placeholders.
    #[serde(alias = "localizationJsonPath")]
    pub localization_json_path: Option<PathBuf>,
    /// The translation used when the request's locale has none.
    #[serde(alias = "localizationFallbackLocale")]
    pub localization_fallback_locale: String,
    /// Fixed placeholders for every page (Parse's `placeholders` object).
    pub placeholders: std::collections::BTreeMap<String, String>,
    /// Redirect to every page, GET requests included.
    #[serde(alias = "forceRedirect")]
    pub force_redirect: bool,
    /// URI-encode the `x-parse-page-param-*` headers.
    #[serde(alias = "encodePageParamHeaders")]
    pub encode_page_param_headers: bool,
}

impl Default for PagesConfig {
    fn default() -> Self {
        Self {
            path: None,
            enable_localization: false,
            localization_json_path: None,
            localization_fallback_locale: "en".into(),
            placeholders: std::collections::BTreeMap::new(),
            force_redirect: false,
            encode_page_param_headers: false,
        }
    }
}

impl Section for PagesConfig {
    const KEY: &'static str = "pages";
    const ALIASES: &'static [(&'static str, &'static str)] = &[
        ("PARSE_SERVER_PAGES_PAGES_PATH", "path"),
        (
            "PARSE_SERVER_PAGES_ENABLE_LOCALIZATION",
            "enable_localization",
        ),
        (
            "PARSE_SERVER_PAGES_LOCALIZATION_JSON_PATH",
            "localization_json_path",
        ),
        (
            "PARSE_SERVER_PAGES_LOCALIZATION_FALLBACK_LOCALE",
            "localization_fallback_locale",
        ),
        ("PARSE_SERVER_PAGES_PLACEHOLDERS", "placeholders"),
        ("PARSE_SERVER_PAGES_FORCE_REDIRECT", "force_redirect"),
        (
            "PARSE_SERVER_PAGES_ENCODE_PAGE_PARAM_HEADERS",
            "encode_page_param_headers",
        ),
    ];

    fn validate(&self) -> Result<(), String> {
        crate::pages::Templates::load(self).map(drop)
    }
}
