//! `uses: backup`: the verified, rotated backup of `upkeep backup`. A
//! backup is never deleted by a rollback: it is the restore point.

use anyhow::Result;

use super::{Ctx, Plan, Ran, StepType, Undo, With, count, target_env};
use crate::db::open::{self, Access};
use crate::db::retention::Rotation;
use crate::db::topup;
use crate::fsx;

pub struct Backup;

impl Backup {
    /// `with: { keep: N }` over the config's rotation.
    fn rotation(ctx: &Ctx, with: &With) -> Result<Rotation, String> {
        match count(with, "keep")? {
            Some(0) => Err("`keep` must be at least 1".to_string()),
            Some(keep) => Ok(Rotation::Newest(keep)),
            None => Ok(ctx.config.rotation.clone()),
        }
    }
}

impl StepType for Backup {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["keep", "env"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        match count(with, "keep")? {
            Some(0) => Err("`keep` must be at least 1".to_string()),
            _ => Ok(()),
        }
    }

    /// A copy beside the app's data, not a change of it.
    fn may_change(&self) -> bool {
        false
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let env = match target_env(ctx, with) {
            Ok(env) => env,
            Err(error) => return Plan::blocked("back up", &error),
        };
        let ctx = &Ctx { env: &env, ..*ctx };
        let rotation = Self::rotation(ctx, with).unwrap_or_else(|_| ctx.config.rotation.clone());
        let dir = &ctx.config.backups_dir;
        let summary = format!(
            "back up `{}` into {} and keep {}",
            ctx.env.name,
            dir.display(),
            rotation.describe()
        );
        let Ok(size) = std::fs::metadata(&ctx.env.db).map(|meta| meta.len()) else {
            return Plan {
                summary,
                blocker: Some(format!("no database file at `{}`", ctx.env.db.display())),
                ..Plan::default()
            };
        };
        // The folder may not exist yet: ask the nearest one that does.
        let existing = dir.ancestors().find(|path| path.exists());
        let blocker = match existing.map(fsx::free_space) {
            Some(Ok(free)) if free < size => Some(format!(
                "not enough space in `{}`: a backup needs {}, {} is free",
                dir.display(),
                fsx::human_size(size),
                fsx::human_size(free)
            )),
            _ => None,
        };
        // A refusal now is no blocker: a step before it may stop the app.
        let way = crate::app::backup_way(ctx.config, ctx.env, size);
        Plan {
            summary: format!("{summary} ({}); {way}", fsx::human_size(size)),
            blocker,
            ..Plan::default()
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let rotation = Self::rotation(ctx, with).map_err(anyhow::Error::msg)?;
        let env = target_env(ctx, with)?;
        let whole = || {
            crate::app::backup(
                ctx.config,
                &env,
                &rotation,
                ctx.schema,
                &ctx.progress,
                false,
            )
        };
        // A live copy stop-app took: topped up, when the app let go.
        let prepared = ctx
            .restore_point
            .borrow_mut()
            .prepared
            .take_if(|prepared| prepared.env == env.name);
        let mut not_topped_up = ctx
            .restore_point
            .borrow_mut()
            .given_up
            .take_if(|(given_up, _)| *given_up == env.name)
            .map(|(_, why)| why);
        let made = match prepared {
            Some(prepared) if open::lock_holder(&env.db, Access::Exclusive).is_none() => {
                let dir = &ctx.config.backups_dir;
                match topup::top_up(&env, dir, &rotation, ctx.schema, prepared) {
                    Ok(made) => made,
                    Err(error) => {
                        not_topped_up = Some(crate::error::describe(&error));
                        whole()?
                    }
                }
            }
            _ => whole()?,
        };
        if let crate::db::backup::Taken::Window {
            restart_error: Some(error),
            ..
        } = &made.taken
        {
            // The backup is good and published; the app is not: the run
            // fails, loudly, and notifies.
            return Err(anyhow::Error::new(crate::error::RollbackIncomplete(
                format!(
                    "THE APP OF `{}` IS DOWN: it was stopped for the backup ({} is published and verified) \
                 and did not come back healthy: {error}; start it by hand",
                    env.name, made.backup.name
                ),
            )));
        }
        if env.name == ctx.env.name {
            ctx.restore_point.borrow_mut().path = Some(made.backup.path.clone());
        }
        let mut summary = format!(
            "backed up `{}` to {} ({})",
            env.name,
            made.backup.name,
            fsx::human_size(made.backup.size)
        );
        if let crate::db::backup::Taken::TopUp { blocks, bytes, .. } = &made.taken {
            summary.push_str(&format!(
                "; the live copy taken before the stop, topped up with {blocks} block(s) ({}) changed since",
                fsx::human_size(*bytes)
            ));
        }
        if let Some(why) = not_topped_up {
            summary.push_str(&format!(
                "; the live copy taken before the stop could not be topped up ({why}), so the whole file was copied"
            ));
        }
        if let Some((kept, reason)) = &made.wal_kept {
            summary.push_str(&format!(
                "; warning: its .wal could not be replayed ({reason}), a copy is kept in {}",
                kept.display()
            ));
        }
        // A backup is a copy beside the app's data, not a change of it: an
        // update that only backed up reports `changed: false`.
        Ok(Ran::unchanged(summary, Undo::nothing()))
    }
}
