//! `uses: migrate` (`with: { dir }`): applies the SQL files `NNNN_name.sql`
//! of a folder in order, each in its own transaction, and records them in
//! the table `upkeep_migrations` (version, name, checksum, applied_at).
//!
//! A recorded file whose content changed is refused, naming the file, before
//! anything is applied (exit 2). Before the first file, migrate journals its
//! restore point: the backup this run made, or the one its repair put in
//! place, or else a verified backup it makes itself. Its undo puts that
//! backup back in place, so a failed update leaves the data as it was. It
//! never migrates without a restore point unless `with: { rollback: none }`.
//! The file is changed in place by DuckDB, which keeps its storage version.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use duckdb::Connection;
use serde_json::json;

use super::{Ctx, Plan, Ran, StepType, Undo, With, later};
use crate::db::backups;
use crate::db::open::{self, Access};
use crate::db::swap::{self, Shelf};
use crate::db::{backup, check, rewind};
use crate::error::{bad_input, code, exit_code};
use crate::fsx;

pub struct Migrate;

const TABLE: &str = "upkeep_migrations";

struct Migration {
    version: i64,
    file: String,
    sql: String,
    checksum: String,
}

/// The migration files of `dir`, in version order.
fn scan(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        bad_input(format!(
            "cannot read the migrations folder `{}`: {error}; fix `with: {{ dir }}`",
            dir.display()
        ))
    })?;
    let mut migrations: Vec<Migration> = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".sql") else {
            continue;
        };
        let version = stem
            .split_once('_')
            .filter(|(digits, name)| {
                !digits.is_empty() && !name.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            })
            .and_then(|(digits, _)| digits.parse::<i64>().ok())
            .ok_or_else(|| {
                bad_input(format!(
                    "`{}`: migration files are named NNNN_name.sql (e.g. 0003_add_email.sql)",
                    entry.path().display()
                ))
            })?;
        let sql = std::fs::read_to_string(entry.path())
            .with_context(|| format!("cannot read `{}`", entry.path().display()))?;
        let checksum = blake3::hash(sql.as_bytes()).to_hex().to_string();
        if let Some(other) = migrations.iter().find(|m| m.version == version) {
            return Err(bad_input(format!(
                "`{file}` and `{}` in `{}` have the same version {version}",
                other.file,
                dir.display()
            )));
        }
        migrations.push(Migration {
            version,
            file,
            sql,
            checksum,
        });
    }
    migrations.sort_by_key(|m| m.version);
    Ok(migrations)
}

/// What `upkeep_migrations` records: version -> (name, checksum).
fn applied(conn: &Connection) -> Result<BTreeMap<i64, (String, String)>> {
    let exists: i64 = conn.query_row(
        &format!("SELECT count(*) FROM duckdb_tables() WHERE table_name = '{TABLE}' AND database_name = current_database()"),
        [],
        |row| row.get(0),
    )?;
    if exists == 0 {
        return Ok(BTreeMap::new());
    }
    let mut statement = conn.prepare(&format!("SELECT version, name, checksum FROM {TABLE}"))?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))?;
    Ok(rows.collect::<duckdb::Result<_>>()?)
}

/// The files still to apply. A recorded file that changed is refused.
fn pending<'m>(
    migrations: &'m [Migration],
    applied: &BTreeMap<i64, (String, String)>,
    dir: &Path,
) -> Result<Vec<&'m Migration>> {
    for migration in migrations {
        if let Some((_, checksum)) = applied.get(&migration.version)
            && *checksum != migration.checksum
        {
            return Err(bad_input(format!(
                "migration `{}` was applied, and its file has changed since (checksum {} recorded, {} now): \
                 put the file back as it was and write a new migration for the change; nothing was applied",
                dir.join(&migration.file).display(),
                &checksum[..checksum.len().min(12)],
                &migration.checksum[..12]
            )));
        }
    }
    Ok(migrations
        .iter()
        .filter(|m| !applied.contains_key(&m.version))
        .collect())
}

fn folder(ctx: &Ctx, with: &With) -> Result<PathBuf> {
    let dir = with
        .get("dir")
        .ok_or_else(|| bad_input("`migrate` needs `with: { dir: FOLDER }`"))?;
    folder_named(ctx, dir)
}

/// The migrations folder `dir` (as `with: { dir }` gives it) in the project.
fn folder_named(ctx: &Ctx, dir: &str) -> Result<PathBuf> {
    // Empty once its variables are filled in: it would name the project
    // folder, and find no migrations there.
    if dir.trim().is_empty() {
        return Err(bad_input(
            "`migrate`'s `with: { dir }` is empty: give the folder of the NNNN_name.sql files (check the variable it uses)",
        ));
    }
    Ok(ctx.config.root.join(dir))
}

