//! Files in MongoDB's GridFS, as Parse Server's default files adapter
//! (`GridFSBucketAdapter`) keeps them, so either server reads what the
//! other wrote: the bucket `fs` of the URI's database, a file's
//! `filename` its name, Parse's file metadata in `metadata`. As there, a
//! file's type is not kept (it is served by its name's extension; a
//! `contentType` field, which older drivers wrote, is read) and neither
//! are its tags.
//!
//! A name may have several revisions; the newest (by `uploadDate`) is the
//! file, a replaced one stays until the name is deleted, as with Parse, so
//! a reader of the old revision is never cut off. Deleting removes every
//! revision.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::io::AsyncWriteExt;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, ConnectionString};
use mongodb::{Client, Collection, Cursor, Database};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::storage::{
    ByteStream, FileInfo, FileStorage, ReadBytes, StorageError, StorageResult, StoredFile,
};

/// Parse's bucket, `fs` (the driver's default).
const FILES: &str = "fs.files";
const CHUNKS: &str = "fs.chunks";

/// Parse Server's database when the URI names none.
const DEFAULT_DATABASE: &str = "test";

pub struct GridFsFileStorage {
    uri: String,
    /// Parse's `encryptionKey` is set: its files are ciphertext.
    encrypted: bool,
    /// Connected on first use: parsing a `mongodb+srv` URI asks DNS.
    database: OnceCell<Database>,
}

impl GridFsFileStorage {
    /// Storage in the database `uri` names. `encrypted`: Parse Server
    /// stored the files with its `encryptionKey`, which is not supported
    /// yet, so the files' bytes are refused rather than served as they are.
    pub fn new(uri: &str, encrypted: bool) -> Result<Self, String> {
        Self::check_uri(uri)?;
        Ok(Self {
            uri: uri.to_owned(),
            encrypted,
            database: OnceCell::new(),
        })
    }

    /// Whether `uri` is a MongoDB URI that parses.
    pub fn check_uri(uri: &str) -> Result<(), String> {
        if !is_mongodb_uri(uri) {
            return Err("expected a mongodb:// or mongodb+srv:// URI".into());
        }
        ConnectionString::parse(uri)
            .map(drop)
            .map_err(|err| err.to_string())
    }

    async fn database(&self) -> StorageResult<&Database> {
        self.database
            .get_or_try_init(|| async {
                let options = ClientOptions::parse(&self.uri).await.map_err(io_error)?;
                let name = options
                    .default_database
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
                let client = Client::with_options(options).map_err(io_error)?;
                Ok(client.database(&name))
            })
            .await
    }

    async fn files(&self) -> StorageResult<Collection<Document>> {
        Ok(self.database().await?.collection(FILES))
    }

    /// The newest revision's files document.
    async fn newest(&self, name: &str) -> StorageResult<Document> {
        if name.is_empty() {
            return Err(StorageError::NotFound);
        }
        self.files()
            .await?
            .find_one(doc! { "filename": name })
            .sort(doc! { "uploadDate": -1, "_id": -1 })
            .await
            .map_err(io_error)?
            .ok_or(StorageError::NotFound)
    }

    fn refuse_encrypted(&self) -> StorageResult<()> {
        if self.encrypted {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "files.gridfs.encryption_key is set: files Parse Server encrypted with \
                 its encryptionKey cannot be read or written yet",
            )));
        }
        Ok(())
    }
}

pub fn is_mongodb_uri(uri: &str) -> bool {
    uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")
}

fn io_error(err: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::Io(std::io::Error::other(err))
}

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("a GridFS file is damaged: {what}"),
    )
}

/// A whole, non-negative number, however it was stored: the Node driver
/// writes small ones as 32-bit integers and large ones as doubles.
fn number(doc: &Document, key: &str) -> Option<u64> {
    match doc.get(key)? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if n.fract() == 0.0 && *n >= 0.0 && *n < u64::MAX as f64 => Some(*n as u64),
        _ => None,
    }
}

fn info_from(file: &Document) -> FileInfo {
    let metadata = match file.get("metadata") {
        Some(Bson::Document(metadata)) => {
            match Bson::Document(metadata.clone()).into_relaxed_extjson() {
                Value::Object(map) => map,
                _ => Map::new(),
            }
        }
        _ => Map::new(),
    };
    FileInfo {
        content_type: file.get_str("contentType").ok().map(str::to_owned),
        metadata,
        tags: Map::new(),
    }
}

