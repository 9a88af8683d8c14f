//! `uses: restore` (`with: { backup: NAME | latest }`): the restore of
//! `upkeep restore`, as a step or as a rollback action. Undoing it puts the
//! database that was set aside back in place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Ctx, Plan, Ran, StepType, Undo, With};
use crate::db::backups;
use crate::db::restore::{self, Choice};
use crate::db::swap::{self, Shelf};
use crate::fsx;

pub struct Restore;

fn choice(with: &With) -> Choice {
    match with.get("backup").map(String::as_str) {
        None | Some("latest") => Choice::Latest,
        Some(name) => Choice::Named(name.to_string()),
    }
}

impl StepType for Restore {
    fn name(&self) -> &'static str {
        "restore"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["backup"]
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let dir = &ctx.config.backups_dir;
        let found = match choice(with) {
            Choice::Latest => backups::list(dir, &ctx.env.name)
                .ok()
                .and_then(|list| list.last().map(|b| b.name.clone())),
            Choice::Named(name) => backups::resolve(dir, &ctx.env.name, &name)
                .ok()
                .map(|b| b.name),
        };
        match found {
            Some(name) => Plan {
                summary: format!(
                    "restore `{}` from {name} (or the newest that verifies), keeping the current file aside",
                    ctx.env.name
                ),
                ..Plan::default()
            },
            None => Plan {
                summary: format!("restore `{}`", ctx.env.name),
                blocker: Some(format!(
                    "no such backup of `{}` in `{}` now",
                    ctx.env.name,
                    dir.display()
                )),
                ..Plan::default()
            },
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        // Journaled before the swap: the file now in place, by its inode.
        // The swap keeps it aside under that inode (a hard link), so an
        // undo after a crash finds it even before the step could say where.
        let inode = file_id(&ctx.env.db);
        if let Some((dev, ino)) = inode {
            (ctx.record)(&Undo(serde_json::json!({ "dev": dev, "ino": ino })))?;
        }
        let restored = restore::restore(
            ctx.env,
            &ctx.config.backups_dir,
            &choice(with),
            ctx.schema,
            &ctx.progress,
        )?;
        let undo = match (&restored.aside, inode) {
            (Some(aside), Some((dev, ino))) => {
                Undo(serde_json::json!({ "aside": aside, "dev": dev, "ino": ino }))
            }
            (Some(aside), None) => Undo(serde_json::json!({ "aside": aside })),
            (None, _) => Undo::nothing(),
        };
        Ok(Ran::changed(
            format!("restored from {}", restored.backup.name),
            undo,
        ))
    }

    fn undo(&self, ctx: &Ctx, undo: &Undo) -> Result<String> {
        let db = &ctx.env.db;
        let recorded = match (
            undo.0.get("dev").and_then(|v| v.as_u64()),
            undo.0.get("ino").and_then(|v| v.as_u64()),
        ) {
            (Some(dev), Some(ino)) => Some((dev, ino)),
            _ => None,
        };
        let aside = match undo.0.get("aside").and_then(|v| v.as_str()) {
            Some(aside) => PathBuf::from(aside),
            // Interrupted before it said where: the file that was in place
            // is wherever its inode is.
            None => match recorded {
                Some(id) if file_id(db) == Some(id) => {
                    return Ok("nothing was restored: the database is the one it was".to_string());
                }
                Some(id) => kept_aside(db, id)?.with_context(|| {
                    format!(
                        "the database that was in place is neither at `{}` nor in its `aside/` folder: look at them by hand",
                        db.display()
                    )
                })?,
                None => return Ok("nothing was set aside".to_string()),
            },
        };
        let name = db.file_name().context("database path has no file name")?;
        let previous = aside.join(name);
        if !previous.exists() {
            // Only this undo takes the file out of the aside folder: it was
            // put back already, by an undo interrupted before it was
            // journaled.
            if db.exists() {
                // Its .wal follows it last: an undo killed in between left
                // it in the aside folder.
                let wal = swap::wal_of(&previous);
                if wal.exists() && !swap::wal_of(db).exists() {
                    fsx::rename_synced(&wal, &swap::wal_of(db))?;
                }
                return Ok(format!(
                    "the previous database was put back from {} already",
                    aside.display()
                ));
            }
            anyhow::bail!(
                "the database set aside is not in `{}` any more, and there is none at `{}`: put it back by hand",
                aside.display(),
                db.display()
            );
        }
        // The restored file goes aside in turn (nothing is ever deleted),
        // swapped as any other: the path is never empty. Then the previous
        // database's own .wal follows it.
        let shelved = swap::put_in_place(db, &ctx.env.name, &previous, Shelf::Aside)?;
        let wal = swap::wal_of(&previous);
        if wal.exists() {
            let back = swap::wal_of(db);
            fsx::rename_synced(&wal, &back)?;
            // It was made private aside; beside the database it takes the
            // database's mode, as DuckDB gives both files the same. Best
            // effort: the database is back, whatever this says.
            if let Ok(meta) = std::fs::metadata(db) {
                let _ = std::fs::set_permissions(&back, meta.permissions());
            }
        }
        Ok(format!(
            "put the previous database back from {}{}",
            aside.display(),
            shelved.map_or_else(String::new, |s| format!(
                " (the restored one is in {})",
                s.display()
            ))
        ))
    }
}

/// A file's device and inode: what a hard link keeps.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// The `aside/` folder holding the file `id` under the database's name.
fn kept_aside(db: &Path, id: (u64, u64)) -> Result<Option<PathBuf>> {
    let name = db.file_name().context("database path has no file name")?;
    let base = swap::folder_of(db)?.join("aside");
    Ok(std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .find(|folder| file_id(&folder.join(name)) == Some(id)))
}
