//! Repair: quarantine a damaged database and bring back a sound one.
//!
//! What comes back, in order of preference: when the file itself is damaged
//! (unreadable, bad checksums, truncated), the newest backup that verifies;
//! else the tables that can still be read, salvaged into a fresh file; else
//! an empty database built from schema.sql. When only the content is off
//! (a missing table or column, broken keys), salvage comes first, as it
//! keeps the rows written since the last backup. The replacement is built
//! before anything moves, so when nothing can be brought back the damaged
//! file stays where it is. It is never deleted: it moves, with its `.wal`,
//! into `quarantine/` beside the database.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::db::Env;
use crate::db::StorageVersion;
use crate::db::backups::Backup;
use crate::db::catalog::Schema;
use crate::db::check::{self, ProblemKind, Report};
use crate::db::fresh::{self, Fresh};
use crate::db::open::{self, Access};
use crate::db::restore::{self, Skipped};
use crate::db::salvage::{self, Salvaged};
use crate::db::swap::{self, Shelf};
use crate::db::wal;
use crate::progress::Progress;

/// What a repair brought back.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The database was sound: nothing was touched.
    Sound,
    /// Only its `.wal` could not be replayed: it moved to quarantine, and
    /// the database file itself is sound.
    WalQuarantined,
    FromBackup {
        backup: Box<Backup>,
        /// Newer backups passed over, with why.
        skipped: Skipped,
    },
    Salvaged {
        salvaged: Salvaged,
        storage_version: StorageVersion,
        version_source: &'static str,
    },
    EmptyFromSchema {
        storage_version: StorageVersion,
        version_source: &'static str,
        /// Why salvage was not possible.
        reason: String,
    },
}

impl Outcome {
    /// Whether the repair changed the database: a sound one is left
    /// untouched (the `changed` of `upkeep repair` and of `uses: repair`).
    pub fn changed(&self) -> bool {
        !matches!(self, Outcome::Sound)
    }

    /// A short name and a sentence for what the repair did.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Outcome::Sound => ("sound", "the database is sound; nothing was touched".into()),
            Outcome::WalQuarantined => (
                "wal_quarantined",
                "the database file itself is sound and was not touched".into(),
            ),
            Outcome::FromBackup { backup, skipped } => {
                let mut text = format!("restored the newest backup that verifies, {}", backup.name);
                for (name, reason) in skipped {
                    text.push_str(&format!("; skipped {name}: {reason}"));
                }
                ("restored_backup", text)
            }
            Outcome::Salvaged {
                salvaged,
                storage_version,
                version_source,
            } => {
                let mut text = format!(
                    "no backup verifies; salvaged {} table(s) into a fresh file (storage {storage_version}, {version_source})",
                    salvaged.copied.len()
                );
                for (table, rows) in &salvaged.copied {
                    text.push_str(&format!("; {table}: {rows} rows"));
                }
                for (table, why) in &salvaged.lost {
                    text.push_str(&format!("; {table}: LOST, created empty ({why})"));
                }
                for (table, rows) in &salvaged.dropped {
                    text.push_str(&format!(
                        "; {table}: {rows} row(s) with NULL or duplicate keys left in the quarantined file"
                    ));
                }
                ("salvaged", text)
            }
            Outcome::EmptyFromSchema {
                storage_version,
                version_source,
                reason,
            } => (
                "empty_from_schema",
                format!(
                    "{reason}; created an EMPTY database from schema.sql (storage {storage_version}, {version_source})"
                ),
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Repaired {
    pub outcome: Outcome,
    pub before: Report,
    /// Where the damaged file and its `.wal` now are.
    pub quarantine: Option<PathBuf>,
    /// Where a `.wal` that could not be replayed went, on its own.
    pub wal_quarantine: Option<PathBuf>,
    pub after: Report,
}

/// What the configuration gives a repair to work with.
pub struct Sources<'a> {
    pub backups_dir: &'a std::path::Path,
    pub schema: Option<&'a Schema>,
    pub storage_version: Option<&'a StorageVersion>,
}

pub fn repair(env: &Env, sources: &Sources, progress: &Progress) -> Result<Repaired> {
    open::refuse_if_held(&env.db, Access::Exclusive)?;
    let mut before = check::check(&env.db, sources.schema, true)?;
    if before.ok() {
        return Ok(Repaired {
            outcome: Outcome::Sound,
            after: before.clone(),
            before,
            quarantine: None,
            wal_quarantine: None,
        });
    }
    // A `.wal` that cannot be replayed goes to quarantine on its own first
    // (DuckDB may even refuse the file because of it); then the file is
    // judged by itself.
    let mut wal_quarantine = None;
    if before
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::UnreplayedWal)
    {
        wal_quarantine = Some(wal::quarantine(&env.db, &env.name)?);
        let file_alone = check::check(&env.db, sources.schema, true)?;
        if file_alone.ok() {
            return Ok(Repaired {
                outcome: Outcome::WalQuarantined,
                before,
                quarantine: None,
                wal_quarantine,
                after: file_alone,
            });
        }
        before.problems = file_alone.problems;
    }
    let mut repaired = repair_file(env, sources, before, progress)?;
    repaired.wal_quarantine = wal_quarantine;
    Ok(repaired)
}

