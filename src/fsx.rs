//! File-system moves that must survive a crash: copy with a running hash,
//! atomic writes, directory syncs, free space.
//!
//! "Atomic" here means: a file appears under its final name only once its
//! bytes are complete and synced, and the folder entry itself is synced, so a
//! crash at any moment leaves either the old state or the new one.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Prefix of upkeep's temporary files and folders: never a backup name, and
/// swept by the next backup or restore if a crash left one (see
/// [`sweep_partials`]).
pub const PARTIAL_PREFIX: &str = ".upkeep-partial-";

/// Copies `source` into `target` (already open, empty) the way `cp` does:
/// in the kernel (`copy_file_range`), in chunks so `progress` can follow.
/// With `writeback`, each chunk is handed to the disk as soon as it is
/// copied, so that the caller's final sync has little left to write (`cp`
/// then `sync` writes everything only at the end). Does not sync.
/// `input` is opened by the caller: see `db::backup` on POSIX locks.
pub fn copy_fast(
    input: &File,
    target: &mut File,
    writeback: bool,
    progress: &dyn Fn(u64),
) -> Result<u64> {
    const CHUNK: u64 = 64 << 20;
    // Where the file system shares blocks (XFS with reflink, btrfs), the
    // copy is a clone: instant whatever the size, and no block is written.
    if let Some(size) = clone(input, target) {
        progress(size);
        return Ok(size);
    }
    let mut copied = 0u64;
    loop {
        let n = std::io::copy(&mut input.take(CHUNK), target)
            .context("cannot write the copy (is the disk full?)")?;
        if n == 0 {
            break;
        }
        if writeback {
            start_writeback(target, copied, n);
        }
        copied += n;
        progress(copied);
    }
    Ok(copied)
}

/// Clones `input` into the empty `target` (`FICLONE`), when the file
/// system can; the size cloned (the target's length), or `None` to copy
/// instead. The clone is of one moment: the file system holds both files'
/// locks while it shares the blocks.
#[cfg(target_os = "linux")]
pub fn clone(input: &File, target: &File) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // _IOW(0x94, 9, int), from linux/fs.h.
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: two valid descriptors; the call only reads its arguments.
    let status = unsafe { libc::ioctl(target.as_raw_fd(), FICLONE, input.as_raw_fd()) };
    if status != 0 {
        return None;
    }
    target.metadata().ok().map(|meta| meta.len())
}

#[cfg(not(target_os = "linux"))]
pub fn clone(_input: &File, _target: &File) -> Option<u64> {
    None
}

/// Asks the kernel to start writing a range of `file` to disk, without
/// waiting. Only a hint: the caller's `sync_all` is what makes it durable.
#[cfg(target_os = "linux")]
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid descriptor; the call only reads its arguments.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// A reader of a file that another thread is writing: it reads only what
/// the writer has reported complete (`written` receives byte counts, as
/// [`copy_fast`]'s progress gives them), and on to the end once the writer
/// is done (the sender dropped). So a copy can be read back from the page
/// cache in step with the copy, instead of after it.
pub struct Following {
    file: File,
    written: std::sync::mpsc::Receiver<u64>,
    limit: u64,
    pos: u64,
}

impl Following {
    pub fn open(path: &Path, written: std::sync::mpsc::Receiver<u64>) -> Result<Following> {
        let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
        Ok(Following {
            file,
            written,
            limit: 0,
            pos: 0,
        })
    }
}

impl Read for Following {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.limit {
            // The writer is done: read to the end of the file.
            self.limit = self.written.recv().unwrap_or(u64::MAX);
        }
        let room = usize::try_from(self.limit - self.pos).unwrap_or(usize::MAX);
        let want = buffer.len().min(room);
        let n = self.file.read(&mut buffer[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The blake3 hash of a file, read once.
pub fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    hasher
        .update_reader(file)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    Ok(hasher.finalize())
}

/// A small file's bytes, refused (`InvalidData`) once it is over `limit`
/// bytes rather than read whole: for what a damaged or planted file could
/// make huge (a manifest).
pub fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("`{}` is over {}", path.display(), human_size(limit)),
        ));
    }
    Ok(bytes)
}

