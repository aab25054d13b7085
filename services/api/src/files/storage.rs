//! Where file bytes live. [`FileStorage`] is the seam for backends (the
//! local filesystem now; S3 and GridFS later): async and object-safe, so
//! the API holds an `Arc<dyn FileStorage>`. Bytes go in and out as
//! streams, so no backend need hold a whole file in memory.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

/// File bytes on their way in or out.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What is kept beside a file's bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileInfo {
    /// The type downloads answer with.
    pub content_type: Option<String>,
    /// Parse's file metadata and tags, as the client sent them.
    pub metadata: Map<String, Value>,
    pub tags: Map<String, Value>,
}

/// A stored file, found: its size and info now, its bytes when read.
pub struct StoredFile {
    pub size: u64,
    pub info: FileInfo,
    reader: Box<dyn ReadBytes>,
}

impl StoredFile {
    pub fn new(size: u64, info: FileInfo, reader: Box<dyn ReadBytes>) -> Self {
        Self { size, info, reader }
    }

    /// `len` bytes from `start`, which the caller keeps within `size`.
    pub async fn read(self, start: u64, len: u64) -> StorageResult<ByteStream> {
        self.reader.read(start, len).await
    }
}

/// The bytes of a file a backend found, read at most once: a local file
/// stays open, so what is read is what was found; a remote store would
/// ask for the range.
pub trait ReadBytes: Send {
    fn read(self: Box<Self>, start: u64, len: u64)
    -> BoxFuture<'static, StorageResult<ByteStream>>;
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such file")]
    NotFound,
    #[error("file storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes given to [`FileStorage::put`] failed to arrive (the client
    /// went away, or sent more than it may); nothing was stored.
    #[error("the file's bytes failed: {0}")]
    Source(std::io::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A place to keep files by name. Names are what Parse stores in File
/// fields: `{hex}_{name}`, possibly below `/`-separated directories.
pub trait FileStorage: Send + Sync {
    /// Stores the bytes `data` yields, with `info` beside them, replacing a
    /// file of the same name; answers how many bytes were stored. When
    /// `data` or the backend fails, nothing is stored. A reader sees the
    /// old file or the new one, never part of either.
    fn put<'a>(
        &'a self,
        name: &'a str,
        info: FileInfo,
        data: ByteStream,
    ) -> BoxFuture<'a, StorageResult<u64>>;

    /// The file's size and what was stored beside it; its bytes are read
    /// from the answer.
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

/// Bytes read from a local file at a time on downloads.
const READ_CHUNK: usize = 64 * 1024;

/// A file in `.tmp`, removed when dropped unless it was renamed into
/// place: an upload that fails, or whose request is dropped midway (the
/// client went away), leaves nothing behind.
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    async fn persist(mut self, target: &Path) -> std::io::Result<()> {
        let path = self.path.take().unwrap_or_default();
        let renamed = tokio::fs::rename(&path, target).await;
        if renamed.is_err() {
            self.path = Some(path);
        }
        renamed
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

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

    /// A new, empty file in `.tmp`.
    async fn temp_file(&self) -> std::io::Result<(TempFile, tokio::fs::File)> {
        let tmp_dir = self.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp_dir).await?;
        let path = tmp_dir.join(format!("{:032x}", rand::rng().random::<u128>()));
        // Created here, not on a blocking task: an upload dropped while
        // such a task ran would leave a file no guard yet owned.
        let file = std::fs::File::create_new(&path)?;
        Ok((
            TempFile { path: Some(path) },
            tokio::fs::File::from_std(file),
        ))
    }

    /// Writes `data` to a temporary file, synced; answers it and its size.
    async fn receive(&self, mut data: ByteStream) -> StorageResult<(TempFile, u64)> {
        let (temp, mut file) = self.temp_file().await?;
        let mut size = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(StorageError::Source)?;
            file.write_all(&chunk).await?;
            size += chunk.len() as u64;
        }
        file.sync_all().await?;
        Ok((temp, size))
    }

    async fn persist(temp: TempFile, target: &Path) -> std::io::Result<()> {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        temp.persist(target).await
    }

