//! Writing new database files in a chosen storage version.
//!
//! DuckDB 2.0 writes its own 2.0 format by default, which an app on DuckDB
//! 1.x cannot open. Every file upkeep creates is therefore made through
//! `ATTACH ... (STORAGE_VERSION ..)` from an in-memory connection, in the
//! version of the file it replaces or the one upkeep.yaml sets.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use duckdb::Connection;

use crate::db::StorageVersion;
use crate::db::header;
use crate::db::open::{self, literal};
use crate::db::swap::{self, Shelf};
use crate::fsx;

/// The name the new file is attached under.
pub const NEW: &str = "upkeep_new";

/// The storage version for a file that replaces `db`: the one upkeep.yaml
/// sets, else the one in `db`'s header, else the most compatible one. The
/// second value says where it came from, for the report.
pub fn target_version(
    configured: Option<&StorageVersion>,
    db: &Path,
) -> (StorageVersion, &'static str) {
    if let Some(version) = configured {
        return (version.clone(), "set in upkeep.yaml");
    }
    match header::read(db)
        .ok()
        .and_then(|header| header.ok())
        .and_then(|header| header.storage_version())
    {
        Some(version) => (version, "kept from the file it replaces"),
        None => (
            StorageVersion::most_compatible(),
            "the most compatible, as the old file's header is unreadable",
        ),
    }
}

/// A new, empty database file being built beside `db`, attached as [`NEW`]
/// to an in-memory connection. It gets its final name in [`Fresh::finish`];
/// dropped before that, it is deleted.
pub struct Fresh {
    pub conn: Connection,
    path: PathBuf,
    finished: bool,
}

impl Fresh {
    pub fn create(db: &Path, version: &StorageVersion) -> Result<Fresh> {
        let dir = swap::folder_of(db)?;
        fsx::create_private_dir(dir)?;
        let path = dir.join(format!(
            "{}fresh-{}.duckdb",
            fsx::PARTIAL_PREFIX,
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(fsx::with_suffix(&path, ".wal"));
        let conn = open::open_in_memory()?;
        let fresh = Fresh {
            conn,
            path,
            finished: false,
        };
        fresh
            .conn
            .execute_batch(&format!(
                "ATTACH {} AS {NEW} (STORAGE_VERSION {})",
                literal(&fresh.path.to_string_lossy()),
                literal(version.as_str())
            ))
            .with_context(|| format!("cannot create `{}`", fresh.path.display()))?;
        Ok(fresh)
    }

    /// Runs the statements of `schema.sql` inside the new file.
    pub fn apply_schema(&self, schema: &crate::db::catalog::Schema) -> Result<()> {
        self.conn
            .execute_batch(&format!("USE {NEW};\n{}", schema.text))
            .with_context(|| format!("cannot build a database from `{}`", schema.path.display()))
    }

    /// Checkpoints and detaches the new file, syncs it and puts it in place
    /// of `db`, the current database going to `shelf` (see
    /// [`swap::put_in_place`]). Returns that folder.
    pub fn finish(mut self, db: &Path, env: &str, shelf: Shelf) -> Result<Option<PathBuf>> {
        self.conn
            .execute_batch(&format!("CHECKPOINT {NEW}; USE memory; DETACH {NEW}"))
            .context("cannot close the new database file")?;
        let wal = fsx::with_suffix(&self.path, ".wal");
        if wal.exists() {
            anyhow::bail!(
                "the new database `{}` still has a .wal after its checkpoint; nothing was changed",
                self.path.display()
            );
        }
        std::fs::File::open(&self.path)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot sync `{}`", self.path.display()))?;
        let shelved = swap::put_in_place(db, env, &self.path, shelf)?;
        self.finished = true;
        Ok(shelved)
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(fsx::with_suffix(&self.path, ".wal"));
        }
    }
}
