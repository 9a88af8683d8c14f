//! The off-site store behind a small synchronous facade: S3-compatible
//! stores and local folders through `object_store`, with its async runtime
//! kept in here.
//!
//! Uploads stream: [`Upload`] is an `io::Write` that cuts what it is given
//! into parts and sends each as soon as it is full, a few at a time, so
//! memory stays bounded whatever the file's size. Downloads stream the same
//! way through [`Store::reader`].
//!
//! Keys are used as written: `object_store`'s `Path::from` would
//! percent-encode a prefix's `é`, `~` or `%` into the key itself, so that
//! `s3://bkt/sauvegardés` would hold `sauvegard%C3%A9s/...`, out of reach
//! of `aws s3 cp` and of the listing. [`Store::key`] parses keys instead
//! (the URL is encoded on the wire, not the key), and refuses a key the
//! store could not hold as written (an empty, `.` or `..` part, as a
//! hostile manifest may name).
//!
//! A `file://` store is private like the local backups: folders upkeep
//! makes there are 0700 and the files it writes 0600 (staging files
//! included), whatever the umask.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, Checksum, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use tokio::task::JoinHandle;

use super::credentials;
use super::target::Target;
use crate::db::backups::MANIFEST_LIMIT;
use crate::fsx;

/// Ranged reads in flight at once (see [`Store::read_ranges`]).
pub const RANGES_IN_FLIGHT: usize = 8;

/// Parts in flight at once, per upload.
const IN_FLIGHT: usize = 4;
/// The size of a part; S3 wants at least 5 MiB but for the last.
const PART_SIZE: usize = 16 * 1024 * 1024;
/// S3 takes at most 10,000 parts: bigger files get bigger parts, with room
/// for encryption's few bytes a chunk.
const MAX_PARTS: u64 = 9_000;

pub struct Store {
    runtime: tokio::runtime::Runtime,
    backend: Backend,
    /// The URL, for messages: never holds a secret (they are refused).
    pub url: String,
    /// The key prefix of the URL's path (`upkeep` in `s3://bucket/upkeep`).
    prefix: String,
}

enum Backend {
    S3(Arc<AmazonS3>),
    Local(Arc<LocalFileSystem>, std::path::PathBuf),
}

/// An object's key (below the URL's prefix) and size.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub modified: jiff::Timestamp,
}

