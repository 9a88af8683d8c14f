//! `uses: restore` (`with: { backup: NAME | latest }`): the restore of
//! `upkeep restore`, as a step or as a rollback action. Undoing it puts the
//! database that was set aside back in place.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{Ctx, Plan, StepType, Undo, With};
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

    fn run(&self, ctx: &Ctx, with: &With) -> Result<(String, Undo)> {
        let restored = restore::restore(
            ctx.env,
            &ctx.config.backups_dir,
            &choice(with),
            ctx.schema,
            &ctx.progress,
        )?;
        let undo = restored.aside.as_ref().map_or_else(Undo::nothing, |aside| {
            Undo(serde_json::json!({ "aside": aside }))
        });
        Ok((format!("restored from {}", restored.backup.name), undo))
    }

    fn undo(&self, ctx: &Ctx, undo: &Undo) -> Result<String> {
        let Some(aside) = undo
            .0
            .get("aside")
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
        else {
            return Ok("nothing was set aside".to_string());
        };
        let db = &ctx.env.db;
        let name = db.file_name().context("database path has no file name")?;
        let previous = aside.join(name);
        if !previous.exists() {
            // Only this undo takes the file out of the aside folder: it was
            // put back already, by an undo interrupted before it was
            // journaled.
            if db.exists() {
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