/// Who is told of each temporary file before it is created (see
/// [`announce_temporaries`]).
type Announce = Box<dyn Fn(&Path) -> std::io::Result<()> + Send>;

static ANNOUNCE: std::sync::Mutex<Option<Announce>> = std::sync::Mutex::new(None);

/// Until the guard is dropped, `announce` is told the path of every
/// temporary file this process makes, before it is created: a pipeline run
/// writes it to its journal, so that `upkeep recover` removes what a run
/// killed in the middle of a copy left (a backup's partial file can be as
/// large as the database). A temporary that cannot be announced is not made.
pub fn announce_temporaries(announce: Announce) -> AnnounceGuard {
    *ANNOUNCE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(announce);
    AnnounceGuard
}

/// Stops announcing temporaries when dropped.
pub struct AnnounceGuard;

impl Drop for AnnounceGuard {
    fn drop(&mut self) {
        *ANNOUNCE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

/// Tells the announcer (see [`announce_temporaries`]) of `path`, before it
/// is created.
fn announce(path: &Path) -> std::io::Result<()> {
    match &*ANNOUNCE.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(announce) => announce(&std::path::absolute(path)?),
        None => Ok(()),
    }
}

/// A temporary file in `dir`, readable by its owner only, removed on drop
/// unless persisted; announced first (see [`announce_temporaries`]). It is
/// [held](hold) while open: a sweep leaves it alone, whoever sweeps.
pub fn partial_file(dir: &Path) -> Result<tempfile::NamedTempFile> {
    for _ in 0..HOLD_ATTEMPTS {
        let partial = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .make_in(dir, |path| {
                announce(path)?;
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(PRIVATE_FILE)
                    .open(path)
            })
            .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
        if hold(partial.as_file(), partial.path()) {
            return Ok(partial);
        }
    }
    Err(lost(dir))
}

/// A temporary folder in `dir` (mode 0700) for files that another process
/// writes (a snapshot hook) or a live copy, removed with what it holds when
/// dropped; announced first (see [`announce_temporaries`]). Held like a
/// [`partial_file`], so that no sweep removes it while its owner lives.
pub struct PartialDir {
    path: PathBuf,
    _held: File,
}

impl PartialDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PartialDir {
    /// Removed while still held: `_held` closes after this.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A new [`PartialDir`] in `dir`.
pub fn partial_dir(dir: &Path) -> Result<PartialDir> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..HOLD_ATTEMPTS {
        let path = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .make_in(dir, |path| {
                announce(path)?;
                std::fs::DirBuilder::new().mode(0o700).create(path)
            })
            .with_context(|| format!("cannot create a temporary folder in `{}`", dir.display()))?
            .into_temp_path()
            .keep()
            .with_context(|| format!("cannot keep a temporary folder in `{}`", dir.display()))?;
        let held = match File::open(&path) {
            Ok(held) => held,
            // A sweep got to it first.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(error).with_context(|| format!("cannot open `{}`", path.display()));
            }
        };
        if hold(&held, &path) {
            return Ok(PartialDir { path, _held: held });
        }
    }
    Err(lost(dir))
}

/// Removes a temporary file, or folder with what it holds, that a run
/// killed in the middle left (see [`announce_temporaries`]).
pub fn remove_partial(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    }
}

/// How many new names [`partial_file`] and [`partial_dir`] try while
/// sweeps remove them as they are made.
const HOLD_ATTEMPTS: usize = 8;

fn lost(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot keep a temporary file in `{}`: each new one was removed at once; \
         is another program removing upkeep's `{PARTIAL_PREFIX}*` files?",
        dir.display()
    )
}

/// Marks a temporary file or folder upkeep just created as in use, for as
/// long as `handle` is open: an exclusive `flock`, which the kernel drops
/// when the process dies, so that [`sweep_partials`] removes what a crash
/// left and never what a live command (`check` takes no run lock) still
/// works on. `false` when a sweep got to `path` between its creation and
/// the lock: the caller takes another name. Where the file system has no
/// locks, nothing is held, and sweeps remove nothing either.
fn hold(handle: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match handle.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return false,
        Err(std::fs::TryLockError::Error(_)) => return true,
    }
    match (handle.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// Removes the temporary files and folders that a crashed upkeep left in
/// `dir` (and a `.wal` DuckDB left beside one). Those of a live upkeep are
/// [held](hold): left alone, so that a command never deletes another's
/// work in progress (a `check` of a running app writes its snapshot here
/// without the run lock).
pub fn sweep_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        // A `.wal` goes with its database file, swept or kept with it.
        if !name.starts_with(PARTIAL_PREFIX)
            || !(kind.is_file() || kind.is_dir())
            || name
                .strip_suffix(".wal")
                .is_some_and(|base| dir.join(base).exists())
        {
            continue;
        }
        // No symlink is followed, no FIFO waited on.
        let Ok(handle) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        if handle.try_lock().is_err() {
            continue;
        }
        if kind.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(with_suffix(&path, ".wal"));
        }
    }
}

