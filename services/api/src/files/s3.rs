//! Files in an S3 bucket (AWS, or an S3-compatible server), one object per
//! file under `{prefix}/{name}`.
//!
//! What is kept beside the bytes travels with the object, so a file and
//! its info are written, replaced and read together (a sidecar object
//! could be seen half-written): the type as the object's `Content-Type`,
//! Parse's metadata and tags as one JSON user-metadata entry,
//! `x-amz-meta-parse-info`. S3 limits user metadata to 2 KB, as it does for
//! Parse's own S3 adapter. The JSON is written with every non-ASCII
//! character and space escaped (`\u00e9`), since header values carry ASCII
//! only and servers may fold spaces.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use serde_json::{Map, Value, json};

use super::storage::{
    ByteStream, FileInfo, FileStorage, ReadBytes, StorageError, StorageResult, StoredFile,
};
use crate::config::S3Settings;

/// The user-metadata key holding a file's info.
const INFO_KEY: &str = "parse-info";

/// Uploads up to this size are one `PUT`; larger ones are multipart
/// uploads in parts of this size (S3's smallest part is 5 MiB).
const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one upload sent at a time.
const PARTS_IN_FLIGHT: usize = 2;

pub struct S3FileStorage {
    store: AmazonS3,
    prefix: String,
}

/// The client's own `Debug` would show the credentials.
impl std::fmt::Debug for S3FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3FileStorage")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3FileStorage {
    /// The bucket `settings` name, with what they leave unset taken from
    /// the AWS variables. Nothing is sent yet.
    pub fn new(settings: &S3Settings) -> Result<Self, String> {
        if let Some(endpoint) = settings.endpoint.as_deref().filter(|e| !e.is_empty())
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "endpoint {endpoint:?} is not an http:// or https:// URL"
            ));
        }
        let store = builder(settings).build().map_err(|err| err.to_string())?;
        let prefix = settings
            .prefix
            .as_deref()
            .unwrap_or_default()
            .trim_matches('/');
        if !prefix.is_empty() {
            Path::parse(prefix).map_err(|err| format!("prefix: {err}"))?;
        }
        Ok(Self {
            store,
            prefix: prefix.to_owned(),
        })
    }

    /// The key of a stored name, or `None` for a name that could not have
    /// been stored (empty, `.` or `..` segments, control characters).
    fn path(&self, name: &str) -> Option<Path> {
        let key = match self.prefix.as_str() {
            "" => name.to_owned(),
            prefix => format!("{prefix}/{name}"),
        };
        // `parse` drops a leading or trailing `/`; such a name is not one.
        Path::parse(&key)
            .ok()
            .filter(|path| path.as_ref() == key && !name.is_empty())
    }

    async fn put_small(
        &self,
        path: &Path,
        attributes: Attributes,
        parts: Vec<Bytes>,
    ) -> StorageResult<()> {
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.store
            .put_opts(path, PutPayload::from_iter(parts), options)
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    /// A multipart upload of `first` and the rest of `data`, aborted if
    /// either fails; answers the bytes received after `first`. The upload
    /// runs in a task of its own fed from here, so that it is aborted
    /// however this future ends, dropped midway included.
    async fn put_large(
        &self,
        path: &Path,
        attributes: Attributes,
        first: Vec<Bytes>,
        mut data: ByteStream,
    ) -> StorageResult<u64> {
        let (parts, received) = tokio::sync::mpsc::channel(1);
        let upload = tokio::spawn(upload_parts(
            self.store.clone(),
            path.clone(),
            attributes,
            first,
            received,
        ));
        let mut size = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    // Without `End` the task aborts the upload.
                    drop(parts);
                    let _ = upload.await;
                    return Err(StorageError::Source(err));
                }
            };
            size += chunk.len() as u64;
            if parts.send(Part::Bytes(chunk)).await.is_err() {
                // The upload failed; its result says why.
                break;
            }
        }
        let _ = parts.send(Part::End).await;
        upload.await.map_err(std::io::Error::other)??;
        Ok(size)
    }

    async fn head(&self, path: &Path) -> StorageResult<(u64, Option<String>, FileInfo)> {
        let found = self
            .store
            .get_opts(path, GetOptions::new().with_head(true))
            .await
            .map_err(storage_error)?;
        Ok((
            found.meta.size,
            found.meta.e_tag,
            info_from_attributes(&found.attributes),
        ))
    }
}

