//! Making a backup: consistent, atomic, verified, then rotated.
//!
//! Order matters and is the guarantee:
//! 1. take the database (exclusive DuckDB lock) and checkpoint, so rows
//!    committed only in the `.wal` are in the main file;
//! 2. copy it to a temporary name in the backups folder (in the kernel, as
//!    `cp` does) and sync;
//! 3. verify the copy: read every byte back, hashing it and checking
//!    DuckDB's checksum of every block in use (see `blocks` and `layout`:
//!    only a block on the copy's own free list may fail it), open it
//!    read-only with DuckDB, check it and compare its row counts with the
//!    source's;
//! 4. write the manifest, then give the copy its final name (never replacing
//!    a file) and sync the folder;
//! 5. only then rotate old backups.
//!
//! A failure or crash before step 4 leaves only a temporary file, which is
//! never listed as a backup and is swept by the next run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::db::Env;
use crate::db::backups::{self, Backup, Manifest};
use crate::db::blocks;
use crate::db::catalog::{Catalog, Schema};
use crate::db::check;
use crate::db::header;
use crate::db::layout;
use crate::db::live;
use crate::db::open;
use crate::db::retention::Rotation;
use crate::fsx;
use crate::progress::Progress;

/// Room left free beside a backup, for its manifest and the file system.
const SPACE_MARGIN: u64 = 1 << 20;

/// A backup that is in place, verified, with what rotation deleted.
#[derive(Debug, Clone)]
pub struct Made {
    pub backup: Backup,
    pub rotated: Vec<String>,
    /// Rotation failed after the backup was made: a warning, not a failure.
    pub rotation_error: Option<String>,
    /// The source's `.wal` could not be replayed: where a copy of it is
    /// kept, and why (the checkpoint deletes it beside the database).
    pub wal_kept: Option<(PathBuf, String)>,
    /// How the copy was taken.
    pub taken: Taken,
    /// Why a running app's database was not copied live, when it was
    /// taken another way.
    pub not_live: Option<String>,
}

/// How a backup's copy was taken, as [`Taking`] asked.
#[derive(Debug, Clone)]
pub enum Taken {
    Direct,
    /// Copied while the app ran (see [`crate::db::live`]): no downtime.
    Live(Live),
    /// The app was stopped for the checkpoint and the copy: for how long,
    /// and why it did not come back healthy, if it did not.
    Window {
        downtime: Duration,
        restart_error: Option<String>,
    },
    Snapshot,
    /// A live copy taken before the app stopped, topped up after with the
    /// blocks that changed since (see [`crate::db::topup`]).
    TopUp {
        live: Live,
        /// Blocks copied after the stop, and their bytes (headers included).
        blocks: u64,
        bytes: u64,
    },
}

/// What a live copy took.
#[derive(Debug, Clone)]
pub struct Live {
    /// Bytes of the database file copied.
    pub copied: u64,
    /// Commits that were only in the `.wal`, replayed into the copy.
    pub wal_commits: u64,
    /// Attempts made, the last one kept.
    pub attempts: u32,
    /// Whether the file was cloned (`FICLONE`) instead of read.
    pub cloned: bool,
    /// How long taking the file's bytes took (see [`live::Copied`]).
    pub copy_time: Duration,
}