impl Store {
    /// Connects to the store of `target`. Nothing is sent yet: a store that
    /// cannot be reached is found by the first request.
    pub fn open(target: &Target) -> Result<Store> {
        // rustls takes its crypto from the process: ring, set once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("upkeep-offsite")
            .enable_all()
            .build()
            .context("cannot start the off-site client")?;
        let backend = match target {
            Target::S3 {
                bucket,
                endpoint,
                region,
                ..
            } => {
                let mut builder = credentials::builder_from_env()
                    .with_bucket_name(bucket)
                    .with_checksum_algorithm(Checksum::SHA256)
                    .with_conditional_put(S3ConditionalPut::ETagMatch)
                    .with_retry(RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(30),
                        ..RetryConfig::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(10))
                            .with_timeout(Duration::from_secs(300)),
                    );
                if let Some(region) = region {
                    builder = builder.with_region(region);
                } else if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    builder = builder.with_region("us-east-1");
                }
                if let Some(endpoint) = endpoint {
                    // S3-compatible stores are addressed by path.
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                builder = credentials::apply(builder, &target.shown())?;
                let s3 = builder.build().with_context(|| {
                    format!("cannot use the off-site store `{}`", target.shown())
                })?;
                Backend::S3(Arc::new(s3))
            }
            Target::File { root, .. } => {
                if !root.is_dir() {
                    anyhow::bail!(
                        "the off-site folder `{}` does not exist: create it (or mount the share), or fix backups.offsite.url in upkeep.yaml",
                        root.display()
                    );
                }
                let local = LocalFileSystem::new_with_prefix(root).with_context(|| {
                    format!("cannot use the off-site folder `{}`", root.display())
                })?;
                // As the store resolves it, so that its paths start with it.
                let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
                Backend::Local(Arc::new(local), root)
            }
        };
        Ok(Store {
            runtime,
            backend,
            url: target.shown(),
            prefix: target.prefix().to_string(),
        })
    }

    fn objects(&self) -> Arc<dyn ObjectStore> {
        match &self.backend {
            Backend::S3(s3) => s3.clone(),
            Backend::Local(local, _) => local.clone(),
        }
    }

    /// The store's key of `key` (below the URL's prefix), as written.
    fn key(&self, key: &str) -> Result<Key> {
        let full = match self.prefix.is_empty() {
            true => key.to_string(),
            false => format!("{}/{key}", self.prefix),
        };
        Key::parse(&full).map_err(|error| {
            anyhow!(
                "`{}` is not a key the off-site store `{}` can hold as written ({error}): \
                 nothing was read or changed there",
                full.escape_debug(),
                self.url
            )
        })
    }

    /// The objects under `folder` (a key prefix such as `production/`).
    pub fn list(&self, folder: &str) -> Result<Vec<Object>> {
        let objects = self.objects();
        let prefix = self.key(folder.trim_end_matches('/'))?;
        // What a listing gives back is the store's to say: only keys under
        // the prefix asked for are taken, so that cutting it off is sound.
        let under = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        let listed: Vec<_> = self
            .runtime
            .block_on(async { objects.list(Some(&prefix)).collect::<Vec<_>>().await });
        let mut found = Vec::new();
        for meta in listed {
            let meta = meta.map_err(|error| self.failed("list", folder, error))?;
            let Some(key) = meta
                .location
                .as_ref()
                .strip_prefix(&under)
                .filter(|key| key.starts_with(folder))
            else {
                continue;
            };
            found.push(Object {
                key: key.to_string(),
                size: meta.size,
                modified: jiff::Timestamp::from_second(meta.last_modified.timestamp())
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            });
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// The size of an object, or `None` when there is none.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        let objects = self.objects();
        let location = self.key(key)?;
        match self.runtime.block_on(objects.head(&location)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.failed("read", key, error)),
        }
    }

    /// A manifest's bytes. One over [`MANIFEST_LIMIT`] is damage, not a
    /// manifest: it is refused once that much has come, never read whole.
    pub fn read(&self, key: &str) -> Result<Vec<u8>> {
        let objects = self.objects();
        let location = self.key(key)?;
        let read = self.runtime.block_on(async {
            let mut stream = objects.get(&location).await?.into_stream();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if bytes.len() + chunk.len() > MANIFEST_LIMIT as usize {
                    return Ok(None);
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(bytes))
        });
        match read {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => bail!(
                "`{key}` at off-site store `{}` is over {}: a manifest is a few KiB, so this one is \
                 damaged (or not upkeep's); its backup is not used",
                self.url,
                fsx::human_size(MANIFEST_LIMIT)
            ),
            Err(error) => Err(self.failed("read", key, error)),
        }
    }

    /// Writes a small object only if none is there: `false` when one was.
    pub fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        let objects = self.objects();
        let location = self.key(key)?;
        self.private_folder(&location)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .runtime
            .block_on(objects.put_opts(&location, PutPayload::from(bytes), options))
        {
            Ok(_) => {
                self.private_file(&location);
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(error) => Err(self.failed("write", key, error)),
        }
    }

    /// Reads the `(key, range)` pairs of `wanted`, up to
    /// [`RANGES_IN_FLIGHT`] at once, handing each to `each` with its index
    /// as it arrives (in any order), on this thread. The first error
    /// stops the reads.
    pub fn read_ranges(
        &self,
        wanted: &[(String, std::ops::Range<u64>)],
        each: &mut dyn FnMut(usize, Bytes) -> Result<()>,
    ) -> Result<()> {
        let objects = self.objects();
        let mut reads = futures_util::stream::iter(wanted.iter().enumerate())
            .map(|(index, (key, range))| {
                let objects = Arc::clone(&objects);
                let location = self.key(key);
                let range = range.clone();
                async move {
                    let bytes = objects.get_range(&location?, range).await;
                    Ok::<_, anyhow::Error>((index, bytes))
                }
            })
            .buffer_unordered(RANGES_IN_FLIGHT);
        self.runtime.block_on(async {
            while let Some(read) = reads.next().await {
                let (index, bytes) = read?;
                let (key, range) = &wanted[index];
                let bytes = bytes.map_err(|error| self.failed("read", key, error))?;
                let want = range.end - range.start;
                if bytes.len() as u64 != want {
                    bail!(
                        "`{key}` at off-site store `{}` gave {} bytes of a range of {want}: it is shorter than its manifest says",
                        self.url,
                        bytes.len()
                    );
                }
                each(index, bytes)?;
            }
            Ok(())
        })
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let objects = self.objects();
        let location = self.key(key)?;
        match self.runtime.block_on(objects.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.failed("delete", key, error)),
        }
    }

    /// Streams an object: its size, and a reader of its bytes. The object
    /// comes in ranges of [`PART_SIZE`], [`IN_FLIGHT`] at a time, read in
    /// order: memory stays bounded, and the store serves ranges in parallel.
    pub fn reader(&self, key: &str) -> Result<(u64, Download<'_>)> {
        let objects = self.objects();
        let location = self.key(key)?;
        let size = self
            .runtime
            .block_on(objects.head(&location))
            .map_err(|error| self.failed("download", key, error))?
            .size;
        let mut download = Download {
            store: self,
            objects,
            location,
            key: key.to_string(),
            size,
            next: 0,
            pending: VecDeque::new(),
            current: Bytes::new(),
            at: 0,
        };
        download.request_more();
        Ok((size, download))
    }

    /// Starts a streamed upload to `key` of about `size` bytes, hashing what
    /// is sent when `hashed` (what is sent is not what was read: encrypted).
    /// For S3,
    /// `started` is told the upload's id before any part is sent, so that a
    /// crash can be cleaned up (see [`Store::abort`]).
    pub fn upload(
        &self,
        key: &str,
        size: u64,
        hashed: bool,
        started: &dyn Fn(&str) -> Result<()>,
    ) -> Result<Upload<'_>> {
        let location = self.key(key)?;
        let kind = match &self.backend {
            Backend::S3(s3) => {
                let id = self
                    .runtime
                    .block_on(s3.create_multipart(&location))
                    .map_err(|error| self.failed("upload", key, error))?;
                started(&id)?;
                Parts::S3 {
                    s3: s3.clone(),
                    id,
                    sent: VecDeque::new(),
                    done: Vec::new(),
                }
            }
            Backend::Local(local, _) => {
                self.private_folder(&location)?;
                let upload = self
                    .runtime
                    .block_on(local.put_multipart(&location))
                    .map_err(|error| self.failed("upload", key, error))?;
                // Its staging file (`NAME#N`) exists now, empty: private
                // before the first byte goes in.
                self.private_staging(&location);
                Parts::Other {
                    upload,
                    sent: VecDeque::new(),
                }
            }
        };
        Ok(Upload {
            store: self,
            key: key.to_string(),
            location,
            parts: kind,
            part_size: PART_SIZE.max(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20) as usize),
            buffer: Vec::new(),
            written: 0,
            hash: hashed.then(blake3::Hasher::new),
        })
    }

    /// Whether the store keeps uploads in progress that only their id can
    /// abort (S3's multipart uploads).
    pub fn tracks_uploads(&self) -> bool {
        matches!(self.backend, Backend::S3(_))
    }

    /// Aborts an upload a crash left behind (S3: its parts are dropped).
    /// One the store no longer knows is gone already (a crash may come
    /// after the upload completed). When the store answers but refuses,
    /// what it said comes back: nothing more can be done from here, and it
    /// must not stop the push. A store that cannot be reached is an error.
    pub fn abort(&self, key: &str, id: &str) -> Result<Option<String>> {
        let Backend::S3(s3) = &self.backend else {
            return Ok(None);
        };
        let location = self.key(key)?;
        match self
            .runtime
            .block_on(s3.abort_multipart(&location, &id.to_string()))
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(
                error @ (object_store::Error::PermissionDenied { .. }
                | object_store::Error::Precondition { .. }),
            ) => Ok(Some(credentials::mask(&error.to_string()))),
            Err(error) => Err(self.failed("clean up an upload of", key, error)),
        }
    }

    /// Removes what a crash left of uploads to a local folder: its
    /// `NAME#N` staging files under `folder` not written to for longer
    /// than `grace` (a younger one may be another host's upload in
    /// progress). Returns their keys. S3 uploads are journaled and aborted
    /// by id instead.
    pub fn sweep_staging(&self, folder: &str, grace: Duration) -> Vec<String> {
        let Backend::Local(_, root) = &self.backend else {
            return Vec::new();
        };
        let dir = root.join(&self.prefix).join(folder);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let staging = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            // A time in the future (another host's clock) is not old.
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > grace));
            if staging && old && std::fs::remove_file(entry.path()).is_ok() {
                removed.push(format!("{folder}/{name}"));
            }
        }
        removed
    }

    /// A local folder's file of `location`, for its mode: `None` on S3.
    fn local_path(&self, location: &Key) -> Option<std::path::PathBuf> {
        let Backend::Local(local, _) = &self.backend else {
            return None;
        };
        local.path_to_filesystem(location).ok()
    }

    /// Makes the folders of `location` below a local store's root, 0700:
    /// new ones, and those an older upkeep made readable by all. The root
    /// is the user's folder, left as it is.
    fn private_folder(&self, location: &Key) -> Result<()> {
        let (Some(path), Backend::Local(_, root)) = (self.local_path(location), &self.backend)
        else {
            return Ok(());
        };
        let Some(folder) = path.parent() else {
            return Ok(());
        };
        fsx::create_private_dir(folder)?;
        for dir in folder
            .ancestors()
            .take_while(|dir| dir.starts_with(root) && *dir != root)
        {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(())
    }

    /// Makes a local store's file of `location` 0600.
    fn private_file(&self, location: &Key) {
        if let Some(path) = self.local_path(location) {
            fsx::make_private(&path);
        }
    }

    /// Makes the staging files of `location` (`NAME#N`) 0600.
    fn private_staging(&self, location: &Key) {
        let Some(path) = self.local_path(location) else {
            return;
        };
        let (Some(folder), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let staging = format!("{}#", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(folder) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&staging) {
                fsx::make_private(&entry.path());
            }
        }
    }

    /// An error of the store, said for people: what failed, on which URL,
    /// and what to do, without any credential.
    fn failed(&self, what: &str, key: &str, error: object_store::Error) -> anyhow::Error {
        let text = credentials::mask(&format!("{error}"));
        let advice = advice(&text);
        anyhow!(
            "cannot {what} `{key}` at off-site store `{}`: {text}{advice}",
            self.url
        )
    }
}

