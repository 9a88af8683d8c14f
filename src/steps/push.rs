//! `uses: push`: copies the newest verified backup of the environment
//! off-site (`backups.offsite`), as `upkeep push ENV` does. An off-site
//! copy is not removed by a rollback: like a backup, it is a restore point.
//! `with: { optional: true }` makes it a no-op where `backups.offsite` is
//! not configured (the shipped backup.yaml uses it).

use anyhow::Result;

use super::{Ctx, Plan, Ran, StepType, Undo, With, flag, target_env};
use crate::offsite::{self, Which};

pub struct Push;

impl StepType for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["env", "all", "optional"]
    }

    fn check(&self, with: &With) -> Result<(), String> {
        flag(with, "all")?;
        flag(with, "optional").map(drop)
    }

    fn plan(&self, ctx: &Ctx, with: &With) -> Plan {
        let env = match target_env(ctx, with) {
            Ok(env) => env,
            Err(error) => return Plan::blocked("push off-site", &error),
        };
        let what = match flag(with, "all") {
            Ok(true) => "every verified backup",
            _ => "the newest verified backup",
        };
        match &ctx.config.offsite {
            Some(spec) => Plan {
                summary: format!(
                    "push {what} of `{}` to {}{} (nothing already there is sent again)",
                    env.name,
                    spec.target.shown(),
                    if spec.encrypt_to.is_some() { ", encrypted" } else { "" }
                ),
                ..Plan::default()
            },
            None if flag(with, "optional") == Ok(true) => Plan {
                summary: "push off-site: skipped, no `backups.offsite` in upkeep.yaml".to_string(),
                outcome: Some(true),
                ..Plan::default()
            },
            None => Plan {
                summary: format!("push {what} of `{}` off-site", env.name),
                blocker: Some(
                    "no `backups.offsite` in upkeep.yaml: configure it, or give the step `with: { optional: true }`"
                        .to_string(),
                ),
                ..Plan::default()
            },
        }
    }

    fn run(&self, ctx: &Ctx, with: &With) -> Result<Ran> {
        let env = target_env(ctx, with)?;
        if ctx.config.offsite.is_none() && flag(with, "optional").map_err(anyhow::Error::msg)? {
            return Ok(Ran::unchanged(
                "skipped: no `backups.offsite` in upkeep.yaml".to_string(),
                Undo::nothing(),
            ));
        }
        let which = match flag(with, "all").map_err(anyhow::Error::msg)? {
            true => Which::All,
            false => Which::Newest,
        };
        let pushed = offsite::push(&ctx.config.offsite()?, &env, &which, &ctx.progress)?;
        let mut summary = match (pushed.uploaded.len(), pushed.already.len()) {
            (0, _) => format!(
                "`{}`: already off-site at {}, nothing sent",
                env.name, pushed.url
            ),
            (n, _) => format!(
                "pushed {} backup{} of `{}` to {} ({})",
                n,
                if n == 1 { "" } else { "s" },
                env.name,
                pushed.url,
                pushed
                    .uploaded
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if !pushed.deleted.is_empty() {
            summary.push_str(&format!(
                "; retention deleted {}",
                pushed.deleted.join(", ")
            ));
        }
        // Copies beside the data, like a backup: the app's code and data
        // are as they were.
        Ok(Ran::unchanged(summary, Undo::nothing()))
    }
}
