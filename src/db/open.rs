//! Opening database files, and finding out who else has them open.
//!
//! DuckDB takes a POSIX record lock on its file (shared for read-only,
//! exclusive for read-write). Asking the kernel about that lock (`F_GETLK`)
//! names the holder's PID without opening the file through DuckDB, which
//! also works when the file is too damaged to open. DuckDB's own lock error
//! is parsed as a fallback, for the moment between asking and opening.

use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};
use duckdb::{AccessMode, Config, Connection};

use crate::error::Busy;

/// Bounds on DuckDB's own memory and threads, so that checking or backing up
/// a database of any size stays within a few hundred MiB.
const MEMORY_LIMIT: &str = "160MB";
const MAX_THREADS: i64 = 4;

/// Which lock we are about to take, so we know what conflicts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Readers share the file; only a writer is in the way.
    ReadOnly,
    /// Writing, replacing or moving the file: any other user is in the way.
    Exclusive,
}

fn duckdb_config(access: Access) -> duckdb::Result<Config> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get() as i64)
        .min(MAX_THREADS);
    let mode = match access {
        Access::ReadOnly => AccessMode::ReadOnly,
        Access::Exclusive => AccessMode::ReadWrite,
    };
    Config::default()
        .access_mode(mode)?
        .max_memory(MEMORY_LIMIT)?
        .threads(threads)?
        // DuckDB spills large sorts and groups into `<db>.tmp/` beside the
        // file by default: a check must write nothing near the database.
        .with("temp_directory", spill_dir().to_string_lossy())?
        .enable_autoload_extension(false)
}

/// Where DuckDB may spill what does not fit in its memory limit.
fn spill_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("upkeep-spill-{}", std::process::id()))
}

/// Opens a database file through DuckDB with bounded memory and threads. A
/// lock held by another process becomes a [`Busy`] error naming it.
pub fn open(path: &Path, access: Access) -> Result<Connection> {
    refuse_if_held(path, access)?;
    let config = duckdb_config(access)?;
    Connection::open_with_flags(path, config).map_err(|error| {
        let message = error.to_string();
        match pid_in_lock_error(&message) {
            Some(pid) => busy(path, pid),
            None => anyhow::Error::new(error)
                .context(format!("cannot open database `{}`", path.display())),
        }
    })
}

/// Opens a database file for writing. A `.wal` beside it that DuckDB cannot
/// replay would be deleted by the open (DuckDB skips it, then drops it):
/// a copy of it is kept in `quarantine/` first, and returned with why.
pub fn open_writable(
    path: &Path,
    env: &str,
) -> Result<(Connection, Option<(std::path::PathBuf, String)>)> {
    refuse_if_held(path, Access::Exclusive)?;
    let kept = crate::db::wal::keep_if_unreplayable(path, env)?;
    Ok((open(path, Access::Exclusive)?, kept))
}

/// An in-memory DuckDB with the same bounds, for work across attached files.
pub fn open_in_memory() -> Result<Connection> {
    let config = duckdb_config(Access::Exclusive)?;
    Ok(Connection::open_in_memory_with_flags(config)?)
}

/// How many copies of a held database [`read_checkpointed`] tries.
const COPY_TRIES: usize = 3;

/// Runs `read` on `path`'s database opened read-only; when another process
/// (the app) holds it, on a copy of it as of its last checkpoint, made in
/// `scratch` and removed once read. What only the `.wal` holds is not in
/// that copy: for what is always checkpointed (what upkeep itself wrote
/// and closed, such as the migrations it recorded).
///
/// DuckDB never writes over a block the database header in force uses: a
/// checkpoint writes its blocks elsewhere, then the header. So the copy is
/// whole when the headers (the first [`BLOCKS_START`] bytes) are the same
/// before the copy, in it, and after it; otherwise a checkpoint ran
/// meanwhile, and the copy is made again.
///
/// [`BLOCKS_START`]: crate::db::header::BLOCKS_START
pub fn read_checkpointed<T>(
    path: &Path,
    scratch: &Path,
    read: impl Fn(&Connection) -> Result<T>,
) -> Result<T> {
    use std::os::unix::fs::FileExt;
    if lock_holder(path, Access::ReadOnly).is_none() {
        return read(&open(path, Access::ReadOnly)?);
    }
    let headers = |file: &std::fs::File| -> std::io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; crate::db::header::BLOCKS_START as usize];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    };
    for _ in 0..COPY_TRIES {
        let input = std::fs::File::open(path)
            .with_context(|| format!("cannot open `{}`", path.display()))?;
        let before =
            headers(&input).with_context(|| format!("cannot read `{}`", path.display()))?;
        let mut copy = crate::fsx::partial_file(scratch)?;
        crate::fsx::copy_fast(&input, copy.as_file_mut(), false, &|_| {})?;
        let after = headers(&input).with_context(|| format!("cannot read `{}`", path.display()))?;
        let copied = headers(copy.as_file())
            .with_context(|| format!("cannot read `{}`", copy.path().display()))?;
        if before == after && copied == before {
            let conn = open(copy.path(), Access::ReadOnly)?;
            return read(&conn);
        }
    }
    anyhow::bail!(
        "`{}` was checkpointed during each of {COPY_TRIES} copies: cannot read it now",
        path.display()
    )
}

/// Fails with [`Busy`] when another process holds a lock on `path` that
/// conflicts with `access`.
pub fn refuse_if_held(path: &Path, access: Access) -> Result<()> {
    match lock_holder(path, access) {
        Some(pid) => Err(busy(path, pid)),
        None => Ok(()),
    }
}

/// The PID of a process holding a lock on `path` that conflicts with
/// `access`, if any. A missing file has no holder.
pub fn lock_holder(path: &Path, access: Access) -> Option<u32> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: `flock` is plain data; F_GETLK only fills it in.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = match access {
        Access::ReadOnly => libc::F_RDLCK,
        Access::Exclusive => libc::F_WRLCK,
    } as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: a valid descriptor and a valid pointer to a `flock`.
    let status = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut query) };
    if status == 0 && query.l_type != libc::F_UNLCK as libc::c_short && query.l_pid > 0 {
        Some(query.l_pid as u32)
    } else {
        None
    }
}

fn busy(path: &Path, pid: u32) -> anyhow::Error {
    anyhow::Error::new(Busy(format!(
        "database `{}` is open in another process: PID {pid}{}; stop it (for the app: its stop script) and try again",
        path.display(),
        crate::process::describe(pid)
    )))
}

/// DuckDB's lock error reads "... Conflicting lock is held in CMD (PID 123) ...".
fn pid_in_lock_error(message: &str) -> Option<u32> {
    if !message.contains("lock") {
        return None;
    }
    let (_, after) = message.split_once("PID ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pid_in_duckdb_lock_errors() {
        let message = "IO Error: Could not set lock on file \"/x/data.duckdb\": Conflicting lock is held in /usr/bin/app (PID 4242) by user root. See also https://duckdb.org/docs/";
        assert_eq!(pid_in_lock_error(message), Some(4242));
        assert_eq!(pid_in_lock_error("Corrupt database file"), None);
    }
}
