//! Live copies: a consistent copy of a database that a running app holds
//! open, read with plain descriptors in upkeep's own process (never DuckDB,
//! never a lock on the file), with no help from the app.
//!
//! The rule, and why it is enough, are argued from DuckDB 2.0's source in
//! `docs/live-copies.md`. One attempt:
//!
//! 1. read the 12 KiB of headers (H0);
//! 2. read the `.wal` to its end and keep it up to its last `WAL_FLUSH`;
//! 3. copy the file to its end, headers (H1) first, every byte;
//! 4. read the headers again (H2) and look at the `.wal` path again.
//!
//! The copy is kept when H0 = H1 = H2 (no checkpoint wrote a header
//! meanwhile), the kept `.wal` is of H1's checkpoint, holds no `CHECKPOINT`
//! entry (none was under way) and is still the same file, and every block
//! in use by H1 lies in the copy and verifies. Otherwise the attempt is
//! retried within a bound, and then refused: the caller falls back.
//!
//! The `.wal` (DuckDB `write_ahead_log.cpp`): an unframed version entry
//! (u16 field ids, LEB128 values: 100 = 98, 101 = version, 102 = the
//! database identifier as a list of 16, 103 = the checkpoint iteration,
//! 0xFFFF), then entries framed as u64 size, u64 checksum of the payload
//! (DuckDB's block checksum), payload. A payload starts with field 100, its
//! type: 99 `CHECKPOINT`, 100 `WAL_FLUSH` (the end of a commit).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::db::blocks;
use crate::db::header::{self, BLOCKS_START, Header};
use crate::db::layout;
use crate::db::wal::{
    CHECKSUMMED_VERSION, END_OF_OBJECT, FIELD_CHECKPOINT_ITERATION, FIELD_DB_IDENTIFIER,
    FIELD_TYPE, FIELD_VERSION, Fields, MAX_ENTRY, VersionEntry, WAL_CHECKPOINT, WAL_FLUSH,
    WAL_VERSION_ENTRY,
};
use crate::fsx;

mod onto;
pub use onto::{Base, copy_onto};

/// Attempts before giving up.
const MAX_ATTEMPTS: u32 = 8;
/// No new attempt starts after this, or after four times the first
/// attempt's duration, whichever is longer.
const MIN_BUDGET: Duration = Duration::from_secs(30);
/// How often the headers are polled while a checkpoint is under way.
const POLL: Duration = Duration::from_millis(25);
/// A block in use that fails its checksum is read again this many times
/// (a metadata block being rewritten in place by a checkpoint under way).
const REREADS: u32 = 3;
const REREAD_PAUSE: Duration = Duration::from_millis(20);
/// Blocks read at once.
const BATCH_BLOCKS: u64 = 32;

/// When a running app's database may be copied live (`backups.live` in
/// upkeep.yaml). The rule is proven for DuckDB 2.0 and later only: before
/// it, a checkpoint could reuse freed blocks before its header was on disk
/// (see docs/live-copies.md), so a copy could hold blocks of two states
/// whose checksums all verify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// When the file itself proves that DuckDB 2.0 or later writes it (its
    /// storage version is v2.0.0, which no older DuckDB opens).
    #[default]
    Auto,
    /// Whatever storage version upkeep reads: the user says the app runs
    /// DuckDB 2.0 or later.
    Always,
    /// Never: the app's snapshot hook or a window.
    Never,
}

impl Policy {
    /// Why the database whose header is `header` is not copied live, if it
    /// is not.
    pub fn refuses(self, header: &Header) -> Option<String> {
        const V2: u64 = 999;
        match self {
            Policy::Never => Some("`backups.live: never` in upkeep.yaml".to_string()),
            Policy::Auto if header.version_number != V2 => Some(format!(
                "its storage version ({}) does not prove the app runs DuckDB 2.0 or later, \
                 which live copies need; set `backups.live: always` in upkeep.yaml if it does",
                header.storage_version().map_or_else(
                    || header.version_number.to_string(),
                    |v| v.as_str().to_string()
                )
            )),
            _ => None,
        }
    }
}

