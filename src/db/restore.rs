//! Restoring a backup: the guide's manual procedure, made safe.
//!
//! The backup is verified before use (its hash against the manifest, then a
//! full read), the current database and `.wal` are kept aside, the swap is a
//! rename, and the result is checked.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::db::Env;
use crate::db::backups::{self, Backup, Finding};
use crate::db::catalog::Schema;
use crate::db::check::{self, Report};
use crate::db::open::{self, Access};
use crate::db::swap::{self, Shelf};
use crate::fsx;
use crate::progress::Progress;

/// Which backup to restore.
#[derive(Debug, Clone)]
pub enum Choice {
    Named(String),
    /// The newest backup that verifies.
    Latest,
}

#[derive(Debug, Clone)]
pub struct Restored {
    pub backup: Backup,
    /// Newer backups passed over because they did not verify.
    pub skipped: Skipped,
    /// Where the previous database and `.wal` were kept.
    pub aside: Option<PathBuf>,
    pub after: Report,
}

/// Backups passed over because they did not verify: name, and why.
pub type Skipped = Vec<(String, String)>;

/// A backup that passed verification, with its content hash.
#[derive(Debug, Clone)]
pub struct Verified {
    pub backup: Backup,
    pub hash: blake3::Hash,
}

/// Verifies a backup: the content hash against its manifest (when it has
/// one), then a full read with DuckDB, then the row counts it recorded.
pub fn verify(backup: &Backup, schema: Option<&Schema>) -> Result<Verified, String> {
    // The deep check reads every byte (checking every block in use and
    // hashing), besides DuckDB's scan of every column.
    let report =
        check::check(&backup.path, schema, true).map_err(|error| crate::error::describe(&error))?;
    let hash = match report.blake3 {
        Some(hash) => hash,
        None => fsx::hash_file(&backup.path).map_err(|error| crate::error::describe(&error))?,
    };
    if let Some(manifest) = &backup.manifest
        && manifest.blake3 != hash.to_hex().as_str()
    {
        return Err(
            "its content differs from its manifest (the file changed after it was made)".into(),
        );
    }
    if !report.ok() {
        return Err(report.problem_list());
    }
    if let Some(manifest) = &backup.manifest {
        let rows: std::collections::BTreeMap<String, u64> = report
            .rows()
            .map(|(table, rows)| (table.to_string(), rows))
            .collect();
        if rows != manifest.tables {
            return Err("its row counts differ from its manifest".into());
        }
    }
    Ok(Verified {
        backup: backup.clone(),
        hash,
    })
}

/// Verifies every backup of `env` in `dir`, as a restore would: what
/// `upkeep verify ENV` reports.
pub fn verify_all(dir: &Path, env: &str, schema: Option<&Schema>) -> Result<Vec<Finding>> {
    Ok(backups::list(dir, env)?
        .iter()
        .map(|backup| match verify(backup, schema) {
            Ok(_) if backup.status == backups::Status::Legacy => Finding {
                name: backup.name.clone(),
                ok: true,
                detail: "readable by DuckDB (a legacy backup: no manifest to check against)"
                    .to_string(),
            },
            Ok(_) => Finding {
                name: backup.name.clone(),
                ok: true,
                detail: "verified: hash, DuckDB read, row counts".to_string(),
            },
            Err(reason) => Finding {
                name: backup.name.clone(),
                ok: false,
                detail: reason,
            },
        })
        .collect())
}

/// The newest backup of `env` that verifies, with the newer ones that did
/// not and why.
pub fn newest_verified(
    dir: &Path,
    env: &str,
    schema: Option<&Schema>,
) -> Result<(Option<Verified>, Skipped)> {
    let mut skipped = Vec::new();
    for backup in backups::list(dir, env)?.iter().rev() {
        match verify(backup, schema) {
            Ok(verified) => return Ok((Some(verified), skipped)),
            Err(reason) => skipped.push((backup.name.clone(), reason)),
        }
    }
    Ok((None, skipped))
}

/// Restores a backup of `env` from `dir` in place of its database.
pub fn restore(
    env: &Env,
    dir: &Path,
    choice: &Choice,
    schema: Option<&Schema>,
    progress: &Progress,
) -> Result<Restored> {
    open::refuse_if_held(&env.db, Access::Exclusive)?;
    let (verified, skipped) = match choice {
        Choice::Named(name) => {
            let backup = backups::resolve(dir, &env.name, name)?;
            match verify(&backup, schema) {
                Ok(verified) => (verified, Vec::new()),
                Err(reason) => bail!(
                    "backup `{name}` does not verify: {reason}; nothing was changed: pick another from `upkeep backups {}`",
                    env.name
                ),
            }
        }
        Choice::Latest => match newest_verified(dir, &env.name, schema)? {
            (Some(verified), skipped) => (verified, skipped),
            (None, skipped) if skipped.is_empty() => bail!(
                "no backup of `{}` in `{}`: nothing to restore, nothing was changed; if its backups are in another folder, \
                 set `backups: {{ dir: ... }}` in upkeep.yaml",
                env.name,
                dir.display()
            ),
            (None, skipped) => bail!(
                "no backup of `{}` verifies ({}); nothing was changed",
                env.name,
                skipped
                    .iter()
                    .map(|(name, reason)| format!("{name}: {reason}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
    };
    put_in_place(env, verified, skipped, schema, progress)
}

/// Restores a backup verified just now (a download from off-site,
/// verified before it was given its name), without reading it twice: the
/// copy put in place is still checked against its hash.
pub fn restore_verified(
    env: &Env,
    verified: Verified,
    schema: Option<&Schema>,
    progress: &Progress,
) -> Result<Restored> {
    open::refuse_if_held(&env.db, Access::Exclusive)?;
    put_in_place(env, verified, Vec::new(), schema, progress)
}

fn put_in_place(
    env: &Env,
    verified: Verified,
    skipped: Skipped,
    schema: Option<&Schema>,
    progress: &Progress,
) -> Result<Restored> {
    let replaced = swap::replace_with_copy(
        &env.db,
        &env.name,
        &verified.backup.path,
        &verified.hash,
        Shelf::Aside,
        schema,
        progress,
    )?;
    Ok(Restored {
        backup: verified.backup,
        skipped,
        aside: replaced.shelved,
        after: replaced.report,
    })
}