/// How to take the copy.
pub enum Taking<'a> {
    /// Nobody else has the database open: upkeep takes it (DuckDB's
    /// exclusive lock), checkpoints and copies.
    Direct,
    /// The app holds it: upkeep copies its bytes while it runs, and keeps
    /// the copy only when DuckDB's own structures prove it consistent
    /// ([`crate::db::live`]). A refusal is an error whose cause is a
    /// [`live::Refused`]: the caller falls back to another way.
    Live,
    /// The app holds it: it is stopped for the checkpoint and the copy
    /// only, started again right after, and the copy is verified while it
    /// runs.
    Window(&'a dyn Window),
    /// The app writes a consistent copy itself, to the path given (its
    /// snapshot hook): no downtime.
    Snapshot(&'a dyn Fn(&Path) -> Result<()>),
}

/// Stops and starts the app around a window backup (see `crate::app`).
pub trait Window {
    fn stop(&self) -> Result<()>;
    /// Starts the app and waits until it is healthy.
    fn start(&self) -> Result<()>;
    /// Whether nobody holds the database (the app is down).
    fn released(&self) -> bool;
}

/// A copy taken, not yet verified.
pub(crate) struct Copy {
    pub(crate) partial: tempfile::NamedTempFile,
    pub(crate) copied: u64,
    pub(crate) read_back: Result<blocks::ReadBack>,
    /// The source's row counts, when upkeep read the source itself.
    source_rows: Option<BTreeMap<String, u64>>,
    wal_kept: Option<(PathBuf, String)>,
    /// The folder a snapshot hook or a live copy wrote the copy into, kept
    /// (and held) until the copy is published.
    _folder: Option<fsx::PartialDir>,
}

/// Makes a verified backup of `env` in `dir`, then rotates old ones.
pub fn backup(
    env: &Env,
    dir: &Path,
    rotation: &Rotation,
    schema: Option<&Schema>,
    progress: &Progress,
    taking: &Taking,
) -> Result<Made> {
    let source = &env.db;
    if !source.exists() {
        bail!(
            "no database file for `{}` at `{}`: nothing to back up (fix `databases:` in upkeep.yaml, or `upkeep repair {}`)",
            env.name,
            source.display(),
            env.name
        );
    }
    if let Err(problem) =
        header::read(source).with_context(|| format!("cannot read `{}`", source.display()))?
    {
        bail!(
            "database `{}` is damaged ({problem}): not backed up, older backups kept; run `upkeep repair {}`",
            source.display(),
            env.name
        );
    }
    fsx::create_private_dir(dir)?;
    fsx::sweep_partials(dir);
    let failed = || {
        format!(
            "backup of `{}` failed; older backups are untouched",
            env.name
        )
    };
    let (copy, taken) = match taking {
        Taking::Direct => (
            copy_source(env, dir, progress, false, &mut || {})?,
            Taken::Direct,
        ),
        Taking::Window(window) => {
            if let Err(error) = window.stop() {
                // Bring back an app that went down all the same.
                if window.released()
                    && let Err(restart) = window.start()
                {
                    return Err(app_down(
                        env,
                        &crate::error::describe(&restart),
                        Some(&error),
                    ));
                }
                return Err(error.context(failed()));
            }
            let stopped = std::time::Instant::now();
            let mut restarted = None;
            let copy = copy_source(env, dir, progress, true, &mut || {
                restarted = Some((window.start(), stopped.elapsed()));
            });
            // A copy that failed before it let go of the database.
            let (restart, downtime) =
                restarted.unwrap_or_else(|| (window.start(), stopped.elapsed()));
            match (copy, restart) {
                (Ok(copy), restart) => (
                    copy,
                    Taken::Window {
                        downtime,
                        restart_error: restart.err().map(|error| crate::error::describe(&error)),
                    },
                ),
                (Err(error), Ok(())) => return Err(error.context(failed())),
                (Err(error), Err(restart)) => {
                    return Err(app_down(
                        env,
                        &crate::error::describe(&restart),
                        Some(&error),
                    ));
                }
            }
        }
        Taking::Snapshot(write) => (snapshot(env, dir, write)?, Taken::Snapshot),
        Taking::Live => {
            let (copy, live) = live_copy(env, dir)?;
            (copy, Taken::Live(live))
        }
    };
    let app_down_already = match &taken {
        Taken::Window {
            restart_error: Some(restart),
            ..
        } => Some(restart.clone()),
        _ => None,
    };
    match (
        verify_and_publish(env, dir, rotation, schema, copy, taken, None),
        app_down_already,
    ) {
        // A copy that fails its check must not hide an app that is down.
        (Err(error), Some(restart)) => Err(app_down(env, &restart, Some(&error))),
        (made, _) => made,
    }
}

/// The error of a backup after which the app did not come back.
fn app_down(env: &Env, restart: &str, before: Option<&anyhow::Error>) -> anyhow::Error {
    let mut message = format!(
        "THE APP OF `{}` IS DOWN: it was stopped for the backup and did not come back healthy: {restart}",
        env.name
    );
    if let Some(before) = before {
        message.push_str(&format!(
            "; the backup itself failed too: {}",
            crate::error::describe(before)
        ));
    }
    message
        .push_str("; `upkeep recover` starts it again (or start it by hand), and look at its log");
    anyhow::Error::new(crate::error::RollbackIncomplete(message))
}

/// Takes the database (see below how) and copies it to a temporary file
/// in `dir`, reading the copy back. `released` runs as soon as the database is let go, before the
/// read-back ends (a window backup starts the app there). A `window`
/// copy goes into the page cache only, and is read back and synced once
/// the app runs again; otherwise each chunk is handed to the disk as it is
/// copied, and read back in step with the copy.
fn copy_source(
    env: &Env,
    dir: &Path,
    progress: &Progress,
    window: bool,
    released: &mut dyn FnMut(),
) -> Result<Copy> {
    let source = &env.db;
    // Hold the database while copying: the checkpoint moves the .wal into
    // the file, and the lock keeps anyone from writing until the copy ends.
    // POSIX locks belong to the process and go when *any* of its descriptors
    // of the file closes: the one we copy from is opened before DuckDB's and
    // closed after it, so it cannot drop DuckDB's lock early.
    let input = std::fs::File::open(source)
        .with_context(|| format!("cannot open `{}`", source.display()))?;
    // With a `.wal` that holds anything, DuckDB takes the database and
    // checkpoints it, so that rows committed only there are in the file;
    // it counts the rows too, to compare with the copy's. Without one, the
    // file is the whole database: a write lock on it is enough, and the
    // copy starts at once (a window backup's downtime is then the copy).
    let wal_pending = crate::db::wal::path_of(source)
        .metadata()
        .is_ok_and(|meta| meta.len() > 0);
    // What keeps others off the database while it is copied: DuckDB's
    // exclusive lock, or a write lock of upkeep's own.
    let (held, source_rows, wal_kept): ((Option<duckdb::Connection>, Option<std::fs::File>), _, _) =
        if wal_pending {
            let (conn, wal_kept) = open::open_writable(source, &env.name)?;
            conn.execute_batch("CHECKPOINT")
                .with_context(|| format!("cannot checkpoint `{}`", source.display()))?;
            let database: String =
                conn.query_row("SELECT current_database()", [], |row| row.get(0))?;
            let rows = row_counts(&conn, &database)
                .with_context(|| format!("cannot count the rows of `{}`", source.display()))?;
            ((Some(conn), None), Some(rows), wal_kept)
        } else {
            ((None, crate::db::swap::hold(source)?), None, None)
        };
    let size = std::fs::metadata(source)?.len();
    let free = fsx::free_space(dir)?;
    if free < size + SPACE_MARGIN {
        bail!(
            "not enough space for a backup of `{}` in `{}`: it needs {}, {} is free; free some space (older backups are kept until a new one is verified)",
            env.name,
            dir.display(),
            fsx::human_size(size + SPACE_MARGIN),
            fsx::human_size(free)
        );
    }
    let mut partial = fsx::partial_file(dir)?;
    let bar = progress.bytes("backup", size);
    let path = partial.path().to_path_buf();
    let (copied, read_back) = if window {
        // The app is down: copy only (into the page cache), let go, and
        // start it (`released`); the copy is read back once it runs, so
        // that nothing competes with its start for the two cores.
        let copied = fsx::copy_fast(&input, partial.as_file_mut(), false, &|n| {
            bar.set_position(n)
        });
        drop(held);
        drop(input);
        released();
        let read_back = std::fs::File::open(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))
            .and_then(|file| blocks::read_back(&path, file, size));
        (copied, read_back)
    } else {
        // The copy is read back in step with it (from the page cache),
        // while the kernel writes it to disk; then the sync, and DuckDB's
        // look at the copy, run at once.
        let (copied, read_back) = std::thread::scope(|scope| {
            let (written, follow) = std::sync::mpsc::channel();
            let read_back = scope.spawn(move || {
                blocks::read_back(&path, fsx::Following::open(&path, follow)?, size)
            });
            let copied = fsx::copy_fast(&input, partial.as_file_mut(), true, &|n| {
                bar.set_position(n);
                let _ = written.send(n);
            });
            drop(written);
            drop(held);
            drop(input);
            released();
            (copied, read_back.join())
        });
        let read_back = read_back.map_err(|_| anyhow::anyhow!("the read-back thread panicked"))?;
        (copied, read_back)
    };
    bar.finish_and_clear();
    let copied = copied?;
    Ok(Copy {
        partial,
        copied,
        read_back,
        source_rows,
        wal_kept,
        _folder: None,
    })
}

