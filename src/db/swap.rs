//! Putting a new database file in place of the current one, keeping the
//! current one (and its `.wal`) aside. Shared by restore and repair.
//!
//! The new file is first written beside the database (same file system, so
//! the final step is a rename, not a copy) and synced. Then, under a write
//! lock on the current database, it is hard-linked into the shelf, its
//! `.wal` moved there (a `.wal` left next to a different database would be
//! replayed into it), and the new file renamed over the path: the path
//! always holds a database. Nothing is ever deleted.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::db::catalog::Schema;
use crate::db::check::{self, Report};
use crate::fsx;
use crate::progress::Progress;

/// Where the files moved out of the way go: `aside/` (restore) or
/// `quarantine/` (repair), beside the database.
#[derive(Debug, Clone, Copy)]
pub enum Shelf {
    Aside,
    Quarantine,
}

impl Shelf {
    fn folder(self) -> &'static str {
        match self {
            Shelf::Aside => "aside",
            Shelf::Quarantine => "quarantine",
        }
    }
}

/// The `.wal` file DuckDB keeps beside `db`.
pub fn wal_of(db: &Path) -> PathBuf {
    fsx::with_suffix(db, ".wal")
}

/// The folder a database file is in.
pub fn folder_of(db: &Path) -> Result<&Path> {
    db.parent().with_context(|| {
        format!(
            "database path `{}` has no folder: fix `databases:` in upkeep.yaml",
            db.display()
        )
    })
}

fn file_name(path: &Path) -> Result<&std::ffi::OsStr> {
    path.file_name().with_context(|| {
        format!(
            "database path `{}` has no file name: fix `databases:` in upkeep.yaml",
            path.display()
        )
    })
}

/// Puts the complete, synced file `new` in place of `db`, keeping the
/// current database and its `.wal` in a new folder of `shelf`.
///
/// The path is never empty: the current database is hard-linked into the
/// shelf, its `.wal` moved there, and `new` renamed over the path in one
/// step. Meanwhile upkeep holds a write lock on the current database, so the
/// app cannot open it halfway through (it would get DuckDB's lock error).
/// The new file takes the current one's mode and owner, so an app running as
/// another user can still open it. What goes to the shelf is made private
/// (0600) there, the database only once the path no longer links to it: the
/// live file keeps its mode, and a file put back later takes the mode of
/// the one it replaces.
pub fn put_in_place(db: &Path, env: &str, new: &Path, shelf: Shelf) -> Result<Option<PathBuf>> {
    let _guard = hold(db)?;
    undo_interrupted(db)?;
    let wal = wal_of(db);
    if let Ok(meta) = std::fs::metadata(db) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(new, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .with_context(|| format!("cannot set the mode of `{}`", new.display()))?;
        // Only root may give a file away; anyone else already owns both.
        let _ = std::os::unix::fs::chown(new, Some(meta.uid()), Some(meta.gid()));
    }
    let folder = if db.exists() || wal.exists() {
        Some(new_shelf_folder(db, env, shelf)?)
    } else {
        None
    };
    let mut kept = None;
    if let Some(folder) = &folder {
        if db.exists() {
            let path = folder.join(file_name(db)?);
            std::fs::hard_link(db, &path).with_context(|| {
                format!("cannot keep `{}` in `{}`", db.display(), folder.display())
            })?;
            kept = Some(path);
        }
        if wal.exists() {
            let kept_wal = folder.join(file_name(&wal)?);
            fsx::rename_synced(&wal, &kept_wal)?;
            fsx::make_private(&kept_wal);
        }
        fsx::sync_parent(&folder.join("x"))?;
    }
    fsx::rename_synced(new, db)?;
    if let Some(kept) = &kept {
        fsx::make_private(kept);
    }
    Ok(folder)
}

/// A write lock on the current database for the length of a swap, so that
/// nobody opens it meanwhile. `None` when there is no file.
pub(crate) fn hold(db: &Path) -> Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(db) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot open `{}`", db.display()));
        }
    };
    // SAFETY: plain data, filled in below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: a valid descriptor and a valid pointer to a `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } != 0 {
        crate::db::open::refuse_if_held(db, crate::db::open::Access::Exclusive)?;
        bail!(
            "cannot lock `{}` for the swap: {}",
            db.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(Some(file))
}

pub(crate) fn new_shelf_folder(db: &Path, env: &str, shelf: Shelf) -> Result<PathBuf> {
    let base = db
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join(shelf.folder());
    fsx::create_private_dir(&base)?;
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d_%H%M%S").to_string();
    for attempt in 1..1000 {
        let name = match attempt {
            1 => format!("{env}_{stamp}"),
            n => format!("{env}_{stamp}_{n}"),
        };
        let folder = base.join(name);
        // Private too: `base` may be a folder that let others in already.
        match std::fs::DirBuilder::new().mode(0o700).create(&folder) {
            Ok(()) => return Ok(folder),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot create folder `{}`", folder.display()));
            }
        }
    }
    bail!(
        "too many folders named `{env}_{stamp}` in `{}`",
        base.display()
    )
}

