//! `uses: repair`: the repair of `upkeep repair`. Its rollback leaves the
//! repaired database in place: putting a damaged file back would not give
//! the app its old data, and the damaged file stays in quarantine. With
//! `with: { undo: previous }` (a repair on a running app whose app then
//! does not come back), the rollback puts the previous file back as it
//! was, as restore's does.

use anyhow::Result;

use super::{Ctx, Plan, Ran, StepType, Undo, With};
use crate::db::{check, repair};
use crate::error::{code, exit_code};

pub struct Repair;

impl StepType for Repair {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["undo"]
    }

    fn check(&self, with: &super::With) -> Result<(), String> {
        match with.get("undo").map(String::as_str) {
            None | Some("keep" | "previous") => Ok(()),
            Some(other) => Err(format!(
                "`undo` is `keep` (the default: the repaired database stays) or `previous`, not `{other}`"
            )),
        }
    }

    fn plan(&self, ctx: &Ctx, _with: &With) -> Plan {
        let checked = check::check(&ctx.env.db, ctx.schema, true);
        // A sound database is left untouched.
        let changes = checked.as_ref().ok().map(|report| !report.ok());
        let summary = match checked {
            Ok(report) if report.ok() => {
                format!(
                    "repair `{}` if needed (sound now: nothing to repair)",
                    ctx.env.name
                )
            }
            Ok(report) => format!(
                "repair `{}` ({} problem(s) now): quarantine it and bring back the newest backup that verifies, else salvage, else an empty database from schema.sql",
                ctx.env.name,
                report.problems.len()
            ),
            Err(error) if exit_code(&error) == code::BUSY => format!(
                "repair `{}` if needed (cannot look now: {}; a real run stops the app first)",
                ctx.env.name,
                crate::error::describe(&error)
            ),
            Err(error) => format!(
                "repair `{}` if needed (cannot look now: {})",
                ctx.env.name,
                crate::error::describe(&error)
            ),
        };
        Plan {
            summary,
            changes,
            ..Plan::default()
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let sources = repair::Sources {
            backups_dir: &ctx.config.backups_dir,
            schema: ctx.schema,
            storage_version: ctx.config.storage_version.as_ref(),
        };
        let repaired = repair::repair(ctx.env, &sources, &ctx.progress)?;
        if !repaired.after.ok() {
            anyhow::bail!(
                "repair of `{}` did not give a sound database: {}",
                ctx.env.name,
                repaired
                    .after
                    .problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        if let repair::Outcome::FromBackup { backup, .. } = &repaired.outcome {
            ctx.restore_point.borrow_mut().path = Some(backup.path.clone());
        }
        // In words: what it brought back, and from where.
        let (_, how) = repaired.outcome.describe();
        let undo = match (&repaired.quarantine, with.get("undo").map(String::as_str)) {
            (Some(folder), Some("previous")) => Undo(serde_json::json!({ "aside": folder })),
            _ => Undo::nothing(),
        };
        let detail = format!("`{}`: {how}", ctx.env.name);
        Ok(Ran {
            detail,
            undo,
            changed: repaired.outcome.changed(),
            ends_run: None,
        })
    }

    fn undo(&self, ctx: &Ctx, undo: &Undo) -> Result<String> {
        super::restore::Restore.undo(ctx, undo)
    }
}