/// A revision's bytes, read from its chunks: only those the range covers.
struct GridFsBytes {
    chunks: Collection<Document>,
    id: Bson,
    chunk_size: u64,
}

impl ReadBytes for GridFsBytes {
    fn read(
        self: Box<Self>,
        start: u64,
        len: u64,
    ) -> BoxFuture<'static, StorageResult<ByteStream>> {
        Box::pin(async move {
            if len == 0 {
                return Ok(stream::empty().boxed());
            }
            let slicer = Slicer::new(self.chunk_size, start, start + len);
            let (first, last) = slicer.chunks();
            let cursor = self
                .chunks
                .find(doc! {
                    "files_id": self.id,
                    "n": { "$gte": first as i64, "$lte": last as i64 },
                })
                .sort(doc! { "n": 1 })
                .await
                .map_err(io_error)?;
            let reader = ChunkReader { cursor, slicer };
            Ok(stream::unfold(Some(reader), ChunkReader::next_slice).boxed())
        })
    }
}

/// Walks a revision's chunks in order, answering the part of each within
/// the range.
struct ChunkReader {
    cursor: Cursor<Document>,
    slicer: Slicer,
}

impl ChunkReader {
    async fn next_slice(state: Option<Self>) -> Option<(std::io::Result<Bytes>, Option<Self>)> {
        let mut reader = state?;
        let slice = match reader.cursor.try_next().await {
            Ok(Some(chunk)) => reader.slicer.slice(&chunk),
            Ok(None) if reader.slicer.done() => return None,
            Ok(None) => Err(corrupt("a chunk is missing")),
            Err(err) => Err(std::io::Error::other(err)),
        };
        match slice {
            Ok(bytes) => Some((Ok(bytes), Some(reader))),
            Err(err) => Some((Err(err), None)),
        }
    }
}

/// The bytes within `start..end` of chunks given in order from the one
/// holding `start`; a missing or short chunk is an error, not a gap.
struct Slicer {
    next: u64,
    chunk_size: u64,
    start: u64,
    end: u64,
}

impl Slicer {
    /// `end` is past `start`, `chunk_size` positive.
    fn new(chunk_size: u64, start: u64, end: u64) -> Self {
        Self {
            next: start / chunk_size,
            chunk_size,
            start,
            end,
        }
    }

    /// The chunks to ask for: `first..=last`.
    fn chunks(&self) -> (u64, u64) {
        (
            self.start / self.chunk_size,
            (self.end - 1) / self.chunk_size,
        )
    }

    fn done(&self) -> bool {
        self.next > self.chunks().1
    }

    fn slice(&mut self, chunk: &Document) -> std::io::Result<Bytes> {
        if number(chunk, "n") != Some(self.next) {
            return Err(corrupt("a chunk is missing"));
        }
        // Any binary subtype: old drivers wrote 2.
        let Some(Bson::Binary(data)) = chunk.get("data") else {
            return Err(corrupt("a chunk has no data"));
        };
        let data = &data.bytes;
        let offset = self.next * self.chunk_size;
        let from = self.start.saturating_sub(offset) as usize;
        let to = (self.end - offset).min(self.chunk_size) as usize;
        self.next += 1;
        data.get(from..to)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| corrupt("a chunk is shorter than the file says"))
    }
}