/// The files of the migrations folder `dir` (as `with: { dir }` gives it)
/// that the database of `ctx.env` has not recorded: what `migrate` would
/// apply. A recorded file that changed is refused (bad input), as
/// `migrate` refuses it. Another process (the app) may hold the database:
/// with `copy`, its recorded migrations are then read from a copy of its
/// last checkpoint (`migrate` checkpoints as it closes: they are all
/// there), which goes as soon as it is read; without, `None`: only a real
/// run can tell.
pub(super) fn not_recorded(ctx: &Ctx, dir: &str, copy: bool) -> Result<Option<Vec<String>>> {
    let dir = folder_named(ctx, dir)?;
    let migrations = scan(&dir)?;
    let db = &ctx.env.db;
    if migrations.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let recorded = if !db.exists() {
        BTreeMap::new()
    } else if copy {
        fsx::create_private_dir(&ctx.config.backups_dir)?;
        open::read_checkpointed(db, &ctx.config.backups_dir, applied)?
    } else {
        match open::open(db, Access::ReadOnly).and_then(|conn| applied(&conn)) {
            Err(error) if exit_code(&error) == code::BUSY => return Ok(None),
            recorded => recorded?,
        }
    };
    Ok(Some(
        pending(&migrations, &recorded, &dir)?
            .iter()
            .map(|m| m.file.clone())
            .collect(),
    ))
}