/// Gives a complete, synced temporary file its final name without ever
/// replacing an existing file (a hard link fails if the name is taken), then
/// syncs the folder.
pub fn publish(partial: tempfile::NamedTempFile, target: &Path) -> Result<()> {
    std::fs::hard_link(partial.path(), target)
        .with_context(|| format!("cannot create `{}`", target.display()))?;
    drop(partial);
    sync_parent(target)
}

/// Writes `bytes` to `target` atomically (temporary file, sync, rename,
/// folder sync), readable by its owner only.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent(target);
    let mut partial = partial_file(&dir)?;
    partial
        .write_all(bytes)
        .and_then(|()| partial.as_file().sync_all())
        .with_context(|| format!("cannot write `{}`", target.display()))?;
    partial
        .persist(target)
        .with_context(|| format!("cannot create `{}`", target.display()))?;
    sync_parent(target)
}

/// Copies `from` to a new file `to` (never replacing one), readable by its
/// owner only, synced with its folder.
pub fn copy_private(from: &Path, to: &Path) -> Result<()> {
    let mut input =
        File::open(from).with_context(|| format!("cannot read `{}`", from.display()))?;
    let mut partial = partial_file(&parent(to))?;
    std::io::copy(&mut input, partial.as_file_mut())
        .and_then(|_| partial.as_file().sync_all())
        .with_context(|| format!("cannot copy `{}` to `{}`", from.display(), to.display()))?;
    publish(partial, to)
}

/// Renames `from` to `to` and syncs both folders.
pub fn rename_synced(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("cannot move `{}` to `{}`", from.display(), to.display()))?;
    sync_parent(to)?;
    if parent(from) != parent(to) {
        sync_parent(from)?;
    }
    Ok(())
}

/// Makes a file readable and writable by its owner only: one that upkeep
/// moved into a folder of user data (quarantine, aside) keeps the mode it
/// had, and that folder's own mode is whatever it was before upkeep; an
/// older upkeep may have left a lock or journal readable by all. Best
/// effort, as the move is done by then: a file that another user owns
/// cannot be changed (a moved one stays in the new, private (0700) folder
/// upkeep made for it).
pub fn make_private(path: &Path) {
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE));
}

/// Options that create a file readable and writable by its owner only, for
/// what upkeep keeps in `state_dir` (lock, journals, run logs): a folder
/// that already exists may let others in.
pub fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.mode(PRIVATE_FILE);
    options
}

/// Opens (creating it, private) a file that is only ever locked, never
/// read for its bytes by the lock's users: upkeep's lock, the rounds
/// file, a replicator's lock.
pub fn open_lock_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open `{}`", path.display()))
}

/// The mode of the files upkeep creates for itself or moves out of the way.
pub const PRIVATE_FILE: u32 = 0o600;

/// Creates a folder (and its parents) readable by its owner only. A folder
/// that exists already is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create folder `{}`", dir.display()))
}

/// Syncs the folder holding `path`, so that a rename or new entry in it
/// survives a crash.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = parent(path);
    File::open(&dir)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("cannot sync folder `{}`", dir.display()))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Bytes available to an unprivileged writer in the file system of `dir`.
pub fn free_space(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("bad path `{}`", dir.display()))?;
    // SAFETY: statvfs only fills in the struct; the path is NUL-terminated.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read free space of `{}`", dir.display()));
    }
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// The path of `file` with `suffix` appended to its name (`data.duckdb` +
/// `.wal` = `data.duckdb.wal`).
pub fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// `1.5 GiB`-style sizes for people.
pub fn human_size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