/// What to do about a store error, from what the store said.
fn advice(text: &str) -> &'static str {
    let has = |needle: &str| text.contains(needle);
    if has("NoSuchBucket") || has("bucket does not exist") || has("The specified bucket") {
        "; the bucket does not exist: create it, or fix backups.offsite.url in upkeep.yaml"
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
        || has("403")
    {
        "; the store refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and its credentials file)"
    } else if has("error sending request")
        || has("connect")
        || has("Connection refused")
        || has("timed out")
    {
        "; the store cannot be reached: check backups.offsite.endpoint (or AWS_ENDPOINT_URL) and that the store is up"
    } else {
        ""
    }
}

enum Parts {
    S3 {
        s3: Arc<AmazonS3>,
        id: String,
        /// Parts in flight, oldest first, and the ids of those done.
        sent: VecDeque<JoinHandle<object_store::Result<PartId>>>,
        done: Vec<PartId>,
    },
    Other {
        upload: Box<dyn MultipartUpload>,
        sent: VecDeque<JoinHandle<object_store::Result<()>>>,
    },
}

/// A streamed upload in progress; see [`Store::upload`]. Dropped without
/// [`Upload::finish`], it leaves parts behind for [`Upload::abort`] or the
/// next push to clean.
pub struct Upload<'a> {
    store: &'a Store,
    key: String,
    location: Key,
    parts: Parts,
    part_size: usize,
    buffer: Vec<u8>,
    written: u64,
    /// The uploaded bytes' hash, as the store holds them, when asked for.
    hash: Option<blake3::Hasher>,
}