fn builder(settings: &S3Settings) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env();
    let explicit = [
        (AmazonS3ConfigKey::Bucket, settings.bucket.as_deref()),
        (AmazonS3ConfigKey::Region, settings.region.as_deref()),
        (AmazonS3ConfigKey::Endpoint, settings.endpoint.as_deref()),
        // An S3-only endpoint from the environment would win over `Endpoint`.
        (AmazonS3ConfigKey::S3Endpoint, settings.endpoint.as_deref()),
        (
            AmazonS3ConfigKey::AccessKeyId,
            settings.access_key_id.as_deref(),
        ),
        (
            AmazonS3ConfigKey::SecretAccessKey,
            settings.secret_access_key.as_ref().map(|key| key.expose()),
        ),
        (
            AmazonS3ConfigKey::Token,
            settings.session_token.as_ref().map(|token| token.expose()),
        ),
    ];
    for (key, value) in explicit {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            builder = builder.with_config(key, value);
        }
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    if endpoint.is_some_and(|url| url.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    builder.with_virtual_hosted_style_request(!settings.path_style)
}

/// What feeds a multipart upload. The body's end is told apart from the
/// request going away (the channel closing): only `End` completes it.
enum Part {
    Bytes(Bytes),
    End,
}

async fn upload_parts(
    store: AmazonS3,
    path: Path,
    attributes: Attributes,
    first: Vec<Bytes>,
    mut parts: tokio::sync::mpsc::Receiver<Part>,
) -> StorageResult<()> {
    let options = PutMultipartOptions {
        attributes,
        ..PutMultipartOptions::default()
    };
    let upload = store
        .put_multipart_opts(&path, options)
        .await
        .map_err(storage_error)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    first.into_iter().for_each(|part| writer.put(part));
    loop {
        let failed = match parts.recv().await {
            Some(Part::Bytes(chunk)) => match writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                Ok(()) => {
                    writer.put(chunk);
                    continue;
                }
                Err(err) => storage_error(err),
            },
            // `finish` aborts the upload itself when completing it fails.
            Some(Part::End) => return writer.finish().await.map(drop).map_err(storage_error),
            None => StorageError::Io(std::io::Error::other("the upload was abandoned")),
        };
        if let Err(err) = writer.abort().await {
            tracing::warn!(%err, file = %path, "cannot abort a multipart upload");
        }
        return Err(failed);
    }
}

/// Up to [`PART_SIZE`] bytes from the start of `data`; whether `data` ended.
async fn first_part(data: &mut ByteStream) -> StorageResult<(Vec<Bytes>, u64, bool)> {
    let mut parts = Vec::new();
    let mut size = 0u64;
    while size < PART_SIZE as u64 {
        match data.next().await {
            Some(Ok(chunk)) => {
                size += chunk.len() as u64;
                parts.push(chunk);
            }
            Some(Err(err)) => return Err(StorageError::Source(err)),
            None => return Ok((parts, size, true)),
        }
    }
    Ok((parts, size, false))
}

fn attributes(info: &FileInfo) -> Attributes {
    let mut attributes = Attributes::new();
    if let Some(content_type) = &info.content_type {
        attributes.insert(Attribute::ContentType, content_type.clone().into());
    }
    let stored = json!({
        "contentType": info.content_type,
        "metadata": info.metadata,
        "tags": info.tags,
    });
    attributes.insert(
        Attribute::Metadata(INFO_KEY.into()),
        AttributeValue::from(ascii_json(&stored)),
    );
    attributes
}

