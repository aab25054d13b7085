//! Where file bytes live. [`FileStorage`] is the seam for backends (the
//! local filesystem now; S3 and GridFS later): async and object-safe, so
//! the API holds an `Arc<dyn FileStorage>`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

/// What is kept beside a file's bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileInfo {
    /// The type downloads answer with.
    pub content_type: Option<String>,
    /// Parse's file metadata and tags, as the client sent them.
    pub metadata: Map<String, Value>,
    pub tags: Map<String, Value>,
}

/// A stored file.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub bytes: Bytes,
    pub info: FileInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such file")]
    NotFound,
    #[error("file storage failed: {0}")]
    Io(#[from] std::io::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A place to keep files by name. Names are what Parse stores in File
/// fields: `{hex}_{name}`, possibly below `/`-separated directories.
pub trait FileStorage: Send + Sync {
    /// Stores a file, replacing one of the same name. A reader sees the old
    /// file or the new one, never part of either.
    fn put<'a>(&'a self, name: &'a str, file: StoredFile) -> BoxFuture<'a, StorageResult<()>>;

    /// The file's bytes and what was stored beside them.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<StoredFile>>;

    /// What was stored beside the file, without its bytes.
    fn info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<FileInfo>>;

    /// Removes the file; [`StorageError::NotFound`] when there is none.
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<()>>;
}

/// Files in a directory: `<dir>/<name>` holds the bytes and
/// `<dir>/.meta/<name>.json` the content type, metadata and tags. Writes go
/// to `<dir>/.tmp` first and are renamed into place. File names never start
/// with a dot, so neither `.meta` nor `.tmp` can clash with a file.
#[derive(Debug)]
pub struct LocalFileStorage {
    root: PathBuf,
}

const META_DIR: &str = ".meta";
const TMP_DIR: &str = ".tmp";

impl LocalFileStorage {
    /// Storage rooted at `root`, which is created if it does not exist;
    /// when it cannot be created now, writes try again later.
    pub fn new(root: PathBuf) -> Self {
        if let Err(err) = std::fs::create_dir_all(root.join(TMP_DIR)) {
            tracing::warn!(dir = %root.display(), %err, "cannot create the files directory");
        }
        Self { root }
    }

    /// The path of a stored name, or `None` when the name could not have
    /// been stored (an empty, dot-led or otherwise unsafe segment), so no
    /// name reaches outside the root.
    fn relative(name: &str) -> Option<PathBuf> {
        let mut path = PathBuf::new();
        for segment in name.split('/') {
            let safe = !segment.is_empty()
                && !segment.starts_with('.')
                && segment.len() <= 255
                && !segment.contains(['\\', '\0', ':']);
            if !safe {
                return None;
            }
            path.push(segment);
        }
        Some(path)
    }

    fn paths(&self, name: &str) -> Option<(PathBuf, PathBuf)> {
        let relative = Self::relative(name)?;
        let data = self.root.join(&relative);
        let mut meta = self.root.join(META_DIR).join(relative).into_os_string();
        meta.push(".json");
        Some((data, PathBuf::from(meta)))
    }

    async fn write_atomically(&self, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp_dir = self.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp_dir).await?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let tmp = tmp_dir.join(format!("{:032x}", rand::rng().random::<u128>()));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(bytes).await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, target).await
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        written
    }

    async fn read_info(meta: &Path) -> StorageResult<Option<FileInfo>> {
        let raw = match tokio::fs::read(meta).await {
            Ok(raw) => raw,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let Ok(Value::Object(stored)) = serde_json::from_slice::<Value>(&raw) else {
            tracing::warn!(path = %meta.display(), "ignoring an unreadable file sidecar");
            return Ok(None);
        };
        let object = |key: &str| match stored.get(key) {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        Ok(Some(FileInfo {
            content_type: stored
                .get("contentType")
                .and_then(Value::as_str)
                .map(str::to_owned),
            metadata: object("metadata"),
            tags: object("tags"),
        }))
    }
}

fn is_missing(err: &std::io::Error) -> bool {
    // A path through a regular file (`a.txt/b`) is missing too.
    matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

impl FileStorage for LocalFileStorage {
    fn put<'a>(&'a self, name: &'a str, file: StoredFile) -> BoxFuture<'a, StorageResult<()>> {
        Box::pin(async move {
            let (data, meta) = self
                .paths(name)
                .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "unsafe file name"))?;
            let sidecar = json!({
                "contentType": file.info.content_type,
                "metadata": file.info.metadata,
                "tags": file.info.tags,
            });
            // The sidecar first: a file visible without its sidecar would be
            // served with a guessed type.
            let sidecar = serde_json::to_vec(&sidecar).map_err(std::io::Error::other)?;
            self.write_atomically(&meta, &sidecar).await?;
            if let Err(err) = self.write_atomically(&data, &file.bytes).await {
                let _ = tokio::fs::remove_file(&meta).await;
                return Err(err.into());
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<StoredFile>> {
        Box::pin(async move {
            let (data, meta) = self.paths(name).ok_or(StorageError::NotFound)?;
            let bytes = match tokio::fs::read(&data).await {
                Ok(bytes) => bytes,
                Err(err) if is_missing(&err) || err.kind() == ErrorKind::IsADirectory => {
                    return Err(StorageError::NotFound);
                }
                Err(err) => return Err(err.into()),
            };
            let info = Self::read_info(&meta).await?.unwrap_or_default();
            Ok(StoredFile {
                bytes: Bytes::from(bytes),
                info,
            })
        })
    }

    fn info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<FileInfo>> {
        Box::pin(async move {
            let (data, meta) = self.paths(name).ok_or(StorageError::NotFound)?;
            match tokio::fs::metadata(&data).await {
                Ok(found) if found.is_file() => {}
                Ok(_) => return Err(StorageError::NotFound),
                Err(err) if is_missing(&err) => return Err(StorageError::NotFound),
                Err(err) => return Err(err.into()),
            }
            Ok(Self::read_info(&meta).await?.unwrap_or_default())
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<()>> {
        Box::pin(async move {
            let (data, meta) = self.paths(name).ok_or(StorageError::NotFound)?;
            match tokio::fs::metadata(&data).await {
                Ok(found) if found.is_file() => {}
                Ok(_) => return Err(StorageError::NotFound),
                Err(err) if is_missing(&err) => return Err(StorageError::NotFound),
                Err(err) => return Err(err.into()),
            }
            match tokio::fs::remove_file(&data).await {
                Ok(()) => {}
                Err(err) if is_missing(&err) => return Err(StorageError::NotFound),
                Err(err) => return Err(err.into()),
            }
            match tokio::fs::remove_file(&meta).await {
                Ok(()) => Ok(()),
                Err(err) if is_missing(&err) => Ok(()),
                Err(err) => Err(err.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &'static [u8], content_type: &str) -> StoredFile {
        StoredFile {
            bytes: Bytes::from_static(bytes),
            info: FileInfo {
                content_type: Some(content_type.into()),
                ..FileInfo::default()
            },
        }
    }

    #[tokio::test]
    async fn files_round_trip_and_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalFileStorage::new(dir.path().join("files"));
        let mut stored = file(b"hello", "text/plain");
        stored.info.metadata.insert("k".into(), json!("v"));
        storage.put("abc_a.txt", stored).await.unwrap();
        storage
            .put("dir/sub/abc_b.bin", file(b"\x00\x01", "application/x"))
            .await
            .unwrap();

        let got = storage.get("abc_a.txt").await.unwrap();
        assert_eq!(&got.bytes[..], b"hello");
        assert_eq!(got.info.content_type.as_deref(), Some("text/plain"));
        assert_eq!(got.info.metadata["k"], "v");
        let nested = storage.get("dir/sub/abc_b.bin").await.unwrap();
        assert_eq!(&nested.bytes[..], b"\x00\x01");

        // Replacing is atomic and leaves no temporary files behind.
        storage
            .put("abc_a.txt", file(b"second", "text/csv"))
            .await
            .unwrap();
        let got = storage.get("abc_a.txt").await.unwrap();
        assert_eq!(&got.bytes[..], b"second");
        assert_eq!(got.info.content_type.as_deref(), Some("text/csv"));
        let tmp = std::fs::read_dir(dir.path().join("files").join(TMP_DIR)).unwrap();
        assert_eq!(tmp.count(), 0);

        storage.delete("abc_a.txt").await.unwrap();
        assert!(matches!(
            storage.get("abc_a.txt").await,
            Err(StorageError::NotFound)
        ));
        assert!(matches!(
            storage.delete("abc_a.txt").await,
            Err(StorageError::NotFound)
        ));
        assert!(matches!(
            storage.info("abc_a.txt").await,
            Err(StorageError::NotFound)
        ));
    }

    #[tokio::test]
    async fn names_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        let storage = LocalFileStorage::new(dir.path().join("files"));
        storage
            .put("ok.txt", file(b"x", "text/plain"))
            .await
            .unwrap();
        for name in [
            "../secret",
            "..",
            ".",
            "",
            "a//b",
            "/etc/passwd",
            ".meta/ok.txt.json",
            ".tmp",
            "dir",
            "ok.txt/x",
        ] {
            assert!(
                matches!(storage.get(name).await, Err(StorageError::NotFound)),
                "{name:?}"
            );
            assert!(
                matches!(storage.delete(name).await, Err(StorageError::NotFound)),
                "{name:?}"
            );
        }
        assert!(storage.put("../escape", file(b"x", "a/b")).await.is_err());
        assert!(!dir.path().join("escape").exists());
    }
}