/// What a finished upload sent.
pub struct Uploaded {
    pub size: u64,
    /// When the upload was asked to hash what it sent.
    pub blake3: Option<blake3::Hash>,
}

impl Upload<'_> {
    /// Sends the full buffer as the next part, after waiting for the
    /// oldest part in flight when there are already [`IN_FLIGHT`].
    fn send(&mut self) -> Result<()> {
        let data = PutPayload::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(self.part_size),
        ));
        let runtime = &self.store.runtime;
        let waited = match &mut self.parts {
            Parts::S3 { s3, id, sent, done } => {
                let waited = wait_for_room(runtime, sent).map(|part| done.extend(part));
                let (s3, id, location) = (s3.clone(), id.clone(), self.location.clone());
                let index = done.len() + sent.len();
                sent.push_back(
                    runtime.spawn(async move { s3.put_part(&location, &id, index, data).await }),
                );
                waited
            }
            Parts::Other { upload, sent } => {
                let waited = wait_for_room(runtime, sent).map(drop);
                sent.push_back(runtime.spawn(upload.put_part(data)));
                waited
            }
        };
        waited.map_err(|error| self.store.failed("upload", &self.key, error))
    }

    /// Sends what is left, waits for every part, and completes the upload:
    /// only then does the object exist. Any failure aborts it.
    pub fn finish(mut self) -> Result<Uploaded> {
        if !self.buffer.is_empty() || self.no_part_yet() {
            self.send()?;
        }
        let store = self.store;
        let key = self.key.clone();
        let done = store.runtime.block_on(async {
            match &mut self.parts {
                Parts::S3 { s3, id, sent, done } => {
                    for part in sent.drain(..) {
                        done.push(part.await.map_err(join_error)??);
                    }
                    s3.complete_multipart(&self.location, id, std::mem::take(done))
                        .await?;
                    Ok(())
                }
                Parts::Other { upload, sent } => {
                    for part in sent.drain(..) {
                        part.await.map_err(join_error)??;
                    }
                    upload.complete().await.map(drop)
                }
            }
        });
        match done {
            Ok(()) => Ok(Uploaded {
                size: self.written,
                blake3: self.hash.as_ref().map(blake3::Hasher::finalize),
            }),
            Err(error) => {
                let error = store.failed("upload", &key, error);
                self.abort();
                Err(error)
            }
        }
    }

    fn no_part_yet(&self) -> bool {
        match &self.parts {
            Parts::S3 { sent, done, .. } => sent.is_empty() && done.is_empty(),
            Parts::Other { sent, .. } => sent.is_empty(),
        }
    }

    /// Drops the parts sent so far; the object is never created.
    pub fn abort(mut self) {
        let runtime = &self.store.runtime;
        match &mut self.parts {
            Parts::S3 { s3, id, sent, .. } => {
                for part in sent.drain(..) {
                    part.abort();
                }
                let _ = runtime.block_on(s3.abort_multipart(&self.location, id));
            }
            Parts::Other { upload, sent } => {
                for part in sent.drain(..) {
                    part.abort();
                }
                let _ = runtime.block_on(upload.abort());
            }
        }
    }
}

