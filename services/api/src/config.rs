//! `[files]`: who may upload files, and where they are kept.

use std::path::PathBuf;

use oxbase_kit::Section;
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
    /// Regexes a file's extension must match; the default refuses HTML,
    /// which a browser would run from the file's URL.
    pub file_extensions: Vec<String>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_upload_bytes: 20 * 1024 * 1024,
            enable_for_public: false,
            enable_for_anonymous_user: false,
            enable_for_authenticated_user: true,
            file_extensions: vec!["^(?![xXsS]?[hH][tT][mM][lL]?$)".into()],
        }
    }
}

impl Section for FilesConfig {
    const KEY: &'static str = "files";
}