fn repair_file(
    env: &Env,
    sources: &Sources,
    before: Report,
    progress: &Progress,
) -> Result<Repaired> {
    let (version, version_source) = fresh::target_version(sources.storage_version, &env.db);
    // Damage to the file itself calls for the last good copy. Problems of
    // content only (a missing table, broken keys) are better mended by a
    // salvage, which keeps every row written since the last backup.
    let damaged = before
        .problems
        .iter()
        .any(|problem| problem.kind.is_damage());
    let mut tried_backups = None;
    if damaged {
        let (newest, skipped) =
            restore::newest_verified(sources.backups_dir, &env.name, sources.schema)?;
        if let Some(verified) = newest {
            return from_backup(env, sources, before, verified, skipped, progress);
        }
        tried_backups = Some(skipped);
    }
    let mut salvage_failure = None;
    if before.opens() {
        // Salvage reads the file where it is: it moves only once a
        // replacement is ready.
        let fresh = Fresh::create(&env.db, &version)?;
        match salvage::salvage(&env.db, &fresh, sources.schema, progress) {
            Ok(salvaged) => {
                let quarantine = fresh.finish(&env.db, &env.name, Shelf::Quarantine)?;
                let outcome = Outcome::Salvaged {
                    salvaged,
                    storage_version: version,
                    version_source,
                };
                return finish(env, sources, before, quarantine, outcome);
            }
            Err(error) => salvage_failure = Some(crate::error::describe(&error)),
        }
    }
    let skipped = match tried_backups {
        Some(skipped) => skipped,
        None => {
            let (newest, skipped) =
                restore::newest_verified(sources.backups_dir, &env.name, sources.schema)?;
            if let Some(verified) = newest {
                return from_backup(env, sources, before, verified, skipped, progress);
            }
            skipped
        }
    };
    let reason = format!(
        "{}, and {}",
        if skipped.is_empty() {
            "no backup"
        } else {
            "no backup verifies"
        },
        salvage_failure.map_or_else(
            || "the file cannot be opened".to_string(),
            |error| format!("salvage failed ({error})")
        )
    );
    let Some(schema) = sources.schema else {
        bail!(
            "cannot repair `{}`: {reason}, and upkeep.yaml names no schema.sql to build an empty database from; \
             nothing was moved: restore a backup by hand or add `schema:`",
            env.name
        );
    };
    let fresh = Fresh::create(&env.db, &version)?;
    fresh.apply_schema(schema)?;
    let quarantine = fresh.finish(&env.db, &env.name, Shelf::Quarantine)?;
    let outcome = Outcome::EmptyFromSchema {
        storage_version: version,
        version_source,
        reason,
    };
    finish(env, sources, before, quarantine, outcome)
}

fn from_backup(
    env: &Env,
    sources: &Sources,
    before: Report,
    verified: restore::Verified,
    skipped: Skipped,
    progress: &Progress,
) -> Result<Repaired> {
    let quarantine = swap::replace_with_copy(
        &env.db,
        &env.name,
        &verified.backup.path,
        &verified.hash,
        Shelf::Quarantine,
        sources.schema,
        progress,
    )?
    .shelved;
    let outcome = Outcome::FromBackup {
        backup: Box::new(verified.backup),
        skipped,
    };
    finish(env, sources, before, quarantine, outcome)
}

fn finish(
    env: &Env,
    sources: &Sources,
    before: Report,
    quarantine: Option<PathBuf>,
    outcome: Outcome,
) -> Result<Repaired> {
    let after = check::check(&env.db, sources.schema, true)?;
    Ok(Repaired {
        outcome,
        before,
        quarantine,
        wal_quarantine: None,
        after,
    })
}
