//! Repair: quarantine a damaged database and bring back a sound one.
//!
//! What comes back, in order of preference: the newest backup that
//! verifies; else the tables that can still be read, salvaged into a fresh
//! file; else an empty database built from schema.sql. The plan is settled
//! before anything moves, so when nothing can be brought back the damaged
//! file stays where it is. The damaged file is never deleted: it moves, with
//! its `.wal`, into `quarantine/` beside the database.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::config::Env;
use crate::db::StorageVersion;
use crate::db::backups::Backup;
use crate::db::catalog::Schema;
use crate::db::check::{self, Report};
use crate::db::fresh::{self, Fresh};
use crate::db::open::{self, Access};
use crate::db::restore::{self, Skipped};
use crate::db::salvage::{self, Salvaged};
use crate::db::swap::{self, Shelf};
use crate::progress::Progress;

/// What a repair brought back.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The database was sound: nothing was touched.
    Sound,
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

#[derive(Debug, Clone)]
pub struct Repaired {
    pub outcome: Outcome,
    pub before: Report,
    /// Where the damaged file and its `.wal` now are.
    pub quarantine: Option<PathBuf>,
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
    let before = check::check(&env.db, sources.schema, true)?;
    if before.ok() {
        return Ok(Repaired {
            outcome: Outcome::Sound,
            after: before.clone(),
            before,
            quarantine: None,
        });
    }
    let (version, version_source) = fresh::target_version(sources.storage_version, &env.db);

    let (newest, skipped) =
        restore::newest_verified(sources.backups_dir, &env.name, sources.schema)?;
    let (outcome, quarantine) = if let Some(verified) = newest {
        let quarantine = swap::replace_with_copy(
            &env.db,
            &env.name,
            &verified.backup.path,
            &verified.hash,
            Shelf::Quarantine,
            progress,
        )?;
        let outcome = Outcome::FromBackup {
            backup: Box::new(verified.backup),
            skipped,
        };
        (outcome, quarantine)
    } else if before.opens() {
        let fresh = Fresh::create(&env.db, &version)?;
        let quarantine = swap::shelve(&env.db, &env.name, Shelf::Quarantine)?;
        let quarantined = quarantine
            .as_ref()
            .and_then(|folder| env.db.file_name().map(|name| folder.join(name)));
        let attempt = match &quarantined {
            Some(old) => salvage::salvage(old, &fresh, sources.schema),
            None => Err(anyhow::anyhow!("the database file vanished")),
        };
        let outcome = match attempt {
            Ok(salvaged) => Outcome::Salvaged {
                salvaged,
                storage_version: version,
                version_source,
            },
            Err(error) => {
                let Some(schema) = sources.schema else {
                    bail!(
                        "cannot repair `{}`: salvage failed ({error:#}) and upkeep.yaml names no schema.sql to build an empty database from; \
                         the damaged file is kept in `{}`",
                        env.name,
                        quarantine.as_deref().unwrap_or(&env.db).display()
                    );
                };
                // Start over from a clean file: the failed salvage may have
                // created part of the tables.
                drop(fresh);
                let fresh = Fresh::create(&env.db, &version)?;
                fresh.apply_schema(schema)?;
                fresh.finish(&env.db)?;
                return finish(
                    env,
                    sources,
                    before,
                    quarantine,
                    Outcome::EmptyFromSchema {
                        storage_version: version,
                        version_source,
                        reason: format!("salvage failed: {error:#}"),
                    },
                );
            }
        };
        fresh.finish(&env.db)?;
        (outcome, quarantine)
    } else if let Some(schema) = sources.schema {
        let fresh = Fresh::create(&env.db, &version)?;
        fresh.apply_schema(schema)?;
        let quarantine = swap::shelve(&env.db, &env.name, Shelf::Quarantine)?;
        fresh.finish(&env.db)?;
        let reason = if skipped.is_empty() {
            "no backup, and the file cannot be opened".to_string()
        } else {
            "no backup verifies, and the file cannot be opened".to_string()
        };
        let outcome = Outcome::EmptyFromSchema {
            storage_version: version,
            version_source,
            reason,
        };
        (outcome, quarantine)
    } else {
        bail!(
            "cannot repair `{}`: no backup verifies, the file cannot be opened, and upkeep.yaml names no \
             schema.sql to build an empty database from; nothing was moved: restore a backup by hand or add `schema:`",
            env.name
        );
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
        after,
    })
}

/// Where the damaged file went, for messages.
pub fn quarantined_file(repaired: &Repaired, env: &Env) -> Option<PathBuf> {
    let folder = repaired.quarantine.as_ref()?;
    Some(folder.join(env.db.file_name()?))
}