/// A live copy, in place and synced.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The copy of the database file.
    pub db: PathBuf,
    /// The copy of the `.wal`, when it held committed transactions.
    pub wal: Option<PathBuf>,
    /// The checkpoint iteration of the copy's header.
    pub iteration: u64,
    /// Transactions in the copied `.wal` (its `WAL_FLUSH` entries).
    pub wal_commits: u64,
    /// The device and inode of the live `.wal` it was copied from (still
    /// that file when the copy ended): where its commits go on.
    pub wal_file: Option<(u64, u64)>,
    /// Bytes of the database file copied.
    pub size: u64,
    /// Attempts made, the last one kept.
    pub attempts: u32,
    /// Why each earlier attempt was not kept.
    pub retried: Vec<String>,
    /// Whether the kept attempt cloned the file (`FICLONE`: XFS with
    /// reflink, btrfs) instead of reading it.
    pub cloned: bool,
    /// How long the kept attempt took to take the file's bytes: the clone,
    /// or the read and write (with the checksums of each block as it
    /// passed). A clone's blocks are checked after, as verification.
    pub copy_time: Duration,
}

/// Why there is no live copy.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Nothing a retry can change (a format upkeep does not read): fall
    /// back at once.
    #[error(
        "no live copy of `{}`: {reason}; back it up with the app's snapshot hook or a window",
        db.display()
    )]
    Unsupported { db: PathBuf, reason: String },
    /// Every attempt met a checkpoint, or the `.wal` changed under it.
    #[error(
        "no consistent live copy of `{}` after {attempts} attempt(s): {last}; back it up with the app's snapshot hook or a window",
        db.display()
    )]
    Unsettled {
        db: PathBuf,
        attempts: u32,
        last: String,
    },
    /// Reading the live files or writing the copy failed.
    #[error("live copy of `{}` failed: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why one attempt was not kept, and what to do before the next.
#[derive(Debug)]
enum Retry {
    /// A checkpoint wrote a header during the attempt, or a `.wal` was
    /// replaced: the next checkpoint is as far away as it gets, retry now.
    Now(String),
    /// A checkpoint is under way: retry once the headers differ from these
    /// (H0), when it has written its header.
    AfterCheckpoint(String, Vec<u8>),
}

/// Copies the database `db`, held open by a running app, and its `.wal`
/// at `wal`, into `dest_dir` (same file names; neither may exist there).
pub fn copy(db: &Path, wal: &Path, dest_dir: &Path) -> Result<Copied, Refused> {
    let name = db.file_name().unwrap_or_else(|| "data.duckdb".as_ref());
    let dest_db = dest_dir.join(name);
    let dest_wal = fsx::with_suffix(&dest_db, ".wal");
    let live = File::open(db).map_err(io(db))?;
    let copy = fsx::private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&dest_db)
        .map_err(io(&dest_db))?;
    let wal_copy = fsx::private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&dest_wal)
        .map_err(io(&dest_wal))?;
    let files = Files {
        db,
        wal,
        live: &live,
        copy: &copy,
        copy_path: &dest_db,
        wal_copy: &wal_copy,
        wal_copy_path: &dest_wal,
    };
    let result = attempts(&files, None);
    match &result {
        Ok(kept) if kept.wal_commits > 0 => {}
        _ => {
            let _ = std::fs::remove_file(&dest_wal);
        }
    }
    if result.is_err() {
        let _ = std::fs::remove_file(&dest_db);
    }
    let kept = result?;
    copy.sync_all().map_err(io(&dest_db))?;
    let wal = if kept.wal_commits > 0 {
        wal_copy.sync_all().map_err(io(&dest_wal))?;
        Some(dest_wal)
    } else {
        None
    };
    fsx::sync_parent(&dest_db).map_err(|error| Refused::Io {
        path: dest_dir.to_path_buf(),
        source: std::io::Error::other(format!("{error:#}")),
    })?;
    Ok(kept.copied(dest_db, wal))
}