impl FileStorage for GridFsFileStorage {
    fn put<'a>(
        &'a self,
        name: &'a str,
        info: FileInfo,
        mut data: ByteStream,
    ) -> BoxFuture<'a, StorageResult<u64>> {
        Box::pin(async move {
            self.refuse_encrypted()?;
            let bucket = self.database().await?.gridfs_bucket(None);
            // The files document is written last, on `close`: until then no
            // reader finds the revision. Chunks of one that fails, or is
            // dropped, are removed by the driver.
            let mut open = bucket.open_upload_stream(name);
            if !info.metadata.is_empty() {
                open = open.metadata(mongodb::bson::to_document(&info.metadata).map_err(io_error)?);
            }
            let mut upload = open.await.map_err(io_error)?;
            let mut size = 0u64;
            while let Some(chunk) = data.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(err) => {
                        if let Err(abort) = upload.abort().await {
                            tracing::warn!(%abort, "cannot abort a GridFS upload");
                        }
                        return Err(StorageError::Source(err));
                    }
                };
                upload.write_all(&chunk).await?;
                size += chunk.len() as u64;
            }
            upload.close().await?;
            Ok(size)
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<StoredFile>> {
        Box::pin(async move {
            let file = self.newest(name).await?;
            self.refuse_encrypted()?;
            let size = number(&file, "length").ok_or_else(|| corrupt("no length"))?;
            let chunk_size = number(&file, "chunkSize")
                .filter(|&size| size > 0)
                .ok_or_else(|| corrupt("no chunk size"))?;
            let id = file.get("_id").cloned().ok_or_else(|| corrupt("no _id"))?;
            let bytes = GridFsBytes {
                chunks: self.database().await?.collection(CHUNKS),
                id,
                chunk_size,
            };
            Ok(StoredFile::new(size, info_from(&file), Box::new(bytes)))
        })
    }

    fn info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<FileInfo>> {
        Box::pin(async move { Ok(info_from(&self.newest(name).await?)) })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<()>> {
        Box::pin(async move {
            if name.is_empty() {
                return Err(StorageError::NotFound);
            }
            let database = self.database().await?;
            let files = database.collection::<Document>(FILES);
            let ids: Vec<Bson> = files
                .find(doc! { "filename": name })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(io_error)?
                .try_filter_map(|file| async move { Ok(file.get("_id").cloned()) })
                .try_collect()
                .await
                .map_err(io_error)?;
            if ids.is_empty() {
                return Err(StorageError::NotFound);
            }
            // The files documents first: a revision without one is never
            // found, so none is seen half-deleted.
            files
                .delete_many(doc! { "_id": { "$in": ids.clone() } })
                .await
                .map_err(io_error)?;
            database
                .collection::<Document>(CHUNKS)
                .delete_many(doc! { "files_id": { "$in": ids } })
                .await
                .map_err(io_error)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::spec::BinarySubtype;
    use mongodb::bson::{Binary, DateTime};
    use oxbase_test_support::{unique_database_name, with_database};

    #[test]
    fn uris_must_be_mongodb_ones() {
        assert!(GridFsFileStorage::check_uri("mongodb://h:27017/parse").is_ok());
        assert!(GridFsFileStorage::check_uri("postgres://h/db").is_err());
        assert!(GridFsFileStorage::check_uri("mongodb://").is_err());
        assert!(GridFsFileStorage::new("mongodb://h:port/db", false).is_err());
    }

    #[test]
    fn numbers_are_read_however_stored() {
        let file = doc! {
            "a": 5_i32, "b": 6_i64, "c": 3_000_000_000.0_f64,
            "d": 1.5_f64, "e": -1_i32, "f": "7",
        };
        assert_eq!(number(&file, "a"), Some(5));
        assert_eq!(number(&file, "b"), Some(6));
        assert_eq!(number(&file, "c"), Some(3_000_000_000));
        for key in ["d", "e", "f", "missing"] {
            assert_eq!(number(&file, key), None, "{key}");
        }
    }

    #[test]
    fn parse_files_documents_give_their_metadata() {
        let file = doc! {
            "_id": 1, "length": 3, "chunkSize": 261120,
            "uploadDate": DateTime::now(), "filename": "a_b.txt",
            "metadata": { "owner": "ann", "n": 2 },
        };
        let info = info_from(&file);
        assert_eq!(info.content_type, None);
        assert_eq!(
            Value::Object(info.metadata),
            serde_json::json!({"owner": "ann", "n": 2})
        );
        let legacy = doc! { "contentType": "image/png", "metadata": Bson::Null };
        let info = info_from(&legacy);
        assert_eq!(info.content_type.as_deref(), Some("image/png"));
        assert!(info.metadata.is_empty());
    }

    fn chunk(n: i32, data: &[u8]) -> Document {
        let data = Binary {
            subtype: BinarySubtype::Generic,
            bytes: data.to_vec(),
        };
        doc! { "n": n, "data": data }
    }

    #[test]
    fn ranges_cut_across_chunks() {
        let chunks = [chunk(0, b"abcd"), chunk(1, b"efgh"), chunk(2, b"ij")];
        let read = |start: u64, end: u64| {
            let mut slicer = Slicer::new(4, start, end);
            let (first, last) = slicer.chunks();
            let mut out = Vec::new();
            for chunk in &chunks[first as usize..=last as usize] {
                out.extend_from_slice(&slicer.slice(chunk).unwrap());
            }
            assert!(slicer.done());
            out
        };
        assert_eq!(read(0, 10), b"abcdefghij");
        assert_eq!(read(3, 9), b"defghi");
        assert_eq!(read(4, 8), b"efgh");
        assert_eq!(read(9, 10), b"j");
    }

    #[test]
    fn missing_or_short_chunks_are_errors() {
        let mut skipped = Slicer::new(4, 0, 10);
        assert!(skipped.slice(&chunk(0, b"abcd")).is_ok());
        assert!(!skipped.done());
        assert!(skipped.slice(&chunk(2, b"ij")).is_err());
        let mut short = Slicer::new(4, 0, 8);
        assert!(short.slice(&chunk(0, b"ab")).is_err());
    }

    /// The server the ignored tests run on, as the store's MongoDB suite:
    /// asking for them without one is a failure, not a pass.
    const URI_VARIABLE: &str = "OXBASE_TEST_MONGODB_URI";

    /// Storage in a fresh database of the configured server, dropped with
    /// the value.
    struct TestBucket {
        storage: GridFsFileStorage,
        uri: String,
    }

    impl TestBucket {
        fn new(encrypted: bool) -> Self {
            let server = std::env::var(URI_VARIABLE)
                .unwrap_or_else(|_| panic!("set {URI_VARIABLE} to run the GridFS tests"));
            let uri = with_database(&server, &unique_database_name("oxbase_files"));
            Self {
                storage: GridFsFileStorage::new(&uri, encrypted).unwrap(),
                uri,
            }
        }

        async fn database(&self) -> &Database {
            self.storage.database().await.unwrap()
        }

        async fn count(&self, collection: &str) -> u64 {
            self.database()
                .await
                .collection::<Document>(collection)
                .count_documents(doc! {})
                .await
                .unwrap()
        }
    }

    impl Drop for TestBucket {
        fn drop(&mut self) {
            let uri = self.uri.clone();
            // Drop cannot await; a short-lived runtime on its own thread can.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async {
                    if let Ok(client) = Client::with_uri_str(&uri).await
                        && let Some(name) = client.default_database()
                    {
                        let _ = name.drop().await;
                    }
                });
            })
            .join();
        }
    }

    fn body(parts: Vec<Vec<u8>>) -> ByteStream {
        stream::iter(parts.into_iter().map(|part| Ok(Bytes::from(part)))).boxed()
    }

    async fn read(storage: &GridFsFileStorage, name: &str, start: u64, len: u64) -> Vec<u8> {
        let file = storage.get(name).await.unwrap();
        let mut body = file.read(start, len).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        bytes
    }

    /// Three chunks and a bit of Parse's 255 KiB.
    fn pattern() -> Vec<u8> {
        (0..3 * 261_120 + 100).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    #[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
    async fn files_round_trip_through_gridfs() {
        let bucket = TestBucket::new(false);
        let storage = &bucket.storage;
        let bytes = pattern();
        let mut info = FileInfo::default();
        info.metadata
            .insert("owner".into(), serde_json::json!("Zoë"));
        let halves = vec![bytes[..1000].to_vec(), bytes[1000..].to_vec()];
        let size = storage
            .put("a_b.bin", info.clone(), body(halves))
            .await
            .unwrap();
        assert_eq!(size, bytes.len() as u64);

        let file = storage.get("a_b.bin").await.unwrap();
        assert_eq!(file.size, bytes.len() as u64);
        assert_eq!(file.info, info);
        assert_eq!(read(storage, "a_b.bin", 0, size).await, bytes);
        let (start, len) = (261_120 - 5, 261_120 + 10);
        assert_eq!(
            read(storage, "a_b.bin", start, len).await,
            &bytes[start as usize..(start + len) as usize]
        );
        assert_eq!(storage.info("a_b.bin").await.unwrap(), info);

        // A new revision is the file; the old one stays until deleted.
        storage
            .put(
                "a_b.bin",
                FileInfo::default(),
                body(vec![b"second".to_vec()]),
            )
            .await
            .unwrap();
        assert_eq!(read(storage, "a_b.bin", 0, 6).await, b"second");
        assert!(storage.info("a_b.bin").await.unwrap().metadata.is_empty());
        assert_eq!(bucket.count(FILES).await, 2);

        storage.delete("a_b.bin").await.unwrap();
        assert_eq!(
            (bucket.count(FILES).await, bucket.count(CHUNKS).await),
            (0, 0)
        );
        for result in [
            storage.get("a_b.bin").await.map(drop),
            storage.info("a_b.bin").await.map(drop),
            storage.delete("a_b.bin").await,
        ] {
            assert!(matches!(result, Err(StorageError::NotFound)), "{result:?}");
        }
    }

    #[tokio::test]
    #[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
    async fn files_parse_server_wrote_are_read() {
        let bucket = TestBucket::new(false);
        let database = bucket.database().await;
        // As the Node driver writes them: 32-bit numbers, two revisions.
        let (old, new) = (
            mongodb::bson::oid::ObjectId::new(),
            mongodb::bson::oid::ObjectId::new(),
        );
        let files = database.collection::<Document>(FILES);
        let chunks = database.collection::<Document>(CHUNKS);
        for (id, text, date) in [(old, "old", 1_000), (new, "newer", 2_000)] {
            files
                .insert_one(doc! {
                    "_id": id, "length": text.len() as i32, "chunkSize": 2_i32,
                    "uploadDate": DateTime::from_millis(date), "filename": "f_x.txt",
                    "metadata": { "rev": text },
                })
                .await
                .unwrap();
            for (n, part) in text.as_bytes().chunks(2).enumerate() {
                let mut chunk = chunk(n as i32, part);
                chunk.insert("files_id", id);
                chunks.insert_one(chunk).await.unwrap();
            }
        }
        let storage = &bucket.storage;
        assert_eq!(read(storage, "f_x.txt", 0, 5).await, b"newer");
        assert_eq!(read(storage, "f_x.txt", 1, 3).await, b"ewe");
        let info = storage.info("f_x.txt").await.unwrap();
        assert_eq!(info.metadata["rev"], "newer");
        // A missing chunk is an error, not a shorter file.
        chunks
            .delete_one(doc! { "files_id": new, "n": 1 })
            .await
            .unwrap();
        let file = storage.get("f_x.txt").await.unwrap();
        let mut body = file.read(0, 5).await.unwrap();
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            failed |= chunk.is_err();
        }
        assert!(failed);
    }

    #[tokio::test]
    #[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
    async fn a_failed_upload_leaves_nothing() {
        let bucket = TestBucket::new(false);
        let failing: ByteStream = stream::iter([
            Ok(Bytes::from(pattern())),
            Err(std::io::Error::other("client went away")),
        ])
        .boxed();
        let result = bucket
            .storage
            .put("a_b.bin", FileInfo::default(), failing)
            .await;
        assert!(matches!(result, Err(StorageError::Source(_))), "{result:?}");
        assert_eq!(
            (bucket.count(FILES).await, bucket.count(CHUNKS).await),
            (0, 0)
        );
    }

    #[tokio::test]
    #[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
    async fn encrypted_files_are_refused_not_served() {
        let bucket = TestBucket::new(true);
        let storage = &bucket.storage;
        let put = storage
            .put("a_b.txt", FileInfo::default(), body(vec![b"x".to_vec()]))
            .await;
        let refused = |result: &StorageResult<()>| matches!(result, Err(StorageError::Io(err)) if err.kind() == std::io::ErrorKind::Unsupported);
        assert!(refused(&put.map(drop)));
        bucket
            .database()
            .await
            .collection::<Document>(FILES)
            .insert_one(doc! {
                "_id": 1, "length": 40_i32, "chunkSize": 261_120_i32,
                "uploadDate": DateTime::now(), "filename": "c_d.txt",
            })
            .await
            .unwrap();
        assert!(refused(&storage.get("c_d.txt").await.map(drop)));
        assert!(storage.info("c_d.txt").await.is_ok());
    }
}