    async fn write_atomically(&self, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let (temp, mut file) = self.temp_file().await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        drop(file);
        Self::persist(temp, target).await
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

    /// The regular file at `path`, open, with its size.
    async fn open(path: &Path) -> StorageResult<(tokio::fs::File, u64)> {
        let file = match tokio::fs::File::open(path).await {
            Ok(file) => file,
            Err(err) if is_missing(&err) => return Err(StorageError::NotFound),
            Err(err) => return Err(err.into()),
        };
        let found = file.metadata().await?;
        if !found.is_file() {
            return Err(StorageError::NotFound);
        }
        Ok((file, found.len()))
    }
}

fn is_missing(err: &std::io::Error) -> bool {
    // A path through a regular file (`a.txt/b`) is missing too.
    matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// An open local file's bytes.
struct LocalBytes(tokio::fs::File);

impl ReadBytes for LocalBytes {
    fn read(
        self: Box<Self>,
        start: u64,
        len: u64,
    ) -> BoxFuture<'static, StorageResult<ByteStream>> {
        Box::pin(async move {
            let mut file = self.0;
            file.seek(std::io::SeekFrom::Start(start)).await?;
            let stream = ReaderStream::with_capacity(file.take(len), READ_CHUNK);
            Ok(stream.boxed())
        })
    }
}

impl FileStorage for LocalFileStorage {
    fn put<'a>(
        &'a self,
        name: &'a str,
        info: FileInfo,
        data: ByteStream,
    ) -> BoxFuture<'a, StorageResult<u64>> {
        Box::pin(async move {
            let (target, meta) = self
                .paths(name)
                .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "unsafe file name"))?;
            let (temp, size) = self.receive(data).await?;
            let sidecar = json!({
                "contentType": info.content_type,
                "metadata": info.metadata,
                "tags": info.tags,
            });
            // The sidecar first: a file visible without its sidecar would be
            // served with a guessed type.
            let sidecar = serde_json::to_vec(&sidecar).map_err(std::io::Error::other)?;
            self.write_atomically(&meta, &sidecar).await?;
            if let Err(err) = Self::persist(temp, &target).await {
                let _ = tokio::fs::remove_file(&meta).await;
                return Err(err.into());
            }
            Ok(size)
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<StoredFile>> {
        Box::pin(async move {
            let (data, meta) = self.paths(name).ok_or(StorageError::NotFound)?;
            let (file, size) = Self::open(&data).await?;
            let info = Self::read_info(&meta).await?.unwrap_or_default();
            Ok(StoredFile::new(size, info, Box::new(LocalBytes(file))))
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
    use futures_util::stream;

    use super::*;

    fn info(content_type: &str) -> FileInfo {
        FileInfo {
            content_type: Some(content_type.into()),
            ..FileInfo::default()
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let parts: Vec<std::io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        stream::iter(parts).boxed()
    }

    async fn read_all(storage: &LocalFileStorage, name: &str) -> (Vec<u8>, FileInfo) {
        let file = storage.get(name).await.unwrap();
        let info = file.info.clone();
        let size = file.size;
        let mut body = file.read(0, size).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        (bytes, info)
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn files_round_trip_and_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalFileStorage::new(dir.path().join("files"));
        let mut stored = info("text/plain");
        stored.metadata.insert("k".into(), json!("v"));
        let size = storage
            .put("abc_a.txt", stored, chunks(&[b"hel", b"", b"lo"]))
            .await
            .unwrap();
        assert_eq!(size, 5);
        storage
            .put(
                "dir/sub/abc_b.bin",
                info("application/x"),
                chunks(&[b"\x00\x01"]),
            )
            .await
            .unwrap();

        let (bytes, got) = read_all(&storage, "abc_a.txt").await;
        assert_eq!(bytes, b"hello");
        assert_eq!(got.content_type.as_deref(), Some("text/plain"));
        assert_eq!(got.metadata["k"], "v");
        assert_eq!(read_all(&storage, "dir/sub/abc_b.bin").await.0, b"\x00\x01");

        // A range of the bytes.
        let file = storage.get("abc_a.txt").await.unwrap();
        assert_eq!(file.size, 5);
        let mut body = file.read(1, 3).await.unwrap();
        let mut part = Vec::new();
        while let Some(chunk) = body.next().await {
            part.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(part, b"ell");

        // Replacing is atomic and leaves no temporary files behind.
        storage
            .put("abc_a.txt", info("text/csv"), chunks(&[b"second"]))
            .await
            .unwrap();
        let (bytes, got) = read_all(&storage, "abc_a.txt").await;
        assert_eq!(bytes, b"second");
        assert_eq!(got.content_type.as_deref(), Some("text/csv"));
        assert_eq!(entries(&dir.path().join("files").join(TMP_DIR)), 0);

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
    async fn a_failed_or_dropped_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        let storage = LocalFileStorage::new(root.clone());
        let failing: ByteStream = stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(std::io::Error::other("client went away")),
        ])
        .boxed();
        let result = storage.put("abc_a.txt", info("text/plain"), failing).await;
        assert!(matches!(result, Err(StorageError::Source(_))), "{result:?}");

        // A request dropped while its body is still coming.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
        tx.send(Ok(Bytes::from_static(b"first"))).await.unwrap();
        let pending = tokio_stream_from(rx);
        let mut put = storage.put("abc_b.txt", info("text/plain"), pending);
        let tmp = root.join(TMP_DIR);
        let started = async {
            while entries(&tmp) == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            result = &mut put => panic!("the upload ended early: {result:?}"),
            () = started => {}
        }
        drop(put);
        drop(tx);

        assert_eq!(entries(&root.join(TMP_DIR)), 0);
        assert_eq!(entries(&root.join(META_DIR)), 0);
        assert!(!root.join("abc_a.txt").exists() && !root.join("abc_b.txt").exists());
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> ByteStream {
        stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }

    #[tokio::test]
    async fn names_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        let storage = LocalFileStorage::new(dir.path().join("files"));
        storage
            .put("ok.txt", info("text/plain"), chunks(&[b"x"]))
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
        let escape = storage.put("../escape", info("a/b"), chunks(&[b"x"])).await;
        assert!(escape.is_err());
        assert!(!dir.path().join("escape").exists());
    }
}