/// A live copy that stands on its own: [`copy`], then, when the copied
/// `.wal` holds commits, DuckDB replays it into the copy and checkpoints
/// (the copy only: the live file is never opened with DuckDB). A refusal
/// is an error whose cause is the [`Refused`].
pub fn copy_whole(db: &Path, dest_dir: &Path) -> anyhow::Result<Copied> {
    let mut copied = copy(db, &crate::db::wal::path_of(db), dest_dir)?;
    if copied.wal.take().is_some() {
        crate::db::wal::replay(&copied.db).map_err(|error| {
            anyhow::anyhow!(
                "the live copy of `{}`: {error:#}; nothing was kept",
                db.display()
            )
        })?;
    }
    Ok(copied)
}

struct Files<'a> {
    db: &'a Path,
    wal: &'a Path,
    live: &'a File,
    copy: &'a File,
    copy_path: &'a Path,
    wal_copy: &'a File,
    wal_copy_path: &'a Path,
}

struct Kept {
    iteration: u64,
    wal_commits: u64,
    wal_file: Option<(u64, u64)>,
    size: u64,
    attempts: u32,
    retried: Vec<String>,
    cloned: bool,
    copy_time: Duration,
}

impl Kept {
    /// The kept attempt as a copy of the file at `db`, its `.wal` at `wal`.
    fn copied(self, db: PathBuf, wal: Option<PathBuf>) -> Copied {
        Copied {
            db,
            wal,
            iteration: self.iteration,
            wal_commits: self.wal_commits,
            wal_file: self.wal_file,
            size: self.size,
            attempts: self.attempts,
            retried: self.retried,
            cloned: self.cloned,
            copy_time: self.copy_time,
        }
    }
}

/// Attempts until one is kept, within the bound.
fn attempts(files: &Files, mut base: Option<&mut Base>) -> Result<Kept, Refused> {
    let started = Instant::now();
    let mut budget = MIN_BUDGET;
    let mut retried = Vec::new();
    let mut in_a_row = 0u32;
    for attempt in 1..=MAX_ATTEMPTS {
        let begun = Instant::now();
        let outcome = one_attempt(files, base.as_deref_mut())?;
        if attempt == 1 {
            budget = budget.max(begun.elapsed() * 4);
        }
        let retry = match outcome {
            Ok(mut kept) => {
                kept.attempts = attempt;
                kept.retried = retried;
                return Ok(kept);
            }
            Err(retry) => retry,
        };
        let out_of_time = started.elapsed() >= budget;
        match retry {
            Retry::Now(reason) => {
                retried.push(reason);
                in_a_row += 1;
                if out_of_time || attempt == MAX_ATTEMPTS {
                    break;
                }
                // Checkpoints one after the other: back off a little.
                if in_a_row > 2 {
                    std::thread::sleep(Duration::from_millis(50) * (1u32 << (in_a_row - 3).min(6)));
                }
            }
            Retry::AfterCheckpoint(reason, h0) => {
                retried.push(reason);
                in_a_row = 0;
                if out_of_time || attempt == MAX_ATTEMPTS {
                    break;
                }
                wait_for_header(files, &h0, budget.saturating_sub(started.elapsed()))?;
            }
        }
    }
    Err(Refused::Unsettled {
        db: files.db.to_path_buf(),
        attempts: retried.len() as u32,
        last: retried.last().cloned().unwrap_or_default(),
    })
}