/// JSON in visible ASCII: every other character, in strings only since
/// serde_json escapes control characters and adds no spaces, becomes a
/// `\u` escape (two for characters beyond the BMP).
fn ascii_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii_graphic() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The info written with an object: ours when it has it; else, for an
/// object stored by other means (Parse's S3 adapter, a copy), its
/// `Content-Type` and its user metadata as the file's metadata.
fn info_from_attributes(attributes: &Attributes) -> FileInfo {
    let ours = attributes
        .get(&Attribute::Metadata(INFO_KEY.into()))
        .and_then(|raw| serde_json::from_str::<Value>(raw.as_ref()).ok());
    if let Some(Value::Object(stored)) = ours {
        let object = |key: &str| match stored.get(key) {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        return FileInfo {
            content_type: stored
                .get("contentType")
                .and_then(Value::as_str)
                .map(str::to_owned),
            metadata: object("metadata"),
            tags: object("tags"),
        };
    }
    let metadata = attributes
        .iter()
        .filter_map(|(key, value)| match key {
            Attribute::Metadata(key) => Some((key.to_string(), Value::from(value.as_ref()))),
            _ => None,
        })
        .collect();
    FileInfo {
        content_type: attributes
            .get(&Attribute::ContentType)
            .map(|value| value.as_ref().to_owned()),
        metadata,
        tags: Map::new(),
    }
}

fn storage_error(err: object_store::Error) -> StorageError {
    match err {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        object_store::Error::Precondition { .. } => StorageError::Io(std::io::Error::other(
            "the file was replaced while it was being read",
        )),
        err => StorageError::Io(std::io::Error::other(err)),
    }
}

/// An object found by a `HEAD`; its bytes are asked for as a range of that
/// version (`If-Match` its ETag), so a file replaced in between fails
/// rather than mixes.
struct S3Bytes {
    store: AmazonS3,
    path: Path,
    e_tag: Option<String>,
}

impl ReadBytes for S3Bytes {
    fn read(
        self: Box<Self>,
        start: u64,
        len: u64,
    ) -> BoxFuture<'static, StorageResult<ByteStream>> {
        Box::pin(async move {
            if len == 0 {
                return Ok(stream::empty().boxed());
            }
            let options = GetOptions::new()
                .with_range(Some(start..start + len))
                .with_if_match(self.e_tag);
            let found = self
                .store
                .get_opts(&self.path, options)
                .await
                .map_err(storage_error)?;
            Ok(found.into_stream().map_err(std::io::Error::other).boxed())
        })
    }
}

