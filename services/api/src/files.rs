//! Files: Parse Server's Files API (`POST /files/{name}`, downloads at
//! `GET /files/{appId}/{name}`, `DELETE /files/{name}`) over a
//! [`FileStorage`], and File values: stored as their name, given their URL
//! when read, as Parse Server does (`{mount}/files/{appId}/{name}`, the
//! mount being `public_server_url` when set), so a deployment's URL can
//! change without rewriting data.

mod gridfs;
mod mime;
mod routes;
mod rules;
mod s3;
mod storage;
mod upload;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use oxbase_kit::Config;

use crate::App;
use crate::config::{FileStorageKind, FilesConfig};
use crate::request::ParseRequest;
use oxbase_store::Object;
use serde_json::Value;

pub use gridfs::GridFsFileStorage;
pub use s3::S3FileStorage;
pub use storage::{
    ByteStream, FileInfo, FileStorage, LocalFileStorage, StorageError, StorageResult, StoredFile,
};
pub(crate) use upload::UploadBody;

/// The API's file settings and storage.
pub struct Files {
    storage: Arc<dyn FileStorage>,
    config: FilesConfig,
    extensions: rules::ExtensionRules,
    /// `public_server_url` without a trailing slash: where file URLs
    /// start, whatever address a request came in at.
    public_url: Option<String>,
}

impl Files {
    /// The storage `files.storage` names: by default local, in `files.dir`
    /// (`<data_dir>/files`).
    pub fn from_config(config: &Config) -> Self {
        let files: FilesConfig = config.section();
        let storage = storage_for(config, &files).unwrap_or_else(|err| {
            // `check_files` refuses this config at startup.
            tracing::error!(error = %err, "file storage is off");
            Arc::new(Unavailable(err))
        });
        Self::new(&files, storage, config.public_server_url.as_deref())
    }

    pub fn new(
        config: &FilesConfig,
        storage: Arc<dyn FileStorage>,
        public_server_url: Option<&str>,
    ) -> Self {
        Self {
            storage,
            config: config.clone(),
            extensions: rules::ExtensionRules::new(&config.file_extensions),
            public_url: public_server_url
                .map(|url| url.trim_end_matches('/').to_owned())
                .filter(|url| !url.is_empty()),
        }
    }
}

/// Checks that the configured file storage can be set up (no request is
/// made yet), so the process refuses to start otherwise.
pub fn check_files(config: &Config) -> Result<(), String> {
    storage_for(config, &config.section()).map(drop)
}

fn storage_for(config: &Config, files: &FilesConfig) -> Result<Arc<dyn FileStorage>, String> {
    let storage: Arc<dyn FileStorage> = match files.storage {
        FileStorageKind::Local => {
            let dir = files
                .dir
                .clone()
                .filter(|dir| !dir.as_os_str().is_empty())
                .unwrap_or_else(|| config.data_dir.join("files"));
            Arc::new(LocalFileStorage::new(dir))
        }
        FileStorageKind::S3 => {
            Arc::new(S3FileStorage::new(&files.s3).map_err(|err| format!("files.s3: {err}"))?)
        }
        FileStorageKind::GridFs => {
            let uri = gridfs_uri(config, files)?;
            let encrypted = files.gridfs.encryption_key.is_some();
            Arc::new(
                GridFsFileStorage::new(&uri, encrypted)
                    .map_err(|err| format!("files.gridfs.uri: {err}"))?,
            )
        }
    };
    Ok(storage)
}

/// `files.gridfs.uri`, else `database_uri` when it is a MongoDB one.
fn gridfs_uri(config: &Config, files: &FilesConfig) -> Result<String, String> {
    if let Some(uri) = files
        .gridfs
        .uri
        .as_ref()
        .filter(|uri| !uri.expose().is_empty())
    {
        return Ok(uri.expose().to_owned());
    }
    let database = config.database_uri();
    if gridfs::is_mongodb_uri(&database) {
        return Ok(database);
    }
    Err("files.storage = \"gridfs\" needs files.gridfs.uri, or a MongoDB database_uri".into())
}

/// Storage whose settings were refused: every use fails with the reason.
struct Unavailable(String);

impl Unavailable {
    fn error(&self) -> StorageError {
        StorageError::Io(std::io::Error::other(format!(
            "file storage is not set up: {}",
            self.0
        )))
    }
}

impl FileStorage for Unavailable {
    fn put<'a>(
        &'a self,
        _: &'a str,
        _: FileInfo,
        _: ByteStream,
    ) -> BoxFuture<'a, StorageResult<u64>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, StorageResult<StoredFile>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn info<'a>(&'a self, _: &'a str) -> BoxFuture<'a, StorageResult<FileInfo>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, StorageResult<()>> {
        Box::pin(async move { Err(self.error()) })
    }
}

impl App {
    /// Where file URLs start: `public_server_url` when it is set, as
    /// Parse Server's `config.mount`, else the address the request reached
    /// and the mount path.
    pub(crate) fn files_mount_url(&self, req: &ParseRequest) -> String {
        match &self.files.public_url {
            Some(url) => url.clone(),
            None => format!("{}{}", req.origin, self.mount),
        }
    }
}

/// A file's URL: `{mount_url}/files/{appId}/{name}`, each segment of the
/// name encoded on its own so directories stay paths.
pub fn file_url(mount_url: &str, app_id: &str, name: &str) -> String {
    let encoded: Vec<String> = name.split('/').map(encode_component).collect();
    format!(
        "{mount_url}/files/{}/{}",
        encode_component(app_id),
        encoded.join("/")
    )
}