/// A folder of its own in `dir` for a snapshot hook to write into, held
/// while it lives (see `fsx::sweep_partials`: a concurrent backup never
/// removes it), and the path the hook writes (`$UPKEEP_SNAPSHOT`). The
/// hook creates the file: DuckDB does not take an empty one as a new
/// database.
pub fn snapshot_target(dir: &Path) -> Result<(fsx::PartialDir, PathBuf)> {
    fsx::create_private_dir(dir)?;
    let folder = fsx::partial_dir(dir)?;
    let target = folder.path().join("snapshot.duckdb");
    Ok((folder, target))
}

/// Has the app write its snapshot to a temporary folder in `dir`.
fn snapshot(env: &Env, dir: &Path, write: &dyn Fn(&Path) -> Result<()>) -> Result<Copy> {
    let (folder, target) = snapshot_target(dir)?;
    // Removed with the folder, unless published before.
    let cleanup = tempfile::TempPath::try_from_path(&target)?;
    write(&target).with_context(|| {
        format!(
            "the snapshot hook of `{}` failed; nothing was published, older backups are untouched",
            env.name
        )
    })?;
    let wal = crate::db::wal::path_of(&target);
    if wal.exists() {
        let _ = std::fs::remove_file(&wal);
        bail!(
            "the snapshot hook of `{}` left a .wal beside its copy ({}): the copy is not complete on its own; \
             have the hook detach (or checkpoint) the copy before it exits. Nothing was published",
            env.name,
            wal.display()
        );
    }
    let file = std::fs::File::open(&target).with_context(|| {
        format!(
            "the snapshot hook of `{}` wrote nothing to $UPKEEP_SNAPSHOT ({}); nothing was published",
            env.name,
            target.display()
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
    }
    let size = file.metadata()?.len();
    let read_back = blocks::read_back(&target, &file, size);
    let partial = tempfile::NamedTempFile::from_parts(file, cleanup);
    Ok(Copy {
        partial,
        copied: size,
        read_back,
        source_rows: None,
        wal_kept: None,
        _folder: Some(folder),
    })
}

/// Copies the running app's database live into a temporary folder in
/// `dir`, whole on its own (see [`live::copy_whole`]); it is then verified
/// like every backup.
pub(crate) fn live_copy(env: &Env, dir: &Path) -> Result<(Copy, Live)> {
    let size = std::fs::metadata(&env.db)
        .with_context(|| format!("cannot read `{}`", env.db.display()))?
        .len();
    let wal = crate::db::wal::path_of(&env.db);
    let wal_size = wal.metadata().map_or(0, |meta| meta.len());
    fsx::create_private_dir(dir)?;
    let free = fsx::free_space(dir)?;
    if free < size + wal_size + SPACE_MARGIN {
        bail!(
            "not enough space for a live copy of `{}` in `{}`: it needs {}, {} is free; free some space (older backups are kept until a new one is verified)",
            env.name,
            dir.display(),
            fsx::human_size(size + wal_size + SPACE_MARGIN),
            fsx::human_size(free)
        );
    }
    let folder = fsx::partial_dir(dir)?;
    let copied = live::copy_whole(&env.db, folder.path())?;
    // Removed with the folder, unless published before.
    let cleanup = tempfile::TempPath::try_from_path(&copied.db)?;
    let file = std::fs::File::open(&copied.db)
        .with_context(|| format!("cannot read `{}`", copied.db.display()))?;
    let copied_size = file.metadata()?.len();
    let read_back = blocks::read_back(&copied.db, &file, copied_size);
    Ok((
        Copy {
            partial: tempfile::NamedTempFile::from_parts(file, cleanup),
            copied: copied_size,
            read_back,
            source_rows: None,
            wal_kept: None,
            _folder: Some(folder),
        },
        Live {
            copied: copied.size,
            wal_commits: copied.wal_commits,
            attempts: copied.attempts,
            cloned: copied.cloned,
            copy_time: copied.copy_time,
        },
    ))
}

/// Verifies a copy, writes its manifest, gives it its name, and rotates.
/// `checked` is the copy's quick check when it was already made (an
/// update's restore point, checked as the database: see `topup::check`).
pub(crate) fn verify_and_publish(
    env: &Env,
    dir: &Path,
    rotation: &Rotation,
    schema: Option<&Schema>,
    copy: Copy,
    taken: Taken,
    checked: Option<check::Report>,
) -> Result<Made> {
    let Copy {
        partial,
        copied,
        read_back,
        source_rows,
        wal_kept,
        // Kept until the copy is published.
        _folder,
    } = copy;
    let (synced, quick) = std::thread::scope(|scope| {
        let sync = scope.spawn(|| partial.as_file().sync_all());
        let quick = match checked {
            Some(report) => Ok(report),
            None => check::check(partial.path(), schema, false),
        };
        (sync.join(), quick)
    });
    synced
        .map_err(|_| anyhow::anyhow!("the sync thread panicked"))?
        .context("cannot sync the backup to disk")?;
    let read_back = read_back.with_context(|| {
        format!(
            "backup of `{}` failed verification: the copy is not a readable DuckDB file; \
             not kept, older backups untouched",
            env.name
        )
    })?;
    let quick = quick?;
    if read_back.size != copied {
        bail!(
            "backup of `{}` failed verification: {} bytes copied, {} read back; not kept, older backups untouched",
            env.name,
            copied,
            read_back.size
        );
    }
    // Every block in use must match DuckDB's checksum: a mismatch is
    // excused only in a block the copy's own free list names. Then DuckDB
    // only needs to open the copy, check it and count. Where the blocks
    // could not be checked here (an encrypted file), DuckDB reads every
    // column.
    let damage = layout::damage(
        partial.as_file(),
        &read_back.header,
        read_back.size,
        &read_back.bad_blocks,
    );
    let mut damage_messages = damage.checksum_messages(&read_back.header);
    damage_messages.extend(damage.truncation_message(read_back.size, &read_back.header));
    if !damage_messages.is_empty() {
        bail!(
            "backup of `{}` failed verification, so it was not kept and no older backup was deleted: {}; \
             the database itself may be damaged: run `upkeep check {} --deep`, then `upkeep repair {}`",
            env.name,
            damage_messages.join("; "),
            env.name,
            env.name
        );
    }
    let report = if read_back.checked {
        quick
    } else {
        check::check(partial.path(), schema, true)?
    };
    let copy_rows: BTreeMap<String, u64> = report
        .rows()
        .map(|(table, rows)| (table.to_string(), rows))
        .collect();
    if !report.ok() {
        bail!(
            "backup of `{}` failed verification, so it was not kept and no older backup was deleted: {}; \
             the database itself may be damaged: run `upkeep check {} --deep`",
            env.name,
            report.problem_list(),
            env.name
        );
    }
    if let Some(source_rows) = &source_rows
        && copy_rows != *source_rows
    {
        bail!(
            "backup of `{}` failed verification: row counts differ from the source ({:?} vs {:?}); \
             not kept, older backups untouched",
            env.name,
            copy_rows,
            source_rows
        );
    }

    let (name, path) = free_name(dir, &env.name)?;
    let manifest = manifest(env, jiff::Timestamp::now(), copied, read_back.hash, &report)?;
    backups::publish(partial, &path, &manifest).with_context(|| {
        format!(
            "backup of `{}` was verified but could not be given its name; older backups are untouched",
            env.name
        )
    })?;

    let (rotated, rotation_error) = match backups::rotate(dir, &env.name, rotation, &name) {
        Ok(rotated) => (rotated, None),
        Err(error) => (Vec::new(), Some(crate::error::describe(&error))),
    };
    let backup = backups::list(dir, &env.name)?
        .into_iter()
        .find(|backup| backup.name == name)
        .with_context(|| format!("backup `{name}` vanished right after it was made"))?;
    Ok(Made {
        backup,
        rotated,
        rotation_error,
        wal_kept,
        taken,
        not_live: None,
    })
}

/// The manifest of a verified backup of `env`, as of `created_at`: its
/// size and blake3, and what its check (`report`) found in it.
pub(crate) fn manifest(
    env: &Env,
    created_at: jiff::Timestamp,
    size: u64,
    hash: blake3::Hash,
    report: &check::Report,
) -> Result<Manifest> {
    Ok(Manifest {
        env: env.name.clone(),
        source: env.db.clone(),
        created_at: created_at.to_string(),
        size,
        blake3: hash.to_hex().to_string(),
        tables: report
            .rows()
            .map(|(table, rows)| (table.to_string(), rows))
            .collect(),
        duckdb_version: duckdb_version()?,
        storage_version: report.storage_version.clone().unwrap_or_default(),
        upkeep_version: env!("CARGO_PKG_VERSION").to_string(),
        verified: true,
    })
}

/// The version of the DuckDB upkeep is built with, as `SELECT version()`
/// says it, without starting a database for it (that takes 25 ms).
fn duckdb_version() -> Result<String> {
    // SAFETY: DuckDB returns a pointer to a static, NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(duckdb::ffi::duckdb_library_version()) };
    Ok(version.to_str()?.to_string())
}

fn row_counts(conn: &duckdb::Connection, database: &str) -> Result<BTreeMap<String, u64>> {
    Catalog::read(conn, database)?
        .tables
        .iter()
        .map(|table| {
            let rows: i64 = conn.query_row(
                &format!("SELECT count(*) FROM {}", table.sql_name(database)),
                [],
                |row| row.get(0),
            )?;
            Ok((table.display_name(), rows.max(0) as u64))
        })
        .collect()
}

/// A backup name for now that no file has yet. Names have one-second
/// resolution (the old scripts' format), so a second backup within the same
/// second waits for the next one rather than overwrite or rename.
fn free_name(dir: &Path, env: &str) -> Result<(String, std::path::PathBuf)> {
    for _ in 0..5 {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d_%H%M%S").to_string();
        let name = backups::file_name(env, &stamp);
        let path = dir.join(&name);
        if !path.exists() && !backups::manifest_path(&path).exists() {
            return Ok((name, path));
        }
        let into_second = jiff::Timestamp::now().subsec_nanosecond() as u64;
        std::thread::sleep(Duration::from_nanos(
            1_000_000_000 - into_second.min(999_999_999),
        ));
    }
    bail!(
        "cannot find a free backup name in `{}`: is the system clock stuck?",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_library_version_is_what_duckdb_says() {
        let said: String = super::open::open_in_memory()
            .unwrap()
            .query_row("SELECT version()", [], |row| row.get(0))
            .unwrap();
        assert_eq!(super::duckdb_version().unwrap(), said);
    }
}