/// Waits, at most `limit`, until the live headers differ from `h0` (the
/// checkpoint under way has written its header).
fn wait_for_header(files: &Files, h0: &[u8], limit: Duration) -> Result<(), Refused> {
    let until = Instant::now() + limit;
    while read_headers(files.live).map_err(io(files.db))? == h0 && Instant::now() < until {
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// One attempt: steps 1 to 4 and the checks (see the module docs).
fn one_attempt(files: &Files, mut base: Option<&mut Base>) -> Result<Result<Kept, Retry>, Refused> {
    // 1. H0, before the .wal: for a .wal without an iteration (storage
    // before v1.3.0), only the unchanged header proves its generation.
    let h0 = read_headers(files.live).map_err(io(files.db))?;
    let size = files.live.metadata().map_err(io(files.db))?.len();
    let header = match header::parse(&h0, size) {
        Ok(header) => header,
        Err(problem) => return Err(unsupported(files, problem.to_string())),
    };
    supported(files, &header)?;
    if !header.bad_headers.is_empty() {
        return Ok(Err(Retry::Now(
            "a header failed its checksum (a checkpoint was writing it)".to_string(),
        )));
    }

    // 2. The .wal, kept up to its last commit.
    let wal = match read_wal(files)? {
        Ok(wal) => wal,
        Err(reason) => return Err(unsupported(files, reason)),
    };
    if wal.kept > 0 {
        if let Some(identifier) = wal.db_identifier
            && identifier != header.db_identifier
        {
            return Err(unsupported(
                files,
                format!(
                    "`{}` belongs to another database (its identifier differs)",
                    files.wal.display()
                ),
            ));
        }
        if let Some(iteration) = wal.iteration
            && iteration != header.iteration
        {
            return Ok(Err(Retry::Now(format!(
                "the `.wal` is of checkpoint {iteration}, the file of checkpoint {} (a checkpoint was ending)",
                header.iteration
            ))));
        }
        if wal.checkpoint {
            return Ok(Err(Retry::AfterCheckpoint(
                format!(
                    "a checkpoint was under way after checkpoint {}",
                    header.iteration
                ),
                h0,
            )));
        }
    }

    // 3. The file, to its end as found now.
    let copying = match base.as_deref_mut() {
        Some(base) => onto::top_up_file(files, &header, &h0, base)?,
        None => copy_file(files, &header, &h0)?,
    };
    let (mut bad, copied_size, cloned, copy_time) = match copying {
        Copying::Done {
            bad,
            size,
            cloned,
            took,
        } => (bad, size, cloned, took),
        Copying::HeaderMoved => return Ok(Err(moved(&header))),
    };

    // F: every block in use by H1 is in the copy and verifies; a block
    // torn by a checkpoint rewriting metadata in place is read again.
    let mut rereads = 0;
    loop {
        let damage = layout::damage(files.copy, &header, copied_size, &bad);
        if damage.missing.is_some() || !damage.headers.is_empty() {
            if read_headers(files.live).map_err(io(files.db))? != h0 {
                return Ok(Err(moved(&header)));
            }
            let reason = damage
                .truncation_message(copied_size, &header)
                .unwrap_or_else(|| "a header of the copy fails its checksum".to_string());
            return Ok(Err(Retry::AfterCheckpoint(reason, h0)));
        }
        let suspects: Vec<u64> = if damage.free_list.is_some() {
            bad.clone()
        } else {
            damage.blocks.clone()
        };
        if suspects.is_empty() && damage.free_list.is_none() {
            break;
        }
        rereads += 1;
        if rereads > REREADS || suspects.is_empty() {
            let reason = damage
                .checksum_messages(&header)
                .join("; ")
                .replace("fail DuckDB's checksum", "were read while being written");
            return Ok(Err(Retry::AfterCheckpoint(reason, h0)));
        }
        std::thread::sleep(REREAD_PAUSE);
        bad = reread(files, &header, &bad, &suspects, base.as_deref_mut())?;
    }

    // 4. H2, and the .wal path: nothing was replaced meanwhile.
    if read_headers(files.live).map_err(io(files.db))? != h0 {
        return Ok(Err(moved(&header)));
    }
    if let Some((device, inode)) = wal.identity {
        let same = std::fs::metadata(files.wal).is_ok_and(|meta| {
            meta.dev() == device && meta.ino() == inode && meta.len() >= wal.kept
        });
        if !same {
            return Ok(Err(Retry::Now(
                "the `.wal` was replaced during the copy".to_string(),
            )));
        }
    }
    files
        .wal_copy
        .set_len(wal.kept)
        .map_err(io(files.wal_copy_path))?;
    Ok(Ok(Kept {
        iteration: header.iteration,
        wal_commits: wal.commits,
        wal_file: wal.identity,
        size: copied_size,
        attempts: 0,
        retried: Vec::new(),
        cloned,
        copy_time,
    }))
}

fn moved(header: &Header) -> Retry {
    Retry::Now(format!(
        "a checkpoint after checkpoint {} ended during the copy",
        header.iteration
    ))
}

/// A: formats upkeep reads, else no attempt at all.
fn supported(files: &Files, header: &Header) -> Result<(), Refused> {
    if header.encrypted {
        return Err(unsupported(files, "the database is encrypted".to_string()));
    }
    if header.storage_version().is_none() {
        return Err(unsupported(
            files,
            format!(
                "its storage version number `{}` is not one upkeep reads (a newer DuckDB?)",
                header.version_number
            ),
        ));
    }
    if !blocks::plausible_block_size(header.block_alloc_size) {
        return Err(unsupported(
            files,
            format!(
                "its block size `{}` is not one DuckDB writes",
                header.block_alloc_size
            ),
        ));
    }
    Ok(())
}

fn unsupported(files: &Files, reason: String) -> Refused {
    Refused::Unsupported {
        db: files.db.to_path_buf(),
        reason,
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Refused {
    move |source| Refused::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The main header and both database headers.
fn read_headers(file: &File) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; BLOCKS_START as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// What was read of the `.wal`, copied into the `.wal` copy.
struct Wal {
    /// Device and inode, when there was a `.wal`.
    identity: Option<(u64, u64)>,
    /// Bytes up to the end of the last `WAL_FLUSH` (0: nothing committed).
    kept: u64,
    commits: u64,
    /// A `CHECKPOINT` entry before `kept`.
    checkpoint: bool,
    db_identifier: Option<[u8; 16]>,
    iteration: Option<u64>,
}

/// Step 2: reads the `.wal` to its end, copying it into the `.wal` copy.
/// `Err` is a `.wal` upkeep does not read.
fn read_wal(files: &Files) -> Result<Result<Wal, String>, Refused> {
    let mut wal = Wal {
        identity: None,
        kept: 0,
        commits: 0,
        checkpoint: false,
        db_identifier: None,
        iteration: None,
    };
    let file = match File::open(files.wal) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(wal)),
        Err(error) => return Err(io(files.wal)(error)),
    };
    let meta = file.metadata().map_err(io(files.wal))?;
    wal.identity = Some((meta.dev(), meta.ino()));
    // The length so far, to tell a torn size from an entry before
    // allocating for it (looked up again when an entry goes past it).
    let mut known_len = meta.len();
    let sizer = file.try_clone().map_err(io(files.wal))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut head = Vec::new();
    (&mut reader)
        .take(256)
        .read_to_end(&mut head)
        .map_err(io(files.wal))?;
    if head.is_empty() {
        return Ok(Ok(wal));
    }
    let mut fields = Fields {
        bytes: &head,
        at: 0,
    };
    let version = match fields.entry_while_written() {
        Entry::Whole(version) => version,
        // Cut short while the first commit was written: nothing committed.
        Entry::Short => return Ok(Ok(wal)),
        Entry::Foreign => {
            return Ok(Err(format!(
                "`{}` does not start with a DuckDB .wal header",
                files.wal.display()
            )));
        }
    };
    if version.number != CHECKSUMMED_VERSION {
        return Ok(Err(format!(
            "`{}` is a version {} .wal, upkeep reads version {CHECKSUMMED_VERSION} (3 is encrypted)",
            files.wal.display(),
            version.number
        )));
    }
    wal.db_identifier = version.db_identifier;
    wal.iteration = version.checkpoint_iteration;
    let start = fields.at;
    let copy = files.wal_copy;
    copy.write_all_at(&head[..start], 0)
        .map_err(io(files.wal_copy_path))?;
    // The rest of `head` is the start of the first frame.
    let mut rest = std::io::Cursor::new(head[start..].to_vec()).chain(reader);
    let mut at = start as u64;
    let mut checkpoint_at = None;
    let mut payload = Vec::new();
    loop {
        let mut frame = [0u8; 16];
        if !read_all(&mut rest, &mut frame).map_err(io(files.wal))? {
            break;
        }
        let size = u64::from_le_bytes(frame[..8].try_into().unwrap_or_default());
        let stored = u64::from_le_bytes(frame[8..].try_into().unwrap_or_default());
        if size == 0 || size > MAX_ENTRY {
            break;
        }
        if at + 16 + size > known_len {
            known_len = sizer.metadata().map_err(io(files.wal))?.len();
            if at + 16 + size > known_len {
                break;
            }
        }
        payload.resize(size as usize, 0);
        if !read_all(&mut rest, &mut payload).map_err(io(files.wal))? {
            break;
        }
        if blocks::checksum(&payload) != stored {
            break;
        }
        copy.write_all_at(&frame, at)
            .map_err(io(files.wal_copy_path))?;
        copy.write_all_at(&payload, at + 16)
            .map_err(io(files.wal_copy_path))?;
        at += 16 + size;
        match entry_type(&payload) {
            Some(WAL_FLUSH) => {
                wal.kept = at;
                wal.commits += 1;
            }
            Some(WAL_CHECKPOINT) => {
                checkpoint_at.get_or_insert(at);
            }
            _ => {}
        }
    }
    wal.checkpoint = checkpoint_at.is_some_and(|entry_end| entry_end <= wal.kept);
    Ok(Ok(wal))
}

/// Fills `buffer`; false when the stream ends first.
fn read_all(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buffer) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// The type of a `.wal` entry: field 100 of its payload.
pub(super) fn entry_type(payload: &[u8]) -> Option<u64> {
    let mut fields = Fields {
        bytes: payload,
        at: 0,
    };
    (fields.field()? == FIELD_TYPE).then_some(())?;
    fields.varint()
}

enum Copying {
    /// `bad`: the blocks below the header's block count that fail their
    /// checksum in the copy.
    Done {
        bad: Vec<u64>,
        size: u64,
        cloned: bool,
        /// Taking the bytes: the clone, or the whole read and write.
        took: Duration,
    },
    HeaderMoved,
}

/// Step 3: copies the live file to its end into the copy, headers (H1)
/// first, checking every block below the header's block count (on a
/// second thread, while the batch is written and handed to the disk).
/// Where the file system can, the file is cloned instead (one moment of
/// it, its headers H1), and the clone's blocks are checked: the rule is
/// the same.
fn copy_file(files: &Files, header: &Header, h0: &[u8]) -> Result<Copying, Refused> {
    let h1 = read_headers(files.live).map_err(io(files.db))?;
    if h1 != h0 {
        return Ok(Copying::HeaderMoved);
    }
    // An earlier attempt's bytes: a clone needs an empty target.
    files.copy.set_len(0).map_err(io(files.copy_path))?;
    let started = Instant::now();
    let cloned = fsx::clone(files.live, files.copy);
    let clone_time = started.elapsed();
    if let Some(size) = cloned
        && (size < BLOCKS_START || read_headers(files.copy).map_err(io(files.copy_path))? != h0)
    {
        return Ok(Copying::HeaderMoved);
    }
    if cloned.is_none() {
        files
            .copy
            .write_all_at(&h1, 0)
            .map_err(io(files.copy_path))?;
    }
    // From the clone, or from the live file into the copy.
    let (source, source_path) = match cloned {
        Some(_) => (files.copy, files.copy_path),
        None => (files.live, files.db),
    };
    let block = header.block_alloc_size;
    let mut buffer = vec![0u8; (block * BATCH_BLOCKS) as usize];
    let mut bad = Vec::new();
    let mut at = BLOCKS_START;
    let mut next_block = 0u64;
    loop {
        let filled = fill_at(source, &mut buffer, at).map_err(io(source_path))?;
        if filled == 0 {
            break;
        }
        let bytes = &buffer[..filled];
        let written = std::thread::scope(|scope| {
            let checks = scope.spawn(|| blocks::failing(header, bytes, next_block));
            let written = match cloned {
                Some(_) => Ok(()),
                None => files.copy.write_all_at(bytes, at).inspect(|()| {
                    fsx::start_writeback(files.copy, at, filled as u64);
                }),
            };
            // Never "no bad blocks" by accident: a check that did not
            // finish fails the attempt.
            match checks.join() {
                Ok(failed) => bad.extend(failed),
                Err(_) => {
                    return Err(io(files.db)(std::io::Error::other(
                        "the checksum thread panicked",
                    )));
                }
            }
            written.map_err(io(files.copy_path))
        });
        written?;
        next_block += (filled as u64).div_ceil(block);
        at += filled as u64;
        if filled < buffer.len() {
            break;
        }
    }
    if cloned.is_none() {
        files.copy.set_len(at).map_err(io(files.copy_path))?;
    }
    Ok(Copying::Done {
        bad,
        size: at,
        cloned: cloned.is_some(),
        took: match cloned {
            Some(_) => clone_time,
            None => started.elapsed(),
        },
    })
}

/// Reads at `offset` until `buffer` is full or the file ends.
fn fill_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads `suspects` again from the live file into the copy; returns the
/// blocks of `bad` that still fail.
fn reread(
    files: &Files,
    header: &Header,
    bad: &[u64],
    suspects: &[u64],
    mut base: Option<&mut Base>,
) -> Result<Vec<u64>, Refused> {
    let block = header.block_alloc_size;
    let mut bytes = vec![0u8; block as usize];
    let mut still = Vec::new();
    for &id in bad {
        if !suspects.contains(&id) {
            still.push(id);
            continue;
        }
        let offset = BLOCKS_START + id * block;
        let read = fill_at(files.live, &mut bytes, offset).map_err(io(files.db))?;
        if read as u64 == block && blocks::block_ok(&bytes) {
            files
                .copy
                .write_all_at(&bytes, offset)
                .map_err(io(files.copy_path))?;
            if let Some(base) = base.as_deref_mut() {
                base.wrote(id, offset, &bytes, true);
            }
        } else {
            still.push(id);
        }
    }
    Ok(still)
}

pub(super) enum Entry {
    Whole(VersionEntry),
    /// It starts like one but ends before its end: being written.
    Short,
    /// Not a `.wal`, or fields upkeep does not know.
    Foreign,
}

impl Fields<'_> {
    /// The version entry of a `.wal` that may be being written.
    pub(super) fn entry_while_written(&mut self) -> Entry {
        let Some(first) = self.field() else {
            return Entry::Short;
        };
        if first == 0 && self.bytes.iter().all(|&byte| byte == 0) {
            // Zeros only: a file extended but never written.
            return Entry::Short;
        }
        if first != FIELD_TYPE {
            return Entry::Foreign;
        }
        match self.varint() {
            Some(WAL_VERSION_ENTRY) => {}
            Some(_) => return Entry::Foreign,
            None => return Entry::Short,
        }
        let mut entry = VersionEntry {
            number: 0,
            db_identifier: None,
            checkpoint_iteration: None,
        };
        loop {
            let Some(field) = self.field() else {
                return Entry::Short;
            };
            let read = match field {
                FIELD_VERSION => self.varint().map(|number| entry.number = number),
                FIELD_DB_IDENTIFIER => self.identifier().map(|id| entry.db_identifier = id),
                FIELD_CHECKPOINT_ITERATION => self
                    .varint()
                    .map(|iteration| entry.checkpoint_iteration = Some(iteration)),
                END_OF_OBJECT => return Entry::Whole(entry),
                _ => return Entry::Foreign,
            };
            if read.is_none() {
                return Entry::Short;
            }
        }
    }

    /// The identifier: a list of 16 bytes (`None` when cut short; a list
    /// of another length is no identifier upkeep knows).
    fn identifier(&mut self) -> Option<Option<[u8; 16]>> {
        let count = self.varint()?;
        let mut identifier = [0u8; 16];
        for index in 0..count {
            let byte = self.varint()?;
            if let Some(slot) = identifier.get_mut(index as usize) {
                *slot = u8::try_from(byte).unwrap_or(0);
            }
        }
        Some((count == 16).then_some(identifier))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version entry as DuckDB writes it, then framed payloads.
    pub(crate) fn wal(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![0x64, 0, 98, 0x65, 0, 2, 0x66, 0, 16];
        bytes.extend([7u8; 16]);
        bytes.extend([0x67, 0, 3, 0xFF, 0xFF]);
        for payload in payloads {
            bytes.extend((payload.len() as u64).to_le_bytes());
            bytes.extend(blocks::checksum(payload).to_le_bytes());
            bytes.extend(*payload);
        }
        bytes
    }

    pub(crate) const FLUSH: &[u8] = &[0x64, 0, 100, 0xFF, 0xFF];
    pub(crate) const CHECKPOINT: &[u8] =
        &[0x64, 0, 99, 0x65, 0, 0x64, 0, 5, 0xFF, 0xFF, 0xFF, 0xFF];
    pub(crate) const INSERT: &[u8] = &[0x64, 0, 26, 0x65, 0, 1, 2, 3, 0xFF, 0xFF];

    fn scan(bytes: &[u8]) -> Wal {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.duckdb.wal");
        std::fs::write(&path, bytes).unwrap();
        let copy_path = dir.path().join("copy.wal");
        let copy = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&copy_path)
            .unwrap();
        let live = File::open(&path).unwrap();
        let files = Files {
            db: &path,
            wal: &path,
            live: &live,
            copy: &live,
            copy_path: &copy_path,
            wal_copy: &copy,
            wal_copy_path: &copy_path,
        };
        let wal = read_wal(&files).unwrap().unwrap();
        copy.set_len(wal.kept).unwrap();
        assert_eq!(
            std::fs::read(&copy_path).unwrap(),
            bytes[..wal.kept as usize]
        );
        wal
    }

    #[test]
    fn the_wal_is_kept_up_to_its_last_commit() {
        let bytes = wal(&[INSERT, FLUSH, INSERT, FLUSH, INSERT]);
        let whole = scan(&bytes);
        assert_eq!((whole.commits, whole.iteration), (2, Some(3)));
        assert_eq!(whole.db_identifier, Some([7u8; 16]));
        assert_eq!(whole.kept as usize, bytes.len() - (16 + INSERT.len()));
        assert!(!whole.checkpoint);
        // Cut inside the last commit's flush: one commit left.
        let cut = scan(&bytes[..bytes.len() - (16 + INSERT.len()) - 3]);
        assert_eq!(cut.commits, 1);
        // A damaged entry ends what is read, even if more follows.
        let mut damaged = bytes.clone();
        let second_insert = 30 + 2 * 16 + INSERT.len() + FLUSH.len() + 18;
        damaged[second_insert] ^= 1;
        assert_eq!(scan(&damaged).commits, 1);
        // Only the version entry, or part of it: nothing committed.
        assert_eq!(scan(&bytes[..30]).kept, 0);
        assert_eq!(scan(&bytes[..12]).kept, 0);
    }

    #[test]
    fn a_checkpoint_entry_is_seen_only_when_kept() {
        let under_way = scan(&wal(&[INSERT, FLUSH, CHECKPOINT, FLUSH]));
        assert!(under_way.checkpoint);
        let not_flushed = scan(&wal(&[INSERT, FLUSH, CHECKPOINT]));
        assert!(!not_flushed.checkpoint);
        assert_eq!(not_flushed.commits, 1);
    }
}