/// Adds `url` to every File value in the objects, nested ones included.
pub fn expand_urls(objects: &mut [Object], mount_url: &str, app_id: &str) {
    for object in objects {
        for value in object.values_mut() {
            expand(value, mount_url, app_id);
        }
    }
}

fn expand(value: &mut Value, mount_url: &str, app_id: &str) {
    match value {
        Value::Object(map) => {
            if map.get("__type").and_then(Value::as_str) == Some("File") {
                if let Some(name) = map.get("name").and_then(Value::as_str) {
                    let url = file_url(mount_url, app_id, name);
                    map.insert("url".into(), Value::String(url));
                }
                return;
            }
            map.values_mut().for_each(|v| expand(v, mount_url, app_id));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| expand(v, mount_url, app_id)),
        _ => {}
    }
}

/// JavaScript's `encodeURIComponent`.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbase_kit::Sections;
    use serde_json::json;

    fn load(env: &[(&str, &str)]) -> Result<Config, String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let sections = Sections::new().with::<FilesConfig>();
        Config::load_with_defaults(&sections, Config::default(), None, env, &[])
            .map_err(|err| err.to_string())
    }

    #[test]
    fn storage_settings_come_from_the_environment_and_are_checked() {
        let config = load(&[
            ("OXBASE_FILES__STORAGE", "s3"),
            ("OXBASE_FILES__S3__BUCKET", "b"),
            ("OXBASE_FILES__S3__ENDPOINT", "http://127.0.0.1:9000"),
            ("OXBASE_FILES__S3__PATH_STYLE", "true"),
            ("OXBASE_FILES__S3__ACCESS_KEY_ID", "k"),
            ("OXBASE_FILES__S3__SECRET_ACCESS_KEY", "s"),
        ])
        .unwrap();
        let files: FilesConfig = config.section();
        assert_eq!(files.storage, FileStorageKind::S3);
        assert_eq!(files.s3.bucket.as_deref(), Some("b"));
        assert!(files.s3.path_style);
        assert!(check_files(&config).is_ok());

        // A secret without its key id is refused, not ignored.
        let half = load(&[
            ("OXBASE_FILES__STORAGE", "s3"),
            ("OXBASE_FILES__S3__BUCKET", "b"),
            ("OXBASE_FILES__S3__SECRET_ACCESS_KEY", "s"),
        ]);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            assert!(half.unwrap_err().contains("AccessKeyId"));
        }

        let bad = load(&[
            ("OXBASE_FILES__STORAGE", "s3"),
            ("OXBASE_FILES__S3__BUCKET", "b"),
            ("OXBASE_FILES__S3__ENDPOINT", "localhost:9000"),
        ]);
        assert!(bad.unwrap_err().contains("files: s3: endpoint"));
        let unknown = load(&[("OXBASE_FILES__STORAGE", "ftp")]);
        assert!(unknown.unwrap_err().contains("files:"));
        let bad_uri = load(&[
            ("OXBASE_FILES__STORAGE", "gridfs"),
            ("OXBASE_FILES__GRIDFS__URI", "postgres://h/db"),
        ]);
        assert!(bad_uri.unwrap_err().contains("files: gridfs.uri"));
    }

    #[tokio::test]
    async fn refused_settings_leave_storage_that_says_why() {
        // As an embedder that skipped `check_files` would get it.
        let config = load(&[("OXBASE_FILES__STORAGE", "gridfs")]).unwrap();
        let files = Files::from_config(&config);
        let err = files.storage.info("a.txt").await.unwrap_err();
        assert!(err.to_string().contains("needs files.gridfs.uri"), "{err}");
    }

    #[test]
    fn gridfs_uses_the_database_when_it_is_mongodb() {
        let mut config = load(&[("OXBASE_FILES__STORAGE", "gridfs")]).unwrap();
        // The default database is SQLite: GridFS needs a URI of its own.
        let refused = check_files(&config).unwrap_err();
        assert!(refused.contains("needs files.gridfs.uri"), "{refused}");
        config.database_uri = Some("mongodb://127.0.0.1:1/parse".into());
        assert!(check_files(&config).is_ok());
        let files: FilesConfig = config.section();
        assert_eq!(
            gridfs_uri(&config, &files).unwrap(),
            "mongodb://127.0.0.1:1/parse"
        );
        config.update_section(|files: &mut FilesConfig| {
            files.gridfs.uri = Some(oxbase_kit::Secret::new("mongodb://other/files"));
        });
        let files: FilesConfig = config.section();
        assert_eq!(
            gridfs_uri(&config, &files).unwrap(),
            "mongodb://other/files"
        );
    }

    #[test]
    fn urls_are_added_everywhere() {
        let mut objects = vec![
            json!({
                "f": {"__type": "File", "name": "a b.txt"},
                "list": [{"__type": "File", "name": "c.png", "url": "http://old/c.png"}],
                "nested": {"g": {"__type": "File", "name": "é"}}
            })
            .as_object()
            .unwrap()
            .clone(),
        ];
        expand_urls(&mut objects, "http://h/parse", "app");
        assert_eq!(objects[0]["f"]["url"], "http://h/parse/files/app/a%20b.txt");
        assert_eq!(
            objects[0]["list"][0]["url"],
            "http://h/parse/files/app/c.png"
        );
        assert_eq!(
            objects[0]["nested"]["g"]["url"],
            "http://h/parse/files/app/%C3%A9"
        );
        assert_eq!(
            file_url("http://h/parse", "my app", "dir/sub/a b.txt"),
            "http://h/parse/files/my%20app/dir/sub/a%20b.txt"
        );
    }
}