/// With [`IN_FLIGHT`] parts in flight, waits for the oldest: its result
/// (`None` when there was room already).
fn wait_for_room<T>(
    runtime: &tokio::runtime::Runtime,
    sent: &mut VecDeque<JoinHandle<object_store::Result<T>>>,
) -> object_store::Result<Option<T>> {
    if sent.len() < IN_FLIGHT {
        return Ok(None);
    }
    let Some(oldest) = sent.pop_front() else {
        return Ok(None);
    };
    runtime
        .block_on(oldest)
        .map_err(join_error)
        .and_then(|part| part)
        .map(Some)
}

fn join_error(error: tokio::task::JoinError) -> object_store::Error {
    object_store::Error::Generic {
        store: "upload",
        source: Box::new(error),
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = self.part_size - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if let Some(hash) = &mut self.hash {
            hash.update(&bytes[..taken]);
        }
        self.written += taken as u64;
        if self.buffer.len() == self.part_size {
            self.send().map_err(std::io::Error::other)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The reading end of [`Store::reader`].
pub struct Download<'a> {
    store: &'a Store,
    objects: Arc<dyn ObjectStore>,
    location: Key,
    key: String,
    size: u64,
    /// Where the next range to request starts.
    next: u64,
    /// Ranges requested, in order.
    pending: VecDeque<JoinHandle<object_store::Result<Bytes>>>,
    current: Bytes,
    at: usize,
}

impl Download<'_> {
    fn request_more(&mut self) {
        while self.pending.len() < IN_FLIGHT && self.next < self.size {
            let end = (self.next + PART_SIZE as u64).min(self.size);
            let (objects, location, range) =
                (self.objects.clone(), self.location.clone(), self.next..end);
            self.pending.push_back(
                self.store
                    .runtime
                    .spawn(async move { objects.get_range(&location, range).await }),
            );
            self.next = end;
        }
    }
}

impl Download<'_> {
    /// The next range as it came, without a copy; `None` at the end.
    pub fn next_range(&mut self) -> std::io::Result<Option<Bytes>> {
        if self.at < self.current.len() {
            let rest = self.current.slice(self.at..);
            self.at = self.current.len();
            return Ok(Some(rest));
        }
        let Some(range) = self.pending.pop_front() else {
            return Ok(None);
        };
        let bytes = self
            .store
            .runtime
            .block_on(range)
            .map_err(join_error)
            .and_then(|bytes| bytes)
            .map_err(|error| {
                std::io::Error::other(self.store.failed("download", &self.key, error))
            })?;
        self.request_more();
        Ok(Some(bytes))
    }
}

impl Read for Download<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.current.len() {
            match self.next_range()? {
                Some(bytes) => {
                    self.current = bytes;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
