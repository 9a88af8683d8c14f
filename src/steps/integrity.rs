//! `uses: integrity`: the integrity check of `upkeep check`. Fails the step
//! when the database has problems (use `allow_failure` and `when:` to act on
//! it); changes nothing, so there is nothing to undo.

use anyhow::{Result, bail};

use super::{Ctx, Plan, Ran, StepType, Undo, With, flag, target_env};
use crate::db::check;
use crate::db::open::{self, Access};
use crate::db::topup;
use crate::error::{code, exit_code};

pub struct Integrity;

impl StepType for Integrity {
    fn name(&self) -> &'static str {
        "integrity"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["deep", "env"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        flag(with, "deep").map(|_| ())
    }

    fn may_change(&self) -> bool {
        false
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let env = match target_env(ctx, with) {
            Ok(env) => env,
            Err(error) => return Plan::blocked("check", &error),
        };
        let ctx = &Ctx { env: &env, ..*ctx };
        let deep = flag(with, "deep").unwrap_or(false);
        let summary = format!(
            "check `{}` ({}){}",
            ctx.env.name,
            ctx.env.db.display(),
            if deep { ", reading every column" } else { "" }
        );
        match check::check(&ctx.env.db, ctx.schema, deep) {
            Ok(report) if report.ok() => Plan {
                summary: format!("{summary}: sound now"),
                outcome: Some(true),
                ..Plan::default()
            },
            Ok(report) => Plan {
                summary: format!(
                    "{summary}: {} problem(s) now: {}",
                    report.problems.len(),
                    report.problem_list()
                ),
                outcome: Some(false),
                ..Plan::default()
            },
            Err(error) if exit_code(&error) == code::BUSY => Plan {
                summary: format!(
                    "{summary}: cannot look now ({}); steps before it (stopping the app) free it in a real run",
                    crate::error::describe(&error)
                ),
                ..Plan::default()
            },
            Err(error) => Plan {
                summary: format!(
                    "{summary}: cannot look now: {}",
                    crate::error::describe(&error)
                ),
                ..Plan::default()
            },
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let deep = flag(with, "deep").map_err(anyhow::Error::msg)?;
        let env = target_env(ctx, with)?;
        let ctx = &Ctx { env: &env, ..*ctx };
        let (report, restore_point) = match self.on_restore_point(ctx, deep) {
            Some(report) => (report, true),
            None => (
                crate::app::check(ctx.config, ctx.env, ctx.schema, deep)?,
                false,
            ),
        };
        if !report.ok() {
            bail!(
                "integrity check of `{}` found {} problem(s): {}",
                ctx.env.name,
                report.problems.len(),
                report.problem_list()
            );
        }
        let tables = report
            .rows()
            .map(|(table, rows)| format!("{table} {rows}"))
            .collect::<Vec<_>>()
            .join(", ");
        let how = if restore_point {
            ", checked on the restore point taken live before the stop, topped up to be byte for byte the database"
        } else if report.from_snapshot {
            ", checked on a fresh snapshot from the app's hook"
        } else if report.copied_live {
            ", checked on a live copy"
        } else {
            ""
        };
        Ok(Ran::unchanged(
            format!("`{}` is sound ({tables}){how}", ctx.env.name),
            Undo::nothing(),
        ))
    }
}

impl Integrity {
    /// The quick check of a stopped app's database, made on the live copy
    /// stop-app took of it, once topped up (see [`topup::check`]): the
    /// backup after it then publishes what was checked, and the database
    /// is opened once. `None` when there is no such copy, the app holds the
    /// database, or the top-up fails (then the backup copies the whole file,
    /// and says why).
    fn on_restore_point(&self, ctx: &Ctx, deep: bool) -> Option<check::Report> {
        if deep || open::lock_holder(&ctx.env.db, Access::Exclusive).is_some() {
            return None;
        }
        let mut restore_point = ctx.restore_point.borrow_mut();
        let mut prepared = restore_point
            .prepared
            .take_if(|prepared| prepared.env == ctx.env.name)?;
        match topup::check(ctx.env, ctx.schema, &mut prepared) {
            Ok(report) => {
                restore_point.prepared = Some(prepared);
                Some(report)
            }
            Err(error) => {
                restore_point.given_up =
                    Some((ctx.env.name.clone(), crate::error::describe(&error)));
                None
            }
        }
    }
}