/// What [`replace_with_copy`] did.
#[derive(Debug)]
pub struct Replaced {
    /// The folder the current database and `.wal` went to, if any.
    pub shelved: Option<PathBuf>,
    /// The check of the copy, made before it was put in place.
    pub report: Report,
}

/// Replaces `db` with a copy of `source` whose blake3 hash must be
/// `expected`, and which must pass the (quick) check against `schema`
/// before it is put in place. The current database and `.wal` go to
/// `shelf`.
pub fn replace_with_copy(
    db: &Path,
    env: &str,
    source: &Path,
    expected: &blake3::Hash,
    shelf: Shelf,
    schema: Option<&Schema>,
    progress: &Progress,
) -> Result<Replaced> {
    let dir = folder_of(db)?;
    fsx::create_private_dir(dir)?;
    fsx::sweep_partials(dir);
    let size = std::fs::metadata(source)?.len();
    let free = fsx::free_space(dir)?;
    if free < size {
        bail!(
            "not enough space in `{}` to put `{}` in place: it needs {}, {} is free; nothing was changed",
            dir.display(),
            source.display(),
            fsx::human_size(size),
            fsx::human_size(free)
        );
    }
    let mut partial = fsx::partial_file(dir)?;
    let bar = progress.bytes("restore", size);
    let input = std::fs::File::open(source)
        .with_context(|| format!("cannot open `{}`", source.display()))?;
    // The copy is made in the kernel; reading it back (from the page cache)
    // chunk by chunk as it is written proves it holds the verified bytes.
    let path = partial.path().to_path_buf();
    let (copied, hash) = std::thread::scope(|scope| {
        let (written, follow) = std::sync::mpsc::channel();
        let hash = scope.spawn(move || -> Result<blake3::Hash> {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(fsx::Following::open(&path, follow)?)?;
            Ok(hasher.finalize())
        });
        let copied = fsx::copy_fast(&input, partial.as_file_mut(), true, &|n| {
            bar.set_position(n);
            let _ = written.send(n);
        });
        drop(written);
        (copied, hash.join())
    });
    bar.finish_and_clear();
    copied?;
    let hash = hash.map_err(|_| anyhow::anyhow!("the hashing thread panicked"))??;
    if hash != *expected {
        bail!(
            "the copy of `{}` does not match the verified backup (it changed while being copied); nothing was changed",
            source.display()
        );
    }
    // DuckDB looks at the copy while it syncs.
    let (synced, report) = std::thread::scope(|scope| {
        let sync = scope.spawn(|| partial.as_file().sync_all());
        let report = check::check(partial.path(), schema, false);
        (sync.join(), report)
    });
    synced
        .map_err(|_| anyhow::anyhow!("the sync thread panicked"))?
        .with_context(|| format!("cannot sync the copy of `{}`", source.display()))?;
    let mut report = report?;
    if !report.ok() {
        bail!(
            "the copy of `{}` does not pass the check ({}); nothing was changed",
            source.display(),
            report.problem_list()
        );
    }
    let partial = partial.into_temp_path();
    let shelved = put_in_place(db, env, &partial, shelf)?;
    // Renamed into place: nothing is left for the temporary path to delete.
    let _ = partial.keep();
    // The report is of the file now in place, under its own name.
    report.path = db.to_path_buf();
    Ok(Replaced { shelved, report })
}

/// Undoes the start of a swap that was interrupted (crash, `kill -9`)
/// before the new file took the database's place: the shelf then holds a
/// hard link to the database itself, and maybe its `.wal`, moved away
/// while the database stayed. Without its `.wal`, the database would lack
/// what was committed in it. Puts the `.wal` back, removes the link (and
/// the shelf folder, when empty), and returns what it put back.
///
/// Only a shelf entry that *is* the current file (same device and inode)
/// is touched: a finished swap left the previous file there, never the
/// current one.
pub fn undo_interrupted(db: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let mut put_back = Vec::new();
    let Ok(current) = std::fs::metadata(db) else {
        return Ok(put_back);
    };
    let (Some(folder), Some(name)) = (db.parent(), db.file_name()) else {
        return Ok(put_back);
    };
    let wal = wal_of(db);
    let wal_name = file_name(&wal)?;
    for shelf in [Shelf::Aside, Shelf::Quarantine] {
        let base = folder.join(shelf.folder());
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let kept = entry.path().join(name);
            let same = std::fs::metadata(&kept)
                .is_ok_and(|meta| meta.dev() == current.dev() && meta.ino() == current.ino());
            if !same {
                continue;
            }
            let kept_wal = entry.path().join(wal_name);
            if kept_wal.exists() {
                if wal.exists() {
                    bail!(
                        "`{}` was moved aside by a swap that did not finish, and `{}` exists too: \
                         look at both, keep the one that belongs to `{}`",
                        kept_wal.display(),
                        wal.display(),
                        db.display()
                    );
                }
                fsx::rename_synced(&kept_wal, &wal)?;
                put_back.push(kept_wal);
            }
            std::fs::remove_file(&kept)
                .with_context(|| format!("cannot remove `{}`", kept.display()))?;
            fsx::sync_parent(&kept)?;
            if std::fs::remove_dir(entry.path()).is_ok() {
                fsx::sync_parent(&entry.path())?;
            }
        }
    }
    Ok(put_back)
}