fn names(pending: &[&Migration]) -> String {
    pending
        .iter()
        .map(|m| m.file.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl StepType for Migrate {
    fn name(&self) -> &'static str {
        "migrate"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["dir", "rollback"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        let Some(dir) = with.get("dir") else {
            return Err("needs `dir`, the folder of the NNNN_name.sql files".to_string());
        };
        // The SQL that runs on the database comes from this folder: it stays
        // in the project, whatever a variable in it holds.
        let inside = Path::new(dir)
            .components()
            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(format!(
                "`dir: {dir}` must be a folder inside the project, relative to upkeep.yaml's folder and without `..`"
            ));
        }
        match with.get("rollback").map(String::as_str) {
            None | Some("none") => Ok(()),
            Some(text) if later(text) => Ok(()),
            Some(other) => Err(format!(
                "`rollback: {other}`: the only value is `none` (no restore point)"
            )),
        }
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let blocked = |error: anyhow::Error| Plan::blocked("migrate", &error);
        let (dir, migrations) =
            match folder(ctx, with).and_then(|dir| Ok((dir.clone(), scan(&dir)?))) {
                Ok(found) => found,
                Err(error) => return blocked(error),
            };
        let recorded = match open::open(&ctx.env.db, Access::ReadOnly)
            .and_then(|conn| applied(&conn))
        {
            Ok(recorded) => recorded,
            Err(error) if exit_code(&error) == code::BUSY => {
                return Plan {
                    summary: format!(
                        "apply the migrations of {} not yet recorded (cannot look now: {}; a real run stops the app first)",
                        dir.display(),
                        crate::error::describe(&error)
                    ),
                    ..Plan::default()
                };
            }
            Err(error) => return blocked(error),
        };
        match pending(&migrations, &recorded, &dir) {
            Ok(pending) if pending.is_empty() => Plan {
                summary: format!("migrate from {}: nothing pending", dir.display()),
                changes: Some(false),
                ..Plan::default()
            },
            Ok(pending) => Plan {
                summary: format!(
                    "apply {} migration(s) from {}: {}, after securing a restore point",
                    pending.len(),
                    dir.display(),
                    names(&pending)
                ),
                changes: Some(true),
                ..Plan::default()
            },
            Err(error) => blocked(error),
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let dir = folder(ctx, with)?;
        let migrations = scan(&dir)?;
        let (todo, wal_kept): (Vec<&Migration>, _) = {
            let (conn, wal_kept) = open::open_writable(&ctx.env.db, &ctx.env.name)?;
            (pending(&migrations, &applied(&conn)?, &dir)?, wal_kept)
        };
        let warning = wal_kept.map_or_else(String::new, |(kept, reason)| {
            format!(
                "; warning: the .wal could not be replayed ({reason}), a copy is kept in {}",
                kept.display()
            )
        });
        if todo.is_empty() {
            return Ok(Ran::unchanged(
                format!("nothing pending{warning}"),
                Undo::nothing(),
            ));
        }
        let point = if with.get("rollback").is_some_and(|r| r == "none") {
            None
        } else {
            let (backup, blake3) = restore_point(ctx)?;
            // As long as the run does not go on past migrate, the database
            // holds nothing the restore point lacks but this run's
            // migrations: the rollback may rewind it in place. Once it has
            // gone on (`Undo::went_on`), later steps (the new app) may have
            // written to it: the rollback copies the backup back and keeps
            // the migrated file aside. Without `rewind` (an older journal),
            // it does the latter.
            let undo = Undo(json!({ "backup": backup, "blake3": blake3, "rewind": true }));
            (ctx.record)(&undo)?;
            Some(undo)
        };
        let (conn, _) = open::open_writable(&ctx.env.db, &ctx.env.name)?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (version BIGINT PRIMARY KEY, name VARCHAR NOT NULL, \
             checksum VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        ))?;
        for migration in &todo {
            // DuckDB's message comes last: it may run over several lines
            // ("LINE 1: ..." and a caret under the culprit).
            apply(&conn, migration).map_err(|error| {
                anyhow::anyhow!(
                    "migration `{}` failed (its own changes were rolled back; fix the file, then run again): {}",
                    dir.join(&migration.file).display(),
                    crate::error::describe(&error).trim_end()
                )
            })?;
        }
        conn.execute_batch("CHECKPOINT")?;
        Ok(Ran::changed(
            format!("applied {}{warning}", names(&todo)),
            point.unwrap_or_else(Undo::nothing),
        ))
    }

    fn undo(&self, ctx: &Ctx, undo: &Undo) -> Result<String> {
        let (Some(backup), Some(hash)) = (
            undo.0.get("backup").and_then(|v| v.as_str()),
            undo.0.get("blake3").and_then(|v| v.as_str()),
        ) else {
            bail!("the journal does not say which backup to put back");
        };
        let hash = blake3::Hash::from_hex(hash).context("bad hash in the journal")?;
        let db = &ctx.env.db;
        let rewind = undo.0.get("rewind").is_some_and(|v| v == true) && !undo.did_run_go_on();
        let how = if !rewind || !db.exists() {
            // The copy is checked before it is put in place.
            let replaced = swap::replace_with_copy(
                db,
                &ctx.env.name,
                Path::new(backup),
                &hash,
                Shelf::Aside,
                ctx.schema,
                &ctx.progress,
            )?;
            replaced.shelved.map_or_else(String::new, |a| {
                format!(" (the migrated one is in {})", a.display())
            })
        } else {
            let rewound = rewind::rewind(db, &ctx.env.name, Path::new(backup), &hash)?;
            let report = check::check(db, ctx.schema, false)?;
            if !report.ok() {
                bail!("the database was rewound to {backup}, but its check fails: look at it");
            }
            format!(
                " ({} rewritten{})",
                fsx::human_size(rewound.written),
                rewound.wal_aside.map_or_else(String::new, |a| format!(
                    ", its .wal moved to {}",
                    a.display()
                ))
            )
        };
        Ok(format!(
            "the database is back as it was before migrate, from {backup}{how}"
        ))
    }
}

fn apply(conn: &Connection, migration: &Migration) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = conn.execute_batch(&migration.sql).and_then(|()| {
        conn.execute(
            &format!("INSERT INTO {TABLE} VALUES (?, ?, ?, now())"),
            duckdb::params![migration.version, migration.file, migration.checksum],
        )
        .map(drop)
    });
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error.into())
        }
    }
}

/// This run's restore point (path and blake3), or a new verified backup.
fn restore_point(ctx: &Ctx) -> Result<(PathBuf, String)> {
    let existing = ctx.restore_point.borrow().path.clone();
    let path = match existing {
        Some(path) => path,
        None => {
            let made = backup::backup(ctx.env, &ctx.config.backups_dir, &ctx.config.rotation, ctx.schema, &ctx.progress, &backup::Taking::Direct)
                .context("migrate makes a backup first (no backup in this run), and it failed: nothing was applied")?;
            ctx.restore_point.borrow_mut().path = Some(made.backup.path.clone());
            made.backup.path
        }
    };
    let manifest = backups::manifest_path(&path);
    let hash = match fsx::read_at_most(&manifest, backups::MANIFEST_LIMIT)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<backups::Manifest>(&bytes).ok())
    {
        Some(manifest) => manifest.blake3,
        None => fsx::hash_file(&path)?.to_hex().to_string(),
    };
    Ok((path, hash))
}
