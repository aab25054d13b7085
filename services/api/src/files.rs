//! Files: Parse Server's Files API (`POST /files/{name}`, downloads at
//! `GET /files/{appId}/{name}`, `DELETE /files/{name}`) over a
//! [`FileStorage`], and File values: stored as their name, given their URL
//! when read, as Parse Server does (`{mount}/files/{appId}/{name}`, the
//! mount being `public_server_url` when set), so a deployment's URL can
//! change without rewriting data.

mod mime;
mod routes;
mod rules;
mod storage;
mod upload;

use std::sync::Arc;

use oxbase_kit::Config;

use crate::App;
use crate::config::FilesConfig;
use crate::request::ParseRequest;
use oxbase_store::Object;
use serde_json::Value;

pub use storage::{FileStorage, LocalFileStorage};
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
    /// Local storage in `files.dir`, by default `<data_dir>/files`.
    pub fn from_config(config: &Config) -> Self {
        let files: FilesConfig = config.section();
        let dir = files
            .dir
            .clone()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| config.data_dir.join("files"));
        let storage = Arc::new(LocalFileStorage::new(dir));
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
    use serde_json::json;

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