impl FileStorage for S3FileStorage {
    fn put<'a>(
        &'a self,
        name: &'a str,
        info: FileInfo,
        mut data: ByteStream,
    ) -> BoxFuture<'a, StorageResult<u64>> {
        Box::pin(async move {
            let path = self.path(name).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "unsafe file name")
            })?;
            let attributes = attributes(&info);
            let (first, first_size, ended) = first_part(&mut data).await?;
            if ended {
                self.put_small(&path, attributes, first).await?;
                return Ok(first_size);
            }
            let rest = self.put_large(&path, attributes, first, data).await?;
            Ok(first_size + rest)
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<StoredFile>> {
        Box::pin(async move {
            let path = self.path(name).ok_or(StorageError::NotFound)?;
            let (size, e_tag, info) = self.head(&path).await?;
            let bytes = S3Bytes {
                store: self.store.clone(),
                path,
                e_tag,
            };
            Ok(StoredFile::new(size, info, Box::new(bytes)))
        })
    }

    fn info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<FileInfo>> {
        Box::pin(async move {
            let path = self.path(name).ok_or(StorageError::NotFound)?;
            Ok(self.head(&path).await?.2)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StorageResult<()>> {
        Box::pin(async move {
            let path = self.path(name).ok_or(StorageError::NotFound)?;
            // S3 answers a delete of a missing key as a success.
            self.head(&path).await?;
            self.store.delete(&path).await.map_err(storage_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use oxbase_test_support::MotoServer;

    use super::*;

    fn settings(endpoint: &str, bucket: &str, prefix: Option<&str>) -> S3Settings {
        S3Settings {
            bucket: Some(bucket.into()),
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint.into()),
            path_style: true,
            prefix: prefix.map(str::to_owned),
            access_key_id: Some("test".into()),
            secret_access_key: Some(oxbase_kit::Secret::new("test")),
            session_token: None,
        }
    }

    fn storage(prefix: Option<&str>) -> S3FileStorage {
        S3FileStorage::new(&settings("http://127.0.0.1:1", "b", prefix)).unwrap()
    }

    /// A bucket on a moto server of the test's own.
    fn bucket(prefix: Option<&str>) -> (MotoServer, S3FileStorage) {
        let moto = MotoServer::start();
        moto.create_bucket("files");
        let storage = S3FileStorage::new(&settings(&moto.url, "files", prefix)).unwrap();
        (moto, storage)
    }

    fn info(content_type: &str) -> FileInfo {
        FileInfo {
            content_type: Some(content_type.into()),
            ..FileInfo::default()
        }
    }

    fn chunks(parts: Vec<Vec<u8>>) -> ByteStream {
        stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p)))).boxed()
    }

    async fn read(storage: &S3FileStorage, name: &str, start: u64, len: u64) -> Vec<u8> {
        let file = storage.get(name).await.unwrap();
        collect(file.read(start, len).await.unwrap()).await.unwrap()
    }

    async fn collect(mut body: ByteStream) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// `{size}` bytes that differ from one position to the next.
    fn pattern(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i % 251) as u8).collect()
    }

    /// The multipart uploads the bucket has open.
    fn open_uploads(moto: &MotoServer) -> usize {
        moto.send("GET", "/files?uploads")
            .matches("<Upload>")
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_round_trip_through_a_bucket() {
        let (moto, storage) = bucket(Some("app"));
        let name = "dir/0a1b_a b é.txt";
        let mut stored = info("text/plain; charset=utf-8");
        stored.metadata.insert("owner".into(), json!("Zoë"));
        stored.tags.insert("kind".into(), json!("note"));
        let size = storage
            .put(
                name,
                stored.clone(),
                chunks(vec![b"hel".to_vec(), vec![], b"lo".to_vec()]),
            )
            .await
            .unwrap();
        assert_eq!(size, 5);
        let file = storage.get(name).await.unwrap();
        assert_eq!((file.size, &file.info), (5, &stored));
        assert_eq!(
            collect(file.read(0, 5).await.unwrap()).await.unwrap(),
            b"hello"
        );
        assert_eq!(read(&storage, name, 1, 3).await, b"ell");
        assert_eq!(read(&storage, name, 5, 0).await, b"");
        assert_eq!(storage.info(name).await.unwrap(), stored);
        // The key is below the prefix, the type the object's own.
        let listing = moto.send("GET", "/files?list-type=2");
        assert!(
            listing.contains("<Key>app/dir/0a1b_a b é.txt</Key>"),
            "{listing}"
        );
        let object = storage
            .store
            .get_opts(
                &storage.path(name).unwrap(),
                GetOptions::new().with_head(true),
            )
            .await
            .unwrap();
        assert_eq!(
            object
                .attributes
                .get(&Attribute::ContentType)
                .unwrap()
                .as_ref(),
            "text/plain; charset=utf-8"
        );

        // Replacing: a reader that found the old file fails rather than
        // reading the new one's bytes as the old one's.
        let old = storage.get(name).await.unwrap();
        storage
            .put(name, FileInfo::default(), chunks(vec![b"second".to_vec()]))
            .await
            .unwrap();
        assert!(old.read(0, 5).await.is_err());
        let file = storage.get(name).await.unwrap();
        assert_eq!((file.size, file.info.content_type), (6, None));
        assert_eq!(read(&storage, name, 0, 6).await, b"second");

        // A file larger than a part goes up in parts.
        let large = pattern(PART_SIZE + PART_SIZE / 2);
        let halves = vec![
            large[..PART_SIZE / 3].to_vec(),
            large[PART_SIZE / 3..].to_vec(),
        ];
        let size = storage
            .put("big.bin", info("application/x-big"), chunks(halves))
            .await
            .unwrap();
        assert_eq!(size, large.len() as u64);
        let file = storage.get("big.bin").await.unwrap();
        assert_eq!(file.size, large.len() as u64);
        assert_eq!(file.info.content_type.as_deref(), Some("application/x-big"));
        let (start, len) = (PART_SIZE as u64 - 10, 20);
        assert_eq!(
            read(&storage, "big.bin", start, len).await,
            &large[start as usize..(start + len) as usize]
        );
        assert_eq!(read(&storage, "big.bin", 0, file.size).await, large);
        assert_eq!(open_uploads(&moto), 0);

        storage.delete(name).await.unwrap();
        for result in [
            storage.get(name).await.map(drop),
            storage.info(name).await.map(drop),
            storage.delete(name).await,
            storage.delete("never.txt").await,
        ] {
            assert!(matches!(result, Err(StorageError::NotFound)), "{result:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_or_dropped_upload_leaves_nothing() {
        let (moto, storage) = bucket(None);
        let failing = |before: Vec<u8>| -> ByteStream {
            stream::iter([
                Ok(Bytes::from(before)),
                Err(std::io::Error::other("client went away")),
            ])
            .boxed()
        };
        // Small: it fails before anything is sent.
        let small = storage
            .put(
                "small.txt",
                info("text/plain"),
                failing(b"partial".to_vec()),
            )
            .await;
        assert!(matches!(small, Err(StorageError::Source(_))), "{small:?}");
        // Large: a part is up when it fails, and the upload is aborted.
        let large = storage
            .put(
                "large.bin",
                info("application/x"),
                failing(pattern(PART_SIZE + 1)),
            )
            .await;
        assert!(matches!(large, Err(StorageError::Source(_))), "{large:?}");
        assert_eq!(open_uploads(&moto), 0);

        // A request dropped while its body is still coming, past a part.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
        tx.send(Ok(Bytes::from(pattern(PART_SIZE + 1))))
            .await
            .unwrap();
        let body: ByteStream = stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        let mut put = storage.put("dropped.bin", info("application/x"), body);
        let started = async {
            while open_uploads(&moto) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            result = &mut put => panic!("the upload ended early: {result:?}"),
            () = started => {}
        }
        drop(put);
        drop(tx);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while open_uploads(&moto) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the upload was not aborted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        for name in ["small.txt", "large.bin", "dropped.bin"] {
            assert!(
                matches!(storage.get(name).await, Err(StorageError::NotFound)),
                "{name}"
            );
        }
        let listing = moto.send("GET", "/files?list-type=2");
        assert!(listing.contains("<KeyCount>0</KeyCount>"), "{listing}");
    }

    #[test]
    fn keys_are_the_names_below_the_prefix() {
        let plain = storage(None);
        assert_eq!(plain.path("a_b.txt").unwrap().as_ref(), "a_b.txt");
        let nested = storage(Some("/app/files/"));
        assert_eq!(
            nested.path("dir/a_b.txt").unwrap().as_ref(),
            "app/files/dir/a_b.txt"
        );
        for name in ["", "/a", "a/", "a//b", "..", "a/../b", ".", "a\nb"] {
            assert!(nested.path(name).is_none(), "{name:?}");
            assert!(plain.path(name).is_none(), "{name:?}");
        }
    }

    #[test]
    fn info_round_trips_through_ascii_metadata() {
        let mut info = FileInfo {
            content_type: Some("text/plain; charset=utf-8".into()),
            ..FileInfo::default()
        };
        info.metadata
            .insert("Städte  🙂".into(), json!("a  \"b\"\n"));
        info.tags.insert("n".into(), json!([1, {"x": null}]));
        let attributes = attributes(&info);
        let raw = attributes
            .get(&Attribute::Metadata(INFO_KEY.into()))
            .unwrap();
        assert!(
            raw.as_ref().bytes().all(|b| b.is_ascii_graphic()),
            "{raw:?}"
        );
        assert_eq!(info_from_attributes(&attributes), info);
        assert_eq!(
            attributes.get(&Attribute::ContentType).unwrap().as_ref(),
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn objects_stored_by_others_keep_their_type_and_metadata() {
        let attributes = Attributes::from_iter([
            (Attribute::ContentType, AttributeValue::from("image/png")),
            (
                Attribute::Metadata("owner".into()),
                AttributeValue::from("ann"),
            ),
        ]);
        let info = info_from_attributes(&attributes);
        assert_eq!(info.content_type.as_deref(), Some("image/png"));
        assert_eq!(
            info.metadata,
            json!({"owner": "ann"}).as_object().cloned().unwrap()
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let missing_bucket = S3FileStorage::new(&S3Settings {
            region: Some("us-east-1".into()),
            ..S3Settings::default()
        });
        // The bucket may come from AWS_BUCKET; without it, it is missing.
        if std::env::var_os("AWS_BUCKET").is_none() && std::env::var_os("AWS_BUCKET_NAME").is_none()
        {
            assert!(missing_bucket.unwrap_err().contains("bucket"));
        }
        let bad_endpoint = S3FileStorage::new(&S3Settings {
            bucket: Some("b".into()),
            endpoint: Some("not a url".into()),
            ..S3Settings::default()
        });
        assert!(bad_endpoint.is_err());
    }
}
