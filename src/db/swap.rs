//! Putting a new database file in place of the current one, keeping the
//! current one (and its `.wal`) aside. Shared by restore and repair.
//!
//! The new file is first written beside the database (same file system, so
//! the final step is a rename, not a copy) and synced. Then the `.wal` moves
//! aside before the database does: a `.wal` left next to a different
//! database would be replayed into it. Nothing is ever deleted.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

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

/// Moves `db` and its `.wal` (those that exist) into a new folder of
/// `shelf`, named after `env` and the time. Returns that folder, or `None`
/// when there was nothing to move.
pub fn shelve(db: &Path, env: &str, shelf: Shelf) -> Result<Option<PathBuf>> {
    let wal = wal_of(db);
    if !db.exists() && !wal.exists() {
        return Ok(None);
    }
    let folder = new_shelf_folder(db, env, shelf)?;
    for file in [&wal, db] {
        if file.exists() {
            let name = file.file_name().context("database path has no file name")?;
            fsx::rename_synced(file, &folder.join(name))?;
        }
    }
    Ok(Some(folder))
}

fn new_shelf_folder(db: &Path, env: &str, shelf: Shelf) -> Result<PathBuf> {
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
        match std::fs::create_dir(&folder) {
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

/// Replaces `db` with a copy of `source` whose blake3 hash must be
/// `expected`. The current database and `.wal` go to `shelf`; returns that
/// folder when anything was moved.
pub fn replace_with_copy(
    db: &Path,
    env: &str,
    source: &Path,
    expected: &blake3::Hash,
    shelf: Shelf,
    progress: &Progress,
) -> Result<Option<PathBuf>> {
    let dir = db.parent().context("database path has no folder")?;
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
    let (_, hash) = fsx::copy_hashing(source, partial.as_file_mut(), &|n| bar.set_position(n))?;
    bar.finish_and_clear();
    if hash != *expected {
        bail!(
            "the copy of `{}` does not match the verified backup (it changed while being copied); nothing was changed",
            source.display()
        );
    }
    let shelved = shelve(db, env, shelf)?;
    fsx::publish(partial, db)?;
    Ok(shelved)
}
