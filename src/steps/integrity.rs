//! `uses: integrity`: the integrity check of `upkeep check`. Fails the step
//! when the database has problems (use `allow_failure` and `when:` to act on
//! it); changes nothing, so there is nothing to undo.

use anyhow::{Result, bail};

use super::{Ctx, Plan, Ran, StepType, Undo, With, flag, target_env};
use crate::db::check;
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
                    problems(&report)
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
        let report = crate::app::check(ctx.config, ctx.env, ctx.schema, deep)?;
        if !report.ok() {
            bail!(
                "integrity check of `{}` found {} problem(s): {}",
                ctx.env.name,
                report.problems.len(),
                problems(&report)
            );
        }
        let tables = report
            .rows()
            .map(|(table, rows)| format!("{table} {rows}"))
            .collect::<Vec<_>>()
            .join(", ");
        let how = if report.from_snapshot {
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

fn problems(report: &check::Report) -> String {
    report
        .problems
        .iter()
        .map(|problem| problem.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}
